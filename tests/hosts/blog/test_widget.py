"""The widget in the host blog, in real Chromium against the blog's own Daphne: what a new user of
the app meets in a Chinese blog with HTMX-boosted links, a preflight-like CSS reset and its own
dark switch (docs/widget.md): page swaps, language, the live ranking, theme, placement at 390 px,
click to jump, and axe-core finding nothing in the widget in any state.

One Daphne (in-memory store) and one Chromium serve the whole module; each test starts once
nobody is online and its readers leave when its pages close (``browsing``).
"""

from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.slow]

A = "/zh-hans/hello-world/"
B = "/zh-hans/django-channels-in-practice/"
C = "/zh-hans/reading-in-the-dark/"
LIST = "/zh-hans/"
ROOM_A, ROOM_B = "post:hello-world", "post:django-channels-in-practice"
READERS = "[data-presence-readers] [data-presence-text]"
ONLINE = "[data-presence-online] [data-presence-text]"
TRACK = "[data-presence-track]"
HOME = "document.querySelector('.site-header nav a').click()"  # from script: Playwright would scroll to it first
PHONE = {"width": 390, "height": 844}
RING = 5  # a focus ring's reach: outline-offset 3px + outline 2px (presence/static/presence/presence.css)
SETTLED = "document.getAnimations().every(a => a.playState !== 'running')"  # markers glided, tooltips shown


def sessions(room: str, reader_id: str) -> list[tuple[str, float]]:
    """The reading sessions the blog's server wrote for a reader of a room."""
    from presence.models import ReadingSession

    rows = ReadingSession.objects.filter(room=room, reader_id=reader_id).order_by("started_at")
    return list(rows.values_list("end_reason", "last_position"))


def wait_for(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


# -- 1. HTMX navigation ---------------------------------------------------------------------------


def test_htmx_boosted_links_and_history_take_the_reader_from_article_to_article(browsing, orm):
    context = browsing.context()
    sockets: list[str] = []
    context.on("page", lambda page: page.on("websocket", lambda ws: sockets.append(ws.url)))
    reader = browsing.open(A, context)
    id_a = reader.alone()
    on_a = time.monotonic()
    watch_a, watch_b = browsing.open(A), browsing.open(B)
    watcher_a, watcher_b = watch_a.newcomer({id_a}), watch_b.alone()
    for page in (watch_a, reader):
        page.wait_number(READERS, 2)
    reader.page.evaluate("window.sameDocument = true")  # gone if a link loaded a new document
    reader.scroll_to(0.5)

    # Shorter visits than PRESENCE_MIN_SESSION_SECONDS (5 s) are no history: read on for that long.
    wait_for(on_a + 5.5)
    reader.page.evaluate(HOME)
    reader.page.wait_for_url("**" + LIST)
    watch_a.wait_number(READERS, 1)  # the reader left A at once
    reader.page.click(f'.article-list a[href="{B}"]')
    reader.page.wait_for_url("**" + B)
    id_b = watch_b.newcomer({watcher_b})
    on_b = time.monotonic()
    for page in (watch_b, reader):
        page.wait_number(READERS, 2)
    reader.wait_markers(lambda m: {x["id"] for x in m} == {watcher_b, id_b})

    # History: back to the list (HTMX restores its snapshot), then back to A.
    wait_for(on_b + 5.5)
    reader.page.go_back()
    reader.page.wait_for_url("**" + LIST)
    watch_b.wait_number(READERS, 1)
    reader.page.go_back()
    reader.page.wait_for_url("**" + A)
    for page in (watch_a, reader):
        page.wait_number(READERS, 2)
    reader.wait_markers(lambda m: {x["id"] for x in m} == {watcher_a, id_a})  # none left of the snapshot
    assert browsing.count(ROOM_A) == 2 and browsing.count(ROOM_B) == 1

    assert reader.page.evaluate("window.sameDocument") is True
    assert len(sockets) == 1, sockets
    # One reading session per visit, written by the blog's server: A's first and B's have ended
    # where the reader left them; A's second visit is still open.
    deadline = time.monotonic() + 10
    while not all(written := (orm(sessions, ROOM_A, id_a), orm(sessions, ROOM_B, id_b))):
        assert time.monotonic() < deadline, f"no session written; the server said:\n{browsing.server.output}"
        time.sleep(0.2)
    [(reason_a, position_a)], [(reason_b, _)] = written
    assert reason_a == reason_b == "left" and 0.45 <= position_a <= 0.55


# -- 2. Language ----------------------------------------------------------------------------------


def test_each_page_speaks_the_language_the_server_rendered_with_its_plural_rules(browsing):
    # Chinese, the blog's first language: the app's catalogue.
    zh = browsing.open(C)
    zh.wait_text(READERS, "1 人正在阅读")
    zh.wait_text(ONLINE, "1 位读者在线")
    assert re.fullmatch(r"匿名读者 \(你\), 已读 0%, 已停留 \d+ 秒", zh.own()["label"]), zh.own()
    assert zh.text("label[for=presence-name-input]") == "向其他读者显示的名字"
    # English, the source text, on the same article: English plural rules, in one and many.
    en = browsing.open("/en" + C.removeprefix("/zh-hans"))
    en.wait_text(READERS, "2 people reading now")
    en.wait_text(ONLINE, "2 readers online")
    assert re.fullmatch(r"Anonymous reader \(you\), 0% read, here for \d+ s", en.own()["label"]), en.own()
    zh.wait_text(READERS, "2 人正在阅读")
    zh.page.context.close()
    en.wait_text(READERS, "1 person reading now")
    # Japanese: Django has a catalogue, the app none, so Django fills the app's texts from the
    # blog's first language (LANGUAGE_CODE): the client speaks Chinese, by Chinese rules.
    ja = browsing.open("/ja" + C.removeprefix("/zh-hans"))
    assert ja.page.evaluate("document.documentElement.lang") == "ja"
    assert ja.page.evaluate("JSON.parse(document.getElementById('presence-config').textContent).lang") == "zh-hans"
    ja.wait_text(READERS, "2 人正在阅读")
    en.wait_text(READERS, "2 people reading now")


# -- 3. The live ranking --------------------------------------------------------------------------

# Every state of the list page that was on screen: recorded at DOMContentLoaded and after every
# change of the document (a MutationObserver runs after the script that made the change).
SNAPSHOTS = """
window.shots = [];
const snapshot = () => {
  const ranking = document.querySelector("[data-presence-ranking]");
  if (!ranking || !document.querySelector(".article-list")) return;
  const text = (e) => e.textContent.replace(/\\s+/g, " ").trim();
  shots.push({
    nobody: !ranking.querySelector("[data-presence-ranking-empty]").hidden,
    ranked: Array.from(ranking.querySelectorAll("[data-presence-ranking-list] li"), text),
    listed: Array.from(document.querySelectorAll(".article-list li"),
                       (li) => [text(li.querySelector("h2")), text(li.querySelector("[data-presence-readers]"))]),
  });
};
document.addEventListener("DOMContentLoaded", () => {
  snapshot();
  new MutationObserver(snapshot).observe(document.documentElement,
    { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ["hidden"] });
});
"""


def numbers(shot: dict) -> tuple[dict[str, int], dict[str, int]]:
    """What one state of the list page said: readers by title in the ranking, and in the list."""
    ranked = {}
    for entry in shot["ranked"]:  # "你好，世界 1 位读者": the title, then the count
        title, count = re.fullmatch(r"(.+) (\d+)\D*", entry).groups()
        ranked[title] = int(count)
    listed = {title: int(re.match(r"\d+", count).group()) for title, count in shot["listed"]}
    return ranked, listed


def ranking_of(page) -> dict[str, int]:
    return numbers(page.page.evaluate("shots[shots.length - 1]"))[0]


def test_the_ranking_is_true_from_the_first_paint_and_live_over_the_socket(browsing):
    rest: list[str] = []

    def watched():
        context = browsing.context()
        context.add_init_script(script=SNAPSHOTS)
        context.on("request", lambda r: r.method == "GET" and "/api/presence/" in r.url and rest.append(r.url))
        return context

    alice = browsing.open(A)
    title_a = alice.text("article h1")
    bob = browsing.open(LIST, watched())
    first = bob.page.evaluate("shots[0]")  # the server's, at DOMContentLoaded
    ranked, listed = numbers(first)
    assert ranked == {title_a: 1} and listed[title_a] == 1 and not first["nobody"], first

    carol = browsing.open(B, watched())
    title_b = carol.text("article h1")
    bob.wait(lambda: ranking_of(bob), lambda ranked: ranked.get(title_b) == 1, 5, "the ranking")
    # Bob is online, and reads none of the articles listed.
    assert {entry["room"]: entry["count"] for entry in browsing.get("/api/presence/rooms/")} == {ROOM_A: 1, ROOM_B: 1}
    assert browsing.online() == 3
    assert ranking_of(bob) == {title_a: 1, title_b: 1}
    alice.page.context.close()
    bob.wait(lambda: ranking_of(bob), lambda ranked: ranked == {title_b: 1}, 5, "the ranking")

    # Carol goes to the list: it was rendered while she still read B, and then she is gone from B.
    carol.page.evaluate(HOME)
    carol.page.wait_for_url("**" + LIST)
    for page in (bob, carol):
        page.wait(lambda p=page: ranking_of(p), lambda ranked: ranked == {}, 5, "the ranking")
        page.wait_text("[data-presence-ranking-empty]", "现在没有人在阅读。")

    # Never "nobody is reading" beside "1 人正在阅读", nor a ranking that disagrees with the list.
    for page in (bob, carol):
        for shot in page.page.evaluate("shots"):
            ranked, listed = numbers(shot)
            assert shot["nobody"] == (not ranked) and all(listed[t] == ranked.get(t, 0) for t in listed), shot
    assert rest == [], "polled the REST API while the socket was open"


# -- 4. The site's own dark switch ----------------------------------------------------------------


def test_the_sites_dark_switch_keeps_the_widgets_texts_readable(browsing, axe):
    other = browsing.open(A)
    other_id = other.alone()
    other.scroll_to(0.4)
    page = browsing.open(A, color_scheme="light")
    page.page.click("#theme-switch")
    assert page.page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.wait_markers(lambda m: any(x["id"] == other_id and x["position"] > 0.3 for x in m))
    page.page.focus(page.focusable(other_id))  # its tooltip shows
    page.page.wait_for_function(SETTLED)
    assert axe(page.page, ["color-contrast"]) == []
    page.page.evaluate(HOME)  # the list, with the ranking; the switch holds across the swap
    page.page.wait_for_selector("[data-presence-ranking-list] li")
    assert page.page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert axe(page.page, ["color-contrast"]) == []


# -- 5. Placement at 390 px under the blog's reset -------------------------------------------------


def test_at_390_px_under_the_blogs_reset_nothing_is_clipped_or_covered(browsing):
    other = browsing.open(B)
    other_id = other.alone()
    other.scroll_to(0.3)
    page = browsing.open(B, viewport=PHONE)
    page.wait_markers(lambda m: len(m) == 2 and any(x["id"] == other_id and x["position"] >= 0.25 for x in m))
    page.page.wait_for_function(SETTLED)
    viewport = page.viewport()

    # At the top: the track starts below the title, clear of the header, inside the viewport.
    track, title, article = page.box(TRACK), page.box("article h1"), page.box("article")
    assert track.inside(viewport), (track, viewport)
    assert track.top >= title.bottom and track.top >= page.box("header.site-header").bottom
    assert track.bottom <= article.bottom
    # Each marker, the reader's own too, whole with its focus ring.
    for marker in page.markers():
        page.page.focus(page.focusable(marker["id"]))
        assert page.page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
        assert page.box(page.focusable(marker["id"])).grown(RING).inside(viewport), marker
    assert sum(m["own"] for m in page.markers()) == 1
    # The other reader's tooltip is inside the viewport and leaves the title readable.
    page.page.focus(page.focusable(other_id))
    page.page.wait_for_function(SETTLED)
    tip = page.box(f'.presence-marker[data-reader="{other_id}"] .presence-tip')
    assert tip.inside(viewport) and not tip.overlaps(title), (tip, title)
    # The name field inside the timeline's own box, which is inside the article's column.
    timeline = page.box("[data-presence-timeline]")
    assert page.box("[data-presence-name]").inside(timeline) and timeline.inside(article)

    # Half way: the whole track in the viewport; at the end of the page: clear of the footer.
    page.scroll_to(0.5)
    page.page.wait_for_timeout(100)
    assert page.box(TRACK).inside(viewport)
    page.page.evaluate("scrollTo({top: document.body.scrollHeight, behavior: 'instant'})")
    page.page.wait_for_timeout(100)
    if page.page.is_visible(TRACK):
        track, footer = page.box(TRACK), page.box("footer.site-footer")
        assert track.bottom <= page.box("article").bottom and not track.overlaps(footer)

    # The ranking keeps its numbers under the reset.
    page.page.evaluate(HOME)
    page.page.wait_for_selector("[data-presence-ranking-list] li")
    item = page.page.evaluate("""() => {  // in one go: the client may replace the items meanwhile
        const li = document.querySelector("[data-presence-ranking-list] li");
        return {style: getComputedStyle(li).listStyleType, display: getComputedStyle(li).display,
                indent: parseFloat(getComputedStyle(li.parentElement).paddingLeft)};
    }""")
    assert item["style"] == "decimal" and item["display"] == "list-item" and item["indent"] >= 16, item


# -- 6. Click to jump -----------------------------------------------------------------------------

AT_70 = "scrollY > 0 && Math.abs(-document.querySelector('article').getBoundingClientRect().top" \
        " / (document.querySelector('article').offsetHeight - innerHeight) - 0.7) < 0.02"


def test_a_click_or_enter_on_a_readers_marker_goes_to_their_place(browsing):
    ahead = browsing.open(C)
    ahead_id = ahead.alone()
    ahead.scroll_to(0.7)
    page, still = browsing.open(C), browsing.open(C, reduced_motion="reduce")
    for reader in (page, still):
        reader.wait_markers(lambda m: any(x["id"] == ahead_id and 0.69 <= x["position"] <= 0.71 for x in m))
        reader.page.wait_for_function(SETTLED)
        assert reader.page.evaluate("scrollY") == 0
        reader.page.evaluate("window.ys = []; addEventListener('scroll', () => ys.push(scrollY))")

    page.page.click(page.focusable(ahead_id))
    page.page.wait_for_function(AT_70, timeout=5000)
    page.page.wait_for_timeout(200)
    ys = page.page.evaluate("ys")
    assert len({y for y in ys if 0 < y < ys[-1]}) >= 2, f"smooth: it passes through the way, {ys}"
    page.page.evaluate("scrollTo({top: 0, behavior: 'instant'})")
    page.page.focus(page.focusable(ahead_id))
    page.page.keyboard.press("Enter")
    page.page.wait_for_function(AT_70, timeout=5000)

    # Reduced motion: there at once, in one step.
    still.page.click(still.focusable(ahead_id))
    assert abs(still.position() - 0.7) < 0.02
    still.page.wait_for_timeout(200)
    ys = still.page.evaluate("ys")
    assert ys and len(set(ys)) == 1, f"one jump, no way through: {ys}"


# -- axe-core in every state ----------------------------------------------------------------------


def test_axe_finds_nothing_in_the_widget_in_any_state(axe_in_every_state):
    """Every state of the widget (tests/hosts/conftest.py), on an article and on the list with the
    ranking. (A, not C: the newest article, C is the first the list shows.)"""
    report = axe_in_every_state(A, LIST, switch="#theme-switch")
    assert report == {}, f"axe-core rule ids and widget elements, by state: {report}"
