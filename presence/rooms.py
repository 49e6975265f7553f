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

from presence.conf import app_settings
from presence.errors import InvalidRoom

ROOM_RE = re.compile(r"^([a-z][a-z0-9_]{0,19}):([A-Za-z0-9_-]{1,64})$")


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


async def resolve(room: object) -> RoomInfo:
    """The object a room names, from the cache when fresh; raises InvalidRoom."""
    if not isinstance(room, str) or ROOM_RE.match(room) is None:
        raise InvalidRoom("room must look like '<kind>:<key>'")
    if room.split(":", 1)[0] not in app_settings.ROOM_KINDS:
        raise InvalidRoom("unknown room kind")
    now = clock()
    cached = _cache.get(room)
    if cached is not None and cached[0] > now:
        _cache.move_to_end(room)
        info = cached[1]
    else:
        info = await _lookup_async(room)
        _cache[room] = (now + app_settings.ROOM_CACHE_SECONDS, info)
        _cache.move_to_end(room)
        while len(_cache) > app_settings.ROOM_CACHE_SIZE:
            _cache.popitem(last=False)
    if info is None:
        raise InvalidRoom("no such room")
    return info
