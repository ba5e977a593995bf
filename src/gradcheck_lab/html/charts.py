"""Small inline-SVG charts: line charts, histograms and a 2-D count map.

Hand-written rather than matplotlib's SVG backend: the three shapes need a
few dozen lines each, their elements carry the ``data-*`` attributes and
``<title>`` tooltips the pages and tests read, and they are smaller
(measured: a 300-point log-scale loss curve is 5.1 KB here, 17 KB from
matplotlib, which draws every glyph as a path; a 48-bin histogram 7.4 KB
against 19 KB).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .base import esc, num

__all__ = ["line_chart", "histogram", "count_map", "PALETTE", "nice_ticks"]

#: Colours of successive series (colour-blind-safe, Okabe-Ito order).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out = []
    k = 0
    while start + k * step <= hi + 1e-9 * step and k < 50:
        out.append(float(f"{start + k * step:.12g}"))  # tidy digits at any magnitude
        k += 1
    return out


class _Frame:
    """Plot area and the data-to-pixel maps of one chart."""

    def __init__(self, width, height, x0, x1, y0, y1, logy=False, left=58, right=12, top=12, bottom=36):
        self.w, self.h = width, height
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self.logy = logy
        self.integer_x = False
        if logy:
            y0, y1 = math.log10(y0), math.log10(y1)
        if x1 == x0:
            x0, x1 = x0 - 1, x1 + 1
        if y1 == y0:
            pad = abs(y0) * 0.1 or 1.0
            y0, y1 = y0 - pad, y1 + pad
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0, y1

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.w - self.left - self.right)

    def py(self, y: float) -> float:
        if self.logy:
            y = math.log10(y)
        return self.h - self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.h - self.top - self.bottom)

    def axes(self, xlabel: str, ylabel: str) -> list[str]:
        out = ['<g class="axis">']
        bx, by = self.left, self.h - self.bottom
        out.append(f'<line x1="{bx}" y1="{by}" x2="{self.w - self.right}" y2="{by}"/>')
        out.append(f'<line x1="{bx}" y1="{self.top}" x2="{bx}" y2="{by}"/>')
        xt = nice_ticks(self.x0, self.x1, 6)
        if self.integer_x:  # step numbers: no fractional ticks
            xt = [t for t in xt if float(t).is_integer()] or [self.x0, self.x1]
        for t in xt:
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" y1="{by}" x2="{x:.1f}" y2="{by + 4}"/>')
            out.append(f'<text class="tick" x="{x:.1f}" y="{by + 15}" text-anchor="middle">{esc(num(t, 4))}</text>')
        if self.logy:
            lo, hi = math.floor(self.y0), math.ceil(self.y1)
            stride = max(1, (hi - lo) // 6)
            yt = [10.0**k for k in range(lo, hi + 1, stride) if self.y0 - 1e-9 <= k <= self.y1 + 1e-9]
        else:
            yt = nice_ticks(self.y0, self.y1, 5)
        for t in yt:
            y = self.py(t)
            out.append(f'<line class="grid" x1="{bx + 1}" y1="{y:.1f}" x2="{self.w - self.right}" y2="{y:.1f}"/>')
            label = f"1e{round(math.log10(t))}" if self.logy else num(t, 4)
            out.append(f'<text class="tick" x="{bx - 5}" y="{y + 3:.1f}" text-anchor="end">{esc(label)}</text>')
        out.append(
            f'<text class="lab" x="{(self.left + self.w - self.right) / 2:.0f}" y="{self.h - 4}" text-anchor="middle">{esc(xlabel)}</text>'
        )
        out.append(
            f'<text class="lab" transform="translate(12,{(self.top + by) / 2:.0f}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>'
        )
        out.append("</g>")
        return out


def _svg_open(width: int, height: int, cls: str, label: str, extra: str = "") -> str:
    return (
        f'<svg class="{esc(cls)}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg"{extra}>'
    )


def line_chart(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    width: int = 540,
    height: int = 280,
    xlabel: str = "",
    ylabel: str = "",
    logy: bool = False,
    marks: Sequence[tuple[float, str, str]] = (),
    chart_id: str = "",
    cursor: bool = False,
) -> str:
    """An SVG line chart of ``(label, xs, ys)`` series, with a legend.

    A label ending in ``" (dots)"`` is drawn as dots only (the suffix is not shown).

    ``marks`` are vertical lines ``(x, label, css colour)``; ``cursor`` adds
    a hidden vertical line (class ``cursor``) for a script to move. Values
    that are not finite (or not positive on a log axis) are left out.
    """
    def ok(y):
        return y is not None and math.isfinite(y) and (y > 0 or not logy)

    xs_all = [x for _, xs, ys in series for x, y in zip(xs, ys) if ok(y)]
    ys_all = [y for _, xs, ys in series for y in ys if ok(y)]
    if not xs_all:
        return '<p class="na">no finite values to plot</p>'
    fr = _Frame(width, height, min(xs_all), max(xs_all), min(ys_all), max(ys_all), logy=logy)
    fr.integer_x = all(float(x).is_integer() for x in xs_all)
    extra = (
        f' id="{esc(chart_id)}" data-x0="{fr.x0}" data-x1="{fr.x1}" data-left="{fr.left}" '
        f'data-plotw="{width - fr.left - fr.right}"'
        if chart_id
        else ""
    )
    out = [_svg_open(width, height, "chart", ylabel + " against " + xlabel, extra)]
    out += fr.axes(xlabel, ylabel)
    legend = []
    for k, (label, xs, ys) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        pts = [(fr.px(x), fr.py(y)) for x, y in zip(xs, ys) if ok(y)]
        if not pts:
            continue
        dots = label.endswith(" (dots)")
        label = label.removesuffix(" (dots)")
        if dots:
            out.append(f'<g fill="{color}"><title>{esc(label)}</title>')
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2"/>' for x, y in pts]
            out.append("</g>")
        else:
            d = " ".join(f"{'M' if j == 0 else 'L'}{x:.1f},{y:.1f}" for j, (x, y) in enumerate(pts))
            out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1.3"><title>{esc(label)}</title></path>')
            if len(pts) <= 60:
                out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{color}"/>' for x, y in pts]
        shape = "border-radius:50%;width:7px;height:7px" if dots else ""
        legend.append(f'<span><i style="background:{color};{shape}"></i>{esc(label)}</span>')
    for x, label, color in marks:
        px = fr.px(x)
        out.append(
            f'<line class="mark" x1="{px:.1f}" y1="{fr.top}" x2="{px:.1f}" y2="{height - fr.bottom}" '
            f'stroke="{color}" stroke-width="1.5" stroke-dasharray="4 3"><title>{esc(label)}</title></line>'
        )
        right = px > (fr.left + width - fr.right) / 2
        out.append(
            f'<text class="lab" x="{px - 4 if right else px + 4:.1f}" y="{fr.top + 11}" text-anchor="{"end" if right else "start"}" '
            f'style="fill:{color}">{esc(label)}</text>'
        )
    if cursor:
        out.append(
            f'<line class="cursor" x1="{fr.left}" y1="{fr.top}" x2="{fr.left}" y2="{height - fr.bottom}" '
            'stroke="#344054" stroke-width="1" visibility="hidden"/>'
        )
    out.append("</svg>")
    leg = f'<div class="legend">{"".join(legend)}</div>' if len(legend) > 1 else ""
    return "".join(out) + leg


def histogram(
    edges: Sequence[float],
    counts: Sequence[int],
    *,
    width: int = 340,
    height: int = 200,
    xlabel: str = "",
    color: str = PALETTE[0],
    limit: float | None = None,
    title: str = "",
) -> str:
    """Bars of ``counts`` over bins ``edges`` (len(edges) == len(counts) + 1); log-scaled counts.

    ``limit`` draws a vertical line (e.g. log10 ratio 0: at the tolerance).
    Each bar's ``<title>`` gives its bin and count.
    """
    if len(edges) != len(counts) + 1 or not counts:
        return '<p class="na">histogram not available (malformed bins)</p>'
    top = max(counts)
    fr = _Frame(width, height, float(edges[0]), float(edges[-1]), 0.0, math.log10(top + 1) if top else 1.0, left=44)
    out = [_svg_open(width, height, "hist", title or ("histogram of " + xlabel))]
    out += fr.axes(xlabel, "log10(1 + count)")
    for lo, hi, c in zip(edges, edges[1:], counts):
        if c <= 0:
            continue
        y = fr.py(math.log10(c + 1))
        x0, x1 = fr.px(lo), fr.px(hi)
        out.append(
            f'<rect x="{x0 + 0.5:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" height="{height - fr.bottom - y:.1f}" '
            f'fill="{color}" data-count="{int(c)}"><title>[{num(lo, 3)}, {num(hi, 3)}): {int(c)}</title></rect>'
        )
    if limit is not None and fr.x0 <= limit <= fr.x1:
        px = fr.px(limit)
        out.append(
            f'<line x1="{px:.1f}" y1="{fr.top}" x2="{px:.1f}" y2="{height - fr.bottom}" stroke="#c92a2a" '
            'stroke-width="1.5" stroke-dasharray="4 3"><title>tolerance</title></line>'
        )
    out.append("</svg>")
    return "".join(out)


def count_map(
    x_edges: Sequence[float],
    y_edges: Sequence[float],
    counts: Sequence[Sequence[int]],
    *,
    width: int = 340,
    height: int = 240,
    xlabel: str = "",
    ylabel: str = "",
    color: str = "#0072B2",
    title: str = "",
    limit_x: float | None = None,
) -> str:
    """A 2-D histogram: ``counts[i][j]`` for y bin ``i`` and x bin ``j``, shaded by log count."""
    if len(counts) != len(y_edges) - 1 or any(len(r) != len(x_edges) - 1 for r in counts) or not counts:
        return '<p class="na">map not available (malformed bins)</p>'
    top = max((c for r in counts for c in r), default=0)
    fr = _Frame(width, height, float(x_edges[0]), float(x_edges[-1]), float(y_edges[0]), float(y_edges[-1]), left=50)
    out = [_svg_open(width, height, "map", title or f"{ylabel} against {xlabel}")]
    out += fr.axes(xlabel, ylabel)
    # Cells are the bulk of a verify page (up to bins x bins each): one short <rect> each.
    out.append(f'<g fill="{color}">')
    for i, row in enumerate(counts):
        for j, c in enumerate(row):
            if c <= 0:
                continue
            x0, x1 = fr.px(x_edges[j]), fr.px(x_edges[j + 1])
            y0, y1 = fr.py(y_edges[i + 1]), fr.py(y_edges[i])
            a = 0.15 + 0.85 * math.log1p(c) / math.log1p(top)
            out.append(
                f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0, 1):.1f}" height="{max(y1 - y0, 1):.1f}" '
                f'fill-opacity="{a:.2f}" data-count="{int(c)}"><title>[{num(y_edges[i], 3)}, {num(y_edges[i + 1], 3)}) '
                f"× [{num(x_edges[j], 3)}, {num(x_edges[j + 1], 3)}): {int(c)}</title></rect>"
            )
    out.append("</g>")
    if limit_x is not None and fr.x0 <= limit_x <= fr.x1:
        px = fr.px(limit_x)
        out.append(
            f'<line x1="{px:.1f}" y1="{fr.top}" x2="{px:.1f}" y2="{height - fr.bottom}" stroke="#c92a2a" '
            'stroke-width="1.5" stroke-dasharray="4 3"><title>tolerance</title></line>'
        )
    out.append("</svg>")
    return "".join(out)
