"""Candidates: the user's own gradient code, judged like an engine.

Three kinds are accepted by ``verify(..., candidate=...)``:

* **a gradient function** ``grad(params, point) -> gradients`` -- hand-written
  back-propagation. ``params`` maps each parameter name to a float or a
  NumPy array of its shape; ``point`` maps every input and the target to its
  value (a class target as its integer label). It returns a mapping
  ``name -> gradient`` (each of the parameter's shape), or a flat sequence
  in :attr:`Model.param_labels` order. It is called once per point.
* **a torch loss** wrapped by :func:`torch_loss`: ``loss(p, v) -> scalar
  tensor`` with ``p``/``v`` namespaces of tensors (``p.w1``, ``v.x``) as in
  a model function; torch autograd is put under test, including any custom
  ``torch.autograd.Function`` it calls.
* **a** ``torch.nn.Module`` whose ``forward(**point)`` returns the loss of one
  sample; its parameters are matched to the model's by name and shape and
  set to each point's values before the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Mapping

import numpy as np

from .engines import Gradients
from .errors import UsageError
from .model import Batch, Model

__all__ = ["torch_loss", "as_candidate", "Candidate"]


@dataclass
class Candidate:
    """A user gradient and how to compute it for a batch."""

    kind: str  # "function", "torch_loss" or "torch_module"
    target: Any

    def gradients(self, model: Model, batch: Batch, *, dtype: str = "float64", device: str = "cpu") -> Gradients:
        fn = {"function": _from_function, "torch_loss": _from_torch_loss, "torch_module": _from_module}[self.kind]
        values, used = fn(self.target, model, batch, dtype, device)
        return Gradients("candidate", values, dtype=used)


def torch_loss(fn: Callable) -> Candidate:
    """Mark ``fn(p, v) -> loss`` as a torch loss whose autograd is under test.

    >>> import torch
    >>> from gradcheck_lab import get_model, verify
    >>> from gradcheck_lab.candidates import torch_loss
    >>> cand = torch_loss(lambda p, v: (p.w * v.x - v.y) ** 2)
    >>> verify("linear", candidate=cand, random=20).ok
    True
    """
    if not callable(fn):
        raise UsageError(f"Expected a function (p, v) -> loss tensor but got {fn!r}.")
    return Candidate("torch_loss", fn)


def as_candidate(obj: Any) -> Candidate:
    """A :class:`Candidate` from a gradient function, a torch loss or an ``nn.Module``."""
    if isinstance(obj, Candidate):
        return obj
    if type(obj).__module__.startswith("torch") or _is_module(obj):
        return Candidate("torch_module", obj)
    if callable(obj):
        return Candidate("function", obj)
    raise UsageError(
        f"Expected a candidate gradient function, torch_loss(...) or torch.nn.Module but got {obj!r} "
        f"(type={type(obj).__name__})."
    )


def _is_module(obj) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, torch.nn.Module)


def _user_params(model: Model, theta_row: np.ndarray) -> dict[str, Any]:
    out = {}
    for var, sl in zip(model.params, model.param_offsets().values()):
        vals = theta_row[sl]
        out[var.name] = float(vals[0]) if not var.shape else vals.reshape(var.shape).copy()
    return out


def _user_point(model: Model, data_row: np.ndarray) -> dict[str, Any]:
    out, off = {}, 0
    for var in model.data_vars:
        vals = data_row[off : off + var.size]
        off += var.size
        if var.kind == "class":
            out[var.name] = int(np.argmax(vals))
        else:
            out[var.name] = float(vals[0]) if not var.shape else vals.reshape(var.shape).copy()
    return out


def _flatten(model: Model, result: Any, where: str) -> np.ndarray:
    p = model.n_params
    if isinstance(result, Mapping):
        parts = []
        for var in model.params:
            if var.name not in result:
                raise UsageError(
                    f"Expected the candidate to return a gradient for every parameter "
                    f"({', '.join(v.name for v in model.params)}) but {var.name!r} is missing {where}."
                )
            g = np.asarray(_to_numpy(result[var.name]), dtype=float)
            if g.size != var.size:
                raise UsageError(
                    f"Expected the candidate's gradient for {var.name} to have shape {var.shape} "
                    f"but got shape {g.shape} {where}."
                )
            parts.append(g.ravel())
        return np.concatenate(parts)
    flat = np.asarray(_to_numpy(result), dtype=float).ravel()
    if flat.size != p:
        raise UsageError(
            f"Expected the candidate to return {p} gradient values ({', '.join(model.param_labels[:6])}"
            f"{', ...' if p > 6 else ''}) but got {flat.size} {where}."
        )
    return flat


def _to_numpy(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().double().numpy()
    if isinstance(x, (list, tuple)):
        return [_to_numpy(v) for v in x]
    return x


def _from_function(fn, model: Model, batch: Batch, dtype: str, device: str):
    out = np.empty(batch.theta.shape)
    used = "float64"
    for n in range(len(batch)):
        result = fn(_user_params(model, batch.theta[n]), _user_point(model, batch.data[n]))
        if isinstance(result, np.ndarray) and result.dtype == np.float32:
            used = "float32"
        out[n] = _flatten(model, result, f"at point {n}")
    return out, used


def _namespaces(model: Model, theta_row, data_row, dtype, device):
    import torch

    dt = getattr(torch, dtype)
    leaves = {}
    for var, sl in zip(model.params, model.param_offsets().values()):
        vals = torch.tensor(theta_row[sl], dtype=dt, device=device)
        leaves[var.name] = (vals[0] if not var.shape else vals.reshape(var.shape)).clone().requires_grad_(True)
    point = {}
    off = 0
    for var in model.data_vars:
        vals = torch.tensor(data_row[off : off + var.size], dtype=dt, device=device)
        off += var.size
        point[var.name] = vals[0] if not var.shape else vals.reshape(var.shape)
    return leaves, point


def _backward(loss, where: str):
    import torch

    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise UsageError(f"Expected the candidate to return a scalar loss tensor but got {loss!r} {where}.")
    loss.reshape(()).backward()


def _from_torch_loss(fn, model: Model, batch: Batch, dtype: str, device: str):
    out = np.empty(batch.theta.shape)
    for n in range(len(batch)):
        leaves, point = _namespaces(model, batch.theta[n], batch.data[n], dtype, device)
        _backward(fn(SimpleNamespace(**leaves), SimpleNamespace(**point)), f"at point {n}")
        grads = {k: (t.grad if t.grad is not None else t.detach() * 0) for k, t in leaves.items()}
        out[n] = _flatten(model, grads, f"at point {n}")
    return out, dtype


def _from_module(module, model: Model, batch: Batch, dtype: str, device: str):
    import torch

    named = dict(module.named_parameters())
    want = {v.name: v for v in model.params}
    if set(named) != set(want):
        raise UsageError(
            f"Expected the module's parameters to be named like the model's ({', '.join(want)}) "
            f"but got ({', '.join(named) or 'none'}); rename them or wrap the module with torch_loss."
        )
    dt = getattr(torch, dtype)
    module.to(device=device, dtype=dt)
    offsets = model.param_offsets()
    out = np.empty(batch.theta.shape)
    for n in range(len(batch)):
        with torch.no_grad():
            for name, par in named.items():
                par.copy_(torch.tensor(batch.theta[n, offsets[name]], dtype=dt).reshape(par.shape))
        module.zero_grad(set_to_none=True)
        _, point = _namespaces(model, batch.theta[n], batch.data[n], dtype, device)
        _backward(module(**point), f"at point {n}")
        grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in named.items()}
        out[n] = _flatten(model, grads, f"at point {n}")
    return out, dtype
