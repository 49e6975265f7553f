"""The soak: one server held at half its capacity, with churn, for an hour; whatever grows shows as a slope.

    python -m bench.soak                       # 60 minutes, 750 readers on redis-1 (make soak)
    python -m bench.soak --minutes 3 --every 40 --warmup-minutes 0.5 --readers 200 --no-report

The bench's machinery runs it (``bench/servers.py``, ``bench/loadgen.py``, the workload of
``bench/run.py``); the load generator's timeline is one long load phase. Every ``--every``
seconds the server's RSS and CPU, the run's Redis keys and the reading sessions in the database
are read. After a warm-up, each series gets a least-squares slope, judged against the rule in
``docs/benchmarks.md`` ("Soak"). Results: ``bench/results/soak-<time>.json`` and a section
appended to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import multiprocessing
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import loadgen, servers
from bench.run import (
    REPORT,
    RESULTS,
    churn_rate,
    collect,
    fmt,
    loadgen_sleep,
    log,
    machine,
    parse_cpus,
    redis_reachable,
    summarize,
    wait_ready,
    zipf_weights,
)
from bench.servers import CONFIGS, Servers

# The verdict: a series is flat when its fitted drift over 10 minutes is within this share of its
# mean. Levels (memory, keys, open sessions) must hold still; per-minute rates are counts of
# random arrivals (about 450 a minute at 750 readers: ±5% from minute to minute), so they get more.
LEVEL_TOLERANCE = 0.005
RATE_TOLERANCE = 0.02
PER_MINUTES = 10.0

# name -> (what the table calls it, how it is judged, which clock it is read on): "level" and
# "rate" against their tolerance, "growth" only reported (the history is never pruned here:
# PRESENCE_HISTORY_DAYS None). The database is read just after a checkpoint (``db_t_min``).
SERIES = {
    "rss_kib": ("server RSS (KiB)", "level", "t_min"),
    "redis_keys": ("Redis keys", "level", "t_min"),
    "store_bytes": ("Redis store memory (bytes)", "level", "t_min"),
    "open_sessions": ("open reading sessions", "level", "db_t_min"),
    "stale_sessions": ("stale open sessions (drift: of the open ones)", "level", "db_t_min"),
    "rows": ("reading session rows", "growth", "db_t_min"),
    "rows_per_min": ("rows written / min", "rate", "db_t_min"),
    "cpu_util": ("server CPU (share of a core)", "rate", "t_min"),
    "loop_cpu_util": ("of which the event loop's thread", "rate", "t_min"),
    "generator_cpu_util": ("load generator CPU (the control: its work per minute is fixed)", "rate", "t_min"),
    "cpu_per_generator_cpu": ("server CPU per load generator CPU", "rate", "t_min"),
}
# The series each rate is the change of, scaled.
RATES = {"rows_per_min": ("rows", 1.0), "cpu_util": ("cpu_s", 1 / 60), "loop_cpu_util": ("loop_cpu_s", 1 / 60),
         "generator_cpu_util": ("generator_cpu_s", 1 / 60)}
# The series each ratio is of: the server's CPU against the generator's, minute by minute. The
# machine (a VM) does not give a CPU second the same work all hour; what slows both is the machine's.
RATIOS = {"cpu_per_generator_cpu": ("cpu_s", "generator_cpu_s")}
CHECKPOINT_WAIT = 35.0  # seconds to wait for the next checkpoint (PRESENCE_CHECKPOINT_SECONDS: 30)
PROFILE_RATE = 100  # py-spy samples per second
IDLE_LEAVES = ("select (selectors.py", "EpollSelector.select (selectors.py", "poll (", "wait (threading.py")
FRAMEWORK_FRAMES = ("asyncio/", "selectors.py", "threading.py", "concurrent/futures/", "<frozen ", "runpy",
                    "daphne/cli.py", "daphne/server.py", "asyncioreactor.py", "(daphne)", "click/core.py",
                    "uvicorn/__main__.py", "uvicorn/main.py", "uvicorn/server.py", "uvicorn/_compat.py")


# -- the slopes (pure) ------------------------------------------------------------------------


def fit(times: list[float], values: list[float]) -> tuple[float | None, float | None]:
    """Least-squares slope of ``values`` over ``times`` and its standard error (None below 2 and 3 points)."""
    n = len(times)
    if n < 2:
        return None, None
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    sxx = sum((t - mean_t) ** 2 for t in times)
    if sxx == 0:
        return None, None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / sxx
    if n < 3:
        return slope, None
    residuals = sum((v - mean_v - slope * (t - mean_t)) ** 2 for t, v in zip(times, values, strict=True))
    return slope, math.sqrt(residuals / (n - 2) / sxx)


def per_minute(times: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    """The change per minute between consecutive samples, placed at each interval's middle."""
    middles, rates = [], []
    for t0, v0, t1, v1 in zip(times, values, times[1:], values[1:], strict=False):
        if t1 > t0:
            middles.append((t0 + t1) / 2)
            rates.append((v1 - v0) / (t1 - t0))
    return middles, rates


def trend(times: list[float], values: list[float], kind: str, scale: float | None = None) -> dict:
    """Slope per minute, its standard error, the drift per ``PER_MINUTES`` as a share of ``scale``
    (the series' own mean unless given) and the verdict."""
    slope, stderr = fit(times, values)
    mean = statistics.fmean(values) if values else None
    scale = mean if scale is None else scale
    drift = slope * PER_MINUTES / abs(scale) if slope is not None and scale else None
    tolerance = {"level": LEVEL_TOLERANCE, "rate": RATE_TOLERANCE}.get(kind)
    flat = None
    if tolerance is not None and slope is not None and len(values) >= 3:
        flat = abs(drift) <= tolerance if drift is not None else slope == 0
    return {"kind": kind, "n": len(values), "mean": mean, "slope_per_min": slope, "stderr": stderr,
            "drift_per_10_min": drift, "tolerance": tolerance, "flat": flat}


def trends(samples: list[dict], warmup_minutes: float) -> dict[str, dict]:
    """Every series of ``SERIES`` over the samples from ``warmup_minutes`` on (a rate: the
    intervals between them); samples missing a reading are left out of that series."""
    def points(clock: str, *keys: str) -> tuple[list[float], ...]:
        """The samples' times on ``clock`` and their readings of each key, where all are present."""
        kept = [s for s in samples if s.get(clock) is not None and s[clock] >= warmup_minutes
                and all(s.get(key) is not None for key in keys)]
        return [s[clock] for s in kept], *([s[key] for s in kept] for key in keys)

    result: dict[str, dict] = {}
    for name, (_, kind, clock) in SERIES.items():
        if name in RATES:
            source, factor = RATES[name]
            times, changes = per_minute(*points(clock, source))
            values = [change * factor for change in changes]
        elif name in RATIOS:
            at, tops, bottoms = points(clock, *RATIOS[name])
            times, tops = per_minute(at, tops)
            _, bottoms = per_minute(at, bottoms)
            ratios = [(t, a / b) for t, a, b in zip(times, tops, bottoms, strict=True) if b > 0]
            times, values = [t for t, _ in ratios], [v for _, v in ratios]
        else:
            times, values = points(clock, name)
        # Stale sessions are judged against the open ones: their own mean is about zero.
        scale = result["open_sessions"]["mean"] if name == "stale_sessions" else None
        result[name] = trend(times, values, kind, scale)
    return result


# -- readings ---------------------------------------------------------------------------------


class SessionRows:
    """Counts of ``presence.models.ReadingSession`` read straight from the database (no Django
    in this process): a new connection per reading, so no snapshot is held between samples."""

    def __init__(self, url: str):
        import dj_database_url

        self.db = dj_database_url.parse(url)
        self.sqlite = self.db["ENGINE"].endswith("sqlite3")

    def connect(self):
        if self.sqlite:
            return sqlite3.connect(f"file:{self.db['NAME']}?mode=ro", uri=True, timeout=10)
        import psycopg

        return psycopg.connect(
            dbname=self.db["NAME"], user=self.db.get("USER") or None, password=self.db.get("PASSWORD") or None,
            host=self.db.get("HOST") or None, port=self.db.get("PORT") or None, connect_timeout=5, autocommit=True,
        )

    def query(self, sql: str) -> list[tuple]:
        with contextlib.closing(self.connect()) as db:
            cursor = db.cursor()
            cursor.execute(sql)
            return cursor.fetchall()

    def newest_checkpoint(self):
        """When the newest checkpoint was written (any process): it changes once a checkpoint lands."""
        return self.query("SELECT MAX(checkpoint_at) FROM presence_readingsession WHERE end_reason = ''")[0][0]

    def counts(self) -> tuple[int, int, int]:
        """Open sessions (``end_reason`` empty: ``EndReason.OPEN``), the stale ones among them and all rows.

        A checkpoint rewrites every open session of its process (one transaction, one
        ``checkpoint_at``), so an open row older than its process's newest checkpoint is one the
        server no longer holds: left open for ``presence_prune``, a leak if it stays."""
        [(open_sessions, rows)] = self.query(
            "SELECT COALESCE(SUM(CASE WHEN end_reason = '' THEN 1 ELSE 0 END), 0), COUNT(*)"
            " FROM presence_readingsession"
        )
        [(stale,)] = self.query(
            "SELECT COUNT(*) FROM presence_readingsession s JOIN (SELECT process, MAX(checkpoint_at) AS newest"
            " FROM presence_readingsession WHERE end_reason = '' GROUP BY process) n ON s.process = n.process"
            " WHERE s.end_reason = '' AND s.checkpoint_at < n.newest"
        )
        return int(open_sessions), int(stale), int(rows)

    def article_pks(self, articles: int) -> list[int]:
        return [row[0] for row in self.query("SELECT id FROM blog_article ORDER BY id")][:articles]


def redis_keys(client, prefix: str) -> tuple[dict[str, int], dict[str, int]]:
    """The run's keys by owner: the channel layer's (``<prefix>-layer``), the cache's
    (``<prefix>-cache``) and the presence store's (the rest; bench/settings.py); and the bytes of
    each store key (``MEMORY USAGE``): a structure that grows shows here before in the key count."""
    counts = {"store": 0, "layer": 0, "cache": 0}
    store: list[str] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        key = key.decode()
        owner = "store"
        if key.startswith(f"{prefix}-layer"):
            owner = "layer"
        elif key.startswith(f"{prefix}-cache"):
            owner = "cache"
        else:
            store.append(key)
        counts[owner] += 1
    with client.pipeline(transaction=False) as pipe:
        for key in store:
            pipe.memory_usage(key, samples=0)
        sizes = pipe.execute()
    return counts, {key: size for key, size in zip(store, sizes, strict=True) if size is not None}


def largest(sizes: dict[str, int], prefix: str, n: int = 5) -> dict[str, int]:
    """The ``n`` largest keys, their names without the run's prefix."""
    top = sorted(sizes.items(), key=lambda item: item[1], reverse=True)[:n]
    return {key.removeprefix(prefix): size for key, size in top}


# -- profiles ---------------------------------------------------------------------------------


def profile_command(pid: int, seconds: float, path: Path) -> list[str]:
    """py-spy sampling a server for ``seconds``, every thread apart, idle stacks left out, without
    pausing it (the samples' cost stays off the server's CPU), as collapsed stacks."""
    return [str(servers.VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(round(seconds)),
            "--rate", str(PROFILE_RATE), "--threads", "--nonblocking", "--format", "raw", "--output", str(path)]


def profile_summary(collapsed: str, seconds: float, top: int = 15) -> dict:
    """What a collapsed-stacks profile says: each thread's busy share of a core (samples over
    ``seconds`` at ``PROFILE_RATE``), and the functions holding the most samples, inclusive."""
    threads: dict[str, int] = {}
    functions: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        # Without pausing the process py-spy cannot always tell a thread waiting in a poll: those are idle.
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        thread = frames[0] if frames[0].startswith("thread ") else "?"
        threads[thread] = threads.get(thread, 0) + n
        total += n
        # A function once per stack (recursion counts once), line numbers dropped, the event
        # loop's and the thread pool's own frames (under every stack) left out.
        names = {frame.split(":", 1)[0] + ")" if ":" in frame else frame for frame in frames[1:]}
        for name in names:
            if not any(part in name for part in FRAMEWORK_FRAMES):
                functions[name] = functions.get(name, 0) + n
    per_core = seconds * PROFILE_RATE
    heaviest = sorted(functions.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {
        "samples": total,
        "busy_per_thread": {name: round(n / per_core, 4)
                            for name, n in sorted(threads.items(), key=lambda item: -item[1])},
        "inclusive": {name: round(n / total, 4) for name, n in heaviest},
    }


# -- the run ----------------------------------------------------------------------------------


class Soak:
    """One soak: its samples and notes stay here, so an interrupted run still reports what it read."""

    def __init__(self, args, db_url: str, pks: list[int], rows: SessionRows):
        self.args = args
        self.config = CONFIGS[args.config]
        self.db_url = db_url
        self.rooms = [f"article:{pk}" for pk in pks]
        self.rows = rows
        self.prefix = f"soak-{os.getpid()}-{int(time.time())}"
        self.workers = args.clients or len(args.client_cpus)
        self.samples: list[dict] = []
        self.notes: list[str] = []
        self.loadgen: dict | None = None
        self.profiles: list[dict] = []  # py-spy's records of the server, at --profile-at minutes
        self._profiling: list[tuple[dict, subprocess.Popen]] = []
        self.generators: list = []  # the load generator's processes, whose CPU is the control
        self.before = rows.counts()  # a --database-url may hold earlier runs' rows
        self.start = self.load_at = 0.0

    def run(self) -> None:
        args = self.args
        import redis

        with Servers(self.config, self.db_url, self.prefix, args.redis_url, args.server_cpus) as group, \
                contextlib.closing(redis.Redis.from_url(args.redis_url)) as client:
            # The bench's timeline (run.run_once) with one long load phase. It lasts until the last
            # sample's database reading (which waits for a checkpoint) is done; latency is measured
            # over its last seconds only: the generator keeps every update of its window in memory.
            self.start = start = time.time() + 2.0  # time for the worker processes to start
            idle_at = start + args.ramp + 1.5
            self.load_at = load_at = idle_at + 1.0
            times = [load_at + k * args.every for k in range(int(args.minutes * 60 / args.every + 1e-9) + 1)]
            if load_at + args.minutes * 60 - times[-1] > 1.0:
                times.append(load_at + args.minutes * 60)
            end_at = times[-1] + self.checkpoint_wait + 2.0
            window = (max(load_at, end_at - args.latency_seconds), end_at)
            plans = [
                loadgen.Plan(
                    worker=w, workers=self.workers, readers=args.readers, urls=group.ws_urls, rooms=self.rooms,
                    weights=zipf_weights(len(self.rooms), None), start=start, ramp=args.ramp, idle_at=idle_at,
                    load_at=load_at, window=window, end_at=end_at, settle=args.settle, interval=args.interval,
                    jitter=args.jitter, tabs=args.tabs, churn=churn_rate(args, args.readers) / self.workers,
                    observers_per_room=args.observers, sample_every=args.every, cpus=args.client_cpus,
                    seed=args.seed,
                )
                for w in range(self.workers)
            ]
            context = multiprocessing.get_context("spawn")
            queue, stop = context.Queue(), context.Event()  # stop: unused (no held run), but referenced till then
            processes = [context.Process(target=loadgen.worker_main, args=(plan, queue, stop), daemon=True)
                         for plan in plans]
            self.generators = processes
            try:
                for process in processes:
                    process.start()
                ready, results = wait_ready(queue, len(processes), load_at - 0.5)
                if ready < len(processes):
                    self.notes.append("The ramp was not complete when the load began.")
                for at in times:
                    loadgen_sleep(at)
                    self.profile(group, (at - load_at) / 60)
                    if not self.sample(group, client):  # the server died: no use waiting for the clients
                        return
                    if any(process.exitcode is not None for process in processes):  # an hour without load is no soak
                        raise RuntimeError(f"a load generator process ended before minute {(at - load_at) / 60:.1f}")
                self.finish_profiles(wait=True)
                errors = group.errors_logged()  # what the clients' closing adds is teardown, reported apart
                collect(queue, processes, results, end_at + args.settle + 120)
                self.loadgen = self.summary(results, group, errors, window, ready == len(processes))
            finally:
                for process in processes:
                    process.join(5 if process.is_alive() else 0)
                    if process.is_alive():
                        process.terminate()
                        process.join(5)

    def profile(self, group: Servers, minute: float) -> None:
        """Start py-spy on the server for each ``--profile-at`` minute that is due (it runs beside
        the samples); collect the records that are done."""
        self.finish_profiles(wait=False)
        if self.args.profile_at and not (servers.VENV_BIN / "py-spy").exists():
            self.notes.append("No profiles: py-spy is not installed (`.venv/bin/pip install py-spy`).")
            self.args.profile_at = []
        started = {p["at_minute"] for p in self.profiles} | {p["at_minute"] for p, _ in self._profiling}
        for due in self.args.profile_at:
            if due <= minute + 1e-6 and due not in started:
                path = RESULTS / f"{self.prefix}-min{due:g}.txt"
                RESULTS.mkdir(parents=True, exist_ok=True)
                command = profile_command(group.processes[0].proc.pid, self.args.profile_seconds, path)
                record = {"at_minute": due, "started_min": round(minute, 3),
                          "path": str(path.relative_to(servers.ROOT))}
                self._profiling.append((record, subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                                                 stderr=subprocess.PIPE, text=True)))

    def finish_profiles(self, wait: bool) -> None:
        for record, process in list(self._profiling):
            if wait:
                process.wait(self.args.profile_seconds + 60)
            if process.poll() is None:
                continue
            self._profiling.remove((record, process))
            path = servers.ROOT / record["path"]
            if process.returncode != 0 or not path.exists():
                self.notes.append(f"The profile at minute {record['at_minute']:g} failed: "
                                  f"{process.stderr.read().strip()[-300:]}")
                continue
            record.update(profile_summary(path.read_text(), self.args.profile_seconds))
            self.profiles.append(record)

    @property
    def checkpoint_wait(self) -> float:
        return min(CHECKPOINT_WAIT, self.args.every - 5)

    def sample(self, group: Servers, client) -> bool:
        """One sample: the server and Redis now, the database once the next checkpoint has landed
        (open sessions fall between checkpoints as readers leave: read at one phase, they compare).
        False when the server is gone."""
        sample = {"t_min": round((time.time() - self.load_at) / 60, 3), "alive": group.alive()}
        self.samples.append(sample)
        if not sample["alive"]:
            self.notes.append(f"The server died before minute {sample['t_min']:.1f}.")
            log(f"  {sample['t_min']:6.1f} min: the server is not running")
            return False
        sample.update(rss_kib=group.rss_kib(), cpu_s=round(group.cpu_seconds(), 2),
                      loop_cpu_s=round(group.cpu_seconds(main_thread=True), 2))
        with contextlib.suppress(OSError, ValueError):  # a generator gone: the control misses a sample
            sample["generator_cpu_s"] = round(sum(servers.cpu_seconds(p.pid) for p in self.generators), 2)
        try:
            keys, sizes = redis_keys(client, self.prefix)
        except Exception as exc:  # a Redis hiccup loses one reading, not the run
            self.notes.append(f"Minute {sample['t_min']:.1f}: Redis keys not read ({exc!r})."[:300])
        else:
            sample.update(redis_keys=sum(keys.values()), redis_keys_by_owner=keys, store_bytes=sum(sizes.values()),
                          largest_store_keys=largest(sizes, self.prefix))
        try:
            sample["db_aligned"] = self.wait_for_checkpoint()
            at = time.time()
            open_sessions, stale, rows = self.rows.counts()
        except Exception as exc:  # a database busy past the timeout, likewise
            self.notes.append(f"Minute {sample['t_min']:.1f}: database not read ({exc!r})."[:300])
        else:
            sample.update(db_t_min=round((at - self.load_at) / 60, 3), open_sessions=open_sessions - self.before[0],
                          stale_sessions=stale - self.before[1], rows=rows - self.before[2])
        sample["errors_logged"] = len(group.errors_logged())
        log(self.sample_line(sample))
        return True

    def wait_for_checkpoint(self) -> bool:
        """Until the newest checkpoint changes (True), or ``checkpoint_wait`` seconds (False)."""
        deadline = time.time() + self.checkpoint_wait
        newest = self.rows.newest_checkpoint()
        while time.time() < deadline:
            time.sleep(0.5)
            if self.rows.newest_checkpoint() != newest:
                return True
        return False

    @staticmethod
    def sample_line(s: dict) -> str:
        return (f"  {s['t_min']:6.1f} min: RSS {s['rss_kib'] / 1024:.1f} MiB, CPU {s['cpu_s']:.1f} s, "
                f"Redis keys {s.get('redis_keys', '–')}, open sessions {s.get('open_sessions', '–')} "
                f"({s.get('stale_sessions', '–')} stale, read at {s.get('db_t_min', '–')} min"
                f"{'' if s.get('db_aligned') else ', not after a checkpoint'}), rows {s.get('rows', '–')}, "
                f"errors logged {s['errors_logged']}")

    def summary(self, results: list[dict], group: Servers, errors: list[str], window: tuple[float, float],
                ready: bool) -> dict | None:
        """The bench's summary of the load generator's results (errors, latency over the last
        window, counts shown against the truth), without its server figures (the samples hold
        those); the generator's per-sample truth goes into the samples."""
        crashed = [r["crashed"] for r in results if "crashed" in r]
        if crashed:
            self.notes.append(f"A load generator process crashed: {crashed}"[:500])
            return None
        for sample in self.samples:  # the generator samples every --every s from the load's start, as we do
            at = self.load_at + sample["t_min"] * 60
            truth = [s for r in results for s in r["samples"]
                     if not s.get("final") and abs(s["at"] + self.start - at) < 2]
            if len(truth) == len(results):
                sample["loadgen_online"] = sum(s["online"] for s in truth)
                sample["loadgen_reader_rooms"] = sum(n for s in truth for n in s["rooms"].values())
        teardown = group.errors_logged()[len(errors):]
        summary = summarize(
            self.config, self.args.readers, results, label="soak", window=window, ramp=self.args.ramp,
            server={"cpu": 0.0, "rss_base": 0, "rss_idle": 0, "rss_end": 0, "alive": group.alive(),
                    "errors": errors[:20], "teardown_errors": teardown[:20], "api": None, "ready": ready},
            tick=1.0, workers=self.workers, client_cpus=len(self.args.client_cpus),
        )
        for key in ("server_cpu_s", "server_cpu_util", "cpu_ms_per_1k_progress", "cpu_ms_per_1k_frames",
                    "rss_kib", "rss_kib_per_conn", "api_online_ms"):
            del summary[key]
        return summary

    def report(self, started: str, elapsed: float) -> dict:
        args = self.args
        return {
            "started": started, "machine": machine(), "elapsed_s": round(elapsed),
            "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
            "config": self.config.name, "description": self.config.description, "prefix": self.prefix,
            "database": "a fresh SQLite file" if not args.database_url else self.rows.db["ENGINE"].rsplit(".", 1)[-1],
            "workers": self.workers, "churn_per_s": churn_rate(args, args.readers),
            "rows_before": dict(zip(("open_sessions", "stale_sessions", "rows"), self.before, strict=True)),
            "rule": {"level": LEVEL_TOLERANCE, "rate": RATE_TOLERANCE, "per_minutes": PER_MINUTES},
            "samples": self.samples, "trends": trends(self.samples, args.warmup_minutes),
            "loadgen": self.loadgen, "profiles": self.profiles, "notes": self.notes,
        }


# -- report -----------------------------------------------------------------------------------


def value(number: float | None, digits: int = 1) -> str:
    """A number for the table: thousands separated, ``digits`` decimals below 100."""
    if number is None:
        return "–"
    if abs(number) >= 100 or float(number).is_integer():
        return f"{number:,.0f}"
    return f"{number:,.{digits}f}"


def thinned(samples: list[dict], rows: int = 13) -> list[dict]:
    """At most about ``rows`` samples for the Markdown table, evenly spaced, the first and last kept."""
    step = max(1, math.ceil((len(samples) - 1) / (rows - 1))) if len(samples) > rows else 1
    kept = samples[::step]
    return kept if kept[-1] is samples[-1] else [*kept, samples[-1]]


def markdown(report: dict) -> str:
    m, a = report["machine"], report["args"]
    trend_of = report["trends"]
    samples = [s for s in report["samples"] if "rss_kib" in s]  # not those of a dead server
    shown = thinned(samples) if samples else []
    unaligned = sum(1 for s in samples if s.get("db_aligned") is False)
    lines = [
        "",
        f"### {report['started']} — soak, {a['minutes']:g} min, {a['readers']} readers on `{report['config']}`",
        "",
        f"Machine: {m['nproc']} × {m['cpu']}, load average at start {m['loadavg_at_start'][0]:.2f}; "
        f"Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        f"{report['description']}, pinned to CPUs {a['server_cpus']}; load generator ({report['workers']} "
        f"process{'es' if report['workers'] != 1 else ''}) on CPUs {a['client_cpus']}. {a['articles']} articles "
        f"(Zipf 1.0), {a['tabs']} tabs per reader, progress every {a['interval']} s ±{a['jitter']:.0%}, churn "
        f"{report['churn_per_s']:.1f} readers/s; database: {report['database']}. "
        f"A sample every {a['every']:g} s, the database read once the next checkpoint had landed"
        + (f" ({unaligned} of {len(samples)} samples after {min(CHECKPOINT_WAIT, a['every'] - 5):g} s without one)"
           if unaligned else "") + f"; slopes over the samples from minute {a['warmup_minutes']:g} on.",
        "",
        "| minute | RSS MiB | server CPU | generator CPU | Redis keys (store / layer / cache) | store KiB "
        "| open sessions (stale) | rows | rows / min | reader·rooms (generator) |",
        "|---" * 10 + "|",
    ]
    previous, shown_ids = None, {id(s) for s in shown}
    for s in samples:
        if id(s) in shown_ids:
            rate = cpu = generator = None
            if previous is not None and s["t_min"] > previous["t_min"]:
                seconds = (s["t_min"] - previous["t_min"]) * 60
                cpu = (s["cpu_s"] - previous["cpu_s"]) / seconds
                if s.get("generator_cpu_s") is not None and previous.get("generator_cpu_s") is not None:
                    generator = (s["generator_cpu_s"] - previous["generator_cpu_s"]) / seconds
                if s.get("rows") is not None and previous.get("rows") is not None \
                        and s["db_t_min"] > previous["db_t_min"]:
                    rate = (s["rows"] - previous["rows"]) / (s["db_t_min"] - previous["db_t_min"])
            owners = s.get("redis_keys_by_owner")
            keys = (f"{s['redis_keys']} ({owners['store']} / {owners['layer']} / {owners['cache']})"
                    if owners else "–")
            store = s.get("store_bytes")
            lines.append(
                f"| {s['t_min']:.1f} | {s['rss_kib'] / 1024:.1f} | {fmt(cpu, 0, True)} | {fmt(generator, 0, True)} "
                f"| {keys} "
                f"| {value(store / 1024 if store is not None else None)} "
                f"| {value(s.get('open_sessions'))} ({value(s.get('stale_sessions'))}) | {value(s.get('rows'))} "
                f"| {value(rate)} "
                f"| {value(s.get('loadgen_reader_rooms'))} |"
            )
        previous = s
    if len(shown) < len(samples):
        lines += ["", f"{len(shown)} of {len(samples)} samples shown (CPU and rows / min: since the sample "
                  "before each); all in the JSON."]
    lines += ["", "The load generator's work per minute is fixed (the same readers, moves and churn), so its CPU "
              "per minute is the machine's control: the server's CPU per generator CPU is what the server "
              "alone changed."]
    lines += [
        "",
        f"Slopes (least squares, per minute; drift: the fitted change over {PER_MINUTES:g} minutes as a share of "
        f"the mean; flat: drift within {LEVEL_TOLERANCE:.1%} for levels, {RATE_TOLERANCE:.0%} for per-minute rates):",
        "",
        "| series | samples | mean | slope / min | ± s.e. | drift / 10 min | verdict |",
        "|---" * 7 + "|",
    ]
    for name, (title, kind, _) in SERIES.items():
        t = trend_of[name]
        if kind == "growth":
            verdict = "grows by design (never pruned here); its rate is the next row"
        elif t["flat"] is None:
            verdict = "–"
        else:
            verdict = ("flat" if t["flat"] else "**not flat**") + f" (≤ {t['tolerance']:.1%})"
        digits = 3 if "cpu" in name else 1
        lines.append(
            f"| {title} | {t['n']} | {value(t['mean'], digits)} | {value(t['slope_per_min'], 3)} "
            f"| {value(t['stderr'], 3)} | {fmt(t['drift_per_10_min'] if kind != 'growth' else None, 2, True)} "
            f"| {verdict} |"
        )
    g = report["loadgen"]
    if g:
        latency = g["latency_s"]
        final = g["accuracy"]["final"]
        lines += [
            "",
            f"Load generator: {g['connects']} connects, {g['arrivals']} arrivals and {g['departures']} departures, "
            f"{g['error_count']} errors; latency over the last {a['latency_seconds']:g} s p50 / p99 "
            f"{fmt(latency['p50'], 3)} / {fmt(latency['p99'], 3)} s ({latency['n']} updates); after the settle "
            f"time {fmt(final.get('online_exact'), 0, True)} of observers showed the exact online count, "
            f"{fmt(final.get('rooms_exact'), 0, True)} the exact room count.",
        ]
    lines += profile_lines(report.get("profiles") or [], a["profile_seconds"])
    if report["notes"]:
        lines += [""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def profile_lines(profiles: list[dict], seconds: float) -> list[str]:
    """The profiles side by side: each thread's busy share of a core, then the functions holding
    the most samples (inclusive share of all threads' busy samples) in any of them."""
    if not profiles:
        return []
    header = " | ".join(f"minute {p['at_minute']:g}" for p in profiles)
    lines = ["", f"Profiles (py-spy, {seconds:g} s at {PROFILE_RATE} Hz, idle stacks left out, the process not "
             "paused): busy share of a core by thread, then inclusive shares of the busy samples.", "",
             f"| | {header} |", "|---" * (len(profiles) + 1) + "|"]
    threads = sorted({t for p in profiles for t in p["busy_per_thread"]},
                     key=lambda t: -max(p["busy_per_thread"].get(t, 0) for p in profiles))
    for thread in threads[:4]:
        lines.append(f"| {thread} | " + " | ".join(fmt(p["busy_per_thread"].get(thread), 1, True) for p in profiles)
                     + " |")
    names = sorted({n for p in profiles for n in p["inclusive"]},
                   key=lambda n: -max(p["inclusive"].get(n, 0) for p in profiles))
    for name in names[:15]:
        lines.append(f"| `{name}` | " + " | ".join(fmt(p["inclusive"].get(name), 1, True) for p in profiles) + " |")
    return lines


# -- command line -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=list(CONFIGS), default="redis-1", help="default: redis-1")
    parser.add_argument("--readers", type=int, default=750,
                        help="distinct readers held throughout (default: half of one process's ~1,500)")
    parser.add_argument("--minutes", type=float, default=60.0, help="minutes of load")
    parser.add_argument("--every", type=float, default=60.0,
                        help="seconds between samples (40 or more: the database is read after the next "
                        "checkpoint, waiting up to 35 s or every - 5 s)")
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="minutes left out of the slopes")
    parser.add_argument("--articles", type=int, default=50, help="articles (rooms), Zipf(1.0) popularity")
    parser.add_argument("--tabs", type=float, default=1.2, help="average tabs per reader")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a reader's progress frames")
    parser.add_argument("--jitter", type=float, default=0.2, help="± fraction of the interval")
    parser.add_argument("--churn", type=float, default=None, help="readers leaving (and arriving) per second")
    parser.add_argument("--churn-fraction", type=float, default=0.01, help="churn as a fraction of readers per second")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which the readers connect")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the load before the final count")
    parser.add_argument("--latency-seconds", type=float, default=60.0,
                        help="the load's last seconds whose latency is measured")
    parser.add_argument("--observers", type=int, default=4, help="observer tabs per room per load process")
    parser.add_argument("--clients", type=int, default=0, help="load generator processes (default: one per client CPU)")
    parser.add_argument("--server-cpus", default=None, help="CPUs for the server, e.g. 0 (default: first half)")
    parser.add_argument("--client-cpus", default=None, help="CPUs for the load generator (default: second half)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or servers.DEFAULT_REDIS_URL)
    parser.add_argument("--database-url", default=None,
                        help="the servers' database, migrated and seeded first (default: a fresh SQLite file)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile-at", default=None, metavar="MINUTES",
                        help="minutes at which to record the server with py-spy, e.g. 5,55 (default: the warm-up's "
                        "end and the run's last minute; '' for none)")
    parser.add_argument("--profile-seconds", type=float, default=30.0, help="seconds each profile lasts")
    parser.add_argument("--no-report", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.profile_at is None:
        last = args.minutes - max(1.0, args.profile_seconds / 60)
        args.profile_at = sorted({args.warmup_minutes, last}) if last > args.warmup_minutes else []
    else:
        args.profile_at = [float(m) for m in args.profile_at.split(",") if m.strip()]
    if args.every <= 5 or args.minutes * 60 < args.every:
        parser.error("--every must be over 5 s and at most the run's length")
    cpus = sorted(os.sched_getaffinity(0))
    half = max(1, len(cpus) // 2)
    args.server_cpus = parse_cpus(args.server_cpus) if args.server_cpus else set(cpus[:half])
    args.client_cpus = parse_cpus(args.client_cpus) if args.client_cpus else set(cpus[half:] or cpus)
    return args


def interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # a SIGTERM cleans up as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if CONFIGS[args.config].redis and not redis_reachable(args.redis_url):
        sys.exit(f"Redis unreachable at {args.redis_url}")
    signal.signal(signal.SIGTERM, interrupt)
    loadgen.raise_open_files_limit()
    servers.pin(args.client_cpus)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    clock = time.monotonic()
    log(f"soak: {args.minutes:g} min, {args.readers} readers on {args.config}, a sample every {args.every:g} s; "
        f"server CPUs {sorted(args.server_cpus)}, load generator CPUs {sorted(args.client_cpus)}")
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="presence-soak-") as directory:
        if args.database_url:
            servers.seed_database(args.database_url, args.articles)
            db_url, rows = args.database_url, SessionRows(args.database_url)
            pks = rows.article_pks(args.articles)
        else:
            db_url, pks = servers.prepare_database(Path(directory), args.articles)
            rows = SessionRows(db_url)
        soak = Soak(args, db_url, pks, rows)
        try:
            soak.run()
        except KeyboardInterrupt:
            interrupted = True
            soak.notes.append(f"Interrupted after {len(soak.samples)} samples: not appended to the report.")
            log("soak: interrupted; the servers are stopped and the run's Redis keys deleted")
        except Exception as exc:  # what was sampled is still worth its JSON
            soak.notes.append(f"The run failed: {exc!r}"[:500])
            log("  " + soak.notes[-1])
        finally:
            servers.delete_keys(args.redis_url, soak.prefix)  # again: a second Ctrl-C may have cut the first short
    report = soak.report(started, time.monotonic() - clock)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"soak-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    table = markdown(report)
    print(table)
    append = not (args.no_report or interrupted or not soak.samples)
    if append:
        with REPORT.open("a") as out:
            out.write(table)
    log(f"soak: {report['elapsed_s']} s; results in {path.relative_to(servers.ROOT)}"
        + (f", section appended to {REPORT.relative_to(servers.ROOT)}" if append else ""))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
