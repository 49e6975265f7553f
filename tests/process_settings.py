"""Settings of the server processes that tests start (``tests/servers.py``): the site's, on keys of their own.

``PRESENCE_TEST_PREFIX`` names the presence store's and the channel layer's keys, so a test run
never touches other data on a shared Redis; ``PRESENCE_TEST_<NAME>`` overrides the tunable
``PRESENCE_<NAME>`` (e.g. ``PRESENCE_TEST_TICK=0.5``, ``PRESENCE_TEST_HEARTBEAT=20``).
"""

import copy
import os

from presence_site.settings import *  # noqa: F403
from presence_site.settings import CHANNEL_LAYERS as _SITE_CHANNEL_LAYERS

_prefix = os.environ.get("PRESENCE_TEST_PREFIX", "presence")

PRESENCE_REDIS_PREFIX = _prefix

CHANNEL_LAYERS = copy.deepcopy(_SITE_CHANNEL_LAYERS)
if CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis."):
    # Starts with the test's prefix, so the test's cleanup (keys matching "<prefix>*") removes it too.
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{_prefix}-layer"


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


for _name in (
    "TICK", "ONLINE_INTERVAL", "HEARTBEAT", "SILENCE_FACTOR", "PROCESS_HEARTBEAT", "PROCESS_TTL",
    "CHECKPOINT_SECONDS", "MIN_SESSION_SECONDS", "HISTORY_BACKLOG",
):
    _value = os.environ.get(f"PRESENCE_TEST_{_name}")
    if _value:
        globals()[f"PRESENCE_{_name}"] = _number(_value)
