"""Domain events: a reader joined or left a room, with server-side times.

One ``ReaderJoined`` when an identity's first connection in this process joins a room,
one ``ReaderLeft`` when its last one leaves (by ``leave``, close, timeout, re-identify
or process shutdown). Receivers (reading history, say) connect to the signals below
and never touch the consumer. Times are server milliseconds since the epoch.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

from django.dispatch import Signal

logger = logging.getLogger(__name__)

# Why a reader left a room.
LEFT = "left"  # the client sent `leave`
CLOSED = "closed"  # the connection closed
TIMEOUT = "timeout"  # silent for longer than the heartbeat allows
SHUTDOWN = "shutdown"  # its server process shut down
IDENTIFY = "identify"  # re-keyed by `identify`; a ReaderJoined for the new identity follows

reader_joined = Signal()
reader_left = Signal()
# Every PRESENCE_CHECKPOINT_SECONDS: the readers still in rooms of this process, so that
# what they read so far survives a crash of the process (``Checkpoint``).
checkpoint = Signal()
# The site-wide count changed (``OnlineCounted``), at most once per PRESENCE_ONLINE_INTERVAL.
online_counted = Signal()


@dataclass(frozen=True, slots=True)
class ReaderJoined:
    room: str
    identity: str
    reader_id: str
    joined_at: int
    process: str


@dataclass(frozen=True, slots=True)
class ReaderLeft:
    room: str
    identity: str
    reader_id: str
    name: str | None
    joined_at: int
    left_at: int
    furthest_position: float | None
    last_position: float | None
    reason: str
    process: str


@dataclass(frozen=True, slots=True)
class OpenSession:
    room: str
    identity: str
    reader_id: str
    name: str | None
    joined_at: int
    furthest_position: float | None
    last_position: float | None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    at: int
    process: str
    sessions: list[OpenSession]


@dataclass(frozen=True, slots=True)
class OnlineCounted:
    count: int
    at: int


SIGNALS = {ReaderJoined: reader_joined, ReaderLeft: reader_left, Checkpoint: checkpoint, OnlineCounted: online_counted}


async def _asend_robust(signal: Signal, **named: object) -> list[tuple[object, object]]:
    """``Signal.asend_robust`` (Django 5.0+); on Django 4.2, ``send_robust`` returns the
    coroutines of async receivers unawaited, so they are awaited here, one by one."""
    if hasattr(signal, "asend_robust"):
        return await signal.asend_robust(**named)
    results = []
    for receiver, response in signal.send_robust(**named):
        if inspect.isawaitable(response):
            try:
                response = await response
            except Exception as exc:
                response = exc
        results.append((receiver, response))
    return results


async def emit(event: ReaderJoined | ReaderLeft | Checkpoint | OnlineCounted) -> None:
    """Deliver an event to its receivers; a failing receiver is logged, never raised."""
    signal = SIGNALS[type(event)]
    for receiver, result in await _asend_robust(signal, sender=type(event), event=event):
        if isinstance(result, Exception):
            logger.error("presence event receiver %r failed", receiver, exc_info=result)
