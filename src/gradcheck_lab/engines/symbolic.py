"""Symbolic engine: SymPy derives the closed-form partial derivatives.

The loss expression comes from the model's own function run on the SymPy
backend; ``sympy.diff`` gives each partial derivative; the list is compiled
once per model with ``lambdify(..., cse=True)`` (common-subexpression
elimination) into a NumPy function evaluated on whole arrays of points.
``lambdify`` generates Python source from SymPy's expression tree and runs
``exec`` on it: the input is our own derived expression, never a user string
(user expressions reach SymPy only as trees built by :mod:`gradcheck_lab.expr`).
"""

from __future__ import annotations

import numpy as np

from ..model import Batch, Model
from ..ops import LAMBDIFY_NUMPY  # erf: Note [erf in NumPy]
from . import Gradients

__all__ = ["gradients", "derivatives", "derivative_program", "simplified", "hessian", "compiled"]

#: Largest derivative (in SymPy operations) that ``simplified`` hands to ``sympy.simplify``.
SIMPLIFY_MAX_OPS = 40
#: ... and in at most this many symbols.
SIMPLIFY_MAX_SYMBOLS = 5


def derivatives(model: Model) -> list:
    """d loss / d theta_i for every flat parameter, unsimplified, cached."""
    if "grads" not in model._cache:
        import sympy as sp

        loss = model.loss_expr()
        th, _ = model.symbols()
        model._cache["grads"] = [sp.diff(loss, s) for s in th]
    return model._cache["grads"]


def derivative_program(model: Model) -> tuple[list, list]:
    """The partial derivatives as a straight-line program, cached.

    ``(assignments, outputs)``: ``assignments`` is a list of ``(symbol,
    expression)`` evaluated in order, ``outputs`` one expression per flat
    parameter in terms of the parameters, the data and those symbols
    (``sympy.cse``'s form). Every compiled evaluator (NumPy, the referee)
    reads this one form, so shared subexpressions are computed once.
    """
    if "program" not in model._cache:
        import sympy as sp

        assignments, outputs = sp.cse(derivatives(model), symbols=sp.numbered_symbols("_c"))
        model._cache["program"] = (list(assignments), list(outputs))
    return model._cache["program"]


def simplified(model: Model, indices=None, max_ops: int = SIMPLIFY_MAX_OPS) -> list:
    """The partial derivatives tidied for reading.

    ``sympy.simplify`` runs only on derivatives of at most ``max_ops``
    operations in at most ``SIMPLIFY_MAX_SYMBOLS`` symbols: on larger ones
    (the mlp's, softmax's) its polynomial GCDs and factorisations ran for
    minutes. The others get ``factor_terms``, which is structural and fast.
    ``indices`` limits the work to some parameters.
    """
    import sympy as sp

    cache = model._cache.setdefault("simplified", {})
    grads = derivatives(model)
    out = []
    for i in range(len(grads)) if indices is None else indices:
        if i not in cache:
            g = grads[i]
            small = sp.count_ops(g) <= max_ops and len(g.free_symbols) <= SIMPLIFY_MAX_SYMBOLS
            cache[i] = sp.simplify(g) if small else sp.factor_terms(g)
        out.append(cache[i])
    return out


def hessian(model: Model):
    """The matrix of second derivatives of the loss (SymPy Matrix), cached."""
    if "hessian" not in model._cache:
        import sympy as sp

        th, _ = model.symbols()
        grads = derivatives(model)
        model._cache["hessian"] = sp.Matrix([[sp.diff(g, s) for s in th] for g in grads])
    return model._cache["hessian"]


def compiled(model: Model):
    """The NumPy function ``(theta..., data...) -> [grad_i]`` with CSE, cached."""
    if "grad_fn" not in model._cache:
        import sympy as sp

        th, da = model.symbols()
        model._cache["grad_fn"] = sp.lambdify([*th, *da], derivatives(model), modules=[LAMBDIFY_NUMPY, "numpy"], cse=True)
    return model._cache["grad_fn"]


def evaluate(fn, model: Model, batch: Batch, dtype: str = "float64") -> np.ndarray:
    """Evaluate a compiled list-of-expressions function on a batch, shape (N, len)."""
    dt = np.dtype(dtype)
    cols = [batch.theta[:, i].astype(dt) for i in range(batch.theta.shape[1])]
    cols += [batch.data[:, j].astype(dt) for j in range(batch.data.shape[1])]
    n = len(batch)
    with np.errstate(all="ignore"):
        out = fn(*cols)
    return np.stack([np.broadcast_to(np.asarray(o, dtype=float), (n,)) for o in out], axis=1)


def gradients(model: Model, batch: Batch, *, dtype: str = "float64", device: str = "cpu") -> Gradients:
    """The closed-form gradient evaluated in ``dtype`` on every point of ``batch``."""
    return Gradients("symbolic", evaluate(compiled(model), model, batch, dtype), dtype=dtype)
