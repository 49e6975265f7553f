"""Reading sessions written from the hub's events, with server-clock durations.

(Real processes stopped with SIGTERM or SIGKILL: test_processes.py.)
"""

from __future__ import annotations

import asyncio
import io
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import OperationalError
from django.test import override_settings

from presence import events, history, identity, reading_sessions, rooms
from presence.models import EndReason, OnlinePeak, ReadingSession

pytestmark = [pytest.mark.django_db(transaction=True)]


@sync_to_async
def sessions() -> list[ReadingSession]:
    return list(ReadingSession.objects.order_by("started_at", "reader_id").select_related("user"))


async def settle(client) -> None:
    await client.send_json_to({"type": "ping"})
    while (await client.receive_json_from())["type"] != "pong":
        pass


async def reader_in(ws, room: str, session: str, cookie: str | None = None):
    client = await ws(session=session, cookie=cookie)
    await client.receive_json_from()
    await client.send_json_to({"type": "join", "room": room})
    await client.receive_json_from()
    return client


@pytest.mark.parametrize("how", ["leave", "close", "timeout", "shutdown", "identify"])
async def test_a_session_is_written_with_server_clock_duration_for_every_end(ws, hub, clock, article, how):
    room = f"article:{article.pk}"
    start = clock()
    client = await reader_in(ws, room, "historysess1")
    for position in (0.3, 0.8, 0.5):
        clock.advance(20)
        await client.send_json_to({"type": "progress", "room": room, "position": position, "name": "Ada"})
        await settle(client)
    clock.advance(12)
    if how == "leave":
        await client.send_json_to({"type": "leave", "room": room})
        await settle(client)
        await hub.settled()  # the session is written after the frame is handled
    elif how == "close":
        await client.disconnect()
    elif how == "timeout":
        clock.advance(39)  # silent for 51 s: dropped, its session ended when last heard from
        await hub.tick()
    elif how == "shutdown":
        client.future.cancel()
        with pytest.raises(BaseException):  # noqa: B017 - CancelledError
            await client.future
    else:
        await client.send_json_to({"type": "identify", "session": "historysess2"})
        await client.receive_json_from()
    (row,) = [r for r in await sessions() if r.ended_at is not None]
    expected_seconds = 72 if how != "timeout" else 60
    assert row.end_reason == {"leave": "left", "close": "closed", "timeout": "timeout", "shutdown": "shutdown",
                              "identify": "identify"}[how]
    assert row.duration_seconds == pytest.approx(expected_seconds, abs=0.01)
    assert row.started_at.timestamp() == pytest.approx(start, abs=0.001)
    assert (row.ended_at - row.started_at).total_seconds() == pytest.approx(expected_seconds, abs=0.01)
    assert (row.furthest_position, row.last_position) == (0.8, 0.5)
    assert row.room == room and row.title == article.title and row.object_id == str(article.pk)
    assert row.name == "Ada" and row.user is None
    # The id other readers saw in that room (protocol 1.1), not the reader's site-wide id.
    assert row.reader_id == identity.reader_id("anon:historysess1", room) != identity.reader_id("anon:historysess1")


async def test_a_client_clock_hours_off_changes_nothing(ws, hub, clock, article):
    """The protocol carries no client time; a client that sends one anyway is ignored."""
    room = f"article:{article.pk}"
    client = await reader_in(ws, room, "skewedclock1")
    skewed = int((clock() - 5 * 3600) * 1000)
    for _ in range(3):
        clock.advance(10)
        await client.send_json_to({"type": "progress", "room": room, "position": 0.5, "updated_at": skewed,
                                   "joined_at": skewed, "client_time": skewed})
        await settle(client)
    await client.send_json_to({"type": "leave", "room": room})
    await settle(client)
    await hub.settled()
    (row,) = await sessions()
    assert row.duration_seconds == pytest.approx(30, abs=0.01)
    state_times = [r.updated_at for r in (await hub.store.room_state(room)).readers]
    assert all(t >= int((clock() - 60) * 1000) for t in state_times)


async def test_sessions_shorter_than_the_minimum_are_not_stored(ws, clock, article):
    room = f"article:{article.pk}"
    client = await reader_in(ws, room, "shortvisit01")
    clock.advance(4.9)
    await client.disconnect()
    assert await sessions() == []
    with override_settings(PRESENCE_MIN_SESSION_SECONDS=1):
        client = await reader_in(ws, room, "shortvisit02")
        clock.advance(1.5)
        await client.disconnect()
        assert len(await sessions()) == 1


async def test_signed_in_readers_are_linked_to_their_user(ws, clock, article, user_cookie):
    room = f"article:{article.pk}"
    client = await reader_in(ws, room, "usersession1", cookie=await user_cookie("dora"))
    clock.advance(30)
    await client.disconnect()
    (row,) = await sessions()
    assert row.user.username == "dora"


async def test_open_sessions_are_checkpointed_then_closed(ws, hub, clock, article):
    room = f"article:{article.pk}"
    client = await reader_in(ws, room, "checkpoint01")
    await client.send_json_to({"type": "progress", "room": room, "position": 0.4})
    await settle(client)
    clock.advance(30)
    await hub.tick()
    (row,) = await sessions()
    assert row.end_reason == EndReason.OPEN and row.ended_at is None
    assert row.duration_seconds == pytest.approx(30, abs=0.01) and row.last_position == 0.4
    clock.advance(15)
    await client.disconnect()
    (row,) = await sessions()
    assert row.end_reason == "closed" and row.duration_seconds == pytest.approx(45, abs=0.01)


async def test_a_checkpoint_that_arrives_after_the_end_does_not_reopen_the_session(ws, hub, clock, article):
    """A checkpoint is taken, the reader leaves, and the checkpoint reaches the history after the
    end (its room titles were being looked up: the room cache expires every five minutes). The
    session stays closed; the hour's soak found sessions left open so, for ``presence_prune``."""
    room = f"article:{article.pk}"
    client = await reader_in(ws, room, "lateckpt0001")
    clock.advance(30)
    late = hub.checkpoint()
    clock.advance(5)
    await client.disconnect()
    (row,) = await sessions()
    assert row.end_reason == "closed"
    await events.emit(late)
    (row,) = await sessions()
    assert row.end_reason == "closed" and row.duration_seconds == pytest.approx(35, abs=0.01)
    # A later session of the same reader in the room is checkpointed as usual.
    client = await reader_in(ws, room, "lateckpt0001")
    clock.advance(30)
    await events.emit(hub.checkpoint())
    assert [r.end_reason for r in await sessions()] == ["closed", EndReason.OPEN]
    await client.disconnect()


async def test_prune_closes_what_a_crashed_process_left_open(ws, hub, clock, article):
    room = f"article:{article.pk}"
    client = await reader_in(ws, room, "crashvictim1")
    clock.advance(30)
    await hub.tick()  # checkpoint at +30 s
    clock.advance(25)  # then the process dies: no leave is ever recorded
    (row,) = await sessions()
    checkpoint = row.checkpoint_at
    await sync_to_async(call_command)("presence_prune", stdout=io.StringIO())
    (row,) = await sessions()
    assert row.end_reason == EndReason.OPEN  # a live process may still checkpoint it
    closed, _ = await sync_to_async(reading_sessions.prune)(checkpoint + timedelta(seconds=73))
    (row,) = await sessions()
    assert closed == 1 and row.end_reason == EndReason.CRASH_RECOVERED
    assert row.ended_at == checkpoint and row.duration_seconds == pytest.approx(30, abs=0.01)
    await client.disconnect()


async def test_prune_deletes_history_older_than_the_setting(ws, clock, article):
    room = f"article:{article.pk}"
    client = await reader_in(ws, room, "oldreader001")
    clock.advance(60)
    await client.disconnect()
    (row,) = await sessions()
    with override_settings(PRESENCE_HISTORY_DAYS=30):
        assert await sync_to_async(reading_sessions.prune)(row.started_at + timedelta(days=29)) == (0, 0)
        assert await sync_to_async(reading_sessions.prune)(row.started_at + timedelta(days=31)) == (0, 1)
    assert await sessions() == []


async def test_no_ip_or_user_agent_is_stored(ws, clock, article):
    room = f"article:{article.pk}"
    client = await reader_in(ws, room, "privacysess1")
    clock.advance(60)
    await client.disconnect()
    (row,) = await sessions()
    fields = {f.name for f in ReadingSession._meta.get_fields()}
    assert not fields & {"ip", "ip_address", "user_agent", "remote_addr"}
    values = " ".join(str(getattr(row, f.attname)) for f in ReadingSession._meta.concrete_fields)
    assert "privacysess1" not in values and "127.0.0.1" not in values


async def test_online_peak_rises_only(ws, hub, clock):
    clients = [await ws(session=f"peaksession{n}") for n in range(3)]
    for c in clients:
        await c.receive_json_from()  # hello: counted
    await hub.tick()
    await hub.tick()  # 3 held for two readings: sent, the peak
    for c in clients[:2]:
        await c.disconnect()
    clock.advance(1)
    await hub.tick()
    await hub.tick()
    peak = await sync_to_async(OnlinePeak.objects.get)()
    assert peak.count == 3


async def test_the_beacons_final_position_reaches_a_session_written_after_it(ws, clock, article):
    room = f"article:{article.pk}"
    client = await reader_in(ws, room, "beaconreader")
    await client.send_json_to({"type": "progress", "room": room, "position": 0.4})
    await settle(client)
    clock.advance(30)
    # The page is going away: its beacon arrives before the socket's close (the checkpoint row is
    # not written yet, so only the cache holds the position).
    reader = identity.reader_id("anon:beaconreader", room)
    assert not await sync_to_async(reading_sessions.record_final_position)(room, reader, 0.93)
    await client.disconnect()
    (row,) = await sessions()
    assert (row.last_position, row.furthest_position) == (0.93, 0.93)


# -- the database unavailable (reliability.md, section 4; real processes: test_db_outage.py) ----


class Outage:
    """Makes the recorder's writes fail as an unreachable database does, until ``end()``."""

    def __init__(self, monkeypatch):
        self.attempts = 0
        self.down = True
        self.writing = threading.Event()  # set while a write after the outage is under way
        self.release = threading.Event()  # cleared to hold such a write until set
        self.release.set()
        real = reading_sessions.write

        def write(rows, dropped):
            self.attempts += 1
            if self.down:
                raise OperationalError("connection refused (test outage)")
            self.writing.set()
            self.release.wait(5)
            real(rows, dropped)

        monkeypatch.setattr(reading_sessions, "write", write)
        monkeypatch.setattr(history.recorder, "retry_first", 0.05)
        monkeypatch.setattr(history.recorder, "retry_max", 0.1)
        monkeypatch.setattr(history.recorder, "_retry_delay", 0.05)

    def end(self) -> None:
        self.down = False


async def until(condition, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def test_a_leave_does_not_hold_up_the_next_article_while_its_session_is_written(ws, hub, clock, articles):
    """HTMX navigation: `leave` the article, `join` the next one. The next article's state must
    not wait for the previous session's database write (seconds on a busy SQLite)."""
    first, second = (f"article:{article.pk}" for article in articles[:2])
    writing = asyncio.Event()

    async def slow_database(sender, event, **kwargs):
        await writing.wait()

    events.reader_left.connect(slow_database, weak=False)
    try:
        client = await reader_in(ws, first, "navigating01")
        clock.advance(30)
        await client.send_json_to({"type": "leave", "room": first})
        await client.send_json_to({"type": "join", "room": second})
        state = await client.receive_json_from()
        assert (state["type"], state["room"]) == ("room_state", second)
    finally:
        writing.set()
        events.reader_left.disconnect(slow_database)
    await hub.settled()
    (row,) = await sessions()
    assert row.room == first and row.end_reason == EndReason.LEFT


async def test_a_checkpoint_being_written_does_not_hold_up_the_readers_frames(ws, hub, clock, article):
    """Every 30 s the open sessions are written together (seconds on a busy SQLite with a thousand
    readers). The tick wrote them holding the lock the flush needs: no move went out meanwhile."""
    room = f"article:{article.pk}"
    mover = await reader_in(ws, room, "checkpointmv")
    watcher = await reader_in(ws, room, "checkpointwt")
    writing, written = asyncio.Event(), asyncio.Event()

    async def slow_database(sender, event, **kwargs):
        writing.set()
        await written.wait()

    events.checkpoint.connect(slow_database, weak=False)
    try:
        clock.advance(30)
        ticking = asyncio.create_task(hub.tick())  # the checkpoint is due
        await asyncio.wait_for(writing.wait(), 5)
        await mover.send_json_to({"type": "progress", "room": room, "position": 0.5})
        await settle(mover)
        clock.advance(1)  # past the coalescing window of the tick's frame
        await asyncio.wait_for(hub.flush(), 5)
        seen = []
        while not any(update["position"] == 0.5 for update in seen):
            frame = await asyncio.wait_for(watcher.receive_json_from(), 5)
            seen += frame.get("updates", []) if frame["type"] == "room" else []
    finally:
        written.set()
        events.checkpoint.disconnect(slow_database)
    await ticking


async def test_sessions_wait_while_the_database_is_down_and_land_without_another_event(
    ws, clock, article, monkeypatch, caplog
):
    room = f"article:{article.pk}"
    outage = Outage(monkeypatch)
    readers = [await reader_in(ws, room, f"outagereader{n}") for n in range(4)]
    for n, client in enumerate(readers):
        clock.advance(10)
        await client.send_json_to({"type": "progress", "room": room, "position": (n + 1) / 10})
        await settle(client)
        await client.disconnect()
    assert history.recorder.backlog == 4 and history.recorder.failing
    assert outage.attempts <= 2, "while failing, events join the backlog; only the retry tries the database"
    assert await sessions() == []
    outage.end()
    await until(lambda: history.recorder.backlog == 0)  # the retry writes them: no event needed
    rows = sorted(await sessions(), key=lambda r: r.duration_seconds)
    assert [round(r.duration_seconds) for r in rows] == [10, 20, 30, 40]
    assert [r.last_position for r in rows] == [0.1, 0.2, 0.3, 0.4]
    assert {r.end_reason for r in rows} == {"closed"} and {r.title for r in rows} == {article.title}
    assert not history.recorder.failing and history.recorder.lost == 0
    assert "database back, 4 held-back sessions written" in caplog.text


async def test_a_full_backlog_logs_what_it_loses_with_a_count(ws, clock, article, monkeypatch, caplog):
    room = f"article:{article.pk}"
    outage = Outage(monkeypatch)
    with override_settings(PRESENCE_HISTORY_BACKLOG=2):
        for n in range(5):
            client = await reader_in(ws, room, f"overflowread{n}")
            clock.advance(10)
            await client.disconnect()
        lost = [r for r in caplog.records if r.levelname == "ERROR" and "lost" in r.getMessage()]
        assert history.recorder.lost == 3 and len(lost) == 3
        assert lost[-1].getMessage().endswith("1 reading sessions lost (3 in all)")
        outage.end()
        await until(lambda: history.recorder.backlog == 0)
    rows = await sessions()  # the newest two are kept
    assert {r.reader_id for r in rows} == {identity.reader_id(f"anon:overflowread{n}", room) for n in (3, 4)}


async def test_sessions_in_the_write_under_way_still_count_as_not_written(ws, clock, article, monkeypatch):
    room = f"article:{article.pk}"
    outage = Outage(monkeypatch)
    client = await reader_in(ws, room, "inflightread")
    clock.advance(20)
    await client.disconnect()
    outage.release.clear()
    outage.end()
    await until(outage.writing.is_set)  # the retry has taken the session and is writing it
    assert history.recorder.backlog == 1  # (the database cannot be read meanwhile: one sync thread)
    outage.release.set()
    await until(lambda: history.recorder.backlog == 0)
    assert len(await sessions()) == 1


async def test_a_title_unknown_during_the_outage_is_looked_up_when_written(ws, clock, article, monkeypatch):
    room = f"article:{article.pk}"
    outage = Outage(monkeypatch)
    client = await reader_in(ws, room, "titlelater01")
    clock.advance(20)

    async def unreachable(*args):
        raise OperationalError("connection refused (test outage)")

    rooms.cache_clear()  # the room's resolution expired during the outage
    monkeypatch.setattr(rooms, "_fetch_async", unreachable)
    await client.disconnect()
    assert history.recorder.backlog == 1
    outage.end()
    await until(lambda: history.recorder.backlog == 0)
    (row,) = await sessions()
    assert row.title == article.title and row.duration_seconds == pytest.approx(20, abs=0.01)


async def test_sessions_still_waiting_at_exit_are_logged_as_lost(ws, clock, article, monkeypatch, caplog):
    room = f"article:{article.pk}"
    Outage(monkeypatch)
    client = await reader_in(ws, room, "exitingread1")
    clock.advance(20)
    await client.disconnect()
    history.recorder._report_unwritten()  # what atexit runs
    assert "process exiting with 1 reading sessions never written" in caplog.text
    history.recorder.reset()  # or this process's own exit would report it


# -- errors that are not outages: reported once, never retried ---------------------------------


class TableRenamed:
    """The reading-session table gone, as when `migrate` was not run: a real database error on
    SQLite (OperationalError, "no such table") and PostgreSQL (ProgrammingError) alike."""

    def __init__(self):
        self.table = ReadingSession._meta.db_table

    def _rename(self, old: str, new: str) -> None:
        from django.db import connection

        with connection.schema_editor() as editor:
            editor.alter_db_table(ReadingSession, old, new)

    async def __aenter__(self):
        await sync_to_async(self._rename)(self.table, self.table + "_away")
        return self

    async def __aexit__(self, *exc_info):
        await sync_to_async(self._rename)(self.table + "_away", self.table)


async def test_an_error_that_is_no_outage_is_reported_once_and_never_retried(ws, clock, article, caplog):
    room = f"article:{article.pk}"
    async with TableRenamed():
        for n in range(3):
            client = await reader_in(ws, room, f"missingtable{n}")
            clock.advance(20)
            await client.disconnect()
        errors = [r for r in caplog.records if r.levelname == "ERROR" and r.name == "presence.history"]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        message = errors[0].getMessage()
        assert "a reading session could not be written" in message and "not retried" in message
        assert ReadingSession._meta.db_table in message  # the cause, as the database said it
        assert errors[0].exc_info is not None  # with its traceback
        assert "retrying" not in caplog.text and "held back" not in caplog.text
        assert not history.recorder.failing and history.recorder.backlog == 0 and history.recorder.lost == 3
        assert history.recorder._retry_task is None
    # The table is back: the next session is written as usual.
    client = await reader_in(ws, room, "tableisback1")
    clock.advance(20)
    await client.disconnect()
    assert [row.reader_id for row in await sessions()] == [identity.reader_id("anon:tableisback1", room)]


async def test_a_bad_session_in_a_batch_costs_only_itself(ws, clock, article, monkeypatch, caplog):
    """A checkpoint writes every open session at once; one that fails for a reason other than an
    outage must not take the others with it."""
    room = f"article:{article.pk}"
    real = reading_sessions.write

    def write(rows, dropped):
        if any(row["reader_id"] == identity.reader_id("anon:badsession01") for row in rows):
            raise ValueError("a session the database refuses")
        real(rows, dropped)

    monkeypatch.setattr(reading_sessions, "write", write)
    readers = [await reader_in(ws, room, session) for session in ("badsession01", "goodsession1", "goodsession2")]
    clock.advance(40)
    await history.recorder.on_checkpoint(None, events.Checkpoint(
        at=int(clock() * 1000), process="test-proc-a",
        sessions=[events.OpenSession(room, f"anon:{s}", identity.reader_id(f"anon:{s}"), None,
                                     int((clock() - 40) * 1000), None, None)
                  for s in ("badsession01", "goodsession1", "goodsession2")],
    ))
    written = {row.reader_id for row in await sessions()}
    assert written == {identity.reader_id("anon:goodsession1"), identity.reader_id("anon:goodsession2")}
    assert history.recorder.lost == 1 and not history.recorder.failing
    assert "ValueError: a session the database refuses" in caplog.text
    for client in readers:
        await client.disconnect()


# -- USE_TZ = False: naive datetimes in TIME_ZONE ------------------------------------------------


@override_settings(USE_TZ=False, TIME_ZONE="Asia/Shanghai")
async def test_with_use_tz_off_sessions_and_peaks_are_naive_in_the_time_zone(ws, clock, article):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    shanghai = ZoneInfo("Asia/Shanghai")
    room = f"article:{article.pk}"
    start = clock()
    client = await reader_in(ws, room, "naivetimes01")
    clock.advance(30)
    await client.disconnect()
    (row,) = await sessions()
    # The stored wall time is Shanghai's. (Read back here without its tzinfo: on PostgreSQL, psycopg's
    # loaders keep tagging values UTC after USE_TZ flips mid-run; tests/hosts/blog/test_history.py
    # runs with USE_TZ = False from the start and sees them naive on both databases.)
    assert row.started_at.replace(tzinfo=None) == datetime.fromtimestamp(int(start * 1000) / 1000,
                                                                          shanghai).replace(tzinfo=None)
    assert row.duration_seconds == pytest.approx(30, abs=0.01)

    # 01:30 in Shanghai is the evening before in UTC: the peak is the Shanghai day's.
    early = datetime(2026, 11, 30, 1, 30, tzinfo=shanghai)
    await history.recorder.on_online(None, events.OnlineCounted(count=4, at=int(early.timestamp() * 1000)))
    peak = await sync_to_async(OnlinePeak.objects.get)()
    assert (str(peak.date), peak.count) == ("2026-11-30", 4)
    assert peak.at.replace(tzinfo=None) == datetime(2026, 11, 30, 1, 30)
