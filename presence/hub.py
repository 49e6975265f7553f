"""The per-process hub: local connections, rooms, coalesced fan-out, liveness.

One hub per server process (per event loop). Consumers register their connection with
it; the hub, not each consumer, is the member of each room's channel-layer group. When a
room's pacing allows (``presence.pacing``: at once in a quiet room, at most two frames per
room per tick), the hub writes the pending progress to the store in one call, sends one
batched message per changed room to that room's group (so other processes learn of it), and
sends each room's frame, encoded once, directly to its local readers. Sending through the
channel layer per consumer measured 5-8x the CPU of this direct send.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from channels.layers import get_channel_layer

from presence import addresses, events, identity, protocol, rooms
from presence.conf import app_settings
from presence.errors import InvalidRoom, NotJoined, TooManyRooms, Unavailable
from presence.pacing import Cadence, Pacing
from presence.ratelimit import FrameLimiter
from presence.store import Reader, RoomState, Store, get_store, process_id

logger = logging.getLogger(__name__)

BATCH = "presence.batch"

# Seconds between reads of the site-wide count from the store (at the same wall-clock moments on
# every process): a change that holds for two reads reaches every process's readers within two of
# these, or within ``PRESENCE_ONLINE_INTERVAL`` of their last `online` frame, whichever is later.
ONLINE_POLL = 0.25

# The live ranking asks the store for this many rooms more than the largest subscription wants:
# rooms that no longer resolve (drafts, deleted objects) are left out, and the rest still fill it.
RANKING_SLACK = 10


def ms(seconds: float) -> int:
    return int(seconds * 1000)


class TooManyConnections(Exception):
    """A client address already holds ``PRESENCE_MAX_CONNECTIONS_PER_IP`` connections, or
    ``PRESENCE_MAX_READERS_PER_IP`` readers, site-wide."""


@dataclass(slots=True)
class Admission:
    """A connection counted against its address's caps: the address's keyed hash and the
    site-wide reader id it is counted as (changed by ``identify``)."""

    address: str
    reader: str
    open: bool = True


class Connection:
    """One client connection as the hub sees it; knows nothing of WebSockets.

    ``reader_id`` is the reader's site-wide id (online claims, ``hello``); in each joined room
    it is known by that room's id, ``ids[room]`` (protocol 1.1)."""

    __slots__ = (
        "identity", "reader_id", "rooms", "ids", "last_seen", "online_sent", "limiter", "send", "close", "gone",
        "leaving", "admission",
    )

    def __init__(
        self,
        identity_: str,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
        now: float,
        limiter: FrameLimiter,
    ):
        self.identity = identity_
        self.reader_id = identity.reader_id(identity_)
        self.rooms: set[str] = set()
        self.ids: dict[str, str] = {}  # room -> this reader's id there
        self.admission: Admission | None = None
        self.last_seen = now
        self.online_sent: int | None = None
        self.limiter = limiter
        self.send = send
        self.close = close
        self.gone = False
        self.leaving: asyncio.Future | None = None  # its unregistering, once started


@dataclass(slots=True)
class Session:
    """A reader (identity) in a room in this process, from its first tab's join to its last tab's leave."""

    identity: str
    reader: Reader
    started_at: int
    furthest: float | None = None


@dataclass(slots=True)
class LocalRoom:
    name: str
    members: dict[str, set[Connection]] = field(default_factory=dict)  # reader id -> connections
    sessions: dict[str, Session] = field(default_factory=dict)
    # Local changes since the last fan-out, and since the last publish to the other processes.
    updates: dict[str, Reader] = field(default_factory=dict)
    left: set[str] = field(default_factory=set)
    outbox: dict[str, Reader] = field(default_factory=dict)
    outbox_left: set[str] = field(default_factory=set)
    to_store: set[str] = field(default_factory=set)
    remote_updates: dict[str, dict] = field(default_factory=dict)
    remote_left: set[str] = field(default_factory=set)
    # Since when something waits for the room's next frame (``dirty``), and for its next batch
    # to the other processes (``unpublished``); None: nothing. Their pacing: ``frames``, ``batches``.
    dirty: float | None = None
    unpublished: float | None = None
    frames: Cadence = field(default_factory=Cadence)
    batches: Cadence = field(default_factory=Cadence)
    count: int | None = None
    histogram: list[int] | None = None  # last sent in a `room` frame (rooms over ROOM_STATE_READERS)


class Hub:
    clock: Callable[[], float] = time.time

    def __init__(
        self,
        store: Store | None = None,
        layer_alias: str | None = None,
        autotick: bool = True,
        pacing: Pacing | None = None,
    ):
        self.store = store or get_store()
        self.layer = get_channel_layer(layer_alias or app_settings.CHANNEL_LAYER)
        self.proc = self.store.proc if store else process_id()
        self.autotick = autotick
        self.connections: set[Connection] = set()
        self.by_reader: dict[str, set[Connection]] = {}
        self.rooms: dict[str, LocalRoom] = {}
        self.channel: str | None = None
        self.online_value: int | None = None
        self._fresh: list[Connection] = []
        self._next_online = 0.0
        self._online_sent_at = float("-inf")
        self._online_read: int | None = None  # the count at the tick loop's last check
        self.pacing = pacing or Pacing(app_settings.TICK, app_settings.COALESCE_WINDOW, clock=lambda: self.clock())
        self._pending: set[str] = set()  # rooms with something to send (``LocalRoom.dirty``, ``unpublished``)
        self._wanted = asyncio.Event()  # a room became due before the flush loop's wake-up time
        self._wake_at = float("inf")
        self._next_beat = 0.0
        self._next_checkpoint = 0.0
        self._tasks: list[asyncio.Task] = []
        self._unreleased: set[tuple[str | None, str]] = set()
        self._started: asyncio.Future | None = None
        self._tick_lock = asyncio.Lock()
        self._leaving: set[asyncio.Future] = set()
        # (address key, site reader id) -> connections of this process counted by ``admit``.
        self.admitted: dict[tuple[str, str], int] = {}
        # Live ranking subscriptions (docs/protocol.md, "Live ranking"): connection -> (limit, last sent).
        self.ranked: dict[Connection, tuple[int, list[dict]]] = {}
        self._next_ranking = 0.0

    def now_ms(self) -> int:
        return ms(self.clock())

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Join the channel layer, beat once, and start the loops (once): receive, and with
        ``autotick`` also tick (with the online count) and flush."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                if self.layer is not None:
                    self.channel = await self.layer.new_channel("presence-hub")
                    self._tasks.append(asyncio.create_task(self._receive_loop()))
                self._next_checkpoint = self.clock() + app_settings.CHECKPOINT_SECONDS
                with contextlib.suppress(Exception):
                    await self._beat()
                if self.autotick:
                    for loop in (self._tick_loop, self._flush_loop):
                        self._tasks.append(asyncio.create_task(loop()))
                self._release_on_server_shutdown()
            finally:
                self._started.set_result(None)
        await self._started

    def _release_on_server_shutdown(self) -> None:
        """Under Daphne, run ``shutdown()`` before the reactor stops. Daphne 4.2's own SIGTERM path
        cannot be relied on: ``kill_all_applications`` raises KeyError (cancelling nothing) while a
        connection has no application yet, and its ``gather`` lets the reactor stop as soon as the
        first cancelled application returns, cutting the others' unregistering short."""
        reactor = sys.modules.get("twisted.internet.reactor")
        if reactor is None or not getattr(reactor, "running", False):
            return
        from twisted.internet import defer

        reactor.addSystemEventTrigger(
            "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(self._shutdown_in_time()))
        )

    async def _shutdown_in_time(self) -> None:
        """``shutdown``, bounded: a store or channel-layer call that never returns must not keep
        the process from exiting (it would never stop, SIGTERM notwithstanding)."""
        try:
            await asyncio.wait_for(self.shutdown(), SHUTDOWN_SECONDS)
        except TimeoutError:
            logger.error("presence hub: shutdown not done after %.0f s (%d connections left); exiting anyway",
                         SHUTDOWN_SECONDS, len(self.connections))
        except Exception:
            logger.error("presence hub: shutdown failed; exiting anyway", exc_info=True)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
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
            pending = [local for room in self._pending if (local := self.rooms.get(room)) is not None]
            self._wake_at = min(map(self._due, pending), default=float("inf"))
            delay = self._wake_at - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wanted.wait(), None if delay == float("inf") else delay)
                continue
            self._wake_at = float("inf")
            try:
                await self.flush()
            except Exception:
                logger.exception("presence hub: flush failed")
                await asyncio.sleep(self.pacing.shortest)

    async def _receive_loop(self) -> None:
        delay = 0.1
        while True:
            try:
                message = await self.layer.receive(self.channel)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("presence hub: channel layer receive failed; retrying in %.1fs", delay, exc_info=True)
                await asyncio.sleep(delay)
                # At most a second: a Redis back from a restart must carry other processes'
                # batches again within a tick or so, not after a long backoff.
                delay = min(delay * 2, 1.0)
                continue
            if message.get("type") == BATCH and message.get("origin") != self.proc:
                self._merge_remote(message)

    # -- connections ------------------------------------------------------------------
    async def admit(self, address: str | None, identity_: str) -> Admission | None:
        """Count a new connection of ``identity_`` from client ``address`` against the caps
        ``PRESENCE_MAX_READERS_PER_IP`` (distinct identities) and ``PRESENCE_MAX_CONNECTIONS_PER_IP``,
        site-wide through the store. Returns what to hand to ``register`` and ``dismiss`` (None:
        not counted, no cap or no address known); raises TooManyConnections over a cap. A store
        outage admits (counted here; the next heartbeat writes it to the store). A connection whose
        address a header claims and no trusted proxy vouches for (``addresses.UNVERIFIED``) is refused."""
        caps = app_settings.MAX_READERS_PER_IP, app_settings.MAX_CONNECTIONS_PER_IP
        if not address or caps == (None, None):
            return None
        if address == addresses.UNVERIFIED:
            # Counted in a bucket of its own, such a connection would be an allowance beyond its
            # address's: refused, so one client holds at most the cap (docs/security.md).
            raise TooManyConnections("the client address cannot be verified (PRESENCE_TRUSTED_PROXIES)")
        await self.start()  # its first heartbeat connects the store before a burst of handshakes
        admission = Admission(addresses.address_key(address), identity.reader_id(identity_))
        await self._count_in(admission, caps)
        return admission

    async def _count_in(self, admission: Admission, caps: tuple[int | None, int | None]) -> None:
        pair = (admission.address, admission.reader)
        self.admitted[pair] = self.admitted.get(pair, 0) + 1  # before the await: a beat meanwhile keeps it
        try:
            counted = await self.store.admit(admission.address, admission.reader, *caps)
        except Exception:
            logger.warning("presence hub: address caps unavailable; admitted, the next heartbeat counts it",
                           exc_info=True)
            counted = True
        if not counted:
            self._uncount(pair)
            admission.open = False
            raise TooManyConnections("too many readers or connections from one address")

    def _uncount(self, pair: tuple[str, str]) -> None:
        left = self.admitted.get(pair, 0) - 1
        if left > 0:
            self.admitted[pair] = left
        else:
            self.admitted.pop(pair, None)

    async def dismiss(self, admission: Admission | None) -> None:
        """A connection counted by ``admit`` closed (safe to call twice)."""
        if admission is None or not admission.open:
            return
        admission.open = False
        self._uncount((admission.address, admission.reader))
        await self._store(self.store.dismiss(admission.address, admission.reader), quiet=True)

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
        self.connections.add(conn)
        await self._claim_online(conn)
        return conn, await self._online_for(conn)

    async def _online_for(self, conn: Connection) -> int:
        """The site-wide count for a ``hello``; during a store outage, the last one known."""
        try:
            online = await self.store.online()
        except Exception:
            logger.warning("presence hub: online count unavailable", exc_info=True)
            online = max(self.online_value or 0, len(self.by_reader))
        conn.online_sent = online
        self._fresh.append(conn)
        return online

    async def unregister(self, conn: Connection, reason: str, at_ms: int | None = None) -> None:
        """Remove a connection and everything it held; safe to call twice. ``at_ms``: when
        its sessions ended, if not now (a silent connection ended when last heard from)."""
        if not conn.gone:
            conn.gone = True
            self.connections.discard(conn)
            self.ranked.pop(conn, None)
            conn.leaving = asyncio.ensure_future(self._unregister_now(conn, reason, at_ms))
            self._leaving.add(conn.leaving)
            conn.leaving.add_done_callback(self._leaving.discard)
        if conn.leaving is not None:  # a second call waits till the first is done
            await asyncio.shield(conn.leaving)

    async def _unregister_now(self, conn: Connection, reason: str, at_ms: int | None) -> None:
        for room in list(conn.rooms):
            await self._leave(conn, room, reason, at_ms)
        await self._release_online(conn)
        await self.dismiss(conn.admission)

    def touch(self, conn: Connection) -> str:
        """A frame arrived: the connection is alive. Returns the rate limiter's verdict."""
        conn.last_seen = self.clock()
        return conn.limiter.check()

    async def identify(self, conn: Connection, new_identity: str) -> int:
        """Re-key a connection; it keeps its rooms and progress. Returns the online count.
        Raises TooManyConnections, changing nothing else, when its address has no room for
        another reader (the caller closes the connection)."""
        if new_identity != conn.identity:
            admission = conn.admission
            if admission is not None and admission.open:
                await self.dismiss(admission)
                admission.reader, admission.open = identity.reader_id(new_identity), True
                await self._count_in(
                    admission, (app_settings.MAX_READERS_PER_IP, app_settings.MAX_CONNECTIONS_PER_IP)
                )
            carried = {}
            for room in list(conn.rooms):
                carried[room] = self.rooms[room].sessions[conn.ids[room]].reader
                await self._leave(conn, room, events.IDENTIFY)
            await self._release_online(conn)
            conn.identity = new_identity
            conn.reader_id = identity.reader_id(new_identity)
            await self._claim_online(conn)
            for room, old in carried.items():
                await self._join(conn, room, position=old.position, name=old.name)
        return await self._online_for(conn)

    async def _claim_online(self, conn: Connection) -> None:
        tabs = self.by_reader.setdefault(conn.reader_id, set())
        tabs.add(conn)
        await self._store(self.store.claim_online(conn.reader_id), quiet=True)

    async def _release_online(self, conn: Connection) -> None:
        tabs = self.by_reader.get(conn.reader_id)
        if tabs is None:
            return
        tabs.discard(conn)
        if tabs:
            return
        del self.by_reader[conn.reader_id]
        await self._release(None, conn.reader_id)
        if conn.reader_id in self.by_reader:  # another tab arrived while we released
            await self._store(self.store.claim_online(conn.reader_id), quiet=True)

    # -- rooms --------------------------------------------------------------------------
    async def join(self, conn: Connection, room: str) -> RoomState:
        """Enter a room (idempotent); returns its state, which includes this reader."""
        if room not in conn.rooms:
            if len(conn.rooms) >= app_settings.MAX_ROOMS:
                raise TooManyRooms(f"a connection may join at most {app_settings.MAX_ROOMS} rooms")
            await rooms.resolve(room)
            await self._join(conn, room)
        return await self.room_state(room)

    async def room_state(self, room: str) -> RoomState:
        """A room's count, newest readers and histogram, from the store."""
        return await self._store(self.store.room_state(room, app_settings.ROOM_STATE_READERS))

    async def _join(self, conn: Connection, room: str, position: float | None = None, name: str | None = None) -> None:
        local = self.rooms.get(room)
        if local is None:
            local = self.rooms[room] = LocalRoom(room)
            await self._group("group_add", room)
        conn.rooms.add(room)
        rid = conn.ids[room] = identity.reader_id(conn.identity, room)
        tabs = local.members.setdefault(rid, set())
        first = not tabs
        tabs.add(conn)
        now = self.now_ms()
        if first:
            reader = Reader(rid, name, position, now, now)
            local.sessions[rid] = Session(conn.identity, reader, started_at=now)
        session = local.sessions[rid]
        # Idempotent per process, so a second tab re-claiming is harmless and closes races.
        stored = await self._store(self.store.join(room, session.reader), quiet=True)
        if first and stored is not None:
            if position is not None and stored.updated_at <= session.reader.updated_at:
                # Re-identified: carry the position over to the new reader id.
                session.reader.joined_at = stored.joined_at
                local.to_store.add(rid)
            else:
                session.reader = stored  # keep the record another process or tab already made
        if first:
            session.furthest = session.reader.position
            self._announce(local, session.reader)
            await events.emit(events.ReaderJoined(room, conn.identity, rid, session.started_at, self.proc))

    async def leave(self, conn: Connection, room: str) -> None:
        if room not in conn.rooms:
            raise NotJoined("this connection has not joined that room")
        await self._leave(conn, room, events.LEFT)

    async def _leave(self, conn: Connection, room: str, reason: str, at_ms: int | None = None) -> None:
        conn.rooms.discard(room)
        rid = conn.ids.pop(room)
        local = self.rooms[room]
        tabs = local.members[rid]
        tabs.discard(conn)
        if tabs:
            return
        del local.members[rid]
        session = local.sessions.pop(rid)
        local.updates.pop(rid, None)
        local.outbox.pop(rid, None)
        if rid in local.to_store:  # flush this reader's last position now
            local.to_store.discard(rid)
            await self._store(self.store.update([(room, session.reader)]), quiet=True)
        gone_everywhere = await self._release(room, rid)
        if rid in local.members:  # another tab re-joined while we left
            await self._store(self.store.join(room, local.sessions[rid].reader), quiet=True)
        elif gone_everywhere is not False:
            if self.rooms.get(room) is local:
                local.left.add(rid)
                local.outbox_left.add(rid)
                self._changed(local, published=True)
            else:  # a concurrent leave forgot the room (and published its `left`) meanwhile
                await self._publish(room, [], {rid})
        if not local.members and self.rooms.get(room) is local:
            del self.rooms[room]
            self._pending.discard(room)
            if local.outbox_left:  # tell the other processes before forgetting the room
                await self._publish(room, [], local.outbox_left)
            await self._group("group_discard", room)
            if room in self.rooms:  # somebody joined it again meanwhile
                await self._group("group_add", room)
        reader = session.reader
        await events.emit(
            events.ReaderLeft(
                room, session.identity, rid, reader.name, session.started_at, at_ms or self.now_ms(),
                session.furthest, reader.position, reason, self.proc,
            )
        )

    def progress(self, conn: Connection, room: str, position: float, name: str | None) -> None:
        """Record a reading position; it goes out when the room's pacing allows (coalesced)."""
        if room not in conn.rooms:
            raise NotJoined("this connection has not joined that room")
        local = self.rooms[room]
        session = local.sessions[conn.ids[room]]
        reader = session.reader
        reader.position = position
        if name is not None:
            reader.name = name
        reader.updated_at = max(self.now_ms(), reader.updated_at)
        if session.furthest is None or position > session.furthest:
            session.furthest = position
        local.to_store.add(reader.id)
        self._announce(local, reader)

    def _announce(self, local: LocalRoom, reader: Reader) -> None:
        local.updates[reader.id] = local.outbox[reader.id] = reader
        local.left.discard(reader.id)
        local.outbox_left.discard(reader.id)
        self._changed(local, published=True)

    def _changed(self, local: LocalRoom, published: bool = False) -> None:
        """Something waits for the room's next frame (and, ``published``, for its next batch to the
        other processes): wake the flush loop if that makes the room due before its wake-up."""
        now, new = self.clock(), False
        if local.dirty is None:
            local.dirty, new = now, True
        if published and local.unpublished is None:
            local.unpublished, new = now, True
        if new:
            self._pending.add(local.name)
            if self._due(local) < self._wake_at:
                self._wanted.set()

    def _due(self, local: LocalRoom) -> float:
        """When the first of the room's pending frame and batch may leave."""
        due = float("inf")
        if local.dirty is not None:
            due = self.pacing.due(local.frames, local.dirty)
        if local.unpublished is not None:
            due = min(due, self.pacing.due(local.batches, local.unpublished, batch=True))
        return due

    # -- ticks --------------------------------------------------------------------------
    async def tick(self, now: float | None = None) -> None:
        """One beat of the hub: drop silent connections, live ranking, heartbeat, checkpoint.
        A hub without its loops (``autotick=False``: tests drive it by hand) also flushes every
        pending room and sends the online count here, as its flush and tick loops would.

        ``now`` is the tick's scheduled time (the tick loop's): what is due every tick (the live
        ranking at its default of one second) then comes at every tick, however late the loop
        woke. Timed from the wake-up, a tick that woke a little earlier in its period than the
        one before skipped it, about one tick in two."""
        async with self._tick_lock:
            now = self.clock() if now is None else now
            steps = [self._drop_silent] if self.autotick else [self._flush_all, self._drop_silent]
            for step in steps:
                try:
                    await step()
                except Exception:
                    logger.exception("presence hub: %s failed", step.__name__)
            if self.ranked and now >= self._next_ranking:
                self._next_ranking = now + app_settings.RANKING_INTERVAL
                try:
                    await self._send_ranking()
                except Exception:
                    logger.warning("presence hub: live ranking unavailable", exc_info=True)
            if not self.autotick and now >= self._next_online:
                self._next_online = now + app_settings.ONLINE_INTERVAL
                try:
                    await self._send_online()
                except Exception:
                    logger.warning("presence hub: online count unavailable", exc_info=True)
            if now >= self._next_beat:
                try:
                    await self._beat()
                except Exception:
                    logger.warning("presence hub: process heartbeat failed", exc_info=True)
            if now >= self._next_checkpoint:
                self._next_checkpoint = now + app_settings.CHECKPOINT_SECONDS
                await events.emit(self.checkpoint())

    async def flush(self) -> None:
        """Send what the rooms' pacing allows now: the pending progress to the store, each due
        room's batch to the other processes and its frame to the local readers."""
        async with self._tick_lock:
            await self._flush(force=False)

    async def _flush_all(self) -> None:
        await self._flush(force=True)

    async def _flush(self, force: bool) -> None:
        # Take the changes synchronously, so what arrives during the awaits waits for the next
        # flush instead of being lost.
        now = self.clock()
        frames, batches = [], []
        for room in list(self._pending):
            local = self.rooms.get(room)
            if local is None:
                self._pending.discard(room)
                continue
            due = self.pacing.due
            if local.unpublished is not None and (force or due(local.batches, local.unpublished, batch=True) <= now):
                changes = len(local.outbox) + len(local.outbox_left)
                self.pacing.sent(local.batches, now, local.unpublished, changes)
                local.unpublished = None
                batches.append((room, newest(r.as_dict() for r in local.outbox.values()), local.outbox_left))
                local.outbox, local.outbox_left = {}, set()
            if local.dirty is not None and (force or due(local.frames, local.dirty) <= now):
                # Counted as sent now, so that what arrives during the awaits waits its turn.
                before = replace(local.frames)
                updates, left = self._take_changes(local)
                self.pacing.sent(local.frames, now, local.dirty, len(updates) + len(left))
                frames.append((local, before, updates, left))
                local.dirty = None
            if local.dirty is None and local.unpublished is None:
                self._pending.discard(room)
        await self._store_progress()
        for room, updates, left in batches:
            await self._publish(room, updates, left)
        if frames:
            await self._send_frames(frames)

    async def _store_progress(self) -> None:
        """Write every room's pending progress (due or not) in one call: a reader who joins meanwhile
        gets it in its `room_state`."""
        writes = []
        for room, local in self.rooms.items():
            writes.extend((room, replace(local.sessions[rid].reader)) for rid in local.to_store)
            local.to_store = set()
        if writes:
            try:
                await self.store.update(writes)
            except Exception:
                logger.warning("presence hub: progress not stored; the next heartbeat re-asserts", exc_info=True)

    @staticmethod
    def _take_changes(local: LocalRoom) -> tuple[list[dict], set[str]]:
        """The room's local and remote changes since its last frame (newest update per reader; at
        most ``ROOM_STATE_READERS``: see ``newest``), and forget them."""
        updates = dict(local.remote_updates)
        for rid, reader in local.updates.items():
            mine = reader.as_dict()
            if rid not in updates or mine["updated_at"] >= updates[rid]["updated_at"]:
                updates[rid] = mine
        left = (local.left | local.remote_left) - updates.keys()
        local.updates, local.left = {}, set()
        local.remote_updates, local.remote_left = {}, set()
        return newest(updates.values()), left

    async def _send_frames(self, frames: list[tuple[LocalRoom, Cadence, list[dict], set[str]]]) -> None:
        """One `room` frame per changed room, encoded once, to its local readers. A room with
        nothing new to show (a heartbeat's count check) sends none: its pacing is put back."""
        try:
            counts = await self.store.counts([local.name for local, *_ in frames])
        except Exception:
            logger.warning("presence hub: room counts unavailable; sending local ones", exc_info=True)
            counts = {local.name: local.count or len(local.members) for local, *_ in frames}
        crowded = [local.name for local, *_ in frames if counts.get(local.name, 0) > app_settings.ROOM_STATE_READERS]
        histograms = await self._histograms(crowded)
        for local, before, updates, left in frames:
            room = local.name
            count = counts.get(room, 0)
            histogram = histograms.get(room)
            if not updates and not left and count == local.count and histogram in (None, local.histogram):
                local.frames = before
                continue
            local.count, local.histogram = count, histogram
            frame = {"type": "room", "room": room, "count": count, "updates": updates, "left": sorted(left)}
            if room in histograms:
                frame["histogram"] = histograms[room]
            await self._fan_out([c for tabs in local.members.values() for c in tabs], protocol.dumps(frame))

    async def _histograms(self, rooms_: list[str]) -> dict[str, list[int]]:
        """Histograms of rooms too large for a client to know every reader (protocol extension:
        `room` frames of such rooms carry one, so the widget's distribution stays exact)."""
        if not rooms_:
            return {}
        states = await asyncio.gather(*(self.store.room_state(room, 0) for room in rooms_), return_exceptions=True)
        return {room: s.histogram for room, s in zip(rooms_, states, strict=True) if isinstance(s, RoomState)}

    async def _publish(self, room: str, updates: list[dict], left: set[str]) -> None:
        """Tell the other processes' hubs what changed in a room here."""
        if self.layer is None:
            return
        message = {"type": BATCH, "origin": self.proc, "room": room, "updates": updates, "left": sorted(left)}
        try:
            await self._layer_call("group_send", rooms.group_name(room), message)
        except Exception:
            logger.warning("presence hub: could not publish to %s", room, exc_info=True)

    def _merge_remote(self, message: dict) -> None:
        local = self.rooms.get(message.get("room"))
        if local is None:
            return
        for reader in message.get("updates", ()):
            rid = reader["id"]
            known = local.remote_updates.get(rid)
            session = local.sessions.get(rid)  # the same reader in a tab of this process
            if known is not None and reader["updated_at"] < known["updated_at"]:
                continue
            if session is not None and reader["updated_at"] < session.reader.updated_at:
                continue
            local.remote_updates[rid] = reader
            local.remote_left.discard(rid)
        for rid in message.get("left", ()):
            if rid not in local.members:  # still here through a local tab
                local.remote_left.add(rid)
                local.remote_updates.pop(rid, None)
        self._changed(local)

    async def _fan_out(self, connections, text: str) -> None:
        for conn in connections:
            try:
                await conn.send(text)
            except Exception:
                logger.debug("presence hub: send failed", exc_info=True)

    async def _check_online(self) -> None:
        """Send the site-wide count once it changed and held for two reads (a departure and an
        arrival a moment apart change nothing), unless an `online` frame went out less than
        ``PRESENCE_ONLINE_INTERVAL`` ago (then a later check sends it)."""
        async with self._tick_lock:
            value = await self.store.online()
            read_before, self._online_read = self._online_read, value
            if value != self.online_value:
                if value != read_before or self.clock() < self._online_sent_at + app_settings.ONLINE_INTERVAL:
                    return
            await self._send_online(value)

    async def _send_online(self, value: int | None = None) -> None:
        """Send the site-wide count (read now if not given) to the connections that were sent
        another value, or only to those that just said ``hello`` if it did not change."""
        fresh, self._fresh = self._fresh, []
        if value is None:
            value = await self.store.online()
        changed = value != self.online_value
        # online_sent is None until the connection's `hello` (which carries the count) is on its
        # way: an `online` frame must never overtake it (docs/reliability.md, guarantee 5).
        stale = [c for c in (self.connections if changed else fresh)
                 if c.online_sent is not None and c.online_sent != value and not c.gone]
        for conn in stale:
            conn.online_sent = value
        self.online_value = value
        if changed:
            self._online_sent_at = self.clock()
        await self._fan_out(stale, protocol.dumps(protocol.online(value)))
        if changed:
            await events.emit(events.OnlineCounted(value, self.now_ms()))

    # -- live ranking (protocol extension) ----------------------------------------------
    async def subscribe_ranking(self, conn: Connection, limit: int) -> list[dict]:
        """Send this connection the ranking's top ``limit`` rooms now and whenever they change
        (a second subscription replaces the first). Returns the ranking as of now, which
        includes every join this connection made before."""
        entries = await self._ranking(limit, quiet=False)
        if not conn.gone:
            self.ranked[conn] = (limit, entries)
        return entries

    async def _ranking(self, limit: int, quiet: bool = True) -> list[dict]:
        """Rooms with readers, most first, that still resolve: one store call, resolutions cached
        (``rooms.resolve``). A room whose object became unresolvable is left out."""
        call = self.store.ranking(limit + RANKING_SLACK)
        entries = []
        for room, count in await (call if quiet else self._store(call)):
            try:
                info = await rooms.resolve(room)
            except (InvalidRoom, Unavailable):
                continue
            entries.append({"room": room, "count": count, "title": info.title, "url": info.url})
            if len(entries) == limit:
                break
        return entries

    async def _send_ranking(self) -> None:
        """One ranking for every subscriber (whatever their number), each sent its top rooms
        only when they differ from what it was sent last."""
        entries = await self._ranking(max(limit for limit, _ in self.ranked.values()))
        changed: dict[int, list[Connection]] = {}
        for conn, (limit, last) in list(self.ranked.items()):
            mine = entries[:limit]
            if mine != last and not conn.gone:
                self.ranked[conn] = (limit, mine)
                changed.setdefault(limit, []).append(conn)
        for limit, connections in changed.items():
            await self._fan_out(connections, protocol.dumps(protocol.ranking(entries[:limit])))

    async def _drop_silent(self) -> None:
        deadline = self.clock() - app_settings.HEARTBEAT * app_settings.SILENCE_FACTOR
        for conn in [c for c in self.connections if c.last_seen < deadline]:
            await self.unregister(conn, events.TIMEOUT, at_ms=ms(conn.last_seen))
            with contextlib.suppress(Exception):
                await conn.close(protocol.CLOSE_SILENT)

    def checkpoint(self) -> events.Checkpoint:
        """What every reader in this process has read so far."""
        return events.Checkpoint(
            self.now_ms(),
            self.proc,
            [
                events.OpenSession(
                    room, s.identity, rid, s.reader.name, s.started_at, s.furthest, s.reader.position
                )
                for room, local in self.rooms.items()
                for rid, s in local.sessions.items()
            ],
        )

    async def _beat(self) -> None:
        """Process heartbeat: stay alive in the store, re-assert claims, reap the dead."""
        self._next_beat = self.clock() + app_settings.PROCESS_HEARTBEAT
        online = list(self.by_reader)
        claims = [(room, s.reader) for room, local in self.rooms.items() for s in local.sessions.values()]
        admitted = [(address, reader, n) for (address, reader), n in self.admitted.items()]
        gone = await self.store.heartbeat(self.now_ms(), ms(app_settings.PROCESS_TTL), online, claims, admitted)
        # A reader that left while the beat was on its way may have been claimed again by it,
        # after its own release: drop those claims too, or it would stay forever (docs/reliability.md, guarantee 5).
        self._unreleased.update((None, rid) for rid in online if not self._holds(None, rid))
        self._unreleased.update((room, reader.id) for room, reader in claims if not self._holds(room, reader.id))
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
        await self._retry_releases()
        for room in list(self.rooms):  # rooms come and go during the awaits
            await self._group("group_add", room)  # refresh before the layer's group expiry
        by_room: dict[str, list[str]] = {}
        for room, rid in gone:
            by_room.setdefault(room, []).append(rid)
        for room, rids in by_room.items():
            await self._announce_departures(room, rids)
        if gone:
            logger.info("presence hub: removed %d readers of dead processes", len(gone))

    # -- helpers ------------------------------------------------------------------------
    async def _group(self, op: str, room: str) -> None:
        if self.layer is None or self.channel is None:
            return
        try:
            await self._layer_call(op, rooms.group_name(room), self.channel)
        except Exception:
            logger.warning("presence hub: %s %s failed", op, room, exc_info=True)

    async def _layer_call(self, op: str, *args) -> None:
        """A channel-layer call, tried twice: the first use of a pooled connection that a Redis
        restart broke fails once, and a lost group_add or batch is not repaired before the next
        heartbeat or change (docs/reliability.md, guarantee 3)."""
        try:
            await getattr(self.layer, op)(*args)
        except Exception:
            await getattr(self.layer, op)(*args)

    async def _release(self, room: str | None, reader_id: str) -> bool | None:
        """Drop this process's claim on a reader online (room None) or in a room. A claim
        the store could not drop is retried each heartbeat until it is, so an outage never
        leaves a phantom reader behind. Returns the store's answer, None if unreachable."""
        try:
            if room is None:
                return await self.store.release_online(reader_id)
            return await self.store.leave(room, reader_id)
        except Exception:
            logger.warning("presence hub: could not release %s; retrying each heartbeat", room or "online")
            self._unreleased.add((room, reader_id))
            return None

    def _holds(self, room: str | None, reader_id: str) -> bool:
        """Whether a local connection holds this reader online (room None) or in the room."""
        if room is None:
            return reader_id in self.by_reader
        return room in self.rooms and reader_id in self.rooms[room].members

    async def _retry_releases(self) -> None:
        """Drop the claims this process holds no reader for: releases that failed, and claims a
        heartbeat re-asserted while their reader was leaving."""
        for room, reader_id in list(self._unreleased):
            self._unreleased.discard((room, reader_id))
            if self._holds(room, reader_id):
                continue  # claimed again since; the heartbeat re-asserted it
            gone = await self._release(room, reader_id)  # queued again if the store fails
            if self._holds(room, reader_id):  # came back while we released: claim it again
                if room is None:
                    await self._store(self.store.claim_online(reader_id), quiet=True)
                else:
                    reader = self.rooms[room].sessions[reader_id].reader
                    await self._store(self.store.join(room, reader), quiet=True)
            elif gone and room is not None:
                await self._announce_departures(room, [reader_id])

    async def _announce_departures(self, room: str, reader_ids: list[str]) -> None:
        """Tell every hub with readers in the room (this one too) that these readers left."""
        if self.layer is None:
            return
        message = {"type": BATCH, "origin": "departures:" + self.proc, "room": room, "updates": [], "left": reader_ids}
        try:
            await self._layer_call("group_send", rooms.group_name(room), message)
        except Exception:
            logger.warning("presence hub: could not publish departures in %s", room, exc_info=True)

    async def _store(self, call: Awaitable, quiet: bool = False):
        """Await a store call; a store outage becomes ``Unavailable`` (or None when quiet)."""
        try:
            return await call
        except Exception as exc:
            if quiet:
                logger.warning("presence store call failed; the next heartbeat re-asserts claims", exc_info=True)
                return None
            raise Unavailable("presence store unavailable, try again") from exc

    async def shutdown(self) -> None:
        """Graceful stop: every local reader leaves, then this process's claims go at once."""
        for conn in list(self.connections):
            await self.unregister(conn, events.SHUTDOWN)
        await asyncio.gather(*self._leaving, return_exceptions=True)  # consumers' own, in flight
        with contextlib.suppress(Exception):
            await self.store.release_all()
        await self.stop()


def newest(readers) -> list[dict]:
    """The ``ROOM_STATE_READERS`` most recently updated reader objects, newest first. A `room`
    frame lists no more readers than a `room_state` does: the widget draws a few dozen markers,
    and frames of a crowded room would otherwise grow with its size, their cost with its square."""
    return heapq.nlargest(app_settings.ROOM_STATE_READERS, readers, key=lambda r: (r["updated_at"], r["id"]))


SHUTDOWN_SECONDS = 10.0  # Daphne's own application_close_timeout

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
