"""What the widget says, in real Chromium against a real Daphne: the language the server rendered
(zh-hans with the app's catalogue; English when the app has none for the site's language), the
live ranking over the socket, the own marker, and a click on a marker jumping to that reader."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser.test_widget import ARTICLE, Browsing, markers, scroll_to, wait_markers, wait_text

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.slow]


@pytest.fixture
def browse(chromium):
    made = []

    def open_site(site) -> Browsing:
        made.append(Browsing(chromium, site.base))
        return made[-1]

    yield open_site
    for browsing in made:
        browsing.close()
        assert browsing.errors == [], "console errors"


# -- language --------------------------------------------------------------------------------


def test_a_zh_hans_site_reads_chinese_with_chinese_rules(start_site, browse):
    browsing = browse(start_site(language="zh-hans"))
    first = browsing.page()
    wait_text(first, "[data-presence-readers]", r"^1 人正在阅读$")
    wait_text(first, "[data-presence-online]", r"^1 位读者在线$")
    [mine] = markers(first)
    assert re.fullmatch(r"匿名读者 \(你\), 已读 0%, 已停留 \d+ 秒", mine["label"])
    second = browsing.page()
    wait_text(first, "[data-presence-readers]", r"^2 人正在阅读$")
    wait_text(second, "[data-presence-readers]", r"^2 人正在阅读$")
    assert first.inner_text(".presence-name-label") == "向其他读者显示的名字"


def test_an_english_fallback_keeps_english_plural_rules(start_site, browse):
    # The app has no Japanese catalogue: the server renders English, so must the client.
    browsing = browse(start_site(language="ja"))
    first = browsing.page()
    assert first.evaluate("document.documentElement.lang") == "en"
    assert first.evaluate("JSON.parse(document.getElementById('presence-config').textContent).lang") == "en"
    wait_text(first, "[data-presence-online]", r"^1 reader online$")
    # The server rendered the count before this reader joined; the client's update says "1 person".
    wait_text(first, "[data-presence-readers]", r"^1 person reading now$")
    browsing.page()
    wait_text(first, "[data-presence-readers]", r"^2 people reading now$")


# -- live ranking -------------------------------------------------------------------------------


def ranking(page) -> tuple[list[str], bool]:
    """The ranking's entries as shown, and whether its "Nobody is reading" line is visible."""
    entries = page.eval_on_selector_all("[data-presence-ranking-list] li", "items => items.map(li => li.innerText)")
    return entries, page.is_visible("[data-presence-ranking-empty]")


def test_the_ranking_is_true_from_the_first_paint_and_live(site, browse):
    browsing = browse(site)
    page = browsing.page()
    title = page.inner_text("article h1")
    # From the moment the count says "1 person", the ranking says so too (it was rendered before the join).
    deadline = time.monotonic() + 3.0
    while True:
        count, (entries, nobody) = page.inner_text("[data-presence-readers]"), ranking(page)
        if count == "1 person reading now":
            assert not nobody, "'Nobody is reading right now.' beside '1 person reading now'"
            assert entries == [f"{title} 1 reader"]
            break
        assert time.monotonic() < deadline, f"count {count!r}, ranking {entries}"
        page.wait_for_timeout(50)
    # Another reader, on another article: the ranking follows within a tick or two, without polling.
    other = browsing.page(path="/")
    href = other.eval_on_selector_all(".teaser h2 a", "links => links.map(a => a.getAttribute('href'))")[2]
    other.goto(browsing.base + href)
    other_title = other.inner_text("article h1")
    started = time.monotonic()
    while len(ranking(page)[0]) < 2:
        assert time.monotonic() - started < 3.0, ranking(page)
        page.wait_for_timeout(100)
    assert sorted(ranking(page)[0]) == sorted([f"{title} 1 reader", f"{other_title} 1 reader"])
    other.close()
    started = time.monotonic()
    while len(ranking(page)[0]) != 1:
        assert time.monotonic() - started < 3.0, ranking(page)
        page.wait_for_timeout(100)


# -- the own marker: room_state.you (protocol 1.1), else hello.reader ----------------------------


def relay(frames: list, as_version_1_0: bool = False):
    """Between page and server: record what the server sends; with ``as_version_1_0``, speak
    protocol 1.0 to the page (no ``you``; in a room, the reader's own id is ``hello.reader``), as
    an older server does."""
    import json

    def handler(route) -> None:
        server = route.connect_to_server()
        me = {}

        def rename(reader_id):
            return me["site"] if reader_id == me.get("room") else reader_id

        def to_page(message):
            frame = json.loads(message)
            frames.append(frame)
            if as_version_1_0:
                frame = json.loads(message)
                if frame["type"] == "hello":
                    me["site"] = frame["reader"]
                elif frame["type"] == "room_state":
                    me["room"] = frame.pop("you")
                    frame["readers"] = [{**r, "id": rename(r["id"])} for r in frame["readers"]]
                elif frame["type"] == "room":
                    frame["updates"] = [{**r, "id": rename(r["id"])} for r in frame["updates"]]
                    frame["left"] = [rename(i) for i in frame["left"]]
            route.send(json.dumps(frame))

        server.on_message(to_page)
        route.on_message(server.send)

    return handler


def first(frames: list, kind: str) -> dict:
    return next(f for f in frames if f["type"] == kind)


def test_the_own_marker_is_room_state_you(site, browse):
    browsing = browse(site)
    context = browsing.context()
    frames: list[dict] = []
    context.route_web_socket("**/ws/presence/**", relay(frames))
    page = browsing.page(context)
    [mine] = wait_markers(page, lambda m: len(m) == 1 and m[0]["own"])
    you, site_id = first(frames, "room_state")["you"], first(frames, "hello")["reader"]
    assert mine["id"] == you != site_id and "(you)" in mine["label"]
    other = browsing.page()
    seen = wait_markers(page, lambda m: len(m) == 2)
    assert [m["id"] for m in seen if m["own"]] == [you]
    assert sum(m["own"] for m in markers(other)) == 1


def test_without_you_the_own_marker_is_hello_reader(site, browse):
    browsing = browse(site)
    context = browsing.context()
    frames: list[dict] = []
    context.route_web_socket("**/ws/presence/**", relay(frames, as_version_1_0=True))
    page = browsing.page(context)
    [mine] = wait_markers(page, lambda m: len(m) == 1 and m[0]["own"])
    assert mine["id"] == first(frames, "hello")["reader"] and "(you)" in mine["label"]


# -- click to jump ------------------------------------------------------------------------------


def jump_setup(browsing, **options):
    ahead = browsing.page()
    scroll_to(ahead, 0.7)
    ahead_id = next(m["id"] for m in markers(ahead) if m["own"])
    page = browsing.page(browsing.context(**options))
    wait_markers(page, lambda m: any(x["id"] == ahead_id and 0.65 <= x["position"] <= 0.75 for x in m))
    page.wait_for_timeout(700)  # the marker's glide
    return page, ahead_id


def button(reader_id: str) -> str:
    """A reader's marker: its button (or the marker itself, in a markup without one)."""
    marker = f'.presence-marker[data-reader="{reader_id}"]'
    return f"{marker} button, {marker}:not(:has(button))"


def position(page) -> float:
    return page.evaluate(
        """() => { const r = document.querySelector('article').getBoundingClientRect();
                   return -r.top / (r.height - innerHeight); }"""
    )


def scroll_ended(page) -> None:
    """Wait until the page has stopped scrolling (the same scrollY twice, 150 ms apart)."""
    page.wait_for_function("() => { const was = window.__lastY; window.__lastY = scrollY; return was === scrollY; }",
                           polling=150, timeout=5000)


def test_clicking_a_readers_marker_scrolls_to_their_place(site, browse):
    browsing = browse(site)
    page, ahead_id = jump_setup(browsing)
    assert page.evaluate("scrollY") == 0
    page.evaluate("window.__ys = []; addEventListener('scroll', () => __ys.push(scrollY))")
    page.click(button(ahead_id))
    page.wait_for_function("Math.abs(-document.querySelector('article').getBoundingClientRect().top"
                           " / (document.querySelector('article').offsetHeight - innerHeight) - 0.7) < 0.02",
                           timeout=3000)
    page.wait_for_timeout(300)
    seen = page.evaluate("__ys")
    assert len({y for y in seen if 0 < y < seen[-1]}) >= 2, f"smooth: it passes through the way, {seen}"
    # Keyboard: back to the top, then Enter and Space on the focused marker. Each time once the
    # smooth scroll before has ended: an instant jump in the middle of one, then a new smooth
    # scroll, left Chromium 156 stuck a few pixels down.
    for key in ("Enter", " "):
        scroll_ended(page)
        page.evaluate("scrollTo({top: 0, behavior: 'instant'})")
        page.focus(button(ahead_id))
        page.keyboard.press(key)
        page.wait_for_function("scrollY > 0 && Math.abs(-document.querySelector('article').getBoundingClientRect().top"
                               " / (document.querySelector('article').offsetHeight - innerHeight) - 0.7) < 0.02",
                               timeout=3000)


def test_reduced_motion_jumps_at_once(site, browse):
    browsing = browse(site)
    page, ahead_id = jump_setup(browsing, reduced_motion="reduce")
    page.evaluate("window.__ys = []; addEventListener('scroll', () => __ys.push(scrollY))")
    page.click(button(ahead_id))
    assert abs(position(page) - 0.7) < 0.02
    page.wait_for_timeout(300)
    seen = page.evaluate("__ys")
    assert seen and len(set(seen)) == 1, f"one jump, no way through: {seen}"
    assert page.evaluate("scrollY") > 0
    assert ARTICLE in page.url
