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
Any disagreement, non-finite value or op the rules do not cover
sends the call to the per-element path (the referee proves who is wrong,
Note [Verdict]) or, where that would exceed its budget, to finite
differences of the real function with their error bars: this leg only ever
*passes* a call, so it never raises a false alarm of its own, and a verdict
of failure is always the full pipeline's.

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

import numpy as np

__all__ = ["agrees", "CANDIDATE_ROUNDING", "ENGINE_ROUNDING", "CANCELLATION", "FULL_JACOBIAN", "PROJECTIONS", "ABSOLUTE_SECONDS"]

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
#: Seconds a row's symbolic products may have taken for the absolute chain to be tried there: it costs as
#: much again (kornia's CLAHE, 2.5 s a row, took 23 s where the full path decides in 3 s).
ABSOLUTE_SECONDS = 0.25


def agrees(target, graph, rows: Sequence[Sequence], cotangents: Sequence[np.ndarray],
           atol: float | None = None, rtol: float | None = None, fast: bool = False,
           skipped: list[int] | None = None) -> bool:
    """Whether the user's backward agrees with both float64 legs at every row of leaf tensors and its cotangents.

    ``rows[i]`` holds the leaves' tensors (the inputs' dtype) and ``cotangents[i]`` a matrix ``(k, n_out)``.
    ``atol``/``rtol``, when given, must hold too (``|g - sym| + |sym - auto| <= atol + rtol |sym|``).
    Rows past the first where the user's backward is not finite are not judged; their indices go to
    ``skipped`` (Note [NaN off the inputs] in torch_check.py).
    """
    eps = float(np.finfo(np.float32 if target.dtype == "float32" else np.float64).eps)
    rng = np.random.default_rng(20261205)
    for k, (row, cots) in enumerate(zip(rows, cotangents)):
        cots = np.atleast_2d(np.asarray(cots, dtype=np.float64))
        n_in = sum(math.prod(t.shape) for t in row)
        full = n_in <= FULL_JACOBIAN or (k == 0 and not fast)
        dirs = None if full else rng.choice([-1.0, 1.0], size=(n_in, PROJECTIONS))
        verdict = _row_agrees(target, graph, row, cots, dirs, eps, atol, rtol)
        if verdict is None and k > 0 and skipped is not None:
            skipped.append(k)
        elif not verdict:
            return False
    return True


def _row_agrees(target, graph, row, cots: np.ndarray, dirs, eps: float, atol, rtol) -> bool | None:
    """One row: every component of ``c^T J`` (``dirs`` None), or its projections on the columns of ``dirs``;
    None where the user's backward is not finite."""
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
    if dirs is not None or time.perf_counter() - start > ABSOLUTE_SECONDS:
        return False
    try:  # Note [Absolute chain] (engines/tensor.py): the rounding scale of a chain that cancels
        chain = tensor.absolute_products(graph, row, cots)
    except tensor.Uncovered:
        return False
    return bool(np.isfinite(chain).all()) and _within(cand, sym, auto, chain + np.abs(sym), eps, atol, rtol)


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

    leaves = [t.detach().clone().requires_grad_() for t in row]
    with torch.enable_grad():
        flat = target.flat_output(target.call(*leaves))
        return _vjps(flat, leaves, cots), bool(torch.isfinite(flat).all())


def _vjps(flat, leaves, cots: np.ndarray) -> np.ndarray:
    import torch

    n_in = sum(math.prod(t.shape) for t in leaves)
    out = np.zeros((len(cots), n_in))
    if not flat.requires_grad:  # no output depends on a checked input: a zero Jacobian
        return out
    for k, c in enumerate(cots):
        grads = torch.autograd.grad(flat, leaves, torch.as_tensor(c, dtype=flat.dtype), retain_graph=k < len(cots) - 1,
                                    allow_unused=True)
        out[k] = np.concatenate([(g if g is not None else torch.zeros_like(t)).detach().double().cpu().numpy().ravel()
                                 for g, t in zip(grads, leaves)])
    return out
