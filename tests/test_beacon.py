"""The reading-position beacon: origin, validation, identity, and the session row."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings
from django.utils import timezone

from presence import identity, reading_sessions
from presence.models import EndReason, ReadingSession

pytestmark = pytest.mark.usefixtures("fresh_caches")

URL = "/api/presence/beacon/"
SESSION = "abcdefgh12345678"
ORIGIN = "http://localhost"


@pytest.fixture
def article(db):
    from blog.models import Article

    return Article.objects.create(title="Beacon", slug="beacon", body="Words. " * 20)


def post(client, body, origin=ORIGIN, referer=None, content_type="text/plain;charset=UTF-8"):
    headers = {}
    if origin:
        headers["HTTP_ORIGIN"] = origin
    if referer:
        headers["HTTP_REFERER"] = referer
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(URL, data=data, content_type=content_type, **headers)


def session_row(room: str, reader_id: str, **fields) -> ReadingSession:
    defaults = dict(
        process="p1", room=room, object_id=room.split(":")[1], reader_id=reader_id,
        started_at=timezone.now() - timedelta(minutes=5), furthest_position=0.5, last_position=0.5,
    )
    defaults.update(fields)
    return ReadingSession.objects.create(**defaults)


def test_records_into_the_latest_session(client, article):
    room = f"article:{article.pk}"
    reader = identity.reader_id(identity.for_session(SESSION), room)  # its id in that room, as history has it
    old = session_row(room, reader, started_at=timezone.now() - timedelta(hours=1), furthest_position=0.2)
    latest = session_row(room, reader)
    response = post(client, {"session": SESSION, "room": room, "position": 0.8})
    assert response.status_code == 204
    latest.refresh_from_db()
    old.refresh_from_db()
    assert (latest.last_position, latest.furthest_position) == (0.8, 0.8)
    assert old.furthest_position == 0.2
    assert reading_sessions.final_position(room, reader) == 0.8

    # Scrolling back up: the last position drops, the furthest stays.
    assert post(client, {"session": SESSION, "room": room, "position": 0.3}).status_code == 204
    latest.refresh_from_db()
    assert (latest.last_position, latest.furthest_position) == (0.3, 0.8)


def test_kept_in_the_cache_when_the_row_is_not_written_yet(client, article):
    room = f"article:{article.pk}"
    reader = identity.reader_id(identity.for_session(SESSION), room)
    session_row(room, reader, started_at=timezone.now() - timedelta(days=2))  # too old to be "this" session
    assert post(client, {"session": SESSION, "room": room, "position": 1}).status_code == 204
    assert reading_sessions.final_position(room, "someone-else") is None
    assert async_to_sync(reading_sessions.afinal_position)(room, reader) == 1.0
    assert reading_sessions.final_position(room, reader) is None  # taken by the leave that used it
    assert ReadingSession.objects.get().last_position == 0.5



def test_an_earlier_visits_closed_row_does_not_keep_it_from_this_visits_leave(client, article):
    """The latest row closed a minute ago: this beacon may be a visit's whose row is not written yet."""
    room = f"article:{article.pk}"
    reader = identity.reader_id(identity.for_session(SESSION), room)
    now = timezone.now()
    session_row(room, reader, ended_at=now - timedelta(minutes=1), end_reason=EndReason.LEFT)
    assert post(client, {"session": SESSION, "room": room, "position": 0.7}).status_code == 204
    assert reading_sessions.final_position(room, reader) == 0.7

    # Closed a moment ago: its leave was written first, the position was its own and waits for no leave.
    session_row(room, reader, started_at=now - timedelta(seconds=40), ended_at=now - timedelta(seconds=1),
                end_reason=EndReason.CLOSED)
    assert post(client, {"session": SESSION, "room": room, "position": 0.8}).status_code == 204
    assert ReadingSession.objects.order_by("-started_at").first().last_position == 0.8
    assert reading_sessions.final_position(room, reader) is None

def test_signed_in_user_is_the_identity(client, article, django_user_model):
    user = django_user_model.objects.create_user("bea", password="pw")
    client.force_login(user)
    room = f"article:{article.pk}"
    row = session_row(room, identity.reader_id(identity.for_user(user.pk), room))
    # No CSRF token (a beacon cannot send one), and the session field is ignored.
    client.handler.enforce_csrf_checks = True
    assert post(client, {"session": SESSION, "room": room, "position": 0.9}).status_code == 204
    row.refresh_from_db()
    assert row.last_position == 0.9


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "JSON object"),
        ([1, 2], "JSON object"),
        ({"session": SESSION, "room": "article:1", "position": 1.5}, "[0, 1]"),
        ({"session": SESSION, "room": "article:1", "position": -0.1}, "[0, 1]"),
        ({"session": SESSION, "room": "article:1", "position": "0.5"}, "finite number"),
        ({"session": SESSION, "room": "article:1", "position": True}, "finite number"),
        ('{"session": "abcdefgh12345678", "room": "article:1", "position": NaN}', "finite number"),
        ('{"session": "abcdefgh12345678", "room": "article:1", "position": Infinity}', "finite number"),
        ({"session": SESSION, "room": "nope", "position": 0.5}, "invalid room"),
        ({"session": SESSION, "room": "article:999999", "position": 0.5}, "invalid room"),
        ({"session": SESSION, "room": "secret:1", "position": 0.5}, "invalid room"),
        ({"session": "bad id!", "room": "ROOM", "position": 0.5}, "session"),
        ({"room": "ROOM", "position": 0.5}, "session is required"),
        ({"session": SESSION, "room": "ROOM", "position": 0.5, "pad": "x" * 1100}, "1024 bytes"),
    ],
)
def test_bad_input_is_400_with_a_message(client, article, body, message):
    if isinstance(body, dict) and body.get("room") == "ROOM":
        body["room"] = f"article:{article.pk}"
    response = post(client, body)
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert ReadingSession.objects.count() == 0


@pytest.mark.parametrize(
    ("origin", "referer", "status"),
    [
        ("http://evil.example", None, 403),
        (None, None, 403),
        ("null", None, 403),
        (None, "http://evil.example/articles/x/", 403),
        (None, "http://localhost/articles/x/", 204),
        ("http://testserver", None, 204),  # the page's own origin (the test client's host)
        # Scheme and port count, not the host alone (docs/security.md, "Origins"):
        ("http://localhost:8000", None, 403),
        ("http://testserver:1", None, 403),
        ("ftp://localhost", None, 403),
        (None, "ftp://localhost/articles/x/", 403),
        (None, "http://localhost:1/articles/x/", 403),
    ],
)
def test_origin_or_referer_must_be_allowed(client, article, origin, referer, status):
    body = {"session": SESSION, "room": f"article:{article.pk}", "position": 0.5}
    assert post(client, body, origin=origin, referer=referer).status_code == status


@override_settings(PRESENCE_ALLOWED_ORIGINS=["https://blog.example", "http://127.0.0.1:1"])
def test_allowed_origins_setting(client, article):
    body = {"session": SESSION, "room": f"article:{article.pk}", "position": 0.5}
    assert post(client, body, origin="https://blog.example").status_code == 204
    assert post(client, body, origin="http://127.0.0.1:1").status_code == 204  # listed with its port
    assert post(client, body, origin="http://blog.example").status_code == 403  # listed for https only
    assert post(client, body, origin="https://blog.example:8443").status_code == 403


@override_settings(ALLOWED_HOSTS=["blog.example"], SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_behind_a_tls_proxy_only_https_pages_may_send(client, article):
    body = json.dumps({"session": SESSION, "room": f"article:{article.pk}", "position": 0.5})
    secure = {"HTTP_HOST": "blog.example", "HTTP_X_FORWARDED_PROTO": "https", "content_type": "text/plain"}
    assert client.post(URL, body, HTTP_ORIGIN="https://blog.example", **secure).status_code == 204
    assert client.post(URL, body, HTTP_ORIGIN="http://blog.example", **secure).status_code == 403


def test_a_position_of_minus_zero_is_recorded_as_zero(client, article):
    room = f"article:{article.pk}"
    row = session_row(room, identity.reader_id(identity.for_session(SESSION), room))
    assert post(client, '{"session": "abcdefgh12345678", "room": "ROOM", "position": -0.0}'.replace(
        "ROOM", room)).status_code == 204
    row.refresh_from_db()
    assert str(row.last_position) == "0.0" and str(reading_sessions.final_position(room, row.reader_id)) == "0.0"


@override_settings(PRESENCE_API_THROTTLE_RATE="2/min")
def test_throttled_like_the_public_api(client, article):
    body = {"session": SESSION, "room": f"article:{article.pk}", "position": 0.5}
    assert [post(client, body).status_code for _ in range(3)] == [204, 204, 429]


def test_the_final_positions_follow_a_change_of_caches(client, article):
    """``reading_sessions`` keeps one cache instance per process; it forgets it on ``setting_changed``
    itself (``presence/conf.py`` only reloads the ``PRESENCE_*`` settings)."""
    room = f"article:{article.pk}"
    reader = identity.reader_id(identity.for_session(SESSION), room)
    reading_sessions.record_final_position(room, reader, 0.6)
    other = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "beacon-other"}}
    with override_settings(CACHES=other):
        assert reading_sessions.final_position(room, reader) is None
        reading_sessions.record_final_position(room, reader, 0.7)
        assert reading_sessions.final_position(room, reader) == 0.7
    assert reading_sessions.final_position(room, reader) == 0.6
