"""Settings of the server processes that tests start (``tests/support/servers.py``): the site's, on keys of their own.

``PRESENCE_TEST_PREFIX`` names the presence store's and the channel layer's keys, so a test run
never touches other data on a shared Redis; ``PRESENCE_TEST_<NAME>`` overrides the tunable
``PRESENCE_<NAME>`` (e.g. ``PRESENCE_TEST_TICK=0.5``, ``PRESENCE_TEST_HEARTBEAT=20``,
``PRESENCE_TEST_MAX_READERS_PER_IP=None`` for tests whose many readers all come from loopback),
and ``PRESENCE_TEST_TRUSTED_PROXIES`` is a comma-separated list.

Test clients that are no browser page send ``Origin: http://localhost`` (``tests/support/servers.py``
``ORIGIN``), which is not the origin of a server on another port: it is allowed here by
``PRESENCE_ALLOWED_ORIGINS``, as a site would list a non-browser client's origin.
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


PRESENCE_ALLOWED_ORIGINS = ["http://localhost"]


def _number(text: str) -> int | float | None:
    if text == "None":
        return None
    value = float(text)
    return int(value) if value.is_integer() else value


for _name in (
    "TICK", "ONLINE_INTERVAL", "HEARTBEAT", "SILENCE_FACTOR", "PROCESS_HEARTBEAT", "PROCESS_TTL",
    "CHECKPOINT_SECONDS", "MIN_SESSION_SECONDS", "HISTORY_BACKLOG", "MAX_READERS_PER_IP", "MAX_CONNECTIONS_PER_IP",
):
    _value = os.environ.get(f"PRESENCE_TEST_{_name}")
    if _value:
        globals()[f"PRESENCE_{_name}"] = _number(_value)

if os.environ.get("PRESENCE_TEST_TRUSTED_PROXIES"):
    PRESENCE_TRUSTED_PROXIES = os.environ["PRESENCE_TEST_TRUSTED_PROXIES"].split(",")

# Test users get a fast password hash (PBKDF2's 0.6 s per user, over a hundred users, is a minute and
# a half of the suite); real hashes are still accepted. The in-process suite uses this list too
# (tests/conftest.py), so a server started by a test signs in the users the test made.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
