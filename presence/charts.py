"""Small server-rendered SVG charts for the admin pages: no JavaScript library, no CDN.

Colours come from the admin's CSS variables (with fallbacks), so the charts follow its light
and dark themes. Every label is escaped: they are article titles and other data.
"""

from __future__ import annotations

import math

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Rough width of a label character at the chart's font size, to thin out crowded labels.
_CHAR_WIDTH = 6.5
_FONT_SIZE = 11


def _number(value: float) -> str:
    """A coordinate or value as short, locale-independent SVG text."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def bar_chart_svg(
    values: list[int | float],
    labels: list[str],
    *,
    title: str,
    width: int = 600,
    height: int = 200,
) -> SafeString:
    """A bar chart as inline SVG markup, with an accessible name and a tooltip per bar."""
    if len(values) != len(labels):
        raise ValueError("values and labels must have the same length")
    clean = [float(v) if isinstance(v, int | float) and math.isfinite(v) and v > 0 else 0.0 for v in values]
    name = escape(title)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="presence-chart" role="img" aria-label="{name}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'style="max-width: 100%; height: auto; font-size: {_FONT_SIZE}px; font-family: inherit">',
        f"<title>{name}</title>",
    ]
    top, bottom, left, right = 16, 20, 8, 8
    plot_w = max(width - left - right, 1)
    plot_h = max(height - top - bottom, 1)
    baseline = top + plot_h
    highest = max(clean, default=0.0)

    if not clean or highest == 0:
        parts.append(
            f'<text x="{_number(width / 2)}" y="{_number(height / 2)}" text-anchor="middle" '
            f'fill="currentColor" style="fill: var(--body-quiet-color, #666)">No data</text>'
        )
    else:
        slot = plot_w / len(clean)
        gap = min(slot * 0.2, 8)
        longest = max((len(label) for label in labels), default=0) * _CHAR_WIDTH + 4
        every = max(1, math.ceil(longest / slot)) if longest > 0 else 1
        for i, (value, label) in enumerate(zip(clean, labels, strict=True)):
            bar_h = value / highest * plot_h
            x = left + i * slot + gap / 2
            raw = values[i]
            shown = _number(raw) if isinstance(raw, int | float) and math.isfinite(raw) else "0"
            tip = escape(f"{label}: {shown}")
            parts.append(
                f'<rect x="{_number(x)}" y="{_number(baseline - bar_h)}" width="{_number(slot - gap)}" '
                f'height="{_number(bar_h)}" style="fill: var(--link-fg, #417893)"><title>{tip}</title></rect>'
            )
            center = _number(left + (i + 0.5) * slot)
            if value > 0 and slot >= len(shown) * _CHAR_WIDTH:
                parts.append(
                    f'<text x="{center}" y="{_number(baseline - bar_h - 3)}" text-anchor="middle" '
                    f'fill="currentColor" aria-hidden="true">{escape(shown)}</text>'
                )
            if i % every == 0:
                parts.append(
                    f'<text x="{center}" y="{_number(height - 5)}" text-anchor="middle" '
                    f'fill="currentColor" style="fill: var(--body-quiet-color, #666)" aria-hidden="true">'
                    f"{escape(label)}</text>"
                )
    parts.append(
        f'<line x1="{left}" y1="{_number(baseline)}" x2="{width - right}" y2="{_number(baseline)}" '
        f'stroke="currentColor" style="stroke: var(--border-color, #ccc)"/>'
    )
    parts.append("</svg>")
    # Every interpolated string above went through escape(); numbers are formatted by us.
    return mark_safe("".join(parts))  # noqa: S308
