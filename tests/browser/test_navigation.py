"""The widget across page swaps, in real Chromium against a real Daphne: HTMX's boosted links and
history restores, Turbo Drive, a site's own swaps (pjax style) with ``window.presence.refresh()``.

htmx and Turbo are the npm packages of ``tests/js/package.json``, injected into the demo's pages
as a host site would load them. One socket per page life, no listener or timer added per swap,
and the server's history records one reading session per article visit.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request

import pytest

from tests.browser.test_widget import Browsing, markers, scroll_to, wait_markers, wait_text
from tests.support.servers import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.slow]

NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
HTMX = NODE_MODULES / "htmx.org" / "dist" / "htmx.min.js"
TURBO = NODE_MODULES / "@hotwired" / "turbo" / "dist" / "turbo.es2017-umd.js"

# Counts what presence.js (and only it) opens: sockets, window/document listeners, live intervals.
PROBE = """
(() => {
  const probe = window.__probe = { sockets: 0, listeners: {}, intervals: new Set() };
  const ours = () => /\\/static\\/presence\\/presence\\.js/.test(new Error().stack || "");
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); if (ours()) probe.sockets += 1; }
  };
  const add = EventTarget.prototype.addEventListener;
  EventTarget.prototype.addEventListener = function (type, ...rest) {
    if ((this === window || this === document) && ours()) probe.listeners[type] = (probe.listeners[type] || 0) + 1;
    return add.call(this, type, ...rest);
  };
  const every = window.setInterval, stop = window.clearInterval;
  window.setInterval = (...args) => { const id = every(...args); if (ours()) probe.intervals.add(id); return id; };
  window.clearInterval = (id) => { probe.intervals.delete(id); return stop(id); };
})();
"""
BOOST = "document.addEventListener('DOMContentLoaded', () => document.body.setAttribute('hx-boost', 'true'));"


def probe(page) -> dict:
    return page.evaluate(
        "({ sockets: __probe.sockets, listeners: __probe.listeners, intervals: __probe.intervals.size })"
    )


def count(site, room: str) -> int:
    with urllib.request.urlopen(f"{site.base}/api/presence/rooms/{room}/", timeout=5) as response:
        return json.load(response)["count"]


def wait_count(site, room: str, expected: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := count(site, room)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{room}: {seen} readers, never {expected}")
        time.sleep(0.1)


def own(page) -> str:
    return next(m["id"] for m in markers(page) if m["own"])


def sessions(site_db, room: str, reader: str) -> list[tuple]:
    path = site_db[0].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT end_reason, last_position FROM presence_readingsession WHERE room = ? AND reader_id = ?",
            (room, reader),
        ).fetchall()


@pytest.fixture
def site(start_site):
    return start_site(min_session_seconds=0)


@pytest.fixture
def browsing(site, chromium):
    browsing = Browsing(chromium, site.base)
    yield browsing
    browsing.close()
    assert browsing.errors == [], "console errors"


def test_htmx_boosted_links_and_history_follow_the_reader(browsing, site, site_db):
    context = browsing.context()
    context.add_init_script(script=PROBE)
    context.add_init_script(script=BOOST)
    context.add_init_script(path=str(HTMX))
    reader = browsing.page(context)
    first_url = reader.url
    room_a = reader.evaluate("JSON.parse(document.getElementById('presence-config').textContent).room")
    first = probe(reader)
    assert first["sockets"] == 1
    scroll_to(reader, 0.5)
    reader.wait_for_timeout(1300)  # the position goes out (at most once a second)
    id_a = own(reader)

    # A boosted link to the list (no room): the reader leaves the article at once. (Clicked from
    # script: Playwright would scroll to the link first, and the reader would leave at 1.0.)
    reader.evaluate("document.querySelector('p.back a').click()")
    reader.wait_for_url("**/")
    wait_count(site, room_a, 0)
    assert reader.evaluate("document.body.getAttribute('hx-boost')") == "true"  # a swap, not a load
    [(reason, position)] = sessions(site_db, room_a, id_a)
    assert reason == "left" and 0.45 <= position <= 0.55

    # Another article through the ranking-free list: joined, counted, the observer there sees it.
    href = reader.eval_on_selector_all(".teaser h2 a", "links => links.map(a => a.getAttribute('href'))")[1]
    observer = browsing.page(path=href)
    room_b = observer.evaluate("JSON.parse(document.getElementById('presence-config').textContent).room")
    reader.click(f'.teaser h2 a[href="{href}"]')
    reader.wait_for_url("**" + href)
    wait_markers(reader, lambda m: len(m) == 2 and any(x["own"] for x in m))
    wait_markers(observer, lambda m: len(m) == 2)
    wait_text(reader, "[data-presence-readers]", r"^2 people reading now$")
    id_b = own(reader)

    # History: back to the list (HTMX restores its snapshot), then back to the first article.
    reader.go_back()
    reader.wait_for_url("**/")
    wait_markers(observer, lambda m: len(m) == 1)
    wait_count(site, room_b, 1)
    reader.go_back()
    reader.wait_for_url(first_url)
    wait_count(site, room_a, 1)
    wait_markers(reader, lambda m: len(m) == 1 and m[0]["own"])
    assert reader.locator("[data-presence-track] .presence-marker").count() == 1  # no marker of the snapshot
    wait_text(reader, "[data-presence-readers]", r"^1 person reading now$")

    # One socket for the page's life; no listener or timer more than after the first page.
    assert probe(reader) == first
    # One reading session per visit: A's first visit and B's are written, A's second is open.
    assert len(sessions(site_db, room_a, id_a)) == 1
    assert [reason for reason, _ in sessions(site_db, room_b, id_b)] == ["left"]


def test_turbo_drive_visits_follow_the_reader(browsing, site):
    context = browsing.context()
    context.add_init_script(script=PROBE)
    # Loaded as a site's <script> in the head would be (Turbo needs a document to start in).
    context.add_init_script(script=(
        "document.addEventListener('DOMContentLoaded', () => { const s = document.createElement('script');"
        f"s.textContent = {json.dumps(TURBO.read_text())}; document.head.append(s); }});"
    ))
    reader = browsing.page(context)
    room_a = reader.evaluate("JSON.parse(document.getElementById('presence-config').textContent).room")
    first = probe(reader)
    reader.click("p.back a")
    reader.wait_for_url("**/")
    wait_count(site, room_a, 0)
    href = reader.eval_on_selector_all(".teaser h2 a", "links => links.map(a => a.getAttribute('href'))")[2]
    reader.click(f'.teaser h2 a[href="{href}"]')
    reader.wait_for_url("**" + href)
    wait_markers(reader, lambda m: len(m) == 1 and m[0]["own"])
    room_c = reader.evaluate(
        "Array.from(document.querySelectorAll('script#presence-config')).pop().textContent"
    )
    wait_count(site, json.loads(room_c)["room"], 1)
    assert reader.evaluate("typeof Turbo") == "object"
    assert probe(reader) == first


# A site's own swap: fetch the page, replace the body, push the URL, then tell the widget; going
# back swaps again and says so with a `pjax:end` event, as pjax libraries do.
ROUTER = """
(() => {
  async function swap(url) {
    const html = await (await fetch(url)).text();
    const doc = new DOMParser().parseFromString(html, "text/html");
    document.body.replaceWith(document.adoptNode(doc.body));
    return doc;
  }
  document.addEventListener("click", async (event) => {
    const link = event.target.closest("a");
    if (!link || link.origin !== location.origin) return;
    event.preventDefault();
    history.pushState({}, "", link.href);
    await swap(link.href);
    window.presence.refresh();
  });
  addEventListener("popstate", async () => {
    await swap(location.href);
    document.dispatchEvent(new Event("pjax:end"));
  });
})();
"""


def test_a_sites_own_swaps_and_refresh(browsing, site):
    context = browsing.context()
    context.add_init_script(script=PROBE)
    context.add_init_script(script=ROUTER)
    reader = browsing.page(context)
    room_a = reader.evaluate("JSON.parse(document.getElementById('presence-config').textContent).room")
    first = probe(reader)
    reader.click("p.back a")
    reader.wait_for_url("**/")
    wait_count(site, room_a, 0)
    href = reader.eval_on_selector_all(".teaser h2 a", "links => links.map(a => a.getAttribute('href'))")[3]
    reader.click(f'.teaser h2 a[href="{href}"]')
    reader.wait_for_url("**" + href)
    wait_markers(reader, lambda m: len(m) == 1 and m[0]["own"])
    wait_text(reader, "[data-presence-readers]", r"^1 person reading now$")
    reader.go_back()
    reader.wait_for_url("**/")
    reader.go_back()
    wait_count(site, room_a, 1)
    wait_markers(reader, lambda m: len(m) == 1 and m[0]["own"])
    assert probe(reader) == first
