"""Any interleaving of store operations by several processes keeps every count equal to a
naive model (sets of claims); the Redis store, on one server and on a cluster, also answers
exactly as the memory store does.

Each example runs its operation list in a fresh event loop on fresh state (its own key prefix
on Redis, deleted afterwards). Times are explicit, so reaping needs no waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from presence.store.base import Reader, Store
from presence.store.memory import MemoryState, MemoryStore
from tests.conftest import REDIS_BACKENDS

PROCS = ["A", "B", "C"]
READERS = ["r1", "r2", "r3", "r4"]
ROOMS = ["art:1", "art:2", "art:3"]
TTL = 1_000

procs = st.sampled_from(PROCS)
readers = st.sampled_from(READERS)
rooms = st.sampled_from(ROOMS)
positions = st.one_of(st.none(), st.floats(0, 1), st.sampled_from([0.0, 0.05, 0.999, 1.0]))

operations = st.one_of(
    st.tuples(st.just("claim_online"), procs, readers),
    st.tuples(st.just("release_online"), procs, readers),
    st.tuples(st.just("join"), procs, rooms, readers, positions),
    st.tuples(st.just("join"), procs, rooms, readers, positions),
    st.tuples(st.just("update"), procs, rooms, readers, positions, st.integers(-50, 50)),
    st.tuples(st.just("leave"), procs, rooms, readers),
    # Clock advances: within the ttl, past it for procs that beat once, past it for all.
    st.tuples(st.just("heartbeat"), procs, st.sampled_from([0, 400, 700, 1_100])),
    st.tuples(st.just("release_all"), procs),
)


@dataclass
class Model:
    """What the store should hold (claims), and what each process has locally (re-asserted)."""

    online: set[tuple[str, str]] = field(default_factory=set)  # (proc, reader)
    rooms: set[tuple[str, str, str]] = field(default_factory=set)  # (proc, room, reader)
    beats: dict[str, int] = field(default_factory=dict)
    local_online: dict[str, set[str]] = field(default_factory=lambda: {p: set() for p in PROCS})
    local_rooms: dict[str, dict[tuple[str, str], Reader]] = field(
        default_factory=lambda: {p: {} for p in PROCS}
    )

    def held(self, room: str, reader_id: str) -> bool:
        return any(r == room and i == reader_id for _, r, i in self.rooms)

    def count(self, room: str) -> int:
        return len({i for _, r, i in self.rooms if r == room})

    def drop(self, proc: str) -> list[tuple[str, str]]:
        """Remove a process's claims; returns the pairs that nobody holds any more."""
        mine = {(r, i) for p, r, i in self.rooms if p == proc}
        self.rooms = {c for c in self.rooms if c[0] != proc}
        self.online = {c for c in self.online if c[0] != proc}
        self.beats.pop(proc, None)
        return sorted(pair for pair in mine if not self.held(*pair))


class Run:
    """Applies one operation list to a store (and, for Redis, to a memory store in step)."""

    def __init__(self, stores: dict[str, Store], twins: dict[str, Store] | None):
        self.stores, self.twins = stores, twins
        self.model = Model()
        self.now = 10_000

    async def call(self, proc: str, method: str, *args):
        result = await getattr(self.stores[proc], method)(*args)
        if self.twins is not None:
            expected = await getattr(self.twins[proc], method)(*args)
            if method == "heartbeat":
                result, expected = sorted(result), sorted(expected)
            assert result == expected, f"{method}{args}: redis {result!r} != memory {expected!r}"
        return result

    async def apply(self, op: tuple) -> None:
        m, kind, proc = self.model, op[0], op[1]
        self.now += 1
        if kind == "claim_online":
            await self.call(proc, "claim_online", op[2])
            m.online.add((proc, op[2]))
            m.local_online[proc].add(op[2])
        elif kind == "release_online":
            await self.call(proc, "release_online", op[2])
            m.online.discard((proc, op[2]))
            m.local_online[proc].discard(op[2])
        elif kind == "join":
            _, _, room, rid, position = op
            stored = await self.call(proc, "join", room, Reader(rid, None, position, self.now, self.now))
            assert stored.id == rid
            m.rooms.add((proc, room, rid))
            m.local_rooms[proc][(room, rid)] = stored
        elif kind == "update":
            _, _, room, rid, position, shift = op
            record = Reader(rid, "n", position, self.now, self.now + shift)
            await self.call(proc, "update", [(room, record)])
            if (room, rid) in m.local_rooms[proc]:
                m.local_rooms[proc][(room, rid)] = record
        elif kind == "leave":
            _, _, room, rid = op
            m.rooms.discard((proc, room, rid))
            m.local_rooms[proc].pop((room, rid), None)
            assert await self.call(proc, "leave", room, rid) is (not m.held(room, rid))
        elif kind == "heartbeat":
            self.now += op[2]
            online = sorted(m.local_online[proc])
            claims = sorted(m.local_rooms[proc].items())
            gone = await self.call(
                proc, "heartbeat", self.now, TTL, online, [(r, rec) for (r, _), rec in claims]
            )
            m.beats[proc] = self.now
            m.online |= {(proc, rid) for rid in online}
            m.rooms |= {(proc, room, rid) for room, rid in m.local_rooms[proc]}
            expected: list[tuple[str, str]] = []
            for other, beat in list(m.beats.items()):
                if other != proc and beat < self.now - TTL:
                    expected += m.drop(other)
            assert sorted(gone) == sorted(expected)
        elif kind == "release_all":
            await self.call(proc, "release_all")
            m.drop(proc)
            m.local_online[proc].clear()
            m.local_rooms[proc].clear()
        await self.check()

    async def check(self) -> None:
        m, store = self.model, self.stores["A"]
        assert await store.online() == len({i for _, i in m.online})
        counts = {room: m.count(room) for room in ROOMS}
        assert await store.counts(ROOMS) == counts
        for room in ROOMS:
            state = await store.room_state(room, 100)
            assert state.count == counts[room]
            assert sum(state.histogram) == counts[room]
            assert {r.id for r in state.readers} == {i for _, r, i in m.rooms if r == room}
            if self.twins is not None:
                assert state == await self.twins["A"].room_state(room, 100)
        ranked = sorted(((room, n) for room, n in counts.items() if n), key=lambda x: (-x[1], x[0]))
        assert await store.ranking(10) == ranked


async def _run(ops: list[tuple], stores: dict[str, Store], twins: dict[str, Store] | None) -> None:
    run = Run(stores, twins)
    try:
        for op in ops:
            await run.apply(op)
    finally:
        for store in stores.values():
            await store.close()


_examples = itertools.count()


@pytest.fixture(params=["memory", *REDIS_BACKENDS])
def backend(request):
    """``(name, make_stores, cleanup)``: fresh shared state for each example."""
    if request.param == "memory":

        def make_memory():
            state = MemoryState()
            return {p: MemoryStore(p, state=state) for p in PROCS}

        return "memory", make_memory, None

    from presence.store.redis import RedisStore

    cluster = request.param == "redis-cluster"
    if cluster:
        url = request.getfixturevalue("redis_cluster_url")
        base = f"presence-test-{uuid.uuid4().hex[:12]}"
    else:
        url = request.getfixturevalue("redis_url")
        base = request.getfixturevalue("redis_prefix")  # keys of every example start with it

    def make_redis():
        prefix = f"{base}-{next(_examples)}"
        return {p: RedisStore(p, url=url, prefix=prefix, cluster=cluster) for p in PROCS}

    async def cleanup(stores):
        store = next(iter(stores.values()))
        client = store._client()
        keys = [k async for k in client.scan_iter(match=f"{store.prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)  # slot by slot on a cluster
        await store.close()

    return request.param, make_redis, cleanup


# Fewer examples on the cluster: each one connects three stores to three nodes afresh, and the
# same scripts already run 100 examples on one server; the cluster adds routing, not logic.
EXAMPLES = {"memory": 100, "redis": 100, "redis-cluster": 25}


def test_any_interleaving_keeps_counts_equal_to_the_model(backend):
    name, make, cleanup = backend

    @settings(max_examples=EXAMPLES[name], deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=st.lists(operations, min_size=15, max_size=60))
    def check(ops):
        async def main():
            stores = make()
            twins = None
            if name != "memory":
                state = MemoryState()
                twins = {p: MemoryStore(p, state=state) for p in PROCS}
            try:
                await _run(ops, stores, twins)
            finally:
                if cleanup is not None:
                    await cleanup(stores)

        asyncio.run(main())

    check()
