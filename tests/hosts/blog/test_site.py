"""The host blog as its readers and its server see it: pages, static files and the WebSocket
through the README's ``asgi.py`` under a real Daphne."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import pytest

pytestmark = pytest.mark.django_db


def get(url: str):
    return urllib.request.urlopen(url, timeout=10)


def test_the_public_sees_published_articles_only(client):
    home = client.get("/zh-hans/")
    assert home.status_code == 200
    text = home.content.decode()
    assert "你好，世界" in text and "Django Channels 实践" in text
    assert "未完成的想法" not in text  # a draft
    assert "明年见" not in text  # scheduled for 2999
    assert client.get("/zh-hans/hello-world/").status_code == 200
    assert client.get("/zh-hans/unfinished-thoughts/").status_code == 404
    assert client.get("/zh-hans/coming-next-year/").status_code == 404


def test_the_blog_keeps_its_own_api_beside_the_apps(client):
    """`rest_framework` was in the blog's INSTALLED_APPS before the app's: listed once, both APIs answer."""
    from django.conf import settings

    assert settings.INSTALLED_APPS.count("rest_framework") == 1
    assert settings.INSTALLED_APPS[0] == "daphne"
    own = client.get("/api/articles/")
    assert own.status_code == 200 and own.json()["count"] == 3
    assert client.get("/api/presence/online/").json() == {"online": 0}


@pytest.mark.processes
@pytest.mark.slow
async def test_daphne_serves_pages_static_files_and_the_websocket(host_server, reader):
    """The README's asgi.py under bare Daphne (no runserver): the client script is served, and
    a reader who connects is counted."""
    server = await asyncio.to_thread(host_server)
    page = await asyncio.to_thread(get, f"{server.base}/zh-hans/hello-world/")
    script = re.search(r'src="([^"]*presence\.js)"', page.read().decode())
    assert script, "the page loads no presence.js"
    served = await asyncio.to_thread(get, server.base + script.group(1))
    assert served.status == 200 and "javascript" in served.headers["Content-Type"]

    first = await reader(server.ws, session="hostblogsmoke01")
    assert first.frames[0]["online"] == 1
