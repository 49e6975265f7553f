"""ASGI entry point: Django for HTTP, the presence app for WebSockets (``/ws/presence/``), and the
lifespan events of servers that send them (uvicorn: a graceful stop releases this process's readers)."""

import os

from channels.routing import ProtocolTypeRouter
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")

# Set up Django (apps, settings) before importing anything that touches models.
django_asgi_app = get_asgi_application()

from presence.lifespan import lifespan_application  # noqa: E402
from presence.routing import websocket_application  # noqa: E402

# With DEBUG on, serve static files from `daphne presence_site.asgi:application` too, as
# `runserver` does, so the multi-process demo (README) gets its CSS and live.js.
http_application = ASGIStaticFilesHandler(django_asgi_app) if settings.DEBUG else django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": websocket_application(),
        # Daphne sends no lifespan events (it stops the hub through Twisted's shutdown trigger).
        "lifespan": lifespan_application,
    }
)
