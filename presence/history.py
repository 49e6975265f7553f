"""Reading history: turns the hub's domain events into ``ReadingSession`` rows, which
``presence.reading_sessions`` writes (it owns the table).

A session is written when its reader leaves, closes, times out, re-identifies or its server
process shuts down; open sessions are written as checkpoints every
``PRESENCE_CHECKPOINT_SECONDS`` so that a crash loses at most that much reading, and
``presence_prune`` later closes what a crashed process left open. Durations come from the
server clock only. Writes that fail because the database is unreachable wait in a bounded
backlog and are retried with backoff until it is back; what overflows it, or is still waiting
when the process exits, is logged with a count, never dropped silently. Writes that fail for
any other reason (a bug, a missing table, a misconfiguration) would fail the same way again:
they are reported once, at ERROR with their cause, and never retried.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import re
from datetime import UTC, datetime

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from presence import events, identity, reading_sessions, rooms
from presence.conf import app_settings
from presence.errors import InvalidRoom
from presence.models import EndReason
from presence.reading_sessions import KEY_FIELDS

logger = logging.getLogger(__name__)


def to_datetime(ms: int) -> datetime:
    """A server time (ms since the epoch) as the project's datetimes are: aware (UTC) with
    ``USE_TZ``, else naive in ``TIME_ZONE``, which is all SQLite and MySQL then accept."""
    at = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if settings.USE_TZ:
        return at
    return timezone.make_naive(at, timezone.get_default_timezone())


# OperationalErrors that are the schema's, not the connection's: SQLite's missing table or
# column, MySQL's unknown column. (PostgreSQL raises ProgrammingError for these.)
_SCHEMA_ERROR = re.compile(r"no such (table|column)|has no column named|unknown column", re.IGNORECASE)


def is_outage(exc: BaseException) -> bool:
    """Whether a failed write may succeed unchanged later: the database unreachable, the
    connection lost, SQLite busy. Anything else fails the same way every time it is retried."""
    if isinstance(exc, InterfaceError):
        return True
    return isinstance(exc, OperationalError) and not _SCHEMA_ERROR.search(str(exc))


def _write_each(rows: list[dict], dropped: list[dict]) -> list[tuple[dict, Exception]]:
    """Write the batch (``reading_sessions.write``); when it fails for a reason other than an
    outage, write each session alone, so that a bad one costs only itself. Returns the sessions
    that failed so, each with its error; an outage raises (the caller keeps the whole batch for
    the retry)."""
    try:
        reading_sessions.write(rows, dropped)
        return []
    except Exception as exc:
        if is_outage(exc):
            raise
        if len(rows) + len(dropped) == 1:
            return [((rows or dropped)[0], exc)]
    failed = []
    for one_row, one_key in [([row], []) for row in rows] + [([], [key]) for key in dropped]:
        try:
            reading_sessions.write(one_row, one_key)
        except Exception as exc:
            if is_outage(exc):
                raise
            failed.append(((one_row or one_key)[0], exc))
    return failed


def _key(row: dict) -> tuple:
    return tuple(row[field] for field in KEY_FIELDS)


class Recorder:
    """Receives the hub's events in one process and writes them, in order.

    While the database is unreachable, rows wait in a bounded backlog (newest state of each
    session only) and a retry with backoff writes them once it is back, whether or not more
    events come; events meanwhile only join the backlog, so an outage costs one attempt per
    retry, not one per event (reliability.md, section 4).
    """

    retry_first = 1.0  # seconds before the first retry; doubled after each failure
    retry_max = 5.0

    def __init__(self):
        self._retry_task: asyncio.Task | None = None
        self.reset()
        atexit.register(self._report_unwritten)

    def reset(self) -> None:
        """Forget the backlog and the cached peak (tests start from an empty database)."""
        task, self._retry_task = getattr(self, "_retry_task", None), None
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                task.cancel()
        self._lock = asyncio.Lock()
        self._backlog: dict[tuple, dict] = {}  # by session (KEY_FIELDS), oldest first
        self._backlog_dropped: list[dict] = []
        self._writing = 0  # sessions taken from the backlog by the write in flight: not yet stored
        self.lost = 0
        self._reported: set[tuple[str, str, str]] = set()  # errors other than outages, logged once
        self.failing = False  # the last write failed: new rows wait for the retry
        self._retry_delay = self.retry_first
        self._peak: tuple[str, int] | None = None  # (day, as reports.day_of counts, count) known stored
        # Sessions that ended (their KEY_FIELDS) and when (ms): a checkpoint taken before an end can
        # reach the backlog after it (it awaits room titles, and Django's ``asend`` runs receivers
        # as tasks), and must not reopen the session (``on_checkpoint``).
        self._ended: dict[tuple, int] = {}

    async def _title(self, room: str) -> str | None:
        """The room's title; None when it cannot be looked up now (``reading_sessions.write`` looks again)."""
        try:
            return (await rooms.resolve(room)).title[:300]
        except InvalidRoom:
            return ""
        except Exception:
            return None

    async def _row(self, room: str, who: str, reader_id: str, name: str | None, joined_at: int, at: int,
                   furthest: float | None, last: float | None, process: str, reason: str) -> dict:
        return {
            "process": process,
            "room": room,
            "object_id": room.split(":", 1)[1],
            "title": await self._title(room),
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
        # Before this end reaches the backlog: a checkpoint's row of the session added earlier is
        # replaced by it, and one added later is dropped (``on_checkpoint``).
        self._ended[_key(row)] = event.left_at
        try:
            final = await reading_sessions.afinal_position(event.room, event.reader_id)
        except Exception:  # the cache (Redis) is down: the socket's own last position stands
            logger.warning("presence history: the beacon's final position is unavailable", exc_info=True)
            final = None
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
        # An end is final: a session that ended since this snapshot keeps its end. Ends are kept
        # for two checkpoint periods, longer than a checkpoint takes to get here.
        horizon = event.at - 2 * app_settings.CHECKPOINT_SECONDS * 1000
        self._ended = {key: at for key, at in self._ended.items() if at >= horizon}
        await self._flush([row for row in rows if _key(row) not in self._ended], [])

    async def on_online(self, sender: object, event: events.OnlineCounted, **kwargs: object) -> None:
        from presence.reports import day_of, record_online_peak

        at = to_datetime(event.at)
        day = day_of(at).isoformat()
        if self._peak is not None and self._peak[0] == day and event.count <= self._peak[1]:
            return
        if self.failing:
            return  # the database is down; the next count after it is back records the peak
        try:
            await database_sync_to_async(record_online_peak)(event.count, at)
        except Exception as exc:
            if is_outage(exc):
                logger.warning("presence history: online peak not recorded", exc_info=True)
            else:
                self._report_error("the online peak", exc)
            return
        self._peak = (day, event.count)

    async def _flush(self, rows: list[dict], dropped: list[dict]) -> None:
        """Write these rows after any backlog, in order; on failure keep them for the retry."""
        self._add(rows, dropped)
        if self.failing:
            self._schedule_retry()
        else:
            await self._write_backlog()

    async def _write_backlog(self, retrying: bool = False) -> bool:
        """Write the whole backlog in one transaction; False (and a retry scheduled) if it failed."""
        async with self._lock:
            if self.failing and not retrying:  # failed while this write waited: leave it to the retry
                self._schedule_retry()
                return False
            rows, self._backlog = list(self._backlog.values()), {}
            dropped, self._backlog_dropped = self._backlog_dropped, []
            self._writing = len(rows)
            try:
                failed = await database_sync_to_async(_write_each)(rows, dropped) if rows or dropped else []
            except Exception as exc:  # an outage (``is_outage``): every row waits for the retry
                self._writing = 0
                # Rows that arrived meanwhile are newer: they go after these.
                newer, newer_dropped = self._backlog.values(), self._backlog_dropped
                self._backlog, self._backlog_dropped = {}, []
                self.failing = True
                self._add(rows, dropped)
                self._add(newer, newer_dropped)
                logger.warning("presence history: database unavailable (%s), %d sessions held back; retrying",
                               type(exc).__name__, len(self._backlog), exc_info=not retrying)
                self._schedule_retry()
                return False
            self._writing = 0
            for row, exc in failed:
                self.lost += "object_id" in row  # a session (not the deletion of a too-short one's row)
                self._report_error("a reading session", exc)
            if self.failing:
                logger.warning("presence history: database back, %d held-back sessions written",
                               len(rows) - len(failed))
                self.failing = False
                self._retry_delay = self.retry_first
            return True

    def _report_error(self, what: str, exc: Exception) -> None:
        """A write failed for a reason that retrying cannot cure: say so loudly, once per cause."""
        cause = (what, type(exc).__qualname__, str(exc).partition("\n")[0][:200])
        if cause in self._reported:
            logger.debug("presence history: %s not written (%s, reported before)", what, type(exc).__name__)
            return
        self._reported.add(cause)
        logger.error(
            "presence history: %s could not be written, and is not retried: this is not a database outage "
            "but a bug or a misconfiguration (e.g. `migrate` not run); later failures of the same cause are "
            "not logged again. %s: %s", what, type(exc).__name__, exc, exc_info=exc,
        )

    def _schedule_retry(self) -> None:
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        """Retry with backoff (``retry_first`` doubling up to ``retry_max``) until a write succeeds."""
        while True:
            delay, self._retry_delay = self._retry_delay, min(self._retry_delay * 2, self.retry_max)
            await asyncio.sleep(delay)
            if await self._write_backlog(retrying=True):
                return

    def _add(self, rows, dropped: list[dict]) -> None:
        """Add rows to the backlog (a newer state of a session replaces the older in place) and
        deletions (which cancel a waiting row). While the database fails, at most HISTORY_BACKLOG
        sessions wait: the oldest that overflow are lost, counted and logged. When it is up, the
        backlog is only what ends during one write, bounded by the connections."""
        for row in rows:
            self._backlog[_key(row)] = row
        for key in dropped:
            self._backlog.pop(_key(key), None)
        # Deletions of too-short sessions' checkpoints: losing one leaves a row that
        # ``presence_prune`` closes as crash-recovered, so they are only trimmed.
        self._backlog_dropped.extend(dropped)
        del self._backlog_dropped[:-app_settings.HISTORY_BACKLOG]
        overflow = len(self._backlog) - app_settings.HISTORY_BACKLOG
        if self.failing and overflow > 0:
            self.lost += overflow
            logger.error("presence history: backlog full (PRESENCE_HISTORY_BACKLOG=%d), %d reading sessions "
                         "lost (%d in all)", app_settings.HISTORY_BACKLOG, overflow, self.lost)
            for key in list(self._backlog)[:overflow]:
                del self._backlog[key]

    def _report_unwritten(self) -> None:
        """At exit, what the database never took is lost: say so with a count, never silently."""
        if self.backlog:
            logger.error("presence history: process exiting with %d reading sessions never written "
                         "(database unavailable); they are lost", self.backlog)

    @property
    def backlog(self) -> int:
        """Sessions not yet stored: waiting, or in the write in flight (so 0 means written)."""
        return len(self._backlog) + self._writing


recorder = Recorder()


def connect() -> None:
    events.reader_left.connect(recorder.on_left, dispatch_uid="presence.history.left")
    events.checkpoint.connect(recorder.on_checkpoint, dispatch_uid="presence.history.checkpoint")
    events.online_counted.connect(recorder.on_online, dispatch_uid="presence.history.online")
