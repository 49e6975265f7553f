"""The HTTP side's throttle: one budget per anonymous client over the public API and the beacon.

Not in ``ratelimit.py``: that one limits a WebSocket's frames for the hub and imports neither
Django nor DRF, which the hub's side would then import too.
"""

from __future__ import annotations

from rest_framework.exceptions import PermissionDenied
from rest_framework.throttling import AnonRateThrottle

from presence import addresses
from presence.conf import app_settings


class PresenceAnonThrottle(AnonRateThrottle):
    """Anonymous clients share one budget over the public endpoints; the rate is read per
    request, so ``override_settings(PRESENCE_API_THROTTLE_RATE=...)`` applies at once."""

    scope = "presence"

    def get_rate(self) -> str | None:
        return app_settings.API_THROTTLE_RATE

    def allow_request(self, request, view) -> bool:
        """Refuses (403) an anonymous request whose address only a header claims, with no trusted
        proxy to vouch for it: in a budget of its own it would double its sender's."""
        if (self.get_rate() is not None and not request.user.is_authenticated
                and addresses.from_request(request) == addresses.UNVERIFIED):
            raise PermissionDenied("the client address cannot be verified: see PRESENCE_TRUSTED_PROXIES")
        return super().allow_request(request, view)

    def get_ident(self, request) -> str:
        """A keyed hash of the client's address as ``presence/addresses.py`` knows it (DRF's own
        believes any ``X-Forwarded-For`` while ``NUM_PROXIES`` is unset): the cache (Redis, with
        several processes) never holds a raw IP address."""
        return addresses.address_key(addresses.from_request(request) or "")
