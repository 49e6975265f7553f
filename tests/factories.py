"""Rows for tests that read reading history (admin, reports)."""

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
