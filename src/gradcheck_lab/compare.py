"""Comparison: run the engines on a batch, screen, then prove every verdict.

Note [Verdict]
~~~~~~~~~~~~~~
For every point and parameter component, in two stages.

**Screening** (every point, vectorised). Each engine's value gets the cheap
tolerance of Note [Tolerance model] (tolerance.py); two engines agree when
``|a - b| <= tol_a + tol_b``. Components where every pair agrees are
*agree*: three independently derived values (and a candidate) coincide.

**Proof** (points where some pair disagrees, and every explicitly given
point). The referee returns an enclosure of the exact derivative, certified
to a width far below the tolerances (Note [Certified referee]). An engine
within its screening tolerance of the exact value passes. One that is not
is re-run with Monte Carlo arithmetic (Note [Own rounding], rounding.py):
its tolerance becomes ``OWN_SAFETY`` times the rounding its *own*
computation shows at that point (plus, for finite differences, their error
bar). Then, per engine:

* **agree** -- within that tolerance, with fewer than half its digits lost;
* **unstable** -- within it, but more than half its dtype's digits lost
  (``|g - exact| > sqrt(eps) |exact|``): the engine's own arithmetic
  explains the deviation, so it is no bug, but this point is numerically
  hard for it. Also a *project* engine (symbolic, autograd, finite
  differences) that produces no finite value where the exact gradient is
  finite (overflow in its formula). With ``strict=True`` these are
  mismatches;
* **mismatch** -- beyond what its own rounding explains, or a candidate
  (the code under test) returning NaN or inf where the exact gradient is
  finite: the engine is *at fault*, with the exact value as proof;
* **not judged** -- the referee proved the loss undefined there, the exact
  value beyond float64's range, could not certify it within its budget,
  or the engine computed in a dtype that cannot hold the point (float32 at
  ``x = 1e150``), or a kink lies between the point and its rounding to the
  engine's dtype.

**Kinks** (``relu``/``abs`` at 0: finite differences detect them, the
referee proves an argument exactly 0): the derivative does not exist;
every engine passes whose value lies between the one-sided derivatives
widened by its tolerance (the subgradient interval).

**Budget.** The referee costs ~0.1-5 ms a point: a run gives it a budget
(:class:`RefereeBudget`: points and seconds for the whole run, not per
chunk). Disagreements beyond the budget are decided by majority only for
an engine the referee has already proven at fault in this run (the count
of its mismatches is then an estimate); otherwise they are *not judged*
("referee budget spent"). A majority alone never blames anyone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .engines import ENGINE_NAMES, Gradients, engine
from .engines import referee as _referee
from .engines.finite_diff import DIRECTIONAL_MIN_P
from .errors import UsageError
from .model import Batch, Model
from .tolerance import EPS, FD_SAFETY, OWN_SAFETY, engine_tolerance, fd_tolerance, rounding_scale
from .verdicts import AGREE, CLASSES, KINK, MISMATCH, NOT_JUDGED, PRIORITY, REASONS, UNSTABLE, not_judged_note

# The verdict vocabulary (AGREE ... KINK, CLASSES, PRIORITY, REASONS) is defined in verdicts.py, which
# imports nothing, and re-exported here, where it has always been imported from.
__all__ = [
    "Comparison",
    "compare",
    "RefereeBudget",
    "AGREE",
    "MISMATCH",
    "UNSTABLE",
    "NOT_JUDGED",
    "KINK",
    "CLASSES",
    "PRIORITY",
    "REASONS",
    "PROJECT_ENGINES",
]

#: The project's own engines: their overflow is "unstable", a candidate's is a mismatch.
PROJECT_ENGINES = ("symbolic", "autograd", "finite_differences")

#: Step factor of finite differences' second look where they miss the exact value (Note [Verdict]).
FD_SECOND_LOOK = 2.0**-4
#: Disagreeing points of a chunk proven before majority may decide for engines proven at fault.
PROBE_ROWS = 8


@dataclass
class RefereeBudget:
    """What the proof stage may still spend in one run: points and seconds, shared by its chunks.

    The seconds are those the proof stage itself spends (the referee and the
    Monte Carlo reruns), not the run's wall time: a slow candidate does not
    use up the referee's budget. Explicitly given points are always refereed
    and are not counted; the first ``PROBE_ROWS`` disagreements of a run are
    proven whatever the budget, so a bug is always proven before majority
    may count it.
    """

    points: int = 2000
    seconds: float = 5.0
    spent: float = 0.0
    used: int = 0
    proven: set = field(default_factory=set)  # engines the referee has proven at fault in this run

    def take(self, want: int, minimum: int = 0) -> int:
        floor = max(0, minimum - self.used)
        if self.spent > self.seconds:
            k = min(want, floor)
        else:
            k = max(0, min(want, max(self.points - self.used, floor)))
        self.used += k
        return k

    @property
    def deadline(self) -> float:
        """When a proof that starts now must stop (at least one second from now)."""
        return time.perf_counter() + max(self.seconds - self.spent, 1.0)


@dataclass
class Comparison:
    """Arrays over ``(N, P)``: every engine's values, tolerances and verdicts."""

    model: Model
    batch: Batch
    results: dict[str, Gradients]
    tol: dict[str, np.ndarray]
    scale: np.ndarray
    exact: np.ndarray  # (N, P) float64 where certified, else nan
    refereed: np.ndarray  # (N,) bool
    kink: np.ndarray  # (N, P) bool
    state: dict[str, np.ndarray]  # engine -> (N, P) int8 verdict code
    verdict: np.ndarray  # (N, P) int8 component class
    disagree: np.ndarray  # (N, P) bool: some pair disagreed at screening
    own: dict[str, np.ndarray]  # engine -> (N, P) own-rounding estimate (nan where not measured)
    reasons: dict[str, int] = field(default_factory=dict)  # not-judged reason -> components
    notes: list[str] = field(default_factory=list)

    @property
    def engines(self) -> list[str]:
        return list(self.results)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(combinations(self.results, 2))

    @property
    def fault(self) -> dict[str, np.ndarray]:
        """engine -> (N, P) bool: at fault (a mismatch)."""
        return {e: s == MISMATCH for e, s in self.state.items()}

    def values(self, name: str) -> np.ndarray:
        return self.results[name].values

    def any_fault(self) -> np.ndarray:
        return self.verdict == MISMATCH

    def split(self, k: int) -> tuple[Comparison, Comparison]:
        """Points ``:k`` and ``k:`` as two comparisons (one run over given and random points together).

        The not-judged counts and notes go with the first part, so that adding both counts each once.
        """
        def part(rows, first):
            return Comparison(
                model=self.model, batch=self.batch.take(rows),
                results={e: r.take(rows) for e, r in self.results.items()},
                tol={e: t[rows] for e, t in self.tol.items()}, scale=self.scale[rows], exact=self.exact[rows],
                refereed=self.refereed[rows], kink=self.kink[rows], state={e: s[rows] for e, s in self.state.items()},
                verdict=self.verdict[rows], disagree=self.disagree[rows], own={e: o[rows] for e, o in self.own.items()},
                reasons=dict(self.reasons) if first else {}, notes=list(self.notes) if first else [],
            )

        return part(slice(None, k), True), part(slice(k, None), False)


def _within(values, lo, hi, tol):
    return (values >= lo - tol) & (values <= hi + tol)


def _eps_of(res: Gradients) -> np.ndarray | float:
    """Unit roundoff of every component of an engine's values (a candidate may mix dtypes)."""
    if res.f32 is not None:
        return np.where(res.f32, EPS["float32"], EPS["float64"])
    return EPS[res.dtype]


def _screen_tolerance(res: Gradients, scale: np.ndarray) -> np.ndarray:
    """The screening tolerance of an engine without an error bar, in the dtype(s) it computed in."""
    return np.broadcast_to(engine_tolerance("float64", scale) * (_eps_of(res) / EPS["float64"]), scale.shape)


def _outside_range(batch: Batch, dtype: str) -> np.ndarray:
    """(N,) points with an input or parameter that ``dtype`` cannot hold (it overflows to inf)."""
    if dtype == "float64":
        return np.zeros(len(batch), dtype=bool)
    big = float(np.finfo(dtype).max)
    return (np.abs(batch.theta) > big).any(axis=1) | (np.abs(batch.data) > big).any(axis=1)


def compare(
    model: Model,
    batch: Batch,
    *,
    dtype: str = "float64",
    device: str = "cpu",
    engines: Mapping[str, Callable] | None = None,
    candidate: Gradients | None = None,
    candidate_rounding: Callable[[Batch, int], np.ndarray] | None = None,
    referee_rows: np.ndarray | None = None,
    budget: RefereeBudget | None = None,
    strict: bool = False,
) -> Comparison:
    """Run every engine on ``batch`` and decide, per component, who is right (Note [Verdict]).

    ``engines`` replaces engines by name (a function with the signature of
    :func:`gradcheck_lab.engines.symbolic.gradients`); used to test the
    checker itself. ``candidate`` is the user's own gradient, judged like an
    engine, and ``candidate_rounding(batch, seed)`` re-runs it perturbed
    (Note [Own rounding]). ``referee_rows`` marks points the referee must
    always evaluate; ``budget`` bounds it for the rest.

    The stages: :func:`_run_engines`, :func:`_screen` (and :func:`_kink_suspects`),
    :func:`_prove_disagreements` (the referee, then :func:`_judge_exact`),
    :func:`_decide_by_majority`, :func:`_assemble`.
    """
    if dtype not in EPS:
        raise UsageError(f"Expected dtype in {tuple(EPS)} but got dtype={dtype!r}.")
    table = {name: engine(name) for name in ENGINE_NAMES}
    for name, fn in (engines or {}).items():
        if name not in table:
            raise UsageError(f"Expected an engine name in {ENGINE_NAMES} but got {name!r}.")
        table[name] = fn
    results, scale = _run_engines(model, batch, table, engines or {}, dtype=dtype, device=device,
                                  candidate=candidate, referee_rows=referee_rows)
    run = _Judging(model=model, batch=batch, results=results, tol=_tolerances(results, scale), scale=scale,
                   budget=budget if budget is not None else RefereeBudget(), fd_fn=table["finite_differences"],
                   device=device, candidate_rounding=candidate_rounding, strict=strict)
    _screen(run)
    kink_bad = _kink_suspects(run)
    unproven = _prove_disagreements(run, referee_rows, kink_bad)
    _decide_by_majority(run, unproven)
    return _assemble(run)


@dataclass
class _Judging:
    """One comparison under way: what the stages of :func:`compare` read, and the arrays they fill in.

    ``kink``, ``state``, ``judged``, ``exact``, ``refereed``, ``own`` and
    ``reasons`` are updated in place, stage by stage (Note [Verdict]).
    """

    model: Model
    batch: Batch
    results: dict[str, Gradients]
    tol: dict[str, np.ndarray]
    scale: np.ndarray
    budget: RefereeBudget
    fd_fn: Callable  # the finite-difference engine (its second look is only for the real one)
    device: str
    candidate_rounding: Callable | None
    strict: bool
    kink: np.ndarray = field(init=False)  # (N, P) bool
    state: dict[str, np.ndarray] = field(init=False)  # engine -> (N, P) int8 verdict code
    judged: dict[str, np.ndarray] = field(init=False)  # engine -> (N, P) bool: takes part there
    disagree: np.ndarray = field(init=False)  # (N, P) bool: some pair disagreed at screening
    exact: np.ndarray = field(init=False)  # (N, P) float64 where certified, else nan
    refereed: np.ndarray = field(init=False)  # (N,) bool
    own: dict[str, np.ndarray] = field(init=False)  # engine -> (N, P) own-rounding estimate
    reasons: dict[str, int] = field(default_factory=dict)  # not-judged reason -> components

    def __post_init__(self) -> None:
        n, p = self.batch.theta.shape
        fd = self.results["finite_differences"]
        self.kink = fd.kink.copy() if fd.kink is not None else np.zeros((n, p), dtype=bool)
        self.state = {name: np.full((n, p), AGREE, dtype=np.int8) for name in self.results}
        self.judged = {}
        self.disagree = np.zeros((n, p), dtype=bool)
        self.exact = np.full((n, p), np.nan)
        self.refereed = np.zeros(n, dtype=bool)
        self.own = {name: np.full((n, p), np.nan) for name in self.results}

    def at(self, rows: np.ndarray, part: np.ndarray) -> np.ndarray:
        """(N, P) bool: ``part`` (its rows are points ``rows``), False at every other point."""
        mark = np.zeros(self.kink.shape, dtype=bool)
        mark[rows] = part
        return mark

    def not_judged(self, name: str, where: np.ndarray, reason: str) -> None:
        """Engine ``name`` is not judged at ``where`` (components not already so count for ``reason``)."""
        where = where & (self.state[name] != NOT_JUDGED)
        if where.any():
            self.state[name][where] = NOT_JUDGED
            self.reasons[reason] = self.reasons.get(reason, 0) + int(where.sum())

    def exclude(self, name: str, rows: np.ndarray, part: np.ndarray, reason: str) -> None:
        """Engine ``name`` takes no further part at ``part`` of points ``rows``: not judged where it agreed."""
        if part.any():
            mark = self.at(rows, part)
            self.not_judged(name, mark & (self.state[name] == AGREE), reason)
            self.judged[name][mark] = False


def _check_shape(name: str, res: Gradients, n: int, p: int) -> None:
    if res.values.shape != (n, p):
        raise UsageError(f"Expected engine {name} to return gradients of shape {(n, p)} but got {res.values.shape}.")


def _run_engines(model, batch, table, overrides, *, dtype, device, candidate, referee_rows):
    """Every engine's values on ``batch``, and the rounding scale of Note [Tolerance model].

    Finite differences run last: on a wide model they look only where the
    others' projections disagree (:func:`_directional_fd`).
    """
    n, p = batch.theta.shape
    results: dict[str, Gradients] = {}
    results["symbolic"] = table["symbolic"](model, batch, dtype="float64", device=device)
    results["autograd"] = table["autograd"](model, batch, dtype=dtype, device=device)
    if candidate is not None:
        results["candidate"] = candidate
    for name, res in results.items():
        _check_shape(name, res, n, p)
    scale = rounding_scale(model, batch, results["symbolic"].values)
    fd_fn = table["finite_differences"]
    if p > DIRECTIONAL_MIN_P and "finite_differences" not in overrides:
        fd_res = _directional_fd(model, batch, results, scale, referee_rows, fd_fn)
    else:
        fd_res = fd_fn(model, batch, dtype="float64", device=device)
    _check_shape("finite_differences", fd_res, n, p)
    results = {"symbolic": results["symbolic"], "autograd": results["autograd"], "finite_differences": fd_res,
               **({"candidate": candidate} if candidate is not None else {})}
    return results, scale


def _tolerances(results: dict[str, Gradients], scale: np.ndarray) -> dict[str, np.ndarray]:
    """Every engine's screening tolerance: its error bar if it has one, else that of its dtype(s)."""
    tol: dict[str, np.ndarray] = {}
    for name, res in results.items():
        if res.error is not None:
            tol[name] = fd_tolerance(res.error, scale)
        else:
            tol[name] = _screen_tolerance(res, scale).copy()
    return tol


def _screen(run: _Judging) -> None:
    """Screening (Note [Verdict]): where each engine takes part, and where some pair disagrees."""
    n, p = run.kink.shape
    # Engines in float32 cannot hold some points, and differentiate at the
    # float32-rounded point: where that lies across a kink, their value is no evidence.
    from .engines.finite_diff import kinks_moved_by_rounding

    for name, res in run.results.items():
        if res.dtype != "float64" and name != "finite_differences":
            run.not_judged(name, np.broadcast_to(_outside_range(run.batch, res.dtype)[:, None], (n, p)), "range")
            moved = kinks_moved_by_rounding(run.model, run.batch, res.dtype)
            run.not_judged(name, np.broadcast_to(moved[:, None], (n, p)), "kink_rounding")
    # Finite differences without an estimate (a kink or pole inside the stencil) take no part.
    judged = run.judged = {name: (run.state[name] != NOT_JUDGED) & ~np.isinf(run.tol[name]) for name in run.results}

    disagree = run.disagree
    for a, b in combinations(run.results, 2):
        with np.errstate(invalid="ignore"):
            ok = np.abs(run.results[a].values - run.results[b].values) <= run.tol[a] + run.tol[b]
        disagree |= ~ok & judged[a] & judged[b] & ~run.kink
    # A non-finite value is a disagreement even where no other engine is judged.
    for name, res in run.results.items():
        disagree |= ~np.isfinite(res.values) & judged[name] & ~run.kink


def _kink_suspects(run: _Judging) -> dict[str, np.ndarray]:
    """engine -> (N, P) bool: outside the subgradient interval of a kink finite differences flagged.

    Kinks: judge each engine against the subgradient interval. Finite differences
    flag kinks by a heuristic (Note [Kinks]): a value outside the interval is only a
    mismatch once the referee confirms the kink; where it proves the loss
    differentiable there, the component is judged against the exact value instead.
    """
    fd = run.results["finite_differences"]
    kink_bad = {name: np.zeros(run.kink.shape, dtype=bool) for name in run.results}
    if run.kink.any():
        for name, res in run.results.items():
            inside = _within(res.values, fd.lower, fd.upper, run.tol[name] if name != "finite_differences" else 0.0)
            kink_bad[name] = run.kink & ~inside & run.judged[name]
    return kink_bad


def _prove_disagreements(run: _Judging, referee_rows: np.ndarray | None,
                         kink_bad: dict[str, np.ndarray]) -> np.ndarray:
    """The proof stage (Note [Verdict]); returns the (N,) points whose disagreements it left unproven.

    The referee takes the given points and the suspected kinks whatever the
    budget, then the disagreements the budget allows.
    """
    n = run.kink.shape[0]
    budget = run.budget
    kink_rows = np.zeros(n, dtype=bool)
    for bad in kink_bad.values():
        kink_rows |= bad.any(axis=1)
    forced = referee_rows if referee_rows is not None else np.zeros(n, dtype=bool)
    forced = forced | kink_rows
    _prove(run, np.flatnonzero(forced), budget.deadline + 60.0)
    for name, state in run.state.items():  # outside the subgradient interval of a kink the referee did not disprove
        state[kink_bad[name] & run.kink & (state == AGREE)] = MISMATCH
    optional = np.flatnonzero(run.disagree.any(axis=1) & ~forced)
    # The first few disagreements are proven; after that, a disagreement that only an engine
    # already proven at fault in this run explains (the others agree among themselves) is
    # left to majority: a failing run costs little more than a passing one.
    first = optional[: budget.take(min(len(optional), PROBE_ROWS), minimum=PROBE_ROWS)]
    _prove(run, first, budget.deadline)
    rest = np.setdiff1d(optional, first)
    explained = _explained_by(run.results, run.tol, run.judged, run.disagree, budget.proven)
    todo = rest[~explained[rest]]
    allowed = budget.take(len(todo))
    _prove(run, todo[:allowed], budget.deadline)
    unproven = np.zeros(n, dtype=bool)
    unproven[rest[explained[rest]]] = True
    unproven[todo[allowed:]] = True
    return unproven


def _prove(run: _Judging, rows: np.ndarray, deadline: float) -> None:
    """Referee points ``rows`` and judge every engine there; the time spent counts against the budget."""
    if not len(rows):
        return
    started = time.perf_counter()
    try:
        _referee_points(run, rows, deadline)
    finally:
        run.budget.spent += time.perf_counter() - started


def _referee_points(run: _Judging, rows: np.ndarray, deadline: float) -> None:
    """The certified exact value at points ``rows``, kinks corrected by it, and every engine judged against it."""
    sub = run.batch.take(rows)
    need = np.full((len(rows), run.kink.shape[1]), np.inf)
    for name in run.results:
        need = np.minimum(need, np.where(run.judged[name][rows], run.tol[name][rows], np.inf))
    need = np.where(np.isfinite(need), need * 2.0**-6, 0.0)
    cert = _referee.certify(run.model, sub, need=need, deadline=deadline)
    run.refereed[rows] = True
    st = cert.status
    ex = np.where(st == _referee.CERTIFIED, cert.value, np.nan)
    run.exact[rows] = ex
    kink = run.kink
    for name, res in run.results.items():
        j = run.judged[name][rows]
        for reason, code in (("undefined", _referee.UNDEFINED), ("beyond", _referee.BEYOND),
                             ("unresolved", _referee.UNRESOLVED)):
            run.not_judged(name, run.at(rows, (st == code) & j & ~kink[rows]), reason)
        # At a kink whose closed form is undefined (d|x| written as x/sqrt(x**2): 0/0 at the
        # origin), a non-finite value is what that formula gives: no evidence either way.
        # A finite value is still held to the kink's subgradient interval.
        undefined = (st == _referee.UNDEFINED) & j & kink[rows] & ~np.isfinite(res.values[rows])
        run.not_judged(name, run.at(rows, undefined), "undefined")
    # A kink finite differences flagged where the referee certifies a derivative: no kink.
    kink[rows] &= ~(st == _referee.CERTIFIED)
    # A kink the referee proves (an argument exactly 0) that finite differences did not flag.
    ref_kink = st == _referee.KINK
    if ref_kink.any():
        kink[:] = kink | run.at(rows, ref_kink & ~kink[rows])
    _judge_exact(run, rows, ex)
    for name in run.results:
        if (run.state[name] == MISMATCH).any():
            run.budget.proven.add(name)


def _decide_by_majority(run: _Judging, unproven: np.ndarray) -> None:
    """Disagreements the referee could not take: majority, only for an engine already proven at fault."""
    if not unproven.any():
        return
    results, tol, judged, state = run.results, run.tol, run.judged, run.state
    for name, res in results.items():
        rows_u = unproven[:, None] & run.disagree & judged[name] & (state[name] == AGREE)
        if not rows_u.any():
            continue
        lonely = np.ones(rows_u.shape, dtype=bool)
        for o in results:
            if o == name:
                continue
            with np.errstate(invalid="ignore"):
                lonely &= ~(np.abs(res.values - results[o].values) <= tol[name] + tol[o]) | ~judged[o]
        if name in run.budget.proven:
            blame = rows_u & lonely
            if name in PROJECT_ENGINES and not run.strict:  # overflow of our own engines: unstable
                state[name][blame & ~np.isfinite(res.values)] = UNSTABLE
                blame &= np.isfinite(res.values)
            state[name][blame] = MISMATCH
            run.not_judged(name, rows_u & ~lonely, "budget")
        else:
            run.not_judged(name, rows_u, "budget")


def _assemble(run: _Judging) -> Comparison:
    """The finished comparison: one class per component, a note per reason for not judging."""
    return Comparison(
        model=run.model,
        batch=run.batch,
        results=run.results,
        tol=run.tol,
        scale=run.scale,
        exact=run.exact,
        refereed=run.refereed,
        kink=run.kink,
        state=run.state,
        verdict=_component_classes(run.state, run.kink),
        disagree=run.disagree,
        own=run.own,
        reasons=run.reasons,
        notes=[not_judged_note(reason, count) for reason, count in run.reasons.items()],
    )


def _real_fd():
    """The finite-difference engine itself (its second look is only for the real one)."""
    from .engines.finite_diff import gradients

    return gradients


def _explained_by(results, tol, judged, disagree, proven) -> np.ndarray:
    """(N,) points whose every disagreement involves an engine in ``proven``: the others agree."""
    n = disagree.shape[0]
    if not proven:
        return np.zeros(n, dtype=bool)
    ok = np.ones(n, dtype=bool)
    rest = [e for e in results if e not in proven]
    for a, b in combinations(rest, 2):
        with np.errstate(invalid="ignore"):
            agree = np.abs(results[a].values - results[b].values) <= tol[a] + tol[b]
        ok &= (agree | ~judged[a] | ~judged[b]).all(axis=1)
    return ok & (len(rest) >= 2)


def _directional_fd(model, batch, results, scale, referee_rows, fd_fn) -> Gradients:
    """Finite differences for a wide model: projections first, components where needed.

    Note [Directional check] in engines/finite_diff.py. Returns per-component
    values at the points that needed them and "no estimate" (infinite error)
    elsewhere, where the projections agreed.
    """
    from .engines.finite_diff import directional, directions

    n, p = batch.theta.shape
    dirs = directions(batch)
    proj_fd, err_fd = directional(model, batch, dirs)
    absd = np.abs(dirs)
    fd_tol = FD_SAFETY * err_fd + np.einsum("np,nrp->nr", engine_tolerance("float64", scale), absd)
    need = ~np.isfinite(err_fd).all(axis=1)
    if referee_rows is not None:
        need |= referee_rows
    others = list(results.values())
    for res in others:
        with np.errstate(invalid="ignore", over="ignore"):
            proj = np.einsum("np,nrp->nr", np.nan_to_num(res.values, nan=np.inf), dirs)
            tolp = np.einsum("np,nrp->nr", _screen_tolerance(res, scale), absd)
            need |= ~(np.abs(proj - proj_fd) <= tolp + fd_tol).all(axis=1)
    for ra, rb in combinations(others, 2):
        with np.errstate(invalid="ignore"):
            need |= ~(np.abs(ra.values - rb.values) <= _screen_tolerance(ra, scale) + _screen_tolerance(rb, scale)).all(axis=1)
    out = Gradients("finite_differences", np.full((n, p), np.nan), "float64", np.full((n, p), np.inf),
                    np.zeros((n, p), dtype=bool), np.full((n, p), np.nan), np.full((n, p), np.nan))
    rows = np.flatnonzero(need)
    if len(rows):
        sub = fd_fn(model, batch.take(rows), dtype="float64")
        for attr in ("values", "error", "kink", "lower", "upper"):
            arr = getattr(out, attr)
            arr[rows] = getattr(sub, attr)
    return out


def _component_classes(state: dict[str, np.ndarray], kink: np.ndarray) -> np.ndarray:
    """One class per component: mismatch > unstable > kink > not judged (any engine) > agree."""
    stack = np.stack(list(state.values()))
    out = np.full(kink.shape, AGREE, dtype=np.int8)
    out[(stack == NOT_JUDGED).any(axis=0)] = NOT_JUDGED
    out[kink] = KINK
    out[(stack == UNSTABLE).any(axis=0)] = UNSTABLE
    out[(stack == MISMATCH).any(axis=0)] = MISMATCH
    return out


def _judge_exact(run: _Judging, rows: np.ndarray, ex: np.ndarray) -> None:
    """Each engine against the certified exact value ``ex`` at points ``rows`` (Note [Verdict])."""
    have = np.isfinite(ex) & ~run.kink[rows]
    for name, res in run.results.items():
        f32 = res.f32[rows] if res.f32 is not None else np.full(ex.shape, res.dtype == "float32")
        g = res.values[rows]
        _exclude_unjudgeable(run, name, rows, ex, g, f32, have)
        j = run.judged[name][rows] & have & (run.state[name][rows] == AGREE)
        with np.errstate(invalid="ignore"):
            dev = np.abs(g - ex)
        off = j & ~(dev <= run.tol[name][rows])
        if not off.any():
            continue
        nonfinite = off & ~np.isfinite(g)
        finite_off = off & np.isfinite(g)
        st = run.state[name][rows]  # a copy (fancy indexing): written back below
        if nonfinite.any():
            st = _judge_nonfinite(run, name, rows, g, f32, nonfinite, st)
        if finite_off.any() and name == "finite_differences" and run.fd_fn is _real_fd():
            finite_off = _fd_second_look(run, rows, ex, finite_off, st)
        if finite_off.any():
            _judge_by_own_rounding(run, name, rows, ex, dev, finite_off, st)
        run.state[name][rows] = st


def _exclude_unjudgeable(run: _Judging, name: str, rows, ex, g, f32, have) -> None:
    """Where engine ``name``'s arithmetic cannot give the exact value ``ex``, it is not judged (nor judged later)."""
    # A float32 engine cannot hold an exact value beyond float32's range: not judged there.
    big32 = float(np.finfo(np.float32).max)
    run.exclude(name, rows, f32 & have & (np.abs(ex) > big32), "range32")
    # ... nor one below float32's normal range: within that of it, a float32 value is as close as float32 gets.
    tiny32 = float(np.finfo(np.float32).tiny)
    with np.errstate(invalid="ignore"):
        below32 = f32 & have & (np.abs(ex) < tiny32) & (np.abs(g) <= tiny32)
    run.exclude(name, rows, below32, "underflow32")
    if name not in PROJECT_ENGINES:
        # Where autograd of the model itself, in the candidate's precision, gives no finite value
        # (BCE of a sigmoid that rounded to 1: log(1 - p) = -inf), that arithmetic cannot compute
        # the gradient there: the candidate's value is no evidence either way.
        same = f32 == (run.results["autograd"].dtype == "float32")
        lost = same & have & ~np.isfinite(run.results["autograd"].values[rows]) & run.judged[name][rows]
        run.exclude(name, rows, lost, "model_lost")


def _judge_nonfinite(run: _Judging, name: str, rows, g, f32, nonfinite, st) -> np.ndarray:
    """Verdicts ``st`` (at ``rows``) where engine ``name`` gives no finite value but the exact one is finite.

    Returns ``st`` updated (re-read from the state where some component became not judged).
    """
    project = name in PROJECT_ENGINES
    if not project:
        res = run.results[name]
        # Where autograd of the model itself, in the candidate's precision, overflows too, the
        # point is beyond what that arithmetic computes: the candidate's overflow is not judged.
        same = f32 == (run.results["autograd"].dtype == "float32")
        beyond = nonfinite & same & ~np.isfinite(run.results["autograd"].values[rows])
        # ... and where the candidate's own arithmetic overflows on the way to a representable
        # result (its Monte Carlo run tainted by overflow: an unbounded estimate), in float32
        # as in float64 (2 (e - y) e x with e = 1e154, for an exact -1.6e308).
        # Only an infinite value can be such an overflow: a NaN stays a mismatch.
        rest = nonfinite & ~beyond & np.isinf(g)
        if rest.any():
            pts = np.flatnonzero(rest.any(axis=1))
            est = _own_rounding(name, run.model, run.batch.take(rows[pts]), res, g[pts], dtype=res.dtype,
                                device=run.device, candidate_rounding=run.candidate_rounding)
            over = np.zeros_like(rest)
            over[pts] = rest[pts] & np.isinf(est)
            beyond = beyond | over
        for reason, part in (("range32", beyond & f32), ("overflow", beyond & ~f32)):
            if part.any():
                run.not_judged(name, run.at(rows, part), reason)
        if beyond.any():
            st = run.state[name][rows]
            nonfinite = nonfinite & ~beyond
    st[nonfinite] = MISMATCH if (run.strict or not project) else UNSTABLE
    return st


def _fd_second_look(run: _Judging, rows, ex, finite_off, st) -> np.ndarray:
    """Finite differences off the exact value beyond their error bar: truncation they underestimated, or a bug?

    A second look with 16x smaller steps decides: if that agrees with the
    exact value within its own bar, the first estimate was truncation-limited
    (unstable in ``st``), not wrong. Returns the components still off.
    """
    pts = np.flatnonzero(finite_off.any(axis=1))
    again = run.fd_fn(run.model, run.batch.take(rows[pts]), shrink=FD_SECOND_LOOK)
    with np.errstate(invalid="ignore"):
        fine = np.abs(again.values - ex[pts]) <= FD_SAFETY * again.error + run.tol["finite_differences"][rows][pts]
    sub_st = st[pts]
    explained_fd = finite_off[pts] & fine
    sub_st[explained_fd] = MISMATCH if run.strict else UNSTABLE
    st[pts] = sub_st
    finite_off = finite_off.copy()
    finite_off[pts] &= ~fine
    return finite_off


def _judge_by_own_rounding(run: _Judging, name: str, rows, ex, dev, finite_off, st) -> None:
    """Verdicts ``st`` where engine ``name`` is off the exact value: its own rounding explains it, or not."""
    res = run.results[name]
    pts = np.flatnonzero(finite_off.any(axis=1))
    sub = run.batch.take(rows[pts])
    est = _own_rounding(name, run.model, sub, res, res.values[rows][pts], dtype=res.dtype, device=run.device,
                        candidate_rounding=run.candidate_rounding)
    o = run.own[name]
    block = o[rows[pts]]
    block[:] = est
    o[rows[pts]] = block
    allowed = run.tol[name][rows][pts]
    if name == "finite_differences" and res.error is not None:
        allowed = np.maximum(allowed, FD_SAFETY * res.error[rows[pts]] + OWN_SAFETY * est)
    else:
        allowed = np.maximum(allowed, OWN_SAFETY * est)
    d = dev[pts]
    explained = d <= allowed
    eps = _eps_of(res)
    eps = eps[rows[pts]] if isinstance(eps, np.ndarray) else eps
    with np.errstate(invalid="ignore", divide="ignore"):
        lost_half = d > np.sqrt(eps) * np.abs(ex[pts])
    fo = finite_off[pts]
    sub_st = st[pts]
    sub_st[fo & explained & lost_half] = MISMATCH if run.strict else UNSTABLE
    sub_st[fo & ~explained] = MISMATCH
    st[pts] = sub_st


def _own_rounding(
    name: str,
    model,
    batch,
    result,
    values: np.ndarray,
    *,
    dtype: str,
    device: str = "cpu",
    candidate_rounding: Callable | None = None,
) -> np.ndarray:
    """Engine ``name``'s own rounding at every point of ``batch`` (Note [Own rounding]).

    ``values`` are the engine's plain values there, ``result`` its
    :class:`~gradcheck_lab.engines.Gradients` (for a candidate's dtype).
    """
    if name == "symbolic":
        from .engines.symbolic import compiled
        from .rounding import context, estimate, perturbed_numpy, plain

        fn = compiled(model)
        cols = [batch.theta[:, i] for i in range(batch.theta.shape[1])] + [
            batch.data[:, j] for j in range(batch.data.shape[1])
        ]

        def run(seed: int) -> np.ndarray:
            ctx = context(len(batch), seed, "float64")
            moved = perturbed_numpy(cols, ctx.rng, "float64", ctx)
            with np.errstate(all="ignore"):
                out = fn(*moved)
            vals = np.stack([np.broadcast_to(plain(o), (len(batch),)) for o in out], axis=1)
            return np.where(ctx.tainted[:, None], np.nan, vals)

        with np.errstate(all="ignore"):
            base = np.stack([np.broadcast_to(np.asarray(o, dtype=float), (len(batch),)) for o in fn(*cols)], axis=1)
        return estimate(run, base)
    if name == "autograd":
        from .engines.autograd import gradients
        from .rounding import estimate, torch_mca

        def run(seed: int) -> np.ndarray:
            with torch_mca(dtype, seed, len(batch)) as mode:
                vals = gradients(model, batch, dtype=dtype, device=device).values
            return np.where(mode.tainted[:, None], np.nan, vals)

        return estimate(run, gradients(model, batch, dtype=dtype, device=device).values)
    if name == "finite_differences":
        from .engines.finite_diff import gradients as fd
        from .rounding import context, estimate

        def run(seed: int) -> np.ndarray:
            ctx = context(len(batch), seed, "float64")
            vals = fd(model, batch, perturb=ctx).values
            return np.where(ctx.tainted[:, None], np.nan, vals)

        return estimate(run, fd(model, batch).values)
    if name == "candidate" and candidate_rounding is not None:
        from .rounding import estimate

        # A candidate that gives another value when simply called again (state kept between
        # calls: a gradient buffer never zeroed) has no rounding to explain its deviation with.
        replay = candidate_rounding(batch, None)
        est = estimate(lambda seed: candidate_rounding(batch, seed), replay)
        with np.errstate(invalid="ignore"):
            moved = ~(np.abs(replay - values) <= 8 * EPS["float32" if result.dtype == "float32" else "float64"]
                      * np.abs(values))
        return np.where(moved & np.isfinite(values), 0.0, est)
    return np.zeros_like(values)
