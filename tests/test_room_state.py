"""`room_state` in a crowded room spread over two processes: a reader who joins right after a
burst of moves gets the true 100 most recently updated readers (docs/protocol.md, "Crowded
rooms"), on every store backend, with the two hubs of the ``hubs`` fixture."""

from __future__ import annotations

import random

import pytest

from tests.support.hubs import connect, deliver, tick_all

pytestmark = [pytest.mark.django_db(transaction=True)]

READERS = 105  # more than PRESENCE_ROOM_STATE_READERS (100): the state holds only the newest
NEWEST = 100


async def crowded_room(hubs, article, clock):
    """60 readers on the first process and 45 on the second, all joined and sent, then a burst:
    every reader moves once, in random order, a millisecond apart. Returns the room and the ids of
    the 100 most recently updated, newest first."""
    a, b = hubs
    room = f"article:{article.pk}"
    readers = []
    for n in range(READERS):
        hub = a if n < 60 else b
        _, conn = await connect(hub, f"anon:reader-{n}")
        await hub.join(conn, room)
        readers.append((hub, conn))
    await tick_all(hubs)
    clock.advance(1.0)
    moves = random.Random(7).sample(readers, len(readers))
    for n, (hub, conn) in enumerate(moves):
        clock.advance(0.001)
        hub.progress(conn, room, (n + 1) / (READERS + 1), None)
    newest = [conn.ids[room] for _, conn in reversed(moves)][:NEWEST]
    return room, newest


async def test_a_joiner_gets_the_newest_readers_of_both_processes(hubs, article, clock):
    """The second process has not flushed its own readers' moves yet (its room is not due); the
    first has (its batch reached the second). The joiner on the second process still gets the
    exact newest 100, with their positions."""
    a, b = hubs
    room, newest = await crowded_room(hubs, article, clock)
    await a.flush()
    await deliver()
    clock.advance(0.001)
    _, joiner = await connect(b, "anon:latecomer")
    state = await b.join(joiner, room)
    # The joiner is the newest of all (joined after the burst); the 99 most recent movers follow.
    positions = {rid: s.reader.position for hub in hubs for rid, s in hub.rooms[room].sessions.items()}
    expected = [joiner.ids[room], *newest[:NEWEST - 1]]
    assert [(r.id, r.position) for r in state.readers] == [(rid, positions[rid]) for rid in expected]

async def test_moves_not_yet_flushed_elsewhere_reach_the_joiner_in_its_next_frame(hubs, article, clock):
    """Neither process has flushed the burst when the reader joins: what its `room_state` lacks of
    the other process arrives in the first `room` frame after it, so the readers it knows, newest
    first, are the true newest 100 within a flush of each process."""
    a, b = hubs
    room, newest = await crowded_room(hubs, article, clock)
    clock.advance(0.001)
    client, joiner = await connect(b, "anon:latecomer")
    state = await b.join(joiner, room)
    known = {r.id: r.updated_at for r in state.readers}
    await a.flush()
    await deliver()
    await b.flush()
    for frame in client.take("room"):
        known.update((u["id"], u["updated_at"]) for u in frame["updates"])
        for gone in frame["left"]:
            known.pop(gone, None)
    by_recency = sorted(known, key=known.get, reverse=True)
    assert by_recency[:NEWEST] == [joiner.ids[room], *newest[:NEWEST - 1]]
