"""``verify --html``: a :class:`~gradcheck_lab.report.Report` as a page.

Sections: the verdict and its message; the closed-form derivatives; one
table per data point (every engine's value, the exact referee, the
tolerance, the verdict); for the random points, the verdict counts per
class, the worst discrepancy per engine pair, histograms of each engine's
``|error| / tolerance`` and of each pair's ``|a - b| / (tol_a + tol_b)``,
and the error against the gradient's magnitude; then every failing point
with every value (each engine's value and tolerance, the pairwise
discrepancies, the finite-difference error estimate, a kink's interval).

The random-point figures are drawn from the report's streaming summaries,
``report.counts`` and ``report.histograms`` (small lists of counts, so a
page for a million points is as small as one for a thousand). A report
without them (an older ``Report``) gets those sections marked "not
available"; the rest of the page is the same.
"""

from __future__ import annotations

import math
from typing import Any

from .base import cell, esc, fragment, num, page
from .charts import PALETTE, count_map, histogram

__all__ = ["verify_page", "verify_fragment", "VERDICT_CLASSES"]

#: The verdict classes of ``report.counts``, in display order, with what each means.
VERDICT_CLASSES = {
    "agree": "every engine within its tolerance, or within what its own rounding explains",
    "mismatch": "an engine off the certified exact value beyond its own rounding: at fault",
    "unstable": "explained by an engine's own rounding, but it lost most of its digits (not a failure)",
    "not_judged": "undefined, beyond the dtype's range, or not certified (see notes)",
    "kink": "derivative undefined (relu/abs at 0): any subgradient accepted",
}
_VERDICT_COLOR = {"agree": "#2b8a3e", "mismatch": "#c92a2a", "unstable": "#9c6b00", "not_judged": "#667085", "kink": "#7048e8"}

_CSS = """
.point { margin: 0.6em 0 1.4em; }
.point h3 .where { color: var(--muted); font-weight: 400; font-size: 0.9em; }
.bars td.bar { width: 320px; }
.bars .fill { height: 12px; border-radius: 3px; min-width: 1px; }
.hists { display: flex; flex-wrap: wrap; gap: 10px 26px; }
.hists figure { max-width: 350px; }
td.bad, .bad { color: var(--bad); font-weight: 700; }
"""


#: Short engine names for the wide tables of failing points (explained above them).
_SHORT = {"symbolic": "sym", "autograd": "ag", "finite_differences": "fd", "candidate": "cand"}


def _engine_label(e: str) -> str:
    from ..engines import ENGINE_LABELS

    return ENGINE_LABELS.get(e, e)


def _pair_label(p: str) -> str:
    a, _, b = p.partition("~")
    return f"{_engine_label(a)} vs {_engine_label(b)}"


def _verdict(c) -> str:
    if c.at_fault:
        return '<span class="verdict bad">MISMATCH: ' + esc(", ".join(_engine_label(e) for e in c.at_fault)) + "</span>"
    if c.verdict == "kink" or c.kink_interval:
        lo, hi = c.kink_interval or (math.nan, math.nan)
        return f'<span class="verdict kink">kink [{esc(num(lo, 4))}, {esc(num(hi, 4))}]</span>'
    if c.verdict == "agree":
        return '<span class="verdict ok">agree</span>'
    return f'<span class="verdict">{esc(c.verdict)}</span>'


def _point_head(p) -> str:
    pt = dict(p.point)
    params = pt.pop("params", {})
    inputs = ", ".join(f"{k} = {v}" for k, v in pt.items())
    ps = ", ".join(f"{k} = {v}" for k, v in params.items())
    return (
        f'<h3>{esc(p.source)} point {p.index} <span class="where">{esc(inputs)}'
        + (f" &nbsp;|&nbsp; {esc(ps)}" if ps else "")
        + "</span></h3>"
    )


def _point_table(p, engines: list[str], dtype: str, full: bool = False) -> str:
    """One point: every parameter's row. ``full`` adds each engine's tolerance and the pairwise discrepancies."""
    head = ["param", "exact (referee)"] + [_engine_label(e) for e in engines]
    pairs = list(p.checks[0].discrepancy) if (full and p.checks) else []
    if full:
        short = {e: _SHORT.get(e, e) for e in engines}
        head += [f"tol {short[e]}" for e in engines]
        head += [f"|{short.get(a, a)} − {short.get(b, b)}|" for a, _, b in (q.partition("~") for q in pairs)]
    else:
        head += [f"tol ({dtype})"]
    head += ["fd error", "verdict"]
    rows = []
    for c in p.checks:
        cells = [f"<td><b>{esc(c.param)}</b></td>", cell(c.exact, 12)]
        for e in engines:
            cls = "num bad" if e in c.at_fault else "num"
            cells.append(cell(c.values.get(e), 12, cls=cls))
        if full:
            cells += [cell(c.tolerance.get(e), 3) for e in engines]
            cells += [cell(c.discrepancy.get(q), 3) for q in pairs]
        else:
            cells.append(cell(c.tolerance.get("autograd"), 2))
        cells.append(cell(c.fd_error, 2) if c.fd_error is not None else "<td>none</td>")
        cells.append(f"<td>{_verdict(c)}</td>")
        cls = ' class="bad"' if c.at_fault else ""
        rows.append(f'<tr data-param="{esc(c.param)}"{cls}>' + "".join(cells) + "</tr>")
    ths = "".join(f"<th>{esc(h)}</th>" for h in head)
    return (
        f'<div class="point" data-source="{esc(p.source)}" data-index="{p.index}">{_point_head(p)}'
        f'<div class="scroll"><table class="pt"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table></div></div>'
    )


def _na(what: str) -> str:
    return (
        f'<p class="na" data-missing="{esc(what)}">Not available: this report has no <code>{esc(what)}</code> '
        "(it comes from verify's streaming summaries).</p>"
    )


def _counts(counts: dict[str, int] | None) -> str:
    if not isinstance(counts, dict):
        return _na("counts")
    total = sum(int(v) for v in counts.values()) or 1
    keys = [k for k in VERDICT_CLASSES if k in counts] + [k for k in counts if k not in VERDICT_CLASSES]
    rows = []
    for k in keys:
        v = int(counts[k])
        width = 100.0 * v / total
        color = _VERDICT_COLOR.get(k, "#667085")
        rows.append(
            f'<tr data-class="{esc(k)}"><td><b>{esc(k.replace("_", " "))}</b></td><td class="num" data-count="{v}">{v:,}</td>'
            f'<td class="num">{100.0 * v / total:.4g}%</td><td class="bar">'
            + (f'<div class="fill" style="width:{width:.2f}%;background:{color}"></div>' if v else "")
            + "</td>"
            f'<td class="sub">{esc(VERDICT_CLASSES.get(k, ""))}</td></tr>'
        )
    return (
        '<table class="bars" id="counts"><thead><tr><th>verdict</th><th>components</th><th>share</th><th></th>'
        f'<th>meaning</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _finite_edges(edges: list[Any]) -> list[float]:
    """Bin edges with an open end (None or ±inf: an underflow/overflow bin) drawn one bin wide."""
    e = [float(x) if x is not None else math.nan for x in edges]
    if len(e) >= 3:
        if not math.isfinite(e[0]):
            e[0] = e[1] - (e[2] - e[1])
        if not math.isfinite(e[-1]):
            e[-1] = e[-2] + (e[-2] - e[-3])
    return e


def _above(edges: list[float], counts: list[int]) -> int:
    """Counts in bins entirely above log10 ratio 0 (beyond the tolerance)."""
    return sum(int(c) for lo, c in zip(edges, counts) if lo >= 0)


def _histograms(h: dict[str, Any] | None) -> str:
    if not isinstance(h, dict) or "ratio_edges" not in h:
        return "<h3>|error| / tolerance per engine</h3>" + _na("histograms")
    edges = _finite_edges(h["ratio_edges"])
    out = [
        "<h3>|error| / tolerance per engine</h3>",
        "<p>How close each engine runs to its tolerance: log10(|g − reference| / tolerance) over every component "
        "of every random point. Left of the red line (0) the engine is within its tolerance; the further left, the "
        "more room.</p>",
        '<div class="hists">',
    ]
    for k, (e, counts) in enumerate(h.get("engines", {}).items()):
        n = sum(int(c) for c in counts)
        out.append(
            f'<figure data-engine="{esc(e)}" data-total="{n}">'
            + histogram(edges, counts, xlabel="log10(|error| / tolerance)", color=PALETTE[k % len(PALETTE)], limit=0.0,
                        title=f"{_engine_label(e)}: |error| / tolerance")
            + f"<figcaption>{esc(_engine_label(e))}: {n:,} components, {_above(edges, counts):,} beyond tolerance</figcaption></figure>"
        )
    out.append("</div>")
    pairs = h.get("pairs", {})
    out.append("<h3>Pairwise discrepancies</h3>")
    if pairs:
        out.append(
            "<p>log10(|a − b| / (tol_a + tol_b)) for each engine pair: how far apart two engines are, measured in "
            "their joint tolerance.</p><div class=\"hists\">"
        )
        for k, (q, counts) in enumerate(pairs.items()):
            n = sum(int(c) for c in counts)
            out.append(
                f'<figure data-pair="{esc(q)}" data-total="{n}">'
                + histogram(edges, counts, xlabel="log10(|a - b| / (tol_a + tol_b))", color=PALETTE[(k + 3) % len(PALETTE)],
                            limit=0.0, title=_pair_label(q))
                + f"<figcaption>{esc(_pair_label(q))}: {n:,} components</figcaption></figure>"
            )
        out.append("</div>")
    else:
        out.append(_na("histograms.pairs"))
    out.append("<h3>Error against magnitude</h3>")
    mag = h.get("magnitude")
    if isinstance(mag, dict) and mag and "magnitude_edges" in h:
        medges = _finite_edges(h["magnitude_edges"])
        out.append(
            "<p>Where the error sits: each cell counts components with that gradient magnitude (log10 |reference|, "
            "up) and that error ratio (across); darker is more. Small gradients near the tolerance line point at "
            "cancellation; large ones at overflow or a wrong rule.</p><div class=\"hists\">"
        )
        for k, (e, grid) in enumerate(mag.items()):
            out.append(
                f'<figure data-magnitude="{esc(e)}">'
                + count_map(edges, medges, grid, xlabel="log10(|error| / tolerance)", ylabel="log10 |reference|",
                            color=PALETTE[k % len(PALETTE)], title=f"{_engine_label(e)}: error against magnitude", limit_x=0.0)
                + f"<figcaption>{esc(_engine_label(e))}</figcaption></figure>"
            )
        out.append("</div>")
    else:
        out.append(_na("histograms.magnitude"))
    return "".join(out)


def _summary(report) -> str:
    rows = []
    for s in report.summary:
        where = f"{s.param} at {s.source} point {s.index}" if s.param else ""
        ratio = (s.abs / s.tolerance) if (s.abs is not None and s.tolerance) else None
        cls = "num bad" if ratio is not None and ratio > 1 else "num"
        rows.append(
            f'<tr data-pair="{esc(s.pair)}"><td>{esc(_pair_label(s.pair))}</td>{cell(s.abs, 3)}{cell(s.rel, 3)}'
            f"{cell(s.tolerance, 3)}{cell(ratio, 3, cls=cls)}<td>{esc(where)}</td></tr>"
        )
    return (
        '<table id="summary"><thead><tr><th>pair</th><th>|a − b|</th><th>relative</th><th>tolerance there</th>'
        f'<th>|a − b| / tolerance</th><th>where</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def verify_page(report) -> str:
    """``report`` (from :func:`gradcheck_lab.verify`) as one self-contained HTML page.

    >>> from gradcheck_lab import verify
    >>> text = verify_page(verify("quadratic", points=[{"x": 2, "y": 4}], random=0))
    >>> 'data-param="w1"' in text, "<script" in text
    (True, False)
    """
    return page(f"verify {report.model}: {'OK' if report.ok else 'MISMATCH'}", _body(report), css=_CSS)


def verify_fragment(report, headline: str = "") -> str:
    """The same content as :func:`verify_page`, as a notebook fragment (``Report._repr_html_``).

    ``headline``: a banner above it (a caught gradcheck's message: the culprit, the component, the values).
    """
    top = f'<div class="banner bad" id="caught"><pre style="white-space: pre-wrap; margin: 0">{esc(headline)}</pre></div>' \
        if headline else ""
    return fragment(top + _body(report), css=_CSS)


def _body(report) -> str:
    """The page's content: verdict, derivatives, data points, random points, failures, notes."""
    engines = list(report.engines)
    facts = [
        ("model", report.model), ("loss", report.loss), ("dtype", report.dtype), ("device", report.device),
        ("engines", ", ".join(_engine_label(e) for e in engines)),
        ("data points", str(len(report.data_points))), ("random points", f"{report.random_points:,}"),
    ]
    if report.seed is not None:
        facts.append(("seed", str(report.seed)))
    facts.append(("time", f"{report.seconds:.2f} s"))
    ok = report.ok
    body = [
        f"<h1>verify: {esc(report.model)}</h1>",
        f'<p class="sub">{esc(report.formula)}</p>',
        '<div class="facts">' + "".join(f"<div><b>{esc(k)}</b>{esc(v)}</div>" for k, v in facts) + "</div>",
        f'<div class="banner {"ok" if ok else "bad"}" id="verdict" data-verdict="{esc(report.verdict)}">'
        f'{"OK" if ok else "MISMATCH"}: {esc(report.message)}</div>',
    ]
    if report.derivatives:
        body.append("<h2>Partial derivatives (SymPy, simplified)</h2><table><tbody>")
        body += [f"<tr><td>∂L/∂{esc(k)}</td><td><code>{esc(v)}</code></td></tr>" for k, v in report.derivatives.items()]
        body.append("</tbody></table>")
    if report.data_points:
        body.append("<h2>Data points</h2>")
        body.append(
            '<p class="sub">Each engine\'s gradient at the model\'s data points, the exact referee (mpmath) and the '
            f"tolerance (float rounding at that point, {esc(report.dtype)}; Note [Tolerance model]).</p>"
        )
        body += [_point_table(p, engines, report.dtype, full=p.verdict != "agree") for p in report.data_points]
    if report.random_points:
        body.append(f"<h2>{report.random_points:,} random points</h2>")
        body.append("<h3>Verdict per component</h3>")
        body.append(_counts(getattr(report, "counts", None)))
        body.append("<h3>Worst discrepancy per engine pair</h3>")
        body.append(_summary(report))
        body.append(_histograms(getattr(report, "histograms", None)))
    body.append("<h2>Failing points</h2>")
    if report.failures:
        body.append(
            f'<p class="sub">The first {len(report.failures)} failing random points, with every value: each engine\'s '
            "value and tolerance, the pairwise discrepancies and the finite-difference error estimate "
            "(sym: symbolic, ag: autograd, fd: finite differences).</p>"
        )
        body += [_point_table(p, engines, report.dtype, full=True) for p in report.failures]
    else:
        body.append('<p id="no-failures">No random point failed.</p>')
    if report.notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in report.notes) + "</ul>")
    return "\n".join(body)
