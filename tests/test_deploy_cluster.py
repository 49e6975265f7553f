"""``make cluster`` (``deploy/cluster.py``): uvicorn (the default) or Daphne processes behind a real
nginx, driven through it.

Two WebSockets that nginx sends to different processes must see each other (counts shared
through Redis, no sticky sessions), each client behind nginx has an allowance of its own (the
processes believe nginx's X-Forwarded-For, ``TRUSTED_PROXIES=127.0.0.1``), and Ctrl-C must stop
nginx and every process.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
from websockets.exceptions import InvalidStatus

from deploy.cluster import find_nginx
from tests.conftest import CI
from tests.support.ports import free_port
from tests.support.servers import ROOT, SETTINGS, Client

pytestmark = [pytest.mark.processes, pytest.mark.slow, pytest.mark.redis]

READY = re.compile(r"Cluster ready: (\S+) .*ports ([\d, ]+);")


@pytest.fixture
def nginx():
    if find_nginx() is None:
        message = "nginx is not installed (make test installs it as root on Debian)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(params=["uvicorn", "daphne"])
def cluster(request, nginx, redis_url, redis_prefix, tmp_path):
    """``deploy/cluster.py -n 2 --server <param>`` on this test's Redis prefix and database: (url,
    backend ports, process, its log, an article's pk)."""
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
            [sys.executable, "deploy/cluster.py", "-n", "2", "--port", str(free_port()), "--server", request.param],
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


CAP = 50  # PRESENCE_MAX_READERS_PER_IP's default


async def open_from(ws_url: str, origin: str, local: str, room: str, gate: asyncio.Semaphore) -> Client | None:
    """A reader of ``room`` from the loopback address ``local`` with a session of its own, through
    nginx; None when its handshake is refused (HTTP 403)."""
    async with gate:
        try:
            client = await Client.connect(ws_url, secrets.token_hex(8), origin=origin, local_addr=(local, 0))
        except InvalidStatus as refused:
            assert refused.response.status_code == 403, refused.response.status_code
            return None
    await client.send_json(type="join", room=room)
    return client


async def test_each_client_behind_nginx_has_an_allowance_of_its_own(cluster):
    """60 clients, each from a loopback address of its own (nginx appends it to X-Forwarded-For),
    all get in through nginx to two processes: the processes count each by the address nginx
    forwards, not all as nginx. One client opening 60 sessions is still held to 50. (With Daphne
    ``--proxy-headers`` and no trusted proxy, as deployed before, the 60 were one address: 50 in.)"""
    url, ports, proc, log, pk = cluster
    ws_url, origin, room = url.replace("http://", "ws://") + "ws/presence/", url.rstrip("/"), f"article:{pk}"
    gate = asyncio.Semaphore(20)
    observer = await Client.connect(ws_url, "cluster-observer", origin=origin, local_addr=("127.0.9.1", 0))
    opened: list[Client] = [observer]
    try:
        clients = await asyncio.gather(*(open_from(ws_url, origin, f"127.0.10.{n + 1}", room, gate) for n in range(60)))
        opened += [client for client in clients if client]
        assert sum(client is not None for client in clients) == 60, "a distinct client was refused"
        upstreams = {client.ws.response.headers["X-Presence-Upstream"] for client in clients}
        assert upstreams == {f"127.0.0.1:{port}" for port in ports}  # both processes served them

        one = await asyncio.gather(*(open_from(ws_url, origin, "127.0.11.1", room, gate) for _ in range(CAP + 10)))
        opened += [client for client in one if client]
        assert sum(client is not None for client in one) == CAP

        await observer.wait_until(lambda c: c.online == 1 + 60 + CAP, timeout=15)
    finally:
        await asyncio.gather(*(client.close() for client in opened))
