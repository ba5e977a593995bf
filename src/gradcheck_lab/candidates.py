"""Candidates: the user's own gradient code, judged like an engine.

Three kinds are accepted by ``verify(..., candidate=...)``:

* **a gradient function** ``grad(params, point) -> gradients`` -- hand-written
  back-propagation. ``params`` maps each parameter name to a float or a
  NumPy array of its shape; ``point`` maps every input and the target to its
  value (a class target as its integer label). It returns a mapping
  ``name -> gradient`` (each of the parameter's shape), or a flat sequence
  in :attr:`Model.param_labels` order, or a sequence of one gradient per
  parameter in declaration order (``dW1, db1, dW2, db2``). A gradient has
  its parameter's shape, is flat in row-major order, or differs only by axes
  of length 1; another shape of the same size (a transposed matrix) is
  refused. Values may be floats, NumPy arrays or torch tensors; float32
  values are judged with float32's tolerance. It is called once per point;
  an exception it raises propagates unchanged, and a NaN it returns is a
  mismatch with the candidate at fault.
* **a torch loss** wrapped by :func:`torch_loss`: ``loss(p, v) -> scalar
  tensor`` with ``p``/``v`` namespaces of tensors (``p.w1``, ``v.x``) as in
  a model function (vector parameters as tensors of their shape, a class
  target one-hot); torch autograd is put under test, including any custom
  ``torch.autograd.Function`` it calls.
* **a** ``torch.nn.Module`` whose ``forward(**point)`` returns the loss of one
  sample; its parameters are matched to the model's by name and shape (a
  scalar parameter may also have shape ``(1,)``). It is called through
  ``torch.func.functional_call`` with each point's values in place of its
  parameters (and its floating buffers in the check's dtype): the module
  itself keeps its values, dtype and device.

Internally, ``Candidate("torch_batch", fn)`` wraps torch code that computes
a whole batch at once, ``fn(model, batch, dtype, device) -> (values, None)``
(the drop-in :func:`~gradcheck_lab.gradcheck` uses it: one forward per
point, one backward per cotangent). Like the other torch kinds, its own
rounding is measured in Monte Carlo arithmetic on every aten operation.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from .engines import Gradients
from .errors import UsageError
from .model import Batch, Model

__all__ = ["torch_loss", "as_candidate", "Candidate"]


@dataclass
class Candidate:
    """A user gradient and how to compute it for a batch."""

    kind: str  # "function", "torch_loss", "torch_module" or "torch_batch"
    target: Any

    def gradients(self, model: Model, batch: Batch, *, dtype: str = "float64", device: str = "cpu") -> Gradients:
        if self.kind == "torch_batch":  # torch code computing a whole batch itself (the drop-in gradcheck)
            values, f32 = self.target(model, batch, dtype, device)
        else:
            fn = {"function": _from_function, "torch_loss": _from_torch_loss, "torch_module": _from_module}[self.kind]
            values, f32 = fn(self.target, model, batch, dtype, device)
        if f32 is None:
            return Gradients("candidate", values, dtype=dtype if self.kind != "function" else "float64")
        nominal = "float32" if f32.all() else "float64"
        return Gradients("candidate", values, dtype=nominal, f32=f32 if f32.any() and not f32.all() else None)

    def rounding(
        self, model: Model, batch: Batch, *, dtype: str = "float64", device: str = "cpu", seed: int | None = 0
    ):
        """The candidate re-run to measure its own rounding (Note [Own rounding] in rounding.py).

        torch code runs in Monte Carlo arithmetic (every aten operation of its
        forward and backward perturbed); a gradient function, which we cannot
        instrument, is called at inputs moved by the same relative amount.
        """
        from .rounding import VIRTUAL, noise, torch_mca

        if seed is None:  # a plain second call: does the candidate give the same values again?
            return self.gradients(model, batch, dtype=dtype, device=device).values
        if self.kind == "function":
            rng = np.random.default_rng(seed)
            delta = 2.0 ** -VIRTUAL["float32" if dtype == "float32" else "float64"]
            moved = Batch(
                batch.theta * (1 + noise(rng, delta, batch.theta.shape)),
                batch.data * (1 + noise(rng, delta, batch.data.shape) * _real_mask(model)),
            )
            values, _ = _from_function(self.target, model, moved, dtype, device, mca_seed=seed)
            return values
        with torch_mca(dtype, seed, 1) as mode:
            values = []
            for n in range(len(batch)):  # one point per call: an underflow taints that point only
                mode.tainted[:] = False
                v = self.gradients(model, batch.take(slice(n, n + 1)), dtype=dtype, device=device).values
                values.append(np.where(mode.tainted[0], np.nan, v))
        return np.concatenate(values)


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
    if _is_module(obj):
        return Candidate("torch_module", obj)
    if callable(obj):
        return Candidate("function", obj)
    raise UsageError(
        f"Expected a candidate gradient function, torch_loss(...) or torch.nn.Module but got {obj!r} "
        f"(type={type(obj).__name__})."
    )


def _real_mask(model: Model) -> np.ndarray:
    """1 for real data components, 0 for binary and class ones (which are never perturbed)."""
    return np.concatenate([np.full(v.size, 1.0 if v.kind == "real" else 0.0) for v in model.data_vars])


def _is_module(obj) -> bool:
    torch = sys.modules.get("torch")  # not imported yet: obj cannot be a torch module
    return torch is not None and isinstance(obj, torch.nn.Module)


def _user_params(model: Model, theta_row: np.ndarray, cast=None) -> dict[str, Any]:
    out = {}
    for var, sl in zip(model.params, model.param_offsets().values()):
        vals = theta_row[sl] if cast is None else theta_row[sl].astype(cast)
        if not var.shape:
            out[var.name] = float(vals[0]) if cast is None else vals[0]
        else:
            out[var.name] = vals.reshape(var.shape).copy()
    return out


def _user_point(model: Model, data_row: np.ndarray, cast=None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    off = 0
    for var in model.data_vars:
        vals = data_row[off : off + var.size]
        off += var.size
        if var.kind == "class":
            out[var.name] = int(np.argmax(vals))
        else:
            vals = vals if cast is None else vals.astype(cast)
            if not var.shape:
                out[var.name] = float(vals[0]) if cast is None else vals[0]
            else:
                out[var.name] = vals.reshape(var.shape).copy()
    return out


class _At:
    """Where in a batch, for messages: ``at point n (x=..., y=..., params=...)``.

    Formatted only when a message is built, so the happy path pays nothing.
    """

    def __init__(self, model: Model, batch: Batch, n: int):
        self.model, self.batch, self.n = model, batch, n

    def __str__(self) -> str:
        text = ", ".join(f"{k}={v!r}" for k, v in self.model.describe_point(self.batch, self.n).items())
        return f"at point {self.n} ({text if len(text) <= 160 else text[:157] + '...'})"


def _precision(x: Any, what: str, where: Any) -> str:
    """The tolerance a value is judged with: ``"float32"`` for float32 (NumPy or torch), else ``"float64"``."""
    name = str(getattr(x, "dtype", "float64")).replace("torch.", "")
    if name in ("float16", "bfloat16"):
        raise UsageError(
            f"Expected float32 or float64 gradient values but got {name} for {what} {where}; "
            "half precision has no tolerance model here: convert to float32."
        )
    return "float32" if name == "float32" else "float64"


def _values(x: Any, what: str, where: Any) -> tuple[np.ndarray, str]:
    """A gradient value (float, NumPy array, torch tensor, nested list) as float64 and its precision."""
    if x is None:
        raise UsageError(f"Expected a gradient for {what} but got None {where}; is a return statement missing?")
    if isinstance(x, (list, tuple)) and not all(type(v) in (float, int) for v in x):
        parts = [_values(v, what, where) for v in x]
        prec = "float32" if any(p == "float32" for _, p in parts) else "float64"
        try:
            return np.array([a for a, _ in parts], dtype=float), prec
        except ValueError:
            shapes = sorted({a.shape for a, _ in parts})
            raise UsageError(
                f"Expected {what} as one array of numbers but got a list of pieces of shapes {shapes} {where}; "
                "return a mapping {name: gradient} or one gradient per parameter."
            ) from None
    prec = _precision(x, what, where)
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().double().numpy()
    try:
        return np.array(x, dtype=float), prec  # a plain copy (not an MCAArray view)
    except (TypeError, ValueError):
        raise UsageError(
            f"Expected numbers for {what} but got {x!r:.80} (type={type(x).__name__}) {where}."
        ) from None


def _shape_fits(got: tuple[int, ...], var) -> bool:
    """A gradient's shape is the parameter's, flat row-major, or differs only in axes of length 1.

    Another shape of the same size (a transposed matrix) would silently
    scramble the components, so it is refused.
    """
    if got == var.shape:
        return True
    if len(got) <= 1:
        return math.prod(got) == var.size
    return tuple(s for s in got if s != 1) == tuple(s for s in var.shape if s != 1)


def _flatten(model: Model, result: Any, where: Any) -> tuple[np.ndarray, np.ndarray]:
    """The candidate's result as ``P`` flat float64 values (``param_labels`` order), and which were float32."""
    names = [v.name for v in model.params]
    if result is None:
        raise UsageError(f"Expected the candidate to return gradients but got None {where}; is a return statement missing?")
    if isinstance(result, (list, tuple)) and len(result) == len(names):
        result = dict(zip(names, result))  # one gradient per parameter (all scalars: the same as flat)
    if isinstance(result, Mapping):
        unknown = [k for k in result if k not in names]
        if unknown:
            raise UsageError(
                f"Expected gradients for the parameters of model {model.name!r} ({', '.join(names)}) "
                f"but got {unknown[0]!r} {where}."
            )
        parts, precs = [], []
        for var in model.params:
            if var.name not in result:
                raise UsageError(
                    f"Expected the candidate to return a gradient for every parameter "
                    f"({', '.join(names)}) but {var.name!r} is missing {where}."
                )
            g, prec = _values(result[var.name], var.name, where)
            if g.size != var.size or not _shape_fits(g.shape, var):
                hint = " (transposed?)" if g.size == var.size and len(g.shape) > 1 else ""
                raise UsageError(
                    f"Expected the candidate's gradient for {var.name} to have shape {var.shape} "
                    f"but got shape {g.shape}{hint} {where}."
                )
            parts.append(g.ravel())
            precs.append(np.full(g.size, prec == "float32"))
        return np.concatenate(parts), np.concatenate(precs)
    p = model.n_params
    flat, prec = _values(result, "the gradient", where)
    flat = flat.ravel()
    if flat.size != p:
        raise UsageError(
            f"Expected the candidate to return {p} gradient values ({', '.join(model.param_labels[:6])}"
            f"{', ...' if p > 6 else ''}), a mapping {{name: gradient}} or one gradient per parameter "
            f"but got {flat.size} values {where}."
        )
    return flat, np.full(p, prec == "float32")


def _from_function(fn, model: Model, batch: Batch, dtype: str, device: str, mca_seed: int | None = None):
    """Values and, per point and component, whether they came in float32.

    With ``dtype="float32"`` the function receives float32 values (NumPy
    float32 scalars and arrays), as the code under test would in float32.
    With ``mca_seed`` it receives them as :class:`~gradcheck_lab.rounding.MCAArray`
    (0-d for scalars): every NumPy operation it performs on them is perturbed
    (Note [Own rounding]); a point where one under- or overflows gives NaN.
    """
    out = np.empty(batch.theta.shape)
    f32 = np.zeros(batch.theta.shape, dtype=bool)
    cast = np.float32 if dtype == "float32" else None
    for n in range(len(batch)):
        params = _user_params(model, batch.theta[n], cast)
        point = _user_point(model, batch.data[n], cast)
        ctx = None
        if mca_seed is not None:
            from .rounding import context, perturbed_numpy

            mca_prec = "float32" if dtype == "float32" else "float64"
            ctx = context(1, mca_seed * 7919 + n, mca_prec)
            params = {k: perturbed_numpy([np.asarray(v)], ctx.rng, mca_prec, ctx)[0] for k, v in params.items()}
            point = {k: v if isinstance(v, int) else perturbed_numpy([np.asarray(v)], ctx.rng, mca_prec, ctx)[0]
                     for k, v in point.items()}
        # A bug in fn raises here, unchanged: the traceback is the user's to read.
        result = fn(params, point)
        out[n], prec = _flatten(model, result, _At(model, batch, n))
        # Given float32 inputs, its values carry float32 rounding whatever dtype it returns.
        f32[n] = prec | (cast is not None)
        if ctx is not None and ctx.tainted.any():
            out[n] = np.nan
    return out, f32


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


def _backward(loss, where: Any):
    import torch

    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise UsageError(f"Expected the candidate to return a scalar loss tensor but got {loss!r:.80} {where}.")
    loss.reshape(()).backward()


def _from_torch_loss(fn, model: Model, batch: Batch, dtype: str, device: str):
    out = np.empty(batch.theta.shape)
    for n in range(len(batch)):
        at = _At(model, batch, n)
        leaves, point = _namespaces(model, batch.theta[n], batch.data[n], dtype, device)
        _backward(fn(SimpleNamespace(**leaves), SimpleNamespace(**point)), at)
        grads = {k: (t.grad if t.grad is not None else t.detach() * 0) for k, t in leaves.items()}
        out[n], _ = _flatten(model, grads, at)
    return out, None


def _module_shapes(module, model: Model) -> dict[str, tuple[int, ...]]:
    """The module's parameter shapes, checked against the model's by name and shape."""
    named = {k: tuple(p.shape) for k, p in module.named_parameters()}
    want = {v.name: v for v in model.params}
    if set(named) != set(want):
        raise UsageError(
            f"Expected the module's parameters to be named like the model's ({', '.join(want)}) "
            f"but got ({', '.join(named) or 'none'}); rename them or wrap the module with torch_loss."
        )
    # A scalar parameter may be a tensor of shape (1,); any other difference is refused,
    # even of the same size: a transposed matrix would silently scramble the components.
    bad = [
        f"{k}: expected shape {v.shape}, got {named[k]}"
        for k, v in want.items()
        if named[k] != v.shape and not (v.shape == () and named[k] == (1,))
    ]
    if bad:
        raise UsageError(
            f"Expected the module's parameters to have the model's shapes but {'; '.join(bad)}; "
            f"model {model.name!r} has {', '.join(f'{v.name} {v.shape}' for v in model.params)}."
        )
    return named


def _from_module(module, model: Model, batch: Batch, dtype: str, device: str):
    import torch
    from torch.func import functional_call

    shapes = _module_shapes(module, model)
    dt = getattr(torch, dtype)
    # The module is called with our tensors in place of its parameters and
    # buffers (functional_call): it keeps its own values, dtype and device.
    buffers = {
        k: b.to(device=device, dtype=dt) if b.is_floating_point() else b.to(device=device)
        for k, b in module.named_buffers()
    }
    offsets = model.param_offsets()
    out = np.empty(batch.theta.shape)
    for n in range(len(batch)):
        at = _At(model, batch, n)
        params = {
            k: torch.tensor(batch.theta[n, offsets[k]], dtype=dt, device=device).reshape(shape).requires_grad_(True)
            for k, shape in shapes.items()
        }
        _, point = _namespaces(model, batch.theta[n], batch.data[n], dtype, device)
        _backward(functional_call(module, {**buffers, **params}, args=(), kwargs=point), at)
        grads = {k: (t.grad if t.grad is not None else torch.zeros_like(t)) for k, t in params.items()}
        out[n], _ = _flatten(model, grads, at)
    return out, None
