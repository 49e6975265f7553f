"""System checks warn when single-process backends are used in production."""

from __future__ import annotations

from django.core.checks import run_checks
from django.test import override_settings

REDIS_LAYER = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {}}}
MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def presence_warnings() -> set[str]:
    return {m.id for m in run_checks() if m.id and m.id.startswith("presence.")}


@override_settings(DEBUG=False, PRESENCE_REDIS_URL=None, CHANNEL_LAYERS=MEMORY_LAYER)
def test_in_memory_store_and_layer_warn_with_debug_off():
    assert presence_warnings() == {"presence.W001", "presence.W002"}


@override_settings(DEBUG=True, PRESENCE_REDIS_URL=None, CHANNEL_LAYERS=MEMORY_LAYER)
def test_no_warning_in_development():
    assert presence_warnings() == set()


@override_settings(DEBUG=False, PRESENCE_REDIS_URL="redis://127.0.0.1:6379/0", CHANNEL_LAYERS=REDIS_LAYER)
def test_no_warning_with_redis():
    assert presence_warnings() == set()
