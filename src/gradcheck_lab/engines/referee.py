"""The referee: the closed form evaluated in arbitrary precision.

SymPy's partial derivatives are compiled for mpmath and evaluated at
:data:`DPS` significant digits from the exact binary values of the inputs
(a float64 converts to an ``mpf`` without rounding). The result, rounded
once to float64, is the exact gradient for every practical purpose; it
decides which engine is off when the engines disagree.
"""

from __future__ import annotations

import numpy as np

from ..model import Batch, Model
from .symbolic import derivatives

__all__ = ["gradients", "DPS"]

#: Significant decimal digits used by the referee.
DPS = 40


def _compiled(model: Model):
    if "mp_fn" not in model._cache:
        import sympy as sp

        th, da = model.symbols()
        model._cache["mp_fn"] = sp.lambdify([*th, *da], derivatives(model), modules="mpmath")
    return model._cache["mp_fn"]


def gradients(model: Model, batch: Batch, dps: int = DPS) -> np.ndarray:
    """Exact gradients (N, P) as float64.

    NaN where the closed form is undefined (or not real); +-inf where the
    exact value exists but lies beyond float64's range.
    """
    import mpmath

    fn = _compiled(model)
    out = np.full(batch.theta.shape, np.nan)
    with mpmath.workdps(dps):
        for r in range(len(batch)):
            args = [mpmath.mpf(float(a)) for a in batch.theta[r]] + [mpmath.mpf(float(a)) for a in batch.data[r]]
            try:
                vals = fn(*args)
            except (ZeroDivisionError, ValueError, OverflowError, TypeError):
                continue
            for i, val in enumerate(vals):
                try:
                    if mpmath.im(val) != 0 or mpmath.isnan(val):
                        continue
                    out[r, i] = float(mpmath.re(val))  # beyond float64: +-inf
                except (TypeError, ValueError, OverflowError):
                    out[r, i] = np.nan
    return out
