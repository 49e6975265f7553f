"""Reporting queries: article ranking numbers, period bounds, daily online peaks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from blog.models import Article
from presence import reports
from presence.models import EndReason, OnlinePeak, ReadingSession
from tests.support.factories import reading_session

pytestmark = pytest.mark.django_db

SINCE = datetime(2026, 3, 1, tzinfo=UTC)
UNTIL = datetime(2026, 3, 8, tzinfo=UTC)


def session(room: str, reader: str, *, at: datetime = SINCE + timedelta(hours=1), **fields) -> ReadingSession:
    return reading_session(room, reader, started_at=at, **fields)


@pytest.fixture
def article():
    return Article.objects.create(title="Current title", slug="current-title", body="Words.")


def test_ranking_numbers_on_crafted_sessions(article):
    room = f"article:{article.pk}"
    hour = timedelta(hours=1)
    session(room, "r1", at=SINCE + hour, seconds=10, furthest=0.9, title="Old title")
    session(room, "r1", at=SINCE + 2 * hour, seconds=20, furthest=1.0, title="New title")
    session(room, "r2", at=SINCE + 3 * hour, seconds=100, furthest=None, title="")  # no snapshot
    session(room, "r3", at=SINCE + 4 * hour, seconds=30, furthest=0.899, title="New title", reason=EndReason.OPEN)

    [report] = reports.article_ranking(SINCE, UNTIL)

    assert report == reports.ArticleReport(
        room=room,
        title="New title",
        url=article.get_absolute_url(),
        reads=4,
        unique_readers=3,
        median_seconds=25.0,  # of 10, 20, 30, 100
        completion_rate=0.5,  # 0.9 and 1.0 complete, 0.899 and None do not
        depth=[1, 0, 0, 0, 0, 0, 0, 0, 1, 2],  # None in the first decile, 0.9 and 1.0 in the last
    )


def test_ranking_order_ties_and_limit():
    for reader in ("a", "a", "b"):  # 3 reads, 2 readers
        session("article:1", reader)
    for reader in ("a", "b", "c"):  # 3 reads, 3 readers: ahead on the tie
        session("article:2", reader)
    for reader in ("a", "b"):  # 2 reads each, same readers: by room name
        session("article:4", reader)
        session("article:3", reader)
    session("article:5", "a")

    ranking = reports.article_ranking(SINCE, UNTIL)
    assert [(r.room, r.reads, r.unique_readers) for r in ranking] == [
        ("article:2", 3, 3),
        ("article:1", 3, 2),
        ("article:3", 2, 2),
        ("article:4", 2, 2),
        ("article:5", 1, 1),
    ]
    assert [r.room for r in reports.article_ranking(SINCE, UNTIL, limit=2)] == ["article:2", "article:1"]
    assert reports.article_ranking(SINCE, UNTIL, limit=0) == []


def test_ranking_gone_article_keeps_its_snapshot_title_and_has_no_url():
    session("article:999999", "a", title="Deleted since")
    session("article:999998", "a")

    by_room = {r.room: r for r in reports.article_ranking(SINCE, UNTIL)}
    assert (by_room["article:999999"].title, by_room["article:999999"].url) == ("Deleted since", None)
    assert (by_room["article:999998"].title, by_room["article:999998"].url) == ("article:999998", None)


def test_ranking_period_is_half_open():
    session("article:1", "first", at=SINCE)  # included: since is inclusive
    session("article:1", "last", at=UNTIL - timedelta(seconds=1))
    session("article:1", "before", at=SINCE - timedelta(seconds=1))
    ReadingSession.objects.create(  # excluded: until is exclusive
        room="article:1", object_id="1", reader_id="at-until", started_at=UNTIL, process="test"
    )
    session("article:2", "late", at=UNTIL + timedelta(days=1))

    [report] = reports.article_ranking(SINCE, UNTIL)
    assert (report.room, report.reads, report.unique_readers) == ("article:1", 2, 2)
    assert reports.article_ranking(UNTIL + timedelta(days=5), UNTIL + timedelta(days=6)) == []


def test_ranking_uses_one_aggregate_query_and_one_value_query_plus_lookups(django_assert_max_num_queries):
    for n in range(30):
        session(f"article:{n}", "a")
    with django_assert_max_num_queries(2 + 5):  # aggregate, values, one room lookup per report
        assert len(reports.article_ranking(SINCE, UNTIL, limit=5)) == 5


@pytest.mark.parametrize(
    ("position", "decile"),
    [(None, 0), (0.0, 0), (-0.1, 0), (0.05, 0)] + [(i / 10, i) for i in range(10)] + [(0.999, 9), (1.0, 9), (1.5, 9)],
)
def test_depth_bucket(position, decile):
    assert reports.depth_bucket(position) == decile


def peak(day: date, count: int) -> OnlinePeak:
    return OnlinePeak.objects.create(date=day, count=count, at=datetime.combine(day, datetime.min.time(), UTC))


def test_daily_peaks_newest_first_within_the_days():
    today = date(2026, 3, 31)
    peak(today - timedelta(days=30), 9)  # 31 days ago: outside the last 30
    oldest = peak(today - timedelta(days=29), 3)
    newest = peak(today, 5)
    middle = peak(today - timedelta(days=10), 7)
    peak(today + timedelta(days=1), 1)  # tomorrow (clock skew): not shown

    assert reports.daily_peaks(30, today=today) == [newest, middle, oldest]
    assert reports.daily_peaks(1, today=today) == [newest]
    assert reports.daily_peaks(0, today=today) == []


def test_daily_peaks_default_today_is_the_utc_date():
    today = datetime.now(UTC).date()
    row = peak(today, 2)
    assert reports.daily_peaks() == [row]


def test_record_online_peak_only_rises():
    noon = datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert reports.record_online_peak(5, noon) is True
    assert reports.record_online_peak(3, noon + timedelta(hours=1)) is False
    assert reports.record_online_peak(5, noon + timedelta(hours=2)) is False  # equal: first reached stays
    stored = OnlinePeak.objects.get()
    assert (stored.date, stored.count, stored.at) == (date(2026, 3, 2), 5, noon)

    assert reports.record_online_peak(8, noon + timedelta(hours=3)) is True
    stored.refresh_from_db()
    assert (stored.count, stored.at) == (8, noon + timedelta(hours=3))

    assert reports.record_online_peak(1, noon + timedelta(days=1)) is True  # a new day starts over
    assert list(OnlinePeak.objects.values_list("date", "count")) == [(date(2026, 3, 3), 1), (date(2026, 3, 2), 8)]


def test_record_online_peak_uses_the_utc_day():
    evening_in_new_york = datetime(2026, 3, 2, 21, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert reports.record_online_peak(4, evening_in_new_york) is True
    assert OnlinePeak.objects.get().date == date(2026, 3, 3)


def test_record_online_peak_raises_a_row_created_meanwhile(monkeypatch):
    """A concurrent writer creates the day's row, lower, between our UPDATE and get_or_create."""
    noon = datetime(2026, 3, 2, 12, tzinfo=UTC)
    real_raise = reports._raise_peak
    calls = []

    def racing_raise(day, count, at):
        calls.append(count)
        result = real_raise(day, count, at)
        if len(calls) == 1:
            OnlinePeak.objects.create(date=day, count=2, at=noon)
        return result

    monkeypatch.setattr(reports, "_raise_peak", racing_raise)
    assert reports.record_online_peak(6, noon + timedelta(minutes=1)) is True
    assert OnlinePeak.objects.get().count == 6
    assert calls == [6, 6]
