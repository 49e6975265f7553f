"""Real Daphne processes sharing one real Redis, driven by real WebSocket clients.

What only real processes show: counts that agree across processes, a killed process's
readers reaped within 20 s (protocol, "Liveness"), a graceful stop releasing at once,
an idle spell that the hub's channel-layer receive loop survives, the Origin check.
Each test has its own Redis key prefix (``redis_prefix``) and its own servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.support.servers import ROOT, Client, DaphneServer, migrate_database, server_env

pytestmark = [pytest.mark.processes, pytest.mark.redis, pytest.mark.slow]

REAP_DEADLINE = 20.0  # protocol: a dead process's readers leave every count within 20 s
GRACEFUL_DEADLINE = 5.0  # a graceful stop releases at once, well before reaping could


@pytest.fixture(scope="session")
def site_db(redis_url, tmp_path_factory):
    """A SQLite database migrated once under the process settings: its URL and the seeded article pks."""
    url, pks = migrate_database(tmp_path_factory.mktemp("presence-processes"), redis_url)
    assert len(pks) >= 2, "the blog's data migration should seed articles"
    return url, pks


@pytest.fixture
async def clients(servers):
    """``await connect(server, session)`` -> a ``Client`` past its ``hello``; closed before servers stop."""
    opened: list[Client] = []

    async def connect(server: DaphneServer, session: str | None = None, name: str | None = None) -> Client:
        client = await Client.connect(server.url, session, name=f"{name or session or 'conn'}@{server.name}")
        opened.append(client)
        return client

    yield connect
    await asyncio.gather(*(client.close() for client in opened))


async def all_until(clients: list[Client], condition, timeout: float) -> None:  # noqa: ASYNC109
    await asyncio.gather(*(client.wait_until(condition, timeout) for client in clients))


def reader_at(client: Client, room: str, reader: str, position: float):
    """A predicate: a ``room`` frame showing ``reader`` at ``position``."""

    def match(frame: dict) -> bool:
        return (
            frame["type"] == "room"
            and frame["room"] == room
            and any(update["id"] == reader and update["position"] == position for update in frame["updates"])
        )

    return match


def left_since(client: Client, mark: int, room: str) -> set[str]:
    """Reader ids listed in ``left`` by the room frames the client read after ``mark``."""
    return {
        rid
        for frame in client.frames[mark:]
        if frame["type"] == "room" and frame["room"] == room
        for rid in frame["left"]
    }


# -- a. two processes, one count ------------------------------------------------------


async def test_two_processes_agree_on_counts_and_progress(servers, clients, room):
    a, b = servers("a"), servers("b")
    one_a = await clients(a, "reader-one")  # one browser, a tab on each process
    one_b = await clients(b, "reader-one")
    two_a = await clients(a, "reader-two")
    three_b = await clients(b, "reader-three")
    four_a = await clients(a, "reader-four")  # online, in no room
    alone_b = await clients(b)  # no session: this connection alone
    assert one_a.reader == one_b.reader
    everyone = [one_a, one_b, two_a, three_b, four_a, alone_b]
    in_room = [one_a, one_b, two_a, three_b]
    for client in in_room:
        assert (await client.join(room))["type"] == "room_state"

    # Distinct readers: one, two, three, four and the lone connection; reader one's tabs once.
    await all_until(everyone, lambda c: c.online == 5, timeout=10)
    await all_until(in_room, lambda c: c.counts.get(room) == 3, timeout=10)

    # Progress on A reaches B's clients in a coalesced room frame.
    await two_a.send_json(type="progress", room=room, position=0.25)
    await three_b.wait_for_frame(reader_at(three_b, room, two_a.you[room], 0.25), timeout=10)
    await one_b.wait_for_frame(reader_at(one_b, room, two_a.you[room], 0.25), timeout=10)

    # One reader, two tabs on two processes: the newest update wins everywhere.
    await one_a.send_json(type="progress", room=room, position=0.4)
    await three_b.wait_for_frame(reader_at(three_b, room, one_a.you[room], 0.4), timeout=10)
    await one_b.send_json(type="progress", room=room, position=0.8)
    await two_a.wait_for_frame(reader_at(two_a, room, one_a.you[room], 0.8), timeout=10)
    await three_b.wait_for_frame(reader_at(three_b, room, one_a.you[room], 0.8), timeout=10)

    # A third tab of reader one on each process: still three readers, reader one at 0.8.
    for server in (a, b):
        tab = await clients(server, "reader-one", name="third-tab")
        state = await tab.join(room)
        assert state["count"] == 3, state
        positions = {r["id"]: r["position"] for r in state["readers"]}
        assert positions == {one_a.you[room]: 0.8, two_a.you[room]: 0.25, three_b.you[room]: None}, state
        assert tab.you[room] == one_a.you[room] == one_b.you[room]  # one reader: one id in the room
    await all_until(everyone, lambda c: c.online == 5, timeout=5)


# -- b, c. a process dies, or stops -----------------------------------------------------


@dataclass
class Doomed:
    """Two processes; 4 readers online, 3 in the room; reader ``stays`` has a tab on each."""

    doomed: DaphneServer
    survivor: DaphneServer
    survivors: list[Client]  # the clients of the survivor
    gone: str  # the reader only the doomed process has
    stays: str


async def _two_processes_with_readers(servers, clients, room, before=None) -> Doomed:
    doomed, survivor = servers("doomed"), servers("survivor")
    if before is not None:
        await before(doomed)
    both_d = await clients(doomed, "both-processes")
    both_s = await clients(survivor, "both-processes")
    only_d = await clients(doomed, "only-doomed")
    no_room_d = await clients(doomed, "doomed-no-room")
    stay_s = await clients(survivor, "only-survivor")
    for client in (both_d, both_s, only_d, stay_s):
        await client.join(room)
    await all_until([both_d, both_s, only_d, no_room_d, stay_s], lambda c: c.online == 4, timeout=10)
    await all_until([both_d, both_s, only_d, stay_s], lambda c: c.counts.get(room) == 3, timeout=10)
    return Doomed(doomed, survivor, [both_s, stay_s], only_d.you[room], both_s.you[room])


async def _converged(setup: Doomed, room: str, deadline: float) -> float:
    """Seconds until each survivor's client sees 2 online, 2 in the room, and the gone reader in ``left``."""
    marks = {client: len(client.frames) for client in setup.survivors}
    started = time.monotonic()

    def done(c: Client) -> bool:
        return c.online == 2 and c.counts.get(room) == 2 and setup.gone in left_since(c, marks[c], room)

    await all_until(setup.survivors, done, timeout=deadline)
    elapsed = time.monotonic() - started
    for client in setup.survivors:
        left = left_since(client, marks[client], room)
        assert left == {setup.gone}, f"{client.name}: left={left}; a reader with a tab on the survivor stays"
    return elapsed


async def _fresh_state(setup: Doomed, clients, room: str) -> dict:
    """``room_state`` for a new reader on the survivor: the survivor's readers and itself."""
    fresh = await clients(setup.survivor, "fresh-reader")
    state = await fresh.join(room)
    expected = {setup.stays, setup.survivors[1].you[room], fresh.you[room]}
    assert {r["id"] for r in state["readers"]} == expected, state
    assert state["count"] == 3, state
    return state


async def test_killed_process_readers_leave_every_count_within_20s(servers, clients, room, record_property):
    setup = await _two_processes_with_readers(servers, clients, room)
    setup.doomed.kill()  # SIGKILL: no goodbye; only the reaper on the survivor can notice
    elapsed = await _converged(setup, room, REAP_DEADLINE + 5)
    record_property("sigkill_convergence_seconds", round(elapsed, 2))
    print(f"\nSIGKILL convergence: {elapsed:.2f} s")
    assert elapsed <= REAP_DEADLINE
    await _fresh_state(setup, clients, room)


@pytest.fixture
def slow_request():
    """``await send(server)``: an HTTP request whose head is still arriving, as from a slow client.

    While Daphne holds such a connection (no application yet), Daphne 4.2's SIGTERM handler,
    ``kill_all_applications``, raises KeyError on it and cancels no application at all.
    """
    writers: list[asyncio.StreamWriter] = []

    async def send(server: DaphneServer) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writers.append(writer)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n")  # no blank line: the head is unfinished
        await writer.drain()

    yield send
    for writer in writers:
        writer.close()


@pytest.mark.parametrize("with_slow_request", [False, True], ids=["websockets-only", "with-a-slow-http-request"])
async def test_terminated_process_releases_its_readers_at_once(
    servers, clients, room, slow_request, with_slow_request, record_property
):
    """Daphne cancels every application on SIGTERM and each consumer unregisters, releasing its
    claims; the survivor's counts drop well before reaping could drop them."""
    before = slow_request if with_slow_request else None  # sent before the readers connect
    setup = await _two_processes_with_readers(servers, clients, room, before)
    setup.doomed.terminate()
    try:
        elapsed = await _converged(setup, room, GRACEFUL_DEADLINE)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n-- the terminated process's output --\n{setup.doomed.output}") from None
    record_property("sigterm_convergence_seconds", round(elapsed, 2))
    print(f"\nSIGTERM convergence: {elapsed:.2f} s")
    assert await asyncio.to_thread(setup.doomed.wait, 15) == 0, setup.doomed.output
    await _fresh_state(setup, clients, room)


# -- d. an idle spell -------------------------------------------------------------------


IDLE_SECONDS = 22  # more than twice the silence timeout at the heartbeat below, and four times the 5 s trap
HEARTBEAT = 4  # seconds (silence timeout: 10 s); the default 20 s would make this test idle for minutes


async def test_idle_connection_and_hub_survive_an_idle_spell(servers, clients, room):
    """A client that only pings stays open past the silence timeout, and the hub's channel-layer
    receive loop, idle for several of redis-py 8's socket timeouts, still delivers another
    process's progress (the socket_timeout trap, django/channels_redis#422, kills idle blocking
    reads after 5 s)."""
    idle_server, other_server = servers("idle", heartbeat=HEARTBEAT), servers("other", heartbeat=HEARTBEAT)
    idle = await clients(idle_server, "idle-reader")
    await idle.join(room)
    started = time.monotonic()
    while (remaining := IDLE_SECONDS - (time.monotonic() - started)) > 0:
        await asyncio.sleep(min(idle.heartbeat, remaining))  # idle on purpose: the protocol's ping cadence
        await idle.send_json(type="ping")
        await idle.wait_for_frame(lambda f: f["type"] == "pong", timeout=5)

    # Only now does the other process get a reader: its progress reaches the idle process
    # through the room's channel-layer group, not through the store.
    other = await clients(other_server, "busy-reader")
    await other.join(room)
    await other.send_json(type="progress", room=room, position=0.6)
    await idle.wait_for_frame(reader_at(idle, room, other.you[room], 0.6), timeout=10)
    assert idle.counts[room] == 2
    # The hub retries a failed receive, so delivery alone would hide the trap: its log must be clean
    # (with the trap, "channel layer receive failed ... TimeoutError" every 5 s).
    for server in (idle_server, other_server):
        assert "Traceback" not in server.output, f"{server.name} logged an exception:\n{server.output}"


# -- e. the Origin check ------------------------------------------------------------------


async def test_handshake_without_an_allowed_origin_is_refused(servers):
    server = servers("origin")
    for origin in ("http://evil.example", None):  # foreign, then no Origin header at all
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(server.url + "?session=origin-test", origin=origin, open_timeout=10)
        assert refused.value.response.status_code == 403, origin
    accepted = await websockets.connect(server.url + "?session=origin-test", origin="http://localhost")
    await accepted.close()


# -- f, g. reading history when a process stops or dies -----------------------------------


def history_rows(site_db, reader: str) -> list[dict]:
    """The reading sessions of one reader, read straight from the servers' database."""
    path = site_db[0].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM presence_readingsession WHERE reader_id = ?", (reader,)).fetchall()
    return [dict(row) for row in rows]


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


async def test_sigterm_writes_every_open_session(servers, clients, room, site_db):
    server = servers("writer", min_session_seconds=1)
    readers = [await clients(server, f"sigterm-reader-{n}") for n in range(3)]
    for n, client in enumerate(readers):
        await client.join(room)
        await client.send_json(type="progress", room=room, position=0.2 * (n + 1))
    await readers[0].send_json(type="ping")
    await readers[0].wait_for_frame(lambda f: f["type"] == "pong")
    started = time.monotonic()
    await asyncio.sleep(2.5)  # real reading time for the durations to measure
    server.terminate()
    terminated = time.monotonic() - started
    assert await asyncio.to_thread(server.wait, 15) == 0, server.output
    exited = time.monotonic() - started
    for n, client in enumerate(readers):
        (row,) = history_rows(site_db, client.you[room])
        assert row["end_reason"] == "shutdown", row
        # Each session ends between the SIGTERM and the process's exit (the interpreter's own
        # teardown after the last write is no reading time), on the server's clock.
        assert terminated - 0.5 <= row["duration_seconds"] <= exited + 0.5, (terminated, exited, row)
        assert row["duration_seconds"] == pytest.approx(seconds_between(row["started_at"], row["ended_at"]), abs=0.01)
        assert row["last_position"] == pytest.approx(0.2 * (n + 1)), row


async def test_sigkill_then_prune_recovers_sessions_losing_at_most_one_checkpoint(servers, clients, room, site_db,
                                                                                 redis_url, redis_prefix):
    tunables = {"checkpoint_seconds": 1, "min_session_seconds": 1, "process_ttl": 1}
    server = servers("crasher", **tunables)
    reader = await clients(server, "sigkill-reader")
    await reader.join(room)
    await reader.send_json(type="progress", room=room, position=0.7)
    await reader.send_json(type="ping")
    await reader.wait_for_frame(lambda f: f["type"] == "pong")
    started = time.monotonic()
    await asyncio.sleep(3.5)  # several checkpoints
    server.kill()
    read_for = time.monotonic() - started
    (row,) = history_rows(site_db, reader.you[room])
    assert row["end_reason"] == "" and row["ended_at"] is None, row  # open, as checkpointed

    env = server_env(redis_url, site_db[0], redis_prefix, **tunables)
    deadline = time.monotonic() + 15
    while row["end_reason"] != "crash-recovered":
        assert time.monotonic() < deadline, row
        await asyncio.sleep(1)  # prune closes what was not checkpointed for 2 checkpoints + the process TTL
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "manage.py", "presence_prune"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        (row,) = history_rows(site_db, reader.you[room])
    assert row["ended_at"] == row["checkpoint_at"]
    assert read_for - 1.5 <= row["duration_seconds"] <= read_for + 0.5, (read_for, row)  # lost <= one checkpoint
    assert row["last_position"] == 0.7
