"""Per-connection frame rate limit: a token bucket, and the flood rule that closes (4008)."""

from __future__ import annotations

import time
from collections.abc import Callable

OK, LIMITED, CLOSE = "ok", "limited", "close"


class FrameLimiter:
    """``rate`` frames per second sustained, bursts of ``burst``; a client still over the
    limit ``close_after`` seconds after its first refused frame is to be closed.

    A flood lets a frame through now and then as tokens trickle back; it only counts as
    over when no frame has been refused for ``CALM_SECONDS``.
    """

    CALM_SECONDS = 1.0
    __slots__ = ("rate", "burst", "close_after", "clock", "tokens", "stamp", "limited_since", "limited_at")

    def __init__(self, rate: float, burst: int, close_after: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.close_after = close_after
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock()
        self.limited_since: float | None = None
        self.limited_at = 0.0

    def check(self) -> str:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            if self.limited_since is not None and now - self.limited_at >= self.CALM_SECONDS:
                self.limited_since = None
            return OK
        self.limited_at = now
        if self.limited_since is None:
            self.limited_since = now
        return CLOSE if now - self.limited_since >= self.close_after else LIMITED
