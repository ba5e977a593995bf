"""Symbolic truth for any torch forward: trace it to aten ops, interpret the graph on every backend.

:func:`trace` runs the user's function once under ``make_fx``
(:mod:`torch.fx.experimental.proxy_tensor`) at the given inputs and keeps
the aten-level graph. A custom ``torch.autograd.Function`` is traced
*through*: ``make_fx`` records the ops its ``forward`` dispatches, and its
``backward`` never enters the graph (the backward is what is under test).
:func:`model_of` turns the graph into an ordinary :class:`~gradcheck_lab.Model`
whose ``predict`` *interprets* the graph against the ``ops`` namespace
(Note [Object arrays]), so the SymPy engine, the mpmath referee, finite
differences with their kink detection and torch autograd all read the
user's forward, written once.

Note [Object arrays]
~~~~~~~~~~~~~~~~~~~~
Every tensor of the graph is held as a NumPy array of ``dtype=object``
whose elements are one backend's scalars: SymPy expressions, torch columns
of points (autograd engine), NumPy columns (finite differences), Python
floats, or the teaching tracer's nodes. NumPy's object loops apply Python's
``+ - * / **`` element by element and ``np.matmul`` works on object arrays,
so arithmetic, matrix products, views and indexing are written once for
every backend. Functions go through ``ops`` (``ops.exp``...); the few the
namespace lacks are in :data:`_EXTRA`, per backend. Nodes that do not depend
on a checked input (index tensors, masks of constant data, ``zeros_like``)
are evaluated once with torch itself at trace time and enter as constants.

Note [Kinks through relu]
~~~~~~~~~~~~~~~~~~~~~~~~~
``clamp``, ``maximum``, ``minimum``, ``amax``, ``leaky_relu`` and
``hardtanh`` are rewritten with ``ops.relu`` (``max(a, b) = b + relu(a -
b)``), so the finite-difference engine, which records every relu/abs
argument (Note [Kinks] in engines/finite_diff.py), knows where their kinks
are, and the symbolic form is a ``Piecewise``. ``where`` of a comparison
``a > b`` is a ``Piecewise`` (SymPy) or the backend's ``where``; on the
finite-difference backend the difference ``a - b`` is also passed through
``ops.abs`` (times 0) so that a branch switch inside the stencil is seen.

Note [Decomposing unsupported ops]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
An aten op outside :data:`OPS` (``native_batch_norm``, ``cumsum``,
``convolution``...) is first looked up in torch's own decomposition table
(``torch._decomp``, what ``torch.compile`` lowers with): the forward is traced
again with the decompositions of exactly the missing ops, for up to
:data:`DECOMPOSE_ROUNDS` rounds, until every op is in the table. A few
``prims`` those decompositions produce (``broadcast_in_dim``, ``div``,
``var``) are in the table for that reason. Only when no decomposition
covers an op does the check go without its symbolic leg.

Note [Softplus threshold]
~~~~~~~~~~~~~~~~~~~~~~~~~
``torch.nn.functional.softplus`` returns ``x`` itself where ``beta * x``
exceeds its ``threshold`` (20), and its backward gives exactly 1 there. The
traced model computes the same function, a ``where`` of the two branches,
so a backward that is the exact gradient of what the forward computes
passes (the exact ``log(1 + exp(beta x)) / beta`` differs by about
``exp(-20) = 2e-9`` relative, which float64 would report as a fault of
correct code). Its jump of ``2e-9`` at the threshold is a branch switch
that finite differences see, as for any ``where``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import operator
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .engines.symbolic import unevaluated_piecewise
from .model import Model, Var

__all__ = ["OPS", "Traced", "Unsupported", "trace", "model_of", "op_table", "element_work", "CACHE_SIZE", "reads_of"]

#: Traced graphs and derived models kept (least recently used dropped).
CACHE_SIZE = 64

# ---------------------------------------------------------------- elements


class _Cmp:
    """One element of a boolean tensor that depends on a checked input: ``d <op> 0``."""

    __slots__ = ("op", "d")

    def __init__(self, op: str, d: Any):
        self.op, self.d = op, d


_NEG = {"gt": "le", "ge": "lt", "lt": "ge", "le": "gt", "eq": "ne", "ne": "eq"}
_PY_CMP = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le, "eq": operator.eq, "ne": operator.ne}


def _is_number(e: Any) -> bool:
    return isinstance(e, (int, float, bool, np.number, np.bool_))


def _obj(x: Any) -> np.ndarray:
    """A value of the graph as an object array (Note [Object arrays])."""
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            return x
        return x.astype(object)  # constants: Python floats, ints, bools
    return _scalar(x)


def _scalar(e: Any) -> np.ndarray:
    """One element (a backend scalar, possibly itself an array of points) as a 0-d object array."""
    out = np.empty((), dtype=object)
    out[()] = e
    return out


def _map(f: Callable, *arrays: np.ndarray) -> np.ndarray:
    """``f`` element by element over broadcast object arrays."""
    objs = [_obj(a) for a in arrays]
    if all(a.ndim == 0 for a in objs):
        return _scalar(f(*(a[()] for a in objs)))
    with np.errstate(all="ignore"):  # a backend's own NaN (acosh below 1) sets the FPU flag numpy would report
        return np.frompyfunc(f, len(objs), 1)(*objs)


# ---------------------------------------------------------------- backend functions

_FLOAT: dict[str, Callable[..., float]] = {
    "exp": math.exp, "log": math.log, "sqrt": math.sqrt, "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "tanh": math.tanh, "sinh": math.sinh, "cosh": math.cosh, "asinh": math.asinh, "atan": math.atan,
    "asin": math.asin, "acos": math.acos, "atanh": math.atanh, "acosh": math.acosh, "atan2": math.atan2,
    "log1p": math.log1p, "expm1": math.expm1, "erf": math.erf, "erfc": math.erfc, "abs": abs,
    "relu": lambda z: max(z, 0.0),
    "sigmoid": lambda z: 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z)),
    "softplus": lambda z: max(z, 0.0) + math.log1p(math.exp(-abs(z))),
}


def _sympy_extra(name: str):
    import sympy as sp
    from sympy.codegen.cfunctions import expm1, log1p

    return {"tan": sp.tan, "sinh": sp.sinh, "cosh": sp.cosh, "asinh": sp.asinh, "atan": sp.atan,
            "asin": sp.asin, "acos": sp.acos, "atanh": sp.atanh, "acosh": sp.acosh, "atan2": sp.atan2,
            "erfc": sp.erfc, "log1p": log1p, "expm1": expm1}.get(name)


def _torch_extra(name: str):
    import torch

    return {"tan": torch.tan, "sinh": torch.sinh, "cosh": torch.cosh, "asinh": torch.asinh, "atan": torch.atan,
            "asin": torch.asin, "acos": torch.acos, "atanh": torch.atanh, "acosh": torch.acosh,
            "atan2": torch.atan2, "log1p": torch.log1p, "expm1": torch.expm1, "erf": torch.erf,
            "erfc": torch.erfc}.get(name)


def _numpy_extra(name: str):
    from .ops import numpy_erfc

    return {"tan": np.tan, "sinh": np.sinh, "cosh": np.cosh, "asinh": np.arcsinh, "atan": np.arctan,
            "asin": np.arcsin, "acos": np.arccos, "atanh": np.arctanh, "acosh": np.arccosh, "atan2": np.arctan2,
            "erfc": numpy_erfc, "log1p": np.log1p, "expm1": np.expm1}.get(name)


#: Functions the ``ops`` namespace may lack, per backend name (``erf`` only where
#: every engine can evaluate it: NumPy has none, so SymPy's would not lambdify).
_EXTRA: dict[str, Callable[[str], Any]] = {
    "sympy": _sympy_extra,
    "torch": _torch_extra,
    "numpy": _numpy_extra,
    "float": lambda name: _FLOAT.get(name),
}


class _Missing(Exception):
    """A function no backend provides: the graph falls back (see gradcheck_lab.torch_check)."""


def _fn(ops, name: str) -> Callable:
    f = getattr(ops, name, None)
    if f is None:
        extra = _EXTRA.get(getattr(ops, "name", ""))
        f = extra(name) if extra else None
    if f is None:
        raise _Missing(f"{name} on the {getattr(ops, 'name', '?')} backend")
    return f


#: SymPy functions built unevaluated on a traced graph: ``tanh(a sum of 30 products)`` otherwise asks
#: SymPy's assumptions about its argument's sign (seconds on a 12x12 matmul, minutes on 30x30).
_SYMPY_UNEVALUATED = ("exp", "log", "sin", "cos", "tan", "tanh", "sinh", "cosh", "asinh", "atan", "erf",
                      "asin", "acos", "atanh", "acosh", "atan2", "erfc")


def _on_numbers(name: str, *xs: float) -> float:
    """``name`` of plain numbers as torch computes it: NaN outside the domain, inf on overflow."""
    try:
        return _FLOAT[name](*xs)
    except (ValueError, OverflowError):  # math raises where torch returns NaN or +-inf
        f = _numpy_extra(name) or getattr(np, name)
        with np.errstate(all="ignore"):
            return float(f(*map(np.float64, xs)))


def _unary(name: str):
    def apply(ops, *args, **__):
        f: Callable = _fn(ops, name)
        if getattr(ops, "name", "") == "sympy" and name in _SYMPY_UNEVALUATED:
            import sympy as sp

            cls = getattr(sp, name)
            f = lambda *e: cls(*e, evaluate=False)  # noqa: E731
        elif name == "relu":
            f = functools.partial(_relu, ops)
        arrays = args[:2] if name in _BINARY_FUNCTIONS else args[:1]
        return _map(lambda *e: _on_numbers(name, *e) if all(map(_is_number, e)) else f(*_promote(ops, list(e))),
                    *arrays)

    return apply


#: Functions of two tensors (the rest take one).
_BINARY_FUNCTIONS = frozenset({"atan2"})


def _add_all(ops, items: list) -> Any:
    if not items:
        return 0.0
    items = [int(i) if isinstance(i, (bool, np.bool_)) else i for i in items]  # a sum of a boolean mask
    if getattr(ops, "name", "") == "sympy":
        import sympy as sp

        return sp.Add(*items)
    return functools.reduce(operator.add, items)


def _relu(ops, e):
    if _is_number(e):
        return max(e, 0.0)
    if getattr(ops, "name", "") == "sympy":
        return _piecewise(e, 0, "lt", 0, e)  # ops.relu, unevaluated (Note [Named conditions])
    return ops.relu(e)


def _max2(ops, a, b):
    """max(a, b) = b + relu(a - b) (Note [Kinks through relu])."""
    return b + _relu(ops, a - b)


def _piecewise(lhs, rhs, op: str, a, b):
    """SymPy's ``Piecewise((a, lhs op rhs), (b, True))``, built unevaluated.

    Evaluated, the condition asks SymPy's assumptions about the sign of
    ``lhs`` and the ``Piecewise`` walks both branches to collapse them:
    minutes on a transformer layer's graph, for nothing (a traced value is
    not a number here: numbers are decided before).
    """
    import sympy as sp

    rel = {"gt": sp.StrictGreaterThan, "ge": sp.GreaterThan, "lt": sp.StrictLessThan, "le": sp.LessThan,
           "eq": sp.Eq, "ne": sp.Ne}[op]
    a, b = sp.sympify(a, strict=True), sp.sympify(b, strict=True)
    return unevaluated_piecewise([(a, rel(lhs, rhs, evaluate=False)), (b, sp.true)])


def _where1(ops, c, a, b):
    if not isinstance(c, _Cmp):
        return a if bool(c) else b
    d = c.d
    if _is_number(d):
        return a if _PY_CMP[c.op](d, 0) else b
    choose = getattr(ops, "choose", None)
    if choose is not None:  # the tensor referee's balls decide it (Note [Tensor referee])
        return choose(c.op, d, a, b)
    name = getattr(ops, "name", "")
    if name == "sympy":
        return _piecewise(d, 0, c.op, a, b)
    if name == "torch":
        import torch

        cond = _PY_CMP[c.op](d, 0)
        a = a if isinstance(a, torch.Tensor) else torch.as_tensor(a, dtype=d.dtype, device=d.device)
        b = b if isinstance(b, torch.Tensor) else torch.as_tensor(b, dtype=d.dtype, device=d.device)
        return torch.where(cond, a, b)
    if name == "numpy":
        # Note [Kinks through relu]: the finite-difference engine records this argument.
        return np.where(_PY_CMP[c.op](d, 0), a, b) + 0.0 * ops.abs(d)
    value = getattr(d, "value", d)  # the teaching tracer's nodes, Python floats
    return a if _PY_CMP[c.op](float(value), 0) else b


# ---------------------------------------------------------------- aten handlers


def _dims(a: np.ndarray, dim) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(a.ndim))
    if isinstance(dim, int):
        dim = [dim]
    if len(dim) == 0:
        return tuple(range(a.ndim))
    return tuple(sorted(d % max(a.ndim, 1) for d in dim))


def _reduce(a: np.ndarray, dim, keepdim: bool, f: Callable[[list], Any]) -> np.ndarray:
    a = _obj(a)
    dims = _dims(a, dim)
    if a.ndim == 0:
        return _scalar(f([a[()]]))
    keep = [d for d in range(a.ndim) if d not in dims]
    moved = np.transpose(a, keep + list(dims))
    lead = moved.shape[: len(keep)]
    rows = moved.reshape(lead + (-1,))
    out = np.empty(lead, dtype=object)
    for idx in np.ndindex(lead):
        out[idx] = f(list(rows[idx]))
    if keepdim:
        out = out.reshape([1 if d in dims else a.shape[d] for d in range(a.ndim)])
    return out


def _count(a: np.ndarray, dim) -> int:
    return math.prod(_obj(a).shape[d] for d in _dims(_obj(a), dim)) if _obj(a).ndim else 1


def _sum(ops, a, dim=None, keepdim=False, dtype=None):
    return _reduce(a, dim, keepdim, lambda xs: _add_all(ops, xs))


def _mean(ops, a, dim=None, keepdim=False, dtype=None):
    n = _count(a, dim)
    return _reduce(a, dim, keepdim, lambda xs: _add_all(ops, xs) / n)


def _var(ops, a, dim=None, *, correction=None, keepdim=False, unbiased=None):
    c = 1 if correction is None else correction
    if unbiased is not None:
        c = 1 if unbiased else 0

    def var(xs):
        m = _add_all(ops, xs) / len(xs)
        return _add_all(ops, [(x - m) ** 2 for x in xs]) / (len(xs) - c)

    return _reduce(a, dim, keepdim, var)


def _var_default(ops, a, *args, **kwargs):
    """``var.default``: aten's ``var(a, unbiased)`` or, from torch's decompositions, prims' ``var(a, dims, correction)``."""
    if args and isinstance(args[0], bool):
        return _var(ops, a, unbiased=args[0])
    if args:
        return _var(ops, a, args[0], correction=args[1] if len(args) > 1 else kwargs.get("correction"))
    return _var(ops, a, **{k: v for k, v in kwargs.items() if k in ("correction", "keepdim", "unbiased")})


def _std(ops, a, dim=None, *, correction=None, keepdim=False, unbiased=None):
    v = _var(ops, a, dim, correction=correction, keepdim=keepdim, unbiased=unbiased)
    return _unary("sqrt")(ops, v)


def _logsumexp_list(ops, xs):
    return ops.logsumexp(_promote(ops, list(xs))) if not all(_is_number(x) for x in xs) else _FLOAT_LSE(xs)


def _promote(ops, xs: list) -> list:
    """Plain numbers among backend values as the backend's values (a constant operand: ``zeros_like(x)``).

    A backend function of several arguments (``torch.atan2``, ``torch.stack`` in
    ``logsumexp``) takes its own kind of value only: ``logaddexp(x, 0)`` crashed.
    """
    ref = next((x for x in xs if not _is_number(x)), None)
    if ref is None or all(not _is_number(x) for x in xs):
        return xs
    name = getattr(ops, "name", "")
    if name == "torch":
        import torch

        return [torch.full_like(ref, float(x)) if _is_number(x) else x for x in xs]
    if name == "numpy":
        return [np.full(np.shape(ref), float(x)) if _is_number(x) else x for x in xs]
    return xs


def _FLOAT_LSE(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _logsumexp(ops, a, dim, keepdim=False):
    return _reduce(a, dim, keepdim, lambda xs: _logsumexp_list(ops, xs))


def _log_softmax(ops, a, dim, half_to_float=False):
    lse = _logsumexp(ops, a, [dim], True)
    return _map(operator.sub, a, lse)


def _softmax(ops, a, dim, half_to_float=False):
    return _unary("exp")(ops, _log_softmax(ops, a, dim))


def _tree(f: Callable, xs: list):
    """``f`` folded over a non-empty list as a balanced tree of pairs, not a chain."""
    while len(xs) > 1:
        xs = [f(xs[i], xs[i + 1]) if i + 1 < len(xs) else xs[i] for i in range(0, len(xs), 2)]
    return xs[0]


def _product(xs: list):
    """The product of a list, as a tree (a chain would nest SymPy's products n deep)."""
    return _tree(operator.mul, xs) if xs else 1.0


def _pairwise_max(ops, xs: list):
    """max of a list as a balanced tree of ``_max2``: each level doubles the symbolic size
    (``b`` appears twice in ``b + relu(a - b)``), so a chain over n elements would be 2**n long."""
    return _tree(lambda a, b: _max2(ops, a, b), xs)


def _amax(ops, a, dim=(), keepdim=False):
    return _reduce(a, dim, keepdim, lambda xs: _pairwise_max(ops, xs))


def _amin(ops, a, dim=(), keepdim=False):
    return _scale(_amax(ops, _scale(a, -1), dim, keepdim), -1)


def _norm(ops, a, ord=2, dim=None, keepdim=False, *, dtype=None):
    if ord == 2:
        return _unary("sqrt")(ops, _reduce(a, dim, keepdim, lambda xs: _add_all(ops, [x * x for x in xs])))
    if ord == 1:
        return _reduce(_unary("abs")(ops, a), dim, keepdim, lambda xs: _add_all(ops, xs))
    raise _Missing(f"linalg_vector_norm with ord={ord}")


def _cmp(op):
    def one(x, y):
        if _is_number(x) and _is_number(y):
            return _PY_CMP[op](x, y)
        # Against an infinity a finite value compares the same everywhere (_safe_softmax's x == -inf,
        # in attention): a constant, where x - inf would be a _Cmp no reduction can sum.
        if _is_number(y) and math.isinf(y):
            return _PY_CMP[op](0.0, y)
        if _is_number(x) and math.isinf(x):
            return _PY_CMP[op](x, 0.0)
        return _Cmp(op, x - y)

    def apply(ops, a, b):
        return _map(one, a, b)

    return apply


def _not(c):
    return _Cmp(_NEG[c.op], c.d) if isinstance(c, _Cmp) else not bool(c)


def _logical_not(ops, a):
    return _map(_not, a)


def _where(ops, c, a, b):
    return _map(lambda ci, ai, bi: _where1(ops, ci, ai, bi), c, a, b)


def _broadcast_in_dim(a, shape, dims):
    a = _obj(a)
    full = [1] * len(shape)
    for d, n in zip(dims, a.shape):
        full[d] = n
    return np.broadcast_to(a.reshape(full), tuple(shape)).copy()


def _softplus(ops, a, beta, threshold):
    """torch's softplus as it computes it: ``a`` itself above the threshold (Note [Softplus threshold])."""
    z = _scale(a, beta)
    smooth = _scale(_U("softplus")(ops, z), 1.0 / beta)
    return _where(ops, _cmp("gt")(ops, z, threshold), a, smooth)


def _clamp(ops, a, lo=None, hi=None):
    a = _obj(a)
    if lo is not None:
        a = _map(lambda x, l_: _max2(ops, x, l_), a, lo)
    if hi is not None:
        a = _map(lambda x, h: -_max2(ops, -x, -h), a, hi)
    return a


def _expand(ops, a, size, *, implicit=False):
    a = _obj(a)
    lead = len(size) - a.ndim
    size = [a.shape[i - lead] if s == -1 else s for i, s in enumerate(size)]
    return np.broadcast_to(a, size).copy()


def _slice(ops, a, dim=0, start=None, end=None, step=1):
    idx = [slice(None)] * _obj(a).ndim
    idx[dim] = slice(start, end, step)
    return _obj(a)[tuple(idx)]


def _select(ops, a, dim, index):
    idx: list[Any] = [slice(None)] * _obj(a).ndim
    idx[dim] = index
    # the trailing ``...`` keeps a 0-d result an array: indexed to one element, NumPy returns the element
    # itself, and an element that is an array of points (finite differences' columns) became a 1-d tensor
    # (kornia's quaternion_to_rotation_matrix: "cannot reshape array of size 153 into shape (3,3)")
    return _obj(a)[tuple(idx) + (Ellipsis,)]


def _index(ops, a, indices):
    idx = tuple(slice(None) if i is None else np.asarray(i) for i in indices)
    return _obj(a)[idx + (Ellipsis,)]


def _squeeze(ops, a, dim=None):
    a = _obj(a)
    if dim is None:
        return a.reshape([s for s in a.shape if s != 1])
    dims = {d % max(a.ndim, 1) for d in ([dim] if isinstance(dim, int) else dim)}
    return a.reshape([s for d, s in enumerate(a.shape) if not (d in dims and s == 1)])


def _matmul(ops, a, b):
    a, b = _obj(a), _obj(b)
    if a.ndim == 1 and b.ndim == 1:
        return _scalar(_add_all(ops, list(a * b)))
    return np.matmul(a, b)


def _addmm(ops, bias, a, b, *, beta=1, alpha=1):
    return _map(lambda c, m: beta * c + alpha * m, bias, _matmul(ops, a, b))


def _identity(ops, a, *args, **kwargs):
    return _obj(a)


def _copy(ops, a, *args, **kwargs):
    return _obj(a).copy()


def _to_copy(ops, a, *args, dtype=None, **kwargs):
    if dtype is not None and not dtype.is_floating_point:
        raise _Missing(f"conversion to {dtype}")
    return _obj(a).copy()


def _scatter_view(a, src, view: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``a`` with ``view(a)`` replaced by ``src`` (functionalization's ``*_scatter``)."""
    out = _obj(a).copy()
    part = view(out)
    part[...] = np.broadcast_to(_obj(src), part.shape)
    return out


def _index_put(ops, a, indices, values, accumulate=False):
    """``a[indices] = values`` (or ``+=``) on a copy: functionalized ``index_put_``."""
    out = _obj(a).copy()
    idx = tuple(slice(None) if i is None else np.asarray(i) for i in indices)
    vals = np.broadcast_to(_obj(values), out[idx].shape)
    if accumulate:
        np.add.at(out, idx, vals)  # type: ignore[arg-type]
    else:
        out[idx] = vals
    return out


def _cat(ops, tensors, dim=0):
    arrs = [_obj(t) for t in tensors if _obj(t).size or _obj(t).ndim > 1]
    return np.concatenate(arrs, axis=dim)


def _split(ops, a, size, dim=0):
    a = _obj(a)
    n = a.shape[dim]
    sizes = [size] * (n // size) + ([n % size] if n % size else []) if isinstance(size, int) else list(size)
    bounds = np.cumsum([0, *sizes])
    return [_slice(ops, a, dim, int(s), int(e)) for s, e in zip(bounds[:-1], bounds[1:])]


def _binary(f: Callable):
    def apply(ops, a, b, *, alpha=1):
        return _map(lambda x, y: f(x, y * alpha if alpha != 1 else y), a, b)

    return apply


def _pow(a, b):
    """``a ** b``; a constant base 0 gives the constant 0 (torch: 0 for b > 0, and a zero gradient for b).

    ``0 ** b`` differentiated by SymPy is ``0 ** b log(0)``: ``zoo``, which no backend evaluates.
    """
    if _is_number(a) and a == 0 and not _is_number(b):
        return 0.0 * b
    return a**b


def _scale(a, k):
    """``k * a`` element by element (arithmetic on a 0-d object array would unwrap its element)."""
    return _map(lambda x: k * x, a)


def _arith(f: Callable):
    return lambda ops, *args: _map(f, *args)


_U = _unary

#: aten op (``packet.overload``, or ``packet`` for every overload) -> (handler, meaning).
#: The supported-op table of docs/torch.md is generated from this.
OPS: dict[str, tuple[Callable, str]] = {
    # arithmetic
    "add": (_binary(operator.add), "a + alpha*b"),
    "sub": (_binary(operator.sub), "a - alpha*b"),
    "rsub": (_binary(lambda a, b: b - a), "alpha*b - a"),
    "mul": (_arith(operator.mul), "a * b"),
    "div.Tensor": (_arith(operator.truediv), "a / b (true division)"),
    "div.Scalar": (_arith(operator.truediv), "a / b (true division)"),
    "neg": (_arith(operator.neg), "-a"),
    "reciprocal": (_arith(lambda x: 1.0 / x), "1 / a"),
    "pow": (_arith(lambda a, b: _pow(a, b)), "a ** b (tensor or scalar exponent or base; 0 ** b is 0)"),
    "square": (_arith(lambda x: x * x), "a * a"),
    # elementwise functions
    **{n: (_U(n), f"{n}(a)") for n in ("exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "sinh", "cosh",
                                        "asinh", "atan", "asin", "acos", "atanh", "acosh", "sigmoid", "log1p",
                                        "expm1", "erf", "erfc", "abs")},
    "atan2": (_U("atan2"), "atan2(a, b), the angle of (b, a)"),
    "hypot": (lambda ops, a, b: _U("sqrt")(ops, _map(lambda x, y: x * x + y * y, a, b)), "sqrt(a**2 + b**2)"),
    "logaddexp": (lambda ops, a, b: _map(lambda x, y: _logsumexp_list(ops, [x, y]), a, b), "log(exp(a) + exp(b))"),
    "rsqrt": (lambda ops, a: _map(lambda x: 1.0 / x, _U("sqrt")(ops, a)), "1 / sqrt(a)"),
    "relu": (_U("relu"), "max(a, 0); kink at 0"),
    "sign": (lambda ops, a: _sign(ops, a), "1, 0 or -1: Piecewise, derivative 0 off the jump at 0"),
    "convolution": (lambda ops, *a, **k: _convolution(ops, *a, **k),
                    "N-d convolution, transposed too (nn.Conv*, nn.ConvTranspose*): strided windows"),
    "avg_pool1d": (lambda ops, *a, **k: _avg_pool(ops, *a, **k), "mean over windows (ceil_mode=False)"),
    "avg_pool2d": (lambda ops, *a, **k: _avg_pool(ops, *a, **k), "mean over windows (ceil_mode=False)"),
    "avg_pool3d": (lambda ops, *a, **k: _avg_pool(ops, *a, **k), "mean over windows (ceil_mode=False)"),
    "constant_pad_nd": (lambda ops, *a, **k: _constant_pad_nd(ops, *a, **k), "zero padding (negative amounts crop)"),
    **{f"max_pool{n}d_with_indices": (lambda ops, *a, **k: _max_pool(ops, *a, **k),
                                      "max over windows (ceil_mode=False); kinks at ties; its indices unused")
       for n in (1, 2, 3)},
    "bitwise_not": (lambda ops, *a, **k: _bitwise_not(ops, *a, **k), "not c of a comparison or mask"),
    "silu": (lambda ops, a: _map(operator.mul, a, _U("sigmoid")(ops, a)), "a * sigmoid(a)"),
    "softplus": (lambda ops, a, beta=1, threshold=20: _softplus(ops, a, beta, threshold),
                 "a if beta a > threshold else log(1 + exp(beta a)) / beta (Note [Softplus threshold])"),
    "gelu": (lambda ops, a, approximate="none": _gelu(ops, a, approximate), "a * Phi(a) (erf form) or its tanh form"),
    "leaky_relu": (lambda ops, a, slope=0.01: _map(lambda x, r: slope * x + (1 - slope) * r, a, _U("relu")(ops, a)),
                   "a if a > 0 else slope * a"),
    "elu": (lambda ops, a, alpha=1, scale=1, input_scale=1: _elu(ops, a, alpha, scale, input_scale),
            "a if a > 0 else alpha (exp(a) - 1)"),
    "hardtanh": (lambda ops, a, lo=-1, hi=1: _clamp(ops, a, lo, hi), "clamp(a, min, max)"),
    "clamp": (_clamp, "min(max(a, lo), hi); kinks at lo and hi"),
    "clamp_min": (lambda ops, a, lo: _clamp(ops, a, lo, None), "max(a, lo)"),
    "clamp_max": (lambda ops, a, hi: _clamp(ops, a, None, hi), "min(a, hi)"),
    "maximum": (lambda ops, a, b: _map(lambda x, y: _max2(ops, x, y), a, b), "elementwise max; kink at a = b"),
    "minimum": (lambda ops, a, b: _map(lambda x, y: -_max2(ops, -x, -y), a, b), "elementwise min; kink at a = b"),
    # comparisons and selection
    **{c: (_cmp(c), f"a {s} b, for where") for c, s in
       (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("eq", "=="), ("ne", "!="))},
    "logical_not": (_logical_not, "not c, for where"),
    "where.self": (_where, "where(c, a, b) of a comparison: Piecewise"),
    "masked_fill": (lambda ops, a, mask, value: _where(ops, mask, value, a), "where(mask, value, a)"),
    # linear algebra
    "mm": (_matmul, "matrix product"),
    "bmm": (_matmul, "batched matrix product"),
    "matmul": (_matmul, "matrix product"),
    "mv": (_matmul, "matrix-vector product"),
    "dot": (_matmul, "dot product"),
    "addmm": (_addmm, "beta*bias + alpha*(a @ b) (nn.Linear)"),
    "addmv": (_addmm, "beta*bias + alpha*(A @ v)"),
    "baddbmm": (_addmm, "beta*bias + alpha*(a @ b), batched"),
    # reductions
    "sum": (_sum, "sum over all or some dims"),
    "mean": (_mean, "mean over all or some dims"),
    "var": (_var, "variance with correction (unbiased by default)"),
    "var.default": (lambda ops, a, *args, **kw: _var_default(ops, a, *args, **kw),
                    "aten var(a, unbiased) or prims var(a, dims, correction)"),
    "std": (_std, "sqrt(var)"),
    "amax": (_amax, "max over dims; kinks at ties"),
    "amin": (_amin, "min over dims; kinks at ties"),
    "max.default": (lambda ops, a: _amax(ops, a), "max of all elements; kinks at ties"),
    "min.default": (lambda ops, a: _amin(ops, a), "min of all elements; kinks at ties"),
    "max.other": (lambda ops, a, b: _map(lambda x, y: _max2(ops, x, y), a, b), "elementwise max"),
    "min.other": (lambda ops, a, b: _map(lambda x, y: -_max2(ops, -x, -y), a, b), "elementwise min"),
    "prod": (lambda ops, a, dim=None, keepdim=False, dtype=None: _reduce(a, dim, keepdim, _product),
             "product over all or one dim"),
    "logsumexp": (_logsumexp, "log(sum(exp(a))) over dims"),
    "_softmax": (_softmax, "exp(a - logsumexp(a)) along dim"),
    "_log_softmax": (_log_softmax, "a - logsumexp(a) along dim"),
    "linalg_vector_norm": (_norm, "2-norm or 1-norm over dims"),
    # views, indexing, copies
    "view": (lambda ops, a, size: _obj(a).reshape(size), "reshape"),
    "_unsafe_view": (lambda ops, a, size: _obj(a).reshape(size), "reshape"),
    "reshape": (lambda ops, a, size: _obj(a).reshape(size), "reshape"),
    "permute": (lambda ops, a, dims: np.transpose(_obj(a), dims), "permute dims"),
    "transpose": (lambda ops, a, d0, d1: np.swapaxes(_obj(a), d0, d1), "swap two dims"),
    "t": (lambda ops, a: _obj(a).T, "transpose of a matrix"),
    "expand": (_expand, "broadcast to a size"),
    "broadcast_in_dim": (lambda ops, a, shape, dims: _broadcast_in_dim(a, shape, dims),
                         "prims: broadcast to a size, a's dims placed at dims (from torch's decompositions)"),
    "div.default": (_arith(operator.truediv), "prims: a / b (from torch's decompositions)"),
    "unsqueeze": (lambda ops, a, dim: np.expand_dims(_obj(a), dim if dim >= 0 else dim + _obj(a).ndim + 1), "new dim of size 1"),
    "squeeze": (_squeeze, "drop dims of size 1"),
    "slice": (_slice, "a[start:end:step] along dim"),
    "select": (_select, "a[index] along dim"),
    "index": (_index, "advanced indexing by integer or boolean tensors"),
    "gather": (lambda ops, a, dim, index, sparse_grad=False: np.take_along_axis(_obj(a), np.asarray(index).astype(np.intp), dim),
               "a[index] along dim, elementwise (nll_loss, cross_entropy with class indices)"),
    "cat": (_cat, "concatenate"),
    "stack": (lambda ops, ts, dim=0: np.stack([_obj(t) for t in ts], axis=dim), "stack"),
    "split": (_split, "split into chunks (with getitem)"),
    "split_with_sizes": (_split, "split into sizes (with getitem)"),
    "unbind": (lambda ops, a, dim=0: [_select(ops, a, dim, i) for i in range(_obj(a).shape[dim])], "unbind along dim"),
    "clone": (_copy, "copy"),
    "copy": (lambda ops, dst, src, non_blocking=False: _scatter_view(dst, src, lambda t: t),
             "src broadcast into dst's shape (functionalized copy_)"),
    "select_scatter": (lambda ops, a, src, dim, index: _scatter_view(a, src, lambda t: _select(ops, t, dim, index)),
                       "a with a[index] along dim replaced (functionalized writes)"),
    "slice_scatter": (lambda ops, a, src, dim=0, start=None, end=None, step=1:
                      _scatter_view(a, src, lambda t: _slice(ops, t, dim, start, end, step)),
                      "a with a[start:end:step] along dim replaced (functionalized writes)"),
    "index_put": (_index_put, "a[indices] = values (or +=): functionalized index_put_"),
    "alias": (_identity, "alias"),
    "detach": (_identity, "identity in the forward (torch's gradcheck also differentiates through it)"),
    "lift_fresh_copy": (_copy, "copy"),
    "contiguous": (_copy, "copy"),
    "_to_copy": (_to_copy, "dtype/device copy (float dtypes; the truth is exact)"),
}


def _gelu(ops, a, approximate):
    a = _obj(a)
    if approximate == "tanh":
        c = math.sqrt(2.0 / math.pi)
        inner = _map(lambda x: c * (x + 0.044715 * x * x * x), a)
        return _map(lambda x, t: 0.5 * x * (1.0 + t), a, _U("tanh")(ops, inner))
    return _map(lambda x, e: 0.5 * x * (1.0 + e), a, _U("erf")(ops, _scale(a, 1 / math.sqrt(2.0))))


def _pad(a: np.ndarray, pads: Sequence[tuple[int, int]], value: float = 0.0) -> np.ndarray:
    """Padding per dim, ``(before, after)``; a negative amount crops (as torch's ``constant_pad_nd``)."""
    a = np.pad(a, [(max(b, 0), max(e, 0)) for b, e in pads], constant_values=value)
    return a[tuple(slice(max(-b, 0), a.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(pads))]


def _constant_pad_nd(ops, a, pad, value=0.0):
    a = _obj(a)
    if value != 0:
        raise _Missing(f"constant_pad_nd with value {value}")
    pairs = [(0, 0)] * a.ndim
    for k in range(len(pad) // 2):  # torch lists the last dim first
        pairs[a.ndim - 1 - k] = (int(pad[2 * k]), int(pad[2 * k + 1]))
    return _pad(a, pairs)


def _windows(a: np.ndarray, kernel, stride, dilation) -> tuple[np.ndarray, list[int]]:
    """Every kernel offset's strided view of ``a``'s last dims: shape ``(N, C, *kernel, *out)``."""
    nd = len(kernel)
    lead, sizes = a.shape[:-nd], a.shape[-nd:]
    out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(sizes, kernel, stride, dilation)]
    if min(out, default=1) < 1:
        raise _Missing("a convolution or pool with an empty output")
    views = []
    for offset in np.ndindex(*kernel):
        idx = tuple(slice(o * d, o * d + s * (m - 1) + 1, s) for o, d, s, m in zip(offset, dilation, stride, out))
        views.append(a[(Ellipsis,) + idx])
    stacked = np.stack(views, axis=len(lead))  # (*lead, prod(kernel), *out)
    return stacked.reshape(*lead, *kernel, *out), out


def _convolution(ops, x, w, bias, stride, padding, dilation, transposed, output_padding, groups):
    """N-d convolution (``nn.Conv*``, and ``nn.ConvTranspose*`` as a convolution of the dilated input)."""
    x, w = _obj(x), _obj(w)
    nd = w.ndim - 2
    stride, padding, dilation = (list(v) * (nd if len(v) == 1 else 1) for v in (stride, padding, dilation))
    kernel = list(w.shape[2:])
    if transposed:
        # Note: the transposed convolution is the regular one over the input with (stride - 1) zeros
        # between its elements, padded by dilation (kernel - 1) - padding, with the kernel flipped and
        # its in/out channels swapped per group.
        n, c = x.shape[:2]
        up = np.full((n, c, *[(m - 1) * s + 1 for m, s in zip(x.shape[2:], stride)]), 0.0, dtype=object)
        every: tuple = (slice(None), slice(None))
        up[every + tuple(slice(None, None, s) for s in stride)] = x
        extra = list(output_padding) * (nd if len(output_padding) == 1 else 1)
        pads = [(d * (k - 1) - p, d * (k - 1) - p + e) for k, p, d, e in zip(kernel, padding, dilation, extra)]
        x = _pad(up, [(0, 0), (0, 0), *pads])
        cin, cog = w.shape[:2]
        w = w.reshape(groups, cin // groups, cog, *kernel).swapaxes(1, 2).reshape(groups * cog, cin // groups, *kernel)
        w = w[every + (slice(None, None, -1),) * nd]  # the kernel flipped
        stride, padding = [1] * nd, [0] * nd
    x = _pad(x, [(0, 0), (0, 0), *[(p, p) for p in padding]])
    patches, out_shape = _windows(x, kernel, stride, dilation)  # (N, C, *K, *O)
    n, c = x.shape[:2]
    co, cg = w.shape[:2]
    per = co // groups
    parts = []
    for g in range(groups):
        xg = patches[:, g * cg : (g + 1) * cg]
        wg = w[g * per : (g + 1) * per]
        axes = list(range(1, 2 + nd))
        parts.append(np.moveaxis(np.tensordot(xg, wg, axes=(axes, axes)), -1, 1))  # (N, per, *O)
    out = np.concatenate(parts, axis=1) if groups > 1 else parts[0]
    if bias is not None:
        out = _map(operator.add, out, _obj(bias).reshape(co, *[1] * nd))
    return out


def _pool(name, a, kernel, stride, padding, dilation, ceil_mode, pad_value, f):
    """``f`` of each window's elements (a list), over the last ``len(kernel)`` dims of ``a``."""
    a = _obj(a)
    nd = len(kernel)
    stride, padding, dilation = (list(v) * (nd if len(v) == 1 else 1) if isinstance(v, (list, tuple)) else [v] * nd
                                 for v in (list(stride) or list(kernel), padding, dilation))
    if ceil_mode:
        raise _Missing(f"{name} with ceil_mode=True")
    padded = _pad(a, [(0, 0)] * (a.ndim - nd) + [(p, p) for p in padding], value=pad_value)
    patches, _ = _windows(padded, kernel, stride, dilation)  # (*lead, *kernel, *out)
    flat = patches.reshape(*patches.shape[: a.ndim - nd], -1, *patches.shape[a.ndim :])
    return _reduce(np.moveaxis(flat, a.ndim - nd, -1), -1, False, f), stride, padding


def _avg_pool(ops, a, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    sums, stride, padding = _pool("avg_pool", a, kernel, stride, padding, 1, ceil_mode, 0.0,
                                  lambda xs: _add_all(ops, xs))
    nd = len(kernel)
    if divisor_override:
        counts: Any = float(divisor_override)
    elif count_include_pad:
        counts = float(math.prod(kernel))
    else:
        ones = _pad(np.ones(_obj(a).shape[-nd:]), [(p, p) for p in padding])
        counts = _windows(ones, kernel, stride, [1] * nd)[0].sum(axis=tuple(range(nd))).astype(object)
    return _map(operator.truediv, sums, counts)


def _max_pool(ops, a, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    """Max over windows (a tree of ``_max2``: kinks at ties); the indices are not computed.

    The indices output is integer, so never a checked output; ``_analyse``
    refuses a graph that uses it for anything but reshaping and returning.
    """
    values, _, _ = _pool("max_pool", a, kernel, stride, padding, dilation, ceil_mode, -math.inf,
                         lambda xs: _pairwise_max(ops, [x for x in xs if not (_is_number(x) and x == -math.inf)]))
    return [values, np.full(values.shape, -1, dtype=np.int64)]


def _bitwise_not(ops, a):
    """``~mask`` of a boolean (a comparison: its negation); ``~n`` of an integer."""
    return _map(lambda c: ~c if isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_)) else _not(c), a)


def _sign(ops, a):
    a = _obj(a)
    zero, one = np.full(a.shape, 0.0, dtype=object), np.full(a.shape, 1.0, dtype=object)
    below = _where(ops, _cmp("lt")(ops, a, zero), _scale(one, -1), zero)
    return _where(ops, _cmp("gt")(ops, a, zero), one, below)


def _elu(ops, a, alpha, scale, input_scale):
    """``where(a > 0, a, alpha (exp(a) - 1))``, scaled, as torch's backward reads it.

    Two selections, not a sum of relus: with ``alpha = 1`` the derivative is 1 on
    both sides of 0 (a tie, Note [Ties] in engines/referee.py), and each engine
    must give it there; ``relu(a) + (exp(-relu(-a)) - 1)`` reads 2 in SymPy and 0
    in torch at 0. The inner ``where`` keeps ``exp`` of a non-positive number only
    (no ``0 * inf`` in autograd where the branch is not taken).
    """
    a = _obj(a)
    zero = np.full(a.shape, 0.0, dtype=object)
    neg = _where(ops, _cmp("le")(ops, a, zero), a, zero)  # min(a, 0), a itself at 0
    e = _U("exp")(ops, _scale(neg, input_scale))
    left = _map(lambda q: scale * alpha * (q - 1.0), e)
    return _where(ops, _cmp("gt")(ops, a, zero), _scale(a, scale), left)


def _handler(target) -> tuple[Callable, str] | None:
    name = getattr(target, "__name__", str(target))  # "add.Tensor"
    if name in OPS:
        return OPS[name]
    packet = name.split(".")[0]
    if packet.endswith("_") and not packet.startswith("_"):
        return _inplace(packet[:-1], name)
    return OPS.get(packet)


def _write(dst, value) -> np.ndarray:
    dst = _obj(dst)
    dst[...] = np.broadcast_to(_obj(value), dst.shape)
    return dst


def _inplace(base: str, name: str) -> tuple[Callable, str] | None:
    """An in-place op (``add_``, ``copy_``...): the out-of-place result written into the tensor.

    Note [In-place ops]: views of object arrays share their elements like
    torch's views share storage, so writing into a ``select`` or ``slice``
    view updates its base as torch does. Graphs with in-place ops are
    interpreted without constant folding (see ``_analyse``).
    """
    if base == "copy":
        return (lambda ops, dst, src, non_blocking=False: _write(dst, src)), "copy into"
    if base == "fill":
        return (lambda ops, dst, value: _write(dst, value)), "fill"
    if base == "zero":
        return (lambda ops, dst: _write(dst, 0.0)), "zero"
    overload = name.split(".", 1)[1] if "." in name else ""
    found = OPS.get(f"{base}.{overload}") or OPS.get(base) or OPS.get(f"{base}.int")
    if found is None:
        return None
    fn = found[0]
    if base in _VIEW_INPLACE:
        # transpose_ (RNN with batch_first), t_, squeeze_, unsqueeze_: a new shape, the same values;
        # the graph uses the op's result from here on, so it is the out-of-place view.
        return (lambda ops, dst, *args, **kwargs: fn(ops, dst, *args, **kwargs)), f"in place: {found[1]}"
    return (lambda ops, dst, *args, **kwargs: _write(dst, fn(ops, dst, *args, **kwargs))), f"in place: {found[1]}"


#: In-place ops that change a tensor's shape or strides, not its values.
_VIEW_INPLACE = frozenset({"transpose", "t", "squeeze", "unsqueeze", "swapdims", "swapaxes"})


def op_table() -> list[tuple[str, str]]:
    """The supported aten ops (name, meaning), sorted: the table of docs/torch.md."""
    return sorted((name, meaning) for name, (_, meaning) in OPS.items())


# ---------------------------------------------------------------- tracing


@dataclass
class Leaf:
    """One checked tensor: a function input that requires grad, or a module parameter."""

    label: str  # "x" (input 0), "0.weight"
    kind: str  # "input" or "parameter"
    position: int | str  # argument index, or the parameter's dotted name
    shape: tuple[int, ...]
    dtype: Any
    #: The components' identifiers once named (:func:`name_leaves`); None while only their ``stem`` is known.
    names: list[str] | None = field(default=None, repr=False)
    #: A complex input checked as (real, imaginary) pairs: ``shape`` ends in 2 (Note [Complex inputs]).
    pairs: bool = False
    stem: str = field(default="", repr=False)

    @property
    def var_names(self) -> list[str]:
        """Every component's identifier (a model's variable name): ``net.0.weight`` -> ``net_0_weight_1_2``."""
        if self.names is None:
            if not self.shape:
                self.names = [self.stem]
            else:
                self.names = [f"{self.stem}_{'_'.join(map(str, at))}"
                              for at in itertools.product(*map(range, self.shape))]
        return self.names

    def element(self, k: int) -> str:
        if not self.shape:
            return self.label
        at = np.unravel_index(k, self.shape)
        if self.pairs:
            index = f"[{', '.join(map(str, at[:-1]))}]" if len(at) > 1 else ""
            return f"{self.label}{index}.{'imag' if at[-1] else 'real'}"
        return f"{self.label}[{', '.join(map(str, at))}]"


@dataclass
class Traced:
    """An aten graph of the user's forward with what the interpreter needs."""

    gm: Any  # torch.fx.GraphModule
    leaves: list[Leaf]
    live: set  # names of nodes that depend on a checked leaf
    consts: Mapping  # node name -> value of a node that does not
    out_shapes: list[tuple[int, ...]]  # the floating outputs, in order
    key: str  # the graph's structure, shapes and constants (derivation cache key)
    tensor: Any = None  # the graph for the tensor-level engine (engines/tensor.py), None where it has none
    tensor_reason: str = ""  # why not

    @property
    def n_out(self) -> int:
        return sum(math.prod(s) for s in self.out_shapes)

    def output_element(self, k: int) -> str:
        """'output 0 element (1, 2)' for flat output index ``k``."""
        for j, s in enumerate(self.out_shapes):
            size = math.prod(s)
            if k < size:
                where = f" element {tuple(int(i) for i in np.unravel_index(k, s))}" if s else ""
                return f"output {j}{where}"
            k -= size
        return f"output element {k}"


@dataclass
class Unsupported:
    """A forward with ops outside :data:`OPS`: no symbolic leg (see gradcheck_lab.torch_check)."""

    ops: list[str]
    leaves: list[Leaf]
    out_shapes: list[tuple[int, ...]]
    reason: str = ""
    targets: list = field(default_factory=list)  # the unsupported aten operations themselves
    tensor: Any = None  # the graph for the tensor-level engine, where its rules cover the ops
    tensor_reason: str = ""
    gm: Any = None  # the traced graph, where tracing succeeded
    outside: bool = False  # the forward was shown to leave torch (tracing failed, or the graph is not the function)
    deferred: bool = False  # torch's decompositions not tried yet (Note [Decompositions on demand])
    #: The per-element graph where only the derivation budget stood in the way: the tensor referee reads it.
    elements: Any = None

    @property
    def n_out(self) -> int:
        return sum(math.prod(s) for s in self.out_shapes)

    output_element = Traced.output_element


_RESERVED = frozenset({"cotangent", "direction"})


@functools.lru_cache(maxsize=1024)
def _stem(label: str) -> str:
    """A leaf's identifier stem (a suite names the same inputs at every call: derived once)."""
    return _identifier(label, set())


@functools.lru_cache(maxsize=1024)
def _stems_clash(stems: tuple[str, ...]) -> bool:
    r"""Whether two leaves' component names could coincide: ``s + suffix == t + suffix'`` (suffixes
    ``(_\d+)*``, stems ending in a letter or digit) only where one stem is the other plus indices (``x``
    and ``x_1``), or stems repeat, or one is reserved."""
    return len(set(stems)) < len(stems) or bool(_RESERVED & set(stems)) or any(
        s != t and re.fullmatch(re.escape(t) + r"(?:_\d+)+", s) is not None for s in stems for t in stems)


def _identifier(text: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", text).strip("_") or "t"
    if not base[0].isalpha():
        base = "p" + base
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    taken.add(name)
    return name


class _Constants(Mapping):
    """Node name -> the value of a node that depends on no leaf, as the per-element interpreter reads it
    (:func:`_constant`: object arrays of Python floats), converted when first read. Only the per-element legs
    read them, within their derivation budget; converted at once, a vision transformer's weights as Python
    floats took 24 GB (kornia's SigLip2 test, killed for memory) where the tensor-level leg needs none."""

    def __init__(self, raw: dict):
        self._raw = raw
        self._converted: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._converted:
            self._converted[name] = _constant(self._raw[name])
        return self._converted[name]

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self):
        return iter(self._raw)


def _constant(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        arr = _dense(value)
        if arr.is_floating_point():
            return arr.double().numpy().astype(object)
        return arr.numpy()
    if isinstance(value, (list, tuple)):
        return type(value)(_constant(v) for v in value)
    return value


def _dense(t):
    """``t`` detached on the CPU, strided: a sparse constant (cvxpylayers' problem matrices) by its dense values."""
    import torch

    data = t.detach().cpu()
    return data.to_dense() if data.layout != torch.strided else data


def _fingerprint(t) -> str:
    import torch

    if isinstance(t, torch.Tensor):
        data = _dense(t)
        if data.is_conj() or data.is_neg():
            data = data.resolve_conj().resolve_neg()
        data = data.contiguous()
        return f"T{tuple(t.shape)}{t.dtype}{t.requires_grad}:" + hashlib.sha1(data.numpy().tobytes()).hexdigest()[:16]
    return repr(t)


def run_graph(gm, *args):
    """``gm(*args)`` by walking its nodes: no generated code (a recorded graph compiles it lazily, Note
    [Recorded graphs]). Each value is dropped after its last use, as the generated code does.

    Not ``torch.fx.Interpreter``: on a five-op recorded graph it took 0.11 ms a run, this walk 0.035 ms
    (the compiled code 0.032 ms), and the fidelity check runs it at every probe point."""
    import torch

    nodes = list(gm.graph.nodes)
    last: dict = {}
    for i, node in enumerate(nodes):
        for a in node.all_input_nodes:
            last[a] = i
    env: dict = {}
    it = iter(args)
    for i, node in enumerate(nodes):
        if node.op == "output":
            return torch.fx.node.map_arg(node.args[0], env.__getitem__)
        if node.op == "placeholder":
            env[node] = next(it)
            continue
        if node.op == "get_attr":
            value: Any = gm
            for part in node.target.split("."):
                value = getattr(value, part)
            env[node] = value
            continue
        a = torch.fx.node.map_arg(node.args, env.__getitem__)
        k = torch.fx.node.map_arg(node.kwargs, env.__getitem__)
        if node.op == "call_function":
            env[node] = node.target(*a, **k)
        elif node.op == "call_method":
            env[node] = getattr(a[0], node.target)(*a[1:], **k)
        else:  # call_module
            env[node] = gm.get_submodule(node.target)(*a, **k)
        for used in node.all_input_nodes:
            if last.get(used) == i:
                del env[used]
    return None


def _flat_outputs(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat_outputs(o)]
    return []


_TRACES: OrderedDict = OrderedDict()
_MODELS: OrderedDict = OrderedDict()


def _remember(cache: OrderedDict, key, value):
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)
    return value


#: Rounds of re-tracing through torch's decompositions of unsupported ops (Note [Decomposing unsupported ops]).
DECOMPOSE_ROUNDS = 4


def trace(call: Callable, args: Sequence[Any], leaves: list[Leaf], key: Any = None,
          budget: int | None = None, decompose: bool = True,
          out_shapes: list[tuple[int, ...]] | None = None) -> Traced | Unsupported:
    """Trace ``call(*args)`` (args: the checked leaves' tensors first, in ``leaves`` order).

    ``call`` takes the leaves' tensors as its arguments; ``out_shapes``, its floating outputs' shapes at
    ``args`` where the caller knows them (one call fewer). With ``key`` (the
    function, shapes, dtypes and constant values) the graph is cached. A graph
    whose nodes hold more than ``budget`` elements is not traced again through
    decompositions: the per-element leg would exceed its budget anyway (Note
    [Derivation budget]; ALIKED's backbone was traced five times, 7 s).

    Note [Decompositions on demand]
    ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    Each round of torch's decompositions traces the function again; on 150
    gradcheck tests of kornia they took 7.4 of 31 s, mostly for the
    per-element leg, which a call needs only where the tensor-level leg
    (covering ``convolution``, ``grid_sampler``, ``linalg`` ops without
    them) did not pass it. With ``decompose=False`` a graph with ops outside
    the per-element table comes back as :class:`Unsupported` with
    ``deferred`` set, and the drop-in traces the decompositions only when it
    needs that leg (the first graph is reused from the cache). Each round
    traces the previous *graph* again, not the function: a pure aten graph
    runs in a fraction of the user's Python (kornia's 70 ms calls), and the
    result is checked against the function like any graph (Note [Trace
    fidelity]); kornia's routed time fell from 24 to 19.3 s.
    """
    cache_key = key if decompose or key is None else (key, "first")
    _standard_cprofile()
    if cache_key is not None and cache_key in _TRACES:
        _TRACES.move_to_end(cache_key)
        return _TRACES[cache_key]
    import torch

    real = [a.detach().clone() for a in args]
    if out_shapes is None:  # the caller may know them from its own call at these inputs
        with torch.no_grad():
            out = _flat_outputs(call(*real))
        out_shapes = [tuple(o.shape) for o in out if o.is_floating_point()]
    earlier = _TRACES.get((key, "first")) if decompose and key is not None else None
    if earlier is not None and (not isinstance(earlier, Unsupported) or earlier.deferred):
        gm = earlier.gm  # the first graph, traced by a call that deferred the decompositions
        result = earlier if not isinstance(earlier, Unsupported) else _analyse(gm, real, leaves, out_shapes)
    else:
        try:
            gm = _make_graph(call, real)
            # the graph evaluated again: an op recorded wrongly fails here (Note [Internal failures] in
            # torch_check.py: ours never stands in for a verdict; gpytorch's pow_ did, before _functional)
            result = _analyse(gm, real, leaves, out_shapes)
        except Exception as exc:  # noqa: BLE001 - any tracing failure means no symbolic leg
            failed = Unsupported([], leaves, out_shapes, f"tracing failed: {exc}", outside=True)
            return _remember(_TRACES, cache_key, failed) if cache_key is not None else failed
    reads = reads_of(gm)
    if reads:  # Note [Reads of the inputs]: the branch of these inputs, not to be reused at others
        cache_key = key = None
    if not decompose:
        if isinstance(result, Unsupported):
            result.gm, result.deferred = gm, bool(result.targets)
        return _remember(_TRACES, cache_key, result) if cache_key is not None else result
    # Note [Decomposing unsupported ops]: an op outside the table (batch_norm, conv, ...) is traced
    # again through torch's own decomposition of it (torch._decomp), until the graph is all supported.
    from torch._decomp import get_decompositions

    first, table = gm, {}
    for _ in range(DECOMPOSE_ROUNDS):
        if not isinstance(result, Unsupported) or not result.targets:
            break
        if budget is not None and _elements(gm) > budget:
            break
        more = {op: fn for op, fn in get_decompositions(result.targets).items() if op not in table}
        if not more:
            break
        table.update(more)
        try:  # the graph traced again, not the function (Note [Decompositions on demand])
            again = _make_graph(gm, real, table)
            result, gm = _analyse(again, real, leaves, out_shapes), again
        except Exception:  # noqa: BLE001 - the decomposition does not trace: keep the first verdict
            break
    if isinstance(result, Unsupported):
        result.gm = first  # for the tensor-level engine (engines/tensor.py), which reads what it covers
    elif reads:
        result.gm.meta["reads"] = reads  # a graph traced again from the recorded one keeps its branch
    return _remember(_TRACES, key, result) if key is not None else result


def reads_of(graph) -> tuple[str, ...]:
    """The ops through which ``graph`` (a graph module, or a trace's) read values of the inputs into Python
    (Note [Reads of the inputs] in recorder.py): empty where its branches hold at any input."""
    gm = getattr(graph, "gm", graph)
    return tuple(getattr(gm, "meta", {}).get("reads", ()))


def _standard_cprofile() -> None:
    """Import the standard library's ``cProfile`` once, past a ``profile.py`` of the user's that shadows the
    standard ``profile`` it imports: torch's tracers import ``torch._dynamo``, which imports ``cProfile``, and
    pytorch_wavelets' tests folder holds a ``profile.py`` -- put on ``sys.path`` before our pytest plugin ran
    (a ``conftest.py`` beside it), every trace failed with "module 'profile' has no attribute 'run'" and its
    calls went to finite differences (60 s each). The user's ``profile`` module stays what ``import
    profile`` gives them."""
    import sys

    if "cProfile" in sys.modules:
        return
    try:
        import cProfile  # noqa: F401
        return
    except (ImportError, AttributeError):  # the user's profile.py came first on sys.path
        pass
    import importlib.util
    import os
    import sysconfig

    spec = importlib.util.spec_from_file_location("profile", os.path.join(sysconfig.get_paths()["stdlib"], "profile.py"))
    if spec is None or spec.loader is None:
        return
    standard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standard)
    theirs = sys.modules.get("profile")
    sys.modules["profile"] = standard
    try:
        import cProfile  # noqa: F401,F811
    except (ImportError, AttributeError):
        pass
    finally:
        if theirs is None:
            sys.modules.pop("profile", None)
        else:
            sys.modules["profile"] = theirs


def _elements(gm) -> int:
    """The elements computed by a graph's ops: a lower bound of its per-element work (Note [Derivation budget])."""
    return sum(_numel(n.meta.get("val")) for n in gm.graph.nodes if n.op == "call_function")


def _make_graph(call: Callable, real: list, table: dict | None = None):
    """The graph of ``call``: recorded (Note [Recorded graphs] in recorder.py), else ``make_fx`` of it
    functionalized (Note [Functional graphs]), else plain ``make_fx`` where functionalization fails to trace.

    Note [Functional graphs]
    ~~~~~~~~~~~~~~~~~~~~~~~~
    In-place writes into views (``out[..., 0] = x / w``, ``base[1:3].mul_(0)``)
    follow torch's aliasing only if the interpreter replays storage sharing
    exactly. ``torch.func.functionalize`` rewrites them into pure ops
    (``select_scatter``, ``slice_scatter``, ``copy``), so the graph has no
    mutation and every subgraph that does not depend on the inputs (a kernel's
    coefficients, normalised in place) is folded by torch itself, in the code's
    own dtype: a float32 kernel built inside the function was interpreted in
    exact arithmetic before and its correct float64 backward blamed at 1.8e-8.
    """
    import logging

    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    from .recorder import record

    try:  # Note [Recorded graphs]: the real call, recorded at dispatch level, where it keeps the meaning
        return record(call, real, table)
    except Exception:  # noqa: BLE001 - declined (in-place writes into views or inputs) or unusual code
        pass
    try:  # the same, functionalized: writes into views become scatters, as under make_fx below, and a read of
        # the inputs stays the given inputs' branch (make_fx refuses it: kornia's boxes write into slices and
        # check their widths, and went to finite differences)
        return record(torch.func.functionalize(call), real, table)
    except Exception:  # noqa: BLE001 - make_fx decides
        pass
    trace_log = logging.getLogger("torch.__trace")  # make_fx's structured DEBUG records: noise in a test's report
    was = trace_log.disabled
    trace_log.disabled = True
    restore = _one_fake_mode()
    try:
        try:
            return make_fx(torch.func.functionalize(call), decomposition_table=table)(*real)
        except Exception:  # noqa: BLE001 - functionalization refuses some code: the plain graph (Note [In-place ops])
            return make_fx(call, decomposition_table=table)(*real)
    finally:
        trace_log.disabled = was
        restore()


def _one_fake_mode() -> Callable[[], None]:
    """Note [One fake mode]: make_fx records each value's shape and strides as a fake tensor, and for a real
    value builds a new ``FakeTensorMode`` to make it (``extract_val``): about 1 ms a node, half of a trace
    (kornia's 46 make_fx traces took 7.9 s; a 200-op chain 0.19 s, 0.09 s with one mode). While we trace,
    that constructor returns one shared mode for exactly that call; any other construction is torch's own.
    Where torch has no such name (another version), nothing is patched. Returns what restores it."""
    from torch.fx.experimental import proxy_tensor

    original: Any = getattr(proxy_tensor, "FakeTensorMode", None)
    if original is None or not isinstance(original, type):
        return lambda: None
    class _Shared(original):  # a subclass: torch's isinstance checks still see a FakeTensorMode
        def __new__(cls, *args, **kwargs):
            if args or kwargs != {"allow_fallback_kernels": True}:
                return original(*args, **kwargs)
            if "mode" not in _SHARED_FAKE:
                _SHARED_FAKE["mode"] = original(allow_fallback_kernels=True)
            return _SHARED_FAKE["mode"]

    setattr(proxy_tensor, "FakeTensorMode", _Shared)  # noqa: B010 - a module attribute, patched for the trace

    def restore() -> None:
        setattr(proxy_tensor, "FakeTensorMode", original)  # noqa: B010

    return restore


#: The one FakeTensorMode of Note [One fake mode], made on first use.
_SHARED_FAKE: dict = {}


#: Ops whose result depends on their input's shape, not its values.
_SHAPE_ONLY = {"ones_like", "zeros_like", "full_like", "empty_like", "new_zeros", "new_ones", "new_full",
               "new_empty", "sym_size", "size"}


def _fold(gm, real) -> tuple[set, dict, list]:
    """Evaluate the graph at ``real``: the nodes that depend on a leaf, the others' values, the live targets.

    The values of nodes that do not depend on a leaf are torch's own, in the
    code's own dtype (Note [Functional graphs]). None of the three depends on the leaves' values, only on
    the graph (and its leaves' shapes, fixed by it): the result is kept on the graph module, and the trace's
    analysis and the tensor-level engine's graph share one evaluation (a fifth of a small function's trace).
    """
    import torch

    kept = getattr(gm, "meta", {}).get(_FOLDED)
    if kept is not None:
        return kept
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    live: set = {n.name for n in placeholders}
    # Note [In-place ops]: with a mutation in the graph, a "constant" may be written into later;
    # then only nodes without inputs (factories) are folded, everything else is interpreted.
    mutating = any(
        n.op == "call_function" and getattr(n.target, "__name__", "").split(".")[0].endswith("_")
        and not getattr(n.target, "__name__", "").startswith("_")
        for n in gm.graph.nodes
    )
    env: dict = {n.name: r for n, r in zip(placeholders, real)}
    raw: dict = {}
    targets: list = []

    def val(a):
        return torch.fx.node.map_arg(a, lambda n: env[n.name])

    for node in gm.graph.nodes:
        if node.op == "placeholder" or node.op == "output":
            continue
        if node.op == "get_attr":
            env[node.name] = raw[node.name] = getattr(gm, node.target)
            continue
        deps = {a.name for a in node.all_input_nodes}
        if getattr(node.target, "__name__", "").split(".")[0] in _SHAPE_ONLY:
            deps = set()  # its value depends on the input's shape only: a constant
        with torch.no_grad():
            env[node.name] = node.target(*val(node.args), **val(node.kwargs))
        if deps & live or (mutating and deps):
            live.add(node.name)
            targets.append(node.target)
        else:
            raw[node.name] = env[node.name]
    if isinstance(getattr(gm, "meta", None), dict):
        gm.meta[_FOLDED] = (live, raw, targets)
    return live, raw, targets


#: The key of :func:`_fold`'s result in a graph module's ``meta``.
_FOLDED = "gradcheck_lab.fold"


def _analyse(gm, real, leaves, out_shapes) -> Traced | Unsupported:
    """Which nodes depend on a leaf, their constants, and which ops are unsupported."""
    live, raw, live_targets = _fold(gm, real)
    consts = _Constants(raw)
    missing: list[str] = []
    targets: list = []
    for target in live_targets:
        if target is not operator.getitem and _handler(target) is None:
            missing.append(getattr(target, "__name__", str(target)))
            targets.append(target)
    missing += _indices_used(gm)
    if missing:
        return Unsupported(sorted(set(missing)), leaves, out_shapes, "op outside the supported table",
                           list(dict.fromkeys(targets)))
    key_consts = "".join(f"{k}={_fingerprint(raw[k])}" for k in sorted(consts))
    key = hashlib.sha1((_structure(gm) + repr([(lf.shape, lf.stem, lf.names) for lf in leaves]) + key_consts).encode()
                       ).hexdigest()
    return Traced(gm, leaves, live, consts, out_shapes, key)


def _structure(gm) -> str:
    """The graph's ops and arguments as text, a key of its cache entry: what its generated code says, without
    generating it (Note [Recorded graphs] in recorder.py)."""
    return "\n".join(f"{n.op} {n.name} {n.target} {n.args!r} {n.kwargs!r}" for n in gm.graph.nodes)


#: Ops whose per-element work is their output's size times a contraction (Note [Derivation budget]).
_CONTRACTING = {"mm", "bmm", "matmul", "mv", "dot", "addmm", "addmv", "baddbmm"}


def _numel(v) -> int:
    if isinstance(v, (list, tuple)):
        return sum(_numel(x) for x in v)
    shape = getattr(v, "shape", None)
    return math.prod(shape) if shape is not None else 1


def element_work(traced: Traced) -> int:
    """Note [Derivation budget]: the per-element symbolic work of a graph, in element operations.

    The symbolic leg holds one SymPy expression per tensor element of every
    node that depends on an input; a node costs its output's size times its
    contraction (the inner dimension of a matrix product, ``C_in/groups x
    kernel`` of a convolution, the reduced size of a reduction). A convolution
    of a 2x3x32x32 image with 8 3x3 filters is 8,192 x 27 = 221,184.
    """
    meta = getattr(traced.gm, "meta", None)
    key = ("gradcheck_lab.work", frozenset(traced.live))
    if isinstance(meta, dict) and key in meta:  # a cached trace's, asked at each call
        return meta[key]
    total = 0
    for node in traced.gm.graph.nodes:
        if node.op != "call_function" or node.name not in traced.live:
            continue
        out = _numel(node.meta.get("val"))
        packet = getattr(node.target, "__name__", "").split(".")[0]
        tensors = [a.meta.get("val") for a in node.all_input_nodes]
        shapes = [tuple(getattr(t, "shape", ())) for t in tensors]
        if packet in _CONTRACTING:
            mat = shapes[1] if packet.startswith(("addm", "baddbmm")) and len(shapes) > 2 else shapes[0]
            k = mat[-1] if mat else 1
        elif packet == "convolution" and len(shapes) > 1 and shapes[1]:
            k = math.prod(shapes[1]) // max(shapes[1][0], 1)
        else:
            k = max([math.prod(sh) for sh in shapes] + [1]) // max(out, 1)
        total += out * max(int(k), 1)
    if isinstance(meta, dict):
        meta[key] = total
    return total


#: What may read max_pool's indices: they are not computed (``_max_pool``).
_INDEX_USERS = {"squeeze", "unsqueeze", "view", "reshape", "_unsafe_view", "clone", "alias"}


def _indices_used(gm) -> list[str]:
    """``max_pool*_with_indices`` whose indices feed anything but reshapes and the outputs."""
    bad = []
    for node in gm.graph.nodes:
        if not getattr(node.target, "__name__", "").startswith("max_pool"):
            continue
        todo = [u for u in node.users if u.target is operator.getitem and u.args[1] == 1]
        while todo:
            n = todo.pop()
            for u in n.users:
                if u.op == "output":
                    continue
                if getattr(u.target, "__name__", "").split(".")[0] not in _INDEX_USERS:
                    bad.append(f"{node.target.__name__} (its indices used by {u.target})")
                todo.append(u)
    return bad


# ---------------------------------------------------------------- interpretation


def interpret(traced: Traced, ops, inputs: list[np.ndarray], deadline: float | None = None) -> list[np.ndarray]:
    """Run the graph on ``ops`` with the leaves as object arrays; the floating outputs.

    ``deadline`` (a :func:`time.perf_counter` value): TimeoutError between nodes once it has passed."""
    import time

    import torch

    env: dict = {}
    placeholders = iter(inputs)
    result = None
    for node in traced.gm.graph.nodes:
        if deadline is not None and time.perf_counter() > deadline:
            raise TimeoutError("the graph's interpretation ran past its deadline")
        if node.op == "placeholder":
            env[node.name] = next(placeholders)
        elif node.name in traced.consts:
            c = traced.consts[node.name]
            env[node.name] = c.copy() if isinstance(c, np.ndarray) else c  # Note [In-place ops]
        elif node.op == "output":
            result = torch.fx.node.map_arg(node.args[0], lambda n: env[n.name])
        elif node.target is operator.getitem:
            seq, i = node.args
            env[node.name] = env[seq.name][i]
        else:
            found = _handler(node.target)
            assert found is not None, node.target  # _analyse refused the graph otherwise
            fn = found[0]
            args = torch.fx.node.map_arg(node.args, lambda n: env[n.name])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n.name])
            kwargs = {k: v for k, v in kwargs.items() if k not in ("dtype", "layout", "device", "pin_memory",
                                                                       "memory_format", "non_blocking")}
            env[node.name] = fn(ops, *args, **kwargs)
    outs = result if isinstance(result, (list, tuple)) else [result]
    flat: list = []
    for o in outs:
        if isinstance(o, (list, tuple)):
            flat.extend(o)
        else:
            flat.append(o)
    return [_obj(o) for o in flat if isinstance(o, np.ndarray) and (o.dtype == object or o.dtype.kind == "f")]


def _model_for(traced: Traced) -> Model:
    """The derivation-carrying model of a graph, cached by its structure (not yet at a point)."""
    if traced.key in _MODELS:
        _MODELS.move_to_end(traced.key)
        return _MODELS[traced.key]
    params = [Var(n, init=0.0) for leaf in traced.leaves for n in leaf.var_names]
    names = [lf.var_names for lf in traced.leaves]
    shapes = [lf.shape for lf in traced.leaves]

    def predict(ops, p, v):
        inputs = []
        for ns, shape in zip(names, shapes):
            arr = np.empty(len(ns), dtype=object)
            for k, n in enumerate(ns):
                arr[k] = getattr(p, n)
            inputs.append(arr.reshape(shape))
        return [e for o in interpret(traced, ops, inputs) for e in o.ravel()]

    def project(ops, outputs, cotangent):
        # The loss of one point is the cotangent's projection of the outputs (a VJP's loss).
        return _add_all(ops, [c * o for c, o in zip(cotangent, outputs)])

    model = Model.from_function(
        predict,
        params=params,
        inputs=(),
        target=Var("cotangent", shape=(traced.n_out,), domain=(-1.0, 1.0), max_abs=1.0),
        loss=project,
        name="traced",
        formula="cotangent . f(inputs)",
        description="a torch forward traced to aten ops",
    )
    model.loss_name = "projection"
    # verify() shows a few derivatives "simplified"; for a traced graph they are long sums in
    # generated names, and simplifying them cost seconds (LayerNorm 3x4: 1.3 s). Show them as derived.
    from .engines.symbolic import SIMPLIFY_MAX_OPS  # noqa: F401 - the cache below is symbolic.simplified's

    model._cache["simplified"] = _RawDerivatives(model)
    # symbolic.derivatives' cache: the same SymPy derivatives of sum_k c_k y_k, term by term
    # (Note [Sparse derivatives]).
    # (An engine that derives in reverse mode, O(size of the loss), does not read this cache.)
    from .engines import symbolic

    if not hasattr(symbolic, "_derivation"):
        th, da = model.symbols()
        model._cache["grads"] = sparse_gradient(list(zip(da, model.predict_expr())), th)
    return _remember(_MODELS, traced.key, model)


def sparse_gradient(terms: list[tuple[Any, Any]], symbols: list) -> list:
    """``d/ds sum_k coef_k * expr_k`` for every symbol ``s``, differentiating each term only by its own symbols.

    Note [Sparse derivatives]: ``sympy.diff`` of the whole sum visits every
    term for every symbol (a 10x10 elementwise function: 10,000 term
    derivatives, 5.7 s); most terms do not contain the symbol. The same
    derivative, organised by each term's free symbols, costs one ``diff`` per
    (term, symbol it contains): 100 there (0.1 s). ``coef`` must not contain
    the symbols (a cotangent or direction component).
    """
    import sympy as sp

    index = {s: i for i, s in enumerate(symbols)}
    parts: list[list] = [[] for _ in symbols]
    for coef, expr in terms:
        expr = sp.sympify(expr)
        for s in expr.free_symbols:
            i = index.get(s)
            if i is not None:
                parts[i].append(coef * sp.diff(expr, s))
    return [sp.Add(*p) for p in parts]


class _RawDerivatives(dict):
    """``symbolic.simplified``'s cache for a traced model: the derivative as derived, not simplified."""

    def __init__(self, model: Model):
        super().__init__()
        self._model = model

    def __contains__(self, i) -> bool:
        if not super().__contains__(i):
            from .engines.symbolic import derivatives

            self[i] = derivatives(self._model)[i]
        return True


#: Half-width of the random points around a value ``t``: ``SPREAD * |t|`` (``SPREAD`` at 0).
SPREAD = 0.1


#: Random points per sampling block of the drop-in's models (Model.block): a call draws a few.
DROPIN_BLOCK = 16


def model_of(traced: Traced, values: list[np.ndarray], name: str = "traced") -> Model:
    """The traced model at the leaves' ``values``: initial values and sampling domains around them.

    The model's derivations (SymPy, compiled functions) are shared by every
    call on the same graph (``_cache``); only the point changes. Random
    points draw each component uniformly from ``t +- SPREAD * |t|`` (``+-
    SPREAD`` where ``t = 0``), none spread over magnitudes: the sign is
    kept, so a ``log`` or ``sqrt`` stays in its domain, and a rotation
    matrix or an image stays near one.
    """
    from dataclasses import replace

    base = _model_for(traced)
    flat, lo, hi = _domains(values)
    big = float(np.finfo(float).max)
    params = tuple(Var(var.name, init=t, domain=(a, b), max_abs=min(max(2 * abs(t), 1.0), big))
                   for var, t, a, b in zip(base.params, flat.tolist(), lo.tolist(), hi.tolist()))
    return replace(base, params=params, name=name, spread=False, block=DROPIN_BLOCK)


def _domains(values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leaves' values flat and the bounds ``t -+ SPREAD |t|`` (``-+ SPREAD`` at 0) of their random points."""
    flat = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values]) if values else np.zeros(0)
    big = float(np.finfo(float).max)  # a value near it (logsumexp's -1e308 mask) keeps finite bounds
    r = np.where(flat != 0, SPREAD * np.abs(flat), SPREAD)
    with np.errstate(over="ignore"):  # overflow is inf, clipped to the largest float
        return flat, np.maximum(flat - r, -big), np.minimum(flat + r, big)


def points_around(values: list[np.ndarray], n_out: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(theta, cotangents)``: the first ``n`` random points of :func:`model_of`'s model at ``values``, the same
    numbers as its ``sample(n, seed=seed)`` (Note [Sampling] in model.py; none spread), drawn without building
    the model: that costs a Python object per input component (0.5 ms of a 5 ms ``fast_mode`` call on 54)."""
    _, lo, hi = _domains(values)
    thetas, cots = [], []
    for k in range(-(-n // DROPIN_BLOCK)):
        rng = np.random.default_rng([seed, k])
        thetas.append((lo[:, None] + (hi - lo)[:, None] * rng.random((lo.size, DROPIN_BLOCK))).T)
        cots.append(rng.uniform(-1.0, 1.0, size=(DROPIN_BLOCK, n_out)))
    if not thetas:
        return np.zeros((0, lo.size)), np.zeros((0, n_out))
    return np.concatenate(thetas)[:n], np.concatenate(cots)[:n]


def name_leaves(leaves: list[Leaf]) -> None:
    """Give every component of every leaf an identifier (a model's variable name): ``net.0.weight`` -> ``net_0_weight_1_2``.

    Only the per-element legs read them, so they are generated when first read (``Leaf.var_names``: a Python
    string per component cost 0.4 ms of a small call, seconds on a 1M-element input) wherever ``stem_i_j``
    cannot collide; otherwise (a stem that is another's plus an index, a reserved name) each is made unique now.
    """
    stems = [_stem(leaf.label) for leaf in leaves]
    clash = _stems_clash(tuple(stems))
    taken: set[str] = set(_RESERVED)
    for leaf, stem in zip(leaves, stems):
        leaf.stem, leaf.names = stem, None
        if clash:
            leaf.names = [_identifier(name, taken) for name in leaf.var_names]


def leaf_labels(traced: Traced | Unsupported) -> dict[str, str]:
    """Var name -> element label (``x[0, 1]``)."""
    out = {}
    for leaf in traced.leaves:
        for k, n in enumerate(leaf.var_names):
            out[n] = leaf.element(k)
    return out


def is_float_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor) and x.is_floating_point()
