"""The store contract: every test runs on the memory and the Redis store (``store_factory``).

Times are passed in explicitly, so reaping is tested without waiting.
"""

from __future__ import annotations

import dataclasses

import pytest

from presence.store.base import HISTOGRAM_BUCKETS, Reader, bucket
from tests.conftest import REDIS_BACKENDS

TTL = 1_000


def reader(
    rid: str, position: float | None = None, at: int = 1_000, joined: int | None = None, name=None
) -> Reader:
    return Reader(
        id=rid, name=name, position=position, joined_at=at if joined is None else joined, updated_at=at
    )


def hist(**buckets: int) -> list[int]:
    """A histogram from ``b<index>=count`` keywords."""
    out = [0] * HISTOGRAM_BUCKETS
    for key, count in buckets.items():
        out[int(key[1:])] = count
    return out


# -- online ----------------------------------------------------------------------------------


def test_a_reader_object_carries_every_field_and_round_trips_through_json():
    """``as_dict`` is spelled out for speed: a field added to ``Reader`` must not go missing from frames."""
    reader = Reader("r1", "Ana", 0.5, 1_000, 2_000)
    assert reader.as_dict() == dataclasses.asdict(reader)
    assert Reader.from_json(reader.to_json()) == reader


async def test_online_counts_distinct_readers_across_claims_and_procs(store_factory):
    a, b = store_factory("A"), store_factory("B")
    assert await a.online() == 0
    await a.claim_online("r1")
    await a.claim_online("r1")
    await a.claim_online("r2")
    await b.claim_online("r1")
    assert await a.online() == 2
    assert await b.online() == 2

    await a.release_online("r1")
    assert await a.online() == 2, "B still holds r1"
    await a.claim_online("r1")
    await a.claim_online("r1")
    await b.release_online("r1")
    assert await a.online() == 2, "A re-claimed r1; repeated claims count once"
    await a.release_online("r1")
    assert await a.online() == 1


async def test_release_online_is_idempotent(store_factory):
    a, b = store_factory("A"), store_factory("B")
    await a.claim_online("r1")
    await b.claim_online("r1")
    await a.release_online("r1")
    await a.release_online("r1")
    await a.release_online("never-claimed")
    assert await a.online() == 1, "A's extra releases must not drop B's claim"
    await b.release_online("r1")
    await b.release_online("r1")
    assert await a.online() == 0


# -- join / leave ----------------------------------------------------------------------------


async def test_join_returns_the_stored_record_and_keeps_the_first(store_factory):
    a, b = store_factory("A"), store_factory("B")
    first = Reader("r1", "Ann", 0.1, joined_at=100, updated_at=100)
    assert await a.join("art:1", first) == first

    later = Reader("r1", "Other", 0.9, joined_at=200, updated_at=200)
    assert await b.join("art:1", later) == first, "an earlier record wins, joined_at and position included"
    assert await a.join("art:1", later) == first, "re-joining is idempotent"

    state = await a.room_state("art:1")
    assert state.count == 1
    assert state.readers == [first]
    assert state.histogram == hist(b2=1)


async def test_join_keeps_a_copy(store_factory):
    a = store_factory("A")
    mine = reader("r1", 0.3)
    stored = await a.join("art:1", mine)
    stored.position = 0.99
    mine.position = 0.98
    assert (await a.room_state("art:1")).readers == [reader("r1", 0.3)]


async def test_leave_is_true_only_when_no_proc_holds_the_reader(store_factory):
    a, b, c = store_factory("A"), store_factory("B"), store_factory("C")
    await a.join("art:1", reader("r1", 0.5))
    await b.join("art:1", reader("r1", 0.5))

    assert await a.leave("art:1", "r1") is False
    assert (await a.room_state("art:1")).count == 1
    assert await c.leave("art:1", "r1") is False, "a proc without a claim cannot remove B's"
    assert await a.leave("art:1", "r1") is False, "repeating a leave changes nothing"
    assert (await a.counts(["art:1"])) == {"art:1": 1}

    assert await b.leave("art:1", "r1") is True
    state = await a.room_state("art:1")
    assert (state.count, state.readers, state.histogram) == (0, [], hist())
    assert await b.leave("art:1", "r1") is True, "leaving twice is harmless"
    assert await a.leave("art:9", "nobody") is True


async def test_rooms_are_independent(store_factory):
    a = store_factory("A")
    await a.join("art:1", reader("r1", 0.1))
    await a.join("art:2", reader("r1", 0.9))
    await a.join("art:2", reader("r2"))
    assert await a.counts(["art:1", "art:2"]) == {"art:1": 1, "art:2": 2}
    assert await a.leave("art:2", "r1") is True
    assert await a.counts(["art:1", "art:2"]) == {"art:1": 1, "art:2": 1}
    assert (await a.room_state("art:1")).readers == [reader("r1", 0.1)]


async def test_counts_of_several_rooms_including_empty_ones(store_factory):
    a, b = store_factory("A"), store_factory("B")
    for rid in ("r1", "r2", "r3"):
        await a.join("art:1", reader(rid))
    await b.join("art:1", reader("r1"))
    await b.join("art:2", reader("r9"))
    await a.join("art:3", reader("r4"))
    await a.leave("art:3", "r4")
    assert await b.counts(["art:1", "art:2", "art:3", "never"]) == {
        "art:1": 3,
        "art:2": 1,
        "art:3": 0,
        "never": 0,
    }
    assert await b.counts([]) == {}


# -- update ----------------------------------------------------------------------------------


async def test_update_newest_wins_and_keeps_joined_at(store_factory):
    a, b = store_factory("A"), store_factory("B")
    await a.join("art:1", Reader("r1", None, 0.1, joined_at=100, updated_at=100))

    await a.update([("art:1", Reader("r1", "Ann", 0.5, joined_at=999, updated_at=200))])
    expected = Reader("r1", "Ann", 0.5, joined_at=100, updated_at=200)
    assert (await a.room_state("art:1")).readers == [expected]

    await b.update([("art:1", Reader("r1", "Old", 0.9, joined_at=100, updated_at=150))])
    state = await a.room_state("art:1")
    assert state.readers == [expected], "an older record is ignored"
    assert state.histogram == hist(b10=1)

    await b.update([("art:1", Reader("r1", "Same", 0.7, joined_at=5, updated_at=200))])
    assert (await a.room_state("art:1")).readers == [
        Reader("r1", "Same", 0.7, joined_at=100, updated_at=200)
    ], "an equally new record replaces the stored one"
    assert (await b.join("art:1", reader("r1", 0.0, at=50))).position == 0.7, (
        "join returns the updated record"
    )


async def test_update_in_one_call_for_many_rooms_and_readers(store_factory):
    a = store_factory("A")
    for room in ("art:1", "art:2"):
        for rid in ("r1", "r2"):
            await a.join(room, reader(rid, 0.0, at=10))
    await a.update(
        [
            ("art:1", reader("r1", 0.5, at=20)),
            ("art:2", reader("r2", 0.6, at=30)),
            ("art:1", reader("r1", 0.55, at=25)),
            ("art:1", reader("r1", 0.9, at=21)),  # older than the one just before: ignored
        ]
    )
    one, two = await a.room_state("art:1"), await a.room_state("art:2")
    assert [(r.id, r.position, r.updated_at, r.joined_at) for r in one.readers] == [
        ("r1", 0.55, 25, 10),
        ("r2", 0.0, 10, 10),
    ]
    assert [(r.id, r.position) for r in two.readers] == [("r2", 0.6), ("r1", 0.0)]
    assert one.histogram == hist(b0=1, b11=1)
    assert two.histogram == hist(b0=1, b12=1)
    await a.update([])


async def test_update_of_a_reader_not_in_the_room_is_ignored(store_factory):
    a = store_factory("A")
    await a.join("art:1", reader("r1", 0.1))
    await a.update([("art:1", reader("ghost", 0.5, at=5_000)), ("art:2", reader("r1", 0.5, at=5_000))])
    one, two = await a.room_state("art:1"), await a.room_state("art:2")
    assert [r.id for r in one.readers] == ["r1"] and one.count == 1 and one.histogram == hist(b2=1)
    assert (two.count, two.readers, two.histogram) == (0, [], hist())
    assert await a.ranking(10) == [("art:1", 1)]
    assert await a.counts(["art:2"]) == {"art:2": 0}

    await a.leave("art:1", "r1")
    await a.update([("art:1", reader("r1", 0.7, at=9_000))])
    assert (await a.room_state("art:1")).readers == [], "a reader who left gets no record back"


# -- histogram -------------------------------------------------------------------------------


async def test_histogram_buckets_moves_and_removal(store_factory):
    a = store_factory("A")
    positions = {"zero": 0.0, "low": 0.049, "edge": 0.05, "end": 1.0, "none": None, "mid": 0.5}
    for rid, position in positions.items():
        await a.join("art:1", reader(rid, position))
    assert (await a.room_state("art:1")).histogram == hist(b0=3, b1=1, b10=1, b19=1)

    await a.update([("art:1", reader("edge", 0.97, at=2_000)), ("art:1", reader("none", 0.3, at=2_000))])
    assert (await a.room_state("art:1")).histogram == hist(b0=2, b6=1, b10=1, b19=2)

    await a.update([("art:1", reader("mid", None, at=3_000))])
    assert (await a.room_state("art:1")).histogram == hist(b0=3, b6=1, b19=2)

    await a.leave("art:1", "end")
    await a.leave("art:1", "zero")
    state = await a.room_state("art:1")
    assert state.histogram == hist(b0=2, b6=1, b19=1)
    assert sum(state.histogram) == state.count == 4


# -- room state and ranking ------------------------------------------------------------------


async def test_room_state_caps_readers_newest_first_but_counts_everyone(store_factory):
    a, b = store_factory("A"), store_factory("B")
    everyone = []
    for i in range(150):
        # Pairs share an updated_at, so ties are ordered too (by id, descending).
        record = reader(f"r{i:03d}", position=(i % 20) / 20, at=1_000 + i // 2)
        everyone.append(record)
        await (a if i % 3 else b).join("art:1", record)

    state = await a.room_state("art:1", limit=100)
    expected = sorted(everyone, key=lambda r: (r.updated_at, r.id), reverse=True)[:100]
    assert state.readers == expected
    assert state.count == 150
    expected_histogram = [0] * HISTOGRAM_BUCKETS
    for record in everyone:
        expected_histogram[bucket(record.position)] += 1
    assert state.histogram == expected_histogram
    assert sum(state.histogram) == 150

    assert (await a.room_state("art:1")).readers == expected, "the default limit is 100"
    assert [r.id for r in (await a.room_state("art:1", limit=3)).readers] == ["r149", "r148", "r147"]
    zero = await a.room_state("art:1", limit=0)
    assert (zero.readers, zero.count) == ([], 150)

    await a.update([("art:1", reader("r000", 0.5, at=5_000))])
    assert (await a.room_state("art:1", limit=1)).readers[0].id == "r000", "an update makes a reader newest"


async def test_room_state_of_an_unknown_room(store_factory):
    state = await store_factory("A").room_state("art:404")
    assert (state.room, state.count, state.readers, state.histogram) == ("art:404", 0, [], hist())


async def test_ranking_orders_rooms_and_drops_emptied_ones(store_factory):
    a, b = store_factory("A"), store_factory("B")
    assert await a.ranking(10) == []
    layout = {"art:x": 3, "art:y": 1, "art:z": 2, "art:w": 2}
    for room, n in layout.items():
        for i in range(n):
            await a.join(room, reader(f"{room}-r{i}"))
    await b.join("art:x", reader("art:x-r0"))  # a second claim does not count twice

    assert await a.ranking(10) == [("art:x", 3), ("art:w", 2), ("art:z", 2), ("art:y", 1)]
    assert await b.ranking(2) == [("art:x", 3), ("art:w", 2)]
    assert await b.ranking(0) == []

    await a.leave("art:y", "art:y-r0")
    for i in range(3):
        await a.leave("art:x", f"art:x-r{i}")
    assert await a.ranking(10) == [("art:w", 2), ("art:z", 2), ("art:x", 1)], "B still holds art:x-r0"
    await b.leave("art:x", "art:x-r0")
    assert await a.ranking(10) == [("art:w", 2), ("art:z", 2)]


# -- heartbeat, reaping, shutdown ------------------------------------------------------------


async def test_heartbeat_reaps_a_silent_proc(store_factory):
    a, b = store_factory("A"), store_factory("B")
    shared = reader("shared", 0.2)
    a_rooms = [("art:1", shared)]
    b_rooms = [("art:1", shared), ("art:1", reader("b1", 0.6)), ("art:2", reader("b2", 0.9))]
    await a.claim_online("shared")
    for room, record in a_rooms:
        await a.join(room, record)
    for rid in ("shared", "b1", "b2"):
        await b.claim_online(rid)
    for room, record in b_rooms:
        await b.join(room, record)

    assert await a.heartbeat(0, TTL, ["shared"], a_rooms) == []
    assert await b.heartbeat(0, TTL, ["shared", "b1", "b2"], b_rooms) == []
    assert await a.online() == 3
    assert await a.heartbeat(500, TTL, ["shared"], a_rooms) == []
    assert await a.heartbeat(1_000, TTL, ["shared"], a_rooms) == [], "silent for exactly the ttl: still alive"
    assert await a.online() == 3

    # B stops beating; A's heartbeat after the ttl removes B's readers.
    gone = await a.heartbeat(1_001, TTL, ["shared"], a_rooms)
    assert sorted(gone) == [("art:1", "b1"), ("art:2", "b2")], "readers A also holds do not leave"
    assert await a.online() == 1
    assert await a.counts(["art:1", "art:2"]) == {"art:1": 1, "art:2": 0}
    assert await a.ranking(10) == [("art:1", 1)]
    state = await a.room_state("art:1")
    assert (state.readers, state.histogram) == ([shared], hist(b4=1))

    assert await a.heartbeat(2_500, TTL, ["shared"], a_rooms) == [], "B is reaped once"
    await b.release_all()  # B wakes up and shuts down: nothing of A's goes away
    assert await a.online() == 1
    assert await a.counts(["art:1"]) == {"art:1": 1}


async def test_heartbeat_reaps_several_procs_and_reports_each_pair_once(store_factory):
    a, b, c = store_factory("A"), store_factory("B"), store_factory("C")
    both = [("art:1", reader("r1")), ("art:2", reader("r2"))]
    for store in (b, c):
        await store.heartbeat(0, TTL, ["r1", "r2"], both)
    await c.heartbeat(500, TTL, ["r1", "r2", "r3"], [*both, ("art:3", reader("r3"))])
    assert await a.heartbeat(1_200, TTL, [], []) == [], "B's claims are all C's too"
    assert await a.counts(["art:1", "art:2", "art:3"]) == {"art:1": 1, "art:2": 1, "art:3": 1}
    assert sorted(await a.heartbeat(1_600, TTL, [], [])) == [
        ("art:1", "r1"),
        ("art:2", "r2"),
        ("art:3", "r3"),
    ]
    assert await a.online() == 0
    assert await a.ranking(10) == []


async def test_heartbeat_reasserts_claims_idempotently(store_factory):
    a = store_factory("A")
    rooms = [("art:1", reader("r1", 0.1)), ("art:1", reader("r2", 0.5)), ("art:2", reader("r1", 0.9))]
    for now in (0, 100, 200):
        assert await a.heartbeat(now, TTL, ["r1", "r2"], rooms) == []
    assert await a.online() == 2
    assert await a.counts(["art:1", "art:2"]) == {"art:1": 2, "art:2": 1}
    assert (await a.room_state("art:1")).histogram == hist(b2=1, b10=1)
    assert await a.leave("art:1", "r1") is True, "one leave undoes any number of re-assertions"
    await a.release_online("r1")
    assert await a.online() == 1


async def test_release_all_drops_every_claim_of_the_proc(store_factory):
    a, b = store_factory("A"), store_factory("B")
    for rid in ("r1", "r2"):
        await a.claim_online(rid)
    await b.claim_online("r2")
    await a.join("art:1", reader("r1", 0.1))
    await a.join("art:1", reader("r2", 0.5))
    await a.join("art:2", reader("r1", 0.5))
    await b.join("art:1", reader("r2", 0.5))
    await a.heartbeat(0, TTL, ["r1", "r2"], [])
    await b.heartbeat(0, TTL, ["r2"], [])

    assert await a.release_all() == [("art:1", "r1"), ("art:2", "r1")], "r2 is still in art:1 through B"
    assert await b.online() == 1
    assert await b.counts(["art:1", "art:2"]) == {"art:1": 1, "art:2": 0}
    assert await b.ranking(10) == [("art:1", 1)]
    state = await b.room_state("art:1")
    assert ([r.id for r in state.readers], state.histogram) == (["r2"], hist(b10=1))
    assert await b.heartbeat(5_000, TTL, ["r2"], []) == [], "A said goodbye: nothing left to reap"
    await a.release_all()
    assert await b.online() == 1


async def test_heartbeat_restores_everything_after_data_loss(store_factory):
    a, b = store_factory("A"), store_factory("B")
    a_online, b_online = ["r1", "r2"], ["r2", "r3"]
    a_rooms = [
        ("art:1", reader("r1", 0.1, at=10)),
        ("art:1", reader("r2", 0.55, at=20)),
        ("art:2", reader("r1", 1.0)),
    ]
    b_rooms = [("art:1", reader("r2", 0.55, at=20)), ("art:3", reader("r3", None, at=30, name="Bea"))]
    for store, online, rooms in ((a, a_online, a_rooms), (b, b_online, b_rooms)):
        await store.heartbeat(0, TTL, online, rooms)
    # Progress reaches the store, and the processes' copies, as the hub keeps them.
    newer = reader("r2", 0.8, at=40, joined=20)
    await a.update([("art:1", newer)])
    a_rooms[1] = b_rooms[0] = ("art:1", newer)

    rooms = ["art:1", "art:2", "art:3"]

    async def snapshot():
        return (
            await a.online(),
            await a.counts(rooms),
            [await a.room_state(room) for room in rooms],
            await a.ranking(10),
        )

    before = await snapshot()
    assert before[0] == 3 and before[1] == {"art:1": 2, "art:2": 1, "art:3": 1}

    await store_factory.wipe()  # a Redis restart without persistence (FLUSHALL)
    assert await a.online() == 0 and await a.ranking(10) == []

    assert await a.heartbeat(100, TTL, a_online, a_rooms) == []
    assert await b.heartbeat(100, TTL, b_online, b_rooms) == []
    assert await snapshot() == before

    # The restored claims behave like the originals.
    assert await a.leave("art:1", "r2") is False
    assert await b.leave("art:1", "r2") is True
    assert await a.heartbeat(1_500, TTL, a_online, a_rooms[:1] + a_rooms[2:]) == [("art:3", "r3")]
    assert await a.online() == 2


# -- per-address caps (presence/admissions.py) --------------------------------------------------


async def test_admit_caps_distinct_readers_of_an_address_across_procs(store_factory):
    a, b = store_factory("A"), store_factory("B")
    assert await a.admit("addr1", "r1", 2, 10)
    assert await b.admit("addr1", "r2", 2, 10)  # another process: counted together
    assert not await a.admit("addr1", "r3", 2, 10)  # a third reader from that address
    assert not await b.admit("addr1", "r3", 2, 10)
    assert await b.admit("addr1", "r1", 2, 10)  # a known reader's next tab is no new reader
    assert await a.admit("addr2", "r3", 2, 10)  # another address has its own allowance
    assert await a.admitted("addr1") == (2, 3) and await a.admitted("addr2") == (1, 1)
    await a.dismiss("addr1", "r1")
    assert await b.admitted("addr1") == (2, 2), "r1 still has B's tab"
    await b.dismiss("addr1", "r1")
    assert await b.admitted("addr1") == (1, 1)
    assert await a.admit("addr1", "r3", 2, 10)  # r1 gone: room for another reader
    await a.dismiss("addr1", "r9")  # never counted: nothing changes
    await b.dismiss("addr1", "r3")  # counted by A, not B: nothing changes
    assert await a.admitted("addr1") == (2, 2)


async def test_admit_caps_connections_and_none_is_no_cap(store_factory):
    a, b = store_factory("A"), store_factory("B")
    for store in (a, b, a):
        assert await store.admit("addr1", "r1", None, 3)
    assert not await b.admit("addr1", "r1", None, 3)  # same reader, fourth tab: too many sockets
    assert not await b.admit("addr1", "r2", None, 3)
    assert await a.admitted("addr1") == (1, 3)
    for n in range(20):
        assert await a.admit("addr2", f"r{n}", None, None)
    assert await a.admitted("addr2") == (20, 20)


async def test_admit_counts_are_claims_reasserted_and_reaped_like_the_others(store_factory):
    a, b = store_factory("A"), store_factory("B")
    for _ in range(2):
        assert await a.admit("addr1", "r1", 2, 5)
    assert await b.admit("addr1", "r2", 2, 5)
    await store_factory.wipe()  # the store lost its data: the heartbeats count them again
    assert await a.admitted("addr1") == (0, 0)
    await a.heartbeat(0, TTL, [], [], [("addr1", "r1", 2)])
    await b.heartbeat(0, TTL, [], [], [("addr1", "r2", 1)])
    assert await a.admitted("addr1") == (2, 3)
    await a.heartbeat(100, TTL, [], [], [("addr1", "r1", 2)])  # idempotent
    assert await a.admitted("addr1") == (2, 3)
    # A heartbeat's list is the process's whole share: a dismiss the store missed is repaired.
    await a.heartbeat(200, TTL, [], [], [("addr1", "r1", 1)])
    assert await a.admitted("addr1") == (2, 2)
    assert not await a.admit("addr1", "r3", 2, 5)
    # B dies: the next heartbeat of A reaps it, and its reader's slot with it.
    await a.heartbeat(200 + TTL + 1, TTL, [], [], [("addr1", "r1", 1)])
    assert await a.admitted("addr1") == (1, 1)
    assert await a.admit("addr1", "r3", 2, 5)
    await a.release_all()  # a graceful stop
    assert await a.admitted("addr1") == (0, 0)


async def test_admit_at_the_cap_lets_exactly_the_cap_through_when_racing(store_factory):
    import asyncio

    stores = [store_factory(f"P{n}") for n in range(3)]
    for store in stores:  # connected first (a hub's first heartbeat does it before any admit)
        assert await store.admitted("addr1") == (0, 0)
    results = await asyncio.gather(*(stores[n % 3].admit("addr1", f"r{n}", 7, 100) for n in range(60)))
    assert sum(results) == 7
    assert await stores[0].admitted("addr1") == (7, 7)


# -- Redis specifics -------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_keys_stay_under_the_prefix_and_rooms_share_a_slot(redis_url, redis_prefix):
    import redis.asyncio as aredis
    from redis.cluster import key_slot

    from presence.store.redis import RedisStore

    store = RedisStore("A", url=redis_url, prefix=redis_prefix)
    probe = aredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await store.claim_online("r1")
        await store.join("art:1", reader("r1", 0.5))
        await store.admit("addrkey1", "r1", 2, 3)
        await store.heartbeat(0, TTL, ["r1"], [("art:1", reader("r1", 0.5))], [("addrkey1", "r1", 1)])
        keys = [k async for k in probe.scan_iter(match=f"{redis_prefix}*", count=1000)]
        assert keys and all(k.startswith(redis_prefix + ":") for k in keys)
        room_keys = [k for k in keys if "art:1" in k]
        assert len(room_keys) >= 4
        assert len({key_slot(k.encode()) for k in room_keys}) == 1
        # The site-wide keys, the per-address counts among them, share the slot of {g}.
        site_keys = [k for k in keys if "art:1" not in k]
        assert len([k for k in site_keys if ":ip" in k]) == 4
        assert len({key_slot(k.encode()) for k in site_keys}) == 1
    finally:
        await store.close()
        await probe.aclose()


@pytest.mark.redis
async def test_redis_store_survives_a_script_cache_flush_and_a_dropped_connection(redis_url, redis_prefix):
    """A restarted Redis has no scripts and drops connections: the store carries on."""
    import redis.asyncio as aredis

    from presence.store.redis import RedisStore

    store = RedisStore("A", url=redis_url, prefix=redis_prefix)
    try:
        await store.join("art:1", reader("r1", 0.5))
        # Pretend the scripts were never loaded (as on a fresh server) rather than flushing a
        # shared server's script cache: the store must load them again on NOSCRIPT.
        for script in store._scripts.values():
            script.sha = "0" * 40
        assert await store.heartbeat(0, TTL, ["r1"], [("art:1", reader("r1", 0.5))]) == []
        for script in store._scripts.values():
            script.sha = "0" * 40
        await store.update([("art:1", reader("r1", 0.7, at=2_000))])
        assert (await store.join("art:1", reader("r2"))).id == "r2"

        # Drop the store's connections from the server side.
        admin = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            me = await store._client().client_id()
            await admin.client_kill_filter(_id=me)
        finally:
            await admin.aclose()
        assert await store.counts(["art:1"]) == {"art:1": 2}
        assert (await store.room_state("art:1")).histogram == hist(b0=1, b14=1)
    finally:
        await store.close()


async def test_redis_store_fails_fast_while_redis_is_down_and_closes():
    from redis.exceptions import ConnectionError as RedisConnectionError

    from presence.store.redis import RedisStore

    store = RedisStore("A", url="redis://127.0.0.1:1/0", prefix="presence-test-down")
    with pytest.raises(RedisConnectionError):
        await store.online()
    with pytest.raises(RedisConnectionError):
        await store.heartbeat(0, TTL, ["r1"], [("art:1", reader("r1"))])
    await store.close()
    await store.close()


def test_redis_store_rejects_hash_tag_braces():
    from presence.store.redis import RedisStore

    with pytest.raises(ValueError):
        RedisStore("A", url="redis://localhost", prefix="pre{fix}")
    with pytest.raises(ValueError):
        RedisStore("proc}", url="redis://localhost")


@pytest.mark.redis
async def test_redis_reaper_with_a_stale_view_spares_a_proc_that_beat_again(redis_url, redis_prefix):
    """Reaping is room by room; each step re-checks the proc is still silent."""
    from presence.store.redis import RedisStore

    a = RedisStore("A", url=redis_url, prefix=redis_prefix)
    b = RedisStore("B", url=redis_url, prefix=redis_prefix)
    try:
        await b.heartbeat(0, TTL, ["r1"], [("art:1", reader("r1"))])
        await b.heartbeat(2_000, TTL, ["r1"], [("art:1", reader("r1"))])
        # A decided at now=1_500 (cutoff 500) that B was silent, and acts only now.
        assert await a._reap(["B"], "500") == []
        assert await a.online() == 1
        assert await a.counts(["art:1"]) == {"art:1": 1}
        assert await a._reap(["B"], "2001") == [("art:1", "r1")]
        assert await a.online() == 0
        assert await a._reap(["B"], "5000") == [], "B is gone: a late reaper finds nothing"
    finally:
        await a.close()
        await b.close()


# -- Redis: room scripts and site-wide calls are separate (one slot each, for Redis Cluster) --


# The memory store changes rooms and site-wide state in one step: these are Redis's own.
redis_only = pytest.mark.parametrize("store_factory", REDIS_BACKENDS, indirect=True)


@pytest.fixture
def redis_store(store_factory):
    """``store_factory`` on Redis only (one server and a cluster): tests marked ``redis_only``."""
    return store_factory


@redis_only
async def test_redis_a_leave_keeps_the_index_entry_of_a_join_still_in_flight(redis_store):
    a, b = redis_store("A"), redis_store("B")
    index = a._index("A")
    await a.heartbeat(0, TTL, [], [])
    await a.join("art:2", reader("r1"))
    # A second join of art:2 by A has marked the index, and not yet claimed in the room...
    pending = next(a._tokens)
    await a._batch([a._mark(pending, ["art:2"])])
    # ...when the only reader A holds there leaves: the entry holds the newer token, so it stays.
    assert await a.leave("art:2", "r1") is True
    assert await a._client().hexists(index, "art:2")
    [claimed] = await a._batch([("join", a._room_keys("art:2", "A"), [pending, *a._groups([reader("r2")], True)])])
    assert claimed[0] == 1
    # A dies before the ranking update: reaping finds the room through the entry.
    assert await b.heartbeat(1_500, TTL, [], []) == [("art:2", "r2")]
    assert await b.counts(["art:2"]) == {"art:2": 0}
    assert await b.ranking(10) == []


@redis_only
async def test_redis_a_join_overtaken_by_the_removal_of_its_index_entry_is_refused(redis_store):
    a = redis_store("A")
    index = a._index("A")
    stale = next(a._tokens)  # a join marked art:1 with this token, then stalled
    await a._batch([a._mark(stale, ["art:1"])])
    await a.join("art:1", reader("r1"))  # a newer join claims, then its reader leaves
    assert await a.leave("art:1", "r1") is True
    assert not await a._client().hexists(index, "art:1"), "the entry held the fence's token: gone"
    # The stalled join's room script runs now: refused, as its entry is gone.
    call = ("join", a._room_keys("art:1", "A"), [stale, *a._groups([reader("r2")], True)])
    assert await a._batch([call]) == [[0]]
    assert await a.counts(["art:1"]) == {"art:1": 0}
    # The public join marks again with a newer token and claims.
    assert (await a.join("art:1", reader("r2"))).id == "r2"
    assert await a._client().hexists(index, "art:1")
    assert await a.ranking(10) == [("art:1", 1)]


@redis_only
async def test_redis_ranking_refuses_counts_older_than_the_one_it_holds(redis_store):
    a = redis_store("A")
    await a.join("art:1", reader("r1"))
    await a.join("art:1", reader("r2"))
    versions = a._client()
    current = int(await versions.zscore(a._versions, "art:1"))
    await a._batch(a._site("A", [("art:1", 7, current - 1)], []))  # an update that arrives late
    assert await a.ranking(10) == [("art:1", 2)]
    await a.leave("art:1", "r1")
    await a.leave("art:1", "r2")
    emptied = int(await versions.zscore(a._versions, "art:1"))
    await a._batch(a._site("A", [("art:1", 1, emptied - 1)], []))
    assert await a.ranking(10) == [], "no phantom of an emptied room"
    await a.join("art:1", reader("r3"))
    assert await a.ranking(10) == [("art:1", 1)]


@redis_only
async def test_redis_a_lost_site_update_is_repaired_by_the_next_heartbeat(redis_store):
    a = redis_store("A")
    rooms = [("art:1", reader("r1")), ("art:2", reader("r2"))]
    await a.heartbeat(0, TTL, [], rooms)
    # The room parts of a leave and of a join ran, their site-wide parts failed.
    await a._script("leave", a._room_keys("art:1", "A"), ["r1"])
    token = next(a._tokens)
    call = ("join", a._room_keys("art:2", "A"), [token, *a._groups([reader("r9")], True)])
    await a._batch([a._mark(token, ["art:2"]), call])
    assert await a.ranking(10) == [("art:1", 1), ("art:2", 1)]
    assert await a.heartbeat(100, TTL, [], [rooms[1], ("art:2", reader("r9"))]) == []
    assert await a.ranking(10) == [("art:2", 2)]
    assert not await a._client().hexists(a._index("A"), "art:1"), "the left room is swept from the index"
