"""The widget fails over by itself when its server process stops (reliability.md, section 2).

Two Daphnes share one Redis behind one front address (``tests.support.tcp_proxy.TcpProxy``: a new
connection goes to the first backend that accepts it), so the page's HTTP and WebSocket are
same-origin. The page is served by, and connected to, backend A; an observer sits directly on
backend B. A gets SIGTERM: the widget must reconnect through the front address to B on its own,
show the right counts, and be counted once on B.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import statistics
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.browser.test_widget import ARTICLE, markers, wait_text
from tests.support.servers import ORIGIN, DaphneServer, server_env
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.redis, pytest.mark.slow]

RECONNECT_DEADLINE = 10.0  # the widget's first retries wait up to 1 s, then 2 s (backoff with jitter)
SETTLE = 3.0  # three ticks: a stale claim or a late release would show by then
measured: list[float] = []


class Observer:
    """A protocol client on one backend, in the room: who it sees there and the counts, as frames say."""

    def __init__(self, url: str, room: str):
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url + "?session=observer-0001", origin=ORIGIN, open_timeout=10))
        self.room = room
        self.online: int | None = None
        self.count: int | None = None
        self.readers: set[str] = set()
        self.max_count = 0
        self.frames: list[dict] = []
        self.reader = self._next()["reader"]
        self.ws.send(json.dumps({"type": "join", "room": room}))

    def _next(self, timeout: float = 10.0) -> dict:  # noqa: ASYNC109 (sync)
        frame = json.loads(self.ws.recv(timeout=timeout))
        self.frames.append(frame)
        if frame["type"] == "online":
            self.online = frame["count"]
        elif frame["type"] == "hello":
            self.online = frame["online"]
        elif frame["type"] == "room_state" and frame["room"] == self.room:
            self.count, self.readers = frame["count"], {r["id"] for r in frame["readers"]}
            self.reader = frame.get("you", self.reader)  # its marker in the room (protocol 1.1)
        elif frame["type"] == "room" and frame["room"] == self.room:
            self.count = frame["count"]
            self.readers = (self.readers | {u["id"] for u in frame["updates"]}) - set(frame["left"])
        if self.count is not None:
            self.max_count = max(self.max_count, self.count)
        return frame

    def pump(self) -> None:
        """Read every frame that has arrived, without waiting."""
        while True:
            try:
                self._next(timeout=0)
            except TimeoutError:
                return

    def close(self) -> None:
        self._stack.close()


def wait(page, condition, timeout: float, what: str) -> float:  # noqa: ASYNC109 (sync)
    """Let the page run (Playwright delivers its events meanwhile) until ``condition()``; returns when."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        page.wait_for_timeout(25)
    return time.monotonic()


def test_the_widget_reconnects_to_the_survivor_after_sigterm_and_counts_once(
    chromium, site_db, redis_url, redis_prefix
):
    with sqlite3.connect(site_db[0].removeprefix("sqlite:///")) as db:
        (pk,) = db.execute("SELECT id FROM blog_article WHERE slug = ?", (Path(ARTICLE).name,)).fetchone()
    room = f"article:{pk}"
    env = server_env(redis_url, site_db[0], redis_prefix)
    env.update(DEBUG="1", ALLOWED_HOSTS="127.0.0.1,localhost")
    with (
        DaphneServer(env, name="failover-a") as a,
        DaphneServer(env, name="failover-b") as b,
        TcpProxy(("127.0.0.1", a.port), ("127.0.0.1", b.port)) as front,
    ):
        observer = Observer(b.url, room)
        context = chromium.new_context()
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            hellos: list[float] = []  # when the page's sockets got their `hello`, in order

            def on_socket(ws):
                ws.on("framereceived", lambda payload: '"hello"' in str(payload) and hellos.append(time.monotonic()))

            page.on("websocket", on_socket)
            page.goto(f"http://127.0.0.1:{front.port}{ARTICLE}")
            wait(page, lambda: any(m["own"] for m in markers(page)), 10, "the page's own marker")
            (reader,) = [m["id"] for m in markers(page) if m["own"]]

            def counted_once() -> bool:
                observer.pump()
                return observer.count == 2 and reader in observer.readers and observer.online == 2

            wait(page, counted_once, 10, "the observer on B sees the reader on A")
            wait_text(page, "[data-presence-readers]", r"^2 people reading now$")
            assert front.forwarded.get(("127.0.0.1", b.port), 0) == 0, "the page is on A"
            assert len(hellos) == 1

            # -- SIGTERM to the page's backend ------------------------------------------------
            observer.max_count = 0
            stopped_at = time.monotonic()
            a.terminate()
            reconnected_at = wait(page, lambda: len(hellos) >= 2, RECONNECT_DEADLINE, "the widget's reconnect")
            seconds = reconnected_at - stopped_at
            assert a.wait(15) == 0
            assert front.forwarded.get(("127.0.0.1", b.port), 0) >= 1, "the reconnect went to B"

            # Settled: counted once on B (not twice, not gone), and the page shows it.
            page.wait_for_timeout(SETTLE * 1000)
            assert counted_once(), (observer.count, observer.readers, observer.online, observer.frames[-5:])
            assert observer.max_count <= 2, "never counted twice"
            wait_text(page, "[data-presence-readers]", r"^2 people reading now$")
            wait_text(page, "[data-presence-online]", r"^2 readers online$")
            wait(page, lambda: {m["id"] for m in markers(page)} == {reader, observer.reader}, 5, "both markers")
            assert errors == []
        finally:
            context.close()
            observer.close()
    measured.append(seconds)
    print(f"\nreconnected {seconds:.2f} s after SIGTERM (runs so far: {len(measured)}, "
          f"min {min(measured):.2f} / median {statistics.median(measured):.2f} / max {max(measured):.2f} s)")
