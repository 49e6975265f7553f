"""Hostile readers against real Daphne processes: one address cannot inflate the numbers, a
forged ``X-Forwarded-For`` picks no address, with or without a proxy in front, origins are
compared with scheme and port, and invalid UTF-8 is closed with 1007 (these two under uvicorn,
the recommended server, too).

Addresses: test clients bind their sockets to loopback addresses of their own (127.0.0.1 for
the attacker, 127.0.0.2 for an honest observer, ...), so the servers see distinct peers. The
figures these tests measure are quoted in docs/security.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import socket
import sqlite3
import struct
import subprocess
import time
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from deploy.cluster import find_nginx
from tests.conftest import CI
from tests.support.ports import free_port
from tests.support.servers import Client, migrate_database, origin_of

pytestmark = [pytest.mark.processes, pytest.mark.redis, pytest.mark.slow]

CAP = 50  # PRESENCE_MAX_READERS_PER_IP's default
SOCKETS = 200  # PRESENCE_MAX_CONNECTIONS_PER_IP's default
ATTACK = 1000
ATTACKER, OBSERVER, BROWSER, NEIGHBOUR = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.6"


@pytest.fixture(scope="module")
def site_db(redis_url, tmp_path_factory):
    url, pks = migrate_database(tmp_path_factory.mktemp("presence-hostile"), redis_url)
    return url, pks


def query(site_db, sql: str, *params) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(site_db[0].removeprefix("sqlite:///"))) as db:
        return db.execute(sql, params).fetchall()


class Flood:
    """WebSockets opened from one local address, each joining the room: who was let in."""

    def __init__(self, local: str, room: str):
        self.local, self.room = local, room
        self.open: list = []
        self.refused = 0
        self.failed: list[str] = []

    async def one(self, url: str, session: str, headers: dict | None = None, origin: str | None = None) -> None:
        try:
            ws = await websockets.connect(
                f"{url}?session={session}", origin=origin or origin_of(url), open_timeout=30,
                local_addr=(self.local, 0), additional_headers=headers, ping_interval=None,
            )
        except InvalidStatus as refused:
            assert refused.response.status_code == 403, refused.response.status_code
            self.refused += 1
            return
        except Exception as exc:  # noqa: BLE001 - reported below: the server must answer every handshake
            self.failed.append(repr(exc))
            return
        self.open.append(ws)
        await asyncio.wait_for(ws.recv(), 10)  # hello
        await ws.send(f'{{"type": "join", "room": "{self.room}"}}')
        await ws.send(f'{{"type": "progress", "room": "{self.room}", "position": 0.5}}')

    async def run(self, targets: list[tuple[str, str, dict | None]], concurrency: int = 40) -> Flood:
        gate = asyncio.Semaphore(concurrency)

        async def gated(url, session, headers):
            async with gate:
                await self.one(url, session, headers)

        await asyncio.gather(*(gated(*target) for target in targets))
        assert not self.failed, self.failed[:5]
        return self

    async def close(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.open), return_exceptions=True)


@pytest.mark.parametrize("processes", [1, 2])
async def test_one_address_moves_every_number_by_at_most_the_cap(servers, site_db, room, processes, record_property):
    """1,000 connections with random sessions from one address, over one or two processes: 50
    readers get in (not 50 per process), and `online`, the room's count, the day's OnlinePeak and
    the history's reads each grow by 50 at most. One browser's 250 tabs: 200 connections."""
    urls = [servers(f"p{n}", min_session_seconds=0).url for n in range(processes)]
    observer = await Client.connect(urls[-1], "honest-observer", local_addr=(OBSERVER, 0))
    await observer.join(room)
    peak_before = query(site_db, "SELECT coalesce(max(count), 0) FROM presence_onlinepeak")[0][0]
    reads_before = query(site_db, "SELECT count(*) FROM presence_readingsession WHERE room = ?", room)[0][0]

    started = time.monotonic()
    attack = await Flood(ATTACKER, room).run(
        [(urls[n % processes], secrets.token_hex(8), None) for n in range(ATTACK)]
    )
    seconds = time.monotonic() - started
    record_property("hostile_refused", attack.refused)
    print(f"\n{processes} process(es): {ATTACK} connections in {seconds:.1f} s, "
          f"{len(attack.open)} let in, {attack.refused} refused (HTTP 403)")
    assert (len(attack.open), attack.refused) == (CAP, ATTACK - CAP)

    await observer.wait_until(lambda c: c.online == CAP + 1 and c.counts.get(room) == CAP + 1, timeout=15)
    await asyncio.sleep(2.5)  # whatever else was on its way
    await observer.send_json(type="ping")
    await observer.wait_for_frame(lambda f: f["type"] == "pong")
    assert (observer.online, observer.counts[room]) == (CAP + 1, CAP + 1)

    await attack.close()
    await observer.wait_until(lambda c: c.online == 1 and c.counts.get(room) == 1, timeout=15)
    deadline = time.monotonic() + 15
    while (reads := query(site_db, "SELECT count(*) FROM presence_readingsession WHERE room = ?", room)[0][0]
           - reads_before) < CAP:
        assert time.monotonic() < deadline, reads
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    reads = query(site_db, "SELECT count(*) FROM presence_readingsession WHERE room = ?", room)[0][0] - reads_before
    peak = query(site_db, "SELECT max(count) FROM presence_onlinepeak")[0][0]
    assert reads == CAP, reads
    assert max(peak_before, 1) <= peak <= CAP + 1, peak

    # Sockets: one browser (one session) with 250 tabs from another address: 200 connections.
    tabs = await Flood(BROWSER, room).run([(urls[n % processes], "one-browser-250-tabs", None) for n in range(250)])
    assert (len(tabs.open), tabs.refused) == (SOCKETS, 250 - SOCKETS)
    await observer.wait_until(lambda c: c.online == 2 and c.counts.get(room) == 2, timeout=15)
    await tabs.close()
    await observer.close()


async def test_a_forged_x_forwarded_for_picks_no_address_under_proxy_headers(servers, room):
    """Daphne ``--proxy-headers`` takes the client address from X-Forwarded-For, from anyone. With
    no trusted proxy configured, such an address cannot be believed: 200 connections, each
    claiming another address, are all refused, and the same client without the header gets its
    50 readers in, no more (counted in a bucket of their own, the forged ones would add 50)."""
    server = servers("proxy-headers", args=("--proxy-headers",), max_connections_per_ip=CAP)
    forged = await Flood(ATTACKER, room).run(
        [(server.url, secrets.token_hex(8), {"X-Forwarded-For": f"198.51.{n // 250}.{n % 250}"}) for n in range(200)]
    )
    assert (len(forged.open), forged.refused) == (0, 200)
    assert "PRESENCE_TRUSTED_PROXIES is empty" in server.output  # the operator is told why
    plain = await Flood(ATTACKER, room).run([(server.url, secrets.token_hex(8), None) for _ in range(CAP + 10)])
    assert (len(plain.open), plain.refused) == (CAP, 10)
    await plain.close()


async def test_a_header_naming_its_own_peer_gets_no_allowance_of_its_own(servers, room):
    """Straight to Daphne (no proxy, no ``--proxy-headers``), a client that writes its own address
    into X-Forwarded-For looks like a connection a rewriting server let through: such connections
    are refused, so the client's readers stay at the cap (they would have been 50 + 50)."""
    server = servers("own-header")
    own = await Flood(ATTACKER, room).run(
        [(server.url, secrets.token_hex(8), {"X-Forwarded-For": ATTACKER}) for _ in range(CAP + 10)]
    )
    plain = await Flood(ATTACKER, room).run([(server.url, secrets.token_hex(8), None) for _ in range(CAP + 10)])
    assert (len(own.open), len(plain.open)) == (0, CAP)
    await asyncio.gather(own.close(), plain.close())


NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $http_host;
            # Appends the address nginx saw to whatever the client sent, as most proxies do.
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


@pytest.fixture
def nginx_in_front(tmp_path):
    """``start(upstream_port)`` -> the ws:// URL of a real nginx proxying to a Daphne."""
    binary = find_nginx()
    if binary is None:
        if CI:
            pytest.fail("nginx is not installed")
        pytest.skip("nginx is not installed (make test installs it as root on Debian)")
    procs = []

    def start(upstream: int) -> str:
        port = free_port()
        conf = Path(tmp_path) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(run=tmp_path, port=port, upstream=upstream))
        with (tmp_path / "nginx.out").open("wb") as out:
            procs.append(subprocess.Popen(
                [binary, "-e", str(tmp_path / "error.log"), "-p", str(tmp_path), "-c", str(conf)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            ))
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return f"ws://127.0.0.1:{port}/ws/presence/"
            assert time.monotonic() < deadline, (tmp_path / "nginx.out").read_text()
            time.sleep(0.05)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("daphne_args", [(), ("--proxy-headers",)], ids=["peer", "proxy-headers"])
async def test_behind_a_trusted_proxy_each_client_has_its_own_allowance(servers, nginx_in_front, room, daphne_args):
    """nginx in front (PRESENCE_TRUSTED_PROXIES = its address): the address it forwards is the
    client's. A client that also writes the header itself gets its own 50 readers, no more;
    its neighbour behind the same proxy keeps its own allowance."""
    server = servers("behind-nginx", args=daphne_args, trusted_proxies="127.0.0.1")
    url = nginx_in_front(server.port)
    attacker = await Flood("127.0.0.5", room).run(
        [(url, secrets.token_hex(8), {"X-Forwarded-For": f"203.0.113.{n}"}) for n in range(120)]
    )
    assert (len(attacker.open), attacker.refused) == (CAP, 120 - CAP)
    neighbour = await Flood(NEIGHBOUR, room).run([(url, secrets.token_hex(8), None) for _ in range(5)])
    assert (len(neighbour.open), neighbour.refused) == (5, 0)
    await attacker.close()
    await neighbour.close()


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
async def test_origins_compare_scheme_and_port(servers, kind):
    server = servers("origins", server=kind)
    own = origin_of(server.url)  # http://127.0.0.1:<port>

    async def status(origin: str) -> int:
        try:
            ws = await websockets.connect(server.url + "?session=origin-check", origin=origin, open_timeout=10)
        except InvalidStatus as refused:
            return refused.response.status_code
        await ws.close()
        return 101

    assert await status("http://127.0.0.1:1") == 403  # another port
    assert await status("ftp://localhost") == 403  # another scheme
    assert await status(f"ftp://127.0.0.1:{server.port}") == 403
    assert await status(own) == 101  # the page's own origin
    assert await status("http://localhost") == 101  # listed in PRESENCE_ALLOWED_ORIGINS (process settings)


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
async def test_invalid_utf8_in_a_text_frame_is_closed_with_1007(servers, kind):
    server = servers("utf8", server=kind)
    observer = await Client.connect(server.url, "utf8-observer", local_addr=(OBSERVER, 0))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws/presence/?session=utf8-breaker HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: {origin_of(server.url)}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head

    async def frame() -> tuple[int, bytes]:
        first, second = await asyncio.wait_for(reader.readexactly(2), 10)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", await reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await reader.readexactly(8))[0]
        return first & 0x0F, await reader.readexactly(length)

    assert (await frame())[0] == 0x1  # hello
    await observer.wait_until(lambda c: c.online == 2)
    payload, mask = b'{"type": "ping", "x": "\xff\xfe"}', os.urandom(4)
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    await writer.drain()
    while True:
        opcode, body = await frame()  # frames sent before it (e.g. online) come first
        if opcode == 0x8:
            break
    assert struct.unpack("!H", body[:2])[0] == 1007, body
    writer.close()
    await observer.wait_until(lambda c: c.online == 1)  # and the reader is counted out
    await observer.close()
