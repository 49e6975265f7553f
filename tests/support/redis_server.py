"""A private ``redis-server`` for tests that flush, stop or restart Redis (never the shared one).

Not tests. ``tests/test_faults.py`` starts one per test on a free loopback port, without
persistence, and may FLUSHALL it or stop it and start it again on the same port.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.ports import free_port


class RedisServer:
    """``redis-server`` in a temporary directory, as a context manager; it never outlives the test."""

    def __init__(self, executable: str | None = None):
        self.executable = executable or shutil.which("redis-server")
        if self.executable is None:
            raise RuntimeError("redis-server is not installed")
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.directory = Path(tempfile.mkdtemp(prefix="presence-private-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=5)

    def answers(self) -> bool:
        try:
            with contextlib.closing(self.client()) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def start(self, timeout: float = 10.0) -> RedisServer:  # noqa: ASYNC109 (sync helper)
        """Start on a free port, or again on the same port after ``shutdown``."""
        for _attempt in range(3):
            if self.port is None:
                self.port = free_port()
            self.proc = subprocess.Popen(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory), "--maxclients", "10000"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.running:
                if self.answers():
                    return self
                time.sleep(0.02)
            self._reap()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def flushall(self) -> None:
        with contextlib.closing(self.client()) as client:
            client.flushall()

    def shutdown(self) -> None:
        """SHUTDOWN NOSAVE: every key is lost, every connection dropped; ``start()`` again on the same port."""
        with contextlib.closing(self.client()) as client, contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        self.proc.wait(10)

    def _reap(self) -> None:
        if self.running:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def close(self) -> None:
        if self.proc is not None:
            self._reap()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
