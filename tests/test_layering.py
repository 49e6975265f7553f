"""The HTTP side (API, beacon, admin) shares domain modules with the WebSocket side, never its code.

A process that serves only HTTP (a WSGI server, ``manage.py`` commands) must not import the
consumer, the hub or Channels' routing: they would start nothing, but they would tie the API's
modules to the socket's, which is how a view ends up calling into a hub.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HTTP_SIDE = [
    "presence.urls", "presence.api", "presence.api_docs", "presence.beacon", "presence.admin", "presence.dashboard",
]
WEBSOCKET_SIDE = [
    "presence.routing", "presence.consumers", "presence.hub", "presence.lifespan",
    "channels.generic", "channels.routing", "channels.auth", "channels.consumer", "channels.layers",
]


def test_the_http_side_imports_nothing_of_the_websocket_stack():
    # A fresh interpreter: this one has imported everything already. django.setup() counts too, as
    # it imports every app's AppConfig and, through the admin's autodiscovery, their admin modules.
    code = (
        "import django, json, sys; django.setup(); "
        f"[__import__(name) for name in {HTTP_SIDE!r}]; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "presence_site.settings"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.splitlines()[-1])
    assert set(HTTP_SIDE) <= set(modules)
    pulled_in = [m for m in modules if any(m == ws or m.startswith(ws + ".") for ws in WEBSOCKET_SIDE)]
    assert pulled_in == [], f"the HTTP side imports the WebSocket stack: {pulled_in}"
