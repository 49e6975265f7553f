"""The benchmark's delivery section, its third part: how soon an ``online`` change shows on every process.

The first two parts (a move in a quiet room, the same at 200 readers) are ordinary runs of
``run.py``'s timeline; this one is a short routine of its own against the two processes of
the ``redis-2`` configuration. A *watcher* tab on each process; then, ``trials`` times, a tab
opens or closes (open, close, in turn; the pairs on one process, then the other) and the
trial lasts from just before the ``connect``/``close`` call until the slower watcher shows the
new ``online`` count. A connection gets at most one ``online`` frame per
``PRESENCE_ONLINE_INTERVAL``, so each change starts that interval (plus a margin and a random
wait of up to half a second) after the watchers' last ``online`` frame: the interval bounds
how often, not how soon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import time
from collections import Counter

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench import loadgen
from bench.servers import Config, Servers

# PRESENCE_ONLINE_INTERVAL, the protocol's one `online` frame per second per connection
# (bench/settings.py keeps the default).
ONLINE_INTERVAL = 1.0
MARGIN = 0.05  # after the interval: the server's clock and ours are read at different moments
# And a random extra wait, up to this: a server that reads the count on a fixed period (say
# every quarter second) would otherwise read every change at the same phase of that period
# (against a 0.25 s period, 50 changes all took 0.21 s), where real changes come at any moment.
SPREAD = 0.5
TIMEOUT = 5.0  # a change not shown by then is a miss


class Tab:
    """One connection that reads every frame as it comes and remembers when it saw each ``online`` count."""

    def __init__(self, ws, name: str):
        self.ws = ws
        self.name = name
        self.online: int | None = None
        self.shown: list[tuple[float, int]] = []  # (time.monotonic(), count) of hello and every `online` frame
        self.frames = 0
        self.errors: Counter = Counter()
        self.closing = False
        self.closed_unexpectedly: str | None = None
        self.changed = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    @classmethod
    async def open(cls, url: str, session: str) -> Tab:
        """Connect as the load generator does (Origin, session query), read ``hello``, then receive
        in the background and ping at the server's heartbeat."""
        ws = await connect(
            f"{url}?session={session}", origin=loadgen.ORIGIN, compression=None, proxy=None,
            open_timeout=10, ping_interval=None, close_timeout=5, max_size=None,
        )
        tab = cls(ws, session)
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        tab.see(hello)
        tab.tasks = [asyncio.create_task(tab.receive()), asyncio.create_task(tab.keepalive(hello["heartbeat"]))]
        return tab

    def see(self, frame: dict) -> None:
        self.frames += 1
        kind = frame.get("type")
        if kind in ("hello", "online"):
            self.online = frame["online"] if kind == "hello" else frame["count"]
            self.shown.append((time.monotonic(), self.online))
        elif kind == "error":
            self.errors[frame.get("code", "?")] += 1
        self.changed.set()

    async def receive(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for text in self.ws:
                self.see(json.loads(text))
        if not self.closing:
            self.closed_unexpectedly = str(self.ws.close_code)
        self.changed.set()

    async def keepalive(self, heartbeat: float) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(heartbeat)
                await self.ws.send('{"type":"ping"}')

    async def wait_for(self, count: int, deadline: float) -> None:
        """Until this tab shows ``count`` (``TimeoutError`` at ``deadline``, monotonic)."""
        while self.online != count:
            if self.closed_unexpectedly is not None:
                raise ConnectionError(f"{self.name} closed ({self.closed_unexpectedly})")
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))

    def shown_at(self, count: int, after: float) -> float:
        """When this tab first showed ``count`` after ``after``."""
        return next(at for at, shown in self.shown if at >= after and shown == count)

    async def close(self) -> None:
        self.closing = True
        self.tasks[-1].cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        self.tasks[0].cancel()


def nearest_rank(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile by nearest rank (p99 of 50 values is the largest)."""
    if not values:
        return None
    values = sorted(values)
    return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


async def online_trials(urls: list[str], trials: int = 50, interval: float = ONLINE_INTERVAL,
                        miss_after: float = TIMEOUT, tick: float = 1.0, seed: int = 1) -> dict:
    """A watcher on each of ``urls``; ``trials`` changes of the site-wide count, each timed until
    every watcher shows it. Misses (not shown within ``miss_after`` seconds) count as slower than any trial."""
    spread = random.Random(seed)
    tag = f"{random.getrandbits(32):08x}"
    watchers: list[Tab] = []
    opened: list[Tab] = []
    latencies: list[float] = []
    misses: list[dict] = []
    errors: Counter = Counter()
    try:
        for i, url in enumerate(urls):
            watchers.append(await Tab.open(url, f"bench-watch-{i}-{tag}"))
        base = len(watchers)
        await asyncio.gather(*(w.wait_for(base, time.monotonic() + 10) for w in watchers))
        started = time.monotonic()
        frames_at_start = sum(w.frames for w in watchers)
        for trial in range(trials):
            if any(w.closed_unexpectedly is not None for w in watchers):  # the rest would all be misses
                misses += [{"trial": t, "why": "a watcher's connection closed"} for t in range(trial, trials)]
                break
            opening = trial % 2 == 0
            process = (trial // 2) % len(urls)
            last = max(w.shown[-1][0] for w in watchers)
            await asyncio.sleep(max(0.0, last + interval + MARGIN + spread.uniform(0, SPREAD) - time.monotonic()))
            begin = time.monotonic()
            try:
                if opening:
                    opened.append(await Tab.open(urls[process], f"bench-tab-{trial}-{tag}"))
                else:
                    await opened.pop().close()
            except Exception as exc:  # a refused or failed handshake: the server's failure
                errors[f"change failed: {type(exc).__name__}"] += 1
                misses.append({"trial": trial, "why": repr(exc)[:200]})
                continue
            expected = base + len(opened)
            try:
                await asyncio.gather(*(w.wait_for(expected, begin + miss_after) for w in watchers))
            except (TimeoutError, ConnectionError) as exc:
                misses.append({"trial": trial, "expected": expected, "shown": [w.online for w in watchers],
                               "why": repr(exc)[:200]})
                continue
            latencies.append(max(w.shown_at(expected, begin) for w in watchers) - begin)
        elapsed = time.monotonic() - started
        frames = sum(w.frames for w in watchers) - frames_at_start
        for tab in watchers + opened:
            errors.update({f"error frame {code}": n for code, n in tab.errors.items()})
            if tab.closed_unexpectedly is not None:
                errors[f"closed {tab.closed_unexpectedly}"] += 1
    finally:
        await asyncio.gather(*(tab.close() for tab in watchers + opened), return_exceptions=True)
    ranked = latencies + [math.inf] * len(misses)
    shown = lambda q: None if nearest_rank(ranked, q) in (None, math.inf) else round(nearest_rank(ranked, q), 4)  # noqa: E731
    return {
        "trials": trials,
        "interval_s": interval,
        "latencies_s": [round(x, 4) for x in latencies],
        "misses": misses,
        "latency_s": {"n": len(latencies), "p50": shown(50), "p95": shown(95), "p99": shown(99),
                      "max": round(max(latencies), 4) if latencies and not misses else None},
        # `online` (and pong) frames per watcher per tick over the trials: at most one `online` per interval.
        "frames_per_conn_tick": round(frames / elapsed * tick / len(urls), 3) if elapsed > 0 else None,
        "errors": dict(errors),
        "elapsed_s": round(elapsed, 1),
    }


def run_online(config: Config, args, db_url: str, label: str, trials: int) -> dict:
    """Start ``config``'s servers (two processes on Redis), run the trials against them, stop them."""
    prefix = f"bench-{os.getpid()}-{label}"
    with Servers(config, db_url, prefix, args.redis_url, args.server_cpus) as group:
        result = asyncio.run(online_trials(group.ws_urls, trials, tick=args.tick, seed=args.seed))
        logged, alive, processes = group.errors_logged(), group.alive(), len(group.processes)
    result.update(config=config.name, label=label, processes=processes, server_log=logged[:20],
                  server_died=not alive)
    result["error_count"] = (sum(result["errors"].values()) + len(result["misses"]) + len(logged)
                             + (not alive))
    return result
