"""The per-process hub: the driver of what ``presence.membership`` (who is here) and
``presence.outbox`` (what is due) decide, with liveness and shutdown.

One hub per server process (per event loop). Consumers register their connection with
it; the hub, not each consumer, is on the channel layer (``presence.hub_link``). When a room's
pacing allows (``presence.pacing``: at once in a quiet room, at most two frames per room per
tick), the hub writes the pending progress to the store in one call, sends every due room's
changes to the other processes in one message, and each room's frame to its local readers
(``presence.room_frames``); claims the store could not drop are retried (``presence.releases``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.layers import get_channel_layer

from presence import events, live, protocol, rooms, twisted_shutdown
from presence.admissions import Admissions
from presence.conf import app_settings
from presence.connections import Admission, Connection
from presence.errors import TooManyRooms, Unavailable
from presence.hub_link import HubLink
from presence.local_rooms import LocalRoom
from presence.membership import (
    Changed,
    ClaimOnline,
    Depart,
    Enter,
    Membership,
    Opened,
    Publish,
    ReleaseOnline,
)
from presence.online_count import OnlineCount
from presence.outbox import Outbox
from presence.pacing import Pacing
from presence.ranking_feed import RankingFeed
from presence.ratelimit import FrameLimiter
from presence.releases import Releases, departures
from presence.room_frames import RoomFrames, fan_out
from presence.sequencer import Sequencer
from presence.store import Reader, RoomState, Store, get_store, process_id

logger = logging.getLogger(__name__)


# Seconds between reads of the site-wide count from the store (at the same wall-clock moments on
# every process): a change that holds for two reads reaches every process's readers within two of
# these, or within ``PRESENCE_ONLINE_INTERVAL`` of their last `online` frame, whichever is later.
ONLINE_POLL = 0.25


def ms(seconds: float) -> int:
    return int(seconds * 1000)


class Hub:
    def __init__(
        self,
        store: Store | None = None,
        layer_alias: str | None = None,
        autotick: bool = True,
        pacing: Pacing | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.clock = clock  # wall-clock seconds: reader times are compared across processes
        self.store = store or get_store()
        self.proc = self.store.proc if store else process_id()
        # The other processes' hubs, through the channel layer (presence/hub_link.py).
        self.link = HubLink(get_channel_layer(layer_alias or app_settings.CHANNEL_LAYER), self.proc)
        self.autotick = autotick
        self.members = Membership(self.proc)  # who is here: the decisions, as effects this hub performs
        self.connections = self.members.connections
        self.by_reader = self.members.by_reader
        self.rooms = self.members.rooms
        self.online = OnlineCount()  # the site-wide count as the connections know it
        self.pacing = pacing or Pacing(
            app_settings.TICK, app_settings.COALESCE_WINDOW, clock=clock, aligned=self.store.spans_processes
        )
        self.outbox = Outbox(self.pacing)  # which rooms have something to send, and when
        self.room_frames = RoomFrames(self.store)  # and how it is sent
        self._wanted = asyncio.Event()  # a room became due before the flush loop's wake-up time
        self._wake_at = float("inf")
        self._next_beat = 0.0
        self._next_checkpoint = 0.0
        self._tasks: list[asyncio.Task] = []
        self._started: asyncio.Future | None = None
        self._tick_lock = asyncio.Lock()
        self._leaving: set[asyncio.Future] = set()
        self._in_order = Sequencer()  # claims and releases, in the order decided
        self.releases = Releases(self.store, self.link, self._in_order, self.members.holds)
        self._closing: Closing | None = None  # set once a shutdown began
        self.admissions = Admissions(self.store)  # the per-address caps
        # Live ranking subscriptions (docs/protocol.md, "Live ranking").
        self.ranking_feed = RankingFeed()
        self._next_ranking = 0.0

    def now_ms(self) -> int:
        return ms(self.clock())

    @property
    def closing(self) -> bool:
        """A shutdown began: new connections are refused (their clients retry another process)."""
        return self._closing is not None

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Join the channel layer, beat once, and start the loops (once): receive, and with
        ``autotick`` also tick (with the online count) and flush."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                if await self.link.open():
                    self._tasks.append(asyncio.create_task(self.link.receive(self._merge_remote)))
                self._next_checkpoint = self.clock() + app_settings.CHECKPOINT_SECONDS
                with contextlib.suppress(Exception):
                    await self._beat()
                if self.autotick:
                    for loop in (self._tick_loop, self._flush_loop):
                        self._tasks.append(asyncio.create_task(loop()))
                twisted_shutdown.release_on_reactor_shutdown(self)
            finally:
                self._started.set_result(None)
        await self._started

    async def stop(self) -> None:
        """Cancel the loops and wait till they end, cancelling again any that runs on. On Python
        3.11, ``asyncio.wait_for``, which redis-py uses for every socket write, drops a
        cancellation that arrives as the write completes: the loop went on, ``stop`` waited for it
        forever, and a SIGTERMed Daphne released its readers only when cut at 10 s (seen in CI)."""
        running = set(self._tasks)
        while running:
            for task in running:
                task.cancel()
            _, running = await asyncio.wait(running, timeout=STOP_RECANCEL_SECONDS)
        # Their ends, cancellations included, are taken; a cancellation of ``stop`` itself is not.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _tick_loop(self) -> None:
        """Every ``ONLINE_POLL``, at the same wall-clock moments on every process: the online
        count; every tick, the rest of ``tick``. The loop's lateness to wake tells the pacing how
        loaded the process is."""
        loop = asyncio.get_running_loop()
        next_tick = 0.0
        while True:
            delay = ONLINE_POLL - self.clock() % ONLINE_POLL
            woke = loop.time() + delay
            await asyncio.sleep(delay)
            self.pacing.late(loop.time() - woke)
            now = round(self.clock() / ONLINE_POLL) * ONLINE_POLL
            if now >= next_tick:
                tick = app_settings.TICK
                next_tick = (now // tick + 1) * tick - ONLINE_POLL / 2
                await self.tick(now)
            try:
                await self._check_online()
            except Exception:
                logger.warning("presence hub: online count unavailable", exc_info=True)

    async def _flush_loop(self) -> None:
        """Flush each room when its pacing allows: sleep until the first pending room is due, or
        until a change makes a room due earlier than that."""
        while True:
            self._wanted.clear()
            self._wake_at = self.outbox.next_due(self.rooms)
            delay = self._wake_at - self.clock()
            if delay > 0:
                # Not ``wait_for``: on Python 3.11 it drops a cancellation that arrives as the event
                # is set, and the loop then ran on after ``stop`` (a SIGTERM seen in CI waited 10 s).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if delay == float("inf") else delay):
                        await self._wanted.wait()
                continue
            self._wake_at = float("inf")
            try:
                await self.flush()
            except Exception:
                logger.exception("presence hub: flush failed")
                await asyncio.sleep(self.pacing.shortest)

    # -- connections ------------------------------------------------------------------
    async def admit(self, address: str | None, identity_: str) -> Admission | None:
        """Count a new connection against its address's caps (presence/admissions.py). Returns what
        to hand to ``register`` and ``dismiss``; raises TooManyConnections over a cap."""
        admission = self.admissions.ticket(address, identity_)
        if admission is not None:
            await self.start()  # its first heartbeat connects the store before a burst of handshakes
            await self.admissions.admit(admission)
        return admission

    async def dismiss(self, admission: Admission | None) -> None:
        """A connection counted by ``admit`` closed (safe to call twice)."""
        await self.admissions.dismiss(admission)

    async def register(
        self,
        identity_: str,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
        admission: Admission | None = None,
    ) -> tuple[Connection, int]:
        """Add a connection (with its ``admit`` ticket, if counted); returns it and the
        site-wide count that includes it."""
        await self.start()
        limiter = FrameLimiter(
            app_settings.RATE, app_settings.BURST, app_settings.FLOOD_CLOSE_SECONDS, clock=self.clock
        )
        conn = Connection(identity_, send, close, self.clock(), limiter)
        conn.admission = admission
        await self._perform(self.members.open(conn))
        return conn, await self._online_for(conn)

    async def _online_for(self, conn: Connection) -> int:
        """The site-wide count for a ``hello``; during a store outage, the last one known."""
        try:
            online = await self.store.online()
        except Exception:
            logger.warning("presence hub: online count unavailable", exc_info=True)
            online = max(self.online.value or 0, len(self.by_reader))
        self.online.greeted(conn, online)
        return online

    async def unregister(self, conn: Connection, reason: str, at_ms: int | None = None) -> None:
        """Remove a connection and everything it held; safe to call twice. ``at_ms``: when
        its sessions ended, if not now (a silent connection ended when last heard from)."""
        effects = self.members.close(conn, reason, at_ms or self.now_ms())
        if effects is not None:
            self.ranking_feed.drop(conn)
            released = self._perform(effects, until_written=True)
            conn.leaving = asyncio.ensure_future(self._dismiss_after(conn.admission, released))
            self._leaving.add(conn.leaving)
            conn.leaving.add_done_callback(self._leaving.discard)
        if conn.leaving is not None:  # a second call waits till the first is done
            await asyncio.shield(conn.leaving)

    async def _dismiss_after(self, admission: Admission | None, released: Awaitable) -> None:
        await released
        await self.dismiss(admission)

    def touch(self, conn: Connection) -> str:
        """A frame arrived: the connection is alive. Returns the rate limiter's verdict."""
        conn.last_seen = self.clock()
        return conn.limiter.check()

    async def identify(self, conn: Connection, new_identity: str) -> int:
        """Re-key a connection; it keeps its rooms and progress. Returns the online count.
        Raises TooManyConnections, changing nothing else, when its address has no room for
        another reader (the caller closes the connection). A connection closed meanwhile
        claims nothing: ``members`` decides nothing for it."""
        if new_identity != conn.identity:
            await self.admissions.readmit(conn.admission, new_identity)
            carried = self.members.positions(conn)
            left = self.members.leave_all(conn, events.IDENTIFY, self.now_ms())
            released = self._perform(left + self.members.release_online(conn), until_written=True)
            self.members.rekey(conn, new_identity)
            await released  # the old reader gone first (its sessions ended): no count shows both
            claims = self.members.claim_online(conn)
            for room, old in carried.items():
                claims += self.members.join(conn, room, self.now_ms(), position=old.position, name=old.name)
            await self._perform(claims)
        return await self._online_for(conn)

    def _perform(self, effects: list, until_written: bool = False) -> Awaitable:
        """Run each of ``self.members``' effects after the calls decided before it for its key (one
        reader's calls reach the store in the order decided: ``Sequencer``). What is returned completes
        when what the caller answers for is done: claims and releases, and, ``until_written``, the
        receivers of the sessions' end events (the history's database write: a closing or re-identified
        connection's; a `leave` frame does not hold up the next frames for it). Awaiting it may be
        cancelled; the calls go on: they were decided. ``Opened`` and ``Publish`` make no call: the
        outbox takes them at once, for the next batch."""
        waits = []
        for effect in effects:
            if isinstance(effect, Opened):
                self._wake(self.outbox.reopen(effect.room, self.clock()))
                continue
            if isinstance(effect, Publish):
                self._wake(self.outbox.depart(effect.room, effect.left, self.clock()))
                continue
            if isinstance(effect, Enter) and effect.joined is not None:
                self._emit_in_order(effect.joined)  # before anything ends the session
            done = self._in_order.submit(effect.key, functools.partial(self._run, effect))
            if isinstance(effect, Depart):
                waits.append(self._with_event(done) if until_written else asyncio.shield(done))
            else:
                waits.append(asyncio.shield(done))
        return asyncio.gather(*waits) if waits else _DONE

    async def _run(self, effect) -> object:
        """One effect's store calls."""
        match effect:
            case ClaimOnline(reader_id=rid):
                return await self._store(self.store.claim_online(rid), quiet=True)
            case ReleaseOnline(reader_id=rid):
                return await self.releases.release(None, rid)
            case Enter():
                return await self._claim(effect)
            case Depart():
                return await self._depart(effect)
        raise TypeError(f"not an effect: {effect!r}")

    # -- rooms --------------------------------------------------------------------------
    async def join(self, conn: Connection, room: str) -> RoomState:
        """Enter a room (idempotent); returns its state, which includes this reader."""
        if room not in conn.rooms:
            if len(conn.rooms) >= app_settings.MAX_ROOMS:
                raise TooManyRooms(f"a connection may join at most {app_settings.MAX_ROOMS} rooms")
            await rooms.resolve(room)
            await self._perform(self.members.join(conn, room, self.now_ms()))
        return await self.room_state(room)

    async def room_state(self, room: str) -> RoomState:
        """A room's count, newest readers and histogram, from the store, after writing this
        process's pending progress in the room: the state then holds the newest position of every
        reader here, and of every reader elsewhere as of that process's last flush (whose later
        changes reach the local readers in their next `room` frame, as batches arrive)."""
        local = self.rooms.get(room)
        if local is not None and local.to_store:
            await self.room_frames.store_progress([local])
        return await self._store(self.store.room_state(room, app_settings.ROOM_STATE_READERS))

    async def _claim(self, enter: Enter) -> None:
        """The store's part of a join; for a session's first tab, its announcement. Nothing once a
        shutdown began: its ``release_all`` may have run, and the session ended (``close_all``)."""
        if self._closing is not None:
            return
        stored = await self._store(self.store.join(enter.room.name, enter.session.reader), quiet=True)
        reader = self.members.claimed(enter, stored)
        if reader is not None:
            self._announce(enter.room, reader)

    async def leave(self, conn: Connection, room: str) -> None:
        await self._perform(self.members.leave(conn, room, events.LEFT, self.now_ms()))

    async def _depart(self, depart: Depart) -> asyncio.Future:
        """The store's part of a reader's last tab leaving a room, then the end of its session."""
        room, reader = depart.room, depart.session.reader
        if depart.unwritten:  # its last position, not written yet
            await self._store(self.store.update([(room, reader)]), quiet=True)
        if await self.releases.release(room, reader.id) is not False:  # gone everywhere (or no answer)
            for effect in self.members.released(room, reader.id):
                match effect:
                    case Publish(left=left):
                        self._wake(self.outbox.depart(room, left, self.clock()))
                    case Changed(room=local):
                        self._changed(local, published=True)
        return self._emit_in_order(depart.ended(self.proc))

    def _emit_in_order(self, event: events.ReaderJoined | events.ReaderLeft) -> asyncio.Future:
        """A session's start or end, after the events of the same reader and room before it. Not on
        the store calls' order: the next claim of the reader need not wait for the receivers (the
        history's database write)."""
        return self._in_order.submit(("events", event.room, event.reader_id), functools.partial(events.emit, event))

    @staticmethod
    async def _with_event(stored: asyncio.Future) -> None:
        """Until a leave's store calls are done, and then the session's end event they emitted."""
        emitted = await asyncio.shield(stored)
        if emitted is not None:
            await asyncio.shield(emitted)

    def progress(self, conn: Connection, room: str, position: float, name: str | None) -> None:
        """Record a reading position; it goes out when the room's pacing allows (coalesced)."""
        self._announce(*self.members.progress(conn, room, position, name, self.now_ms()))

    def _announce(self, local: LocalRoom, reader: Reader) -> None:
        local.announce(reader)
        self._changed(local, published=True)

    def _changed(self, local: LocalRoom, published: bool = False) -> None:
        """Something waits for the room's next frame (and, ``published``, for its next batch to the
        other processes): wake the flush loop if that makes the room due before its wake-up."""
        self._wake(self.outbox.changed(local, self.clock(), published))

    def _wake(self, due: float | None) -> None:
        """Wake the flush loop if something became due before its wake-up time."""
        if due is not None and due < self._wake_at:
            self._wanted.set()

    # -- ticks --------------------------------------------------------------------------
    async def tick(self, now: float | None = None) -> None:
        """One beat of the hub: drop silent connections, live ranking, heartbeat, checkpoint.
        A hub without its loops (``autotick=False``: tests drive it by hand) also flushes every
        pending room and reads the online count here, by the tick loop's rule.

        ``now`` is the tick's scheduled time (the tick loop's): what is due every tick (the live
        ranking at its default of one second) then comes at every tick, however late the loop
        woke. Timed from the wake-up, a tick that woke a little earlier in its period than the
        one before skipped it, about one tick in two."""
        checkpoint = None
        async with self._tick_lock:
            now = self.clock() if now is None else now
            steps = [self._drop_silent] if self.autotick else [self._flush_all, self._drop_silent]
            for step in steps:
                try:
                    await step()
                except Exception:
                    logger.exception("presence hub: %s failed", step.__name__)
            if self.ranking_feed and now >= self._next_ranking:
                self._next_ranking = now + app_settings.RANKING_INTERVAL
                try:
                    await self._send_ranking()
                except Exception:
                    logger.warning("presence hub: live ranking unavailable", exc_info=True)
            if not self.autotick:
                try:
                    await self._read_online()
                except Exception:
                    logger.warning("presence hub: online count unavailable", exc_info=True)
            if now >= self._next_beat:
                try:
                    await self._beat()
                except Exception:
                    logger.warning("presence hub: process heartbeat failed", exc_info=True)
            if now >= self._next_checkpoint:
                self._next_checkpoint = now + app_settings.CHECKPOINT_SECONDS
                checkpoint = self.checkpoint()
        if checkpoint is not None:
            # Written past the lock: a thousand open sessions take seconds on a busy SQLite, and
            # no room's frame could go out meanwhile. (An end decided meanwhile is written after
            # the snapshot, or the recorder drops the snapshot's row of it: ``history.Recorder``.)
            await events.emit(checkpoint)

    async def flush(self) -> None:
        """Send what the rooms' pacing allows now: the pending progress to the store, each due
        room's batch to the other processes and its frame to the local readers."""
        async with self._tick_lock:
            await self._flush(force=False)

    async def _flush_all(self) -> None:
        await self._flush(force=True)

    async def _flush(self, force: bool) -> None:
        # Taken synchronously: what arrives during the awaits waits for the next flush.
        frames, batches = self.outbox.take(self.rooms, self.clock(), force)
        if batches:  # every room with progress to store has a batch pending: written with the first
            await self.room_frames.store_progress(self.rooms.values())
            await self.link.publish(batches)
        if frames:
            await self.room_frames.send(frames)

    def _merge_remote(self, batches: list) -> None:
        """Another process's batches: those of the rooms held here wait for their next frame."""
        for room, updates, left in batches:
            local = self.rooms.get(room)
            if local is not None:
                local.merge_remote(updates, left)
                self._changed(local)

    async def _check_online(self) -> None:
        async with self._tick_lock:
            await self._read_online()

    async def _read_online(self) -> None:
        """One reading of the site-wide count (the tick loop's, every ``ONLINE_POLL``; a manual
        tick's), sent when ``OnlineCount.settled`` says so: to the connections that were sent another
        value, or only to those that just said ``hello`` if it did not change."""
        value = await self.store.online()
        if not self.online.settled(value, self.clock(), app_settings.ONLINE_INTERVAL):
            return
        stale, changed = self.online.recipients(value, self.connections, self.clock())
        await fan_out(stale, protocol.dumps(protocol.online(value)))
        if changed:
            await events.emit(events.OnlineCounted(value, self.now_ms()))

    # -- live ranking (protocol extension) ----------------------------------------------
    async def subscribe_ranking(self, conn: Connection, limit: int) -> list[dict]:
        """Send this connection the ranking's top ``limit`` rooms now and whenever they change
        (a second subscription replaces the first). Returns the ranking as of now, which
        includes every join this connection made before."""
        entries = await live.alive_ranking(limit, self.store)
        self.ranking_feed.subscribe(conn, limit, entries)
        return entries

    async def _send_ranking(self) -> None:
        """One ranking read for every subscriber (whatever their number), each sent its top rooms
        only when they differ from what it was sent last."""
        entries = await live.alive_ranking(self.ranking_feed.widest(), self.store)
        for limit, connections in self.ranking_feed.changed(entries).items():
            await fan_out(connections, protocol.dumps(protocol.ranking(entries[:limit])))

    async def _drop_silent(self) -> None:
        deadline = self.clock() - app_settings.HEARTBEAT * app_settings.SILENCE_FACTOR
        for conn in [c for c in self.connections if c.last_seen < deadline]:
            await self.unregister(conn, events.TIMEOUT, at_ms=ms(conn.last_seen))
            with contextlib.suppress(Exception):
                await conn.close(protocol.CLOSE_SILENT)

    def checkpoint(self) -> events.Checkpoint:
        """What every reader in this process has read so far."""
        return events.Checkpoint(self.now_ms(), self.proc, self.members.open_sessions())

    async def _beat(self) -> None:
        """Process heartbeat: stay alive in the store, re-assert claims, reap the dead."""
        self._next_beat = self.clock() + app_settings.PROCESS_HEARTBEAT
        online = list(self.by_reader)
        claims = self.members.claims()
        gone = await self.store.heartbeat(self.now_ms(), ms(app_settings.PROCESS_TTL), online, claims,
                                          self.admissions.held())
        self.releases.unless_held([(None, rid) for rid in online] + [(room, r.id) for room, r in claims])
        if claims:
            # The heartbeat's joins keep a record already there: after a wipe, whichever process
            # beat first wrote its own view of a reader with tabs on several, maybe an older one.
            # An update keeps the newest (updated_at), as progress does.
            await self.store.update(claims)
        # The beat may have healed a store that lost its data (Redis flushed or restarted): the
        # next flush reads every local room's count again and sends those that changed, else
        # readers would keep a count taken from the emptied store (docs/reliability.md, guarantee 3).
        for local in self.rooms.values():
            self._changed(local)
        await self.releases.retry()
        await self.link.join()  # again before the layer's group expiry
        await self.releases.announce(gone)
        if gone:
            logger.info("presence hub: removed %d readers of dead processes", len(gone))

    # -- helpers ------------------------------------------------------------------------
    async def _store(self, call: Awaitable, quiet: bool = False):
        """Await a store call; a store outage becomes ``Unavailable`` (or None when quiet)."""
        try:
            return await call
        except Exception as exc:
            if quiet:
                logger.warning("presence store call failed; the next heartbeat re-asserts claims", exc_info=True)
                return None
            raise Unavailable("presence store unavailable, try again") from exc

    def sessions_ending(self) -> int:
        """How many sessions the shutdown begun ends (0 before one)."""
        return len(self._closing.ended) if self._closing else 0

    def close_all(self) -> None:
        """The synchronous half of ``shutdown``: from now on every connection is gone (a consumer
        that the server cancels has nothing left to undo) and every local session ends now, with
        its last position; the rooms are forgotten, so nothing re-claims them."""
        if self._closing is not None:
            return
        self._closing = Closing(*self.members.close_all(self.now_ms(), events.SHUTDOWN))
        self.ranking_feed.clear()
        self.outbox.rooms.clear()

    async def shutdown(self) -> None:
        """Graceful stop, in a few store calls and database transactions whatever the number of
        readers: the sessions end (``close_all``), the loops stop (a heartbeat must not claim
        again what goes next), the last positions are written, every claim of this process goes
        at once, the other processes hear of the readers gone everywhere (one message per room),
        and the sessions are written together. One leave per reader, as a tab's close does, took
        25-38 s for 4,000 readers on Redis: each leave its own store calls and Redis connection
        (docs/reliability.md, section 2)."""
        self.close_all()
        closing = self._closing
        await self.stop()
        # Claims already on their way to the store land before everything is released.
        await asyncio.gather(*self._in_order.pending(lambda key: key[0] != "events"), return_exceptions=True)
        if closing.writes:
            await self._store(self.store.update(closing.writes), quiet=True)
        try:
            gone = await self.store.release_all()
        except Exception:
            logger.warning("presence hub: claims not released; other processes reap them", exc_info=True)
            gone = []
        # With the departures of rooms forgotten here that the stopped flush loop did not send.
        await self.link.publish([(room, [], left) for room, left in self.outbox.departed.items()] + departures(gone))
        await self.link.leave()
        # Together: the recorder writes whatever arrived while it wrote, in one transaction.
        await asyncio.gather(*(self._emit_in_order(event) for event in closing.ended))  # each after its start
        await self.settled()

    async def settled(self) -> None:
        """Until every store call and session event decided so far is done: a `leave` frame's
        session is written after the frame's handling (tests wait for it here; the shutdown too)."""
        await asyncio.gather(*self._leaving, *self._in_order.pending(), return_exceptions=True)


@dataclass(slots=True)
class Closing:
    """What a shutdown ends: the sessions' events and the positions not yet written."""

    ended: list[events.ReaderLeft]
    writes: list[tuple[str, Reader]]


class _Done:
    """Awaited, done at once: a decision that needed no store call."""

    def __await__(self):
        return
        yield


_DONE = _Done()

STOP_RECANCEL_SECONDS = 0.1  # ``stop``: a loop still running this long after its cancellation lost it

_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def running_hub() -> Hub | None:
    """The running loop's hub if this process made one (to stop it without creating one)."""
    return _hubs.get(asyncio.get_running_loop())


def get_hub() -> Hub:
    """The hub of the running event loop (one per server process), created on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for dead in [lp for lp in _hubs if lp.is_closed()]:
            del _hubs[dead]
        hub = _hubs[loop] = Hub()
    return hub


def set_hub(hub: Hub | None) -> None:
    """Install ``hub`` for the running loop (tests), or forget it with None."""
    loop = asyncio.get_running_loop()
    if hub is None:
        _hubs.pop(loop, None)
    else:
        _hubs[loop] = hub
