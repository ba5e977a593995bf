"""Tolerances of the teaching commands, in one place.

Note [Magnitude of a gradient]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
A gradient computed in floating point differs from the exact one by rounding
errors that scale with the *magnitudes* of the terms it is made of, not with
its own value: ``dloss/dw = 2*(w*x + b - y)*x`` is tiny near the optimum, but
the residual ``w*x + b - y`` is rounded at the scale of ``|w*x| + |b| + |y|``.
:func:`magnitudes` therefore builds, once per model, a companion expression
``mag(g)`` for every partial derivative ``g`` by the classical running-error
rules (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 3):

* ``mag(a + b) = mag(a) + mag(b)`` (no cancellation credited),
* ``mag(a * b) = mag(a) * mag(b)``, ``mag(a**n) = mag(a)**n`` for n = 1, 2, ...,
* ``mag(f(a)) = |f(a)| + |f'(a)| * mag(a)`` for a function (and for other
  powers): the function's own rounding plus the error of its argument
  amplified by its slope,
* ``mag(symbol) = |symbol|``, ``mag(number) = |number|``.

Each computed operation adds at most a relative ``eps`` at its magnitude, so
``|computed - exact| <= k * eps * mag(g)`` for a ``k`` about the depth of the
expression. We take ``k = 64`` (:data:`ULPS`): loose enough for torch's
float32 kernels (a few ulps each, fused or reordered) and tight enough that a
real error (an accumulated ``.grad``, a wrong rule) stands out by orders of
magnitude. The tolerance is ``ULPS * eps(dtype) * (|g| + mag(g))``.
Measured over the lesson's and the catalog's training runs (float32, 300
epochs, lr 0.01 and 0.02), ``|autograd - closed form|`` never exceeded
``0.5 * eps * mag``: a margin of over 100x, while an accumulated gradient is
off by a whole previous gradient, about ``1e6`` times the tolerance.

``EPS`` per dtype is the project's, from :mod:`gradcheck_lab.tolerance`
(Note [Tolerance model]); the scale differs: the verify command *measures* the rounding scale with
precision probes over a batch, while the teaching commands, which check one
sample at a time at every SGD step, use this analytic bound (deterministic,
no random probe, one extra lambdified evaluation per step).

``eps`` comes from the dtype the gradient was computed in (float32:
1.19e-07, float64: 2.22e-16); the other side (SymPy's closed form) is
evaluated in float64 at the same parameters, converted exactly.

Note [Explain tolerance]
~~~~~~~~~~~~~~~~~~~~~~~~
``explain`` traces the loss in float64 and compares with the closed form in
float64 and with the referee: ``|a - b| <= 1e-12 * |b| + ULPS * eps64 * mag``.
The relative part is the "tight" bound; the magnitude part only matters
where the gradient is itself the result of a cancellation.
"""

from __future__ import annotations

import numpy as np

from ..tolerance import EPS

__all__ = ["ULPS", "EXPLAIN_RTOL", "eps", "magnitudes", "magnitude_fn", "tolerance"]

#: Ulps allowed per unit of magnitude (Note [Magnitude of a gradient]).
ULPS = 64.0
#: Relative part of the explain check (Note [Explain tolerance]).
EXPLAIN_RTOL = 1e-12


def eps(dtype: str) -> float:
    """Machine epsilon of ``dtype`` (``float32`` or ``float64``)."""
    return EPS[dtype]


def _mag(e):
    import sympy as sp

    if e.is_Number or e.is_NumberSymbol:
        return abs(e)
    if e.is_Symbol:
        return sp.Abs(e)
    if e.is_Add:
        return sp.Add(*[_mag(a) for a in e.args])
    if e.is_Mul:
        return sp.Mul(*[_mag(a) for a in e.args])
    if e.is_Pow:
        base, n = e.args
        if n.is_Integer and n > 0:
            return _mag(base) ** n
        if n.is_Number:
            return sp.Abs(e) + sp.Abs(n * base ** (n - 1)) * _mag(base)
        # base**n = exp(n*log(base))
        return sp.Abs(e) * (1 + _mag(n * sp.log(base)))
    if isinstance(e, sp.Piecewise):
        return sp.Piecewise(*[(_mag(ex), cond) for ex, cond in e.args])
    if isinstance(e, (sp.sign, sp.Heaviside)):
        return sp.Abs(e)
    if isinstance(e, sp.Function) and len(e.args) == 1:
        (a,) = e.args
        z = sp.Dummy("z", real=True)
        slope = e.func(z).diff(z).subs(z, a)
        return sp.Abs(e) + sp.Abs(slope) * _mag(a)
    return sp.Abs(e)


def magnitudes(model) -> list:
    """``mag(g)`` for every partial derivative of the loss (SymPy), cached on the model."""
    if "teaching_mag" not in model._cache:
        from ..engines.symbolic import derivatives

        model._cache["teaching_mag"] = [_mag(g) for g in derivatives(model)]
    return model._cache["teaching_mag"]


def magnitude_fn(model):
    """NumPy function ``(theta..., data...) -> [mag_i]``, cached on the model."""
    if "teaching_mag_fn" not in model._cache:
        import sympy as sp

        th, da = model.symbols()
        model._cache["teaching_mag_fn"] = sp.lambdify([*th, *da], magnitudes(model), modules="numpy", cse=True)
    return model._cache["teaching_mag_fn"]


def tolerance(reference: np.ndarray, magnitude: np.ndarray, dtype: str, rtol: float = 0.0) -> np.ndarray:
    """``rtol * |ref| + ULPS * eps(dtype) * (|ref| + mag)`` (see the notes above)."""
    ref = np.abs(np.asarray(reference, dtype=float))
    mag = np.abs(np.asarray(magnitude, dtype=float))
    return rtol * ref + ULPS * eps(dtype) * (ref + mag)
