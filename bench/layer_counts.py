"""Channel-layer messages a bench server process sends and its hub receives, for the bench's
"Layer traffic" section (``BENCH_COUNT_LAYER=1``: bench/settings.py installs both parts).

The counts live in the process and are read over HTTP (``/bench/layer/``), so counting adds no
Redis traffic of its own to the traffic it measures.
"""

from __future__ import annotations

from channels_redis.core import RedisChannelLayer
from django.http import JsonResponse

COUNTS = {"sent": 0, "received": 0}


class CountingRedisChannelLayer(RedisChannelLayer):
    """channels-redis's layer, counting group sends and the hub's received messages."""

    async def group_send(self, group, message):
        COUNTS["sent"] += 1
        await super().group_send(group, message)

    async def receive(self, channel):
        message = await super().receive(channel)
        if channel.startswith("presence-hub"):
            COUNTS["received"] += 1
        return message


def counts(request):
    return JsonResponse(COUNTS)
