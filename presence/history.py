"""Reading history: turns the hub's domain events into ``ReadingSession`` rows.

A session is written when its reader leaves, closes, times out, re-identifies or its server
process shuts down; open sessions are written as checkpoints every
``PRESENCE_CHECKPOINT_SECONDS`` so that a crash loses at most that much reading, and
``presence_prune`` later closes what a crashed process left open. Durations come from the
server clock only. Writes that fail (database down) wait in a bounded backlog and are
retried with the next write; what overflows it is logged with a count, never dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from presence import events, identity, rooms
from presence.conf import app_settings
from presence.errors import InvalidRoom
from presence.models import EndReason, ReadingSession

logger = logging.getLogger(__name__)

KEY_FIELDS = ["process", "room", "reader_id", "started_at"]
UPDATE_FIELDS = [
    "title", "user", "name", "ended_at", "checkpoint_at", "duration_seconds",
    "furthest_position", "last_position", "end_reason",
]


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _write(rows: list[dict], dropped: list[dict]) -> None:
    """Upsert session rows (one statement) and delete rows of sessions too short to keep."""
    user_ids = {row["user_id"] for row in rows if row["user_id"] is not None}
    if user_ids:
        existing = {str(pk) for pk in get_user_model().objects.filter(pk__in=user_ids).values_list("pk", flat=True)}
        for row in rows:
            if row["user_id"] is not None and str(row["user_id"]) not in existing:
                row["user_id"] = None  # the account was deleted meanwhile
    with transaction.atomic():
        if rows:
            ReadingSession.objects.bulk_create(
                [ReadingSession(**row) for row in rows],
                update_conflicts=True,
                unique_fields=KEY_FIELDS,
                update_fields=UPDATE_FIELDS,
            )
        for key in dropped:
            ReadingSession.objects.filter(**key).delete()


class Recorder:
    """Receives the hub's events in one process and writes them, in order."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """Forget the backlog and the cached peak (tests start from an empty database)."""
        self._lock = asyncio.Lock()
        self._backlog: list[dict] = []
        self._backlog_dropped: list[dict] = []
        self.lost = 0
        self._peak: tuple[str, int] | None = None  # (UTC day, count) known to be stored

    async def _title(self, room: str) -> str:
        try:
            return (await rooms.resolve(room)).title
        except InvalidRoom:
            return ""

    async def _row(self, room: str, who: str, reader_id: str, name: str | None, joined_at: int, at: int,
                   furthest: float | None, last: float | None, process: str, reason: str) -> dict:
        return {
            "process": process,
            "room": room,
            "object_id": room.split(":", 1)[1],
            "title": (await self._title(room))[:300],
            "reader_id": reader_id,
            "user_id": identity.user_pk(who),
            "name": name or "",
            "started_at": to_datetime(joined_at),
            "ended_at": to_datetime(at) if reason else None,
            "checkpoint_at": to_datetime(at),
            "duration_seconds": max(0.0, (at - joined_at) / 1000),
            "furthest_position": furthest,
            "last_position": last,
            "end_reason": reason,
        }

    async def on_left(self, sender: object, event: events.ReaderLeft, **kwargs: object) -> None:
        row = await self._row(
            event.room, event.identity, event.reader_id, event.name, event.joined_at, event.left_at,
            event.furthest_position, event.last_position, event.process, event.reason,
        )
        final = await afinal_position(event.room, event.reader_id)
        if final is not None:  # the page's beacon said where the reader really stopped
            row["last_position"] = final
            row["furthest_position"] = max(row["furthest_position"] or 0.0, final)
        if row["duration_seconds"] < app_settings.MIN_SESSION_SECONDS:
            # Noise: not stored; forget a checkpoint it may have left.
            await self._flush([], [{field: row[field] for field in KEY_FIELDS}])
        else:
            await self._flush([row], [])

    async def on_checkpoint(self, sender: object, event: events.Checkpoint, **kwargs: object) -> None:
        rows = []
        for s in event.sessions:
            if (event.at - s.joined_at) / 1000 >= app_settings.MIN_SESSION_SECONDS:
                rows.append(
                    await self._row(
                        s.room, s.identity, s.reader_id, s.name, s.joined_at, event.at,
                        s.furthest_position, s.last_position, event.process, EndReason.OPEN,
                    )
                )
        await self._flush(rows, [])

    async def on_online(self, sender: object, event: events.OnlineCounted, **kwargs: object) -> None:
        from presence.reports import record_online_peak

        at = to_datetime(event.at)
        day = at.date().isoformat()
        if self._peak is not None and self._peak[0] == day and event.count <= self._peak[1]:
            return
        try:
            await database_sync_to_async(record_online_peak)(event.count, at)
        except Exception:
            logger.warning("presence history: online peak not recorded", exc_info=True)
            return
        self._peak = (day, event.count)

    async def _flush(self, rows: list[dict], dropped: list[dict]) -> None:
        """Write these rows after any backlog, in order; on failure keep them for the next write."""
        async with self._lock:
            rows, self._backlog = self._backlog + rows, []
            dropped, self._backlog_dropped = self._backlog_dropped + dropped, []
            try:
                await database_sync_to_async(_write)(rows, dropped)
            except Exception:
                logger.warning("presence history: %d sessions not written yet; retrying with the next write",
                               len(rows), exc_info=True)
                self._keep(rows, dropped)

    def _keep(self, rows: list[dict], dropped: list[dict]) -> None:
        # The newest state of a session replaces an older one still waiting.
        latest = {tuple(r[f] for f in KEY_FIELDS): r for r in rows}
        rows = list(latest.values())
        overflow = len(rows) - app_settings.HISTORY_BACKLOG
        if overflow > 0:
            self.lost += overflow
            logger.error("presence history: backlog full, %d reading sessions lost (%d in all)", overflow, self.lost)
            rows = rows[overflow:]
        self._backlog, self._backlog_dropped = rows, dropped[-app_settings.HISTORY_BACKLOG:]

    @property
    def backlog(self) -> int:
        return len(self._backlog)


recorder = Recorder()

# Where a closing page's beacon said its reader stopped (``presence.beacon``), kept until the
# socket's leave writes the session, which may arrive after the beacon.
FINAL_POSITION_TTL = 300


def _final_key(room: str, reader_id: str) -> str:
    return f"presence.final:{room}:{reader_id}"


def remember_final_position(room: str, reader_id: str, position: float) -> None:
    cache.set(_final_key(room, reader_id), position, FINAL_POSITION_TTL)


def final_position(room: str, reader_id: str) -> float | None:
    value = cache.get(_final_key(room, reader_id))
    return value if isinstance(value, float) else None


async def afinal_position(room: str, reader_id: str) -> float | None:
    value = await cache.aget(_final_key(room, reader_id))
    return value if isinstance(value, float) else None


def connect() -> None:
    events.reader_left.connect(recorder.on_left, dispatch_uid="presence.history.left")
    events.checkpoint.connect(recorder.on_checkpoint, dispatch_uid="presence.history.checkpoint")
    events.online_counted.connect(recorder.on_online, dispatch_uid="presence.history.online")


def prune(now: datetime | None = None) -> tuple[int, int]:
    """Close sessions whose process stopped checkpointing them (``crash-recovered``, ended at
    their last checkpoint) and delete history older than ``PRESENCE_HISTORY_DAYS``.
    Returns (closed, deleted)."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=2 * app_settings.CHECKPOINT_SECONDS + app_settings.PROCESS_TTL)
    closed = ReadingSession.objects.filter(end_reason=EndReason.OPEN, checkpoint_at__lt=stale).update(
        ended_at=F("checkpoint_at"), end_reason=EndReason.CRASH_RECOVERED
    )
    deleted = 0
    if app_settings.HISTORY_DAYS is not None:
        cutoff = now - timedelta(days=app_settings.HISTORY_DAYS)
        deleted, _ = ReadingSession.objects.filter(started_at__lt=cutoff).delete()
    return closed, deleted
