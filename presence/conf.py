"""App settings: every ``PRESENCE_<NAME>`` setting with its default, read lazily.

``from presence.conf import app_settings; app_settings.TICK`` reads
``settings.PRESENCE_TICK`` or the default; ``override_settings`` works because the
cache is dropped on Django's ``setting_changed`` signal.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # Rooms: kind -> "app_label.Model" (by pk, default manager) or {"model", "field", "queryset", "url"}
    # (presence/rooms.py; checked by presence/checks.py). None by default: a site names its own.
    "ROOM_KINDS": {},
    # How long a resolved room name is cached in each process, and how many names (found or refused).
    "ROOM_CACHE_SECONDS": 300,
    "ROOM_CACHE_SIZE": 10_000,
    # How long a refused room name is cached: an object created or published elsewhere is seen after this.
    "ROOM_REFUSAL_SECONDS": 5,
    # Seconds per tick: a room sends at most two `room` frames per tick, one while the process is
    # loaded (presence/pacing.py); silent connections, the ranking and checkpoints are checked each tick.
    "TICK": 1.0,
    # Seconds a quiet room's next frame waits after one that went out at once (the leading edge):
    # changes within it go out together (presence/pacing.py).
    "COALESCE_WINDOW": 0.1,
    # Seconds between `online` frames to one connection (protocol: at most one per second).
    "ONLINE_INTERVAL": 1.0,
    # Seconds between `ranking` frames to a subscribed connection, only when its ranking changed.
    "RANKING_INTERVAL": 1.0,
    # Seconds between client pings; a connection silent for HEARTBEAT * SILENCE_FACTOR is dropped.
    "HEARTBEAT": 20,
    "SILENCE_FACTOR": 2.5,
    # Seconds between a process's heartbeats to the store, and after how long a silent
    # process's readers are removed from every count (protocol: within 20 s).
    "PROCESS_HEARTBEAT": 5.0,
    "PROCESS_TTL": 12.0,
    # Seconds between checkpoints of open reading sessions (a crash loses at most this much).
    "CHECKPOINT_SECONDS": 30.0,
    # Reading history: sessions shorter than this are noise, not stored.
    "MIN_SESSION_SECONDS": 5,
    # Days of history `presence_prune` keeps; None keeps it forever.
    "HISTORY_DAYS": None,
    # Sessions kept in memory while the database is unreachable; beyond that they are lost (logged).
    "HISTORY_BACKLOG": 10_000,
    # Store backend: a dotted path, or None for Redis when REDIS_URL is set, else memory.
    "STORE": None,
    "REDIS_URL": None,
    "REDIS_PREFIX": "presence",
    # True when REDIS_URL names a node of a Redis Cluster (the store then talks to every node).
    "REDIS_CLUSTER": False,
    # Channel-layer alias the hubs talk through.
    "CHANNEL_LAYER": "default",
    # Limits (protocol: "Errors and limits").
    "MAX_FRAME_BYTES": 4096,
    "MAX_ROOMS": 10,
    "RATE": 10.0,
    "BURST": 20,
    "FLOOD_CLOSE_SECONDS": 5.0,
    "ROOM_STATE_READERS": 100,
    "NAME_MAX_LENGTH": 40,
    # Signed identity tokens for `identify` (Django signing, salted, expiring).
    "TOKEN_MAX_AGE": 12 * 3600,
    "TOKEN_SALT": "presence.identity",
    # Secret for reader ids (HMAC of the identity); None -> derived from SECRET_KEY.
    "READER_SECRET": None,
    # Origins allowed at the WebSocket handshake besides ALLOWED_HOSTS, e.g. "https://blog.example".
    "ALLOWED_ORIGINS": [],
    # Accept handshakes that carry no Origin header (non-browser clients).
    "ALLOW_NO_ORIGIN": False,
    # Per client address (an IPv4 address, an IPv6 /64), site-wide across processes: distinct
    # readers (browsers, users) and WebSocket connections (tabs) it may hold at once; more are
    # refused at the handshake (HTTP 403). None: no cap. Counted by keyed hash only.
    # Why these numbers: docs/security.md, "The per-address caps".
    "MAX_READERS_PER_IP": 50,
    "MAX_CONNECTIONS_PER_IP": 200,
    # Proxies whose X-Forwarded-For is believed (IPs or CIDRs, "unix" for a Unix socket); none:
    # the client's address is the socket's peer (presence/addresses.py).
    "TRUSTED_PROXIES": [],
    # Serve the OpenAPI schema and its Swagger UI to anyone (True), to staff only (False), or
    # to anyone while DEBUG is on and to staff otherwise (None).
    "PUBLIC_API_DOCS": None,
    # REST API: requests per anonymous client over the public endpoints (DRF rate; None: no limit).
    "API_THROTTLE_RATE": "120/min",
    # The widget: the user attribute shown as a signed-in reader's name (none when blank or None;
    # never the username unless this names it),
    "USER_NAME_FIELD": "first_name",
    # seconds a tab may stay hidden before it leaves its room (None: never),
    "IDLE_AFTER": 60,
    # the WebSocket URL pages connect to (None: ws(s)://<this host>/ws/presence/),
    "WEBSOCKET_URL": None,
    # and above how many readers the timeline shows the position histogram instead of markers.
    "TIMELINE_MAX_MARKERS": 50,
}


class AppSettings:
    """Attribute access to ``PRESENCE_*`` settings with defaults, cached until settings change."""

    def __init__(self, defaults: dict[str, Any]):
        self.defaults = defaults
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in self.defaults:
            raise AttributeError(f"Unknown presence setting: {name}")
        try:
            return self._cache[name]
        except KeyError:
            value = getattr(settings, "PRESENCE_" + name, self.defaults[name])
            self._cache[name] = value
            return value

    def reload(self) -> None:
        self._cache.clear()


app_settings = AppSettings(DEFAULTS)


def _reload(*, setting: str, **kwargs: Any) -> None:
    # What is derived from these settings (the store, the rooms' cache) forgets it on its own.
    if setting.startswith("PRESENCE_"):
        app_settings.reload()


setting_changed.connect(_reload)
