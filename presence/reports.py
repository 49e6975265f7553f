"""Reporting over the reading history: article rankings and daily online peaks.

Shared by the admin pages and the REST API. Counts are aggregated in the database
(SQLite and PostgreSQL alike); the median and the read depth are computed in Python over the
sessions of the few top-ranked rooms only.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, Q
from django.utils import timezone

from presence import rooms
from presence.models import OnlinePeak, ReadingSession

DEPTH_BUCKETS = 10
# A session that got this far counts as a completed read.
COMPLETION_POSITION = 0.9


@dataclass
class ArticleReport:
    room: str
    title: str
    url: str | None
    reads: int
    unique_readers: int
    median_seconds: float
    completion_rate: float
    depth: list[int]


def depth_bucket(position: float | None) -> int:
    """Decile of a position: ``[i/10, (i+1)/10)``, 1.0 in the last, None (never scrolled) in 0."""
    if position is None or position <= 0:
        return 0
    return min(int(position * DEPTH_BUCKETS), DEPTH_BUCKETS - 1)


def article_ranking(since: datetime, until: datetime, limit: int = 20) -> list[ArticleReport]:
    """The most read rooms among sessions (open or closed) started in ``[since, until)``."""
    if limit <= 0:
        return []
    period = ReadingSession.objects.filter(started_at__gte=since, started_at__lt=until)
    top = list(
        period.values("room")
        .annotate(
            reads=Count("id"),
            unique_readers=Count("reader_id", distinct=True),
            completed=Count("id", filter=Q(furthest_position__gte=COMPLETION_POSITION)),
        )
        .order_by("-reads", "-unique_readers", "room")[:limit]
    )
    if not top:
        return []

    # One query over the (room, started_at) index for the top rooms' per-session values.
    durations: dict[str, list[float]] = {row["room"]: [] for row in top}
    depths: dict[str, list[int]] = {row["room"]: [0] * DEPTH_BUCKETS for row in top}
    titles: dict[str, str] = {}
    sessions = (
        period.filter(room__in=list(durations))
        .order_by("started_at", "pk")
        .values_list("room", "title", "duration_seconds", "furthest_position")
    )
    for room, title, seconds, furthest in sessions.iterator(chunk_size=2000):
        durations[room].append(seconds or 0.0)
        depths[room][depth_bucket(furthest)] += 1
        if title:
            titles[room] = title  # ordered by start: the last one seen is the latest snapshot

    reports = []
    for row in top:
        room = row["room"]
        info = rooms.lookup(room)
        reports.append(
            ArticleReport(
                room=room,
                title=titles.get(room) or (info.title if info else room),
                url=info.url if info else None,
                reads=row["reads"],
                unique_readers=row["unique_readers"],
                median_seconds=float(statistics.median(durations[room])),
                completion_rate=row["completed"] / row["reads"],
                depth=depths[room],
            )
        )
    return reports


def day_of(at: datetime) -> date:
    """The day of a datetime as the project keeps them: UTC's with ``USE_TZ``, else (naive
    datetimes, in ``TIME_ZONE``) its own date."""
    return at.astimezone(UTC).date() if timezone.is_aware(at) else at.date()


def current_day() -> date:
    """Today, as `day_of` counts days."""
    return day_of(timezone.now())


def daily_peaks(days: int = 30, today: date | None = None) -> list[OnlinePeak]:
    """Online peaks of the last ``days`` days (today included), newest first."""
    if days <= 0:
        return []
    if today is None:
        today = current_day()
    first = today - timedelta(days=days - 1)
    return list(OnlinePeak.objects.filter(date__gte=first, date__lte=today).order_by("-date"))


def _raise_peak(day: date, count: int, at: datetime) -> bool:
    return OnlinePeak.objects.filter(date=day, count__lt=count).update(count=count, at=at) > 0


def record_online_peak(count: int, at: datetime) -> bool:
    """Keep the day's (``day_of``) highest online count; True when this count raised it.

    Race-safe without locks: a conditional UPDATE, else create; a row created concurrently
    with a lower count is raised by a second conditional UPDATE.
    """
    assert count >= 0, "an online count is never negative"
    day = day_of(at)
    if _raise_peak(day, count, at):
        return True
    _peak, created = OnlinePeak.objects.get_or_create(date=day, defaults={"count": count, "at": at})
    if created:
        return True
    return _raise_peak(day, count, at)
