"""The widget on Wagtail pages, in real Chromium against the host's own Daphne (docs/widget.md): the
reader's own marker from ``room_state.you``, the live ranking with the pages' Wagtail URLs, click to
jump, and axe-core finding nothing in the widget in any state, Wagtail's own dark switch included.

One Daphne (in-memory store) and one Chromium serve the whole module; each test starts once
nobody is online and its readers leave when its pages close (``browsing``).
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.slow]

INDEX = "/"
SETTLED = "document.getAnimations().every(a => a.playState !== 'running')"  # markers glided, tooltips shown


@pytest.fixture(scope="module")
def live(posts, orm) -> dict[str, tuple[str, str, str]]:
    """The live posts by slug: (room, title, URL as Wagtail makes it), read before Chromium starts."""
    return orm(lambda: {slug: (f"post:{page.pk}", page.title, page.url) for slug, page in posts.items()
                        if page.live and not page.go_live_at and slug != "private-post"})


# -- the own marker: room_state.you ----------------------------------------------------------------


def relay(frames: list):
    """Between a page and the server: what the server sends, recorded in order."""

    def handler(route) -> None:
        server = route.connect_to_server()

        def to_page(message) -> None:
            frames.append(json.loads(message))
            route.send(message)

        server.on_message(to_page)
        route.on_message(server.send)

    return handler


def test_the_own_marker_is_the_id_the_room_gave_the_reader(browsing, live):
    _, _, url = live["live-post"]
    context = browsing.context()
    frames: list[dict] = []
    context.route_web_socket("**/ws/presence/**", relay(frames))
    page = browsing.open(url, context)
    mine = page.own()
    you = next(f for f in frames if f["type"] == "room_state")["you"]
    site_id = next(f for f in frames if f["type"] == "hello")["reader"]
    assert mine["id"] == you != site_id and "(you)" in mine["label"], (mine, you, site_id)
    other = browsing.open(url)
    for reader in (page, other):
        seen = reader.wait_markers(lambda m: len(m) == 2)
        assert [m["own"] for m in seen].count(True) == 1, seen
    assert other.own()["id"] != you and [m["id"] for m in page.markers() if m["own"]] == [you]


# -- the live ranking, with the pages' URLs --------------------------------------------------------


# The index page as shown: ranking entries (title, count, link) and each post's count.
SHOWN = """() => ({
    ranked: Array.from(document.querySelectorAll("[data-presence-ranking-list] li"), (li) => {
        const link = li.querySelector("a");
        return [link ? link.textContent.trim() : li.textContent.trim(),
                li.querySelector(".presence-ranking-count").textContent.trim(), link && link.href];
    }),
    nobody: !document.querySelector("[data-presence-ranking-empty]").hidden,
    listed: Object.fromEntries(Array.from(document.querySelectorAll(".posts li"),
        (li) => [li.querySelector("a").textContent.trim(),
                 li.querySelector("[data-presence-readers]").textContent.trim()])),
})"""


def shown(page) -> dict:
    return page.page.evaluate(SHOWN)


def test_the_ranking_follows_the_readers_live_with_the_pages_urls(browsing, live):
    (room_a, title_a, url_a), (room_b, title_b, url_b) = live["live-post"], live["another-live-post"]
    rest: list[str] = []
    context = browsing.context()
    context.on("request", lambda r: r.method == "GET" and "/api/presence/" in r.url and rest.append(r.url))
    context.add_init_script(script=f"addEventListener('DOMContentLoaded', () => {{ window.firstPaint = ({SHOWN})() }})")

    alice = browsing.open(url_a)
    bob = browsing.open(INDEX, context)
    first = bob.page.evaluate("firstPaint")  # the server's, before the socket said anything
    assert first["ranked"] == [[title_a, "1 reader", browsing.base + url_a]] and not first["nobody"], first

    carol = browsing.open(url_b)
    both = [[title_a, "1 reader", browsing.base + url_a], [title_b, "1 reader", browsing.base + url_b]]
    bob.wait(lambda: shown(bob), lambda s: both[1] in s["ranked"], 5, "the ranking")
    # Bob is online, and reads none of the posts listed.
    assert {entry["room"]: entry["count"] for entry in browsing.get("/api/presence/rooms/")} == {room_a: 1, room_b: 1}
    assert browsing.online() == 3
    seen = bob.wait(lambda: shown(bob), lambda s: sorted(s["ranked"]) == sorted(both), 5, "the ranking")
    assert seen["listed"][title_a] == seen["listed"][title_b] == "1 person reading now", seen
    alice.page.context.close()
    seen = bob.wait(lambda: shown(bob), lambda s: s["ranked"] == [both[1]], 5, "the ranking")
    assert seen["listed"][title_a] == "0 people reading now", seen
    carol.page.context.close()
    seen = bob.wait(lambda: shown(bob), lambda s: s["ranked"] == [] and s["nobody"], 5, "the ranking")
    assert set(seen["listed"].values()) == {"0 people reading now"}, seen
    assert rest == [], "polled the REST API while the socket was open"


# -- click to jump ---------------------------------------------------------------------------------


def test_a_click_on_a_readers_marker_goes_to_their_place(browsing, live):
    _, _, url = live["another-live-post"]
    ahead = browsing.open(url)
    ahead_id = ahead.alone()
    ahead.scroll_to(0.7)
    page = browsing.open(url)
    page.wait_markers(lambda m: any(x["id"] == ahead_id and 0.69 <= x["position"] <= 0.71 for x in m))
    page.page.wait_for_function(SETTLED)
    assert page.page.evaluate("scrollY") == 0
    page.page.click(page.focusable(ahead_id))
    page.page.wait_for_function(
        "scrollY > 0 && Math.abs(-document.querySelector('article').getBoundingClientRect().top"
        " / (document.querySelector('article').offsetHeight - innerHeight) - 0.7) < 0.02", timeout=5000)


# -- axe-core in every state -----------------------------------------------------------------------


def test_axe_finds_nothing_in_the_widget_in_any_state(axe_in_every_state, live):
    """Every state of the widget (tests/hosts/conftest.py), with Wagtail's theme switch: on a post
    and on the index with the ranking."""
    _, _, url = live["another-live-post"]  # not the first post the index lists
    report = axe_in_every_state(url, INDEX, switch="[data-theme-toggle]")
    assert report == {}, f"axe-core rule ids and widget elements, by state: {report}"
