"""System checks for what silently breaks the app in a host project.

``presence.W001``/``W002``/``W008`` only with DEBUG off (development runs one process; W008: a
per-process cache under several processes, which loses the beacon's final positions); the others
with DEBUG on too, since each breaks something while developing already: a Redis channel layer
without the Redis presence store (W003), redis-py 8's socket timeout in the channel layer
(W004), no ``request`` context processor (W005), no WebSocket route to the app (W006), the
API not included (W007) or shadowed by another pattern (E001), and wrong ``PRESENCE_ROOM_KINDS``
entries (E101-E109, W101: ``room_kinds.check``). Each has a one-line fix.
"""

from __future__ import annotations

import inspect
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from presence import room_kinds
from presence.conf import app_settings
from presence.store import backend_path

MEMORY_STORE = "presence.store.memory.MemoryStore"
# Django caches that each server process keeps to itself (LocMemCache is the default).
PER_PROCESS_CACHES = ("django.core.cache.backends.locmem.LocMemCache", "django.core.cache.backends.dummy.DummyCache")
REQUEST_PROCESSOR = "django.template.context_processors.request"
WEBSOCKET_PATH = "/ws/presence/"


def _layer() -> dict:
    return getattr(settings, "CHANNEL_LAYERS", {}).get(app_settings.CHANNEL_LAYER, {})


def _layer_on_redis() -> bool:
    """The hub's channel layer is channels-redis: server processes share it."""
    return "channels_redis" in _layer().get("BACKEND", "")


@register()
def check_production_backends(app_configs=None, **kwargs) -> list[Warning]:
    if settings.DEBUG:
        return []
    found = []
    if backend_path() == MEMORY_STORE:
        found.append(
            Warning(
                "The in-memory presence store is used with DEBUG off.",
                hint="Set PRESENCE_REDIS_URL (REDIS_URL in the demo site) so that several server "
                "processes share one count; the in-memory store only sees its own process.",
                id="presence.W001",
            )
        )
    layer = _layer()
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
    (presence/room_kinds.py); with DEBUG on too, since a wrong entry refuses every room of its kind."""
    return [
        (Warning if problem.is_warning else Error)(problem.message, hint=problem.hint, id=problem.id)
        for problem in room_kinds.check(app_settings.ROOM_KINDS)
    ]


@register()
def check_store_matches_layer(app_configs=None, **kwargs) -> list[Warning]:
    """Several processes on one Redis layer but each with its own in-memory count: "1 reader
    online" on a page whose timeline shows two."""
    if _layer_on_redis() and backend_path() == MEMORY_STORE:
        return [
            Warning(
                "The channel layer is on Redis but the presence store is in memory: each server process "
                "counts only its own readers.",
                hint="Set PRESENCE_REDIS_URL = REDIS_URL (the Redis of your channel layer).",
                id="presence.W003",
            )
        ]
    return []


def _per_process_cache() -> str | None:
    """The default cache's backend when each process has its own, else None."""
    backend = settings.CACHES.get(DEFAULT_CACHE_ALIAS, {}).get("BACKEND", "")
    try:
        cls = import_string(backend)
    except ImportError:
        return None  # Django's own cache checks report what cannot be imported
    per_process = isinstance(cls, type) and any(issubclass(cls, import_string(path)) for path in PER_PROCESS_CACHES)
    return backend if per_process else None


@register()
def check_shared_cache(app_configs=None, **kwargs) -> list[Warning]:
    """Several processes (the Redis store or channel layer) with a per-process cache: a beacon that
    reaches another process than its socket, before the socket's leave is written, is never seen by
    that leave (``presence/reading_sessions.py``)."""
    if settings.DEBUG:
        return []
    several = backend_path().startswith("presence.store.redis.") or _layer_on_redis()
    backend = _per_process_cache() if several else None
    if backend is None:
        return []
    return [
        Warning(
            f"The default cache ({backend.rsplit('.', 1)[-1]}) is per process, but a Redis presence store or "
            "channel layer means several server processes: a closing page's final reading position is lost "
            "whenever its beacon reaches another process than its WebSocket before the socket's leave.",
            hint='Give CACHES["default"] a cache all processes share, e.g. '
            '"django.core.cache.backends.redis.RedisCache" at REDIS_URL.',
            id="presence.W008",
        )
    ]


def _redis_default_socket_timeout() -> float | None:
    """redis-py's default read timeout: 5 s from redis-py 8 on, none before."""
    from redis.asyncio.connection import AbstractConnection

    return inspect.signature(AbstractConnection.__init__).parameters["socket_timeout"].default


def _socket_timeout(host: dict, default: float | None) -> float | None:
    if "socket_timeout" in host:
        return host["socket_timeout"]
    query = parse_qs(urlsplit(str(host.get("address", ""))).query)
    if query.get("socket_timeout"):
        return float(query["socket_timeout"][-1])
    return default


@register()
def check_layer_socket_timeout(app_configs=None, **kwargs) -> list[Warning]:
    """channels-redis blocks 5 s in a read for messages (``brpop_timeout``); a socket timeout
    as short kills the read, logging ``TimeoutError`` every few seconds
    (https://github.com/django/channels_redis/issues/422)."""
    layer = _layer()
    if layer.get("BACKEND") != "channels_redis.core.RedisChannelLayer":
        return []
    from channels_redis.core import RedisChannelLayer
    from channels_redis.utils import decode_hosts

    try:
        hosts = decode_hosts(layer.get("CONFIG", {}).get("hosts"))
        default = _redis_default_socket_timeout()
        short = [
            host for host in hosts
            if (timeout := _socket_timeout(host, default)) is not None and timeout <= RedisChannelLayer.brpop_timeout
        ]
    except (TypeError, ValueError):
        return []  # a malformed layer config: channels-redis itself says what is wrong when used
    if not short:
        return []
    return [
        Warning(
            f"The Redis channel layer's connections time out reads after "
            f"{_socket_timeout(short[0], default):g} s, no longer than its blocking read of "
            f"{RedisChannelLayer.brpop_timeout} s: consumers fail with TimeoutError every few seconds.",
            hint='Build it with CHANNEL_LAYERS = presence.layers.redis_channel_layers(REDIS_URL), or give each '
            'host "socket_timeout": None.',
            id="presence.W004",
        )
    ]


@register(Tags.templates)
def check_request_context_processor(app_configs=None, **kwargs) -> list[Warning]:
    """``{% presence_script %}`` needs the request: the WebSocket URL is the page's host, and the
    script renders once per request."""
    engines = [
        engine for engine in settings.TEMPLATES
        if engine.get("BACKEND") == "django.template.backends.django.DjangoTemplates"
    ]
    processors = [engine.get("OPTIONS", {}).get("context_processors", ()) for engine in engines]
    if not engines or any(REQUEST_PROCESSOR in listed for listed in processors):
        return []
    return [
        Warning(
            "No Django template engine has the request context processor: {% presence_script %} cannot "
            "tell the page's host (its WebSocket URL) nor render only once per page.",
            hint=f'Add "{REQUEST_PROCESSOR}" to TEMPLATES[0]["OPTIONS"]["context_processors"].',
            id="presence.W005",
        )
    ]


def _reaches_presence(app: object, path: str, depth: int = 0) -> bool | None:
    """Whether a WebSocket at ``path`` reaches the presence consumer through ``app``: True, False,
    or None when an application on the way cannot be seen into."""
    from channels.routing import URLRouter
    from django.core.handlers.asgi import ASGIHandler
    from django.urls import Resolver404

    from presence.consumers import PresenceConsumer

    if depth > 50:
        return None
    consumer = getattr(app, "consumer_class", None)
    if isinstance(consumer, type):
        return issubclass(consumer, PresenceConsumer)
    mapping = getattr(app, "application_mapping", None)
    if isinstance(mapping, dict):  # ProtocolTypeRouter
        return False if "websocket" not in mapping else _reaches_presence(mapping["websocket"], path, depth + 1)
    if isinstance(app, URLRouter):
        for route in app.routes:
            try:
                match = route.pattern.match(path.lstrip("/"))
            except Resolver404:
                continue
            if match:
                return _reaches_presence(route.callback, match[0], depth + 1)
        return False
    if isinstance(app, ASGIHandler):  # Django's own: HTTP only
        return False
    for attribute in ("inner", "application", "app"):  # middleware (channels' and most others)
        inner = getattr(app, attribute, None)
        if inner is not None and inner is not app:
            return _reaches_presence(inner, path, depth + 1)
    return None


@register()
def check_websocket_route(app_configs=None, **kwargs) -> list[Warning]:
    """Without a WebSocket route the pages fall back to polling every 30 s, with nothing to say why."""
    hint = ('Make ASGI_APPLICATION a ProtocolTypeRouter with "websocket": presence.routing.websocket_application() '
            '(README, "asgi.py").')
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        return [Warning("ASGI_APPLICATION is not set: nothing serves the presence WebSocket.", hint=hint,
                        id="presence.W006")]
    try:
        application = import_string(path)
    except Exception as exc:
        return [Warning(f"ASGI_APPLICATION {path!r} cannot be imported ({type(exc).__name__}: {exc}).", hint=hint,
                        id="presence.W006")]
    if _reaches_presence(application, WEBSOCKET_PATH) is False:
        return [Warning(f"ASGI_APPLICATION {path!r} has no WebSocket route to {WEBSOCKET_PATH}: the widget's "
                        "live updates fail.", hint=hint, id="presence.W006")]
    return []


def _sample_kwargs(pattern) -> dict[str, str]:
    from django.urls.converters import IntConverter

    converters = getattr(pattern.pattern, "converters", {})
    return {name: "1" if isinstance(conv, IntConverter) else "probe" for name, conv in converters.items()}


def _view_name(match) -> str:
    view = getattr(match.func, "view_class", match.func)
    return f"{view.__module__}.{getattr(view, '__qualname__', type(view).__qualname__)}"


@register(Tags.urls)
def check_api_urls(app_configs=None, **kwargs) -> list[Error | Warning]:
    """Every URL of ``presence.urls`` reversed, then resolved back: each must reach the app's own
    view. A catch-all pattern before ``include("presence.urls")`` (Wagtail's, a blog's
    ``<slug>/``) answers the widget's token, polling and beacon requests with its own 404 or 403."""
    from django.urls import NoReverseMatch, Resolver404, resolve, reverse
    from django.utils import translation

    from presence import urls

    shadowed = []
    reversed_any = False
    try:
        with translation.override(settings.LANGUAGE_CODE):
            for pattern in urls.urlpatterns:
                if not getattr(pattern, "name", None):
                    continue
                try:
                    url = reverse(f"{urls.app_name}:{pattern.name}", kwargs=_sample_kwargs(pattern) or None)
                except NoReverseMatch:
                    continue
                reversed_any = True
                try:
                    match = resolve(urlsplit(url).path)
                except Resolver404:
                    shadowed.append((url, "no view (404)"))
                    continue
                if urls.app_name not in match.app_names or match.url_name != pattern.name:
                    shadowed.append((url, _view_name(match)))
    except Exception:
        return []  # a URLconf that does not load: Django's own URL checks report it
    include = 'urlpatterns.insert(0, path("api/presence/", include("presence.urls")))'
    if not reversed_any:
        return [
            Warning(
                "The presence API is not in the URLconf: the widget's sign-in, polling fallback and "
                "beacon have no endpoint.",
                hint=f"Add it before any catch-all pattern: {include}.",
                id="presence.W007",
            )
        ]
    if not shadowed:
        return []
    (url, view), more = shadowed[0], len(shadowed) - 1
    return [
        Error(
            f"{url} reaches {view}, not the presence API{f' (and {more} more of its URLs)' if more else ''}: "
            'a pattern before include("presence.urls") takes them.',
            hint=f"Include presence.urls before any catch-all pattern: {include}.",
            id="presence.E001",
        )
    ]


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
