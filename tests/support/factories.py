"""Rows and stores for tests: reading history (admin, reports), stores installed by sync tests."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from presence.models import EndReason, ReadingSession

_seq = itertools.count()


def reading_session(
    room: str,
    reader: str,
    *,
    started_at: datetime,
    title: str = "",
    user=None,
    name: str = "",
    seconds: float = 10.0,
    furthest: float | None = 0.5,
    reason: str = EndReason.LEFT,
) -> ReadingSession:
    """A closed session; ``started_at`` is nudged by microseconds so that rows stay unique
    per (process, room, reader, started_at)."""
    return ReadingSession.objects.create(
        room=room,
        object_id=room.split(":", 1)[1],
        title=title,
        reader_id=reader,
        user=user,
        name=name,
        started_at=started_at + timedelta(microseconds=next(_seq)),
        duration_seconds=seconds,
        furthest_position=furthest,
        end_reason=reason,
        process="test",
    )


def make_store(backend: str, request, proc: str = "test-proc"):
    """A store of one backend; Redis under the test's own key prefix (``redis_prefix``)."""
    if backend == "memory":
        from presence.store.memory import MemoryStore

        return MemoryStore(proc)
    from presence.store.redis import RedisStore

    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    return RedisStore(proc, url=url, prefix=prefix)
