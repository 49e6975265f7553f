"""The presence store interface: who is online and in which room, shared by server processes.

A store instance is one process's view (``proc``). Processes *claim* readers (by opaque
reader id): claims are idempotent per process, so re-asserting them after the store lost
its data is safe, and a dead process's claims can be dropped as a whole. A reader counts
while at least one live process claims it; counts are of distinct readers.

Processes also count the connections each client address holds (``admit``), site-wide, so
that one address cannot hold more than its caps of readers and connections however many
processes it spreads over; those counts are claims of the process too, re-asserted by its
heartbeat and dropped with it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(slots=True)
class Reader:
    """A reader in a room: the protocol's reader object (times are server ms)."""

    id: str
    name: str | None
    position: float | None
    joined_at: int
    updated_at: int

    def as_dict(self) -> dict:
        # Spelled out: ``dataclasses.asdict`` deep-copies, a few per cent of a busy server's CPU.
        return {"id": self.id, "name": self.name, "position": self.position,
                "joined_at": self.joined_at, "updated_at": self.updated_at}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Reader:
        return cls(**json.loads(text))


@dataclass(slots=True)
class RoomState:
    room: str
    count: int
    readers: list[Reader]
    histogram: list[int]


HISTOGRAM_BUCKETS = 20


def bucket(position: float | None) -> int:
    """Histogram bucket of a position: ``[i/20, (i+1)/20)``, 1.0 in the last, none in 0."""
    if position is None:
        return 0
    return min(int(position * HISTOGRAM_BUCKETS), HISTOGRAM_BUCKETS - 1)


class Store(ABC):
    """One process's view of the shared presence state. All methods are coroutines."""

    # Whether several server processes share it (their hubs then pace busy rooms on one grid:
    # presence.pacing); the in-memory store serves one process.
    spans_processes = True

    def __init__(self, proc: str):
        self.proc = proc

    @abstractmethod
    async def claim_online(self, reader_id: str) -> None:
        """This process has a connection of this reader (idempotent)."""

    @abstractmethod
    async def release_online(self, reader_id: str) -> None:
        """This process has no connection of this reader any more (idempotent)."""

    @abstractmethod
    async def online(self) -> int:
        """Distinct readers online on the site; constant cost whatever their number."""

    @abstractmethod
    async def join(self, room: str, reader: Reader) -> Reader:
        """Claim ``reader`` in ``room``; returns the stored record (an earlier one is kept)."""

    @abstractmethod
    async def leave(self, room: str, reader_id: str) -> bool:
        """Drop this process's claim; True when no process holds the reader in the room."""

    @abstractmethod
    async def update(self, items: list[tuple[str, Reader]]) -> None:
        """Store newer reader records (newest ``updated_at`` wins) for readers still present."""

    @abstractmethod
    async def room_state(self, room: str, limit: int = 100) -> RoomState:
        """Count, the ``limit`` most recently updated readers, and the position histogram."""

    @abstractmethod
    async def counts(self, rooms: list[str]) -> dict[str, int]:
        """Reader count of each room, in one round trip."""

    @abstractmethod
    async def ranking(self, limit: int) -> list[tuple[str, int]]:
        """Rooms with readers, most readers first."""

    @abstractmethod
    async def admit(self, address: str, reader_id: str, max_readers: int | None, max_connections: int | None) -> bool:
        """Count one more connection of ``reader_id`` from ``address`` (a keyed hash) for this
        process, if the address then holds at most ``max_readers`` distinct readers and
        ``max_connections`` connections site-wide (None: no cap); else False, nothing counted.
        Check and count are one atomic step, so racing processes cannot overshoot a cap."""

    @abstractmethod
    async def dismiss(self, address: str, reader_id: str) -> None:
        """A connection that ``admit`` counted for this process closed (no-op when none is counted)."""

    @abstractmethod
    async def admitted(self, address: str) -> tuple[int, int]:
        """Distinct readers and connections counted for ``address``, site-wide."""

    @abstractmethod
    async def heartbeat(
        self,
        now_ms: int,
        ttl_ms: int,
        online: list[str],
        rooms: list[tuple[str, Reader]],
        addresses: list[tuple[str, str, int]] | None = None,
    ) -> list[tuple[str, str]]:
        """Mark this process alive, re-assert all its claims, and reap processes silent
        for ``ttl_ms``; returns ``(room, reader_id)`` pairs that reaping removed. ``addresses``
        lists this process's admitted connections as ``(address, reader_id, connections)``:
        its address claims become exactly these (None leaves them alone)."""

    @abstractmethod
    async def release_all(self) -> list[tuple[str, str]]:
        """Graceful shutdown: drop every claim of this process at once. Returns the (room, reader
        id) pairs nobody holds any more (the other processes' readers are told they left)."""

    async def close(self) -> None:  # noqa: B027 - optional: only networked backends need it
        """Release connections to the backend."""
