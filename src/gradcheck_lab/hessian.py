"""Second order: the Hessian of a model's loss, checked like a gradient.

Note [Hessian as a gradient]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~
For a model with loss ``L(theta)`` and a direction ``u`` (one value per
flat parameter), :func:`hvp_model` builds a second model whose loss is the
directional derivative ``L_u = sum_i u_i dL/dtheta_i``. Its gradient is the
Hessian-vector product ``H u``; with ``u = e_j`` it is column ``j`` of the
Hessian. Each engine then checks second derivatives with its own means:

* SymPy differentiates ``L_u``, itself built from SymPy's first derivatives
  (the entries of :func:`gradcheck_lab.engines.symbolic.hessian`); the
  mpmath referee evaluates that closed form;
* torch computes ``dL/dtheta`` with ``autograd.grad(..., create_graph=True)``
  on its own graph of the model and back-propagates ``L_u`` again (double
  backward);
* finite differences differentiate ``L_u`` numerically with ``dL/dtheta``
  evaluated from the compiled closed form: finite differences of the exact
  gradient.

So ``verify(model, order=2)`` reuses the whole verdict machinery (tolerances,
kinks, referee) for second derivatives, and ``gradgradcheck`` reuses it for
the double backward of user code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from .errors import UsageError
from .model import Model, Var

__all__ = ["hvp_model", "hessian_points", "DIRECTION"]

#: Name of the direction input ``u`` of the derived model.
DIRECTION = "direction"


def _flatten(value: Any) -> list:
    if isinstance(value, list):
        return [e for v in value for e in _flatten(v)]
    return [value]


def _first_derivatives(base: Model, ops, p, v) -> list:
    """``dL/dtheta_i`` of ``base`` on backend ``ops`` (Note [Hessian as a gradient])."""
    theta = [e for var in base.params for e in _flatten(getattr(p, var.name))]
    data = [e for var in base.data_vars for e in _flatten(getattr(v, var.name))]
    name = getattr(ops, "name", "")
    if name == "sympy":
        from .engines.symbolic import derivatives

        # The derived model's symbols have the base model's names and assumptions: SymPy's
        # symbols are equal by name, so the base derivatives are already in the right symbols.
        return list(derivatives(base))
    if name == "torch":
        import torch

        vb = SimpleNamespace(**{var.name: getattr(v, var.name) for var in base.data_vars})
        loss = base.loss_fn(ops, p, vb)
        grads = torch.autograd.grad(loss.sum(), theta, create_graph=True, allow_unused=True)
        return [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, theta)]
    if name in ("numpy", "float"):
        from .engines.symbolic import compiled

        with np.errstate(all="ignore"):
            return list(compiled(base)(*theta, *data))
    raise UsageError(f"Expected a sympy, torch, numpy or float backend for second derivatives but got {name!r}.")


def hvp_model(base: Model) -> Model:
    """The model whose loss is ``sum_i u_i dL/dtheta_i`` (Note [Hessian as a gradient]), cached on ``base``."""
    if "hvp_model" in base._cache:
        return base._cache["hvp_model"]
    names = {v.name for v in (*base.params, *base.data_vars)}
    direction = DIRECTION
    while direction in names:
        direction += "_"
    u_var = Var(direction, shape=(base.n_params,), domain=(-1.0, 1.0), max_abs=1.0)

    def loss_fn(ops, p, v):
        grads = _first_derivatives(base, ops, p, v)
        u = _flatten(getattr(v, direction))
        terms = [ui * gi for ui, gi in zip(u, grads)]
        if getattr(ops, "name", "") == "sympy":
            import sympy as sp

            return sp.Add(*terms)
        return sum(terms[1:], terms[0])

    derived = Model(
        name=f"{base.name} (Hessian)",
        params=base.params,
        inputs=(*base.inputs, u_var),
        target=base.target,
        predict=base.predict,
        loss_fn=loss_fn,
        formula=f"d/d{direction} of the gradient of: {base.formula}" if base.formula else "Hessian-vector product",
        loss_name=f"{base.loss_name} (Hessian-vector product)",
        description=base.description,
        options=dict(base.options),
    )
    derived._validate()
    base._cache["hvp_model"] = derived
    return derived


def _one_hot(p: int, j: int) -> list[float]:
    e = [0.0] * p
    e[j] = 1.0
    return e


def hessian_points(base: Model, points: Sequence[Mapping[str, Any]], direction: str) -> list[dict]:
    """Each base point with ``u = e_j`` for every parameter ``j``: the full Hessian there."""
    out = []
    for pt in points:
        for j in range(base.n_params):
            out.append({**pt, direction: _one_hot(base.n_params, j)})
    return out
