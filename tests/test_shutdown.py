"""A graceful stop (SIGTERM, ``lifespan.shutdown``) ends every session of the process in a few
store calls, whatever the number of readers: one leave per reader took 25-38 s for 4,000
readers on Redis and lost sessions (docs/reliability.md, section 2; ``python -m bench.shutdown``
measures it on a real Daphne). Here the two hubs of the ``hubs`` fixture, on every store backend."""

from __future__ import annotations

import asyncio
import collections

import pytest

from presence import events, history
from presence.hub import Hub
from presence.pacing import Pacing
from presence.store.memory import MemoryStore
from tests.support.hubs import connect, deliver, tick_all

pytestmark = [pytest.mark.django_db(transaction=True)]


class CountingStore:
    """A real store, with the calls made to it counted by method."""

    def __init__(self, store):
        self._store = store
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


async def test_shutdown_ends_every_session_in_a_few_store_calls(hubs, articles, clock, recorded_events):
    a, b = hubs
    rooms = [f"article:{article.pk}" for article in articles]
    watchers = {}
    for room in rooms:  # one reader on the surviving process in every room
        watchers[room], conn = await connect(a, f"anon:watcher-{room}")
        await a.join(conn, room)
    leaving, both = [], []
    for n in range(120):  # 10 readers per room on the process that stops
        room = rooms[n % len(rooms)]
        _, conn = await connect(b, f"anon:reader-{n}")
        await b.join(conn, room)
        b.progress(conn, room, 0.5, None)
        leaving.append((room, conn.ids[room]))
        if n < len(rooms):  # ... the first of each also in a tab on the survivor: still reading
            _, tab = await connect(a, f"anon:reader-{n}")
            await a.join(tab, room)
            both.append(tab.ids[room])
    await tick_all(hubs)
    for client in watchers.values():
        client.frames.clear()
    recorded_events.clear()
    b.store = counting = CountingStore(b.store)

    await b.shutdown()

    assert sum(counting.calls.values()) <= 3, counting.calls  # the positions, the release (and no more)
    ended = [(e.room, e.reader_id, e.reason, e.last_position) for e in recorded_events
             if isinstance(e, events.ReaderLeft)]
    assert sorted(ended) == sorted((room, rid, events.SHUTDOWN, 0.5) for room, rid in leaving)
    await deliver()
    clock.advance(1)
    await a.tick()
    for room, client in watchers.items():
        (frame,) = client.take("room")
        gone = sorted(rid for r, rid in leaving if r == room and rid not in both)
        assert (frame["count"], frame["left"]) == (2, gone), room  # the watcher, the reader with a tab here
    assert await a.store.online() == len(rooms) * 2


class HeldJoins:
    """A real store whose ``join`` calls wait until the test lets them through."""

    def __init__(self, store):
        self._store = store
        self.held = asyncio.Event()
        self.let_through = asyncio.Event()

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if name != "join":
            return attribute

        async def join(*args):
            self.held.set()
            await self.let_through.wait()
            return await attribute(*args)

        return join


async def test_a_join_on_its_way_to_the_store_at_shutdown_leaves_no_reader_behind(hubs, article, recorded_events):
    a, b = hubs
    room = f"article:{article.pk}"
    _, conn = await connect(b, "anon:latecomer")
    b.store = held = HeldJoins(b.store)
    stop = b.stop

    async def stop_then_answer():  # the store answers the join once the hub's loops stopped
        await stop()
        held.let_through.set()

    b.stop = stop_then_answer
    joining = asyncio.ensure_future(b.join(conn, room))
    await held.held.wait()  # the claim is on its way
    await b.shutdown()
    await asyncio.gather(joining, return_exceptions=True)

    assert (await a.store.counts([room])).get(room, 0) == 0, "its claim landed after everything was released"
    assert await a.store.online() == 0
    session = [(type(e).__name__, getattr(e, "reason", None)) for e in recorded_events
               if getattr(e, "room", None) == room]
    assert session == [("ReaderJoined", None), ("ReaderLeft", events.SHUTDOWN)]


async def test_a_connection_that_arrives_during_a_shutdown_is_refused(hub, ws):
    """Between the SIGTERM and the exit, a handshake is refused before it is accepted: a client
    counted now would stay claimed on a process about to be gone."""
    reader = await ws(session="beforestop01")
    assert (await reader.receive_json_from())["online"] == 1  # its hello: registered
    await hub.shutdown()
    assert not await ws(session="duringstop01", expect_accept=False)
    assert await hub.store.online() == 0


async def test_the_loops_stop_when_a_move_lands_in_the_same_turn_as_the_stop(articles, clock):
    """A move handled in the same turn of the event loop as the stop (the SIGTERM cancels the
    consumers while frames arrive) must not keep the flush loop running: the stop would then
    wait for it, and the other processes would see this one's readers leave only when reaped,
    20 s on (seen once in CI). Python 3.11's ``asyncio.wait_for`` drops a cancellation that
    arrives as what it waits for completes."""
    history.recorder.reset()
    pacing = Pacing(1.0, 0.1, clock, meter=lambda: 0.0)  # the machine's load left out
    hub = Hub(store=MemoryStore("stop-in-a-busy-turn"), pacing=pacing, clock=clock)
    await hub.start()
    _, conn = await connect(hub, "anon:reader")
    quiet, other = (f"article:{article.pk}" for article in articles[:2])
    for room in (quiet, other):
        await hub.join(conn, room)
    await deliver()
    clock.advance(1)  # both rooms quiet
    hub.progress(conn, quiet, 0.1, None)
    await deliver()  # the quiet room's first move left at once ...
    hub.progress(conn, quiet, 0.2, None)
    for _ in range(500):  # ... so its second waits: the flush loop sleeps until that is due
        if hub.outbox.rooms == {quiet}:
            break
        await asyncio.sleep(0)  # (the other room's first frame may still be on its way)
    assert hub.outbox.rooms == {quiet}

    hub.progress(conn, other, 0.3, None)  # due now: wakes the flush loop, as the stop begins
    stopping = asyncio.create_task(hub.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    for task in hub._tasks:
        task.cancel()  # only if the test failed: the loops that ran on
    assert stopping in done, "the flush loop ran on after the stop"


class DropsOneCancellation(MemoryStore):
    """A store whose ``online`` read, once armed, waits and then answers though it was cancelled:
    what redis-py's socket writes do on Python 3.11 when the cancellation arrives as the write
    completes (its ``asyncio.wait_for`` returns the result and the cancellation is gone)."""

    def __init__(self, prefix: str):
        super().__init__(prefix)
        self.armed = False
        self.reading = asyncio.Event()

    async def online(self) -> int:
        if self.armed:
            self.armed = False
            self.reading.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # dropped
        return await super().online()


async def test_a_loop_that_loses_its_cancellation_does_not_hold_up_the_stop(clock):
    """The tick loop was cancelled during a store call that dropped the cancellation, and ran on:
    ``stop`` waited for it forever, and a SIGTERMed Daphne released its readers only when cut at
    10 s, so the other processes went on counting them (seen in CI, one run in about twenty)."""
    store = DropsOneCancellation("stop-loses-a-cancellation")
    hub = Hub(store=store, clock=clock)
    await hub.start()
    store.armed = True
    await asyncio.wait_for(store.reading.wait(), 5)  # the tick loop's next online read
    stopping = asyncio.create_task(hub.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    for task in hub._tasks:
        task.cancel()  # only if the test failed: the loop that ran on
    assert stopping in done, "the tick loop ran on after the stop"
