"""Template tags of the embeddable widget: ``{% load presence %}``.

Each tag renders its numbers on the server (so pages without JavaScript still show them) and
marks the HTML that ``presence/static/presence/presence.js`` keeps live. ``presence_script``
loads that client once per page with its configuration as JSON (``json_script``).
"""

from __future__ import annotations

import logging
from typing import Any

from django import template
from django.conf import settings
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils import translation
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language, gettext, ngettext

from presence import identity, live, rooms
from presence.conf import app_settings
from presence.errors import InvalidRoom, Unavailable

logger = logging.getLogger(__name__)
register = template.Library()

# ngettext samples that the client picks from by CLDR plural category (core.js ``pluralise``):
# together they cover every category of the languages Django ships.
PLURAL_SAMPLES = (0, 1, 2, 3, 5, 11, 21, 22, 25, 100, 101, 102)
SCRIPT_FLAG = "_presence_script_rendered"
CONTEXT_ROOM = "presence_room"
CONTEXT_PREVIEW = "presence_preview"


# Each phrase returns the translated template for a count ("%(count)s" not yet filled in).
def online_phrase(count: int) -> str:
    return ngettext("%(count)s reader online", "%(count)s readers online", count)


def reading_phrase(count: int) -> str:
    return ngettext("%(count)s person reading now", "%(count)s people reading now", count)


def ranked_phrase(count: int) -> str:
    return ngettext("%(count)s reader", "%(count)s readers", count)


PHRASES = (online_phrase, reading_phrase, ranked_phrase)


def rendered_language() -> str:
    """The language whose plural rules the widget's phrases follow: the active language when a
    catalogue translates them (the app's, ``presence/locale``, or the project's), else English,
    the language of the source text (an English fallback must never get another language's rules)."""
    language = get_language()
    if not language:
        return "en"
    translated = [phrase(n) for phrase in PHRASES for n in (1, 2)]
    with translation.override(None):
        source = [phrase(n) for phrase in PHRASES for n in (1, 2)]
    if translated == source:
        return "en"
    # Django fills what the active language's catalogues lack from LANGUAGE_CODE's: a Japanese page
    # of a Chinese-first site shows the app's texts in Chinese, which take Chinese plural rules.
    default = settings.LANGUAGE_CODE
    if translation.to_language(language) != translation.to_language(default):
        with translation.override(default):
            if [phrase(n) for phrase in PHRASES for n in (1, 2)] == translated:
                return default
    return language


def counted(phrase, count: int) -> str:
    return phrase(count) % {"count": count}


def _samples(phrase) -> list[list[Any]]:
    seen: dict[str, int] = {}
    for n in PLURAL_SAMPLES:
        seen.setdefault(phrase(n), n)
    return [[n, text] for text, n in seen.items()]


def room_of(obj: object) -> str | None:
    """The canonical room of an object (or a room name) that the public may see, else None: a page
    joins only a room the server accepts, and a draft an editor previews in the site joins none."""
    if obj is None or obj == "":
        return None
    room = obj if isinstance(obj, str) else rooms.room_for(obj)
    if room is None:
        return None
    try:
        rooms.resolve_sync(room)
    except (InvalidRoom, Unavailable):
        return None
    return room


def display_name(user: object) -> str | None:
    """A signed-in user's name for other readers: ``PRESENCE_USER_NAME_FIELD`` (first_name), else
    none (the widget then shows the name the reader typed, or "Anonymous reader"). Never the
    username, which is a login half, unless the site names it in that setting."""
    field = app_settings.USER_NAME_FIELD
    name = getattr(user, field, None) if field else None
    if callable(name):
        name = name()
    name = str(name or "").strip()[: app_settings.NAME_MAX_LENGTH].strip()
    return name or None


def _websocket_url(request) -> str:
    if app_settings.WEBSOCKET_URL:
        return app_settings.WEBSOCKET_URL
    if request is None:
        return "/ws/presence/"
    scheme = "wss" if request.is_secure() else "ws"
    return f"{scheme}://{request.get_host()}/ws/presence/"


def _api_url(name: str, **kwargs: Any) -> str | None:
    try:
        return reverse(f"presence:{name}", kwargs=kwargs or None)
    except NoReverseMatch:
        return None


def is_preview(context, request) -> bool:
    """An editor's preview is no reader: Wagtail's preview views set ``request.is_preview``, any other
    view may set the context variable ``presence_preview`` (docs/wagtail.md, "Previews")."""
    return bool(context.get(CONTEXT_PREVIEW) or getattr(request, "is_preview", False))


@register.simple_tag(takes_context=True)
def presence_script(context, room: object = None) -> SafeString:
    """The client and its configuration, once per page (later calls render nothing).

    The page's room is ``room=`` (an object or a room name), else the context variable
    ``presence_room``; with neither, the page counts online but joins no room. A preview renders
    the stylesheet only: no client, no socket (``is_preview``).
    """
    request = context.get("request")
    # Once per page: the request marks it; without one, the page's outermost context does.
    holder = request.__dict__ if request is not None else context.dicts[0]
    if holder.get(SCRIPT_FLAG):
        return mark_safe("")
    holder[SCRIPT_FLAG] = True
    if is_preview(context, request):
        return format_html('<link rel="stylesheet" href="{}">', static("presence/presence.css"))
    room_name = room_of(room if room is not None else context.get(CONTEXT_ROOM))
    user = context.get("user") or getattr(request, "user", None)
    signed_in = bool(getattr(user, "is_authenticated", False))
    session = getattr(request, "session", None)
    config = {
        "url": _websocket_url(request),
        "api": {
            "online": _api_url("online"),
            "rooms": _api_url("rooms"),
            "token": _api_url("token"),
            "beacon": _api_url("beacon"),
        },
        "heartbeat": app_settings.HEARTBEAT,
        "idleAfter": app_settings.IDLE_AFTER,
        "maxMarkers": app_settings.TIMELINE_MAX_MARKERS,
        # Bound to the page's session (presence/identity.py): none without one.
        "token": identity.make_token(user, session) if signed_in and getattr(session, "session_key", None) else None,
        "name": display_name(user) if signed_in else None,
        "room": room_name,
        "lang": rendered_language(),
        "text": {
            "online": _samples(online_phrase),
            "reading": _samples(reading_phrase),
            "ranked": _samples(ranked_phrase),
            "anonymous": gettext("Anonymous reader"),
            "you": gettext("you"),
            "read": gettext("%(percent)s%% read"),
            "here": gettext("here for %(time)s"),
            "bucket": gettext("%(count)s readers between %(from)s%% and %(to)s%%"),
            "nobody": gettext("Nobody is reading right now."),
            "seconds": gettext("%(seconds)s s"),
            "minutes": gettext("%(minutes)s min"),
            "hours": gettext("%(hours)s h %(minutes)s min"),
        },
    }
    return render_to_string(
        "presence/script.html",
        {"config": json_script(config, "presence-config"), "src": static("presence/presence.js"),
         "css": static("presence/presence.css")},
    )


def _online() -> int | None:
    try:
        return live.online_count()
    except Unavailable:
        logger.warning("presence: store unavailable while rendering the online count", exc_info=True)
        return None


def _room_count(room: str | None) -> int | None:
    if room is None:
        return None
    try:
        return live.room_detail(room)["count"]
    except InvalidRoom:
        return None
    except Unavailable:
        logger.warning("presence: store unavailable while rendering %s", room, exc_info=True)
        return None


@register.inclusion_tag("presence/online.html")
def presence_online() -> dict[str, Any]:
    """The site-wide count of readers, kept live by the client."""
    count = _online()
    return {"count": count, "text": counted(online_phrase, count) if count is not None else gettext("– readers online")}


@register.inclusion_tag("presence/readers.html")
def presence_readers(obj: object) -> dict[str, Any]:
    """"N people reading now" for an object (or a room name)."""
    room = room_of(obj)
    count = _room_count(room)
    text = counted(reading_phrase, count) if count is not None else gettext("– people reading now")
    return {"room": room, "count": count, "text": text}


@register.inclusion_tag("presence/timeline.html", takes_context=True)
def presence_timeline(context, obj: object) -> dict[str, Any]:
    """The reading-progress timeline beside an article: one marker per reader (drawn by the client)."""
    user = context.get("user")
    return {"room": room_of(obj), "signed_in": bool(getattr(user, "is_authenticated", False))}


@register.inclusion_tag("presence/ranking.html")
def presence_ranking(limit: int = 5) -> dict[str, Any]:
    """The most-read rooms now, with their titles, links and counts."""
    limit = max(1, min(int(limit), 50))
    try:
        entries = live.live_ranking(limit)
        unavailable = False
    except Unavailable:
        logger.warning("presence: store unavailable while rendering the ranking", exc_info=True)
        entries, unavailable = [], True
    for entry in entries:
        entry["text"] = counted(ranked_phrase, entry["count"])
    return {"entries": entries, "limit": limit, "unavailable": unavailable}
