"""Room names (``<kind>:<key>``), their resolution to the host blog's objects, and group names.

A room names one object the public may see, by one key: the canonical string of the kind's field
on that object (``article:1``, never ``article:01``); aliases, drafts and missing objects are all
refused alike, so nobody can tell a draft from a missing id (docs/protocol.md, "Rooms").
``PRESENCE_ROOM_KINDS`` is resolved and validated once per setting (``kinds()``, by
``presence.room_kinds``); a wrong entry is a system check error (presence/checks.py) and, at run
time, refused and logged once.

Resolutions are cached in each process, in one bounded LRU so that a flood of made-up names costs
neither queries nor unbounded memory: found objects for ``PRESENCE_ROOM_CACHE_SECONDS``, refusals
for ``PRESENCE_ROOM_REFUSAL_SECONDS`` only, and a save or delete of an object of a kind drops its
entries in this process at once (other processes see it when their entry expires).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError
from django.core.signals import setting_changed
from django.db import DatabaseError, models, transaction
from django.db.models.signals import post_delete, post_save

from presence.conf import app_settings
from presence.errors import InvalidRoom, Unavailable
from presence.room_cache import MISS, RoomCache
from presence.room_kinds import KIND, Kind, WrongKind, configure, is_page, wagtail_page

logger = logging.getLogger(__name__)

ROOM_RE = re.compile(rf"\A({KIND}):([A-Za-z0-9_-]{{1,64}})\Z")  # \Z: "$" would accept a trailing newline
NO_SUCH_ROOM = "no such room"  # drafts, aliases, missing objects and broken kinds alike


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room: str
    title: str
    url: str | None


# -- the resolved configuration, once per setting ---------------------------------------------

_config_lock = threading.Lock()
_kinds: dict[str, Kind] | None = None
_broken: frozenset[object] = frozenset()  # names of wrong entries: refused like a missing object
_logged: set[tuple[str, str]] = set()


def kinds() -> dict[str, Kind]:
    """The usable room kinds; wrong entries are logged (once) and left out."""
    global _kinds, _broken
    found = _kinds
    if found is not None:
        return found
    with _config_lock:
        if _kinds is None:
            found, problems = configure(app_settings.ROOM_KINDS)
            for problem in problems:
                logger.error("presence: %s Rooms of this kind are refused. %s", problem.message, problem.hint)
            raw = app_settings.ROOM_KINDS
            _broken = frozenset(raw) - frozenset(found) if isinstance(raw, dict) else frozenset()
            _logged.clear()
            _kinds = found
        return _kinds


def _log_once(kind: Kind, topic: str, message: str, *args: Any) -> None:
    if (kind.name, topic) not in _logged:
        _logged.add((kind.name, topic))
        logger.error(message, *args, exc_info=True)


def _forget_kinds(*, setting: str, **kwargs: Any) -> None:
    global _kinds
    if setting in ("PRESENCE_ROOM_KINDS", "INSTALLED_APPS"):
        with _config_lock:
            _kinds = None
    if setting.startswith("PRESENCE_") or setting == "INSTALLED_APPS":
        cache_clear()


setting_changed.connect(_forget_kinds, dispatch_uid="presence.rooms.settings")


def room_for(obj: object) -> str | None:
    """The canonical room name of an object of a configured kind (unchecked: it may be a draft)."""
    for kind in kinds().values():
        if isinstance(obj, kind.model):
            key = kind.key_of(obj)
            room = f"{kind.name}:{key}"
            return room if key is not None and ROOM_RE.match(room) else None
    return None


# -- lookups ----------------------------------------------------------------------------------


def _key(room: object) -> tuple[Kind, Any] | None:
    """The kind a room names and its key as the field's value, or None where no object can match
    (an unknown kind, not a value of the field, not canonical): decided without the database, so a
    flood of made-up names costs no query and no thread."""
    match = ROOM_RE.match(room) if isinstance(room, str) else None
    kind = kinds().get(match[1]) if match else None
    if kind is None:
        return None
    try:
        value = kind.field.to_python(match[2])
    except ValidationError:
        return None
    if value is None or str(value) != match[2]:
        return None  # not canonical: int() reads "01", "0_1" and "000…1" as 1
    return kind, value


def _find(room: str) -> tuple[RoomInfo, Any] | None:
    """The public object a room names and its pk (sync, on the database), or None."""
    key = _key(room)
    return None if key is None else _fetch(room, *key)


def _fetch(room: str, kind: Kind, value: Any) -> tuple[RoomInfo, Any] | None:
    """The public object of that kind and key, and its pk (sync, on the database), or None."""
    key = room.split(":", 1)[1]
    try:
        queryset = kind.public()
        obj = queryset.filter(**{kind.lookup: value}).first()
    except DatabaseError:
        raise
    except WrongKind as wrong:
        _log_once(kind, "queryset", "presence: %s Rooms of this kind are refused. %s", wrong.problem.message,
                  wrong.problem.hint)
        return None
    except (ValueError, TypeError, ValidationError):
        return None
    except Exception:  # noqa: BLE001 - the host's queryset failed: refuse, never a 500 or a 1011
        _log_once(kind, "queryset", "presence: PRESENCE_ROOM_KINDS[%r]: its queryset failed; rooms of this kind "
                  "are refused.", kind.name)
        return None
    if obj is None or kind.key_of(obj) != key:
        return None  # e.g. "Hello" found "hello" under a case-insensitive collation
    try:
        url = kind.url(obj)
    except DatabaseError:
        raise
    except Exception:  # noqa: BLE001 - a broken link must not close the room
        _log_once(kind, "url", "presence: PRESENCE_ROOM_KINDS[%r]: its url failed; rooms are listed without a link.",
                  kind.name)
        url = None
    return RoomInfo(room=room, title=str(obj), url=None if url is None else str(url)), obj.pk


def lookup(room: str) -> RoomInfo | None:
    """Resolve a room against the database (sync, uncached); None if it names nothing public."""
    found = _find(room)
    return found[0] if found else None


_fetch_async = database_sync_to_async(_fetch)


# -- the cache ----------------------------------------------------------------------------------

cache = RoomCache()  # this process's


def cache_clear() -> None:
    cache.clear()


def _cached(room: object) -> RoomInfo | None | object:
    """The cached resolution of a well-formed room of a known kind, or ``MISS``."""
    if not isinstance(room, str) or ROOM_RE.match(room) is None:
        raise InvalidRoom("room must look like '<kind>:<key>'")
    name = room.split(":", 1)[0]
    if name not in kinds():
        raise InvalidRoom(NO_SUCH_ROOM if name in _broken else "unknown room kind")
    return cache.get(room)


def _remember(room: str, found: tuple[RoomInfo, Any] | None, generation: int) -> RoomInfo:
    info, pk = found if found else (None, None)
    seconds = app_settings.ROOM_CACHE_SECONDS if info else app_settings.ROOM_REFUSAL_SECONDS
    cache.put(room, info, pk, seconds, app_settings.ROOM_CACHE_SIZE, generation)
    if info is None:
        raise InvalidRoom(NO_SUCH_ROOM)
    return info


async def resolve(room: object) -> RoomInfo:
    """The object a room names, from the cache when fresh; raises InvalidRoom, or Unavailable
    (nothing cached) while the database is unreachable: a join then gets a clean error frame."""
    info = _cached(room)
    if info is MISS:
        generation = cache.generation
        key = _key(room)
        try:
            found = None if key is None else await _fetch_async(room, *key)
        except DatabaseError as exc:
            raise Unavailable("database unavailable, try again") from exc
        return _remember(room, found, generation)
    if info is None:
        raise InvalidRoom(NO_SUCH_ROOM)
    return info


def resolve_sync(room: object) -> RoomInfo:
    """``resolve`` for sync code (views, template tags): queries on the caller's own
    connection, which ``database_sync_to_async`` would close under a request's transaction."""
    info = _cached(room)
    if info is MISS:
        generation = cache.generation
        try:
            found = _find(room)
        except DatabaseError as exc:
            raise Unavailable("database unavailable, try again") from exc
        return _remember(room, found, generation)
    if info is None:
        raise InvalidRoom(NO_SUCH_ROOM)
    return info


# -- invalidation: a save or delete is seen at once in this process ---------------------------


def _forget(kinds_of: list[Kind], instance: models.Model) -> None:
    """Drop the cached entries an object's save or delete may have changed: its room now (a refusal,
    e.g. before it was created or published) and any room that resolved to it (a renamed slug).
    The key field deferred: any refusal of the kind may have been this object."""
    for kind in kinds_of:
        key = kind.key_of(instance)
        cache.forget_object(kind.name, instance.pk, None if key is None else f"{kind.name}:{key}")


def _forget_kinds_entries(kinds_of: list[Kind]) -> None:
    cache.forget_kinds(kind.name for kind in kinds_of)


def _view_restriction() -> type[models.Model] | None:
    """Wagtail's page view restrictions: adding one makes a page and its descendants private
    without saving any page."""
    if wagtail_page() is None:
        return None
    from wagtail.models import PageViewRestriction

    return PageViewRestriction


def _object_changed(sender: type, instance: models.Model, **kwargs: Any) -> None:
    found = _kinds
    if not found or not isinstance(instance, models.Model):
        return
    related = [k for k in found.values() if issubclass(sender, k.model) or issubclass(k.model, sender)]
    if related:
        _forget(related, instance)
        # Again once the transaction commits: a lookup meanwhile may have read the old row.
        transaction.on_commit(lambda: _forget(related, instance), using=instance._state.db)
    elif sender.__name__ == "PageViewRestriction" and (restriction := _view_restriction()) is not None:
        if issubclass(sender, restriction):
            pages = [k for k in found.values() if is_page(k.model)]
            _forget_kinds_entries(pages)
            transaction.on_commit(lambda: _forget_kinds_entries(pages), using=instance._state.db)


post_save.connect(_object_changed, dispatch_uid="presence.rooms.saved")
post_delete.connect(_object_changed, dispatch_uid="presence.rooms.deleted")
