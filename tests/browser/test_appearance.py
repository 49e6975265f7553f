"""How the widget sits in a page, in real Chromium against a real Daphne: beside the article and
inside the viewport at 390 px, clear of header, footer and title; under a CSS reset; with the site's
own dark switch; and axe-core (npm) finding no violation of the widget in any of its states, whose
screenshots are kept in ``docs/`` (refreshed with ``UPDATE_SCREENSHOTS=1``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.browser.axe import widget_violations
from tests.browser.test_widget import Browsing, markers, scroll_to, wait_markers
from tests.support.servers import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}
RING = 5  # the focus ring: outline-offset 3px + outline 2px (presence.css)

# The rules of Tailwind's preflight that touch lists, borders, buttons and inputs, loaded after the
# widget's stylesheet (a site's own CSS usually comes later in the cascade).
RESET = """
*, ::before, ::after { box-sizing: border-box; border-width: 0; border-style: solid; border-color: #e5e7eb; }
ol, ul, menu { list-style: none; margin: 0; padding: 0; }
h1, h2, h3, p { margin: 0; font-size: inherit; font-weight: inherit; }
button, input { font: inherit; color: inherit; margin: 0; padding: 0; }
button, [type='button'], [type='reset'], [type='submit'] {
  -webkit-appearance: button; background-color: transparent; background-image: none;
}
img, svg, video { display: block; }
"""


@pytest.fixture
def browsing(site, chromium):
    browsing = Browsing(chromium, site.base)
    yield browsing
    browsing.close()
    assert browsing.errors == [], "console errors"


def rect(page, selector: str) -> dict:
    return page.eval_on_selector(
        selector, "e => { const r = e.getBoundingClientRect();"
        " return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; }",
    )


def inside(inner: dict, outer: dict, margin: float = 0) -> bool:
    return (inner["left"] - margin >= outer["left"] and inner["right"] + margin <= outer["right"]
            and inner["top"] - margin >= outer["top"] and inner["bottom"] + margin <= outer["bottom"])


def overlaps(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def test_at_390_px_nothing_is_clipped_and_the_track_keeps_beside_the_article(browsing):
    other = browsing.page()
    scroll_to(other, 0.3)
    other_id = next(m["id"] for m in markers(other) if m["own"])
    page = browsing.page(browsing.context(viewport=PHONE))
    wait_markers(page, lambda m: any(x["id"] == other_id and x["position"] >= 0.25 for x in m))
    page.wait_for_timeout(700)
    viewport = {"left": 0, "top": 0, "right": PHONE["width"], "bottom": PHONE["height"]}

    # At the top: the track starts below the title, clear of the header, inside the viewport.
    track, title, article = rect(page, "[data-presence-track]"), rect(page, "article h1"), rect(page, "article")
    assert inside(track, viewport) and track["top"] >= title["bottom"]
    assert track["top"] >= rect(page, "header.site-header")["bottom"] and track["bottom"] <= article["bottom"]
    # The own marker and its focus ring are whole.
    own = ".presence-marker-own .presence-marker-button"
    page.focus(own)
    assert page.eval_on_selector(own, "e => getComputedStyle(e).outlineStyle") == "solid"
    assert inside(rect(page, own), viewport, margin=RING)
    # The other reader's tooltip is inside the viewport and leaves the title readable.
    page.focus(f'.presence-marker[data-reader="{other_id}"] button')
    page.wait_for_timeout(300)
    tip = rect(page, f'.presence-marker[data-reader="{other_id}"] .presence-tip')
    assert inside(tip, viewport) and not overlaps(tip, title)
    # The name field is inside the timeline's box, which is inside the article's column.
    timeline = rect(page, "[data-presence-timeline]")
    assert inside(rect(page, "[data-presence-name]"), timeline) and inside(timeline, article)

    # At the bottom of the page: the track ends with the article, clear of the footer.
    page.evaluate("scrollTo({top: document.body.scrollHeight, behavior: 'instant'})")
    page.wait_for_timeout(300)
    footer = rect(page, "footer.site-footer")
    if page.is_visible("[data-presence-track]"):
        track, article = rect(page, "[data-presence-track]"), rect(page, "article")
        assert track["bottom"] <= article["bottom"] and not overlaps(track, footer)
    # Half way: the whole track is inside the viewport.
    scroll_to(page, 0.5)
    page.wait_for_timeout(300)
    assert inside(rect(page, "[data-presence-track]"), viewport)


def test_a_css_reset_neither_strips_the_widget_nor_is_broken_by_it(browsing):
    browsing.page()
    page = browsing.page()
    wait_markers(page, lambda m: len(m) == 2)
    page.add_style_tag(content=RESET)
    page.evaluate("""document.querySelector('main').insertAdjacentHTML('beforeend',
        '<ol class="host-list"><li>host item</li></ol><button type="button" class="host-button">host</button>')""")
    page.wait_for_function("document.querySelectorAll('[data-presence-ranking-list] li').length > 0")
    item = page.eval_on_selector("[data-presence-ranking-list] li", """li => ({
        style: getComputedStyle(li).listStyleType, display: getComputedStyle(li).display,
        indent: parseFloat(getComputedStyle(li.parentElement).paddingLeft) })""")
    assert item == {**item, "style": "decimal", "display": "list-item"} and item["indent"] >= 16
    marker = page.eval_on_selector(".presence-marker:not(.presence-marker-own) button", """b => ({
        background: getComputedStyle(b).backgroundColor, border: getComputedStyle(b).borderTopWidth,
        width: b.getBoundingClientRect().width })""")
    assert marker["background"] not in ("rgba(0, 0, 0, 0)", "transparent") and marker["border"] == "2px"
    assert marker["width"] >= 14
    assert page.eval_on_selector("[data-presence-name]", "e => getComputedStyle(e).borderTopWidth") == "1px"
    # The host's own lists and buttons keep what the reset gave them.
    assert page.eval_on_selector(".host-list li", "li => getComputedStyle(li).listStyleType") == "none"
    assert page.eval_on_selector(".host-button", "b => getComputedStyle(b).backgroundColor") == "rgba(0, 0, 0, 0)"


# -- axe-core in every state, and the screenshots of docs/ ------------------------------------------

STATES = {
    "light": {"color_scheme": "light"},
    "dark": {"color_scheme": "dark"},
    "dark-switch": {"color_scheme": "light", "theme": "dark"},  # the site's switch, the system light
    "390": {"color_scheme": "light", "viewport": {"width": 390, "height": 844}, "focus": "own"},
    "focused": {"color_scheme": "light", "focus": "Ada"},
}


@pytest.mark.parametrize("state", list(STATES))
def test_no_accessibility_violation_in_any_state(browsing, state):
    options = dict(STATES[state])
    theme, focus = options.pop("theme", None), options.pop("focus", None)
    options.setdefault("viewport", {"width": 1100, "height": 760})
    for i, where in enumerate([0.15, 0.4, 0.55, 0.8]):
        page = browsing.page(browsing.context(color_scheme=options["color_scheme"]))
        if i == 1:
            page.locator("[data-presence-name]").fill("Ada")
            page.locator("[data-presence-name]").dispatch_event("change")
        scroll_to(page, where)
    context = browsing.context(**options)
    if theme:
        context.add_init_script(
            script="document.addEventListener('DOMContentLoaded', () => "
            f"document.documentElement.dataset.theme = {theme!r});"
        )
    shot = browsing.page(context)
    wait_markers(shot, lambda m: len(m) == 5 and sum(x["position"] > 0.1 for x in m) >= 4)
    shot.wait_for_timeout(800)  # the markers' glide
    if focus == "own":
        shot.focus(".presence-marker-own .presence-marker-button, .presence-marker-own:not(:has(button))")
    elif focus:
        shot.focus(f'.presence-marker-button[aria-label^="{focus},"], .presence-marker[aria-label^="{focus},"]')
    shot.wait_for_timeout(300)
    folder = Path(tempfile.mkdtemp(prefix="presence-screenshots-"))
    path = folder / f"widget-{state}.png"
    shot.screenshot(path=str(path))
    print(f"screenshot: {path}")
    if os.environ.get("UPDATE_SCREENSHOTS"):  # refresh the committed ones in docs/ on purpose only
        shutil.copyfile(path, ROOT / "docs" / f"widget-{state}.png")
    assert widget_violations(shot) == []
    # The ranking too (the list page): its texts against the page's background.
    shot.goto(browsing.base + "/")
    shot.wait_for_selector("[data-presence-ranking-list] li")
    assert widget_violations(shot) == []
