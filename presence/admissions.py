"""The per-address caps (``PRESENCE_MAX_READERS_PER_IP``, distinct readers, and
``PRESENCE_MAX_CONNECTIONS_PER_IP``), counted site-wide in the store; and the connections this
process counted, which its heartbeat re-asserts: a store outage admits (counted here, written to
the store by the next heartbeat), and a dead process's count goes with it (docs/security.md).
"""

from __future__ import annotations

import logging

from presence import addresses, identity
from presence.conf import app_settings
from presence.connections import Admission, TooManyConnections
from presence.store import Store

logger = logging.getLogger(__name__)


def _caps() -> tuple[int | None, int | None]:
    return app_settings.MAX_READERS_PER_IP, app_settings.MAX_CONNECTIONS_PER_IP


class Admissions:
    def __init__(self, store: Store):
        self.store = store
        # (address key, site-wide reader id) -> connections of this process counted.
        self.counted: dict[tuple[str, str], int] = {}

    @staticmethod
    def ticket(address: str | None, identity_: str) -> Admission | None:
        """What a new connection of ``identity_`` from client ``address`` is to be counted as (None:
        not counted, no cap or no address known). A connection whose address a header claims and
        no trusted proxy vouches for (``addresses.UNVERIFIED``) is refused: TooManyConnections."""
        if not address or _caps() == (None, None):
            return None
        if address == addresses.UNVERIFIED:
            # Counted in a bucket of its own, such a connection would be an allowance beyond its
            # address's: refused, so one client holds at most the cap (docs/security.md).
            raise TooManyConnections("the client address cannot be verified (PRESENCE_TRUSTED_PROXIES)")
        return Admission(addresses.address_key(address), identity.reader_id(identity_))

    async def admit(self, admission: Admission) -> None:
        """Count a ``ticket`` against the caps; TooManyConnections (the ticket closed) over one."""
        pair = (admission.address, admission.reader)
        self.counted[pair] = self.counted.get(pair, 0) + 1  # before the await: a beat meanwhile keeps it
        try:
            counted = await self.store.admit(admission.address, admission.reader, *_caps())
        except Exception:
            logger.warning("presence: address caps unavailable; admitted, the next heartbeat counts it",
                           exc_info=True)
            counted = True
        if not counted:
            self._uncount(pair)
            admission.open = False
            raise TooManyConnections("too many readers or connections from one address")

    async def readmit(self, admission: Admission | None, new_identity: str) -> None:
        """The connection re-identified: counted as its new reader. Raises TooManyConnections (the
        ticket closed) when its address has no room for another reader."""
        if admission is None or not admission.open:
            return
        await self.dismiss(admission)
        admission.reader, admission.open = identity.reader_id(new_identity), True
        await self.admit(admission)

    async def dismiss(self, admission: Admission | None) -> None:
        """A counted connection closed (safe to call twice)."""
        if admission is None or not admission.open:
            return
        admission.open = False
        self._uncount((admission.address, admission.reader))
        try:
            await self.store.dismiss(admission.address, admission.reader)
        except Exception:
            logger.warning("presence: address count not released; the next heartbeat re-asserts the rest",
                           exc_info=True)

    def held(self) -> list[tuple[str, str, int]]:
        """What the heartbeat re-asserts: (address key, reader id, connections) counted here."""
        return [(address, reader, n) for (address, reader), n in self.counted.items()]

    def _uncount(self, pair: tuple[str, str]) -> None:
        left = self.counted.get(pair, 0) - 1
        if left > 0:
            self.counted[pair] = left
        else:
            self.counted.pop(pair, None)
