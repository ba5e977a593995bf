"""Comparison: run the engines on a batch, apply the tolerance model, ask the referee.

Note [Verdict]
~~~~~~~~~~~~~~
For every point and parameter component:

1. Each engine's value gets its tolerance (Note [Tolerance model]).
2. Two engines agree when ``|a - b| <= tol_a + tol_b``.
3. Where any pair disagrees, and at every explicitly given point, the
   referee computes the exact value; an engine is *at fault* when
   ``|g - exact| > tol``. The referee is only asked for the first
   ``REFEREE_CAP`` disagreeing points; beyond that an engine is at fault
   where it disagrees with every other engine (majority).
4. Where finite differences detect a kink (Note [Kinks]) the derivative
   does not exist: every engine passes whose value lies within the
   one-sided derivatives (the subgradient interval) widened by its tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .engines import ENGINE_NAMES, Gradients, engine
from .engines import referee as _referee
from .errors import UsageError
from .model import Batch, Model
from .tolerance import EPS, engine_tolerance, fd_tolerance, rounding_scale

__all__ = ["Comparison", "compare", "REFEREE_CAP"]

#: Most points per call the referee evaluates (it costs ~0.1-5 ms a point).
REFEREE_CAP = 500


@dataclass
class Comparison:
    """Arrays over ``(N, P)``: every engine's values, tolerances and faults."""

    model: Model
    batch: Batch
    results: dict[str, Gradients]
    tol: dict[str, np.ndarray]
    scale: np.ndarray
    exact: np.ndarray
    refereed: np.ndarray  # (N,) bool
    kink: np.ndarray  # (N, P) bool
    fault: dict[str, np.ndarray]  # engine -> (N, P) bool
    disagree: np.ndarray  # (N, P) bool: some pair disagrees
    notes: list[str] = field(default_factory=list)

    @property
    def engines(self) -> list[str]:
        return list(self.results)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(combinations(self.results, 2))

    def values(self, name: str) -> np.ndarray:
        return self.results[name].values

    def any_fault(self) -> np.ndarray:
        out = np.zeros(self.batch.theta.shape, dtype=bool)
        for f in self.fault.values():
            out |= f
        return out


def _within(values, lo, hi, tol):
    return (values >= lo - tol) & (values <= hi + tol)


def compare(
    model: Model,
    batch: Batch,
    *,
    dtype: str = "float64",
    device: str = "cpu",
    engines: Mapping[str, Callable] | None = None,
    candidate: Gradients | None = None,
    referee_rows: np.ndarray | None = None,
) -> Comparison:
    """Run every engine on ``batch`` and decide, per component, who is right.

    ``engines`` replaces engines by name (a function with the signature of
    :func:`gradcheck_lab.engines.symbolic.gradients`); used to test the
    checker itself. ``candidate`` is the user's own gradient, judged like an
    engine. ``referee_rows`` marks points the referee must always evaluate.
    """
    if dtype not in EPS:
        raise UsageError(f"Expected dtype in {tuple(EPS)} but got dtype={dtype!r}.")
    table = {name: engine(name) for name in ENGINE_NAMES}
    for name, fn in (engines or {}).items():
        if name not in table:
            raise UsageError(f"Expected an engine name in {ENGINE_NAMES} but got {name!r}.")
        table[name] = fn

    n, p = batch.theta.shape
    results: dict[str, Gradients] = {}
    results["symbolic"] = table["symbolic"](model, batch, dtype="float64", device=device)
    results["autograd"] = table["autograd"](model, batch, dtype=dtype, device=device)
    results["finite_differences"] = table["finite_differences"](model, batch, dtype="float64", device=device)
    if candidate is not None:
        results["candidate"] = candidate
    for name, res in results.items():
        if res.values.shape != (n, p):
            raise UsageError(
                f"Expected engine {name} to return gradients of shape {(n, p)} but got {res.values.shape}."
            )

    # Note [Tolerance model]: the precision probe reads the symbolic closed form.
    scale = rounding_scale(model, batch, results["symbolic"].values)

    tol: dict[str, np.ndarray] = {}
    for name, res in results.items():
        if res.error is not None:
            tol[name] = fd_tolerance(res.error, scale)
        else:
            tol[name] = engine_tolerance(res.dtype, scale)

    fd = results["finite_differences"]
    kink = fd.kink if fd.kink is not None else np.zeros((n, p), dtype=bool)

    # Engines in float32 differentiate at the float32-rounded point: where that
    # lies across a kink from the exact point, their value is not judged.
    from .engines.finite_diff import kinks_moved_by_rounding

    notes: list[str] = []
    for name, res in results.items():
        if res.dtype != "float64":
            moved = kinks_moved_by_rounding(model, batch, res.dtype)
            if moved.any():
                tol[name] = np.where(moved[:, None], np.inf, tol[name])
                notes.append(
                    f"{name} not judged at {int(moved.sum())} point(s): rounding the inputs to {res.dtype} "
                    "moves them onto or across a relu/abs kink."
                )

    disagree = np.zeros((n, p), dtype=bool)
    for a, b in combinations(results, 2):
        with np.errstate(invalid="ignore"):
            ok = np.abs(results[a].values - results[b].values) <= tol[a] + tol[b]
        ok |= np.isinf(tol[a]) | np.isinf(tol[b])
        disagree |= ~ok & ~kink

    # Kinks: judge each engine against the subgradient interval.
    fault = {name: np.zeros((n, p), dtype=bool) for name in results}
    if kink.any():
        for name, res in results.items():
            inside = _within(res.values, fd.lower, fd.upper, tol[name] if name != "finite_differences" else 0.0)
            fault[name] |= kink & ~inside

    # The referee: explicit rows plus disagreeing rows, up to the cap.
    want = disagree.any(axis=1)
    if referee_rows is not None:
        want = want | referee_rows
    rows = np.flatnonzero(want)
    if len(rows) > REFEREE_CAP:
        forced = np.flatnonzero(referee_rows) if referee_rows is not None else np.array([], dtype=int)
        rest = np.setdiff1d(rows, forced)[: max(REFEREE_CAP - len(forced), 0)]
        rows = np.union1d(forced, rest)
        notes.append(
            f"{int(want.sum())} points needed the referee; it judged {len(rows)} and the rest were decided by majority."
        )
    exact = np.full((n, p), np.nan)
    refereed = np.zeros(n, dtype=bool)
    if len(rows):
        exact[rows] = _referee.gradients(model, batch.take(rows))
        refereed[rows] = True

    # Not judged: an exact value that is infinite or beyond float64's range,
    # or a point where the loss is undefined for every engine and the referee.
    beyond = np.isinf(exact)
    undefined = np.isnan(exact) & refereed[:, None]
    for res in results.values():
        undefined &= ~np.isfinite(res.values)
    if beyond.any():
        notes.append(
            f"{int(beyond.sum())} component(s) not judged: the exact gradient is infinite or beyond float64's range."
        )
    if undefined.any():
        notes.append(f"{int(undefined.sum())} component(s) not judged: the loss is undefined (not real) there.")
    disagree &= ~undefined
    for name, res in results.items():
        with np.errstate(invalid="ignore"):
            off = ~(np.abs(res.values - exact) <= tol[name])
        # An infinite tolerance is an engine's "no estimate here" (finite
        # differences across a kink or pole, float32 across a kink).
        off &= ~np.isinf(tol[name])
        have = np.isfinite(exact) & ~kink
        fault[name] |= have & off
        # Undecided by the referee (beyond the cap or undefined there): majority.
        undecided = disagree & np.isnan(exact) & ~undefined
        if undecided.any():
            others = [o for o in results if o != name]
            lonely = np.ones((n, p), dtype=bool)
            for o in others:
                with np.errstate(invalid="ignore"):
                    lonely &= ~(np.abs(res.values - results[o].values) <= tol[name] + tol[o])
            fault[name] |= undecided & lonely

    return Comparison(
        model=model,
        batch=batch,
        results=results,
        tol=tol,
        scale=scale,
        exact=exact,
        refereed=refereed,
        kink=kink,
        fault=fault,
        disagree=disagree,
        notes=notes,
    )
