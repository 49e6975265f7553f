"""The database unavailable for a while, under a real Daphne (reliability.md, section 4).

The server reaches PostgreSQL through ``tests.support.tcp_proxy.TcpProxy``, which the test turns off
(every connection reset; new ones refused, or accepted and never answered) and on again.
Live presence must not notice; reading history waits in the recorder's backlog and lands in
PostgreSQL once the database is back, without a restart; what overflows the backlog is logged.
Each test migrates a PostgreSQL database of its own (dropped afterwards) and its own Redis prefix.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass

import pytest

from tests.conftest import CI
from tests.support.servers import ROOT, Client, DaphneServer, server_env
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.processes, pytest.mark.redis, pytest.mark.slow]

POSTGRES = os.environ.get("PRESENCE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
PG_HOST, PG_PORT = re.search(r"@([^:/]+):(\d+)", POSTGRES).groups()
OUTAGE_SECONDS = 6.0
# The server's URL carries a connect timeout: a database that accepts and never answers
# (the "blackhole" outage) would otherwise hold the recorder's database thread forever.
CONNECT_TIMEOUT = 2


@dataclass
class Database:
    name: str
    url: str
    pks: list[int]
    slugs: list[str]


@pytest.fixture
def database(redis_url):
    """A PostgreSQL database of this test's own, migrated directly (not through the proxy)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if CI:
            pytest.fail(f"no PostgreSQL at {POSTGRES}: {exc}")
        pytest.skip(f"no PostgreSQL at {POSTGRES}: {exc}")
    name = f"presence_outage_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{POSTGRES}/{name}"
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT, env=server_env(redis_url, url, "presence-test-migrate"), capture_output=True, text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        with psycopg.connect(url) as db:
            articles = db.execute("SELECT id, slug FROM blog_article ORDER BY id").fetchall()
        assert len(articles) >= 3, "the blog's data migration should seed articles"
        yield Database(name, url, [a[0] for a in articles], [a[1] for a in articles])
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def proxy():
    with TcpProxy((PG_HOST, int(PG_PORT))) as proxy:
        yield proxy


def through(proxy: TcpProxy, database: Database) -> str:
    return f"postgres://postgres@127.0.0.1:{proxy.port}/{database.name}?connect_timeout={CONNECT_TIMEOUT}"


async def rows_of(database: Database) -> dict[tuple[str, str], tuple[float, str]]:
    """(reader id, room) -> (duration, end reason) of every stored session, read directly."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(database.url) as db:
        cursor = await db.execute("SELECT reader_id, room, duration_seconds, end_reason FROM presence_readingsession")
        rows = await cursor.fetchall()
    found = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    assert len(found) == len(rows), f"one row per reader and room: {rows}"
    return found


async def wait_rows(database: Database, condition, timeout: float) -> dict:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        rows = await rows_of(database)
        if condition(rows):
            return rows
        assert time.monotonic() < deadline, f"rows never matched; last seen {rows}"
        await asyncio.sleep(0.2)


def http_get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Truth:
    """What the readers really did: (reader id, room) -> [joined, left] (monotonic), end reason."""

    def __init__(self):
        self.times: dict[tuple[str, str], list[float | None]] = {}
        self.reasons: dict[tuple[str, str], str] = {}

    def joined(self, client: Client, room: str) -> None:
        self.times[(client.you[room], room)] = [time.monotonic(), None]  # its id in the room (protocol 1.1)

    def ended(self, client: Client, room: str, reason: str) -> None:
        self.times[(client.you[room], room)][1] = time.monotonic()
        self.reasons[(client.you[room], room)] = reason

    def durations(self) -> dict[tuple[str, str], float]:
        return {key: left - joined for key, (joined, left) in self.times.items()}


@pytest.mark.parametrize("outage", ["refused", "blackholed"])
async def test_presence_lives_through_a_database_outage_and_history_lands_after(
    database, proxy, redis_url, redis_prefix, outage
):
    room, other, unseen = (f"article:{pk}" for pk in database.pks[:3])
    env = server_env(redis_url, through(proxy, database), redis_prefix, min_session_seconds=1, checkpoint_seconds=600)
    truth = Truth()
    with DaphneServer(env, name=f"outage-{outage}") as server:
        observer = await Client.connect(server.url, "observer-0001")
        assert (await observer.join(room))["type"] == "room_state"
        truth.joined(observer, room)
        readers = []
        for n, where in enumerate([room, room, other, other]):
            reader = await Client.connect(server.url, f"reader-{n:04d}")
            assert (await reader.join(where))["type"] == "room_state"
            truth.joined(reader, where)
            readers.append(reader)
        await observer.wait_until(lambda c: c.counts.get(room) == 3 and c.online == 5)
        await asyncio.sleep(1.5)

        # -- the database goes away ---------------------------------------------------------
        cut_at = time.monotonic()
        proxy.refuse() if outage == "refused" else proxy.blackhole()
        late = await Client.connect(server.url, "reader-late1")  # a new reader, a room already resolved
        state = await late.join(room)
        assert state["type"] == "room_state" and state["count"] == 4, state
        truth.joined(late, room)
        await observer.wait_until(lambda c: c.counts.get(room) == 4 and c.online == 6)
        await readers[0].send_json(type="progress", room=room, position=0.5)
        await observer.wait_for_frame(
            lambda f: f["type"] == "room" and any(u["id"] == readers[0].you[room] and u["position"] == 0.5
                                                  for u in f["updates"])
        )

        await asyncio.sleep(1.0)  # sessions ended during the outage: a leave and a close
        await readers[1].send_json(type="leave", room=room)
        truth.ended(readers[1], room, "left")
        await readers[2].close()
        truth.ended(readers[2], other, "closed")
        await observer.wait_until(lambda c: c.counts.get(room) == 3 and c.online == 6)
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))
        assert await rows_of(database) == {}, "nothing reached the database during the outage"

        # -- it comes back: the held-back sessions land with no other event ------------------------
        outage_seconds = time.monotonic() - cut_at
        proxy.restore()
        back_at = time.monotonic()
        ended = {key for key, (_, left) in truth.times.items() if left is not None}
        await wait_rows(database, lambda rows: set(rows) == ended, timeout=15)
        landed = time.monotonic() - back_at

        # Django's connection recovered without a restart: a fresh lookup and a page both work.
        probe = await Client.connect(server.url, "reader-probe")
        state = await probe.join(unseen)
        assert state["type"] == "room_state" and state["count"] == 1, state
        status = await asyncio.to_thread(http_get, f"http://127.0.0.1:{server.port}/articles/{database.slugs[0]}/")
        assert status == 200

        for reader in [observer, readers[0], readers[3], late]:
            await reader.close()
        truth.ended(observer, room, "closed")
        truth.ended(readers[0], room, "closed")
        truth.ended(readers[3], other, "closed")
        truth.ended(late, room, "closed")
        await probe.close()
        rows = await wait_rows(database, lambda rows: set(truth.times) <= set(rows), timeout=10)
        output = server.output

    rows = {key: value for key, value in rows.items() if key[1] != unseen}  # the probe's visit may be too short
    assert set(rows) == set(truth.times)
    for key, seconds in truth.durations().items():
        assert rows[key][0] == pytest.approx(seconds, abs=1.0), (key, rows[key], seconds)
        assert rows[key][1] == truth.reasons[key]
    crash = output.find("Exception inside application")
    assert crash < 0, output[crash - 300:crash + 3000]
    assert "database back, 2 held-back sessions written" in output
    assert "lost" not in output
    print(f"\n{outage}: outage {outage_seconds:.1f} s, {len(ended)} sessions held back, landed {landed:.2f} s "
          f"after the database was back; {len(rows)} rows, durations within "
          f"{max(abs(rows[k][0] - s) for k, s in truth.durations().items()):.2f} s of the truth")


async def test_a_backlog_overflow_during_an_outage_is_logged_with_a_count(database, proxy, redis_url, redis_prefix):
    room = f"article:{database.pks[0]}"
    env = server_env(redis_url, through(proxy, database), redis_prefix, min_session_seconds=1,
                     checkpoint_seconds=600, history_backlog=2)
    with DaphneServer(env, name="outage-overflow") as server:
        readers = []
        for n in range(5):
            reader = await Client.connect(server.url, f"overflow-{n:04d}")
            assert (await reader.join(room))["type"] == "room_state"
            readers.append(reader)
        await asyncio.sleep(1.2)
        proxy.refuse()
        for reader in readers:
            await reader.close()
            await asyncio.sleep(0.1)  # one at a time, in order
        deadline = time.monotonic() + 10
        while "reading sessions lost (3 in all)" not in server.output:
            assert time.monotonic() < deadline, server.output
            await asyncio.sleep(0.1)
        proxy.restore()
        rows = await wait_rows(database, lambda rows: len(rows) == 2, timeout=15)
        await asyncio.sleep(1.0)
        output = server.output
    assert set(rows) == {(reader.you[room], room) for reader in readers[3:]}, "the newest sessions are kept"
    assert len(await rows_of(database)) == 2
    assert re.findall(r"backlog full \(PRESENCE_HISTORY_BACKLOG=2\), 1 reading sessions lost \((\d) in all\)",
                      output) == ["1", "2", "3"]


async def test_joining_a_never_seen_room_during_an_outage_is_a_clean_error(database, proxy, redis_url, redis_prefix):
    unseen = f"article:{database.pks[2]}"
    env = server_env(redis_url, through(proxy, database), redis_prefix)
    with DaphneServer(env, name="outage-unseen") as server:
        probe = await Client.connect(server.url, "reader-probe")
        proxy.refuse()
        await probe.send_json(type="join", room=unseen, ref="unseen")
        frame = await probe.wait_for_frame(lambda f: f["type"] in ("room_state", "error"), 3 * CONNECT_TIMEOUT + 5)
        assert frame["type"] == "error" and frame["code"] == "unavailable" and frame["ref"] == "unseen", frame
        await probe.send_json(type="ping")  # the connection lives on
        await probe.wait_for_frame(lambda f: f["type"] == "pong")
        proxy.restore()
        state = await probe.join(unseen)
        assert state["type"] == "room_state" and state["count"] == 1, state
        await probe.close()
