"""SIGTERM under load: how long one Daphne process with N open readers takes to exit, and whether
every reader's session is written (docs/reliability.md, section 2).

    python -m bench.shutdown --connections 4000 --store memory --db sqlite
    python -m bench.shutdown --connections 4000 --store redis --db postgres --py-spy dumps.txt

One Daphne process on a fresh, migrated database; N readers (each its own identity, spread over
``--articles`` articles) connect, join, send one progress and a ping (its pong says the progress
was handled); then SIGTERM. Measured: seconds from SIGTERM to exit, the exit code, whether the hub
cut its shutdown (``shutdown not done after``), and the sessions written with end_reason
``shutdown`` against N. ``--py-spy FILE`` appends ``py-spy dump`` of the process every second of
its shutdown, to see what it waits on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from websockets.asyncio.client import connect

from bench.servers import delete_keys
from tests.support.servers import ORIGIN, ROOT, VENV_BIN, DaphneServer, migrate_database, server_env

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES = "postgres://postgres@127.0.0.1:5432/"
CUT = "shutdown not done after"  # the hub's log line when twisted_shutdown.SHUTDOWN_SECONDS ran out

ARTICLES = """
from blog.models import Article
missing = {articles} - Article.objects.count()
Article.objects.bulk_create(Article(title=f'Shutdown article {{i}}', slug=f'shutdown-article-{{i}}',
                            body='Benchmark article.') for i in range(max(missing, 0)))
print(list(Article.objects.order_by('pk').values_list('pk', flat=True)[:{articles}]))
"""
SESSIONS = """
import json
from django.db.models import Count
from presence.models import ReadingSession
print(json.dumps(dict(ReadingSession.objects.values_list('end_reason').annotate(n=Count('pk')))))
"""


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextlib.contextmanager
def database(kind: str, directory: Path, redis_url: str):
    """A fresh migrated database (SQLite file, or a PostgreSQL database dropped afterwards): its URL."""
    if kind == "sqlite":
        yield migrate_database(directory, redis_url)[0]
        return
    name = f"presence_shutdown_{uuid.uuid4().hex[:8]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q", "-c"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True)
    try:
        url = POSTGRES + name
        manage(server_env(redis_url, url, "presence-shutdown-migrate"), "migrate", "--noinput", "-v", "0")
        yield url
    finally:
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)


async def reader(url: str, session: str, room: str, position: float, gate: asyncio.Semaphore,
                 ready: asyncio.Event, joined: list[int]) -> None:
    """Connect, join, send one progress; then read whatever comes until the server goes away."""
    async with gate:
        ws = await connect(f"{url}?session={session}", origin=ORIGIN, open_timeout=60, max_queue=None)
    async with ws:
        await ws.send(json.dumps({"type": "join", "room": room}))
        await ws.send(json.dumps({"type": "progress", "room": room, "position": position}))
        await ws.send(json.dumps({"type": "ping"}))
        async for text in ws:
            if '"pong"' in text and json.loads(text)["type"] == "pong":
                joined[0] += 1
                if joined[0] == joined[1]:
                    ready.set()


def dump_until_exit(pid: int, proc: subprocess.Popen, path: Path, native: bool) -> None:
    """``py-spy dump`` of the process every second until it exits, appended to ``path``."""
    started = time.monotonic()
    with path.open("a") as out:
        while proc.poll() is None:
            command = [str(VENV_BIN / "py-spy"), "dump", "--pid", str(pid), *(["--native"] if native else [])]
            done = subprocess.run(command, capture_output=True, text=True)
            out.write(f"\n===== {time.monotonic() - started:.2f} s after SIGTERM =====\n{done.stdout}{done.stderr}")
            out.flush()
            time.sleep(1.0)


async def run(args: argparse.Namespace) -> dict:
    prefix = f"presence-shutdown-{uuid.uuid4().hex[:8]}"
    redis_url = REDIS_URL if args.store == "redis" else ""
    with tempfile.TemporaryDirectory() as directory, database(args.db, Path(directory), REDIS_URL) as url:
        env = server_env(redis_url, url, prefix, min_session_seconds=0, heartbeat=300,
                         max_readers_per_ip=None, max_connections_per_ip=None)
        pks = json.loads(manage(env, "shell", "-v", "0", "-c", ARTICLES.format(articles=args.articles)))
        with DaphneServer(env, name="shutdown", start_timeout=30) as server:
            ready, joined = asyncio.Event(), [0, args.connections]
            gate = asyncio.Semaphore(100)  # handshakes in flight (Daphne listens with a backlog of 50)

            started = time.monotonic()
            tasks = [
                asyncio.create_task(reader(server.url, f"{prefix}-{n}", f"article:{pks[n % len(pks)]}",
                                           (n % 100) / 100, gate, ready, joined))
                for n in range(args.connections)
            ]
            try:
                await asyncio.wait_for(ready.wait(), 120 + args.connections / 20)
            except TimeoutError:
                failed = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception()]
                raise RuntimeError(
                    f"{joined[0]} of {args.connections} joined; {failed[:3]}\n{server.output[-3000:]}"
                ) from None
            ramp = time.monotonic() - started
            await asyncio.sleep(args.hold)  # real reading time
            pid = server.proc.pid
            sigterm = time.monotonic()
            server.terminate()
            dumper = None
            if args.record:  # a profile of the whole shutdown, in py-spy's "raw" (collapsed stacks) format
                dumper = threading.Thread(target=subprocess.run, args=(
                    [str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--format", "raw", "-r", "200",
                     "-o", args.record],), kwargs={"capture_output": True})
                dumper.start()
            elif args.py_spy:
                dumper = threading.Thread(target=dump_until_exit,
                                          args=(pid, server.proc, Path(args.py_spy), args.native))
                dumper.start()
            try:
                code = await asyncio.to_thread(server.wait, args.timeout)
            except subprocess.TimeoutExpired:
                code = None  # still running: ``server`` kills it on leaving
            exited = time.monotonic() - sigterm
            if dumper is not None:
                dumper.join()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            output = server.output
            if args.log:
                Path(args.log).write_text(output)  # noqa: ASYNC240 (once, after the measurement)
        sessions = json.loads(manage(env, "shell", "-v", "0", "-c", SESSIONS))
    if redis_url:
        delete_keys(REDIS_URL, prefix)
    return {
        "connections": args.connections,
        "store": args.store,
        "db": args.db,
        "ramp_seconds": round(ramp, 1),
        "seconds_to_exit": round(exited, 2) if code is not None else None,
        "exit_code": code,
        "cut": CUT in output,
        "sessions_shutdown": sessions.get("shutdown", 0),
        "sessions_other": {reason or "open": n for reason, n in sessions.items() if reason != "shutdown"},
        "expected": args.connections,
        "errors_logged": sum(1 for line in output.splitlines() if " ERROR " in line or line.startswith("Traceback")),
        "log_tail": [line for line in output.splitlines() if " presence" in line or " ERROR " in line][-5:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--articles", type=int, default=20)
    parser.add_argument("--hold", type=float, default=1.0, help="seconds between the last join and SIGTERM")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the exit before SIGKILL")
    parser.add_argument("--py-spy", metavar="FILE", help="append py-spy dumps taken during the shutdown to FILE")
    parser.add_argument("--record", metavar="FILE", help="py-spy record the shutdown to FILE (collapsed stacks)")
    parser.add_argument("--log", metavar="FILE", help="write the server's output to FILE")
    parser.add_argument("--native", action="store_true", help="with --py-spy: native frames too")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the server inherits it
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 20000)), hard))
    result = asyncio.run(run(args))
    print(
        f"{result['connections']} connections, {args.store}+{args.db}: exit {result['exit_code']} after "
        f"{result['seconds_to_exit']} s, cut={result['cut']}, sessions written "
        f"{result['sessions_shutdown']}/{result['expected']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
