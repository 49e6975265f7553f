"""``ReadingSession`` rows: the one module that writes them (the admin's delete aside).

Three callers change the table, all through here: the recorder (``presence.history``) upserts the
hub's sessions as they end and at checkpoints; the beacon (``presence.beacon``) hands over a
closing page's final position; ``presence_prune`` closes what a crashed process left open and
deletes old history.

A closing tab's beacon and its socket's close race, and may reach different server processes.
So a final position goes two ways (``record_final_position``): into the reader's latest row of
the room, for a leave already written, and into Django's cache (shared by the processes: check
``presence.W008``) for ``FINAL_POSITION_TTL`` seconds, where a leave written later takes it
(``afinal_position``): taken, not read, so that a later session of the reader in the room does not
end with it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.signals import setting_changed
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from presence import rooms
from presence.conf import app_settings
from presence.models import EndReason, ReadingSession

# A session's row is one per process, room, reader and start: what an upsert updates.
KEY_FIELDS = ["process", "room", "reader_id", "started_at"]
UPDATE_FIELDS = [
    "title", "user", "name", "ended_at", "checkpoint_at", "duration_seconds",
    "furthest_position", "last_position", "end_reason",
]

FINAL_POSITION_TTL = 300  # seconds a beacon's position waits for its socket's leave
SESSION_WINDOW = timedelta(hours=6)  # how far back "the reader's latest session" looks


def write(rows: list[dict], dropped: list[dict]) -> None:
    """Upsert session rows (one statement) and delete rows of sessions too short to keep
    (``dropped``: their ``KEY_FIELDS``). Raises what the database raises: whether to retry is the
    caller's call (``history.is_outage``)."""
    for row in rows:
        if row["title"] is None:  # the room's title was unknown while the database was down
            info = rooms.lookup(row["room"])
            row["title"] = info.title[:300] if info is not None else ""
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


def record_final_position(room: str, reader_id: str, position: float) -> bool:
    """A closing page's final position (the beacon's): kept for the leave still to come, and put
    into the reader's latest session of the room. True when a row was updated."""
    # Into the cache first: a leave written while this runs takes it from there.
    cache, key = _final_positions(), _final_key(room, reader_id)
    cache.set(key, position, FINAL_POSITION_TTL)
    now = timezone.now()
    latest = ReadingSession.objects.filter(room=room, reader_id=reader_id, started_at__gte=now - SESSION_WINDOW)
    row = latest.order_by("-started_at").values_list("pk", "ended_at").first()
    if row is None:
        return False
    pk, ended_at = row
    sessions = ReadingSession.objects.filter(pk=pk)
    sessions.update(last_position=position)
    sessions.filter(Q(furthest_position__isnull=True) | Q(furthest_position__lt=position)).update(
        furthest_position=position
    )
    if ended_at is not None and ended_at > now - timedelta(seconds=app_settings.MIN_SESSION_SECONDS):
        # Its leave is written already, and no session begun since then is long enough to be kept:
        # the position was this row's, and must not wait for the reader's next leave in the room.
        cache.delete(key)
    return True


def final_position(room: str, reader_id: str) -> float | None:
    """The final position a beacon recorded in the last ``FINAL_POSITION_TTL`` seconds, if any,
    taken out of the cache: it ends the one session it was sent for
    (``tests/test_reading_sessions.py``)."""
    key = _final_key(room, reader_id)
    return _take([key]).get(key)


def _take(keys: list[str]) -> dict[str, float]:
    """Take these keys' positions out of the cache, in one read and one delete."""
    cache = _final_positions()
    found = cache.get_many(keys)
    if found:
        cache.delete_many(list(found))
    return {key: value for key, value in found.items() if isinstance(value, float)}


async def afinal_position(room: str, reader_id: str) -> float | None:
    """``final_position`` for the leave (``history``), which takes it once its row is built. The
    leaves that ask in the same turn of the event loop share one cache read: a shutdown ends
    thousands of sessions at once, and a read each took most of its time."""
    loop = asyncio.get_running_loop()
    waiting = _waiting.setdefault(loop, {})
    if not waiting:  # the first to ask in this turn: the read runs once the others have asked too
        loop.create_task(_take_waiting(loop))
    taken = loop.create_future()
    waiting.setdefault(_final_key(room, reader_id), []).append(taken)
    return await taken


# Per event loop: cache key -> the leaves waiting for its position.
_waiting: dict[asyncio.AbstractEventLoop, dict[str, list[asyncio.Future]]] = {}


async def _take_waiting(loop: asyncio.AbstractEventLoop) -> None:
    waiting = _waiting.pop(loop, {})
    try:
        # Not ``cache.aget_many``: its thread-sensitive executor refused ("would deadlock") when
        # thousands of readers left at once; the cache needs no particular thread.
        found = await sync_to_async(_take, thread_sensitive=False)(list(waiting))
    except Exception as exc:
        for future in (f for futures in waiting.values() for f in futures if not f.done()):
            future.set_exception(exc)
        return
    for key, futures in waiting.items():
        for n, future in enumerate(futures):
            if not future.done():  # done: its leave was cancelled meanwhile
                future.set_result(found.get(key) if n == 0 else None)  # taken once


def _final_key(room: str, reader_id: str) -> str:
    return f"presence.final:{room}:{reader_id}"


_final_cache = None


def _final_positions():
    """One cache instance for the process. ``django.core.cache.cache`` is one per async context,
    so reading it for each leaving reader opened a Redis connection per reader (4% of a busy
    process's CPU in the benchmark's profile); cache backends are thread-safe."""
    global _final_cache
    if _final_cache is None:
        _final_cache = caches.create_connection(DEFAULT_CACHE_ALIAS)
    return _final_cache


def _forget_cache(*, setting: str, **kwargs: object) -> None:
    global _final_cache
    if setting == "CACHES":
        _final_cache = None


setting_changed.connect(_forget_cache, dispatch_uid="presence.reading_sessions.settings")


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
