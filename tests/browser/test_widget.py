"""The widget in real headless Chromium against a real Daphne.

Each test starts its own server (in-memory store, one process) so that counts start at zero.
Screenshots go to a temporary folder (printed) and, for the README, to ``docs/widget-*.png``.
"""

from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.slow]

XSS_NAME = "<img src=x onerror=alert(1)>"
ARTICLE = "/articles/why-your-postgres-index-is-not-being-used/"
VIEWPORT = {"width": 1100, "height": 640}


class Browsing:
    """Opens contexts and pages on the site, and records console errors and dialogs of every page."""

    def __init__(self, browser, base: str):
        self.browser = browser
        self.base = base
        self.contexts = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []

    def context(self, **options):
        options.setdefault("viewport", VIEWPORT)
        context = self.browser.new_context(**options)
        self.contexts.append(context)
        return context

    def page(self, context=None, path: str = ARTICLE):
        page = (context or self.context()).new_page()
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))

        def on_dialog(dialog):
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.goto(self.base + path)
        if path.startswith("/articles/"):
            wait_markers(page, lambda m: any(x["own"] for x in m))
        return page

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsing(site, chromium):
    browsing = Browsing(chromium, site.base)
    yield browsing
    browsing.close()
    assert browsing.errors == [], "console errors"
    assert browsing.dialogs == [], "dialogs opened"


def markers(page) -> list[dict]:
    return page.eval_on_selector_all(
        "[data-presence-track] .presence-marker",
        """els => els.map(e => ({
            id: e.dataset.reader,
            position: parseFloat(e.style.getPropertyValue('--presence-position')),
            own: e.classList.contains('presence-marker-own'),
            label: (e.querySelector('button') || e).getAttribute('aria-label'),
            tabindex: String((e.querySelector('button') || e).tabIndex),
        }))""",
    )


def wait_markers(page, condition, timeout: float = 8.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        seen = markers(page)
        if condition(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"markers never matched; last seen {seen}")
        page.wait_for_timeout(100)


def wait_text(page, selector: str, pattern: str, timeout: float = 8.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = page.inner_text(selector)
        if re.search(pattern, text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector}: {text!r} never matched {pattern!r}")
        page.wait_for_timeout(100)


def scroll_to(page, fraction: float) -> None:
    page.evaluate(
        """f => {
            const a = document.querySelector('article');
            const top = a.getBoundingClientRect().top + scrollY;
            scrollTo(0, top + f * (a.offsetHeight - innerHeight));
        }""",
        fraction,
    )


def test_readers_see_each_other_move(browsing):
    alice = browsing.page()
    bob = browsing.page()
    seen = wait_markers(alice, lambda m: len(m) == 2)
    bob_id = next(m["id"] for m in markers(bob) if m["own"])
    assert {m["id"] for m in seen} == {m["id"] for m in markers(bob)}
    assert all(m["tabindex"] == "0" and m["label"] for m in seen)

    scroll_to(bob, 0.6)
    wait_markers(alice, lambda m: any(x["id"] == bob_id and 0.55 <= x["position"] <= 0.65 for x in m))
    scroll_to(bob, 1.0)
    wait_markers(alice, lambda m: any(x["id"] == bob_id and x["position"] >= 0.99 for x in m))
    wait_text(alice, "[data-presence-readers]", r"^2 people reading now$")
    wait_text(alice, "[data-presence-online]", r"^2 readers online$")


def test_two_tabs_of_one_browser_count_once(browsing):
    context = browsing.context()
    browsing.page(context)
    browsing.page(context)
    other = browsing.page()
    wait_text(other, "[data-presence-readers]", r"^2 people reading now$")
    wait_text(other, "[data-presence-online]", r"^2 readers online$")
    assert len(wait_markers(other, lambda m: len(m) == 2)) == 2


def test_closing_a_tab_removes_its_marker(browsing):
    watcher = browsing.page()
    leaving = browsing.page()
    leaving_id = next(m["id"] for m in markers(leaving) if m["own"])
    wait_markers(watcher, lambda m: leaving_id in {x["id"] for x in m})
    leaving.close()
    started = time.monotonic()
    wait_markers(watcher, lambda m: leaving_id not in {x["id"] for x in m}, timeout=2.0)
    assert time.monotonic() - started <= 2.0
    wait_text(watcher, "[data-presence-readers]", r"^1 person reading now$")


def test_signing_in_merges_identities(browsing):
    context = browsing.context()
    reading = browsing.page(context)
    watcher = browsing.page()
    wait_text(watcher, "[data-presence-online]", r"^2 readers online$")
    anonymous_id = next(m["id"] for m in markers(reading) if m["own"])

    signing_in = browsing.page(context, "/accounts/login/?next=" + ARTICLE)
    signing_in.fill("input[name=username]", "demo")
    signing_in.fill("input[name=password]", "demo")
    signing_in.click("button[type=submit]")
    signing_in.wait_for_url("**" + ARTICLE)

    # The anonymous tab re-keys itself to the user: one reader for the whole browser again.
    merged = wait_markers(watcher, lambda m: len(m) == 2 and anonymous_id not in {x["id"] for x in m})
    wait_text(watcher, "[data-presence-online]", r"^2 readers online$")
    user_id = next(m["id"] for m in markers(signing_in) if m["own"])
    assert user_id in {m["id"] for m in merged}
    wait_markers(reading, lambda m: any(x["own"] and x["id"] == user_id for x in m))
    wait_markers(watcher, lambda m: any(x["id"] == user_id and x["label"].startswith("Demo,") for x in m))


# Every WebSocket a page makes and how each closed, with the page's clock; and a fixed jitter
# (Math.random) so that the client's reconnect delays are its backoff's middle (core.js backoffDelay).
SOCKET_LOG = """
window.socketLog = [];
Math.random = () => 0.5;
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    socketLog.push({ at: performance.now(), event: "open" });
    this.addEventListener("close", (e) => socketLog.push({ at: performance.now(), event: "close", code: e.code }));
  }
};
"""


def test_a_reader_refused_after_hello_backs_off_like_a_refused_handshake(start_site, chromium):
    """Close 4029 (docs/protocol.md): an `identify` to a reader the address has no room for. The
    client backs off as after a refused handshake (1 s, the second step, with jitter at its middle),
    never from the start again (0.5 s) as after a dropped connection."""
    browsing = Browsing(chromium, start_site(max_readers_per_ip=2).base)
    try:
        context = browsing.context()
        context.add_init_script(script=SOCKET_LOG)
        tabs = [browsing.page(context), browsing.page(context)]  # one reader, two connections
        browsing.page()  # another reader: the address is full
        signing_in = browsing.page(context, "/accounts/login/?next=" + ARTICLE)
        signing_in.fill("input[name=username]", "demo")
        signing_in.fill("input[name=password]", "demo")
        signing_in.click("button[type=submit]")
        signing_in.wait_for_url("**" + ARTICLE)
        # The new page's token reaches both tabs; re-keyed to the user, the first is a third reader.
        deadline = time.monotonic() + 10
        while not (refused := [tab for tab in tabs if any(e.get("code") == 4029 for e in tab.evaluate("socketLog"))]):
            assert time.monotonic() < deadline, [tab.evaluate("socketLog") for tab in tabs]
            tabs[0].wait_for_timeout(100)
        tab = refused[0]
        tab.wait_for_timeout(1500)
        log = tab.evaluate("socketLog")
        closed = next(i for i, e in enumerate(log) if e.get("code") == 4029)
        again = next((e for e in log[closed:] if e["event"] == "open"), None)
        assert again is not None and again["at"] - log[closed]["at"] >= 900, log
    finally:
        browsing.close()
    # Refused handshakes (the signed-in page's, a third reader) are the browser's console errors.
    assert [e for e in browsing.errors if "WebSocket connection" not in e] == []


def test_display_name_is_text_never_markup(browsing):
    writer = browsing.page()
    reader = browsing.page()
    field = writer.locator("[data-presence-name]")
    field.fill(XSS_NAME)
    field.dispatch_event("change")
    scroll_to(writer, 0.3)
    seen = wait_markers(reader, lambda m: any(x["label"].startswith(XSS_NAME + ",") for x in m))
    assert seen
    tip = reader.locator(".presence-marker:not(.presence-marker-own) .presence-tip")
    assert tip.text_content().startswith(XSS_NAME)
    for page in (writer, reader):
        assert page.locator("[data-presence-timeline] img").count() == 0
    reader.wait_for_timeout(500)  # an onerror would have fired by now
