"""``CHANNEL_LAYERS`` on Redis with the options the presence hubs need, in one call.

``CHANNEL_LAYERS = redis_channel_layers(REDIS_URL)`` (README, "Several server processes"), next to
``PRESENCE_REDIS_URL = REDIS_URL`` for the presence store. The plain configuration of the
Channels documentation breaks here in two ways that ``presence.checks`` reports: redis-py 8's
socket timeout, and a channel capacity too small for the hubs' traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Every hub's channel (``presence.hub``: ``new_channel("presence-hub")``) gets a message per flush
# from every other process (one or two per tick each when loaded, more when quiet); channels-redis's
# default capacity of 100 drops them during a pause of a second or two.
HUB_CHANNELS = "presence-hub*"
HUB_CAPACITY = 10_000


def redis_channel_layers(
    url_or_urls: str | Sequence[str],
    *,
    alias: str = "default",
    max_connections: int = 1000,
    **overrides: Any,
) -> dict[str, dict[str, Any]]:
    """The ``CHANNEL_LAYERS`` setting: channels-redis's ``RedisChannelLayer`` on one Redis URL,
    or sharded over several (every process must list the same URLs in the same order).

    Each host gets ``socket_timeout=None``: redis-py 8's default of 5 s equals the layer's
    blocking read, so idle consumers die with ``TimeoutError`` every 5 s
    (https://github.com/django/channels_redis/issues/422); and a pool of up to
    ``max_connections`` (redis-py's 100 is too few for one blocking read per consumer).
    ``group_expiry`` is 300 s: the hubs re-add their groups every few seconds, so a dead
    process's groups go within minutes, not a day. ``overrides`` replace entries of the layer's
    ``CONFIG`` (``prefix=``, ``capacity=``, ``expiry=``...); a ``channel_capacity`` given there
    is merged with the hubs' own.
    """
    urls = [url_or_urls] if isinstance(url_or_urls, str) else list(url_or_urls)
    if not urls or not all(isinstance(url, str) and url for url in urls):
        raise ValueError("redis_channel_layers() needs a Redis URL (or a list of them), e.g. redis://127.0.0.1:6379/0")
    capacities = {HUB_CHANNELS: HUB_CAPACITY, **overrides.pop("channel_capacity", {})}
    config: dict[str, Any] = {
        "hosts": [{"address": url, "socket_timeout": None, "max_connections": max_connections} for url in urls],
        "group_expiry": 300,
        "channel_capacity": capacities,
        **overrides,
    }
    return {alias: {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": config}}
