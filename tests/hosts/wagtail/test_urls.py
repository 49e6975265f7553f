"""The app's URLs in a Wagtail site: included before Wagtail's catch-all they answer (token, polling,
beacon); included after it, Wagtail's page view answers 404 for all of them, and the system check
about shadowed URLs says so (``hostwagtail/urls_shadowed.py`` is that mistake)."""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.test import override_settings

pytestmark = pytest.mark.django_db

SHADOWED = "hostwagtail.urls_shadowed"


def beacon(client, page):
    body = {"session": uuid.uuid4().hex[:16], "room": f"post:{page.pk}", "position": 0.5}
    return client.post("/api/presence/beacon/", json.dumps(body), content_type="text/plain",
                       headers={"Origin": "http://testserver"})


def test_the_api_answers_before_wagtails_catch_all(client, posts):
    assert client.get("/api/presence/online/").json() == {"online": 0}
    assert client.get("/api/presence/rooms/").json() == []
    assert client.get("/api/presence/token/").status_code == 403  # anonymous: no token
    assert beacon(client, posts["live-post"]).status_code == 204
    client.force_login(get_user_model().objects.get(username="reader"))
    token = client.get("/api/presence/token/")
    assert token.status_code == 200 and token.json()["token"]


@override_settings(ROOT_URLCONF=SHADOWED)
def test_after_the_catch_all_wagtail_answers_404_for_the_api(client, posts):
    for path in ("/api/presence/online/", "/api/presence/rooms/", "/api/presence/token/"):
        response = client.get(path)
        assert response.status_code == 404 and response["Content-Type"].startswith("text/html"), path
    assert beacon(client, posts["live-post"]).status_code in {403, 404}  # Wagtail's view, no JSON


def presence_errors() -> list[tuple[str, str]]:
    return [(m.id, m.msg) for m in run_checks(include_deployment_checks=False) if (m.id or "").startswith("presence.")]


@override_settings(DEBUG=True)  # as the site runs by default; the check fires with DEBUG on too
def test_the_system_check_reports_the_api_shadowed_by_the_catch_all():
    assert presence_errors() == []
    with override_settings(ROOT_URLCONF=SHADOWED):
        [(check, message)] = presence_errors()
    assert check == "presence.E001"
    assert message.startswith("/api/presence/") and "wagtail.views.serve" in message, message
