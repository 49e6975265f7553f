"""Live numbers for pages and the REST API, read from the presence store.

Counts never come from the database: a page or API call costs a constant number of store calls
whatever the number of readers, and titles come from the cached room resolution. The ``a``-prefixed
coroutines serve async callers; the sync names serve views and template tags.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import async_to_sync

from presence import rooms
from presence.conf import app_settings
from presence.errors import InvalidRoom, Unavailable
from presence.store import RoomState, Store, get_store

T = TypeVar("T")

__all__ = ["alive_ranking", "aonline_count", "aroom_detail", "live_ranking", "online_count", "room_detail"]


async def _store(call: Awaitable[T]) -> T:
    """Await a store call; an outage becomes ``Unavailable`` (the API answers 503)."""
    try:
        return await call
    except Exception as exc:
        raise Unavailable("presence store unavailable, try again") from exc


async def aonline_count() -> int:
    """Distinct readers on the site now: one store call."""
    return await _store(get_store().online())


def _entry(room: str, count: int, info: rooms.RoomInfo) -> dict[str, Any]:
    return {"room": room, "count": count, "title": info.title, "url": info.url}


def _detail(state: RoomState) -> dict[str, Any]:
    return {
        "room": state.room,
        "count": state.count,
        "readers": [reader.as_dict() for reader in state.readers],
        "histogram": state.histogram,
    }


def _fetched(limit: int) -> int:
    """How many ranked rooms to read for ``limit`` entries: a room whose object was deleted or
    unpublished since its readers joined is left out (its title and URL never shown), and the
    next ones fill its place."""
    return limit + max(limit, 10)


async def alive_ranking(limit: int = 10, store: Store | None = None) -> list[dict[str, Any]]:
    """Rooms with readers, most first, with their titles and URLs: one call to ``store`` (the
    process's by default; the hub passes its own).

    Only rooms that resolve now are listed (``presence.rooms``: what the public may see).
    """
    if limit <= 0:
        return []
    entries = []
    for room, count in await _store((store or get_store()).ranking(_fetched(limit))):
        with contextlib.suppress(InvalidRoom):
            entries.append(_entry(room, count, await rooms.resolve(room)))
            if len(entries) == limit:
                break
    return entries


async def aroom_detail(room: str) -> dict[str, Any]:
    """A room's count, newest readers and position histogram (the protocol's ``room_state``);
    raises InvalidRoom for names that do not resolve, before touching the store."""
    await rooms.resolve(room)
    return _detail(await _store(get_store().room_state(room, app_settings.ROOM_STATE_READERS)))


# Sync versions for views and template tags: only the store call crosses into async code;
# rooms resolve on the caller's own database connection (``database_sync_to_async`` would
# close it under the request's transaction).


def _sync_store(method: Callable[..., Awaitable[T]], *args: Any) -> T:
    return async_to_sync(_store)(method(*args))


def online_count() -> int:
    return _sync_store(get_store().online)


def live_ranking(limit: int = 10) -> list[dict[str, Any]]:
    if limit <= 0:
        return []
    entries = []
    for room, count in _sync_store(get_store().ranking, _fetched(limit)):
        with contextlib.suppress(InvalidRoom):
            entries.append(_entry(room, count, rooms.resolve_sync(room)))
            if len(entries) == limit:
                break
    return entries


def room_detail(room: str) -> dict[str, Any]:
    rooms.resolve_sync(room)
    return _detail(_sync_store(get_store().room_state, room, app_settings.ROOM_STATE_READERS))
