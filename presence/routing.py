"""The WebSocket application: Origin check, Django auth (session cookie), and the URL route."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import WebsocketDenier
from django.urls import path

from presence import origins
from presence.consumers import RAW_SEND, PresenceConsumer

websocket_urlpatterns = [path("ws/presence/", PresenceConsumer.as_asgi())]


class PresenceOriginValidator:
    """Refuses handshakes (HTTP 403) whose Origin is not a page of this site (scheme, host and
    port: ``presence/origins.py``); read per request, so ``override_settings`` and
    ``PRESENCE_ALLOWED_ORIGINS`` apply without a restart."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("PresenceOriginValidator serves WebSocket connections only")
        if origins.scope_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


class KeepRawSend:
    """Keeps the server's own ``send`` in the scope (``consumers.RAW_SEND``): the consumer's frames
    then skip the wrappers the middleware below puts around it (docs/benchmarks.md measures it)."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        return await self.application({RAW_SEND: send, **scope}, receive, send)  # the outermost's


def close_invalid_text_with_1007() -> None:
    """Make Daphne close a connection that sends invalid UTF-8 in a text frame with 1007 (RFC 6455,
    section 8.1), as autobahn does once its ``failByDrop`` option is off, instead of dropping the
    TCP connection. Daphne sets no such option on its factory, and autobahn copies options onto
    each connection only where the protocol class has none of its own (``_connectionMade``)."""
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # another ASGI server: it closes with 1007 on its own
        return
    WebSocketProtocol.failByDrop = False


def websocket_application():
    """The ``websocket`` entry of the project's ``ProtocolTypeRouter``."""
    close_invalid_text_with_1007()
    return KeepRawSend(PresenceOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))))
