"""Reading history in a blog with ``USE_TZ = False`` (naive datetimes, Shanghai time): what
readers read lands in the database, and the admin and the API compare like with like."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timedelta

import pytest
from asgiref.sync import sync_to_async

ROOM = "post:reading-in-the-dark"


def now_here() -> datetime:
    """The blog's wall clock: naive, in TIME_ZONE (Django sets the process's TZ from it)."""
    return datetime.now()


@pytest.mark.processes
@pytest.mark.slow
async def test_a_reading_session_and_the_days_peak_land_in_the_database(live_db, host_server, reader):
    from django.db import connection

    from presence.models import OnlinePeak, ReadingSession

    server = await asyncio.to_thread(host_server)
    before = now_here() - timedelta(seconds=2)
    client = await reader(server.ws, session="naivereader01")
    await client.send(type="join", room=ROOM)
    await client.wait_for(lambda f: f["type"] == "room_state")
    await client.send(type="progress", room=ROOM, position=0.6)
    await asyncio.sleep(6)  # longer than PRESENCE_MIN_SESSION_SECONDS (5), or the session is noise
    await client.send(type="leave", room=ROOM)

    def written():
        deadline = time.monotonic() + 10  # the server writes it after the leave, in its own time
        try:
            while not (found := list(ReadingSession.objects.filter(room=ROOM, started_at__gte=before,
                                                                   end_reason="left"))):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            return found, OnlinePeak.objects.filter(date=now_here().date()).first()
        finally:
            connection.close()  # this thread's: the test database is dropped at the end

    rows, peak = await sync_to_async(written)()
    assert rows, f"no reading session written; the server said:\n{server.output}"
    (row,) = rows
    assert row.started_at.tzinfo is None and before <= row.started_at <= now_here()
    assert row.duration_seconds >= 5 and row.furthest_position == 0.6

    assert peak is not None and peak.count >= 1 and peak.at.tzinfo is None, server.output
    assert "ValueError" not in server.output and "retrying" not in server.output


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_user("historian", "historian@example.com", "pw", is_staff=True,
                                                 is_superuser=True)
    client.force_login(user)
    return client


def session_at(started_at: datetime, reader_id: str, room: str = ROOM):
    from presence.models import ReadingSession

    return ReadingSession.objects.create(
        room=room, object_id=room.split(":")[1], title="夜间模式下的阅读", reader_id=reader_id,
        started_at=started_at, ended_at=started_at + timedelta(minutes=3), checkpoint_at=started_at,
        duration_seconds=180, furthest_position=0.95, last_position=0.95, end_reason="left",
    )


@pytest.mark.django_db
def test_the_admin_ranks_a_custom_period_of_local_days(staff):
    session_at(datetime(2026, 11, 29, 23, 30), "lateevening1")  # Shanghai time, as stored
    session_at(datetime(2026, 11, 30, 0, 30), "pastmidnight")
    page = staff.get("/zh-hans/admin/presence/readingsession/ranking/",
                     {"period": "custom", "since": "2026-11-30", "until": "2026-11-30"})
    assert page.status_code == 200
    (entry,) = page.context["articles"]
    assert entry["report"].room == ROOM and entry["report"].reads == 1  # the 30th in Shanghai, not in UTC
    assert staff.get("/zh-hans/admin/presence/readingsession/ranking/").status_code == 200  # last 7 days


@pytest.mark.django_db
def test_the_api_reads_offsets_into_the_blogs_time_zone(staff):
    session_at(datetime(2026, 11, 30, 7, 0), "sevenoclock1", room="post:hello-world")

    def rooms(**params):
        response = staff.get("/api/presence/history/", {"room": "post:hello-world", **params})
        assert response.status_code == 200, response.content
        return [row["reader_id"] for row in response.json()["results"]]

    assert rooms(since="2026-11-30T06:00:00+08:00") == ["sevenoclock1"]
    assert rooms(since="2026-11-30T08:00:00+08:00") == []  # 00:00 UTC: hours after 07:00 in Shanghai
    assert rooms(since="2026-11-29T22:30:00Z") == ["sevenoclock1"]  # 06:30 in Shanghai
    assert rooms(since="2026-11-30T07:00:00") == ["sevenoclock1"]  # naive: the blog's own time


@pytest.mark.django_db
def test_prune_closes_sessions_a_crashed_process_left_open_in_local_time():
    from django.core.management import call_command

    from presence.models import ReadingSession

    row = session_at(now_here() - timedelta(hours=2), "crashedproc1")
    ReadingSession.objects.filter(pk=row.pk).update(end_reason="", ended_at=None)
    fresh = session_at(now_here() - timedelta(seconds=5), "stillreading")
    ReadingSession.objects.filter(pk=fresh.pk).update(end_reason="", ended_at=None, checkpoint_at=now_here())
    call_command("presence_prune", stdout=open(os.devnull, "w"))
    row.refresh_from_db()
    fresh.refresh_from_db()
    assert (row.end_reason, row.ended_at) == ("crash-recovered", row.checkpoint_at)
    assert fresh.end_reason == ""  # checkpointed a moment ago (in the blog's time): still open
