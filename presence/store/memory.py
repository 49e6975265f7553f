"""In-memory store: the default for ``runserver`` and tests; one server process.

Several ``MemoryStore`` views may share one ``MemoryState`` to model several processes
in a test, with the same claim and reaping rules as the Redis store.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field, replace

from presence.store.base import HISTOGRAM_BUCKETS, Reader, RoomState, Store, bucket


@dataclass
class _Room:
    claims: dict[str, set[str]] = field(default_factory=dict)  # reader id -> procs
    readers: dict[str, Reader] = field(default_factory=dict)
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BUCKETS)


@dataclass
class MemoryState:
    online: dict[str, set[str]] = field(default_factory=dict)  # reader id -> procs
    rooms: dict[str, _Room] = field(default_factory=dict)
    proc_online: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    proc_rooms: defaultdict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    beats: dict[str, int] = field(default_factory=dict)
    # address -> reader id -> connections, site-wide; and each proc's share of it.
    addresses: dict[str, dict[str, int]] = field(default_factory=dict)
    proc_addresses: defaultdict[str, dict[tuple[str, str], int]] = field(default_factory=lambda: defaultdict(dict))


class MemoryStore(Store):
    spans_processes = False

    def __init__(self, proc: str, state: MemoryState | None = None, **options: object):
        super().__init__(proc)
        self.state = state if state is not None else MemoryState()

    # -- claims, shared by the public methods and by reaping ---------------------------
    def _claim_online(self, proc: str, reader_id: str) -> None:
        self.state.online.setdefault(reader_id, set()).add(proc)
        self.state.proc_online[proc].add(reader_id)

    def _release_online(self, proc: str, reader_id: str) -> None:
        self.state.proc_online[proc].discard(reader_id)
        procs = self.state.online.get(reader_id)
        if procs is not None:
            procs.discard(proc)
            if not procs:
                del self.state.online[reader_id]

    def _join(self, proc: str, room: str, reader: Reader) -> Reader:
        data = self.state.rooms.setdefault(room, _Room())
        data.claims.setdefault(reader.id, set()).add(proc)
        self.state.proc_rooms[proc].add((room, reader.id))
        stored = data.readers.get(reader.id)
        if stored is None:
            stored = data.readers[reader.id] = replace(reader)
            data.histogram[bucket(stored.position)] += 1
        return replace(stored)

    def _leave(self, proc: str, room: str, reader_id: str) -> bool:
        self.state.proc_rooms[proc].discard((room, reader_id))
        data = self.state.rooms.get(room)
        if data is None or reader_id not in data.claims:
            return True
        procs = data.claims[reader_id]
        procs.discard(proc)
        if procs:
            return False
        del data.claims[reader_id]
        stored = data.readers.pop(reader_id, None)
        if stored is not None:
            data.histogram[bucket(stored.position)] -= 1
        if not data.claims:
            del self.state.rooms[room]
        return True

    def _adjust(self, proc: str, address: str, reader_id: str, delta: int) -> None:
        """Change ``proc``'s count of connections of a reader from an address, and the site's."""
        mine = self.state.proc_addresses[proc]
        held = mine.get((address, reader_id), 0) + delta
        if held > 0:
            mine[(address, reader_id)] = held
        else:
            mine.pop((address, reader_id), None)
        site = self.state.addresses.setdefault(address, {})
        total = site.get(reader_id, 0) + delta
        if total > 0:
            site[reader_id] = total
        else:
            site.pop(reader_id, None)
        if not site:
            del self.state.addresses[address]

    def _sync_addresses(self, proc: str, wanted: dict[tuple[str, str], int]) -> None:
        mine = self.state.proc_addresses[proc]
        for pair in set(mine) | set(wanted):
            delta = wanted.get(pair, 0) - mine.get(pair, 0)
            if delta:
                self._adjust(proc, *pair, delta)

    def _reap(self, proc: str) -> list[tuple[str, str]]:
        gone = []
        for room, reader_id in sorted(self.state.proc_rooms.get(proc, ())):
            if self._leave(proc, room, reader_id):
                gone.append((room, reader_id))
        self.state.proc_rooms.pop(proc, None)
        for reader_id in list(self.state.proc_online.get(proc, ())):
            self._release_online(proc, reader_id)
        self.state.proc_online.pop(proc, None)
        self._sync_addresses(proc, {})
        self.state.proc_addresses.pop(proc, None)
        self.state.beats.pop(proc, None)
        return gone

    # -- the interface ----------------------------------------------------------------
    async def claim_online(self, reader_id: str) -> None:
        self._claim_online(self.proc, reader_id)

    async def release_online(self, reader_id: str) -> None:
        self._release_online(self.proc, reader_id)

    async def online(self) -> int:
        return len(self.state.online)

    async def join(self, room: str, reader: Reader) -> Reader:
        return self._join(self.proc, room, reader)

    async def leave(self, room: str, reader_id: str) -> bool:
        return self._leave(self.proc, room, reader_id)

    async def update(self, items: list[tuple[str, Reader]]) -> None:
        for room, reader in items:
            data = self.state.rooms.get(room)
            stored = data.readers.get(reader.id) if data else None
            if stored is None or reader.updated_at < stored.updated_at:
                continue
            data.histogram[bucket(stored.position)] -= 1
            data.histogram[bucket(reader.position)] += 1
            data.readers[reader.id] = replace(reader, joined_at=stored.joined_at)

    async def room_state(self, room: str, limit: int = 100) -> RoomState:
        data = self.state.rooms.get(room)
        if data is None:
            return RoomState(room, 0, [], [0] * HISTOGRAM_BUCKETS)
        newest = heapq.nlargest(limit, data.readers.values(), key=lambda r: (r.updated_at, r.id))
        return RoomState(room, len(data.claims), [replace(r) for r in newest], list(data.histogram))

    async def counts(self, rooms: list[str]) -> dict[str, int]:
        return {room: len(self.state.rooms[room].claims) if room in self.state.rooms else 0 for room in rooms}

    async def ranking(self, limit: int) -> list[tuple[str, int]]:
        ranked = sorted(((room, len(d.claims)) for room, d in self.state.rooms.items()), key=lambda x: (-x[1], x[0]))
        return ranked[:limit]

    async def admit(self, address: str, reader_id: str, max_readers: int | None, max_connections: int | None) -> bool:
        readers = self.state.addresses.get(address, {})
        if max_connections is not None and sum(readers.values()) >= max_connections:
            return False
        if max_readers is not None and reader_id not in readers and len(readers) >= max_readers:
            return False
        self._adjust(self.proc, address, reader_id, 1)
        return True

    async def dismiss(self, address: str, reader_id: str) -> None:
        if self.state.proc_addresses[self.proc].get((address, reader_id), 0) > 0:
            self._adjust(self.proc, address, reader_id, -1)

    async def admitted(self, address: str) -> tuple[int, int]:
        readers = self.state.addresses.get(address, {})
        return len(readers), sum(readers.values())

    async def heartbeat(
        self,
        now_ms: int,
        ttl_ms: int,
        online: list[str],
        rooms: list[tuple[str, Reader]],
        addresses: list[tuple[str, str, int]] | None = None,
    ) -> list[tuple[str, str]]:
        self.state.beats[self.proc] = now_ms
        for reader_id in online:
            self._claim_online(self.proc, reader_id)
        if addresses is not None:
            self._sync_addresses(self.proc, {(a, r): n for a, r, n in addresses if n > 0})
        for room, reader in rooms:
            self._join(self.proc, room, reader)
        gone: list[tuple[str, str]] = []
        for proc, beat in list(self.state.beats.items()):
            if proc != self.proc and beat < now_ms - ttl_ms:
                gone.extend(self._reap(proc))
        return gone

    async def release_all(self) -> list[tuple[str, str]]:
        return self._reap(self.proc)
