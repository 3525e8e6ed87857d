"""The console's charts: inline SVG drawn on the server (no script, no style attribute: the CSP allows neither)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

WIDTH = 720
HEIGHT = 180
LEFT = 40
BOTTOM = 20


def per_minute(points: Sequence[tuple[datetime, int]], noun: str = "sent") -> Markup:
    """A bar per minute (``points``: the minute and its count), labelled every 10 minutes, in UTC."""
    top = max([count for _, count in points] + [1])
    inner = HEIGHT - BOTTOM - 10
    step = (WIDTH - LEFT) / max(len(points), 1)
    parts = [f'<svg class="chart" data-test="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
             f'role="img" aria-label="deliveries {escape(noun)} per minute, last hour">',
             f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - BOTTOM}"/>',
             f'<text class="label" x="{LEFT - 4}" y="14" text-anchor="end">{top}</text>',
             f'<text class="label" x="{LEFT - 4}" y="{HEIGHT - BOTTOM}" text-anchor="end">0</text>']
    for index, (minute, count) in enumerate(points):
        height = inner * count / top
        x = LEFT + index * step
        parts.append(f'<rect class="bar" data-test="chart-bar" data-count="{count}" x="{x + 1:.1f}" '
                     f'y="{HEIGHT - BOTTOM - height:.1f}" width="{max(step - 2, 1):.1f}" height="{height:.1f}">'
                     f'<title>{minute:%H:%M} UTC: {count} {escape(noun)}</title></rect>')
        if minute.minute % 10 == 0:
            parts.append(f'<text class="label" x="{x:.1f}" y="{HEIGHT - 4}">{minute:%H:%M}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def funnel(steps: Sequence[dict[str, Any]]) -> Markup:
    """A horizontal bar per step: how many enrollments entered it (journey_stats' ``steps``)."""
    top = max([int(step.get("entered") or 0) for step in steps] + [1])
    row, label = 26, 180
    width = WIDTH - label - 60
    parts = [f'<svg class="chart funnel" data-test="funnel" viewBox="0 0 {WIDTH} {row * len(steps) + 4}" '
             f'width="{WIDTH}" height="{row * len(steps) + 4}" role="img" aria-label="enrollments entering each step">']
    for index, step in enumerate(steps):
        entered = int(step.get("entered") or 0)
        y = index * row + 2
        bar = width * entered / top
        name = escape(str(step["id"]))
        parts.append(f'<text class="label" x="{label - 6}" y="{y + 16}" text-anchor="end">{name}</text>'
                     f'<rect class="bar" data-test="funnel-bar" data-step="{name}" data-count="{entered}" x="{label}" '
                     f'y="{y}" width="{max(bar, 1):.1f}" height="{row - 6}"><title>{name}: {entered} entered</title></rect>'
                     f'<text class="label" x="{label + bar + 6:.1f}" y="{y + 16}">{entered}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


__all__ = ["funnel", "per_minute"]
