"""How the hubs of a site's server processes tell each other what changed in their rooms.

Every hub's channel is in one channel-layer group (``presence.hubs``); each flush of a hub sends
one message to it carrying every due room's changes, and every hub keeps the rooms it holds. A
group per room cost a message per changed room to every process holding it: rooms x processes²
deliveries per tick, against processes² now (docs/scaling.md). Knows nothing of rooms: a batch is
``(room, updates, departures)`` as ``presence.outbox`` takes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from presence.outbox import Batch

logger = logging.getLogger(__name__)

BATCH = "presence.batch"
HUBS_GROUP = "presence.hubs"


class HubLink:
    def __init__(self, layer, proc: str):
        self.layer = layer  # None: no channel layer, a single process
        self.proc = proc
        self.channel: str | None = None

    async def open(self) -> bool:
        """Get this hub's channel and join the group (before any join reads a room's state, so
        no batch sent after that reading is missed). False without a channel layer."""
        if self.layer is None:
            return False
        self.channel = await self.layer.new_channel("presence-hub")
        await self.join()
        return True

    async def join(self) -> None:
        """Join the group; the heartbeat calls it again, before the layer's group expiry and after
        a failure (a Redis restart loses the group)."""
        await self._group("group_add")

    async def leave(self) -> None:
        """Leave the group at shutdown: the others' batches no longer pile up for this process."""
        await self._group("group_discard")

    async def publish(self, batches: list[Batch], origin: str | None = None) -> None:
        """Tell every hub, in one message, what changed in these rooms. A hub skips the messages of
        its own ``origin``: departures this hub must hear too go with another."""
        if self.layer is None or not batches:
            return
        message = {"type": BATCH, "origin": origin or self.proc,
                   "rooms": [[room, updates, sorted(left)] for room, updates, left in batches]}
        try:
            await self._call("group_send", HUBS_GROUP, message)
        except Exception:
            logger.warning("presence hub: could not publish the changes of %d rooms", len(batches), exc_info=True)

    async def receive(self, merge: Callable[[list], None]) -> None:
        """Hand every other hub's batches to ``merge``, for ever (the hub's receive loop)."""
        delay = 0.1
        while True:
            try:
                message = await self.layer.receive(self.channel)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("presence hub: channel layer receive failed; retrying in %.1fs", delay, exc_info=True)
                await asyncio.sleep(delay)
                # At most a second: a Redis back from a restart must carry other processes'
                # batches again within a tick or so, not after a long backoff.
                delay = min(delay * 2, 1.0)
                continue
            if message.get("type") == BATCH and message.get("origin") != self.proc:
                merge(message.get("rooms", ()))

    async def _group(self, op: str) -> None:
        if self.layer is None or self.channel is None:
            return
        try:
            await self._call(op, HUBS_GROUP, self.channel)
        except Exception:
            logger.warning("presence hub: %s %s failed", op, HUBS_GROUP, exc_info=True)

    async def _call(self, op: str, *args) -> None:
        """A channel-layer call, tried twice: the first use of a pooled connection that a Redis
        restart broke fails once, and a lost group_add or batch is not repaired before the next
        heartbeat or change (docs/reliability.md, guarantee 3)."""
        try:
            await getattr(self.layer, op)(*args)
        except Exception:
            await getattr(self.layer, op)(*args)
