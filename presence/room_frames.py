"""What a flush sends: the pending progress to the store, in one call, and each due room's `room`
frame, encoded once, to its local readers.

Which rooms are due, and with what, is the outbox's decision (``presence.outbox``); this module
performs it. Sending directly to the local connections, not through the channel layer per
consumer, measured 5-8x less CPU.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from presence import protocol
from presence.conf import app_settings
from presence.connections import Connection
from presence.local_rooms import LocalRoom
from presence.outbox import Frame
from presence.store import RoomState, Store

logger = logging.getLogger(__name__)


async def fan_out(connections: Iterable[Connection], text: str) -> None:
    """Send one encoded frame to each connection; one that fails is the closing one's business."""
    for conn in connections:
        try:
            await conn.send(text)
        except Exception:
            logger.debug("presence hub: send failed", exc_info=True)


class RoomFrames:
    def __init__(self, store: Store):
        self.store = store

    async def store_progress(self, locals_: Iterable[LocalRoom]) -> None:
        """Write the pending progress of ``locals_`` in one call: a reader who joins meanwhile gets
        it in its `room_state`."""
        writes = [write for local in locals_ for write in local.take_writes()]
        if writes:
            try:
                await self.store.update(writes)
            except Exception:
                logger.warning("presence hub: progress not stored; the next heartbeat re-asserts", exc_info=True)

    async def send(self, frames: list[Frame]) -> None:
        """One `room` frame per changed room to its local readers. A room with nothing new to show
        (a heartbeat's count check) sends none: its pacing is put back."""
        try:
            counts = await self.store.counts([local.name for local, *_ in frames])
        except Exception:
            logger.warning("presence hub: room counts unavailable; sending local ones", exc_info=True)
            counts = {local.name: local.count or len(local.members) for local, *_ in frames}
        crowded = [local.name for local, *_ in frames if counts.get(local.name, 0) > app_settings.ROOM_STATE_READERS]
        histograms = await self._histograms(crowded)
        for local, before, updates, left in frames:
            room = local.name
            count = counts.get(room, 0)
            histogram = histograms.get(room)
            if not updates and not left and count == local.count and histogram in (None, local.histogram):
                local.frames = before
                continue
            local.count, local.histogram = count, histogram
            frame = {"type": "room", "room": room, "count": count, "updates": updates, "left": sorted(left)}
            if histogram is not None:
                frame["histogram"] = histogram
            await fan_out([c for tabs in local.members.values() for c in tabs], protocol.dumps(frame))

    async def _histograms(self, rooms: list[str]) -> dict[str, list[int]]:
        """Histograms of rooms too large for a client to know every reader (protocol extension:
        `room` frames of such rooms carry one, so the widget's distribution stays exact)."""
        if not rooms:
            return {}
        states = await asyncio.gather(*(self.store.room_state(room, 0) for room in rooms), return_exceptions=True)
        return {room: s.histogram for room, s in zip(rooms, states, strict=True) if isinstance(s, RoomState)}
