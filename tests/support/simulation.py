"""Simulated readers against real servers, and the truth they are checked against: the
instruments of the fault tests (``tests/test_faults.py``, docs/reliability.md, 3 and 5).

A ``Tab`` is one browser tab's WebSocket, read in the background; a ``World`` holds every tab a
test opened and computes, from those it counts as live, what every client, a fresh observer and
the REST API should see (online, room counts, readers, histograms). ``converge`` waits until they
all do. Randomness is seeded by ``seeded``; replay a run with ``PRESENCE_FAULTS_SEED=<seed>``.
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
from collections.abc import Callable

import websockets

from presence import identity
from presence.store.base import HISTOGRAM_BUCKETS, bucket
from tests.support.servers import ORIGIN, DaphneServer

ROOM_STATE_READERS = 100  # rooms with more readers carry a histogram in their `room` frames
POLL = 0.5  # seconds between two looks at what clients and observers see


def seeded(name: str) -> random.Random:
    """A generator seeded from ``PRESENCE_FAULTS_SEED``, else the clock; the seed is printed to replay a run."""
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

    async def join(self, room: str, timeout: float = 30) -> dict:  # noqa: ASYNC109
        """``room_state``, or the ``error`` refusing the join; the room counts as joined either way
        unless refused for another reason (``unavailable``: the hub holds it, the store did not answer).
        The deadline is generous: in the connect/close race, two servers, Redis and a client of a
        thousand tabs share two cores, and joins there took up to 8 s before the leading edge (12-15 s
        after: more frames), where what the test checks is the counts it converges to, not speed."""
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
