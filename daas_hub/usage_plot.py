"""A small inline SVG bar chart for the usage page: no plotting library, nothing from outside.

Pure: values in, SVG text out (escaped). One chart per proposal, its CPU-hours per step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape


def _label(t: float, step: float) -> str:
    fmt = "%m-%d %H:%M" if step < 86400 else "%Y-%m-%d"
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


def bar_chart(title: str, edges: list[float], values: list[float], *, width: int = 640, height: int = 180,
              unit: str = "CPU-h") -> str:
    """An SVG bar chart of ``values`` at ``edges`` (bucket starts, epoch s)."""
    left, right, top, bottom = 56, 10, 24, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(values) if values and max(values) > 0 else 1.0
    n = max(1, len(values))
    bar_w = plot_w / n
    step = (edges[1] - edges[0]) if len(edges) > 1 else 3600
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="daas-usage-plot" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" data-proposal="{escape(title)}">',
        f'<title>{escape(title)}: {unit} per step</title>',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#555"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#555"/>',
        f'<text x="{left - 4}" y="{top + 10}" font-size="10" text-anchor="end">{peak:.3g}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="10" text-anchor="end">0</text>',
        f'<text x="4" y="{top + plot_h / 2}" font-size="10">{unit}</text>',
    ]
    for i, v in enumerate(values):
        h = plot_h * v / peak
        x = left + i * bar_w
        parts.append(f'<rect class="daas-bar" x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" width="{max(1.0, bar_w - 2):.1f}" '
                     f'height="{h:.1f}" fill="#3572b0"><title>{_label(edges[i], step)}: {v:.3f} {unit}</title></rect>')
    for i in (0, n // 2, n - 1) if edges else ():
        parts.append(f'<text x="{left + i * bar_w:.1f}" y="{height - 10}" font-size="10">{_label(edges[i], step)}</text>')
    parts.append("</svg>")
    return "".join(parts)
