"""Settings of the servers the benchmark starts: the demo site's, on Redis keys of their own.

``BENCH_PREFIX`` names the presence store's and the channel layer's keys, so a run never touches
other data on a shared Redis. The REST API's throttle is off: the bench times
``GET /api/presence/online/`` many times from one address.
"""

import copy
import os

from presence_site.settings import *  # noqa: F403
from presence_site.settings import CHANNEL_LAYERS as _SITE_CHANNEL_LAYERS

_prefix = os.environ.get("BENCH_PREFIX", "presence-bench")

PRESENCE_REDIS_PREFIX = _prefix
PRESENCE_API_THROTTLE_RATE = None

CHANNEL_LAYERS = copy.deepcopy(_SITE_CHANNEL_LAYERS)
if CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis."):
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{_prefix}-layer"
if "CACHES" in globals():
    CACHES = copy.deepcopy(CACHES)  # noqa: F405
    CACHES["default"]["KEY_PREFIX"] = f"{_prefix}-cache"
