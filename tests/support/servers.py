"""Helpers that run real servers for tests: server processes on loopback ports, and a WebSocket client.

Not tests. ``tests/test_processes.py`` uses them to check what only real processes show:
counts shared through Redis, a killed process being reaped, a graceful stop, idle sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import websockets

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SETTINGS = "tests.process_settings"
APPLICATION = "presence_site.asgi:application"
ORIGIN = "http://localhost"  # what raw test clients send (allowed by tests/process_settings.py)


def origin_of(url: str) -> str:
    """The origin of a page served by the server of a WebSocket URL (``ws://h:p/...`` -> ``http://h:p``)."""
    scheme, rest = url.split("://", 1)
    return ("https" if scheme == "wss" else "http") + "://" + rest.split("/", 1)[0]


def server_env(redis_url: str, database_url: str, prefix: str, **tunables: float) -> dict[str, str]:
    """Environment of a server process; ``tunables`` become ``PRESENCE_TEST_<NAME>`` (process_settings)."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=SETTINGS,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        PRESENCE_TEST_PREFIX=prefix,
    )
    for name, value in tunables.items():
        env[f"PRESENCE_TEST_{name.upper()}"] = str(value)
    return env


def migrate_database(directory: Path, redis_url: str) -> tuple[str, list[int]]:
    """Create and migrate a SQLite database under the process settings; its URL and the article pks."""
    path = Path(directory) / "presence-processes.sqlite3"
    url = f"sqlite:///{path}"
    env = server_env(redis_url, url, "presence-test-migrate")
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py migrate failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    with contextlib.closing(sqlite3.connect(path)) as db:
        pks = [row[0] for row in db.execute("SELECT id FROM blog_article ORDER BY id")]
    return url, pks


class ServerProcess:
    """A server on a free loopback port, as a context manager; subclasses say what runs
    (``command``) and when it is up (``ready``). ``bench/servers.py`` starts its servers with it too.

    Leaving the context (or ``stop()``) terminates it, then kills it if it lingers: it never
    outlives the test. Its output goes to a log file, shown when it fails to start.
    """

    stop_timeout = 5.0  # for a graceful stop, before SIGKILL
    preexec_fn: Callable[[], None] | None = None  # run in the child before exec

    def __init__(self, env: dict[str, str], name: str, start_timeout: float = 20.0):
        self.env = env
        self.name = name
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"presence-{name}-", suffix=".log", delete=False)

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/presence/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def start(self) -> Self:
        for _attempt in range(3):  # a free port may be taken between probing and binding it
            self.port = free_port()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self.preexec_fn,
            )
            if self._wait_ready():
                return self
            if "address already in use" not in self.output.lower():
                break
        output = self.output
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on 127.0.0.1:{self.port}; its output:\n{output}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # before ``ready``: another server may answer on a port this one lost
            if self.ready():
                return True
            time.sleep(0.05)
        return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process dies without closing its sockets or releasing anything."""
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM: a graceful stop (Daphne cancels every application, then exits); see ``wait``."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 15.0) -> int:
        """The exit code, once the process has exited; raises TimeoutExpired if it does not."""
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the whole session it started, if anything
            self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def __enter__(self) -> Self:
        if self.proc is None:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class DaphneServer(ServerProcess):
    """``.venv/bin/daphne presence_site.asgi:application`` on a free loopback port."""

    def __init__(self, env: dict[str, str], name: str = "daphne", start_timeout: float = 20.0, args: tuple = ()):
        super().__init__(env, name, start_timeout)
        self.args = tuple(args)  # more Daphne options, e.g. ("--proxy-headers",)

    def command(self) -> list[str]:
        return [str(VENV_BIN / "daphne"), "-b", "127.0.0.1", "-p", str(self.port), *self.args, APPLICATION]

    def ready(self) -> bool:
        """Daphne's "Listening on" log line rather than a probe of the port: a probe leaves
        Daphne a connection without an application for a second, during which its SIGTERM
        handler (``kill_all_applications``) fails with KeyError and cancels no application."""
        return f"Listening on TCP address 127.0.0.1:{self.port}" in self.output



class UvicornServer(ServerProcess):
    """uvicorn on the site, as ``deploy/`` runs it (``--no-proxy-headers --lifespan on``), on a
    free loopback port. ``--lifespan on``: uvicorn exits at startup if the application refuses
    lifespan events, rather than going on without them ("auto")."""

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port),
            "--no-proxy-headers", "--lifespan", "on", "--log-level", "info", APPLICATION,
        ]

    def ready(self) -> bool:
        return f"Uvicorn running on http://127.0.0.1:{self.port}" in self.output

# -- a WebSocket client ------------------------------------------------------------------


class Client:
    """A protocol client over a real WebSocket; remembers the last ``online`` and room counts it saw,
    its site-wide reader id (``reader``) and its id in each room it joined (``you``, protocol 1.1)."""

    def __init__(self, ws, name: str = "client"):
        self.ws = ws
        self.name = name
        self.reader: str | None = None
        self.you: dict[str, str] = {}
        self.heartbeat: float | None = None
        self.online: int | None = None
        self.counts: dict[str, int] = {}
        self.frames: list[dict] = []

    @classmethod
    async def connect(cls, url: str, session: str | None = None, name: str | None = None, **kwargs) -> Client:
        """Open a connection (Origin: the server's own page origin unless given) and read its ``hello``."""
        kwargs.setdefault("origin", origin_of(url))
        kwargs.setdefault("open_timeout", 10)
        target = url + (f"?session={session}" if session else "")
        client = cls(await websockets.connect(target, **kwargs), name=name or session or "client")
        hello = await client.recv_json(10)
        assert hello["type"] == "hello", hello
        return client

    async def send_json(self, **frame) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv_json(self, timeout: float = 5.0) -> dict:  # noqa: ASYNC109 (a test helper's deadline)
        """The next frame; also updates what the client knows (reader, online, room counts)."""
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        kind = frame.get("type")
        if kind == "hello":
            self.reader, self.online, self.heartbeat = frame["reader"], frame["online"], frame["heartbeat"]
        elif kind == "online":
            self.online = frame["count"]
        elif kind in ("room", "room_state"):
            self.counts[frame["room"]] = frame["count"]
            if "you" in frame:
                self.you[frame["room"]] = frame["you"]
        return frame

    async def wait_for_frame(self, predicate: Callable[[dict], bool], timeout: float = 10.0) -> dict:  # noqa: ASYNC109
        """Read frames until one matches; the server sends its own at its own cadence meanwhile."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no matching frame within {timeout}s; saw {seen}")
            try:
                frame = await self.recv_json(left)
            except TimeoutError:
                continue
            if predicate(frame):
                return frame
            seen.append(frame)

    async def wait_until(self, condition: Callable[[Client], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Read frames until ``condition(self)`` holds (checked first: it may hold already)."""
        if condition(self):
            return
        await self.wait_for_frame(lambda frame: condition(self), timeout)

    async def join(self, room: str) -> dict:
        await self.send_json(type="join", room=room)
        return await self.wait_for_frame(lambda f: f["type"] in ("room_state", "error"), 5)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
