"""Which Wagtail pages are rooms: live and public ones only, on the socket and in the API.

A real Daphne serves the seeded test database; a draft, a scheduled page (``go_live_at`` in the
future) and a password-protected page are refused exactly as a page that does not exist, and
never show up (title or URL) in the public ranking. A live page with unpublished changes is a room
under its published title.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
from websockets.sync.client import connect

from pages.management.commands.seed_pages import DRAFT_TITLE

pytestmark = [pytest.mark.processes, pytest.mark.django_db]

HIDDEN = ["draft-post", "scheduled-post", "private-post"]
MISSING = "post:999999"


def room(page) -> str:
    return f"post:{page.pk}"


def api_get(server, path: str) -> tuple[int, object]:
    """``(status, JSON body)`` of a GET to the server."""
    try:
        with urllib.request.urlopen(server.base + path, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def receive(ws, kind: str, timeout: float = 5.0) -> dict:
    """The next frame of a type (others, such as ``online``, are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        if frame["type"] == kind or frame["type"] == "error":
            return frame


@contextlib.contextmanager
def reader(server):
    """A browser-like client with a session of its own, past ``hello``."""
    with connect(f"{server.ws}?session={uuid.uuid4().hex}", origin=server.base, open_timeout=10) as ws:
        receive(ws, "hello")
        yield ws


def join(ws, name: str) -> dict:
    ws.send(json.dumps({"type": "join", "room": name}))
    return receive(ws, "room_state")


def test_a_live_post_is_a_room(server, posts):
    with reader(server) as ws:
        state = join(ws, room(posts["live-post"]))
        assert (state["type"], state["count"]) == ("room_state", 1)


@pytest.mark.parametrize("slug", HIDDEN)
def test_unpublished_and_private_posts_are_refused_like_missing_ones(server, posts, slug):
    with reader(server) as ws:
        missing = join(ws, MISSING)
        hidden = join(ws, room(posts[slug]))
    assert missing["code"] == "invalid_room"
    assert hidden["type"] == "error" and hidden["code"] == "invalid_room", hidden
    assert hidden["message"] == missing["message"]
    # The API answers the same for an existing hidden page as for one that never existed.
    missing = api_get(server, f"/api/presence/rooms/{MISSING}/")
    assert missing[0] == 404
    assert api_get(server, f"/api/presence/rooms/{room(posts[slug])}/") == missing


def test_the_ranking_lists_public_posts_only_with_their_urls_and_published_titles(server, posts):
    with contextlib.ExitStack() as stack:
        for slug in ["live-post", "changed-post", *HIDDEN]:
            for _ in range(2 if slug == "live-post" else 1):
                join(stack.enter_context(reader(server)), room(posts[slug]))
        deadline = time.monotonic() + 5
        while (ranking := api_get(server, "/api/presence/rooms/?limit=50"))[1] and len(ranking[1]) < 2:
            assert time.monotonic() < deadline, ranking
            time.sleep(0.1)
    status, entries = ranking
    assert status == 200
    assert [(e["room"], e["count"], e["title"], e["url"]) for e in entries] == [
        (room(posts["live-post"]), 2, "A live post", "/live-post/"),
        (room(posts["changed-post"]), 1, "A post with unpublished changes", "/changed-post/"),
    ]
    text = json.dumps(entries)
    assert DRAFT_TITLE not in text
    assert not any(posts[slug].title in text or posts[slug].url in text for slug in HIDDEN)
