"""A client connection as the hub sees it, and its ticket against its address's caps.

Nothing here knows of WebSockets: the consumer hands the hub its ``send`` and ``close``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from presence import identity
from presence.ratelimit import FrameLimiter


class TooManyConnections(Exception):
    """A client address already holds ``PRESENCE_MAX_CONNECTIONS_PER_IP`` connections, or
    ``PRESENCE_MAX_READERS_PER_IP`` readers, site-wide."""


@dataclass(slots=True)
class Admission:
    """A connection counted against its address's caps: the address's keyed hash and the
    site-wide reader id it is counted as (changed by ``identify``)."""

    address: str
    reader: str
    open: bool = True


class Connection:
    """One client connection as the hub sees it; knows nothing of WebSockets.

    ``reader_id`` is the reader's site-wide id (online claims, ``hello``); in each joined room
    it is known by that room's id, ``ids[room]`` (protocol 1.1)."""

    __slots__ = (
        "identity", "reader_id", "rooms", "ids", "last_seen", "online_sent", "limiter", "send", "close", "gone",
        "leaving", "admission",
    )

    def __init__(
        self,
        identity_: str,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
        now: float,
        limiter: FrameLimiter,
    ):
        self.identity = identity_
        self.reader_id = identity.reader_id(identity_)
        self.rooms: set[str] = set()
        self.ids: dict[str, str] = {}  # room -> this reader's id there
        self.admission: Admission | None = None
        self.last_seen = now
        self.online_sent: int | None = None
        self.limiter = limiter
        self.send = send
        self.close = close
        self.gone = False
        self.leaving: asyncio.Future | None = None  # its unregistering, once started
