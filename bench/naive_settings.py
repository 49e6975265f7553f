"""The naive baseline's settings (``bench/baselines/naive/settings.py``) with two limits lifted,
so that the bench measures its design rather than two accidental caps (and the load generator's
Origin allowed):

- redis-py 8 caps a client's connection pool at 100: under load the baseline's consumers failed
  with "Too many connections" (the app's own channel layer sets ``max_connections`` for the same reason);
- the in-memory channel layer holds 100 messages per channel and silently drops the rest
  (the baseline raises that capacity for the Redis layer only).
"""

import copy

from bench.baselines.naive.settings import *  # noqa: F403
from bench.baselines.naive.settings import CHANNEL_LAYERS as _NAIVE_CHANNEL_LAYERS
from bench.baselines.naive.settings import NAIVE_REDIS_URL as _NAIVE_REDIS_URL

_separator = "&" if "?" in _NAIVE_REDIS_URL else "?"
NAIVE_REDIS_URL = f"{_NAIVE_REDIS_URL}{_separator}max_connections=10000"

CHANNEL_LAYERS = copy.deepcopy(_NAIVE_CHANNEL_LAYERS)
CHANNEL_LAYERS["default"]["CONFIG"]["capacity"] = 10_000

# The load generator's Origin is no page of the server's port (presence/origins.py).
PRESENCE_ALLOWED_ORIGINS = ["http://localhost"]
