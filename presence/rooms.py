"""Room names (``<kind>:<key>``), their resolution to the host blog's objects, and group names.

A room names one object the public may see, by one key: the canonical string of the kind's field
on that object (``article:1``, never ``article:01``); aliases, drafts and missing objects are all
refused alike, so nobody can tell a draft from a missing id (docs/protocol.md, "Rooms").
``PRESENCE_ROOM_KINDS`` is resolved and validated once per setting (``kinds()``); a wrong entry is
a system check error (presence/checks.py) and, at run time, refused and logged once.

Resolutions are cached in each process, in one bounded LRU so that a flood of made-up names costs
neither queries nor unbounded memory: found objects for ``PRESENCE_ROOM_CACHE_SECONDS``, refusals
for ``PRESENCE_ROOM_REFUSAL_SECONDS`` only, and a save or delete of an object of a kind drops its
entries in this process at once (other processes see it when their entry expires).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.signals import setting_changed
from django.db import DatabaseError, models, transaction
from django.db.models.signals import post_delete, post_save
from django.utils.module_loading import import_string

from presence.conf import app_settings
from presence.errors import InvalidRoom, Unavailable
from presence.room_cache import MISS, RoomCache

logger = logging.getLogger(__name__)

KIND = r"[a-z][a-z0-9_]{0,19}"
KIND_RE = re.compile(rf"\A{KIND}\Z")
ROOM_RE = re.compile(rf"\A({KIND}):([A-Za-z0-9_-]{{1,64}})\Z")  # \Z: "$" would accept a trailing newline
OPTIONS = ("model", "field", "queryset", "url")
NO_SUCH_ROOM = "no such room"  # drafts, aliases, missing objects and broken kinds alike


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room: str
    title: str
    url: str | None


@dataclass(frozen=True, slots=True)
class Problem:
    """A wrong ``PRESENCE_ROOM_KINDS`` entry: a system check message, or a log line at run time."""

    id: str
    message: str
    hint: str

    @property
    def is_warning(self) -> bool:
        return self.id.startswith("presence.W")


class _Wrong(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Kind:
    """One resolved ``PRESENCE_ROOM_KINDS`` entry."""

    name: str
    model: type[models.Model]
    field: models.Field  # holds the key
    lookup: str  # "pk" or the field's name
    queryset: Callable[[], Any]  # what the public may see, built anew per lookup (it may depend on now)
    url: Callable[[models.Model], Any]
    checked: bool  # the queryset is the host's: check that it returns a QuerySet of the model

    def key_of(self, obj: models.Model) -> str | None:
        """The canonical key of an object, read without a query (None when the field was deferred)."""
        if self.lookup == "pk":
            value = obj.pk
        else:
            value = obj.__dict__.get(self.field.attname)
        return None if value is None else str(value)

    def public(self) -> models.QuerySet:
        """What the public may see now (raises ``_Wrong`` when the host's queryset is not one of the model)."""
        queryset = self.queryset()
        if isinstance(queryset, models.QuerySet) and issubclass(queryset.model, self.model):
            return queryset
        got = f"a QuerySet of {queryset.model._meta.label}" if isinstance(queryset, models.QuerySet) else (
            f"a {type(queryset).__name__}")
        raise _Wrong(_problem(self.name, "E108", f"its queryset returned {got}, not a QuerySet of "
                              f"{self.model._meta.label}.", _queryset_hint(self.model)))


def _problem(name: object, code: str, message: str, hint: str) -> Problem:
    return Problem(f"presence.{code}", f"PRESENCE_ROOM_KINDS[{name!r}]: {message}", hint)


def _queryset_hint(model: type[models.Model]) -> str:
    return (f"Set 'queryset' to a manager name of {model._meta.label} (e.g. 'published'), or to a function "
            "(or its dotted path) that returns a QuerySet of it.")


def _wagtail_page() -> type[models.Model] | None:
    """Wagtail's ``Page`` when Wagtail is installed (imported lazily: Wagtail is optional)."""
    if not apps.is_installed("wagtail"):
        return None
    try:
        from wagtail.models import Page
    except ImportError:
        return None
    return Page


def _is_page(model: type[models.Model]) -> bool:
    page = _wagtail_page()
    return page is not None and issubclass(model, page)


def _default_url(obj: models.Model) -> Any:
    """``get_absolute_url()``; for Wagtail pages ``get_url()`` (relative when the site is unique)."""
    get_absolute_url = getattr(obj, "get_absolute_url", None)
    if callable(get_absolute_url):
        return get_absolute_url()
    if _is_page(type(obj)):
        get_url = getattr(obj, "get_url", None)
        return get_url(request=None) if callable(get_url) else getattr(obj, "url", None)
    return None


def _attribute_url(name: str) -> Callable[[models.Model], Any]:
    def url(obj: models.Model) -> Any:
        value = getattr(obj, name)
        return value() if callable(value) else value

    return url


def _kind(name: object, entry: object) -> Kind:
    """Resolve one entry; raises ``_Wrong`` with the first problem found."""
    if not isinstance(name, str) or not KIND_RE.match(name):
        raise _Wrong(_problem(name, "E102", "not a valid kind name.",
                              "Use 1 to 20 characters of a-z, 0-9 and _, starting with a letter (rooms are "
                              "'<kind>:<key>', e.g. 'article')."))
    shape_hint = ("Give a model label ('blog.Article') or a dict with 'model' and optionally 'field', "
                  "'queryset' and 'url'.")
    if isinstance(entry, str):
        entry = {"model": entry}
    if not isinstance(entry, dict):
        raise _Wrong(_problem(name, "E103", f"a {type(entry).__name__}, not a model label or a dict.", shape_hint))
    unknown = sorted(str(key) for key in entry if key not in OPTIONS)
    if unknown:
        raise _Wrong(_problem(name, "E103", f"unknown option(s) {', '.join(map(repr, unknown))}.",
                              "Use only the options 'model', 'field', 'queryset' and 'url'."))
    label, field_name = entry.get("model"), entry.get("field", "pk")
    queryset, url = entry.get("queryset"), entry.get("url")
    if not isinstance(label, str):
        raise _Wrong(_problem(name, "E103", "'model' must be a model label such as 'blog.Article'.", shape_hint))
    if not isinstance(field_name, str):
        raise _Wrong(_problem(name, "E103", "'field' must be a field name.", "Write e.g. 'field': 'slug' "
                              "(or leave it out: rooms are keyed by 'pk')."))
    for option, value in (("queryset", queryset), ("url", url)):
        if value is not None and not isinstance(value, str) and not callable(value):
            raise _Wrong(_problem(name, "E103", f"'{option}' must be a name, a dotted path or a callable, "
                                  f"not a {type(value).__name__}.", shape_hint))
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        raise _Wrong(_problem(name, "E104", f"{label!r} names no installed model.",
                              "Use 'app_label.ModelName' of a model in INSTALLED_APPS, e.g. 'blog.Article'.")) from None
    meta = model._meta
    try:
        field = meta.pk if field_name == "pk" else meta.get_field(field_name)
    except FieldDoesNotExist:
        field = None
    if field is None or not field.concrete or field.many_to_many:
        raise _Wrong(_problem(name, "E105", f"{meta.label} has no field {field_name!r} to key rooms by.",
                              f"Set 'field' to a unique field of {meta.label} (e.g. 'slug'), or leave it out "
                              "for 'pk'."))
    return Kind(
        name=name,
        model=model,
        field=field,
        lookup="pk" if field_name == "pk" else field.name,
        queryset=_queryset(name, model, queryset),
        url=_url(name, model, url),
        checked=queryset is not None and (callable(queryset) or "." in queryset),
    )


def _queryset(name: str, model: type[models.Model], option: str | Callable | None) -> Callable[[], Any]:
    if option is None:
        if _is_page(model):
            # Wagtail: drafts and scheduled pages are not live; password-, login- and group-restricted
            # pages (and their descendants) are not public.
            return lambda: model._default_manager.all().live().public()
        return model._default_manager.all
    if callable(option):
        return option
    if "." in option:
        try:
            function = import_string(option)
        except Exception as exc:  # noqa: BLE001 - any import failure is the same misconfiguration
            raise _Wrong(_problem(name, "E107", f"queryset {option!r} does not import ({exc}).",
                                  _queryset_hint(model))) from None
        if not callable(function):
            raise _Wrong(_problem(name, "E107", f"queryset {option!r} is not callable.", _queryset_hint(model)))
        return function
    manager = getattr(model, option, None)
    if not isinstance(manager, models.Manager):
        raise _Wrong(_problem(name, "E106", f"{model._meta.label} has no manager {option!r}.", _queryset_hint(model)))
    return manager.all


def _url(name: str, model: type[models.Model], option: str | Callable | None) -> Callable[[models.Model], Any]:
    hint = (f"Name a method or attribute of {model._meta.label} that gives its URL, or give a callable(obj) "
            "returning a str or None (or its dotted path); leave 'url' out for get_absolute_url().")
    if option is None:
        return _default_url
    if callable(option):
        return option
    if "." in option:
        try:
            function = import_string(option)
        except Exception as exc:  # noqa: BLE001 - any import failure is the same misconfiguration
            raise _Wrong(_problem(name, "E109", f"url {option!r} does not import ({exc}).", hint)) from None
        if not callable(function):
            raise _Wrong(_problem(name, "E109", f"url {option!r} is not callable.", hint))
        return function
    if not hasattr(model, option):
        raise _Wrong(_problem(name, "E109", f"{model._meta.label} has no attribute {option!r} for URLs.", hint))
    return _attribute_url(option)


def _is_unique(kind: Kind) -> bool:
    field = kind.field
    if field.primary_key or field.unique:
        return True
    return any(
        isinstance(c, models.UniqueConstraint) and tuple(c.fields) == (field.name,) and c.condition is None
        for c in kind.model._meta.constraints
    )


def configure(raw: object) -> tuple[dict[str, Kind], list[Problem]]:
    """Resolve a ``PRESENCE_ROOM_KINDS`` value: the usable kinds, and the problems of the others."""
    if not isinstance(raw, dict):
        return {}, [Problem("presence.E101", f"PRESENCE_ROOM_KINDS must be a dict, not a {type(raw).__name__}.",
                            "Write PRESENCE_ROOM_KINDS = {'article': 'blog.Article'}: kind names to model labels "
                            "or to dicts of options.")]
    found: dict[str, Kind] = {}
    problems = []
    for name, entry in raw.items():
        try:
            found[name] = _kind(name, entry)
        except _Wrong as wrong:
            problems.append(wrong.problem)
    return found, problems


def check(raw: object) -> list[Problem]:
    """Every problem of a ``PRESENCE_ROOM_KINDS`` value, for the system check: ``configure``'s, a
    host's queryset that does not return a QuerySet of the model, and keys that are not unique."""
    found, problems = configure(raw)
    for kind in found.values():
        if not _is_unique(kind):
            problems.append(_problem(kind.name, "W101", f"{kind.model._meta.label}.{kind.field.name} is not unique: "
                                     "objects sharing a key share one room, and only one of them can be reached.",
                                     "Key rooms by a unique field (e.g. 'pk' or a unique slug)."))
        if kind.checked:
            try:
                kind.public()
            except _Wrong as wrong:
                problems.append(wrong.problem)
            except DatabaseError:
                pass  # the database is not there yet (e.g. before migrate): nothing to say about the setting
            except Exception as exc:  # noqa: BLE001 - the host's code failed: that is the report
                problems.append(_problem(kind.name, "E108", f"its queryset raised {type(exc).__name__}: {exc}.",
                                         _queryset_hint(kind.model)))
    return problems


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
    except _Wrong as wrong:
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
    if _wagtail_page() is None:
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
            pages = [k for k in found.values() if _is_page(k.model)]
            _forget_kinds_entries(pages)
            transaction.on_commit(lambda: _forget_kinds_entries(pages), using=instance._state.db)


post_save.connect(_object_changed, dispatch_uid="presence.rooms.saved")
post_delete.connect(_object_changed, dispatch_uid="presence.rooms.deleted")
