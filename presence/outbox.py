"""Which of a process's rooms have something to send, and which of them may send it now.

Pure: times are given (the pacing's own clock only samples the CPU meter). The hub says when a room
changed and asks what is due; it performs the store write, the batches to the other processes (all
those of one flush in one channel-layer message) and the frames (``Hub._flush``).
"""

from __future__ import annotations

from dataclasses import replace

from presence.local_rooms import LocalRoom
from presence.pacing import Cadence, Pacing

# A room's frame to send: the room, its frame cadence before this one (put back if the frame turns
# out to show nothing new), the readers' updates and the departures.
Frame = tuple[LocalRoom, Cadence, list[dict], set[str]]
# A room's batch to the other processes: the room's name, the updates and the departures.
Batch = tuple[str, list[dict], set[str]]


class Outbox:
    def __init__(self, pacing: Pacing):
        self.pacing = pacing
        self.rooms: set[str] = set()  # rooms with a frame or a batch pending (``dirty``, ``unpublished``)
        # Departures in rooms no longer held here that the other processes have not heard of yet
        # (``Publish``), and since when: they go with the next flush's batches, at the latest after
        # the shortest spacing, rather than in a message of their own.
        self.departed: dict[str, set[str]] = {}
        self.departed_since: float | None = None

    def changed(self, local: LocalRoom, now: float, published: bool = False) -> float | None:
        """Something waits for the room's next frame (and, ``published``, for its next batch). Returns
        when the room is due if that is new (the flush may have to wake earlier), else None."""
        new = False
        if local.dirty is None:
            local.dirty, new = now, True
        if published and local.unpublished is None:
            local.unpublished, new = now, True
        if not new:
            return None
        self.rooms.add(local.name)
        return self.due(local)

    def due(self, local: LocalRoom) -> float:
        """When the first of the room's pending frame and batch may leave."""
        due = float("inf")
        if local.dirty is not None:
            due = self.pacing.due(local.frames, local.dirty)
        if local.unpublished is not None:
            due = min(due, self.pacing.due(local.batches, local.unpublished, batch=True))
        return due

    def next_due(self, rooms: dict[str, LocalRoom]) -> float:
        """When the first pending room (or departure) is due (inf: none is pending)."""
        due = min((self.due(rooms[name]) for name in self.rooms if name in rooms), default=float("inf"))
        return due if self.departed_since is None else min(due, self._departures_due())

    def _departures_due(self) -> float:
        return self.departed_since + self.pacing.shortest

    def depart(self, room: str, left: set[str], now: float) -> float | None:
        """Readers gone from a room this process no longer holds. Returns when they are due if that
        is new, else None."""
        if not left:
            return None
        self.departed.setdefault(room, set()).update(left)
        if self.departed_since is not None:
            return None
        self.departed_since = now
        return self._departures_due()

    def reopen(self, local: LocalRoom, now: float) -> float | None:
        """The room is held here again: its departures not published yet go with its own batch, where
        a reader back meanwhile (``LocalRoom.announce``) drops its own."""
        left = self.departed.pop(local.name, None)
        if not self.departed:
            self.departed_since = None
        if not left:
            return None
        local.outbox_left |= left
        return self.changed(local, now, published=True)

    def take(self, rooms: dict[str, LocalRoom], now: float, force: bool) -> tuple[list[Frame], list[Batch]]:
        """The frames and batches due at ``now`` (all pending ones if ``force``), taken from their
        rooms and counted as sent now, so what changes while the hub sends them waits its turn."""
        frames, batches = [], []
        due = self.pacing.due
        for room in list(self.rooms):
            local = rooms.get(room)
            if local is None:
                self.rooms.discard(room)
                continue
            if local.unpublished is not None and (force or due(local.batches, local.unpublished, batch=True) <= now):
                changes = len(local.outbox) + len(local.outbox_left)
                self.pacing.sent(local.batches, now, local.unpublished, changes, batch=True)
                local.unpublished = None
                batches.append((room, *local.take_batch()))
            if local.dirty is not None and (force or due(local.frames, local.dirty) <= now):
                before = replace(local.frames)
                updates, left = local.take_frame()
                self.pacing.sent(local.frames, now, local.dirty, len(updates) + len(left))
                frames.append((local, before, updates, left))
                local.dirty = None
            if local.dirty is None and local.unpublished is None:
                self.rooms.discard(room)
        if self.departed and (force or batches or self._departures_due() <= now):
            batches += [(room, [], left) for room, left in self.departed.items()]
            self.departed, self.departed_since = {}, None
        return frames, batches
