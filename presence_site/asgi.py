"""ASGI entry point: Django for HTTP, the presence app for WebSockets, lifespan for a graceful stop."""

import os

from channels.routing import ProtocolTypeRouter
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")

# Set Django up before importing anything that uses models.
django_asgi_app = get_asgi_application()

from presence.lifespan import lifespan_application  # noqa: E402
from presence.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        # With DEBUG on, static files (presence.js) are served here, as `runserver` does;
        # with DEBUG off, your web server serves what `collectstatic` put in STATIC_ROOT.
        "http": ASGIStaticFilesHandler(django_asgi_app) if settings.DEBUG else django_asgi_app,
        "websocket": websocket_application(),
        # Servers that send lifespan events (uvicorn): a graceful stop releases this process's readers.
        "lifespan": lifespan_application,
    }
)
