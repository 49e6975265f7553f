"""Faults under load, with real Daphne processes and real WebSocket clients (docs/reliability.md, guarantees 3 and 5).

Each test runs its own ``redis-server`` (``tests/redis_server.py``) for the store, the channel
layer and the cache of two Daphne processes, so it may flush or restart it; it keeps the truth
(who is connected, in which room, at which position) and compares every count and histogram
that clients, a fresh observer and the REST API see with it. See docs/reliability.md, 3 and 5.

Randomness is seeded; the seed is printed. Replay a run with ``PRESENCE_FAULTS_SEED=<seed>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import sqlite3
import time
import urllib.request
import uuid
from collections.abc import Callable

import pytest
import websockets

from presence import identity
from presence.store.base import HISTOGRAM_BUCKETS, bucket
from tests.redis_server import RedisServer
from tests.servers import ORIGIN, DaphneServer, migrate_database, server_env

pytestmark = [pytest.mark.processes, pytest.mark.slow]

ROOM_STATE_READERS = 100  # rooms with more readers carry a histogram in their `room` frames
TICK = 1.0
POLL = 0.5  # seconds between two looks at what clients and observers see


def seeded(name: str) -> random.Random:
    seed = int(os.environ.get("PRESENCE_FAULTS_SEED") or time.time_ns() % 1_000_000_007)
    print(f"\n{name}: seed {seed} (replay with PRESENCE_FAULTS_SEED={seed})")
    return random.Random(seed)


# -- clients and the truth --------------------------------------------------------------------


class Tab:
    """A browser tab: one WebSocket read in the background, remembering only what it saw last."""

    _refs = itertools.count()

    def __init__(self, ws, session: str, server: DaphneServer, hello: dict):
        self.ws = ws
        self.session = session
        self.server = server
        self.reader: str = hello["reader"]  # its site-wide id (online); in rooms: World.reader_of
        self.online: int = hello["online"]
        self.heartbeat: float = hello["heartbeat"]
        self.counts: dict[str, int] = {}
        self.histograms: dict[str, list[int]] = {}
        self.errors: list[dict] = []
        self.rooms: set[str] = set()  # rooms the server holds this tab in, as the test knows it
        self.live = True  # the test counts it (not closed, dropped or silent)
        self.end_reason: str | None = None  # how its reading sessions end, if before the servers stop
        self.closed = False  # the socket is closed
        self.story: list[str] = []  # what the test did with it (for failure reports)
        self._waiters: list[tuple[Callable[[dict], bool], asyncio.Future]] = []
        self._task = asyncio.ensure_future(self._read())

    def __repr__(self) -> str:
        return f"<tab {self.session}@{self.server.name}>"

    @classmethod
    async def open(cls, server: DaphneServer, session: str) -> Tab:
        ws = await websockets.connect(f"{server.url}?session={session}", origin=ORIGIN, open_timeout=30,
                                      ping_interval=None, max_size=2**22)
        hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert hello["type"] == "hello", hello
        return cls(ws, session, server, hello)

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                self._see(json.loads(text))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True
            for _, future in self._waiters:
                if not future.done():
                    future.set_exception(ConnectionError(f"{self} closed"))

    def _see(self, frame: dict) -> None:
        kind = frame["type"]
        if kind == "online":
            self.online = frame["count"]
        elif kind in ("room", "room_state"):
            self.counts[frame["room"]] = frame["count"]
            if "histogram" in frame:
                self.histograms[frame["room"]] = frame["histogram"]
        elif kind == "hello":
            self.online = frame["online"]
        elif kind == "error":
            self.errors.append(frame)
        for waiter in [w for w in self._waiters if w[0](frame)]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(frame)

    async def send(self, **frame) -> None:
        self.story.append(f"{time.monotonic():.2f} {frame.get('type')} {frame.get('room', '')}")
        await self.ws.send(json.dumps(frame))

    async def ask(self, predicate: Callable[[dict], bool], timeout: float = 10, **frame) -> dict:  # noqa: ASYNC109
        """Send a frame and wait for the first frame after it that matches."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        await self.send(**frame)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove((predicate, future))

    async def join(self, room: str, timeout: float = 10) -> dict:  # noqa: ASYNC109
        """``room_state``, or the ``error`` refusing the join; the room counts as joined either way
        unless refused for another reason (``unavailable``: the hub holds it, the store did not answer)."""
        ref = f"j{next(self._refs)}"

        def answers(f: dict) -> bool:
            return (f["type"] == "room_state" and f["room"] == room) or (f["type"] == "error" and f.get("ref") == ref)

        answer = await self.ask(answers, timeout, type="join", room=room, ref=ref)
        if answer["type"] == "room_state" or answer["code"] == "unavailable":
            self.rooms.add(room)
        return answer

    async def pong(self, timeout: float = 10) -> dict:  # noqa: ASYNC109
        return await self.ask(lambda f: f["type"] == "pong", timeout, type="ping")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.ws.transport.abort()


class World:
    """Every tab the test opened, and the truth computed from those it counts as live."""

    def __init__(self, rooms: list[str]):
        self.rooms = rooms
        self.tabs: list[Tab] = []
        self.positions: dict[tuple[str, str], float] = {}  # (session, room) -> the reader's last position

    def alive(self) -> list[Tab]:
        return [tab for tab in self.tabs if tab.live]

    def online(self) -> int:
        return len({tab.session for tab in self.alive()})

    def members(self, room: str) -> set[str]:
        return {tab.session for tab in self.alive() if room in tab.rooms}

    @staticmethod
    def reader_of(session: str, room: str) -> str:
        """The id a session's reader has in a room (protocol 1.1: one per room)."""
        return identity.reader_id(identity.for_session(session), room)

    def readers(self, room: str) -> dict[str, float | None]:
        return {self.reader_of(s, room): self.positions.get((s, room)) for s in self.members(room)}

    def histogram(self, room: str) -> list[int]:
        histogram = [0] * HISTOGRAM_BUCKETS
        for session in self.members(room):
            histogram[bucket(self.positions.get((session, room)))] += 1
        return histogram

    def client_mismatches(self) -> list[str]:
        """What live tabs saw last that differs from the truth: online, room counts, histograms."""
        online = self.online()
        counts = {room: len(self.members(room)) for room in self.rooms}
        histograms = {room: self.histogram(room) for room in self.rooms if counts[room] > ROOM_STATE_READERS}
        problems = []
        for tab in self.alive():
            if tab.closed:
                problems.append(f"{tab} was closed by the server")
            if tab.online != online:
                problems.append(f"{tab} online {tab.online} != {online}")
            for room in tab.rooms:
                if tab.counts.get(room) != counts[room]:
                    problems.append(f"{tab} {room} count {tab.counts.get(room)} != {counts[room]}")
                if room in histograms and tab.histograms.get(room) != histograms[room]:
                    problems.append(f"{tab} {room} histogram {tab.histograms.get(room)} != {histograms[room]}")
        return problems

    def state_mismatches(self, where: str, state: dict) -> list[str]:
        """What a ``room_state`` (or the room API) shows that differs from the truth."""
        room, problems = state["room"], []
        count, histogram = len(self.members(room)), self.histogram(room)
        if state["count"] != count:
            problems.append(f"{where} {room} count {state['count']} != {count}")
        if state["histogram"] != histogram:
            problems.append(f"{where} {room} histogram {state['histogram']} != {histogram}")
        if count <= ROOM_STATE_READERS:
            seen = {reader["id"]: reader["position"] for reader in state["readers"]}
            expected = self.readers(room)
            if seen != expected:
                wrong = {rid: (seen.get(rid, "absent"), expected.get(rid, "absent"))
                         for rid in seen.keys() | expected.keys() if seen.get(rid, "x") != expected.get(rid, "x")}
                problems.append(f"{where} {room} readers differ (seen, truth): {dict(list(wrong.items())[:5])}")
        return problems

    async def observer_mismatches(self, observers: list[Tab]) -> list[str]:
        """Each observer (in every room) asks for each room's state again: an idempotent join."""
        problems = []
        for observer in observers:
            for room in self.rooms:
                state = await observer.join(room)
                if state["type"] != "room_state":
                    problems.append(f"{observer} join {room}: {state}")
                else:
                    problems.extend(self.state_mismatches(f"{observer}", state))
        return problems


def summary(problems: list[str], limit: int = 8) -> str:
    return f"{len(problems)} mismatches, e.g.:\n  " + "\n  ".join(problems[:limit])


async def converge(world: World, observers: list[Tab], deadline: float, since: float) -> float:  # noqa: ASYNC109
    """Seconds from ``since`` (monotonic) until tabs and observers all see the truth (observers
    only if given: under load, positions move faster than a store can be read)."""
    next_observation = 0.0
    seen_by_observers: list[str] = []
    while True:
        problems = world.client_mismatches()
        if not problems and observers and time.monotonic() >= next_observation:
            next_observation = time.monotonic() + POLL  # the observers' joins stay under the rate limit
            seen_by_observers = await world.observer_mismatches(observers)
            if not seen_by_observers:
                return time.monotonic() - since
        elif not problems and not observers:
            return time.monotonic() - since
        if time.monotonic() - since > deadline:
            if problems and observers:
                try:
                    seen_by_observers = await world.observer_mismatches(observers)
                except websockets.ConnectionClosed as exc:  # idle while the tabs disagreed: 4002
                    seen_by_observers = [f"an observer was closed: {exc}"]
            closed = [p for p in problems if "closed by the server" in p]
            raise AssertionError(f"no convergence within {deadline} s: {summary(problems)}\n{len(closed)} closed: "
                                 f"{closed[:5]}\nobservers: {summary(seen_by_observers)}")
        await asyncio.sleep(0.1)


def api(server: DaphneServer, path: str) -> dict | list:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/presence/{path}", timeout=10) as response:
        return json.loads(response.read())


async def api_mismatches(world: World, server: DaphneServer) -> list[str]:
    """GET online/, rooms/ and rooms/<room>/ from ``server`` against the truth."""
    problems = []
    online = (await asyncio.to_thread(api, server, "online/"))["online"]
    if online != world.online():
        problems.append(f"API@{server.name} online {online} != {world.online()}")
    ranking = {entry["room"]: entry["count"] for entry in await asyncio.to_thread(api, server, "rooms/?limit=50")}
    expected = {room: len(world.members(room)) for room in world.rooms if world.members(room)}
    if ranking != expected:
        problems.append(f"API@{server.name} rooms/ {ranking} != {expected}")
    for room in world.rooms:
        detail = await asyncio.to_thread(api, server, f"rooms/{room}/")
        problems.extend(world.state_mismatches(f"API@{server.name}", detail))
    return problems


def sessions_by_server(db_url: str, servers: list[DaphneServer], readers: set[str]) -> list[tuple[str, str, str, str]]:
    """(server name, reader id, room, end reason) of every reading session of these readers."""
    path = db_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT process, reader_id, room, end_reason FROM presence_readingsession").fetchall()
    named = []
    for process, reader, room, reason in rows:
        if reader in readers:
            (name,) = [s.name for s in servers if f"-{s.proc.pid}-" in process]
            named.append((name, reader, room, reason))
    return named


def expected_sessions(world: World) -> list[tuple[str, str, str, str]]:
    """One session per reader, room and process: tabs of one reader in one room of one process
    share it; it ends as the last of them did (shutdown if one was still there)."""
    groups: dict[tuple[str, str, str], list[Tab]] = {}
    for tab in world.tabs:
        for room in tab.rooms | getattr(tab, "left_rooms", set()):
            groups.setdefault((tab.server.name, World.reader_of(tab.session, room), room), []).append(tab)
    expected = []
    for (name, reader, room), tabs in groups.items():
        reasons = {"left" if room in getattr(t, "left_rooms", set()) else (t.end_reason or "shutdown") for t in tabs}
        reason = "shutdown" if "shutdown" in reasons else reasons.pop()
        expected.append((name, reader, room, reason))
    return expected


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site_db(redis_url, tmp_path_factory):
    """A SQLite database migrated once for the module: its URL and the rooms of the seeded articles."""
    url, pks = migrate_database(tmp_path_factory.mktemp("presence-faults"), redis_url)
    assert len(pks) >= 5, "the blog's data migration should seed articles"
    return url, [f"article:{pk}" for pk in pks]


@pytest.fixture
def private_redis():
    """A redis-server of this test's own: flushing or restarting it disturbs nobody."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def start_server(site_db, private_redis):
    """``start(name, **tunables)`` -> a running Daphne on the private Redis; all stopped afterwards."""
    prefix = f"presence-faults-{uuid.uuid4().hex[:8]}"
    started: list[DaphneServer] = []

    def start(name: str, **tunables: float) -> DaphneServer:
        # Every tab comes from loopback: the per-address caps (tests/test_hostile.py) are off here.
        tunables = {"max_readers_per_ip": None, "max_connections_per_ip": None, **tunables}
        server = DaphneServer(server_env(private_redis.url, site_db[0], prefix, **tunables), name=name)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.close()


async def open_all(world: World, targets: list[tuple[DaphneServer, str]], concurrency: int = 40) -> list[Tab]:
    gate = asyncio.Semaphore(concurrency)

    async def one(server: DaphneServer, session: str) -> Tab:
        async with gate:
            return await Tab.open(server, session)

    tabs = await asyncio.gather(*(one(server, session) for server, session in targets))
    world.tabs.extend(tabs)
    return tabs


async def close_all(tabs: list[Tab]) -> None:
    await asyncio.gather(*(tab.close() for tab in tabs if not tab.closed))


# -- 3. Redis flushed or restarted under load ---------------------------------------------------

PROCESS_HEARTBEAT = 2.0
# Once Redis answers again (or from the flush): the next process heartbeat re-asserts every
# claim (at most PROCESS_HEARTBEAT later, run by the first tick after it is due), the tick after
# sends the healed counts; 2 s more for a loaded 2-core machine and the observers' 0.5 s polling.
HEAL_BOUND = PROCESS_HEARTBEAT + 2 * TICK + 2.0
OUTAGE = 3.0
SESSIONS = 200
SECOND_TABS = 40  # sessions with a tab on each process


@pytest.mark.parametrize("fault", ["flushall", "restart"])
async def test_redis_lost_under_load_heals_within_one_heartbeat(fault, private_redis, start_server, site_db,
                                                                record_property):
    rng = seeded(f"redis {fault}")
    rooms = site_db[1][:4]
    tunables = {"process_heartbeat": PROCESS_HEARTBEAT, "process_ttl": 3 * PROCESS_HEARTBEAT, "heartbeat": 60,
                "min_session_seconds": 0, "tick": TICK}
    a, b = start_server("a", **tunables), start_server("b", **tunables)
    servers = [a, b]
    world = World(rooms)
    run = uuid.uuid4().hex[:6]

    # 200 readers (the first 40 with a tab on each process), 4 rooms, some in two rooms or none;
    # two observers (one reader, a tab on each process) in every room.
    targets = [(servers[i % 2], f"r{run}-{i:03d}") for i in range(SESSIONS)]
    targets += [(servers[1 - i % 2], f"r{run}-{i:03d}") for i in range(SECOND_TABS)]
    targets += [(a, f"obs{run}"), (b, f"obs{run}"), (a, f"probe-a{run}"), (b, f"probe-b{run}")]
    tabs = await open_all(world, targets)
    first_tabs, second_tabs = tabs[:SESSIONS], tabs[SESSIONS:SESSIONS + SECOND_TABS]
    observers, probes = tabs[-4:-2], tabs[-2:]
    writing: list[tuple[Tab, str]] = []  # (tab, room): only a reader's first tab sends progress
    try:
        for i, tab in enumerate(first_tabs):
            if i % 10 == 9:
                continue  # online, in no room
            mine = [rooms[i % 4]] + ([rooms[(i + 1) % 4]] if i % 5 == 0 else [])
            for room in mine:
                for t in [tab] + ([second_tabs[i]] if i < SECOND_TABS else []):
                    assert (await t.join(room))["type"] == "room_state"
                writing.append((tab, room))
        for observer in observers:
            for room in rooms:
                assert (await observer.join(room))["type"] == "room_state"

        stop = asyncio.Event()

        async def load() -> None:  # ~100 progress frames a second, each reader ~0.5 a second
            while not stop.is_set():
                tab, room = rng.choice(writing)
                if tab.live and room in tab.rooms:
                    position = round(rng.random(), 3)
                    world.positions[(tab.session, room)] = position
                    await tab.send(type="progress", room=room, position=position)
                await asyncio.sleep(0.01)

        loader = asyncio.ensure_future(load())
        await asyncio.sleep(1)
        before = await converge(world, [], 15, time.monotonic())
        print(f"before the fault: every tab sees the true counts ({before:.2f} s)")
        await asyncio.sleep(2)

        singles = [tab for i, tab in enumerate(first_tabs) if i >= SECOND_TABS and tab.rooms]
        leavers, closers = singles[:6], singles[6:12]
        if fault == "flushall":
            await asyncio.to_thread(private_redis.flushall)
        else:
            await asyncio.to_thread(private_redis.shutdown)
        down_at = time.monotonic()

        # During the outage (restart) or right after the flush: join answers `unavailable`
        # (restart) or `room_state`; ping, progress, leave, close and new connections work.
        expected = "unavailable" if fault == "restart" else "room_state"
        for probe in probes:
            assert (await probe.pong())["type"] == "pong"
            answer = await probe.join(rooms[0])
            assert answer.get("code", answer["type"]) == expected, answer
        late = await open_all(world, [(a, f"late-a{run}"), (b, f"late-b{run}")])
        for tab in late:
            answer = await tab.join(rooms[1])
            assert answer.get("code", answer["type"]) == expected, answer
        for tab in leavers:
            room = sorted(tab.rooms)[0]
            tab.rooms.discard(room)
            tab.left_rooms = {room}
            await tab.send(type="leave", room=room)
        for tab in closers:
            tab.live, tab.end_reason = False, "closed"
            await tab.close()
        second_tabs[0].live, second_tabs[0].end_reason = False, "closed"  # its reader stays, through its first tab
        await second_tabs[0].close()

        if fault == "restart":
            await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
            stop.set()
            await loader
            await asyncio.to_thread(private_redis.start)
            up_at = time.monotonic()
        else:
            stop.set()
            await loader
            up_at = down_at  # the data was lost at the flush
        for server in servers:
            assert server.running, f"{server.name} exited:\n{server.output[-3000:]}"

        healed = await converge(world, observers, HEAL_BOUND + 10, up_at)
        record_property("heal_seconds", round(healed, 2))
        print(f"{fault}: every view equals the truth {healed:.2f} s after Redis answered again (bound {HEAL_BOUND} s)")
        assert healed <= HEAL_BOUND

        # The tabs refused during the outage try again: answered now, and counted once.
        for tab in [*probes, *late]:
            for room in sorted(tab.rooms):
                state = await tab.join(room)
                assert state["type"] == "room_state", state
                assert not world.state_mismatches(f"{tab}", state), world.state_mismatches(f"{tab}", state)
        for server in servers:
            problems = await api_mismatches(world, server)
            assert not problems, summary(problems)

        # Cross-process room frames flow again: the channel layer recovered without a restart.
        room = rooms[2]
        for writer_server, reader_server in ((a, b), (b, a)):
            writer = next(t for t, r in writing if r == room and t.server is writer_server and t.live
                          and room in t.rooms and t not in first_tabs[:SECOND_TABS])
            reader = next(t for t in world.alive() if t.server is reader_server and room in t.rooms)
            position = round(0.5 + rng.random() / 4, 3)
            started = time.monotonic()
            future = asyncio.ensure_future(reader.ask(
                lambda f, w=writer, p=position: f["type"] == "room" and f["room"] == room
                and any(u["id"] == World.reader_of(w.session, room) and u["position"] == p for u in f["updates"]),
                5 * TICK, type="ping",
            ))
            await writer.send(type="progress", room=room, position=position)
            world.positions[(writer.session, room)] = position
            try:
                await future
            except TimeoutError:
                for server in servers:
                    print(f"---- {server.name}\n{server.output[-6000:]}")
                raise AssertionError(f"{writer} -> {reader}: no room frame") from None
            print(f"progress on {writer_server.name} reached a reader on {reader_server.name} "
                  f"in {time.monotonic() - started:.2f} s")

        unexpected = [(tab, e) for tab in world.tabs if tab not in probes + late for e in tab.errors]
        assert not unexpected, unexpected[:5]
        for server in servers:
            assert server.running, f"{server.name} exited:\n{server.output[-3000:]}"
    finally:
        await close_all([t for t in world.tabs if not t.live])

    # No reading session lost: stop gracefully, then read what each process wrote.
    for server in servers:
        server.terminate()
    for server in servers:
        assert await asyncio.to_thread(server.wait, 20) == 0, server.output[-3000:]
    await close_all(world.tabs)
    readers = {World.reader_of(tab.session, room) for tab in world.tabs for room in rooms}
    written = sorted(sessions_by_server(site_db[0], servers, readers))
    expected_rows = sorted(expected_sessions(world))
    assert written == expected_rows, (
        f"missing: {sorted(set(expected_rows) - set(written))[:10]}; "
        f"unexpected: {sorted(set(written) - set(expected_rows))[:10]}; {len(written)} vs {len(expected_rows)} rows"
    )


# -- 5. connect/close races and half-open sockets, 1,000 clients -------------------------------

RACE_CLIENTS = 1000
RACE_SESSIONS = 650  # fewer than clients: many readers have several tabs, on either process
RACE_HEARTBEAT = 3  # seconds between pings; a tab silent for 2.5 x 3 = 7.5 s is dropped
SPREAD = 8.0  # seconds over which the clients arrive
KINDS = {  # what a client does once it has joined, left and moved a little; weights
    "stay": 38,  # stays, pinging
    "leave": 6,  # leaves its rooms, stays online
    "close": 6,  # closes cleanly
    "abort": 10,  # drops the TCP connection, no close frame
    "abort-in-flight": 8,  # sends a join or progress and drops the connection at once
    "silent": 8,  # half-open: keeps the socket, stops reading and pinging
    "handshake": 10,  # closes mid-handshake (a partial upgrade request, or a full one unanswered)
    "reconnect": 14,  # closes or drops, then comes back with the same session id (either process)
}
UPGRADE = (
    "GET /ws/presence/?session={session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Origin: http://localhost\r\n\r\n"
)


async def test_connect_close_races_leave_exactly_the_truth(start_server, site_db, private_redis, record_property):
    rng = seeded("races")
    rooms = site_db[1][:5]
    tunables = {"heartbeat": RACE_HEARTBEAT, "process_heartbeat": 2, "process_ttl": 6, "tick": TICK}
    servers = [start_server("a", **tunables), start_server("b", **tunables)]
    world = World(rooms)
    run = uuid.uuid4().hex[:6]
    sessions = [f"s{run}-{n:03d}" for n in range(RACE_SESSIONS)]
    gate = asyncio.Semaphore(100)  # handshakes in flight at once
    stop = asyncio.Event()
    done: dict[str, int] = {}
    silent_since: list[float] = []

    async def open_tab(server: DaphneServer, session: str) -> Tab:
        async with gate:
            tab = await Tab.open(server, session)
        world.tabs.append(tab)
        return tab

    async def wander(tab: Tab, r: random.Random) -> None:
        """Join, move and leave at random; waits for each join's answer (the server holds the room)."""
        for _ in range(r.randint(1, 5)):
            action = r.random()
            if action < 0.5 and len(tab.rooms) < 3:
                answer = await tab.join(r.choice(rooms))
                assert answer["type"] == "room_state", (tab, answer)
            elif action < 0.8 and tab.rooms:
                await tab.send(type="progress", room=r.choice(sorted(tab.rooms)), position=round(r.random(), 3))
            elif tab.rooms:
                room = r.choice(sorted(tab.rooms))
                tab.rooms.discard(room)
                await tab.send(type="leave", room=room)
            await asyncio.sleep(r.uniform(0, 0.4))

    async def keep_pinging(tab: Tab, r: random.Random) -> None:
        while not stop.is_set() and tab.live:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), r.uniform(0.5, 0.8) * RACE_HEARTBEAT)
            if tab.live and not stop.is_set():
                await tab.send(type="ping")

    async def mid_handshake(server: DaphneServer, session: str, r: random.Random) -> None:
        request = UPGRADE.format(session=session, port=server.port)
        full = r.random() < 0.5
        with contextlib.suppress(OSError):  # the server may reset what we abandon first
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request.encode() if full else request[: r.randint(10, len(request) - 4)].encode())
            await writer.drain()
            await asyncio.sleep(r.uniform(0, 0.05))
            writer.transport.abort() if r.random() < 0.5 else writer.close()

    async def client(kind: str, server: DaphneServer, session: str, delay: float, r: random.Random) -> None:
        await asyncio.sleep(delay)
        if kind == "handshake":
            await mid_handshake(server, session, r)
            done[kind] = done.get(kind, 0) + 1
            return
        tab = await open_tab(server, session)
        tab.kind = kind
        await wander(tab, r)
        if kind == "leave":
            for room in sorted(tab.rooms):
                tab.rooms.discard(room)
                await tab.send(type="leave", room=room)
        elif kind == "close":
            tab.live = False
            await tab.close()
        elif kind == "abort":
            tab.live = False
            tab.abort()
        elif kind == "abort-in-flight":
            tab.live = False
            if tab.rooms and r.random() < 0.5:
                await tab.send(type="progress", room=r.choice(sorted(tab.rooms)), position=0.5)
            else:
                await tab.send(type="join", room=r.choice(rooms))
            tab.abort()
        elif kind == "silent":
            tab.live = False
            tab.ws.transport.pause_reading()  # reads and answers nothing any more, not even a close
            silent_since.append(time.monotonic())
        elif kind == "reconnect":
            tab.live = False
            await tab.close() if r.random() < 0.5 else tab.abort()
            tab = await open_tab(r.choice(servers), session)
            tab.kind = "reconnected"
            await wander(tab, r)
        done[kind] = done.get(kind, 0) + 1
        if tab.live:
            await keep_pinging(tab, r)

    plans = [
        (kind, rng.choice(servers), rng.choice(sessions), rng.uniform(0, SPREAD), random.Random(rng.random()))
        for kind in rng.choices(list(KINDS), weights=list(KINDS.values()), k=RACE_CLIENTS)
    ]
    started = time.monotonic()
    pingers = [asyncio.ensure_future(client(*plan)) for plan in plans]
    try:
        while sum(done.values()) < RACE_CLIENTS:
            failed = [task for task in pingers if task.done() and task.exception() is not None]
            if failed:
                raise failed[0].exception()
            assert time.monotonic() - started < 60, f"clients still busy: {done}"
            await asyncio.sleep(0.2)
        chaos = time.monotonic() - started
        # Settle: a half-open socket is dropped 2.5 heartbeats after it went silent (checked each tick).
        settle_until = max(silent_since, default=0) + 2.5 * RACE_HEARTBEAT + 2 * TICK
        await asyncio.sleep(max(0.0, settle_until - time.monotonic()))

        # Each reader's last position is decided here: tabs of one reader on two processes may
        # have raced their moves. One final move per reader and room, from one of its tabs.
        moves = []
        for room in rooms:
            for session in world.members(room):
                tab = next(t for t in world.alive() if t.session == session and room in t.rooms)
                position = round(rng.random(), 3)
                world.positions[(session, room)] = position
                moves.append(tab.send(type="progress", room=room, position=position))
        await asyncio.gather(*moves)
        moved = time.monotonic()

        observers = await open_all(world, [(servers[0], f"observer{run}"), (servers[1], f"observer{run}")])
        pingers.extend(asyncio.ensure_future(keep_pinging(observer, rng)) for observer in observers)
        for observer in observers:
            for room in rooms:
                assert (await observer.join(room))["type"] == "room_state"
        settled = await converge(world, observers, 20, moved)
        for server in servers:
            problems = await api_mismatches(world, server)
            assert not problems, summary(problems)
        record_property("races_settle_seconds", round(settled, 2))
        alive = world.alive()
        print(f"{RACE_CLIENTS} clients ({done}) in {chaos:.1f} s; {len(world.tabs)} WebSockets opened; "
              f"{len(alive)} tabs of {world.online()} readers left, rooms "
              f"{[len(world.members(room)) for room in rooms]}; every view equals the truth {settled:.2f} s "
              f"after the last moves")
        errors = [(tab, error) for tab in world.tabs for error in tab.errors]
        assert not errors, errors[:5]
        for server in servers:
            assert server.running, f"{server.name} exited:\n{server.output[-3000:]}"
    except BaseException:
        client = private_redis.client()
        for key in client.keys("*:{g}:on"):
            stored = {k.decode() if isinstance(k, bytes) else k for k in client.hkeys(key)}
            truth = {tab.reader for tab in world.alive()}
            for rid in sorted(stored ^ truth):
                print(f"---- reader {rid}: {'stored only' if rid in stored else 'truth only'}")
                for tab in world.tabs:
                    if tab.reader == rid:
                        print(f"     {tab} kind={getattr(tab, 'kind', '?')} live={tab.live} closed={tab.closed} "
                              f"rooms={sorted(tab.rooms)} story={tab.story}")
            for room in rooms:
                held = {k.decode() for key in client.keys(f"*:r:{{{room}}}:n") for k in client.hkeys(key)}
                members = {world.reader_of(session, room) for session in world.members(room)}
                for rid in sorted(held ^ members):
                    print(f"---- {room} reader {rid}: {'stored only' if rid in held else 'truth only'}")
                    for tab in world.tabs:
                        if world.reader_of(tab.session, room) == rid:
                            print(f"     {tab} kind={getattr(tab, 'kind', '?')} live={tab.live} closed={tab.closed} "
                                  f"rooms={sorted(tab.rooms)} story={tab.story}")
            for proc_key in client.keys("*:{g}:on:*"):
                members = {k.decode() if isinstance(k, bytes) else k for k in client.smembers(proc_key)}
                print(f"---- {proc_key}: {len(members)} claims; differing: "
                      f"{sorted((stored ^ truth) & members)}")
        for server in servers:  # what the servers said, for the failure report
            lines = [line for line in server.output.splitlines() if "Error" in line or "WARNING" in line]
            print(f"---- {server.name}: {len(lines)} warning/error lines; the last ones:\n" + "\n".join(lines[-12:]))
        raise
    finally:
        stop.set()
        for task in pingers:
            task.cancel()
        await asyncio.gather(*pingers, return_exceptions=True)
        for tab in world.tabs:
            if not tab.closed and tab.ws.transport.is_reading() is False:
                tab.abort()
        await close_all(world.tabs)
