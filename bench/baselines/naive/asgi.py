"""ASGI entry point of the naive baseline: the demo site's HTTP, the naive consumer for WebSockets.

Same handshake as the app (Origin check, Django auth middleware) at the same URL, so the load
generator drives both unchanged. Benchmarking only.
"""

import os

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.baselines.naive.settings")

django_asgi_app = get_asgi_application()

from bench.baselines.naive.consumer import NaiveConsumer  # noqa: E402
from presence.routing import PresenceOriginValidator  # noqa: E402


def websocket_application():
    return PresenceOriginValidator(AuthMiddlewareStack(URLRouter([path("ws/presence/", NaiveConsumer.as_asgi())])))


application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application()})
