"""Settings of the servers the benchmark starts: the demo site's, on Redis keys of their own.

``BENCH_PREFIX`` names the presence store's and the channel layer's keys, so a run never touches
other data on a shared Redis. The REST API's throttle and the per-address caps are off: the bench
times ``GET /api/presence/online/`` many times, and opens thousands of WebSockets, from one address.
"""

import copy
import os

from presence_site.settings import *  # noqa: F403
from presence_site.settings import CHANNEL_LAYERS as _SITE_CHANNEL_LAYERS

_prefix = os.environ.get("BENCH_PREFIX", "presence-bench")

PRESENCE_REDIS_PREFIX = _prefix
PRESENCE_API_THROTTLE_RATE = None
# Every simulated browser connects from loopback with the load generator's Origin: the
# per-address caps would refuse all but 50 of them, and the origin is no page of the server's port.
PRESENCE_MAX_READERS_PER_IP = None
PRESENCE_MAX_CONNECTIONS_PER_IP = None
PRESENCE_ALLOWED_ORIGINS = ["http://localhost"]

CHANNEL_LAYERS = copy.deepcopy(_SITE_CHANNEL_LAYERS)
if CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis."):
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{_prefix}-layer"
if "CACHES" in globals():
    CACHES = copy.deepcopy(CACHES)  # noqa: F405
    CACHES["default"]["KEY_PREFIX"] = f"{_prefix}-cache"

# The "Layer traffic" section counts each process's channel-layer messages (bench/layer_counts.py).
if os.environ.get("BENCH_COUNT_LAYER") and CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis."):
    CHANNEL_LAYERS["default"]["BACKEND"] = "bench.layer_counts.CountingRedisChannelLayer"
    ROOT_URLCONF = "bench.urls"
