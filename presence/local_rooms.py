"""A process's rooms: who reads each one here, and the changes waiting for its next frame, its
next batch to the other processes and its next store write.

Pure: no I/O and no clock. The hub decides when a room's frame and batch leave
(``presence.pacing``) and performs the sends; a room only keeps what they will carry, so the
rules of what a frame holds (the newest update per reader, local or remote; a departure only
if the reader is not back; at most the newest ``ROOM_STATE_READERS``) are testable alone
(tests/test_local_rooms.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from presence.conf import app_settings
from presence.pacing import Cadence
from presence.store import Reader


@dataclass(slots=True)
class Session:
    """A reader (identity) in a room in this process, from its first tab's join to its last tab's leave."""

    identity: str
    reader: Reader
    started_at: int
    furthest: float | None = None


@dataclass(slots=True)
class LocalRoom:
    name: str
    members: dict[str, set] = field(default_factory=dict)  # reader id -> its connections here
    sessions: dict[str, Session] = field(default_factory=dict)
    # Local changes since the last frame (``updates``, ``left``), since the last batch to the other
    # processes (``outbox``, ``outbox_left``) and since the last store write (``to_store``); the
    # other processes' changes since the last frame (``remote_updates``, ``remote_left``).
    updates: dict[str, Reader] = field(default_factory=dict)
    left: set[str] = field(default_factory=set)
    outbox: dict[str, Reader] = field(default_factory=dict)
    outbox_left: set[str] = field(default_factory=set)
    to_store: set[str] = field(default_factory=set)
    remote_updates: dict[str, dict] = field(default_factory=dict)
    remote_left: set[str] = field(default_factory=set)
    # Since when something waits for the room's next frame (``dirty``), and for its next batch
    # (``unpublished``); None: nothing. Their pacing: ``frames``, ``batches`` (the hub's).
    dirty: float | None = None
    unpublished: float | None = None
    frames: Cadence = field(default_factory=Cadence)
    batches: Cadence = field(default_factory=Cadence)
    count: int | None = None
    histogram: list[int] | None = None  # last sent in a `room` frame (rooms over ROOM_STATE_READERS)

    def announce(self, reader: Reader) -> None:
        """A reader here joined or moved: for the next frame and the next batch."""
        self.updates[reader.id] = self.outbox[reader.id] = reader
        self.left.discard(reader.id)
        self.outbox_left.discard(reader.id)

    def depart(self, rid: str) -> Session:
        """A reader's last tab here left: forget it, and what it had not sent yet (its last
        position, if unwritten, is the caller's to write: ``rid in to_store`` before)."""
        del self.members[rid]
        self.updates.pop(rid, None)
        self.outbox.pop(rid, None)
        self.to_store.discard(rid)
        return self.sessions.pop(rid)

    def gone(self, rid: str) -> None:
        """A reader is gone from the room everywhere: for the next frame and the next batch."""
        self.left.add(rid)
        self.outbox_left.add(rid)

    def merge_remote(self, updates: Iterable[dict], left: Iterable[str]) -> None:
        """Another process's batch: keep each reader's newest update (a tab here may be newer);
        a departure counts only if no tab here still holds the reader."""
        for reader in updates:
            rid = reader["id"]
            known = self.remote_updates.get(rid)
            session = self.sessions.get(rid)
            if known is not None and reader["updated_at"] < known["updated_at"]:
                continue
            if session is not None and reader["updated_at"] < session.reader.updated_at:
                continue
            self.remote_updates[rid] = reader
            self.remote_left.discard(rid)
        for rid in left:
            if rid not in self.members:
                self.remote_left.add(rid)
                self.remote_updates.pop(rid, None)

    def take_frame(self) -> tuple[list[dict], set[str]]:
        """The local and remote changes since the last frame (newest update per reader, at most
        ``ROOM_STATE_READERS``: see ``newest``), forgotten here."""
        updates = dict(self.remote_updates)
        for rid, reader in self.updates.items():
            mine = reader.as_dict()
            if rid not in updates or mine["updated_at"] >= updates[rid]["updated_at"]:
                updates[rid] = mine
        left = (self.left | self.remote_left) - updates.keys()
        self.updates, self.left = {}, set()
        self.remote_updates, self.remote_left = {}, set()
        return newest(updates.values()), left

    def take_batch(self) -> tuple[list[dict], set[str]]:
        """The local changes since the last batch, forgotten here."""
        batch = newest(r.as_dict() for r in self.outbox.values()), self.outbox_left
        self.outbox, self.outbox_left = {}, set()
        return batch

    def take_writes(self) -> list[tuple[str, Reader]]:
        """The positions to write to the store (copies: the readers go on moving meanwhile)."""
        writes = [(self.name, replace(self.sessions[rid].reader)) for rid in self.to_store]
        self.to_store = set()
        return writes


def newest(readers: Iterable[dict]) -> list[dict]:
    """The ``ROOM_STATE_READERS`` most recently updated reader objects, newest first. A `room`
    frame lists no more readers than a `room_state` does: the widget draws a few dozen markers,
    and frames of a crowded room would otherwise grow with its size, their cost with its square."""
    return heapq.nlargest(app_settings.ROOM_STATE_READERS, readers, key=lambda r: (r["updated_at"], r["id"]))
