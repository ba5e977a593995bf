"""Finite-difference engine: Richardson-extrapolated central differences.

The model's loss runs on the NumPy backend (no SymPy, no torch), so this
engine is independent of the other two. All points and all steps of one
parameter are evaluated in one vectorised call: the perturbed column has
shape ``(2K, N)`` and broadcasts against the others.

Note [Step rule]
~~~~~~~~~~~~~~~~
For parameter component ``i`` at value ``t`` the steps are
``h_k = H0 * 2**-k * max(|t|, 1)`` for ``k = 0..K-1`` with ``H0 = 2**-5``
and ``K = 4``. The central differences ``D(h) = (f(t+h) - f(t-h)) / 2h``
have the error series ``c2 h^2 + c4 h^4 + ...``; Richardson's table
``R[m][k] = (4^m R[m-1][k+1] - R[m-1][k]) / (4^m - 1)`` removes one term per
level, so ``R[K-1][0]`` is accurate to ``O(h^8)``. Scaling by ``max(|t|, 1)``
keeps ``t + h`` distinct from ``t`` for large parameters.

Measured with ``benchmarks/fd_steps.py`` against the mpmath referee (1,000
random points of every catalog model): see docs/numerics.md, table "FD step
sweep". ``H0 = 2**-5, K = 4`` gives a median relative error of about 1e-13
and a worst of about 1e-9; smaller ``H0`` lets rounding (~eps |f| / h) win,
larger ``H0`` lets truncation win on the saturating models.

Note [FD error estimate]
~~~~~~~~~~~~~~~~~~~~~~~~
``error = |R[K-1][0] - R[K-2][0]| + 2 eps F / h_min``: the change made by
the last extrapolation level (truncation) plus the rounding of the smallest
step (``F`` is the largest ``|f|`` evaluated; two roundings of ``eps F``
divided by ``2h``, amplified about 2x by the Richardson weights).

Note [Kinks]
~~~~~~~~~~~~
At a kink (``relu`` or ``abs`` at 0) the derivative does not exist: the
one-sided derivatives differ. The second differences
``s_k = (f(t+h_k) - 2 f(t) + f(t-h_k)) / h_k`` shrink like ``h_k f''`` where
``f`` is smooth but stay at the jump of slope across a kink. A component is
flagged when ``s`` does not shrink between the last two steps and is far
above rounding; then any value between the one-sided derivatives (the
subgradient interval) is accepted from every engine. This is what keeps
``relu`` at 0 from failing, unlike ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import numpy as np

from ..model import Batch, Model
from ..ops import backend
from . import Gradients

__all__ = ["gradients", "H0", "K"]

H0 = 2.0**-5
K = 4
EPS = np.finfo(np.float64).eps


def _loss(model: Model, theta_cols: list, data_cols: list) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(model.loss(backend("numpy"), theta_cols.__getitem__, data_cols.__getitem__), dtype=float)


def richardson(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Extrapolate central differences ``d[k]`` at steps ``h0 * 2**-k``.

    Returns the final estimate and the previous level's best estimate.

    >>> import numpy as np
    >>> h = 0.1 * 2.0 ** -np.arange(4)
    >>> d = (np.exp(1 + h) - np.exp(1 - h)) / (2 * h)
    >>> best, prev = richardson(d)
    >>> bool(abs(best - np.e) < 1e-13)
    True
    """
    table = [d[k] for k in range(len(d))]
    prev = table[0]
    for m in range(1, len(d)):
        prev = table[0]
        f = 4.0**m
        table = [(f * table[k + 1] - table[k]) / (f - 1.0) for k in range(len(table) - 1)]
    return table[0], prev


def gradients(model: Model, batch: Batch, *, dtype: str = "float64", device: str = "cpu") -> Gradients:
    """Richardson central differences of the NumPy loss, with error estimates and kink flags."""
    n, p = batch.theta.shape
    theta_cols = [batch.theta[:, i] for i in range(p)]
    data_cols = [batch.data[:, j] for j in range(batch.data.shape[1])]
    f0 = np.broadcast_to(_loss(model, theta_cols, data_cols), (n,))
    ladder = H0 * 2.0 ** -np.arange(K)  # (K,)

    values = np.empty((n, p))
    error = np.empty((n, p))
    kink = np.zeros((n, p), dtype=bool)
    lower = np.empty((n, p))
    upper = np.empty((n, p))
    for i in range(p):
        t = theta_cols[i]
        h = ladder[:, None] * np.maximum(np.abs(t), 1.0)[None, :]  # (K, N)
        # Exact steps: (t + h) - t may differ from h by rounding; use the real one.
        tp, tm = t + h, t - h
        hp, hm = tp - t, t - tm
        cols = list(theta_cols)
        cols[i] = np.concatenate([tp, tm])
        f = np.broadcast_to(_loss(model, cols, data_cols), (2 * K, n))
        fp, fm = f[:K], f[K:]
        with np.errstate(all="ignore"):
            d = (fp - fm) / (hp + hm)
            best, prev = richardson(d)
            big = np.max(np.abs(np.concatenate([f, f0[None, :]])), axis=0)
            err = np.abs(best - prev) + 2.0 * EPS * big / hp[-1]
            # Note [Kinks]
            s = (fp - 2.0 * f0 + fm) / h
            noise = 64.0 * EPS * big / h[-1]
            jump = (np.abs(s[-1]) > noise) & (np.abs(s[-1]) > 0.75 * np.abs(s[-2]))
            right = (fp[-1] - f0) / hp[-1]
            left = (f0 - fm[-1]) / hm[-1]
        values[:, i] = np.where(jump, (right + left) / 2.0, best)
        error[:, i] = np.where(jump, np.abs(right - left) / 2.0, err)
        error[:, i] = np.where(np.isfinite(values[:, i]), error[:, i], np.inf)
        kink[:, i] = jump
        lower[:, i] = np.minimum(left, right)
        upper[:, i] = np.maximum(left, right)
    return Gradients(
        "finite_differences", values, dtype="float64", error=error, kink=kink, lower=lower, upper=upper
    )
