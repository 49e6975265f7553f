"""Claims this process must drop from the store: a reader online (room None) or in a room that
no local connection holds any more. A release the store did not take (an outage), or a claim a
heartbeat re-asserted while its reader was leaving, is retried each heartbeat until it goes, so
an outage never leaves a phantom reader behind (docs/reliability.md, guarantee 5).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable

from presence.hub_link import HubLink
from presence.membership import claim_key
from presence.outbox import Batch
from presence.sequencer import Sequencer
from presence.store import Store

logger = logging.getLogger(__name__)

Claim = tuple[str | None, str]  # (room, or None for online; reader id)


class Releases:
    def __init__(self, store: Store, link: HubLink, in_order: Sequencer, holds: Callable[[str | None, str], bool]):
        self.store = store
        self.link = link
        self.in_order = in_order  # a reader's claims and releases, in the order decided
        self.holds = holds  # whether a local connection holds the reader there now
        self.unreleased: set[Claim] = set()

    async def release(self, room: str | None, reader_id: str) -> bool | None:
        """Drop this process's claim. Returns the store's answer (whether the reader is gone
        everywhere), None if the store was unreachable: then it is retried each heartbeat."""
        try:
            if room is None:
                return await self.store.release_online(reader_id)
            return await self.store.leave(room, reader_id)
        except Exception:
            logger.warning("presence hub: could not release %s; retrying each heartbeat", room or "online")
            self.unreleased.add((room, reader_id))
            return None

    def unless_held(self, claims: Iterable[Claim]) -> None:
        """Claims a heartbeat re-asserted: those whose reader left while the beat was on its way
        were claimed again after their own release, and go at the next retry."""
        self.unreleased.update(claim for claim in claims if not self.holds(*claim))

    async def retry(self) -> None:
        """Release each claim this process holds no reader for."""
        for room, reader_id in list(self.unreleased):
            self.unreleased.discard((room, reader_id))
            if self.holds(room, reader_id):
                continue  # claimed again since; the heartbeat re-asserted it
            # Queued again if the store fails; a claim decided later goes after it.
            release = functools.partial(self.release, room, reader_id)
            gone = await asyncio.shield(self.in_order.submit(claim_key(room, reader_id), release))
            if gone and room is not None:  # a hub holding the reader again ignores it
                await self.announce([(room, reader_id)])

    async def announce(self, gone: Iterable[tuple[str, str]]) -> None:
        """Tell every hub with readers in these rooms (this one too) that these readers left."""
        await self.link.publish(departures(gone), origin="departures:" + self.link.proc)


def departures(claims: Iterable[tuple[str, str]]) -> list[Batch]:
    """Released or reaped claims, (room, reader id), as one batch of departures per room."""
    by_room: dict[str, set[str]] = {}
    for room, rid in claims:
        by_room.setdefault(room, set()).add(rid)
    return [(room, [], left) for room, left in by_room.items()]
