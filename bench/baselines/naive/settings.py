"""Settings of the naive baseline: the demo site's (database, articles, Redis channel layer when
``REDIS_URL`` is set), with the baseline's ASGI application and Redis keys of its own.

``daphne -b 127.0.0.1 -p 8001 bench.baselines.naive.asgi:application`` with
``DJANGO_SETTINGS_MODULE=bench.baselines.naive.settings``; ``NAIVE_PREFIX`` names its keys.
"""

import copy
import os

from presence_site.settings import *  # noqa: F403
from presence_site.settings import CHANNEL_LAYERS as _SITE_CHANNEL_LAYERS
from presence_site.settings import REDIS_URL as _SITE_REDIS_URL

ASGI_APPLICATION = "bench.baselines.naive.asgi.application"

# The connection registry and room members live in Redis even without REDIS_URL (one process).
NAIVE_REDIS_URL = _SITE_REDIS_URL or "redis://127.0.0.1:6379/0"
NAIVE_PREFIX = os.environ.get("NAIVE_PREFIX", "naive-baseline")

CHANNEL_LAYERS = copy.deepcopy(_SITE_CHANNEL_LAYERS)
if CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis."):
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{NAIVE_PREFIX}-layer"
    # Every consumer gets a message per event; the default capacity of 100 would make the
    # baseline drop frames under load rather than show what they cost.
    CHANNEL_LAYERS["default"]["CONFIG"]["capacity"] = 10_000
