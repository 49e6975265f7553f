"""The load generator: readers with one or more tabs, speaking the wire protocol over real WebSockets.

One ``worker`` process runs a share of the readers on one asyncio loop; ``run.py`` starts several
when one process would be CPU-bound. Every worker follows the same wall-clock timeline
(``Plan``), so their measurements line up:

    start ── ramp: readers connect and join (idle) ── idle_at ── load_at: progress and churn
    ── warmup ── steady window (measured) ── end_at: progress and churn stop ── settle ── final sample

Latency: each ``progress`` carries a position unique to its reader, so an ``observer`` tab
(a few per room, picked at random) can tell when that exact update reached it. Only observers
parse their frames; the other tabs just count theirs and look for errors, which keeps the
generator cheap enough to drive a server many times its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ORIGIN = "http://localhost"
PRIME = 10007  # positions are (seq * STRIDE mod PRIME) / PRIME: distinct for PRIME progress frames of a reader
STRIDE = 7919


@dataclass
class Plan:
    """What one worker does; every time is wall-clock seconds (``time.time()``) shared by all workers."""

    worker: int
    workers: int
    readers: int  # in all workers together
    urls: list[str]
    rooms: list[str]
    weights: list[float]  # popularity of each room (Zipf, maybe a forced hot share)
    start: float
    ramp: float
    idle_at: float
    load_at: float
    window: tuple[float, float]  # the steady window
    end_at: float
    settle: float
    interval: float = 1.0
    jitter: float = 0.2
    tabs: float = 1.2  # average tabs per reader
    churn: float = 0.0  # arrivals (and as many departures) per second, in this worker
    observers_per_room: int = 4
    sample_every: float = 5.0
    connect_concurrency: int = 200  # handshakes in flight per worker; more wait their turn
    hold: bool = False  # idle probe: connect everyone, report ready, hold until told to stop
    cpus: list[int] | None = None
    seed: int = 0


@dataclass
class Tab:
    session: str
    room: str
    observer: bool
    ws: object = None
    reader_id: str = ""
    online: int | None = None
    count: int | None = None
    joined: bool = False
    closing: bool = False
    tasks: list = field(default_factory=list)  # receive and keepalive (referenced, so never collected)


@dataclass
class Reader:
    session: str
    url: str
    tabs: list[Tab]
    seq: int = 0
    task: asyncio.Task | None = None
    connected: bool = False


@dataclass
class Stats:
    connects: int = 0
    connect_failures: Counter = field(default_factory=Counter)
    connect_ms: list[float] = field(default_factory=list)
    error_frames: Counter = field(default_factory=Counter)
    unexpected_closes: Counter = field(default_factory=Counter)
    frames: int = 0
    room_frames: int = 0
    progress_sent: int = 0
    pings_sent: int = 0
    arrivals: int = 0
    departures: int = 0
    first_connect_at: float = 0.0
    last_connect_at: float = 0.0


class Worker:
    def __init__(self, plan: Plan, results=None, stop=None):
        self.plan = plan
        self.results = results  # the parent's queue: a {"ready": ...} message once everyone connected
        self.stop = stop  # the parent's multiprocessing Event that ends a held run
        self.handshakes = asyncio.Semaphore(plan.connect_concurrency)
        self.pending = 0  # initial readers still connecting
        self.random = random.Random(plan.seed * 1000 + plan.worker)
        self.stats = Stats()
        self.readers: list[Reader] = []
        self.next_session = 0
        self.sends: dict[tuple[str, float], float] = {}  # (reader id, position) -> sent at
        self.seen: dict[tuple[int, str, float], float] = {}  # (observer, reader id, position) -> first seen at
        self.samples: list[dict] = []
        self.window_counts: dict[str, dict] = {}
        # The truth: open tabs per session online, and per room.
        self.online_tabs: Counter = Counter()
        self.room_tabs: dict[str, Counter] = {room: Counter() for room in plan.rooms}
        self.observers: Counter = Counter()  # room -> observer tabs open in this worker

    # -- population ---------------------------------------------------------------------
    def new_reader(self, url: str) -> Reader:
        session = f"bench-w{self.plan.worker}-{self.next_session}-{self.random.getrandbits(32):08x}"
        self.next_session += 1
        extra, fraction = divmod(max(self.plan.tabs - 1, 0.0), 1.0)
        count = 1 + int(extra) + (self.random.random() < fraction)
        rooms = self.random.choices(self.plan.rooms, weights=self.plan.weights, k=count)
        return Reader(session, url, [Tab(session, room, observer=False) for room in rooms])

    def initial_readers(self) -> list[tuple[float, Reader]]:
        """This worker's share of the readers with their connect times, interleaved with the other
        workers' over the ramp; observers picked at random among each room's tabs."""
        plan = self.plan
        mine = []
        for g in range(plan.worker, plan.readers, plan.workers):
            at = plan.start + plan.ramp * g / max(plan.readers, 1)
            mine.append((at, self.new_reader(plan.urls[g % len(plan.urls)])))
        by_room: dict[str, list[Tab]] = {}
        for _, reader in mine:
            for tab in reader.tabs:
                by_room.setdefault(tab.room, []).append(tab)
        for tabs in by_room.values():
            for tab in self.random.sample(tabs, min(plan.observers_per_room, len(tabs))):
                tab.observer = True
        return mine

    # -- one reader ---------------------------------------------------------------------
    async def run_reader(self, reader: Reader, at: float, initial: bool = False) -> None:
        await sleep_until(at)
        opened = True
        for tab in reader.tabs:
            opened = opened and await self.open_tab(tab, reader.url)
        if initial:
            self.initial_done()
        if not opened:
            return
        reader.connected = True
        # The first tab is the one being read; the others sit in the background (pings only).
        await sleep_until(max(self.plan.load_at, time.time()) + self.random.uniform(0, self.plan.interval))
        spread = self.plan.interval * self.plan.jitter
        while time.time() < self.plan.end_at:
            await self.progress(reader, reader.tabs[0], time.time())
            await asyncio.sleep(self.random.uniform(self.plan.interval - spread, self.plan.interval + spread))

    async def keepalive(self, tab: Tab, heartbeat: float) -> None:
        """The protocol's ping every ``heartbeat`` seconds, from each tab on its own."""
        while not tab.closing:
            await asyncio.sleep(heartbeat)
            await self.send(tab, '{"type":"ping"}')
            self.stats.pings_sent += 1

    async def progress(self, reader: Reader, tab: Tab, now: float) -> None:
        reader.seq += 1
        position = (reader.seq * STRIDE % PRIME) / PRIME
        if self.plan.window[0] <= now < self.plan.window[1]:
            self.sends[(tab.reader_id, position)] = now
        await self.send(tab, json.dumps({"type": "progress", "room": tab.room, "position": position}))
        self.stats.progress_sent += 1

    async def send(self, tab: Tab, text: str) -> None:
        if tab.ws is not None and not tab.closing:
            with contextlib.suppress(ConnectionClosed):
                await tab.ws.send(text)

    def initial_done(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self.results is not None:
            self.results.put({"ready": self.plan.worker, "tabs": sum(self.online_tabs.values()), "at": time.time()})

    async def open_tab(self, tab: Tab, url: str) -> bool:
        async with self.handshakes:
            return await self._open_tab(tab, url)

    async def _open_tab(self, tab: Tab, url: str) -> bool:
        """Connect, read ``hello``, join the room, read ``room_state``; then receive in the background."""
        started = time.monotonic()
        try:
            tab.ws = await connect(
                f"{url}?session={tab.session}", origin=ORIGIN, compression=None, proxy=None,
                open_timeout=30, ping_interval=None, close_timeout=5, max_size=None,
            )
            self.stats.connect_ms.append((time.monotonic() - started) * 1000)
            if time.time() < self.plan.load_at:  # the ramp's connects: their rate
                self.stats.first_connect_at = self.stats.first_connect_at or time.time()
                self.stats.last_connect_at = time.time()
            hello = json.loads(await asyncio.wait_for(tab.ws.recv(), 30))
            tab.reader_id, tab.online, heartbeat = hello["reader"], hello["online"], hello["heartbeat"]
            self.stats.connects += 1
            self.online_tabs[tab.session] += 1
            await tab.ws.send(json.dumps({"type": "join", "room": tab.room}))
            while True:
                frame = json.loads(await asyncio.wait_for(tab.ws.recv(), 30))
                if frame["type"] == "online":
                    tab.online = frame["count"]
                elif frame["type"] == "room_state":
                    tab.count = frame["count"]
                    # Its marker in the room (protocol 1.1); the naive baseline sends none (1.0: hello's).
                    tab.reader_id = frame.get("you", tab.reader_id)
                    break
                elif frame["type"] == "error":
                    self.stats.error_frames[frame["code"]] += 1
                    return False
        except Exception as exc:  # a refused, reset or timed-out connection: the server's failure
            self.stats.connect_failures[type(exc).__name__] += 1
            if tab.ws is not None:
                self.release(tab)
                tab.closing = True
                with contextlib.suppress(Exception):
                    await tab.ws.close()
            return False
        tab.joined = True
        self.room_tabs[tab.room][tab.session] += 1
        if tab.observer:
            self.observers[tab.room] += 1
        tab.tasks = [asyncio.create_task(self.receive(tab)), asyncio.create_task(self.keepalive(tab, heartbeat))]
        return True

    async def receive(self, tab: Tab) -> None:
        stats = self.stats
        try:
            async for text in tab.ws:
                stats.frames += 1
                if tab.observer:
                    self.observe(tab, json.loads(text))
                elif text.startswith('{"type":"room",'):
                    stats.room_frames += 1
                elif text.startswith('{"type":"error"'):
                    stats.error_frames[json.loads(text)["code"]] += 1
        except ConnectionClosed:
            pass
        if not tab.closing:
            close = tab.ws.close_code
            stats.unexpected_closes[str(close)] += 1
            self.release(tab)
            tab.closing = True

    def observe(self, tab: Tab, frame: dict) -> None:
        kind = frame["type"]
        if kind == "room":
            self.stats.room_frames += 1
            tab.count = frame["count"]
            now = time.time()
            if self.plan.window[0] <= now <= self.plan.window[1] + 5:
                me = id(tab)
                for update in frame["updates"]:
                    if update["id"] != tab.reader_id:
                        self.seen.setdefault((me, update["id"], update["position"]), now)
        elif kind == "online":
            tab.online = frame["count"]
        elif kind == "error":
            self.stats.error_frames[frame["code"]] += 1

    def release(self, tab: Tab) -> None:
        """Take a tab out of the truth (it is closing, or closed under us)."""
        if tab.closing or tab.reader_id == "":
            return
        self.online_tabs[tab.session] -= 1
        if self.online_tabs[tab.session] <= 0:
            del self.online_tabs[tab.session]
        if tab.joined:
            room = self.room_tabs[tab.room]
            room[tab.session] -= 1
            if room[tab.session] <= 0:
                del room[tab.session]
            if tab.observer:
                self.observers[tab.room] -= 1

    async def close_reader(self, reader: Reader) -> None:
        if reader.task is not None:
            reader.task.cancel()
        for tab in reader.tabs:
            self.release(tab)
            tab.closing = True
            for task in tab.tasks[1:]:
                task.cancel()
        await asyncio.gather(*(close_quietly(tab.ws) for tab in reader.tabs if tab.ws is not None))

    # -- churn, samples, the whole run --------------------------------------------------
    async def churn(self) -> None:
        """Poisson departures, each replaced by a new reader at once (the population stays level)."""
        plan = self.plan
        if plan.churn <= 0:
            return
        await sleep_until(plan.load_at)
        while True:
            await asyncio.sleep(self.random.expovariate(plan.churn))
            if time.time() >= plan.end_at:
                return
            connected = [r for r in self.readers if r.connected]
            if connected:
                leaving = self.random.choice(connected)
                self.readers.remove(leaving)
                self.stats.departures += 1
                asyncio.create_task(self.close_reader(leaving))
            reader = self.new_reader(self.random.choice(plan.urls))
            for tab in reader.tabs:  # keep a few observers in every room
                tab.observer = self.observers[tab.room] < plan.observers_per_room
            self.stats.arrivals += 1
            self.readers.append(reader)
            reader.task = asyncio.create_task(self.run_reader(reader, 0))

    def sample(self, at: float) -> None:
        shown = [
            (tab.room, tab.online, tab.count)
            for reader in self.readers
            for tab in reader.tabs
            if tab.observer and tab.joined and not tab.closing
        ]
        self.samples.append({
            "at": round(at - self.plan.start, 1),
            "online": len(self.online_tabs),
            "rooms": {room: len(tabs) for room, tabs in self.room_tabs.items() if tabs},
            "shown": shown,
        })

    async def sampler(self) -> None:
        plan = self.plan
        at = plan.load_at + plan.sample_every
        while at < plan.end_at:
            await sleep_until(at)
            self.sample(at)
            at += plan.sample_every
        final = plan.end_at + plan.settle
        await sleep_until(final)
        self.sample(final)
        self.samples[-1]["final"] = True

    async def mark_window(self) -> None:
        """Counters at the idle point and at both ends of the steady window."""
        for name, at in (("idle", self.plan.idle_at), ("start", self.plan.window[0]), ("end", self.plan.window[1])):
            await sleep_until(at)
            self.window_counts[name] = {
                "tabs": sum(self.online_tabs.values()), "frames": self.stats.frames,
                "room_frames": self.stats.room_frames, "progress": self.stats.progress_sent,
                "cpu": time.process_time(),
            }

    async def run(self) -> dict:
        initial = self.initial_readers()
        self.pending = len(initial)
        for at, reader in initial:
            reader.task = asyncio.create_task(self.run_reader(reader, at, initial=True))
            self.readers.append(reader)
        if self.plan.hold:
            background = []
            await asyncio.to_thread(self.stop.wait)
            counts = {"tabs": sum(self.online_tabs.values()), "frames": self.stats.frames,
                      "room_frames": self.stats.room_frames, "progress": 0, "cpu": time.process_time()}
            self.window_counts = {"idle": counts, "start": counts, "end": counts}
            self.sample(time.time())
            self.samples[-1]["final"] = True
        else:
            background = [asyncio.create_task(self.churn()), asyncio.create_task(self.mark_window())]
            await self.sampler()
        for task in background:
            task.cancel()
        connected = sum(1 for r in self.readers for t in r.tabs if t.joined and not t.closing)
        await asyncio.gather(*(self.close_reader(r) for r in self.readers))
        return self.result(connected)

    def result(self, connected: int) -> dict:
        s = self.stats
        return {
            "worker": self.plan.worker,
            "connected_at_end": connected,
            "connects": s.connects,
            "connect_failures": dict(s.connect_failures),
            "connect_ms": s.connect_ms,
            "error_frames": dict(s.error_frames),
            "unexpected_closes": dict(s.unexpected_closes),
            "frames": s.frames,
            "progress_sent": s.progress_sent,
            "ramp_connects": (s.first_connect_at, s.last_connect_at),
            "arrivals": s.arrivals,
            "departures": s.departures,
            "window": self.window_counts,
            "sends": self.sends,
            "seen": [(rid, pos, at) for (_obs, rid, pos), at in self.seen.items()],
            "samples": self.samples,
            "cpu_seconds": time.process_time(),
        }


async def sleep_until(at: float) -> None:
    delay = at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def close_quietly(ws) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), 5)


def raise_open_files_limit() -> None:
    """Each tab is a socket: lift the soft limit on open files to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_main(plan: Plan, results, stop) -> None:
    """Entry point of a worker process: run the plan, put the result on the ``results`` queue
    (after a ``ready`` message once its first readers are connected)."""
    if plan.cpus:
        os.sched_setaffinity(0, plan.cpus)
    raise_open_files_limit()
    try:
        results.put(asyncio.run(Worker(plan, results, stop).run()))
    except BaseException as exc:
        results.put({"worker": plan.worker, "crashed": repr(exc)})
        raise
