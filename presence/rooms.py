"""Room names (``<kind>:<key>``), their resolution to the host blog's objects, and group names.

Resolution hits the database once per room per ``PRESENCE_ROOM_CACHE_SECONDS`` in each
process; refusals are cached too (in a bounded LRU), so a flood of made-up names costs
neither queries nor unbounded memory.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import DatabaseError

from presence.conf import app_settings
from presence.errors import InvalidRoom, Unavailable

ROOM_RE = re.compile(r"\A([a-z][a-z0-9_]{0,19}):([A-Za-z0-9_-]{1,64})\Z")  # \Z: "$" would accept a trailing newline


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room: str
    title: str
    url: str | None


clock = time.monotonic
_cache: OrderedDict[str, tuple[float, RoomInfo | None]] = OrderedDict()


def cache_clear() -> None:
    _cache.clear()


def group_name(room: str) -> str:
    """The channel-layer group of a room (valid: ``^[a-zA-Z0-9._-]{1,99}$``)."""
    return "presence.room." + room.replace(":", ".", 1)


def _kind_config(kind: str) -> tuple[str, str] | None:
    config = app_settings.ROOM_KINDS.get(kind)
    if config is None:
        return None
    if isinstance(config, str):
        return config, "pk"
    return config["model"], config.get("field", "pk")


def lookup(room: str) -> RoomInfo | None:
    """Resolve a room against the database (sync); None if it names nothing."""
    match = ROOM_RE.match(room) if isinstance(room, str) else None
    if match is None:
        return None
    kind, key = match.groups()
    config = _kind_config(kind)
    if config is None:
        return None
    model_label, field = config
    model = apps.get_model(model_label)
    try:
        obj = model._default_manager.filter(**{field: key}).first()
    except (ValueError, TypeError, ValidationError):
        return None
    if obj is None:
        return None
    url = obj.get_absolute_url() if hasattr(obj, "get_absolute_url") else None
    return RoomInfo(room=room, title=str(obj), url=url)


_lookup_async = database_sync_to_async(lookup)


_MISS = object()


def _cached(room: object) -> RoomInfo | None | object:
    """The cached resolution of a well-formed room of a known kind, or ``_MISS``."""
    if not isinstance(room, str) or ROOM_RE.match(room) is None:
        raise InvalidRoom("room must look like '<kind>:<key>'")
    if room.split(":", 1)[0] not in app_settings.ROOM_KINDS:
        raise InvalidRoom("unknown room kind")
    cached = _cache.get(room)
    if cached is None or cached[0] <= clock():
        return _MISS
    _cache.move_to_end(room)
    return cached[1]


def _remember(room: str, info: RoomInfo | None) -> RoomInfo:
    _cache[room] = (clock() + app_settings.ROOM_CACHE_SECONDS, info)
    _cache.move_to_end(room)
    while len(_cache) > app_settings.ROOM_CACHE_SIZE:
        _cache.popitem(last=False)
    if info is None:
        raise InvalidRoom("no such room")
    return info


async def resolve(room: object) -> RoomInfo:
    """The object a room names, from the cache when fresh; raises InvalidRoom, or Unavailable
    (nothing cached) while the database is unreachable: a join then gets a clean error frame."""
    info = _cached(room)
    if info is _MISS:
        try:
            found = await _lookup_async(room)
        except DatabaseError as exc:
            raise Unavailable("database unavailable, try again") from exc
        return _remember(room, found)
    if info is None:
        raise InvalidRoom("no such room")
    return info


def resolve_sync(room: object) -> RoomInfo:
    """``resolve`` for sync code (views, template tags): queries on the caller's own
    connection, which ``database_sync_to_async`` would close under a request's transaction."""
    info = _cached(room)
    if info is _MISS:
        return _remember(room, lookup(room))
    if info is None:
        raise InvalidRoom("no such room")
    return info
