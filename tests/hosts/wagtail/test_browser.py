"""The widget on Wagtail pages in real Chromium, served by a real Daphne: readers of a live post see
each other and each other's markers move; an editor's preview of a page opens no WebSocket at all."""

from __future__ import annotations

import re
import time

import pytest

# No `django_db` transaction: Chromium (tests/hosts/conftest.py) runs for the whole module, and the
# database is read through `orm`.
pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.slow]

VIEWPORT = {"width": 1000, "height": 640}


def markers(page) -> list[dict]:
    return page.eval_on_selector_all(
        "[data-presence-track] .presence-marker",
        """els => els.map(e => ({id: e.dataset.reader, own: e.classList.contains('presence-marker-own'),
                                 position: parseFloat(e.style.getPropertyValue('--presence-position'))}))""",
    )


def wait_until(page, probe, condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not condition(seen := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"never matched; last seen {seen!r}")
        page.wait_for_timeout(100)
    return seen


def readers_text(page) -> str:
    return page.inner_text("[data-presence-readers] [data-presence-text]")


@pytest.fixture
def server(shared_server):
    """The module's one Daphne (tests/hosts/conftest.py): the first test counts its readers, the
    second none."""
    return shared_server


@pytest.fixture
def browsing(session_cookies, chromium, server):
    """``browsing(**context options) -> context``; every context closes after the test, and a page
    error (an exception, a console error) fails it. (The users' sessions are made first: a session
    fixture made while Chromium runs could not reach the database.)"""
    contexts, errors = [], []

    def open_context(**options):
        context = chromium.new_context(viewport=VIEWPORT, **options)
        context.on("page", lambda page: page.on("pageerror", lambda error: errors.append(str(error))))
        contexts.append(context)
        return context

    yield open_context
    for context in contexts:
        context.close()
    assert errors == []


def test_readers_of_a_live_post_are_counted_and_see_each_others_markers_move(browsing, server, posts, orm):
    url = server.base + orm(lambda: posts["live-post"].url)
    alice, bob = browsing().new_page(), browsing().new_page()
    alice.goto(url)
    bob.goto(url)
    for page in (alice, bob):
        wait_until(page, lambda page=page: readers_text(page), lambda text: text == "2 people reading now")
    bob_id = wait_until(bob, lambda: [m["id"] for m in markers(bob) if m["own"]], bool)[0]
    bob.evaluate("""() => {
        const article = document.querySelector('article');
        scrollTo(0, article.getBoundingClientRect().top + scrollY + article.offsetHeight - innerHeight);
    }""")
    bob_at_the_end = lambda seen: any(m["id"] == bob_id and m["position"] >= 0.99 for m in seen)  # noqa: E731
    at_the_end = wait_until(alice, lambda: markers(alice), bob_at_the_end)
    assert len(at_the_end) == 2


def test_an_editors_preview_opens_no_websocket(browsing, server, posts, session_cookies, orm):
    context = browsing()
    context.add_cookies([{**session_cookies["editor"], "url": server.base}])
    sockets, scripts = [], []
    context.on("page", lambda page: page.on("websocket", lambda ws: sockets.append((page.url, ws.url))))
    context.on("request", lambda request: re.search(r"presence\.js$", request.url) and scripts.append(request.url))

    # The published page, as the editor reads it: one socket (the control for what follows).
    page = context.new_page()
    with page.expect_websocket():
        page.goto(server.base + orm(lambda: posts["live-post"].url))
    assert len(sockets) == 1 and len(scripts) == 1
    page.close()

    for slug in ("live-post", "draft-post"):
        preview = context.new_page()
        response = preview.goto(f"{server.base}/admin/pages/{posts[slug].pk}/view_draft/", wait_until="load")
        assert response.status == 200
        assert preview.locator("h1").inner_text() == posts[slug].draft_title
        assert re.fullmatch(r"\d+ readers? online", preview.inner_text("[data-presence-online]"))  # server's
        assert preview.locator("#presence-config").count() == 0
        preview.close()
    assert len(sockets) == 1 and len(scripts) == 1, (sockets, scripts)
