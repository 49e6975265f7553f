"""System checks: in-memory store or channel layer in production loses counts across processes."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from presence import rooms
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
def check_room_kinds(app_configs=None, **kwargs) -> list[CheckMessage]:
    """Every ``PRESENCE_ROOM_KINDS`` entry names a model, a field, a queryset and a URL that exist
    (presence/rooms.py); with DEBUG on too, since a wrong entry refuses every room of its kind."""
    return [
        (Warning if problem.is_warning else Error)(problem.message, hint=problem.hint, id=problem.id)
        for problem in rooms.check(app_settings.ROOM_KINDS)
    ]
