"""The servers under test: configurations, a database with enough articles, processes, ``/proc`` readings.

Each configuration names an ASGI application and a settings module, so the naive baseline
(``bench/baselines/naive``) or another server is one more entry in ``CONFIGS``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import ROOT, VENV_BIN, ServerProcess

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Twisted's default listen backlog is 50: a burst of connects then waits for SYN retries
# (1 s, 3 s), which shows up as connect-time outliers that are the kernel's, not the app's.
BACKLOG = 4096
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOGS = ROOT / "bench" / "results" / "logs"  # server output of runs that logged errors


@dataclass(frozen=True)
class Config:
    """One server configuration: what runs, how many processes, on which store."""

    name: str
    description: str
    application: str = "presence_site.asgi:application"
    settings: str = "bench.settings"
    server: str = "daphne"  # or "uvicorn"
    processes: int = 1
    redis: bool = False  # REDIS_URL set: Redis store and channel layer
    server_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    api: bool = True  # serves the app's /api/presence/online/ (the naive baseline does not count there)


CONFIGS = {
    config.name: config
    for config in (
        Config("memory", "1 Daphne process, in-memory store and channel layer"),
        Config("redis-1", "1 Daphne process, Redis store and channel layer", redis=True),  # the soak's
        Config("redis-2", "2 Daphne processes, Redis store and channel layer", processes=2, redis=True),
        Config(
            "uvicorn",
            "1 uvicorn process (websockets, no compression), in-memory store",
            server="uvicorn",
            server_args=("--ws", "websockets", "--ws-per-message-deflate", "false"),
        ),
        Config(
            "uvicorn-wsproto",
            "1 uvicorn process (wsproto), in-memory store",
            server="uvicorn",
            server_args=("--ws", "wsproto"),
        ),
        Config(
            "naive",
            "naive baseline (bench/baselines/naive), 1 Daphne process, Redis registry, in-memory layer",
            application="bench.baselines.naive.asgi:application",
            settings="bench.naive_settings",
            api=False,
        ),
    )
}


def base_env(settings: str, database_url: str, prefix: str, redis_url: str | None) -> dict[str, str]:
    """A production-like environment (DEBUG off, no access log) on keys of this run only."""
    env = dict(os.environ)
    for name in ("REDIS_URL", "CHANNEL_REDIS_URLS", "REDIS_CLUSTER"):  # only what the configuration says
        env.pop(name, None)
    env.update(
        DJANGO_SETTINGS_MODULE=settings,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        DATABASE_URL=database_url,
        DEBUG="0",
        SECRET_KEY="bench-only-" + "x" * 40,
        SECURE_SSL_REDIRECT="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        BENCH_PREFIX=prefix,
        NAIVE_PREFIX=prefix,
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def prepare_database(directory: Path, articles: int) -> tuple[str, list[int]]:
    """Migrate a fresh SQLite database and add articles up to ``articles``; its URL and article pks."""
    path = Path(directory) / "bench.sqlite3"
    url = f"sqlite:///{path}"
    seed_database(url, articles)
    with contextlib.closing(sqlite3.connect(path)) as db:
        pks = [row[0] for row in db.execute("SELECT id FROM blog_article ORDER BY id")]
    return url, pks[:articles]


def seed_database(url: str, articles: int) -> None:
    """Migrate the database at ``url`` (any backend) and add articles up to ``articles``."""
    env = base_env("bench.settings", url, "presence-bench-migrate", None)
    manage = [sys.executable, "manage.py"]
    quiet = dict(cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], timeout=300, **quiet)
    script = (
        "from blog.models import Article\n"
        f"missing = {articles} - Article.objects.count()\n"
        "Article.objects.bulk_create(Article(title=f'Bench article {i}', slug=f'bench-article-{i}',"
        " body='Benchmark article.') for i in range(max(missing, 0)))\n"
    )
    subprocess.run([*manage, "shell", "-v", "0", "-c", script], timeout=120, **quiet)


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``, fields 14 and 15), or of
    one of its threads (``/proc/<pid>/task/<thread>/stat``; the main thread's id is the pid)."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pin(cpus: set[int] | None) -> None:
    """Pin this process to ``cpus`` (no-op when None)."""
    if cpus:
        os.sched_setaffinity(0, cpus)


class BenchServer(ServerProcess):
    """One server process of a configuration, optionally pinned to ``cpus``."""

    stop_timeout = 10.0  # a server with thousands of sockets takes a while to close them

    def __init__(self, config: Config, env: dict[str, str], cpus: set[int] | None, index: int = 0):
        super().__init__(env, f"bench-{config.name}-{index}", start_timeout=30.0)
        self.config = config
        self.cpus = cpus
        if cpus:
            self.preexec_fn = self._pin

    def command(self) -> list[str]:
        if self.config.server == "uvicorn":
            return [
                sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port),
                "--backlog", str(BACKLOG), "--lifespan", "on", "--log-level", "warning", "--no-access-log",
                *self.config.server_args, self.config.application,
            ]
        return [
            str(VENV_BIN / "daphne"), "-e", f"tcp:port={self.port}:interface=127.0.0.1:backlog={BACKLOG}",
            "-v", "1", "--access-log", os.devnull, *self.config.server_args, self.config.application,
        ]

    def _pin(self) -> None:
        os.sched_setaffinity(0, self.cpus)  # in the child, before exec: every thread inherits it

    def ready(self) -> bool:
        """Once it answers a whole HTTP request (a bare TCP probe would leave Daphne a
        connection without an application, which upsets its SIGTERM handling)."""
        try:
            with urllib.request.urlopen(self.http_url + "/api/presence/online/", timeout=2) as response:
                response.read()
        except OSError:
            return False
        return True


class Servers:
    """The processes of one configuration, as a context manager; Redis keys of the run removed on exit."""

    def __init__(self, config: Config, database_url: str, prefix: str, redis_url: str, cpus: set[int] | None):
        self.config = config
        self.prefix = prefix
        self.redis_url = redis_url
        env = base_env(config.settings, database_url, prefix, redis_url if config.redis else None)
        env.update(config.env)
        self.processes = [BenchServer(config, env, cpus, i) for i in range(config.processes)]

    def __enter__(self) -> Servers:
        try:
            for process in self.processes:
                process.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for process in self.processes:
            process.stop()
        if self.errors_logged():  # keep the evidence
            LOGS.mkdir(parents=True, exist_ok=True)
            for process in self.processes:
                (LOGS / f"{self.prefix}-{process.port}.log").write_text(process.output)
        for process in self.processes:
            process.close()
        delete_keys(self.redis_url, self.prefix)

    @property
    def ws_urls(self) -> list[str]:
        return [p.url for p in self.processes]

    @property
    def http_url(self) -> str:
        return self.processes[0].http_url

    def alive(self) -> bool:
        return all(p.running for p in self.processes)

    def cpu_seconds(self, main_thread: bool = False) -> float:
        """CPU seconds so far of the processes, or of their main threads (the event loops) alone."""
        return sum(cpu_seconds(p.proc.pid, p.proc.pid if main_thread else None) for p in self.processes)

    def rss_kib(self) -> int:
        return sum(rss_kib(p.proc.pid) for p in self.processes)

    def layer_counts(self) -> dict[str, int] | None:
        """Channel-layer messages sent and received so far, summed over the processes (None: not
        counted, ``BENCH_COUNT_LAYER`` unset)."""
        if not self.config.env.get("BENCH_COUNT_LAYER"):
            return None
        total = {"sent": 0, "received": 0}
        for process in self.processes:
            with urllib.request.urlopen(process.http_url + "/bench/layer/", timeout=10) as response:
                for key, value in json.load(response).items():
                    total[key] += value
        return total

    def errors_logged(self) -> list[str]:
        """Errors and tracebacks in the servers' output (a crash shows here, not only as closes)."""
        lines = []
        for process in self.processes:
            lines += [line for line in process.output.splitlines() if line.startswith("Traceback") or " ERROR " in line]
        return lines


def delete_keys(redis_url: str, prefix: str) -> None:
    """Remove this run's keys (``<prefix>*``) only; the Redis may be shared, so never a flush."""
    import redis

    with contextlib.suppress(Exception), contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        batch = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)


def api_latency(http_url: str, requests: int = 20) -> dict[str, float] | None:
    """Median and worst time (ms) to serve ``GET /api/presence/online/``, sequential requests."""
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(http_url + "/api/presence/online/", timeout=10) as response:
                response.read()
        except OSError:
            return None
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": round(times[len(times) // 2], 2), "max_ms": round(times[-1], 2)}
