"""The tolerance model: one place for every number that decides a verdict.

Note [Tolerance model]
~~~~~~~~~~~~~~~~~~~~~~
A fixed ``atol``/``rtol`` (``torch.autograd.gradcheck``: eps 1e-6, atol
1e-5, rtol 1e-3) is too loose for float64 and too tight for float32, and it
cannot see cancellation. We derive each tolerance from three things:

1. **The dtype.** ``EPS[dtype]`` is the unit roundoff of the precision the
   engine computed in.
2. **The magnitude of the terms** at that point, ``M``. Rounding error is
   proportional to the size of the terms that were added, not to the size of
   the result: at a point where the prediction nearly equals the target the
   gradient is tiny but its rounding error is not. We *measure* ``M`` per
   point and component by evaluating the symbolic gradient twice, in float32
   and in float64: their difference divided by float32's roundoff is the
   scale at which rounding acts (the "precision probe"). ``M`` is the largest
   of that probe, ``|g|``, and the largest ``|g_j|`` of the same point (a
   component is judged against the gradient it belongs to, normwise).
3. **Underflow.** Near zero a float's spacing stops shrinking: ``TINY`` is
   the smallest subnormal, the absolute rounding step there (a hypothesis
   run found ``x = 5e-324`` failing without it).
4. **The engine's own error bar** where it has one: finite differences
   report truncation plus rounding (Note [FD error estimate]).

An engine computing in ``dtype`` passes a component when
``|g_engine - g_exact| <= SAFETY[dtype] * (EPS[dtype] * M + TINY[dtype])`` (plus
``FD_SAFETY * error`` for finite differences). Two engines agree when their
difference is within the sum of their tolerances.

``SAFETY`` and ``FD_SAFETY`` were measured with ``benchmarks/tolerance.py``
(3,000 points of each of 9 catalog configurations, three kinds each: the
sampling domain, magnitudes spread over 1e-3..max_abs, and cancellation
points; 75,000 points, the referee on every one). The largest observed
``|g - g_exact| / (EPS * M)`` was 31.7 for the float64 engines and 57.9 for
float32 autograd; finite differences reached 1.05 times a tolerance built
with ``FD_SAFETY = 8``. Hence ``SAFETY`` = 128 (float64) and 256 (float32),
a margin of 4x and 4.4x, and ``FD_SAFETY`` = 16, a margin of 2x; the
table is in docs/numerics.md. A 3x-wrong gradient is off by ``2|g|``, a
1e-4-relative error by ``1e-4 |g|``: both far outside ``128 EPS64 M``
wherever ``M`` is within 1e9 of ``|g|``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EPS",
    "TINY",
    "SAFETY",
    "FD_SAFETY",
    "OWN_SAFETY",
    "rounding_scale",
    "engine_tolerance",
    "fd_tolerance",
    "tolerance_at",
]

#: Unit roundoff (machine epsilon) per dtype.
EPS: dict[str, float] = {
    "float64": float(np.finfo(np.float64).eps),
    "float32": float(np.finfo(np.float32).eps),
}

#: Smallest subnormal per dtype: the absolute rounding step near zero.
TINY: dict[str, float] = {
    "float64": float(np.finfo(np.float64).smallest_subnormal),
    "float32": float(np.finfo(np.float32).smallest_subnormal),
}

#: Multiple of ``EPS * M + TINY`` an engine may be off by, per dtype (Note [Tolerance model]).
SAFETY: dict[str, float] = {"float64": 128.0, "float32": 256.0}

#: Multiple of the finite-difference error estimate accepted.
FD_SAFETY = 16.0

#: Multiple of an engine's own measured rounding it may be off by (Note [Own rounding], rounding.py).
OWN_SAFETY = 32.0


#: Relative size of the input perturbations of the precision probe.
PROBE_DELTA = 2.0**-26
#: Number of random perturbations (plus one float32 evaluation).
PROBE_SAMPLES = 2
PROBE_SEED = 20261126


def rounding_scale(model, batch, g64: np.ndarray) -> np.ndarray:
    """``M`` of Note [Tolerance model] for every point and component.

    The largest of: ``|g|``; the gradient's largest component at the same
    point; the float32 probe ``|g32 - g64| / EPS32`` (the rounding of the
    closed form's own operations); and the perturbation probe
    ``max_r |g(z (1 + d_r)) - g(z)| / PROBE_DELTA`` with ``d_r`` uniform in
    ``[-PROBE_DELTA, PROBE_DELTA]`` for every input and parameter ``z``
    (the condition of the gradient: how far a rounding of any input moves it).
    The second probe cannot be fooled by a float32 evaluation that happens to
    be exact, which the first alone can (small integer data).
    """
    from .engines.symbolic import compiled, evaluate
    from .model import Batch

    fn = compiled(model)
    rng = np.random.default_rng(PROBE_SEED)
    with np.errstate(all="ignore"):
        absg = np.abs(g64)
        absg_f = np.where(np.isfinite(absg), absg, 0.0)
        scale = np.maximum(absg_f, np.max(absg_f, axis=1, keepdims=True))
        probes = [np.abs(evaluate(fn, model, batch, "float32") - g64) / EPS["float32"]]
        for _ in range(PROBE_SAMPLES):
            dt = rng.uniform(-PROBE_DELTA, PROBE_DELTA, batch.theta.shape)
            dd = rng.uniform(-PROBE_DELTA, PROBE_DELTA, batch.data.shape)
            moved = Batch(batch.theta * (1 + dt), batch.data * (1 + dd))
            probes.append(np.abs(evaluate(fn, model, moved, "float64") - g64) / PROBE_DELTA)
        for probe in probes:
            # Where a probe overflows it says nothing: skip it there.
            scale = np.maximum(scale, np.where(np.isfinite(probe), probe, 0.0))
    return scale


def engine_tolerance(dtype: str, scale: np.ndarray) -> np.ndarray:
    """Tolerance of an engine that computed in ``dtype``, per component."""
    return SAFETY[dtype] * (EPS[dtype] * scale + TINY[dtype])


def fd_tolerance(error: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Tolerance of finite differences: their error bar plus float64 rounding."""
    return FD_SAFETY * error + engine_tolerance("float64", scale)


def tolerance_at(model, batch, reference: np.ndarray, dtype: str) -> np.ndarray:
    """The tolerance of an engine in ``dtype`` at every point of ``batch``.

    ``reference`` is the float64 closed form there (the symbolic engine's
    values). Used by ``train`` at every SGD step and by ``explain``.
    """
    return engine_tolerance(dtype, rounding_scale(model, batch, np.asarray(reference, dtype=float)))
