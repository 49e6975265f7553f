"""``make cluster`` (``deploy/cluster.py``): Daphne processes behind a real nginx, driven through it.

Two WebSockets that nginx sends to different processes must see each other (counts shared
through Redis, no sticky sessions), and Ctrl-C must stop nginx and every process.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from deploy.cluster import find_nginx
from tests.conftest import CI
from tests.servers import ROOT, SETTINGS, Client, free_port

pytestmark = [pytest.mark.processes, pytest.mark.slow, pytest.mark.redis]

READY = re.compile(r"Cluster ready: (\S+) .*ports ([\d, ]+);")


@pytest.fixture
def nginx():
    if find_nginx() is None:
        message = "nginx is not installed (make test installs it as root on Debian)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def cluster(nginx, redis_url, redis_prefix, tmp_path):
    """``deploy/cluster.py -n 2`` on this test's Redis prefix and database: (url, backend ports, process)."""
    database = tmp_path / "cluster.sqlite3"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "PRESENCE_TEST_PREFIX": redis_prefix,
    }
    log = tmp_path / "cluster.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "deploy/cluster.py", "-n", "2", "--port", str(free_port())],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while (ready := READY.search(log.read_text())) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the cluster did not start; its output:\n{log.read_text()}")
            time.sleep(0.2)
        ports = [int(port) for port in ready.group(2).split(",")]
        with sqlite3.connect(database) as db:
            pk = db.execute("SELECT id FROM blog_article ORDER BY id").fetchone()[0]
        yield ready.group(1), ports, proc, log, pk
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_clients_on_different_processes_see_each_other_through_nginx(cluster):
    url, ports, proc, log, pk = cluster
    ws_url = url.replace("http://", "ws://") + "ws/presence/"
    origin = url.rstrip("/")
    room = f"article:{pk}"
    opened: list[Client] = []
    try:
        # nginx balances round-robin, without stickiness: of three connections, two land apart.
        by_upstream: dict[str, Client] = {}
        for n in range(3):
            client = await Client.connect(ws_url, f"cluster-reader-{n}", origin=origin)
            opened.append(client)
            by_upstream.setdefault(client.ws.response.headers["X-Presence-Upstream"], client)
        assert sorted(by_upstream) == sorted(f"127.0.0.1:{port}" for port in ports), by_upstream
        one, two = by_upstream.values()
        for extra in [c for c in opened if c not in (one, two)]:
            await extra.close()
        opened = [one, two]

        for client in (one, two):
            assert (await client.join(room))["type"] == "room_state"
        for client in (one, two):
            await client.wait_until(lambda c: c.online == 2 and c.counts.get(room) == 2, timeout=10)
        await two.send_json(type="progress", room=room, position=0.7)
        await one.wait_for_frame(
            lambda f: f["type"] == "room"
            and any(u["id"] == two.you[room] and u["position"] == 0.7 for u in f["updates"]),
            timeout=10,
        )
    finally:
        await asyncio.gather(*(client.close() for client in opened))

    # Ctrl-C: nginx and both processes stop, and the script exits cleanly.
    proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()
    assert "Stopping the cluster" in log.read_text()
    nginx_port = int(url.rsplit(":", 1)[1].strip("/"))
    assert not any(listening(port) for port in [nginx_port, *ports]), log.read_text()
