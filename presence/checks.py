"""System checks: in-memory store or channel layer in production loses counts across processes."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register

from presence.conf import app_settings
from presence.store import backend_path


@register()
def check_production_backends(app_configs=None, **kwargs) -> list[Warning]:
    if settings.DEBUG:
        return []
    found = []
    if backend_path() == "presence.store.memory.MemoryStore":
        found.append(
            Warning(
                "The in-memory presence store is used with DEBUG off.",
                hint="Set PRESENCE_REDIS_URL (REDIS_URL in the demo site) so that several server "
                "processes share one count; the in-memory store only sees its own process.",
                id="presence.W001",
            )
        )
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get(app_settings.CHANNEL_LAYER, {})
    if layer.get("BACKEND", "").endswith("InMemoryChannelLayer") or not layer:
        found.append(
            Warning(
                "The presence hubs use an in-memory (or no) channel layer with DEBUG off.",
                hint="Configure channels_redis.core.RedisChannelLayer so that server processes "
                "see each other's readers.",
                id="presence.W002",
            )
        )
    return found


@register()
def check_trusted_proxies(app_configs=None, **kwargs) -> list[Error]:
    """``PRESENCE_TRUSTED_PROXIES`` entries must be IPs or networks (``presence/addresses.py``)."""
    from presence.addresses import check_trusted_proxies as problems

    return [
        Error(
            f"PRESENCE_TRUSTED_PROXIES: {problem}.",
            hint='List your proxies\' IP addresses or CIDR networks, e.g. ["127.0.0.1", "10.0.0.0/8"], or "unix".',
            id="presence.E020",
        )
        for problem in problems()
    ]
