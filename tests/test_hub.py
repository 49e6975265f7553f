"""Hubs of several server processes, modelled in one event loop: two hubs sharing one store
and one channel layer. (Real processes: test_processes.py.)"""

from __future__ import annotations

import asyncio
import time

import pytest
from django.test import override_settings

from presence import events, identity
from presence.hub import Hub
from presence.pacing import Pacing
from presence.store.memory import MemoryStore
from tests.support.hubs import Client, connect, deliver, tick_all

pytestmark = [pytest.mark.django_db(transaction=True)]


def rid(conn, room: str) -> str:
    """A connection's reader id in a room, as the room's readers see it (protocol 1.1)."""
    return identity.reader_id(conn.identity, room)


async def test_counts_agree_across_processes(hubs, article):
    a, b = hubs
    room = f"article:{article.pk}"
    ca, conn_a = await connect(a, "anon:browser-one")
    cb, conn_b = await connect(b, "anon:browser-one")  # same browser, tab on the other process
    cc, conn_c = await connect(b, "anon:browser-two")
    assert await a.store.online() == await b.store.online() == 2
    for hub, conn in ((a, conn_a), (b, conn_b), (b, conn_c)):
        state = await hub.join(conn, room)
    assert state.count == 2
    await tick_all(hubs)
    assert ca.take("room")[-1]["count"] == cc.take("room")[-1]["count"] == 2
    assert ca.take("online")[-1]["count"] == 2


async def test_progress_on_one_process_reaches_readers_on_the_other(hubs, article, clock):
    a, b = hubs
    room = f"article:{article.pk}"
    ca, conn_a = await connect(a, "anon:writer")
    cb, conn_b = await connect(b, "anon:watcher")
    await a.join(conn_a, room)
    await b.join(conn_b, room)
    await tick_all(hubs)
    cb.take("room")
    clock.advance(0.5)
    a.progress(conn_a, room, 0.25, "Writer")
    clock.advance(0.1)
    a.progress(conn_a, room, 0.75, None)
    await tick_all(hubs)
    (frame,) = cb.take("room")
    (update,) = frame["updates"]
    assert (update["id"], update["position"], update["name"]) == (rid(conn_a, room), 0.75, "Writer")
    assert update["updated_at"] == int(clock() * 1000)


async def quiet_room(hubs, article, clock):
    """A writer on the first process and a watcher on the second in one room, then a tick of silence."""
    a, b = hubs
    room = f"article:{article.pk}"
    ca, writer = await connect(a, "anon:writer")
    cb, watcher = await connect(b, "anon:watcher")
    await a.join(writer, room)
    await b.join(watcher, room)
    await tick_all(hubs)
    ca.frames.clear()
    cb.frames.clear()
    clock.advance(1.0)
    return room, writer, ca, cb


async def flush_across(hubs) -> None:
    """What goes out without a tick: the first process flushes, its batch reaches the second,
    which flushes in turn."""
    a, b = hubs
    await a.flush()
    await deliver()
    await b.flush()


async def test_a_move_in_a_quiet_room_reaches_both_processes_at_once(hubs, article, clock):
    """No tick between the move and the frames: the writer's process sends at once (the leading
    edge) and so does the other process when the batch arrives."""
    a, _ = hubs
    room, writer, ca, cb = await quiet_room(hubs, article, clock)
    a.progress(writer, room, 0.6, None)
    await flush_across(hubs)
    for client in (ca, cb):
        (frame,) = client.take("room")
        assert [(u["id"], u["position"]) for u in frame["updates"]] == [(rid(writer, room), 0.6)]


async def test_moves_right_after_a_frame_wait_for_the_window_and_go_together(hubs, article, clock):
    a, _ = hubs
    room, writer, ca, cb = await quiet_room(hubs, article, clock)
    a.progress(writer, room, 0.2, None)
    await flush_across(hubs)
    assert len(cb.take("room")) == 1
    clock.advance(0.03)
    a.progress(writer, room, 0.3, None)
    clock.advance(0.03)
    a.progress(writer, room, 0.4, None)
    await flush_across(hubs)
    assert cb.take("room") == []  # held: within the window after the last frame
    clock.advance(0.05)
    await flush_across(hubs)
    (frame,) = cb.take("room")
    assert [(u["id"], u["position"]) for u in frame["updates"]] == [(rid(writer, room), 0.4)]


async def test_one_flush_reaches_the_other_process_in_one_message_whatever_the_rooms(hubs, articles, clock):
    """The layer's traffic grows with processes, not rooms: twelve rooms' moves, one message."""
    a, b = hubs
    rooms = [f"article:{article.pk}" for article in articles]
    writers, watchers = [], []
    for room in rooms:
        _, writer = await connect(a, f"anon:writer-{room}")
        watcher, conn = await connect(b, f"anon:watcher-{room}")
        await a.join(writer, room)
        await b.join(conn, room)
        writers.append(writer)
        watchers.append(watcher)
    await tick_all(hubs)
    for watcher in watchers:
        watcher.frames.clear()
    sent = []
    group_send = a.link.layer.group_send

    async def counted(group, message):
        sent.append(message)
        await group_send(group, message)

    a.link.layer.group_send = counted
    clock.advance(1.0)
    for room, writer in zip(rooms, writers, strict=True):
        a.progress(writer, room, 0.5, None)
    await flush_across(hubs)
    assert len(sent) == 1 and len(sent[0]["rooms"]) == len(rooms) == 12
    for room, writer, watcher in zip(rooms, writers, watchers, strict=True):
        (frame,) = watcher.take("room")
        assert frame["room"] == room and [(u["id"], u["position"]) for u in frame["updates"]] == [
            (rid(writer, room), 0.5)]


async def test_a_crowded_room_frame_lists_the_newest_readers_and_carries_the_histogram(hubs, article, clock):
    """A `room` frame lists no more readers than `room_state` does (newest first), whatever the
    crowd, and then carries the histogram so that the distribution stays exact."""
    a, b = hubs
    room = f"article:{article.pk}"
    cw, watcher = await connect(b, "anon:watcher")
    await b.join(watcher, room)
    readers = []
    for n in range(6):
        hub = (a, b)[n % 2]
        _, conn = await connect(hub, f"anon:crowd-{n}")
        await hub.join(conn, room)
        readers.append((hub, conn))
    with override_settings(PRESENCE_ROOM_STATE_READERS=3):
        await tick_all(hubs)
        cw.take("room")
        for n, (hub, conn) in enumerate(readers):
            clock.advance(0.01)
            hub.progress(conn, room, n / 6, None)
        await a.tick()
        await deliver()
        await b.tick()
        (frame,) = cw.take("room")
        state = await a.store.room_state(room)
    newest = [rid(conn, room) for _, conn in reversed(readers[3:])]
    assert [u["id"] for u in frame["updates"]] == newest
    assert frame["count"] == 7
    assert frame["histogram"] == state.histogram and sum(state.histogram) == 7


async def test_a_small_room_frame_lists_every_change_without_a_histogram(hubs, article, clock):
    a, _ = hubs
    room = f"article:{article.pk}"
    cw, watcher = await connect(a, "anon:watcher")
    _, reader = await connect(a, "anon:reader")
    for conn in (watcher, reader):
        await a.join(conn, room)
    await a.tick()
    (frame,) = cw.take("room")
    assert {u["id"] for u in frame["updates"]} == {rid(watcher, room), rid(reader, room)}
    assert "histogram" not in frame


async def test_a_reader_leaving_during_a_heartbeat_is_not_claimed_again_by_it(store_factory, article, clock):
    """The heartbeat re-asserts the claims it read before its call; a reader who leaves while the
    call is on its way (its release done first) must not stay claimed: no phantom reader."""
    hub = Hub(store=store_factory("proc-a"), autotick=False, clock=clock)
    await hub.start()
    room = f"article:{article.pk}"
    _, conn = await connect(hub, "anon:leaving-reader")
    await hub.join(conn, room)
    gate, waiting = asyncio.Event(), asyncio.Event()
    heartbeat = hub.store.heartbeat

    async def slow_heartbeat(*args):
        waiting.set()
        await gate.wait()
        return await heartbeat(*args)

    hub.store.heartbeat = slow_heartbeat
    clock.advance(10)  # a heartbeat is due
    ticking = asyncio.create_task(hub.tick())
    await waiting.wait()
    await hub.unregister(conn, events.CLOSED)
    gate.set()
    await ticking
    assert (await hub.store.room_state(room)).count == 0
    assert await hub.store.online() == 0
    await hub.stop()


async def test_newest_update_wins_across_processes(hubs, article, clock):
    a, b = hubs
    room = f"article:{article.pk}"
    _, tab_a = await connect(a, "anon:two-servers")
    _, tab_b = await connect(b, "anon:two-servers")
    cw, watcher = await connect(a, "anon:watcher")
    for hub, conn in ((a, tab_a), (b, tab_b), (a, watcher)):
        await hub.join(conn, room)
    await tick_all(hubs)
    cw.take("room")
    b.progress(tab_b, room, 0.9, None)
    clock.advance(0.3)
    a.progress(tab_a, room, 0.4, None)
    await tick_all(hubs)
    positions = [u["position"] for f in cw.take("room") for u in f["updates"] if u["id"] == rid(tab_a, room)]
    assert positions[-1] == 0.4
    state = await b.store.room_state(room)
    assert [(r.id, r.position) for r in state.readers if r.id == rid(tab_a, room)] == [(rid(tab_a, room), 0.4)]


async def test_a_silent_process_is_reaped_within_20_seconds(hubs, article, clock, recorded_events):
    a, b = hubs
    room = f"article:{article.pk}"
    ca, conn_a = await connect(a, "anon:survivor")
    _, conn_b = await connect(b, "anon:victim")
    _, both_b = await connect(b, "anon:both-servers")
    _, both_a = await connect(a, "anon:both-servers")
    for hub, conn in ((a, conn_a), (b, conn_b), (b, both_b), (a, both_a)):
        await hub.join(conn, room)
    await tick_all(hubs)
    assert ca.take("room")[-1]["count"] == 3
    ca.take("online")
    # Process b dies: it never ticks or beats again. a keeps ticking once a second.
    died = clock()
    frames = []
    while not (frames and frames[-1]["count"] == 2) and clock() - died <= 20:
        clock.advance(1)
        await a.tick()
        await deliver()
        await a.tick()
        frames = ca.take("room")
    assert frames[-1]["count"] == 2 and clock() - died <= 20
    assert frames[-1]["left"] == [rid(conn_b, room)]  # the reader on both servers stays
    assert await a.store.online() == 2
    assert await a.store.counts([room]) == {room: 2}


async def test_shutdown_releases_everything_at_once(hubs, article, clock, recorded_events):
    a, b = hubs
    room = f"article:{article.pk}"
    ca, conn_a = await connect(a, "anon:survivor")
    _, conn_b = await connect(b, "anon:leaving")
    await a.join(conn_a, room)
    await b.join(conn_b, room)
    await tick_all(hubs)
    ca.frames.clear()
    await b.shutdown()
    await deliver()
    clock.advance(1)  # online frames go out at most once a second, a count held for two readings
    await a.tick()
    await a.tick()
    room_frame = ca.take("room")[-1]
    assert room_frame["count"] == 1 and room_frame["left"] == [rid(conn_b, room)]
    assert ca.take("online")[-1]["count"] == 1
    assert [e.reason for e in recorded_events if isinstance(e, events.ReaderLeft)] == [events.SHUTDOWN]


async def test_store_that_lost_its_data_heals_within_one_heartbeat(hubs, article, clock, wipe_store):
    a, b = hubs
    room = f"article:{article.pk}"
    _, conn_a = await connect(a, "anon:reader-a")
    _, conn_b = await connect(b, "anon:reader-b")
    await a.join(conn_a, room)
    await b.join(conn_b, room)
    a.progress(conn_a, room, 0.6, "A")
    await tick_all(hubs)
    before = await a.store.room_state(room)
    await wipe_store()
    assert await a.store.online() == 0
    clock.advance(5)
    await tick_all(hubs)  # each process beats once
    assert await a.store.online() == 2
    after = await a.store.room_state(room)
    assert (after.count, after.histogram) == (before.count, before.histogram)
    assert {(r.id, r.position) for r in after.readers} == {(r.id, r.position) for r in before.readers}



class FlakyStore(MemoryStore):
    """A memory store whose releases fail while ``broken`` is set, like Redis during an outage."""

    broken = False

    async def release_online(self, reader_id):
        if self.broken:
            raise ConnectionError("store unreachable")
        return await super().release_online(reader_id)

    async def leave(self, room, reader_id):
        if self.broken:
            raise ConnectionError("store unreachable")
        return await super().leave(room, reader_id)


async def test_releases_that_failed_during_an_outage_are_retried(article, clock):
    store = FlakyStore("proc-flaky")
    hub = Hub(store=store, autotick=False, clock=clock)
    await hub.start()
    room = f"article:{article.pk}"
    cw, watcher = await connect(hub, "anon:watcher")
    _, leaver = await connect(hub, "anon:leaver")
    await hub.join(watcher, room)
    await hub.join(leaver, room)
    await hub.tick()
    store.broken = True
    await hub.unregister(leaver, events.CLOSED)
    assert await store.online() == 2  # the store could not be told
    store.broken = False
    clock.advance(5)  # the next process heartbeat
    await hub.tick()
    await deliver()
    clock.advance(1)
    await hub.tick()
    assert await store.online() == 1
    assert await store.counts([room]) == {room: 1}
    frame = cw.take("room")[-1]
    assert frame["count"] == 1 and frame["left"] == [rid(leaver, room)]
    await hub.stop()


@pytest.mark.parametrize("store_factory", ["memory"], indirect=True)  # the loop's timing, not the store's
async def test_what_is_due_every_tick_comes_at_every_tick(store_factory):
    """The tick loop on the real clock: a checkpoint due every tick is written at every tick. Timed
    from when each tick woke, a tick that woke a little earlier in its period than the one before
    skipped it (about one in two: `online` frames and checkpoints came every other second)."""
    ticks = 12
    seen = []

    def receiver(sender, event, **kwargs):
        seen.append(event)

    with override_settings(PRESENCE_TICK=0.25, PRESENCE_CHECKPOINT_SECONDS=0.25, PRESENCE_ONLINE_INTERVAL=0.25):
        hub = Hub(store=store_factory("proc-ticking"))
        events.checkpoint.connect(receiver)
        try:
            await hub.start()
            await asyncio.sleep(ticks * 0.25)
        finally:
            events.checkpoint.disconnect(receiver)
            await hub.stop()
    # One tick may fall outside the window at each end, and a loaded machine may wake one too late.
    assert len(seen) >= ticks - 3, [event.at for event in seen]


async def wait_for(client: Client, kind: str, match, timeout: float = 10.0) -> dict:  # noqa: ASYNC109
    """The first recorded frame of ``kind`` that ``match`` accepts, waiting for the hub's loops."""
    async with asyncio.timeout(timeout):
        while True:
            for frame in client.frames:
                if frame["type"] == kind and match(frame):
                    return frame
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("store_factory", ["memory"], indirect=True)  # the loops' timing, not the store's
async def test_the_loops_send_moves_and_counts_without_waiting_for_a_tick(store_factory, article):
    """With ticks 30 s apart, a move and an arrival still reach the other tab: the flush loop sends
    a room when its pacing allows, the tick loop reads the count four times a second."""
    room = f"article:{article.pk}"
    with override_settings(PRESENCE_TICK=30.0):
        hub = Hub(store=store_factory("proc-live"), pacing=Pacing(0.3, 0.05, time.time, meter=lambda: 0.0))
        try:
            watching, watcher = await connect(hub, "anon:watcher")
            await hub.join(watcher, room)
            _, writer = await connect(hub, "anon:writer")
            await wait_for(watching, "online", lambda f: f["count"] == 2)
            await hub.join(writer, room)
            await wait_for(watching, "room", lambda f: f["count"] == 2)
            for position in (0.3, 0.4):  # the first at once, the second in a trailing frame
                hub.progress(writer, room, position, None)
                await wait_for(watching, "room", lambda f, p=position: [u["position"] for u in f["updates"]] == [p])
        finally:
            await hub.stop()
