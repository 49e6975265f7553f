"""The WebSocket application: Origin check, Django auth (session cookie), and the URL route."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import path

from presence.conf import app_settings
from presence.consumers import PresenceConsumer

websocket_urlpatterns = [path("ws/presence/", PresenceConsumer.as_asgi())]


class PresenceOriginValidator(OriginValidator):
    """Refuses handshakes (HTTP 403) whose Origin is not an allowed host; read per request,
    so ``override_settings`` and ``PRESENCE_ALLOWED_ORIGINS`` apply without a restart."""

    def __init__(self, application):
        self.application = application

    @property
    def allowed_origins(self) -> list[str]:
        hosts = list(settings.ALLOWED_HOSTS) or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
        return hosts + list(app_settings.ALLOWED_ORIGINS)

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return app_settings.ALLOW_NO_ORIGIN
        return self.validate_origin(parsed_origin)


def websocket_application():
    """The ``websocket`` entry of the project's ``ProtocolTypeRouter``."""
    return PresenceOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
