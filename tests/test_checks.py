"""System checks: each misconfiguration a host project can make gets an id and a one-line fix."""

from __future__ import annotations

import copy

import pytest
from channels.routing import ProtocolTypeRouter, URLRouter
from django.conf import global_settings, settings
from django.core.asgi import get_asgi_application
from django.core.checks import run_checks
from django.http import HttpResponse
from django.test import override_settings
from django.urls import include, path, re_path

from presence.consumers import PresenceConsumer
from presence.layers import redis_channel_layers

REDIS_LAYER = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {}}}
MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REDIS = "redis://127.0.0.1:6379/0"
REDIS_CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS}}


def presence_messages() -> dict:
    return {m.id: m for m in run_checks() if m.id and m.id.startswith("presence.")}


def presence_warnings() -> set[str]:
    return set(presence_messages())


def assert_one_line_fix(message) -> None:
    assert message.hint and "\n" not in message.hint, message


@override_settings(DEBUG=False, PRESENCE_REDIS_URL=None, CHANNEL_LAYERS=MEMORY_LAYER)
def test_in_memory_store_and_layer_warn_with_debug_off():
    assert presence_warnings() == {"presence.W001", "presence.W002"}


@override_settings(DEBUG=True, PRESENCE_REDIS_URL=None, CHANNEL_LAYERS=MEMORY_LAYER)
def test_no_warning_in_development():
    assert presence_warnings() == set()


@override_settings(
    DEBUG=False, PRESENCE_REDIS_URL=REDIS, CHANNEL_LAYERS=redis_channel_layers(REDIS), CACHES=REDIS_CACHES
)
def test_no_warning_with_redis():
    assert presence_warnings() == set()


# -- several processes: the store must follow the layer, and the layer must not time out --------


@override_settings(DEBUG=True, PRESENCE_REDIS_URL=None, CHANNEL_LAYERS=redis_channel_layers(REDIS))
def test_a_redis_layer_with_the_in_memory_store_warns_with_debug_on_too():
    messages = presence_messages()
    assert set(messages) == {"presence.W003"}
    assert "counts only its own readers" in messages["presence.W003"].msg
    assert "PRESENCE_REDIS_URL = REDIS_URL" in messages["presence.W003"].hint
    assert_one_line_fix(messages["presence.W003"])


def caches(backend: str | None) -> dict:
    """``CACHES`` with this default backend; None: not set at all (Django's default, LocMemCache)."""
    if backend is None:
        return global_settings.CACHES
    location = {"redis.RedisCache": REDIS, "db.DatabaseCache": "presence_cache"}.get(backend, "")
    return {"default": {"BACKEND": f"django.core.cache.backends.{backend}", "LOCATION": location}}


@pytest.mark.parametrize(
    ("backend", "warned"),
    [
        (None, True),
        ("locmem.LocMemCache", True),
        ("dummy.DummyCache", True),
        ("redis.RedisCache", False),
        ("db.DatabaseCache", False),
    ],
)
def test_several_processes_need_a_shared_cache_for_the_beacon(backend, warned):
    """The beacon's final position waits in the cache for a socket's leave on any process."""
    several = [
        {"PRESENCE_REDIS_URL": REDIS, "CHANNEL_LAYERS": redis_channel_layers(REDIS)},
        {"PRESENCE_STORE": "presence.store.redis.RedisStore", "PRESENCE_REDIS_URL": REDIS},
        {"PRESENCE_REDIS_URL": None, "CHANNEL_LAYERS": redis_channel_layers(REDIS)},  # W003 too
    ]
    for processes in several:
        with override_settings(DEBUG=False, CACHES=caches(backend), **processes):
            messages = presence_messages()
        assert ("presence.W008" in messages) is warned, (backend, processes)
    if warned:
        message = messages["presence.W008"]
        assert f"({backend.rsplit('.', 1)[-1] if backend else 'LocMemCache'}) is per process" in message.msg
        assert "final reading position is lost" in message.msg
        assert 'CACHES["default"]' in message.hint and "RedisCache" in message.hint
        assert_one_line_fix(message)


def test_one_process_or_development_needs_no_shared_cache():
    # One process: the in-memory store and layer (W001/W002 say what to change for several).
    with override_settings(DEBUG=False, PRESENCE_REDIS_URL=None, CHANNEL_LAYERS=MEMORY_LAYER, CACHES=caches(None)):
        assert presence_warnings() == {"presence.W001", "presence.W002"}
    # Development runs one process, whatever its backends.
    with override_settings(DEBUG=True, PRESENCE_REDIS_URL=REDIS, CHANNEL_LAYERS=redis_channel_layers(REDIS),
                           CACHES=caches(None)):
        assert presence_warnings() == set()


# As the Channels documentation writes it: redis-py 8 then times reads out after 5 s.
CHANNELS_DOCS_LAYER = {
    "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [("127.0.0.1", 6379)]}}
}


@override_settings(DEBUG=True, PRESENCE_REDIS_URL=REDIS, CHANNEL_LAYERS=CHANNELS_DOCS_LAYER)
def test_the_channels_docs_layer_warns_of_the_socket_timeout():
    messages = presence_messages()
    assert set(messages) == {"presence.W004"}
    assert "TimeoutError" in messages["presence.W004"].msg and "5 s" in messages["presence.W004"].msg
    assert "redis_channel_layers(REDIS_URL)" in messages["presence.W004"].hint
    assert_one_line_fix(messages["presence.W004"])


def layer_with_host(host) -> dict:
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [host]}}}


def test_a_socket_timeout_longer_than_the_layers_read_or_none_passes():
    for host, warned in [
        ({"address": REDIS, "socket_timeout": None}, False),
        ({"address": REDIS, "socket_timeout": 30}, False),
        ({"address": REDIS, "socket_timeout": 5}, True),
        ({"address": REDIS + "?socket_timeout=2"}, True),
        (REDIS, True),
    ]:
        with override_settings(DEBUG=True, PRESENCE_REDIS_URL=REDIS, CHANNEL_LAYERS=layer_with_host(host)):
            assert ("presence.W004" in presence_warnings()) is warned, host


# -- templates, routing, URLs ----------------------------------------------------------------------


def templates_without_request() -> list[dict]:
    templates = copy.deepcopy(settings.TEMPLATES)
    processors = templates[0]["OPTIONS"]["context_processors"]
    processors.remove("django.template.context_processors.request")
    return templates


def test_no_request_context_processor_warns():
    with override_settings(DEBUG=True, TEMPLATES=templates_without_request()):
        messages = presence_messages()
    assert set(messages) == {"presence.W005"}
    assert '"django.template.context_processors.request"' in messages["presence.W005"].hint
    assert_one_line_fix(messages["presence.W005"])


# ASGI applications as host projects write them.
django_only = get_asgi_application()
http_only = ProtocolTypeRouter({"http": django_only})
chat_only = ProtocolTypeRouter(
    {"http": django_only, "websocket": URLRouter([path("ws/chat/", PresenceConsumer.as_asgi())])}
)
nested = ProtocolTypeRouter(
    {"websocket": URLRouter([re_path(r"^ws/", URLRouter([path("presence/", PresenceConsumer.as_asgi())]))])}
)


def test_an_asgi_application_without_the_presence_route_warns():
    for application in ("django_only", "http_only", "chat_only"):
        with override_settings(DEBUG=True, ASGI_APPLICATION=f"{__name__}.{application}"):
            messages = presence_messages()
        assert set(messages) == {"presence.W006"}, application
        assert "/ws/presence/" in messages["presence.W006"].msg
        assert_one_line_fix(messages["presence.W006"])
    with override_settings(DEBUG=True, ASGI_APPLICATION=f"{__name__}.nested"):
        assert presence_warnings() == set()
    with override_settings(DEBUG=True, ASGI_APPLICATION=None):
        assert presence_warnings() == {"presence.W006"}


def catch_all(request, rest):
    return HttpResponse("a page of the blog")


class ShadowedURLs:
    urlpatterns = [path("<path:rest>", catch_all), path("api/presence/", include("presence.urls"))]


class IncludedFirstURLs:
    urlpatterns = [path("api/presence/", include("presence.urls")), path("<path:rest>", catch_all)]


class NoPresenceURLs:
    urlpatterns = [path("<path:rest>", catch_all)]


def test_presence_urls_after_a_catch_all_are_an_error():
    with override_settings(DEBUG=True, ROOT_URLCONF=ShadowedURLs):
        messages = presence_messages()
    assert set(messages) == {"presence.E001"}
    assert messages["presence.E001"].msg.startswith(f"/api/presence/online/ reaches {__name__}.catch_all")
    assert "insert(0, " in messages["presence.E001"].hint
    assert_one_line_fix(messages["presence.E001"])
    with override_settings(DEBUG=True, ROOT_URLCONF=IncludedFirstURLs):
        assert presence_warnings() == set()


def test_presence_urls_missing_warn():
    with override_settings(DEBUG=True, ROOT_URLCONF=NoPresenceURLs):
        messages = presence_messages()
    assert set(messages) == {"presence.W007"}
    assert_one_line_fix(messages["presence.W007"])
