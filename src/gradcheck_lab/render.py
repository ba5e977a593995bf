"""Terminal rendering of a :class:`~gradcheck_lab.report.Report` (rich tables)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from .engines import ENGINE_LABELS

if TYPE_CHECKING:  # render reads a Report; importing report at run time would close a circle
    from .report import PointCheck, Report

__all__ = ["render_text", "print_report"]


def _num(x: float | None, digits: int = 12) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _point_title(p: PointCheck) -> str:
    pt = dict(p.point)
    params = pt.pop("params", {})
    inputs = "  ".join(f"{k}={v}" for k, v in pt.items())
    ps = "  ".join(f"{k}={v}" for k, v in params.items())
    if len(ps) > 100:
        ps = ps[:97] + "..."
    return f"{p.source} point {p.index}: {inputs}   |   {ps}"


def _point_table(p: PointCheck, engines: list[str], dtype: str):
    from rich.table import Table

    t = Table(title=_point_title(p), title_justify="left", show_lines=False, pad_edge=False)
    t.add_column("param")
    t.add_column("exact (referee)", justify="right")
    for e in engines:
        t.add_column(ENGINE_LABELS[e], justify="right")
    t.add_column("fd error", justify="right")
    t.add_column(f"tol ({dtype})", justify="right")
    t.add_column("verdict")
    for c in p.checks:
        tol = c.tolerance.get("autograd")
        verdict = c.verdict
        if c.at_fault:
            verdict = "MISMATCH: " + ", ".join(ENGINE_LABELS[e] for e in c.at_fault)
        elif c.kink_interval:
            verdict = f"kink [{c.kink_interval[0]:.4g}, {c.kink_interval[1]:.4g}]"
        t.add_row(
            c.param,
            _num(c.exact),
            *[_num(c.values[e]) for e in engines],
            _num(c.fd_error, 2) if c.fd_error is not None else "none",
            _num(tol, 2),
            verdict,
        )
    return t


def _summary_table(report: Report):
    from rich.table import Table

    t = Table(
        title=f"{report.random_points} random points (seed {report.seed}): worst discrepancy per engine pair",
        title_justify="left",
        pad_edge=False,
    )
    for col in ("pair", "|a - b|", "relative", "tolerance there", "where"):
        t.add_column(col, justify="right" if col not in ("pair", "where") else "left")
    for s in report.summary:
        a, b = s.pair.split("~")
        where = f"{s.param} at {s.source} point {s.index}" if s.param else ""
        t.add_row(
            f"{ENGINE_LABELS[a]} vs {ENGINE_LABELS[b]}",
            _num(s.abs, 2),
            _num(s.rel, 2),
            _num(s.tolerance, 2),
            where,
        )
    return t


def _renderables(report: Report, quiet: bool = False):
    from rich.text import Text

    out = []
    if not quiet:
        out.append(Text(f"model {report.model}: {report.formula}   loss: {report.loss}", style="bold"))
        if report.derivatives:
            out.append(Text("partial derivatives (SymPy, simplified):"))
            for k, v in report.derivatives.items():
                out.append(Text(f"  dL/d{k} = {v}"))
        out.append(Text(f"dtype {report.dtype} on {report.device}; engines: " + ", ".join(ENGINE_LABELS[e] for e in report.engines)))
        for p in report.data_points:
            out.append(_point_table(p, report.engines, report.dtype))
        if report.random_points:
            out.append(_summary_table(report))
        for p in report.failures:
            out.append(_point_table(p, report.engines, report.dtype))
        if report.counts and (report.random_points or len(report.data_points) > 1):
            order = ("agree", "unstable", "kink", "not_judged", "mismatch")
            parts = [f"{report.counts.get(k, 0)} {k.replace('_', ' ')}" for k in order if report.counts.get(k)]
            out.append(Text("components by verdict: " + ", ".join(parts)))
        for note in report.notes:
            out.append(Text(f"note: {note}"))
    style = "bold green" if report.ok else "bold red"
    head = "OK" if report.ok else "MISMATCH"
    out.append(Text(f"verdict: {head}: {report.message}  ({report.seconds:.2f} s)", style=style))
    return out


def render_text(report: Report, *, quiet: bool = False, width: int = 160) -> str:
    """The report as plain text (no colour), e.g. for an assertion message."""
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, soft_wrap=False)
    for r in _renderables(report, quiet):
        console.print(r)
    return buf.getvalue().rstrip() + "\n"


def print_report(report: Report, *, quiet: bool = False) -> None:
    """Print to stdout with colour when it is a terminal."""
    import sys

    from rich.console import Console

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    for r in _renderables(report, quiet):
        console.print(r)
