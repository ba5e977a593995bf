"""The report: a comparison as data (JSON-ready), with the verdict and who is at fault.

Built from one or more :class:`~gradcheck_lab.compare.Comparison` objects by
:func:`build_report`; rendered for terminals by :mod:`gradcheck_lab.render`.
The JSON schema is documented in docs/json.md (``schema`` field: version).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .engines import ENGINE_LABELS

__all__ = ["Report", "PointCheck", "ParamCheck", "PairWorst", "build_report", "SCHEMA", "pair_name"]

SCHEMA = "gradcheck_lab.report/1"



def pair_name(a: str, b: str) -> str:
    return f"{a}~{b}"


def _f(x) -> float | None:
    """A float for JSON (None for NaN/inf)."""
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class ParamCheck:
    """One parameter component at one point."""

    param: str
    exact: float | None
    values: dict[str, float | None]
    tolerance: dict[str, float | None]
    fd_error: float | None
    discrepancy: dict[str, float | None]
    verdict: str  # "agree", "mismatch" or "kink"
    at_fault: list[str]
    kink_interval: list[float] | None = None


@dataclass
class PointCheck:
    """Every parameter at one point, with the point in the user's form."""

    index: int
    source: str  # "data" or "random"
    point: dict[str, Any]
    checks: list[ParamCheck]
    verdict: str


@dataclass
class PairWorst:
    """The worst discrepancy of one engine pair over all points."""

    pair: str
    abs: float | None
    rel: float | None
    tolerance: float | None
    param: str | None
    source: str | None
    index: int | None


@dataclass
class Report:
    """Everything ``verify`` found: per-point tables, a summary, the verdict.

    ``ok`` is true when no engine (or candidate) is at fault anywhere.
    ``at_fault`` names the engines that are; ``message`` says by how much.
    """

    model: str
    formula: str
    loss: str
    params: list[str]
    derivatives: dict[str, str]
    dtype: str
    device: str
    seed: int | None
    engines: list[str]
    data_points: list[PointCheck]
    random_points: int
    summary: list[PairWorst]
    mismatches: dict[str, int]
    kinks: int
    failures: list[PointCheck]
    verdict: str
    at_fault: list[str]
    message: str
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    schema: str = SCHEMA

    @property
    def ok(self) -> bool:
        return self.verdict == "agree"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def render(self) -> str:
        """The per-parameter tables and verdict as plain text."""
        from .render import render_text

        return render_text(self)

    def __str__(self) -> str:
        return self.render()


def _param_check(cmp, n: int, i: int) -> ParamCheck:
    res = cmp.results
    label = cmp.model.param_labels[i]
    kink = bool(cmp.kink[n, i])
    faults = [e for e in res if cmp.fault[e][n, i]]
    disc = {}
    names = list(res)
    with np.errstate(invalid="ignore"):
        for a_i, a in enumerate(names):
            for b in names[a_i + 1 :]:
                disc[pair_name(a, b)] = _f(abs(res[a].values[n, i] - res[b].values[n, i]))
    fd = res["finite_differences"]
    return ParamCheck(
        param=label,
        exact=_f(cmp.exact[n, i]) if cmp.refereed[n] else None,
        values={e: _f(r.values[n, i]) for e, r in res.items()},
        tolerance={e: _f(cmp.tol[e][n, i]) for e in res},
        fd_error=_f(fd.error[n, i]) if fd.error is not None else None,
        discrepancy=disc,
        verdict="mismatch" if faults else ("kink" if kink else "agree"),
        at_fault=faults,
        kink_interval=[float(fd.lower[n, i]), float(fd.upper[n, i])] if kink else None,
    )


def _point_check(cmp, n: int, source: str, index: int) -> PointCheck:
    checks = [_param_check(cmp, n, i) for i in range(cmp.batch.theta.shape[1])]
    verdict = "mismatch" if any(c.at_fault for c in checks) else "agree"
    return PointCheck(index=index, source=source, point=cmp.model.describe_point(cmp.batch, n), checks=checks, verdict=verdict)


def _fmt(x: float) -> str:
    """2 significant digits, exponent without padding: 0.5, 3.1e-4, 1.2e-15."""
    if x == 0:
        return "0"
    text = f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"
    return text.replace("e-0", "e-").replace("e+0", "e+")


def _fault_message(parts: list[tuple[str, Any]], engines: list[str], model) -> str:
    """'autograd differs from the exact value by ...; symbolic and finite differences agree with it to ...'."""
    lines = []
    for engine in engines:
        best = None  # (relative error, source, cmp, n, i)
        for source, cmp in parts:
            f = cmp.fault[engine]
            if not f.any():
                continue
            vals = cmp.results[engine].values
            ref = np.where(np.isfinite(cmp.exact), cmp.exact, cmp.results["symbolic"].values)
            with np.errstate(all="ignore"):
                rel = np.abs(vals - ref) / np.maximum(np.abs(ref), np.finfo(float).tiny)
            rel = np.where(f, np.nan_to_num(rel, nan=np.inf), -1.0)
            k = int(np.argmax(rel))
            n, i = divmod(k, rel.shape[1])
            if best is None or rel[n, i] > best[0]:
                best = (float(rel[n, i]), source, cmp, n, i)
        if best is None:
            continue
        rel, source, cmp, n, i = best
        label = model.param_labels[i]
        where = f"at {label}, {source} point {n}"
        if cmp.kink[n, i]:
            lo, hi = cmp.results["finite_differences"].lower[n, i], cmp.results["finite_differences"].upper[n, i]
            lines.append(
                f"{ENGINE_LABELS[engine]} gives {cmp.results[engine].values[n, i]:.6g} at a kink {where}; "
                f"any value in [{lo:.6g}, {hi:.6g}] would do"
            )
            continue
        exact = cmp.exact[n, i]
        others = [e for e in cmp.results if e != engine and not cmp.fault[e][n, i] and e != "candidate"]
        ref = exact if math.isfinite(exact) else cmp.results["symbolic"].values[n, i]
        agree = ""
        if others:
            worst = max(abs(cmp.results[e].values[n, i] - ref) / max(abs(ref), np.finfo(float).tiny) for e in others)
            names = [ENGINE_LABELS[e] for e in others]
            who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            agree = f"; {who} agree{'s' if len(others) == 1 else ''} with it to {_fmt(worst)}"
        value = cmp.results[engine].values[n, i]
        if not math.isfinite(value):
            lines.append(f"{ENGINE_LABELS[engine]} gives {value} {where} where the exact value is {ref:.10g}{agree}")
            continue
        kind = "relative" if ref != 0 else "absolute"
        size = rel if ref != 0 else abs(value)
        base = "the exact value" if math.isfinite(exact) else "the majority"
        lines.append(
            f"{ENGINE_LABELS[engine]} differs from {base} by {_fmt(size)} ({kind}) {where} "
            f"({value:.10g} vs {ref:.10g}){agree}"
        )
    return "\n".join(lines)


def _pair_worst(parts: list[tuple[str, Any]], a: str, b: str, model) -> PairWorst:
    best = None
    for source, cmp in parts:
        with np.errstate(all="ignore"):
            d = np.abs(cmp.results[a].values - cmp.results[b].values)
            tol = cmp.tol[a] + cmp.tol[b]
            ratio = np.where(cmp.kink, 0.0, d / np.maximum(tol, np.finfo(float).tiny))
        ratio = np.nan_to_num(ratio, nan=np.inf)
        if ratio.size == 0:
            continue
        k = int(np.argmax(ratio))
        n, i = divmod(k, ratio.shape[1])
        if best is None or ratio[n, i] > best[0]:
            ref = abs(cmp.results["symbolic"].values[n, i])
            rel = d[n, i] / ref if ref > 0 else (0.0 if d[n, i] == 0 else math.inf)
            best = (ratio[n, i], PairWorst(pair_name(a, b), _f(d[n, i]), _f(rel), _f(tol[n, i]), model.param_labels[i], source, int(n)))
    return best[1] if best else PairWorst(pair_name(a, b), None, None, None, None, None, None)


def build_report(
    model,
    parts: list[tuple[str, Any]],
    *,
    dtype: str,
    device: str,
    seed: int | None,
    derivatives: dict[str, str],
    max_failures: int = 5,
    seconds: float = 0.0,
) -> Report:
    """A :class:`Report` from comparisons tagged ``"data"`` or ``"random"``."""
    engines = list(parts[0][1].results) if parts else []
    data_points, failures = [], []
    mismatches = {e: 0 for e in engines}
    kinks = 0
    random_n = 0
    notes: list[str] = []
    for source, cmp in parts:
        notes.extend(cmp.notes)
        kinks += int(cmp.kink.sum())
        for e in engines:
            mismatches[e] += int(cmp.fault[e].any(axis=1).sum())
        if source == "data":
            data_points.extend(_point_check(cmp, n, source, n) for n in range(len(cmp.batch)))
        else:
            random_n += len(cmp.batch)
            bad = np.flatnonzero(cmp.any_fault().any(axis=1))
            for n in bad[: max(max_failures - len(failures), 0)]:
                failures.append(_point_check(cmp, int(n), source, int(n)))
    at_fault = [e for e in engines if mismatches[e]]
    summary = [_pair_worst(parts, a, b, model) for k, a in enumerate(engines) for b in engines[k + 1 :]]
    total = sum(len(c.batch) for _, c in parts)
    if at_fault:
        message = _fault_message(parts, at_fault, model)
    else:
        message = (
            f"all {len(engines)} engines agree on {total} point{'s' if total != 1 else ''} x "
            f"{model.n_params} parameter{'s' if model.n_params != 1 else ''}"
            + (", the exact referee confirming the data points" if data_points else "")
            + (f" ({kinks} kink{'s' if kinks != 1 else ''}: derivative undefined, subgradients accepted)" if kinks else "")
            + ("; some components were not judged (see notes)" if any("not judged" in n for n in notes) else "")
        )
    return Report(
        model=model.name,
        formula=model.formula,
        loss=model.loss_name,
        params=model.param_labels,
        derivatives=derivatives,
        dtype=dtype,
        device=device,
        seed=seed,
        engines=engines,
        data_points=data_points,
        random_points=random_n,
        summary=summary,
        mismatches=mismatches,
        kinks=kinks,
        failures=failures,
        verdict="mismatch" if at_fault else "agree",
        at_fault=at_fault,
        message=message,
        notes=notes,
        seconds=round(seconds, 4),
    )
