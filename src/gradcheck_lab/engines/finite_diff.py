"""Finite-difference engine: Richardson-extrapolated central differences.

The model's loss runs on the NumPy backend (no SymPy, no torch), so this
engine is independent of the other two. All points and all steps of one
parameter are evaluated in one vectorised call: the perturbed column has
shape ``(2K, N)`` and broadcasts against the others.

Note [Step rule]
~~~~~~~~~~~~~~~~
For parameter component ``i`` at value ``t`` the steps are
``h_k = H0 * 2**-k * max(|t|, 1)`` for ``k = 0..K-1`` with ``H0 = 2**-3``
and ``K = 4``. The central differences ``D(h) = (f(t+h) - f(t-h)) / 2h``
have the error series ``c2 h^2 + c4 h^4 + ...``; Richardson's table
``R[m][k] = (4^m R[m-1][k+1] - R[m-1][k]) / (4^m - 1)`` removes one term per
level, so the last level is accurate to ``O(h^8)``. Scaling by
``max(|t|, 1)`` keeps ``t + h`` distinct from ``t`` for large parameters.

Measured with ``benchmarks/fd_steps.py`` against the mpmath referee (1,000
random points each of quadratic, logistic, mlp tanh, mlp sigmoid and
softmax 4x5; table in docs/numerics.md): ``H0 = 2**-3, K = 4`` gives a
median relative error of 1.3e-13, with ``2**-4`` (1.1e-13) the only close
rival. Smaller ``H0`` lets rounding (``~eps F / h``) win (2**-10: 6.5e-12),
larger or shorter ladders let truncation win (``2**-2, K = 3``: 1.5e-9).

Note [FD error estimate]
~~~~~~~~~~~~~~~~~~~~~~~~
``error = |B3 - B2| + |B2 - B1| + ROUNDING eps F / h_min`` where ``B_m``
is the best estimate of extrapolation level ``m``. The first two terms are
the changes made by the last two levels (truncation; the last level alone
under-estimated the error up to 9x on the mlp, where the series has not yet
converged). The third is the rounding of the smallest step: each loss
evaluation of a few dozen operations rounds by a few ``eps F``, two of them
are divided by ``2h``, and the Richardson weights amplify the smallest step
about 2x; with the theoretical 2 instead of ``ROUNDING = 8`` the actual error
exceeded the estimate up to 4x. ``F`` is the rounding scale of the loss: the
largest ``|f|`` evaluated, or the loss's float32-vs-float64 difference
divided by float32's roundoff where that is larger (a loss that is a
difference of large terms: cross-entropy near a confident correct
prediction, ``logsumexp(z) - z_y``).

Over 5,000 points (benchmarks/fd_steps.py) the actual error stayed within
2.7 times this estimate; over 75,000 (benchmarks/tolerance.py) it reached
0.52 of the tolerance ``FD_SAFETY * error + float64 rounding`` with
``tolerance.FD_SAFETY = 16``. The estimate is honest about its order of
magnitude, not a strict bound.

Note [Kinks]
~~~~~~~~~~~~
At a kink (``relu`` or ``abs`` at 0) the derivative does not exist: the
one-sided derivatives differ. The scaled second differences
``s_k = (f(t+h_k) - 2 f(t) + f(t-h_k)) / h_k`` equal ``J + h_k f''+ O(h^3)``
where ``J`` is the jump of slope (0 where ``f`` is smooth). One Richardson
step removes the ``h f''`` term: ``J_k = 2 s_k - s_{k-1}``. A component is
flagged when ``J`` from all ``K-1`` pairs of steps agree within 10% and
stand far above rounding; a smooth function's ``J_k`` shrinks like ``h^3``
and fails the test. (Two pairs within 25% flagged one smooth tanh point of
300; three within 10% flag none of 12,000 random points of six catalog
models. Comparing ``s`` alone missed kinks whose jump is smaller than
``h f''``: 3 of 200 relu points in benchmarks/anchors.py.)
At a kink, every engine passes whose value lies between the one-sided
derivatives (each extrapolated once, like ``J``): the subgradient interval.
This is what keeps ``relu`` at 0 from failing, unlike
``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import numpy as np

from ..model import Batch, Model
from ..ops import backend
from . import Gradients

__all__ = ["gradients", "richardson", "H0", "K", "ROUNDING"]

H0 = 2.0**-3
K = 4
#: Multiple of ``eps F / h_min`` taken as the rounding error (Note [FD error estimate]).
ROUNDING = 8.0
EPS = np.finfo(np.float64).eps


def _loss(model: Model, theta_cols: list, data_cols: list) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(model.loss(backend("numpy"), theta_cols.__getitem__, data_cols.__getitem__), dtype=float)


def richardson(d: np.ndarray) -> list[np.ndarray]:
    """Extrapolate central differences ``d[k]`` at steps ``h0 * 2**-k``.

    Returns the best estimate of every level, the final one last.

    >>> import numpy as np
    >>> h = 0.1 * 2.0 ** -np.arange(4)
    >>> d = (np.exp(1 + h) - np.exp(1 - h)) / (2 * h)
    >>> bool(abs(richardson(d)[-1] - np.e) < 1e-13)
    True
    """
    table = [d[k] for k in range(len(d))]
    bests = [table[-1]]
    for m in range(1, len(d)):
        f = 4.0**m
        table = [(f * table[k + 1] - table[k]) / (f - 1.0) for k in range(len(table) - 1)]
        bests.append(table[-1])
    return bests


def gradients(model: Model, batch: Batch, *, dtype: str = "float64", device: str = "cpu") -> Gradients:
    """Richardson central differences of the NumPy loss, with error estimates and kink flags."""
    n, p = batch.theta.shape
    theta_cols = [batch.theta[:, i] for i in range(p)]
    data_cols = [batch.data[:, j] for j in range(batch.data.shape[1])]
    f0 = np.broadcast_to(_loss(model, theta_cols, data_cols), (n,))
    # Note [FD error estimate]: the loss's rounding scale, from a float32 run.
    f32 = _loss(model, [c.astype(np.float32) for c in theta_cols], [c.astype(np.float32) for c in data_cols])
    with np.errstate(all="ignore"):
        fscale = np.abs(f32.astype(float) - f0) / np.finfo(np.float32).eps
    fscale = np.maximum(np.abs(f0), np.where(np.isfinite(fscale), fscale, 0.0))
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
            levels = richardson(d)
            best = levels[-1]
            big = np.maximum(np.max(np.abs(f), axis=0), fscale)
            trunc = sum(np.abs(a - b) for a, b in zip(levels[-3:], levels[-2:]))
            err = trunc + ROUNDING * EPS * big / hp[-1]
            # Note [Kinks]
            s = (fp - 2.0 * f0 + fm) / h
            j = 2.0 * s[1:] - s[:-1]  # (K-1, N): J from each pair of steps
            noise = 64.0 * EPS * big / h[-1]
            jump = (np.abs(j[-1]) > noise) & np.all(np.abs(j - j[-1]) <= 0.1 * np.abs(j[-1]), axis=0)
            right = 2.0 * (fp[-1] - f0) / hp[-1] - (fp[-2] - f0) / hp[-2]
            left = 2.0 * (f0 - fm[-1]) / hm[-1] - (f0 - fm[-2]) / hm[-2]
        values[:, i] = np.where(jump, (right + left) / 2.0, best)
        error[:, i] = np.where(jump, np.abs(right - left) / 2.0, err)
        error[:, i] = np.where(np.isfinite(values[:, i]), error[:, i], np.inf)
        kink[:, i] = jump
        lower[:, i] = np.minimum(left, right)
        upper[:, i] = np.maximum(left, right)
    return Gradients(
        "finite_differences", values, dtype="float64", error=error, kink=kink, lower=lower, upper=upper
    )
