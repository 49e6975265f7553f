"""The process's cache of room resolutions (``presence.rooms``): one bounded LRU, so that a flood
of made-up names costs neither queries nor unbounded memory.

An entry holds what a room resolved to (None: refused) and the object's primary key, so that a
save or delete of that object drops every room cached as it (a renamed slug), and until when it
holds. Saves arrive on other threads than the event loop's lookups: everything is under one lock,
and every invalidation bumps ``generation``, so a lookup that raced one is not cached.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

MISS = object()  # nothing fresh cached for the room


def kind_of(room: str) -> str:
    return room.split(":", 1)[0]


class RoomCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.generation = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Any, Any]] = OrderedDict()  # room -> (expiry, info, pk)
        self._by_object: dict[tuple[str, Any], set[str]] = {}  # (kind, pk) -> rooms cached as that object

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, room: str) -> Any:
        """The fresh resolution of ``room`` (None: refused), or ``MISS``."""
        with self._lock:
            cached = self._entries.get(room)
            if cached is None or cached[0] <= self.clock():
                return MISS
            self._entries.move_to_end(room)
            return cached[1]

    def put(self, room: str, info: Any, pk: Any, seconds: float, size: int, generation: int) -> None:
        """Cache a resolution read when the cache was at ``generation``, unless an invalidation
        came since (it may have been read before the change); at most ``size`` entries."""
        with self._lock:
            if generation != self.generation:
                return
            self._drop(room)
            self._entries[room] = (self.clock() + seconds, info, pk)
            if info is not None:
                self._by_object.setdefault((kind_of(room), pk), set()).add(room)
            while len(self._entries) > size:
                self._drop(next(iter(self._entries)))

    def forget_object(self, kind: str, pk: Any, room: str | None) -> None:
        """An object of ``kind`` changed: drop the rooms cached as it, and its room now (``room``,
        a refusal, e.g. from before it was created or published; None: its key is unknown, so
        every refusal of the kind)."""
        with self._lock:
            self.generation += 1
            stale = set(self._by_object.get((kind, pk), ()))
            if room is not None:
                stale.add(room)
            else:
                stale.update(r for r, (_, info, _) in self._entries.items() if info is None and kind_of(r) == kind)
            for r in stale:
                self._drop(r)

    def forget_kinds(self, kinds: Iterable[str]) -> None:
        names = set(kinds)
        with self._lock:
            self.generation += 1
            for room in [room for room in self._entries if kind_of(room) in names]:
                self._drop(room)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_object.clear()
            self.generation += 1

    def _drop(self, room: str) -> None:
        """Remove an entry and its index (under the lock)."""
        entry = self._entries.pop(room, None)
        if entry is not None and entry[1] is not None:
            key = (kind_of(room), entry[2])
            rooms = self._by_object.get(key)
            if rooms is not None:
                rooms.discard(room)
                if not rooms:
                    del self._by_object[key]
