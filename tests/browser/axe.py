"""axe-core (npm, ``tests/js/package.json``) in a page: the accessibility violations of the widget.

Not tests. The widget's nodes are those inside a ``.presence`` element; the host page's own
violations are not the widget's to fix and are left out.
"""

from __future__ import annotations

import pytest

from tests.support.servers import ROOT

AXE = ROOT / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"


def widget_violations(page) -> list[dict]:
    """axe-core's violations whose nodes belong to the widget, with their targets and summaries."""
    if not AXE.exists():
        pytest.fail(f"axe-core is not installed at {AXE}: run `npm ci --prefix tests/js` (make test does)")
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    return page.evaluate(
        """async () => {
            const results = await axe.run(document, { resultTypes: ["violations"] });
            const mine = (node) => {
                const el = document.querySelector(node.target[0]);
                return el !== null && el.closest(".presence") !== null;
            };
            return results.violations
                .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                               nodes: v.nodes.filter(mine).map((n) => [n.target, n.failureSummary]) }))
                .filter((v) => v.nodes.length > 0);
        }"""
    )
