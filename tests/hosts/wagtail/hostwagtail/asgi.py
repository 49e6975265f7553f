"""ASGI entry point: Django for HTTP (with static files, as ``runserver`` serves them), the presence
app for WebSockets (``/ws/presence/``) and lifespan events."""

import os

from channels.routing import ProtocolTypeRouter
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hostwagtail.settings")
django_asgi_app = get_asgi_application()

from presence.lifespan import lifespan_application  # noqa: E402
from presence.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": websocket_application(),
        "lifespan": lifespan_application,
    }
)
