"""The drop-in's tensor-level leg: the traced graph's Jacobian against the user's backward, at tensor speed.

Note [Agreement first]
~~~~~~~~~~~~~~~~~~~~~~
Most gradchecks of a test suite pass. Once the graph has been shown to be
the function (Note [Trace fidelity]), each point is checked at tensor level
first, by three legs that were derived independently:

* the tensor-level symbolic engine's Jacobian ``J`` (Note [Tensor-level
  rules] in engines/tensor.py), projected on each cotangent: ``c^T J``;
* torch autograd of the same graph in float64 (torch's derivative formulas,
  not ours), ``c^T J`` again;
* the user's backward in the inputs' dtype, the candidate.

The call passes here only when the three agree at every point and cotangent
to the rounding of their own arithmetic. ``s = |c|^T |J| + |c^T J|`` is the
scale of the rounding of a chain rule that does not cancel; where it cancels
(``1 - tanh(z)**2`` at a saturated ``z``: 1.6e-13 relative to ``s`` in a
small layer), the two float64 legs, which use different formulas (SymPy's
and torch's), differ by about that cancellation, ``d = |sym - auto|``. So:
the float64 legs within ``ENGINE_ROUNDING * eps64 * (s + max s)`` (3.6e-12,
``max s`` the largest ``s`` of the cotangent's row: a saturated ``tanh``'s
derivative carries an error of eps relative to 1, not to itself), and
the candidate within ``CANDIDATE_ROUNDING * eps * s + CANCELLATION * (eps /
eps64) * d`` of the symbolic value, ``eps`` the candidate's dtype (2.2e-16 or
1.2e-7). A backward off by 1e-10 relative in float64 (or 1e-3 in float32) is
outside (at most 256 eps + 4 d: 5.7e-14 + 1.5e-11 in float64, 3.1e-5 in
float32 where nothing cancels). The autograd leg only measures ``d``: it is
run where the candidate is outside ``CANDIDATE_ROUNDING * eps * s`` of the
symbolic value (or ``atol``/``rtol`` are given), because a candidate within
it agrees with an independent derivation to the rounding of a chain rule
that does not cancel, and a third leg could only confirm that (a fifth of a
small function's call went to it). Where the legs still disagree at that
scale, ``s`` is replaced by the absolute chain ``|c| |J_n| ... |J_1|`` (Note
[Absolute chain] in engines/tensor.py), the rounding scale of a chain that
cancels, and the same tolerances are tried once more (where the row's
products took under ``ABSOLUTE_SECONDS``: the chain costs as much again).
Failing that, the candidate is judged as the per-element path would
judge it (Note [Tolerance model]: ``SAFETY * (eps * M + tiny)`` with ``M``
normwise over the row and at least the perturbation probe, how far the
gradient moves when the inputs move by their rounding; :func:`_model_tolerance`),
so a backward that computes a cancelling formula in float32 passes as its
conditioning allows instead of waiting on finite differences (200 s for a
32x512 variance around 1000). Any remaining disagreement, non-finite
value or op the rules do not cover sends the call to the per-element path
(the referee proves who is wrong, Note [Verdict]) or, where that would
exceed its budget, to the tensor referee (:func:`proven_fault`, Note
[Tensor referee]) and then to finite differences of the real function with
their error bars: these legs only ever *pass* a call, so they never raise a
false alarm of their own, and a verdict of failure is always a proof's or
confirmed finite differences'.

Which components: every component of ``c^T J`` at the given inputs and at
random points of up to ``FULL_JACOBIAN`` components (``C J`` computed a
block of unit tangents at a time, never the whole Jacobian: 65k outputs by
3k inputs of a CNN were 1.6 GB); projections on ``PROJECTIONS`` random
+-1 directions at wider random points, and at wider given inputs too under
``fast_mode`` (the CNN's 3k unit tangents took minutes where torch's
``fast_mode`` checks one projection).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["agrees", "Disagreement", "Fault", "proven_fault", "localize", "REFEREE_COMPONENTS", "REFEREE_SECONDS",
           "REFEREE_OP_SECONDS", "CANDIDATE_ROUNDING", "ENGINE_ROUNDING", "CANCELLATION", "FULL_JACOBIAN", "PROJECTIONS", "ABSOLUTE_SECONDS"]

#: Multiple of the candidate dtype's eps within which a backward agrees with the symbolic leg (Note [Agreement first]).
CANDIDATE_ROUNDING = 256.0
#: Multiple of float64's eps within which the symbolic and autograd legs agree with each other (3.6e-12).
ENGINE_ROUNDING = 2.0**14
#: Checked components up to which a random point gets its whole gradient at tensor level, not projections.
FULL_JACOBIAN = 256
#: Random +-1 directions a wider random point's gradient is projected on (Note [Agreement first]).
PROJECTIONS = 4
#: Multiple of the float64 legs' difference, scaled to the candidate's dtype, added to its tolerance.
CANCELLATION = 4.0
#: Seconds a row's symbolic products may have taken for the absolute chain and the perturbation probe to be
#: tried there: each costs as much again (kornia's CLAHE, 2.5 s a row, took 23 s where the full path decides
#: in 3 s).
ABSOLUTE_SECONDS = 0.25


@dataclass
class Disagreement:
    """Where the tensor-level legs disagreed (what the tensor referee re-derives, Note [Tensor referee])."""

    row: int  # index into the rows checked (0: the given inputs)
    leaves: Sequence  # that row's tensors
    cotangents: np.ndarray  # (k, n_out)
    directions: np.ndarray | None  # (n_in, P): the row was checked along these projections; None: per component
    candidate: np.ndarray  # (k, n_in or P): the user's backward, projected like the others
    symbolic: np.ndarray  # the tensor-level symbolic leg's values
    scale: np.ndarray  # the rounding scale the tolerance used there
    deviation: np.ndarray  # |symbolic - autograd|: the chain's cancellation
    raw: np.ndarray | None = None  # (k, n_in): the user's backward before projection (with ``directions``)
    point: int | None = None  # the caller's number of the random point (None: the given inputs)
    probe: np.ndarray | None = None  # the perturbation probe, once computed (:func:`_model_tolerance`)

    def worst(self, tol: np.ndarray, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` components ``(cotangent, column)`` furthest outside ``tol``, worst first."""
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.abs(self.candidate - self.symbolic) / tol
        ratio = np.where(np.isfinite(ratio), ratio, 0.0)
        order = np.argsort(-ratio, axis=None)[:limit]
        return [(int(k // ratio.shape[1]), int(k % ratio.shape[1])) for k in order if ratio.flat[k] > 1.0]


def agrees(target, graph, rows: Sequence[Sequence], cotangents: Sequence[np.ndarray],
           atol: float | None = None, rtol: float | None = None, fast: bool = False,
           skipped: list[int] | None = None, found: list[Disagreement] | None = None) -> bool:
    """Whether the user's backward agrees with both float64 legs at every row of leaf tensors and its cotangents.

    ``rows[i]`` holds the leaves' tensors (the inputs' dtype) and ``cotangents[i]`` a matrix ``(k, n_out)``.
    ``atol``/``rtol``, when given, must hold too (``|g - sym| + |sym - auto| <= atol + rtol |sym|``).
    Rows past the first where the user's backward is not finite are not judged; their indices go to
    ``skipped`` (Note [NaN off the inputs] in torch_check.py). Where the legs disagree (all finite),
    ``found`` gets where (:class:`Disagreement`).
    """
    eps = float(np.finfo(np.float32 if target.dtype == "float32" else np.float64).eps)
    rng = None  # drawn from only for wide rows (projections)
    for k, (row, cots) in enumerate(zip(rows, cotangents)):
        cots = np.atleast_2d(np.asarray(cots, dtype=np.float64))
        n_in = sum(math.prod(t.shape) for t in row)
        full = n_in <= FULL_JACOBIAN or (k == 0 and not fast)
        dirs = None
        if not full:
            rng = rng if rng is not None else np.random.default_rng(20261205)
            dirs = rng.choice([-1.0, 1.0], size=(n_in, PROJECTIONS))
        verdict = _row_agrees(target, graph, row, cots, dirs, eps, atol, rtol)
        if isinstance(verdict, Disagreement):
            if found is not None:
                verdict.row = k
                found.append(verdict)
            return False
        if verdict is None and k > 0 and skipped is not None:
            skipped.append(k)
        elif not verdict:
            return False
    return True


def _row_agrees(target, graph, row, cots: np.ndarray, dirs, eps: float, atol, rtol) -> bool | None | Disagreement:
    """One row: every component of ``c^T J`` (``dirs`` None), or its projections on the columns of ``dirs``;
    None where the user's backward is not finite; a :class:`Disagreement` where the finite legs disagree."""
    from .engines import tensor

    cand, finite_forward = _backward(target, row, cots)
    if not np.isfinite(cand).all():
        return None if finite_forward else False
    start = time.perf_counter()
    if dirs is None:
        try:
            sym, scale = tensor.cotangent_products(graph, row, cots)
        except ValueError:  # another number of outputs than the cotangents'
            return False
        if not (np.isfinite(sym).all() and np.isfinite(scale).all()):
            return False
    else:
        jv = tensor.directional(graph, row, dirs)
        if jv.shape[0] != cots.shape[1] or not np.isfinite(jv).all():
            return False
        sym = cots @ jv
    raw = cand
    if dirs is not None:  # the scale of a projection: the candidate's own components (Note [Agreement first])
        scale = np.abs(cand) @ np.abs(dirs)
        cand = cand @ dirs
    with np.errstate(invalid="ignore", over="ignore"):
        size = scale + np.abs(sym)
        if atol is None and rtol is None and (np.abs(cand - sym) <= CANDIDATE_ROUNDING * eps * size).all():
            return True  # within the rounding of a chain that does not cancel: the autograd leg adds nothing
    auto = _autograd(graph, row, cots)
    if not np.isfinite(auto).all():
        return False
    if dirs is not None:
        auto = auto @ dirs
    if _within(cand, sym, auto, size, eps, atol, rtol):
        return True
    found = Disagreement(0, row, cots, dirs, cand, sym, size, np.abs(sym - auto), raw if dirs is not None else None)
    if time.perf_counter() - start > ABSOLUTE_SECONDS:
        return found  # the chain and the probes each cost as much again: the full path decides
    if dirs is None:
        try:  # Note [Absolute chain] (engines/tensor.py): the rounding scale of a chain that cancels
            chain = tensor.absolute_products(graph, row, cots)
        except tensor.Uncovered:
            chain = None
        if chain is not None and np.isfinite(chain).all():
            found.scale = np.maximum(size, chain + np.abs(sym))
            if _within(cand, sym, auto, chain + np.abs(sym), eps, atol, rtol):
                return True
    return True if _within_model(target.dtype, graph, found, atol, rtol) else found


def _within_model(dtype: str, graph, found: Disagreement, atol, rtol) -> bool:
    """Note [Tolerance model] at tensor level: the candidate within the per-element path's tolerance of the
    symbolic value (:func:`_model_tolerance`), and the float64 legs within their rounding at that scale."""
    eps64 = float(np.finfo(np.float64).eps)
    tol, scale = _model_tolerance(graph, found, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        if not (found.deviation <= ENGINE_ROUNDING * eps64 * (scale + scale.max(axis=-1, keepdims=True))).all():
            return False
        if not (np.abs(found.candidate - found.symbolic) <= tol).all():
            return False
        return (atol is None and rtol is None) or bool((np.abs(found.candidate - found.symbolic) + found.deviation
                                                        <= (atol or 0.0) + (rtol or 0.0) * np.abs(found.symbolic)).all())


def _model_tolerance(graph, found: Disagreement, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """``(tolerance, M)`` of the candidate per component, as Note [Tolerance model] derives it: ``SAFETY *
    (eps * M + tiny)``, ``M`` the largest of the row's rounding scales (normwise, as the per-element path
    judges) and the perturbation probe (how far the gradient moves when the inputs move by their rounding:
    a backward that computes a cancelling formula is judged by that), plus ``CANCELLATION`` times the
    float64 legs' difference scaled to the dtype."""
    from .tolerance import EPS, SAFETY, TINY

    eps, eps64 = EPS[dtype], EPS["float64"]
    if found.probe is None:
        found.probe = _perturbation_probe(graph, found)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.maximum(np.maximum(found.scale, found.scale.max(axis=-1, keepdims=True)), found.probe)
        return SAFETY[dtype] * (eps * scale + TINY[dtype]) + CANCELLATION * (eps / eps64) * found.deviation, scale


def _within(cand, sym, auto, size, eps: float, atol, rtol) -> bool:
    """The candidate and both float64 legs agree at rounding scale ``size`` (Note [Agreement first])."""
    eps64 = float(np.finfo(np.float64).eps)
    with np.errstate(invalid="ignore", over="ignore"):
        dev = np.abs(sym - auto)  # two float64 formulas: their difference shows the chain's cancellation
        # against the row's largest component too: 1 - tanh(z)**2 at a saturated z is a small number with
        # an error of eps relative to 1 (7e-12 relative to its own 1.3e-5 in a small layer)
        if not (dev <= ENGINE_ROUNDING * eps64 * (size + size.max(axis=-1, keepdims=True))).all():
            return False
        tol = CANDIDATE_ROUNDING * eps * size + CANCELLATION * (eps / eps64) * dev
        if not (np.abs(cand - sym) <= tol).all():
            return False
        if (atol is not None or rtol is not None) and not (
                np.abs(cand - sym) + dev <= (atol or 0.0) + (rtol or 0.0) * np.abs(sym)).all():
            return False
    return True


def _autograd(graph, row, cots: np.ndarray) -> np.ndarray:
    """``c^T J`` by torch autograd of the graph in float64, for each cotangent ``c``."""
    import torch

    from .engines import tensor

    leaves = [t.detach().to("cpu", torch.float64).requires_grad_() for t in row]
    with torch.enable_grad():
        outs = tensor.evaluate(graph, leaves)
        flat = torch.cat([o.reshape(-1) for o in outs]) if outs else torch.zeros(0, dtype=torch.float64)
        return _vjps(flat, leaves, cots)


def _backward(target, row, cots: np.ndarray) -> tuple[np.ndarray, bool]:
    """``c^T J`` by the user's backward, in the inputs' dtype (the candidate under test), and whether the
    forward is finite there."""
    import torch

    given = getattr(target, "given_run", None)
    if given is not None and row is target.values:
        # Note [One forward at the given inputs] (torch_check.py): its graph, kept for the structural tests,
        # and the reentrancy check's product where a cotangent is its
        with torch.enable_grad():
            return _vjps(given.flat, given.leaves, cots, retain=True, known=(given.cot, given.gradient)), given.finite
    leaves = [t.detach().clone().requires_grad_() for t in row]
    with torch.enable_grad():
        flat = target.flat_output(target.call(*leaves))
        return _vjps(flat, leaves, cots), bool(torch.isfinite(flat).all())


def _vjps(flat, leaves, cots: np.ndarray, retain: bool = False, known=None) -> np.ndarray:
    """``c^T J`` of the graph of ``flat`` for each cotangent ``c``; ``known``: ``(c, gradient)`` of a product
    already computed, which is not computed again; ``retain``: the graph is kept after the last."""
    import torch

    n_in = sum(math.prod(t.shape) for t in leaves)
    out = np.zeros((len(cots), n_in))
    if not flat.requires_grad:  # no output depends on a checked input: a zero Jacobian
        return out
    for k, c in enumerate(cots):
        if known is not None and known[0].shape == c.shape and np.array_equal(known[0], c):
            out[k] = known[1]()
            continue
        grads = torch.autograd.grad(flat, leaves, torch.as_tensor(c, dtype=flat.dtype),
                                    retain_graph=retain or k < len(cots) - 1, allow_unused=True)
        out[k] = np.concatenate([(g if g is not None else torch.zeros_like(t)).detach().double().cpu().numpy().ravel()
                                 for g, t in zip(grads, leaves)])
    return out


def localize(graph, found: Disagreement, row: int, column: int, eps: float) -> tuple[int, float, float, float] | None:
    """Note [Localized projections]: the input component behind a disagreement on a projection.

    ``found`` disagreed on projection ``column`` of cotangent ``row`` (``c^T J v``, ``v`` random +-1 over
    every input component): a sum that finite differences cannot follow where the function has kinks (a
    ReLU network: thousands of ReLUs switch along a dense direction, and their estimate has no error bar).
    The user's backward gave every component (``found.raw``); the symbolic leg's projections on the two
    halves of ``v`` tell which half holds the larger discrepancy (relative to the agreement-first tolerance
    there), and halving again ends at one component in ``log2(n)`` forward passes of two tangents each (11
    for kornia's 2,048-pixel patches). Returns ``(component, candidate, symbolic, tolerance)``, or None where
    the component found agrees within its tolerance (the discrepancy was spread too thin to localize).
    """
    from .engines import tensor

    if found.directions is None or found.raw is None:
        return None
    v, raw, c = found.directions[:, column], found.raw[row], found.cotangents[row]
    idx = np.flatnonzero(v)
    while len(idx) > 1:
        halves = (idx[: len(idx) // 2], idx[len(idx) // 2 :])
        dirs = np.zeros((len(v), 2))
        for k, half in enumerate(halves):
            dirs[half, k] = v[half]
        sym = c @ tensor.directional(graph, found.leaves, dirs)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.abs(raw @ dirs - sym) / (CANDIDATE_ROUNDING * eps * (np.abs(raw) @ np.abs(dirs) + np.abs(sym)))
        idx = halves[int(np.argmax(np.nan_to_num(ratio, nan=np.inf)))]
    if not len(idx):
        return None
    k = int(idx[0])
    unit = np.zeros((len(v), 1))
    unit[k, 0] = 1.0
    jv = tensor.directional(graph, found.leaves, unit)[:, 0]
    sym_k, tol = float(c @ jv), CANDIDATE_ROUNDING * eps * float(np.abs(c) @ np.abs(jv) + abs(raw[k]))
    return (k, float(raw[k]), sym_k, tol) if abs(raw[k] - sym_k) > tol else None


#: Components of a disagreement the tensor referee re-derives, the worst first (Note [Tensor referee]).
REFEREE_COMPONENTS = 4
#: Seconds the tensor referee may take; past them, what it has not proven is not judged.
REFEREE_SECONDS = 10.0
#: Seconds per element operation (torch_graph.element_work) of one pass at 128 bits with 4 directions, at most:
#: measured 1.5 us (a matmul, a convolution) to 9 us (a softmax, whose count is low). A graph estimated past
#: the referee's seconds is not tried (its deadline is checked between graph nodes, and one node of a large
#: matmul would run past it).
REFEREE_OP_SECONDS = 1e-5


@dataclass
class Fault:
    """A component of the user's backward proven wrong by the tensor referee."""

    cotangent: np.ndarray  # (n_out,)
    column: int  # the leaf component (``direction`` None) or the projection's index
    direction: np.ndarray | None  # the +-1 direction of a projection
    candidate: float
    exact: float  # the float64 nearest the exact value
    lo: float  # proven bounds of the exact value
    hi: float
    tolerance: float  # what the candidate's own rounding allows there
    symbolic: float  # the tensor-level symbolic leg's value
    bits: int
    proven: int  # components proven wrong, of
    checked: int  # the components the referee was given


def proven_fault(elements, graph, found: Disagreement, dtype: str, atol=None, rtol=None,
                 seconds: float = REFEREE_SECONDS) -> Fault | None:
    """The worst component of ``found`` that the tensor referee proves wrong, or None (Note [Tensor referee]).

    ``elements`` is the per-element graph (torch_graph.Traced) of the function, ``graph`` the tensor-level
    engine's. A component is wrong when the candidate lies outside the proven enclosure of the exact value
    by more than its own rounding allows (:func:`_model_tolerance`); with ``atol``/``rtol``, by more than
    ``atol + rtol |exact|``.
    """
    from .engines import tensor_referee
    from .engines.referee import CERTIFIED
    from .tolerance import EPS
    from .torch_graph import element_work

    if element_work(elements) * REFEREE_OP_SECONDS > seconds:
        return None
    eps64 = EPS["float64"]
    tol, _ = _model_tolerance(graph, found, dtype)
    comps = found.worst(tol, REFEREE_COMPONENTS)
    if not comps:
        return None
    n_in = sum(math.prod(t.shape) for t in found.leaves)
    rows, cols = sorted({i for i, _ in comps}), sorted({j for _, j in comps})
    if found.directions is None:
        dirs = np.zeros((n_in, len(cols)))
        dirs[cols, np.arange(len(cols))] = 1.0
    else:
        dirs = found.directions[:, cols]
    values = [t.detach().double().cpu().numpy() for t in found.leaves]
    exact = tensor_referee.prove(elements, values, found.cotangents[rows], dirs, need=tol[np.ix_(rows, cols)] / 4,
                                 deadline=time.perf_counter() + seconds)
    faults = []
    for i, j in comps:
        k = rows.index(i) * len(cols) + cols.index(j)
        if exact.status[0, k] != CERTIFIED:
            continue
        lo, hi = float(exact.lo[0, k]), float(exact.hi[0, k])
        g, allowed = float(found.candidate[i, j]), float(tol[i, j])
        if found.raw is not None and found.directions is not None:  # the projection summed exactly, rounded once
            g = math.fsum((found.raw[i] * found.directions[:, j]).tolist())
            allowed += eps64 * abs(g)
        if atol is not None or rtol is not None:
            allowed = (atol or 0.0) + (rtol or 0.0) * max(abs(lo), abs(hi))
        gap = max(lo - g, g - hi)
        if gap > allowed:
            faults.append((gap / allowed if allowed > 0 else math.inf, Fault(
                found.cotangents[i], j, None if found.directions is None else found.directions[:, j], g,
                float(exact.value[0, k]), lo, hi, allowed, float(found.symbolic[i, j]), int(exact.bits[0]), 0,
                len(comps))))
    if not faults:
        return None
    worst = max(faults, key=lambda f: f[0])[1]
    worst.proven = len(faults)
    return worst


def _perturbation_probe(graph, found: Disagreement) -> np.ndarray:
    """Note [Tolerance model]'s perturbation probe at tensor level: ``max_r |g(z (1 + d_r)) - g(z)| / delta``
    over the row's components, by the symbolic leg, with ``d_r`` uniform in ``[-delta, delta]`` per input."""
    import torch

    from .engines import tensor
    from .tolerance import PROBE_DELTA, PROBE_SAMPLES, PROBE_SEED

    rng = np.random.default_rng(PROBE_SEED)
    row = [t.detach().to("cpu", torch.float64) for t in found.leaves]
    probe = np.zeros_like(found.symbolic)
    for _ in range(PROBE_SAMPLES):
        moved = [t * (1 + torch.from_numpy(rng.uniform(-PROBE_DELTA, PROBE_DELTA, tuple(t.shape)))) for t in row]
        if found.directions is None:
            sym, _ = tensor.cotangent_products(graph, moved, found.cotangents)
        else:
            sym = found.cotangents @ tensor.directional(graph, moved, found.directions)
        with np.errstate(invalid="ignore", over="ignore"):
            step = np.abs(sym - found.symbolic) / PROBE_DELTA
        probe = np.maximum(probe, np.where(np.isfinite(step), step, 0.0))
    return probe
