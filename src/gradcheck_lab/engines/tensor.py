"""The tensor-level symbolic engine: per-op rules derived once by SymPy, composed over a traced graph.

The per-element symbolic leg (:mod:`gradcheck_lab.torch_graph` with
:mod:`gradcheck_lab.engines.symbolic`) builds one SymPy expression per tensor
element of the whole trace: exact and readable, but about 1 ms per element
operation and ~0.9 MiB kept per checked function. This engine reads the same
aten graph and the same op table and differentiates it at tensor level
(Note [Tensor-level rules]); :func:`jacobian` returns the graph's outputs and
its Jacobian at one point, in float64.

Note [Tensor-level rules]
~~~~~~~~~~~~~~~~~~~~~~~~~
Forward mode over the graph, batched over tangents (the unit vectors of
every checked component, in chunks), each node in one of four kinds:

* **pointwise** (torch's ``Tag.pointwise``): SymPy derives the op's partial
  derivatives once per *signature* -- the op, which arguments are tensors,
  and its non-float arguments (ints, strings, None) -- from the op's own
  entry in :data:`gradcheck_lab.torch_graph.OPS` (the expression every other
  engine reads), with float scalars as symbols. ``lambdify`` turns them into
  NumPy functions kept in a bounded cache (:data:`RULE_CACHE`, least
  recently used dropped); the tangent is ``sum_i d_i * t_i``, broadcast as
  the op broadcasts. Piecewise-constant ops (``floor``, ``round``,
  ``remainder``...) have derivative 0 off their jumps (:data:`_STEPS`).
* **linear** in their floating tensor arguments jointly (views, indexing,
  ``cat``, ``sum``, ``mean``, ``where``, padding, pooling by average,
  functionalized writes): the tangent is the op's *own forward* applied to
  the tangents (``torch.vmap`` over the batch), affine offsets (a pad or fill
  value) set to 0. No derivative formula of torch is used.
* **multilinear** (``mm``, ``bmm``, ``convolution``, ``addmm``...): the sum
  over arguments of the op's forward with that argument replaced by its
  tangent (bias terms broadcast).
* **selection** (``amax``, ``max.dim``, ``max_pool*_with_indices``,
  ``sort``, ``topk``): the tangent at the selected position (a tie is a kink:
  engines may disagree there, and the per-element path judges it).

Anything else (``_softmax``, ``native_layer_norm``, ``var``...) is
decomposed by torch's own decomposition table into the kinds above before
the graph is read (``decompositions``). Values are torch's float64
evaluation of each op, with the subgraphs that do not depend on a checked
input folded at the code's own dtype (Note [Functional graphs]). Autograd is
never called: this leg stays independent of torch's derivative formulas.
"""

from __future__ import annotations

import contextvars
import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TensorGraph", "Uncovered", "build", "graph_of", "jacobian", "cotangent_products", "absolute_products", "directional", "uncovered", "RULE_CACHE", "CHUNK_ELEMENTS"]

#: Op signatures whose derived rules are kept (least recently used dropped).
RULE_CACHE = 512
#: Tangent elements held per node at once: the unit tangents go through in chunks of this budget.
CHUNK_ELEMENTS = 2**22

#: Set while :func:`absolute_products` runs: every rule propagates ``|d| |t|`` (Note [Absolute chain]).
_ABSOLUTE: contextvars.ContextVar[bool] = contextvars.ContextVar("gradcheck_lab_absolute_chain", default=False)


class Uncovered(Exception):
    """An op the tensor engine does not propagate (the caller uses another leg)."""


# ---------------------------------------------------------------- op kinds

_LINEAR = frozenset({
    "view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "unsqueeze", "squeeze", "slice",
    "select", "index", "gather", "cat", "stack", "split", "split_with_sizes", "unbind", "clone", "copy",
    "select_scatter", "slice_scatter", "index_put", "alias", "detach", "lift_fresh_copy", "contiguous",
    "sum", "mean", "neg", "where", "masked_fill", "constant_pad_nd", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "flip", "roll", "repeat", "index_select", "diagonal", "tril", "triu", "cumsum", "expand_copy", "view_copy",
    "permute_copy", "squeeze_copy", "unsqueeze_copy", "transpose_copy", "t_copy", "slice_copy", "select_copy",
    "unfold", "as_strided", "narrow", "scatter_add", "scatter", "index_add", "embedding", "diag_embed",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "upsample_bilinear2d", "upsample_linear1d",
    "upsample_bicubic2d", "upsample_trilinear3d", "_upsample_nearest_exact2d", "pixel_shuffle", "pixel_unshuffle",
    "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d",
    "replication_pad3d", "im2col", "col2im", "_adaptive_avg_pool2d", "adaptive_avg_pool2d", "trace", "movedim",
    "broadcast_in_dim", "squeeze_dims", "new_zeros", "zeros_like", "fill", "conj", "resolve_conj", "resolve_neg",
    "channel_shuffle", "_reshape_alias", "real", "diag", "split_copy", "unbind_copy", "rot90",
})
_MULTILINEAR = frozenset({"mm", "bmm", "matmul", "mv", "dot", "convolution", "addmm", "addmv", "baddbmm", "outer",
                          "ger", "einsum", "tensordot", "_convolution"})
_SELECTION = frozenset({"amax", "amin", "max", "min", "max_pool1d_with_indices", "max_pool2d_with_indices",
                        "max_pool3d_with_indices", "sort", "topk", "kthvalue", "median", "cummax", "cummin",
                        "adaptive_max_pool2d"})
#: Ops with a rule of their own (a nonlinear reduction, linear algebra from its defining identity).
_SPECIAL = frozenset({"var", "prod", "linalg_inv_ex", "_linalg_solve_ex", "_linalg_det", "_linalg_check_errors",
                      "linalg_solve", "inverse", "linalg_cholesky_ex", "_linalg_eigh", "linalg_qr", "_linalg_svd"})
#: Pointwise ops that are affine in their tensor arguments: linear after their scalar offsets are set to 0.
_POINTWISE_LINEAR = frozenset({"where", "masked_fill", "clone", "neg", "alias", "detach", "_to_copy", "fill"})


@functools.lru_cache(maxsize=RULE_CACHE)
def _packet(target) -> str:
    """The op's name without its overload (``mm`` of ``aten.mm.default``); asked per node and row, looked up once."""
    name = getattr(target, "__name__", None)
    return (name if name is not None else str(target)).split(".")[0]


@functools.lru_cache(maxsize=RULE_CACHE)
def _overload(target) -> str:
    return getattr(target, "__name__", "")


def _is_pointwise(target) -> bool:
    import torch

    return torch.Tag.pointwise in getattr(target, "tags", ())


@functools.lru_cache(maxsize=RULE_CACHE)
def _kind(target) -> str | None:
    """How the op's tangents propagate; one lookup per op (a call's graph asks per node, per row)."""
    name = _packet(target)
    if target is operator.getitem:
        return "getitem"
    if name.endswith("_") and not name.startswith("_"):
        return None  # an in-place op: a graph that functionalize could not rewrite
    if name in _SPECIAL:
        return "special"
    if name in ("_to_copy", "convert_element_type"):
        return "copy"
    if name in _LINEAR or name in _POINTWISE_LINEAR:
        return "linear"
    if name in _MULTILINEAR:
        return "multilinear"
    if name in _SELECTION and name not in ("max", "min") or _overload(target) in (
            "max.default", "min.default", "max.dim", "min.dim"):
        return "selection"
    pointwise = _is_pointwise(target) or getattr(target, "namespace", "") == "prims"
    if pointwise and _rule_source(target) is not None:
        return "pointwise"
    return None


def _is_float(v) -> bool:
    import torch

    return isinstance(v, torch.Tensor) and v.is_floating_point()


# ---------------------------------------------------------------- pointwise rules


def _step_function(name: str, numeric: Callable):
    """A SymPy function with derivative 0 (a step: floor, round...), printed as ``numeric`` by lambdify."""
    import sympy as sp

    cls = type(name, (sp.Function,), {"fdiff": lambda self, argindex=1: sp.S.Zero})
    return cls, numeric


@functools.cache
def _steps() -> dict:
    """Note [Tensor-level rules]: piecewise-constant pieces, derivative 0 off their jumps."""
    return {name: _step_function(f"step_{name}", f) for name, f in (
        ("floor", np.floor), ("ceil", np.ceil), ("round", np.round), ("trunc", np.trunc), ("sign", np.sign))}


def _extra_expression(name: str):
    """SymPy forms of pointwise ops outside the per-element table (``log2``, ``floor``, ``remainder``...)."""
    return _extra_table().get(name)


@functools.cache
def _extra_table() -> dict[str, Callable]:
    import sympy as sp

    st = {k: v[0] for k, v in _steps().items()}
    table: dict[str, Callable] = {
        "log2": lambda a: sp.log(a) / sp.log(2),
        "log10": lambda a: sp.log(a) / sp.log(10),
        "exp2": lambda a: sp.Integer(2) ** a,
        "floor": st["floor"], "ceil": st["ceil"], "round": st["round"], "trunc": st["trunc"],
        "frac": lambda a: a - st["trunc"](a),
        "remainder": lambda a, b: a - b * st["floor"](a / b),
        "fmod": lambda a, b: a - b * st["trunc"](a / b),
        "sgn": st["sign"],
        "xlogy": lambda a, b: a * sp.log(b),
        "lgamma": sp.loggamma,
        "digamma": lambda a: sp.polygamma(0, a),
        "hardsigmoid": lambda a: sp.Min(sp.Max(a / 6 + sp.Rational(1, 2), 0), 1),
        "hardswish": lambda a: a * sp.Min(sp.Max(a + 3, 0), 6) / 6,
        "mish": lambda a: a * sp.tanh(sp.log(1 + sp.exp(a))),
        "logit": lambda a, eps=None: sp.log(a / (1 - a)),
        "sinc": lambda a: sp.sin(sp.pi * a) / (sp.pi * a),
        "erfinv": sp.erfinv,
        "log_sigmoid_forward": lambda a: -sp.log(1 + sp.exp(-a)),
        "softshrink": lambda a, lam=0.5: sp.Piecewise((a - lam, a > lam), (a + lam, a < -lam), (0, True)),
        "hardshrink": lambda a, lam=0.5: sp.Piecewise((a, sp.Abs(a) > lam), (0, True)),
        "heaviside": lambda a, b: st["sign"](a) * 0,
        "copysign": lambda a, b: sp.Abs(a) * st["sign"](b),
        "true_divide": lambda a, b: a / b,
        "float_power": lambda a, b: a**b,
        "lerp": lambda a, b, w: a + w * (b - a),
        "addcmul": lambda s, a, b, value=1: s + value * a * b,
        "addcdiv": lambda s, a, b, value=1: s + value * a / b,
    }
    return table


def _rule_source(target):
    from ..torch_graph import _handler

    name = _packet(target)
    if _extra_expression(name) is not None:
        return "extra"
    return "table" if _handler(target) is not None else None


def _sympy_of(target, args: tuple, kwargs: dict):
    """The op's SymPy expression at ``args`` (SymPy symbols or plain values)."""
    from ..ops import backend

    extra = _extra_expression(_packet(target))
    if extra is not None:
        return extra(*args, **{k: v for k, v in kwargs.items() if k not in ("out",)})
    from ..torch_graph import _handler

    found = _handler(target)
    assert found is not None
    obj = [np.array(a, dtype=object) if hasattr(a, "free_symbols") else a for a in args]
    out = found[0](backend("sympy"), *obj, **kwargs)
    out = np.asarray(out, dtype=object)
    return out.reshape(()).item() if out.size == 1 else out


def _signature(args: Sequence, kwargs: dict, bake: bool = False) -> tuple:
    """Which arguments are tensors (``"T"``) or float scalars (``"S"``, their value when ``bake``); others as they are."""
    import torch

    def one(a):
        if isinstance(a, torch.Tensor) or isinstance(a, np.ndarray):
            return "T"
        if isinstance(a, float) and not isinstance(a, bool):
            return a if bake else "S"
        return a if isinstance(a, (int, str, bool, type(None))) else repr(a)

    return tuple(one(a) for a in args), tuple(sorted((k, one(v)) for k, v in kwargs.items()))


@functools.lru_cache(maxsize=RULE_CACHE)
def _rule(target, sig: tuple, wanted: tuple[int, ...]):
    """``f(*numeric arguments) -> [d op / d arg_i for i in wanted]``, derived once per op signature."""
    import sympy as sp

    from ..ops import LAMBDIFY_NUMPY

    pos_sig, kw_sig = sig
    symbols: list = []
    args: list = []
    for i, s in enumerate(pos_sig):
        if s in ("T", "S"):
            sym = sp.Symbol(f"a{i}", real=True)
            symbols.append(sym)
            args.append(sym)
        else:
            args.append(s)
    kwargs: dict = {}
    for k, s in kw_sig:
        if s in ("T", "S"):
            sym = sp.Symbol(f"k_{k}", real=True)
            symbols.append(sym)
            kwargs[k] = sym
        else:
            kwargs[k] = s
    expr = _sympy_of(target, tuple(args), kwargs)
    if isinstance(expr, np.ndarray) or not hasattr(expr, "free_symbols"):
        expr = sp.sympify(expr) if not isinstance(expr, np.ndarray) else None
    if expr is None:
        raise Uncovered(f"{_overload(target)}: no scalar expression")
    derivs = [sp.diff(expr, symbols[i]) for i in wanted]
    if any(d.has(sp.Derivative) for d in derivs):
        raise Uncovered(f"{_overload(target)}: SymPy leaves a derivative unevaluated")
    steps = {f"step_{k}": v[1] for k, v in _steps().items()}
    return sp.lambdify(symbols, derivs, modules=[{**steps, **LAMBDIFY_NUMPY}, "numpy"])


# ---------------------------------------------------------------- the graph


@dataclass
class TensorGraph:
    """A graph the engine reads: live nodes, folded constants (float64), float outputs in order."""

    gm: Any
    live: set
    consts: dict  # node name -> torch value (float tensors in float64)
    widest: int = 0  # the most elements of a node's value (at least 1): how many unit tangents fit a chunk

    def __post_init__(self):
        self.widest = max([_numel(n.meta.get("val")) for n in self.gm.graph.nodes if n.op != "output"] + [1])


def uncovered(gm, live: set) -> list:
    """The aten ops of live nodes that no kind covers (decomposed before reading, or not covered)."""
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.name in live and _kind(node.target) is None \
                and _has_float(node.meta.get("val")):
            out.append(node.target)
    return list(dict.fromkeys(out))


def _has_float(v) -> bool:
    """Whether a node's value (``meta["val"]``) holds a floating tensor: others carry no tangent."""
    if isinstance(v, (list, tuple)):
        return any(_has_float(x) for x in v)
    return bool(getattr(v, "is_floating_point", lambda: True)()) if v is not None else True


def build(gm, live: set, consts: dict) -> TensorGraph:
    """A :class:`TensorGraph` of a folded graph (``consts``: torch values at the code's own dtype)."""
    import torch

    folded = {}
    for k, v in consts.items():
        folded[k] = v.detach().to("cpu", torch.float64) if _is_float(v) else (
            v.detach().cpu() if isinstance(v, torch.Tensor) else v)
    return TensorGraph(gm, set(live), folded)


def graph_of(call: Callable, real: list, gm=None):
    """The graph for the tensor-level engine (Note [Tensor-level rules]), or the reason there is none.

    Ops no kind covers are replaced by torch's decompositions of them, for up
    to :data:`DECOMPOSE_ROUNDS` rounds. Returns ``(TensorGraph, "")`` or
    ``(None, why)``.
    """
    from torch._decomp import get_decompositions

    from ..torch_graph import DECOMPOSE_ROUNDS, _fold, _make_graph

    table: dict = {}
    try:
        gm = gm if gm is not None else _make_graph(call, real)
        for _ in range(DECOMPOSE_ROUNDS + 1):
            live, raw, _ = _fold(gm, real)
            missing = uncovered(gm, live)
            if not missing:
                return build(gm, live, raw), ""
            more = {op: fn for op, fn in {**get_decompositions(missing), **_own_decompositions(missing)}.items()
                    if op not in table}
            if not more:
                names = sorted({getattr(t, "__name__", str(t)) for t in missing})
                return None, f"ops the tensor-level rules do not cover: {', '.join(names)}"
            table.update(more)
            # the graph itself is traced again, not the function: kornia's Python took 70 ms a call, and
            # these rounds were a quarter of its routed time (the result is checked like any graph)
            gm = _make_graph(gm, real, table)
    except Exception as exc:  # noqa: BLE001 - any tracing failure: no tensor-level leg
        return None, f"tracing failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return None, "decompositions did not converge"


def _own_decompositions(ops) -> dict:
    """Decompositions torch lacks, into ops the rules cover (checked like any graph: Note [Trace fidelity])."""
    import torch

    own = {torch.ops.aten._cdist_forward.default: _cdist,  # descriptor matchers (kornia's match_smnn)
           torch.ops.aten.grid_sampler_3d.default: _grid_sampler_3d}  # 3D warps and crops
    return {op: fn for op, fn in own.items() if op in set(ops)}


def _grid_sampler_3d(a, grid, interpolation_mode=0, padding_mode=0, align_corners=False):
    """``grid_sampler_3d`` by indexing and its weights, as torch decomposes ``grid_sampler_2d`` (it has no
    decomposition in three dimensions): trilinear or nearest, zero, border or reflection padding."""
    import torch

    if interpolation_mode not in (0, 1) or padding_mode not in (0, 1, 2):
        return NotImplemented  # make_fx keeps the op: no tensor-level leg for it
    n_, c_, d_, h_, w_ = a.shape

    def reflect(coords, twice_low: int, twice_high: int):
        if twice_low == twice_high:
            return torch.zeros_like(coords)
        low, span = twice_low / 2, (twice_high - twice_low) / 2
        dist = (coords - low).abs()
        extra = torch.fmod(dist, span)
        flips = (dist / span).floor()
        return torch.where(torch.remainder(flips, 2) == 0, extra + low, span + low - extra)

    def source(coords, size: int):
        c = coords * ((size * 0.5 - 0.5) if align_corners else size * 0.5) + (size * 0.5 - 0.5)
        if padding_mode == 2:
            c = reflect(c, 0, 2 * (size - 1)) if align_corners else reflect(c, -1, 2 * size - 1)
        return c.clamp(0, size - 1) if padding_mode else c

    ix, iy, iz = source(grid[..., 0], w_), source(grid[..., 1], h_), source(grid[..., 2], d_)
    batch = torch.arange(n_, device=a.device).view(n_, 1, 1, 1, 1)
    channel = torch.arange(c_, device=a.device).view(1, c_, 1, 1, 1)

    def summand(x, y, z, weight):
        inside = (x >= 0) & (x < w_) & (y >= 0) & (y < h_) & (z >= 0) & (z < d_)
        xi, yi, zi = (torch.where(inside, t, 0).to(torch.int64).unsqueeze(1) for t in (x, y, z))
        return a[batch, channel, zi, yi, xi] * torch.where(inside, weight, 0).unsqueeze(1)

    if interpolation_mode == 1:
        return summand(ix.round(), iy.round(), iz.round(), torch.ones_like(ix))
    x0, y0, z0 = ix.floor(), iy.floor(), iz.floor()
    out = None
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                weight = (((ix - x0) if dx else (x0 + 1 - ix)) * ((iy - y0) if dy else (y0 + 1 - iy))
                          * ((iz - z0) if dz else (z0 + 1 - iz)))
                term = summand(x0 + dx, y0 + dy, z0 + dz, weight)
                out = term if out is None else out + term
    return out


def _cdist(x1, x2, p, compute_mode=None):
    """``torch.cdist`` by its definition, ``(sum |x1_i - x2_j|^p)^(1/p)``."""
    diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)
    if p == 2:
        return (diff * diff).sum(-1).sqrt()
    if p == 1:
        return diff.abs().sum(-1)
    if p == float("inf"):
        return diff.abs().amax(-1)
    if p == 0:
        return (diff != 0).to(diff.dtype).sum(-1)
    return diff.abs().pow(p).sum(-1).pow(1.0 / p)


# ---------------------------------------------------------------- forward mode

_DROP_KWARGS = ("dtype", "layout", "device", "pin_memory", "non_blocking")  # memory_format kept: strides matter to as_strided


def _call(target, args, kwargs, grad: bool = False):
    """The op at float64: float dtype conversions and device moves are dropped (the truth is exact)."""
    import torch

    name = _packet(target)
    if name in ("_to_copy", "convert_element_type"):
        a = args[0]
        dtype = kwargs.get("dtype", args[1] if len(args) > 1 else None)
        if dtype is None or dtype.is_floating_point:
            return a.to(torch.float64) if a.is_floating_point() or dtype is not None else a.clone()
        return a.to(dtype)
    if grad and getattr(target, "namespace", "") == "prims":  # prims have no autograd formulas: their aten twins
        return _prims_as_aten(name, args, kwargs)
    if _overload(target) in ("view.default", "_unsafe_view.default", "view_copy.default"):
        # the same values as a reshape; our float64 values may have other strides than the traced ones
        # (kornia's lab_to_rgb: "view size is not compatible with input tensor's size and stride")
        return args[0].reshape(args[1])
    if name == "detach":  # identity in the forward: the truth differentiates through it, as torch's gradcheck does
        return args[0].view_as(args[0]) if grad else args[0].clone()
    if name == "copy" and grad:  # a recorded copy_ into a fresh tensor: src in dst's shape (aten.copy has no autograd)
        dst, src = args[0], args[1]
        src = src.to(torch.float64) if dst.is_floating_point() else src.to(dst.dtype)
        return src.expand(dst.shape).clone()
    if kwargs:
        kwargs = {k: v for k, v in kwargs.items()
                  if k not in _DROP_KWARGS or (k == "dtype" and v is not None and not v.is_floating_point)}
    if grad or not torch.is_grad_enabled():  # forward() runs under no_grad once, not once per op
        return target(*args, **kwargs)
    with torch.no_grad():
        return target(*args, **kwargs)


def _prims_as_aten(name: str, args, kwargs):
    """A ``prims`` op (from torch's decompositions) by the aten op of the same meaning, for autograd."""
    import torch

    b = dict(kwargs)
    if name == "broadcast_in_dim":
        a, shape, dims = args[0], list(args[1]), list(args[2])
        new = [1] * len(shape)
        for i, d in enumerate(dims):
            new[d] = a.shape[i]
        return a.reshape(new).expand(shape)
    if name in ("sum", "amax", "amin"):
        return getattr(torch, name)(args[0], list(args[1]) if len(args) > 1 and args[1] is not None else [])
    if name == "var":
        over = list(args[1]) if len(args) > 1 and args[1] is not None else None
        corr = b.get("correction", args[2] if len(args) > 2 else 1)
        return torch.var(args[0], over, correction=corr)
    if name == "div":
        return torch.div(args[0], args[1])
    aten = getattr(torch.ops.aten, name, None)
    if aten is None:
        raise Uncovered(f"prims.{name} has no aten twin for the autograd leg")
    return aten(*args, **{k: v for k, v in b.items() if k not in _DROP_KWARGS})


def _expand_tangent(t, in_shape, out_shape):
    """A tangent ``(B, *in_shape)`` broadcast as the op broadcasts its argument to ``out_shape``."""
    lead = len(out_shape) - len(in_shape)
    return t.reshape((t.shape[0],) + (1,) * lead + tuple(in_shape))


def _pointwise(target, args, kwargs, tangents, value, batch):
    import torch

    wanted = tuple(i for i, t in enumerate(tangents) if t is not None)
    bake = False
    try:  # float scalars as symbols: one rule for every value; baked in where the op's form branches on them
        rule = _rule(target, _signature(args, kwargs), tuple(_symbol_index(args, i, bake) for i in wanted))
    except Uncovered:
        raise
    except Exception:  # noqa: BLE001 - e.g. clamp's bounds compared in Python
        bake = True
        rule = _rule(target, _signature(args, kwargs, bake), tuple(_symbol_index(args, i, bake) for i in wanted))

    def numeric(a) -> bool:
        return isinstance(a, torch.Tensor) or (not bake and isinstance(a, float) and not isinstance(a, bool))

    values = [a.numpy() if isinstance(a, torch.Tensor) else a for a in args if numeric(a)]
    values += [v.numpy() if isinstance(v, torch.Tensor) else v for k, v in sorted(kwargs.items()) if numeric(v)]
    shape = tuple(value.shape)
    # NumPy's select needs one shape
    values = [v if getattr(v, "shape", None) == shape else np.broadcast_to(v, shape) for v in values]
    derivs = rule(*values)  # under forward()'s errstate
    out = None
    for i, d in zip(wanted, derivs):
        d = np.asarray(np.abs(d) if _ABSOLUTE.get() else d, dtype=np.float64)
        if d.shape != shape:
            d = np.broadcast_to(d, shape)
        if not (d.flags.writeable and d.flags.c_contiguous):  # from_numpy needs its own, writeable memory
            d = d.copy()
        term = torch.from_numpy(d) * _expand_tangent(tangents[i], tuple(args[i].shape), shape)
        out = term if out is None else out + term
    if out is None or tuple(out.shape) != (batch,) + shape:
        return torch.zeros((batch,) + shape, dtype=torch.float64) + (0.0 if out is None else out)
    return out


def _symbol_index(args, i: int, bake: bool) -> int:
    """The position of positional argument ``i`` among the rule's symbols (tensors, and float scalars unless baked)."""
    import torch

    return sum(1 for a in args[:i] if isinstance(a, torch.Tensor)
               or (not bake and isinstance(a, float) and not isinstance(a, bool)))


def _vmapped(fn, tangents, batch):
    """``fn`` applied to each tangent of the batch: ``torch.vmap``, a loop where vmap has no rule."""
    import torch

    dims = tuple(0 if t is not None else None for t in tangents)
    quiet = torch._C._functorch._set_vmap_fallback_warning_enabled  # type: ignore[attr-defined]
    quiet(False)  # Note [Quiet fallback]: no C++ warnings
    try:
        return torch.vmap(fn, in_dims=dims)(*tangents)
    except Exception:  # noqa: BLE001 - an op without a batching rule: one call per tangent
        outs = [fn(*[t[b] if t is not None else None for t in tangents]) for b in range(batch)]
        if isinstance(outs[0], (list, tuple)):
            return type(outs[0])(torch.stack([o[k] for o in outs]) for k in range(len(outs[0])))
        return torch.stack(outs)
    finally:
        quiet(True)  # torch's default (it has no getter)


#: Arguments of linear ops that are affine offsets (a pad or fill value): 0 in the tangent.
_OFFSETS = frozenset({"value", "fill_value", "other", "self"})


def _linear(target, args, kwargs, tangents_of, batch, value):
    """Jointly linear in the floating tensors: the op's forward on the tangents (zeros where none)."""
    import torch
    from torch.utils._pytree import tree_flatten, tree_unflatten

    quick = _batched(target, args, kwargs, tangents_of, batch, value)
    if quick is not None:
        return quick
    names = list(_bind(target, args, {}).keys())
    args = [0.0 if i < len(names) and names[i] in _OFFSETS and _is_scalar(a) else a for i, a in enumerate(args)]
    kwargs = {k: 0.0 if k in _OFFSETS and _is_scalar(v) else v for k, v in kwargs.items()}
    flat, spec = tree_flatten((list(args), dict(kwargs)))
    data = [i for i, a in enumerate(flat) if _is_float(a)]
    tans = [tangents_of(flat[i]) for i in data]
    if not any(t is not None for t in tans):
        return None
    zeros = {i: torch.zeros_like(flat[i]) for i, t in zip(data, tans) if t is None}
    pos = {i: k for k, i in enumerate(data)}

    def fn(*ts):
        leaves = list(flat)
        for i in data:
            t = ts[pos[i]]
            leaves[i] = t if t is not None else zeros[i]
        a, kw = tree_unflatten(leaves, spec)
        return _call(target, a, kw)

    out = _vmapped(fn, tans, batch)
    return out.abs() if _ABSOLUTE.get() and isinstance(out, torch.Tensor) else out


def _is_scalar(a) -> bool:
    """A Python number (an int too: kornia's ``fill(x, 1)`` kept its offset and gave the tangent 1)."""
    return isinstance(a, (int, float)) and not isinstance(a, bool)


_RESHAPES = frozenset({"view", "_unsafe_view", "reshape", "view_copy", "_reshape_alias", "unsqueeze", "squeeze",
                       "unsqueeze_copy", "squeeze_copy", "squeeze_dims", "flatten", "unflatten"})
_IDENTITIES = frozenset({"clone", "alias", "contiguous", "lift_fresh_copy", "detach", "_to_copy",
                         "convert_element_type", "resolve_conj", "resolve_neg", "alias_copy"})


def _batched(target, args, kwargs, tangents_of, batch, value):
    """The common linear ops on a batch of tangents directly (a leading dim), without vmap's per-call cost."""
    import torch

    name = _packet(target)
    if not _is_float(value):
        return None
    try:
        if name in ("cat", "stack"):
            ts, dim = args[0], _bind(target, args, kwargs).get("dim", 0)
            tans = [tangents_of(x) for x in ts]
            if not any(t is not None for t in tans):
                return None
            full = [t if t is not None else torch.zeros((batch,) + tuple(x.shape), dtype=torch.float64)
                    for t, x in zip(tans, ts)]
            nd = value.dim()
            return torch.cat(full, dim % nd + 1) if name == "cat" else torch.stack(full, dim % nd + 1)
        if name in ("slice_scatter", "select_scatter"):  # vmap's rule refuses some bounds (kornia's CLAHE)
            b = _bind(target, args, kwargs)
            base, src = args[0], args[1]
            tb, ts = tangents_of(base), tangents_of(src)
            if tb is None and ts is None:
                return None
            tb = tb if tb is not None else torch.zeros((batch,) + tuple(base.shape), dtype=torch.float64)
            ts = ts if ts is not None else torch.zeros((batch,) + tuple(src.shape), dtype=torch.float64)
            dim = b.get("dim", 0) % base.dim() + 1
            if name == "slice_scatter":
                return torch.slice_scatter(tb, ts, dim, b.get("start"), b.get("end"), b.get("step", 1))
            return torch.select_scatter(tb, ts, dim, b["index"])
        if name == "copy":  # a functionalized copy_(dst, src): src broadcast into dst's shape, dst's values gone
            # (under vmap it fell to a loop over the tangents: 16 ms a call, 3.3 s of kornia's 16 s)
            src, shape = args[1], tuple(value.shape)
            ts = tangents_of(src) if isinstance(src, torch.Tensor) else None
            if ts is None:
                return torch.zeros((batch,) + shape, dtype=torch.float64)
            return _expand_tangent(ts, tuple(src.shape), shape).expand((batch,) + shape).clone()
        if name == "where" and len(args) == 3 and all(isinstance(a, torch.Tensor) for a in args):
            shape = tuple(value.shape)
            ta, tb = tangents_of(args[1]), tangents_of(args[2])
            ea = _expand_tangent(ta, tuple(args[1].shape), shape) if ta is not None else torch.zeros(())
            eb = _expand_tangent(tb, tuple(args[2].shape), shape) if tb is not None else torch.zeros(())
            return torch.where(args[0], ea, eb).expand((batch,) + shape).to(torch.float64)
        a = args[0]
        t = tangents_of(a) if isinstance(a, torch.Tensor) else None
        if t is None or any(tangents_of(x) is not None for x in list(args[1:]) + list(kwargs.values())
                            if isinstance(x, torch.Tensor)):
            return None
        b = _bind(target, args, kwargs)
        nd = a.dim()
        shape = tuple(value.shape)
        if name in _RESHAPES:
            return t.reshape((batch,) + shape)
        if name in _IDENTITIES:
            return t
        if name == "neg":
            return t if _ABSOLUTE.get() else -t
        if name in ("permute", "permute_copy"):
            return t.permute(0, *[d % nd + 1 for d in b["dims"]])
        if name in ("transpose", "transpose_copy"):
            return t.transpose(b["dim0"] % nd + 1, b["dim1"] % nd + 1)
        if name in ("t", "t_copy"):
            return t.transpose(1, 2) if nd == 2 else t
        if name in ("expand", "expand_copy"):
            return _expand_tangent(t, tuple(a.shape), shape).expand((batch,) + shape)
        if name == "broadcast_in_dim":
            dims = list(b["broadcast_dimensions"])
            new = [1] * len(shape)
            for i, d in enumerate(dims):
                new[d] = a.shape[i]
            return t.reshape([batch] + new).expand((batch,) + shape)
        if name in ("slice", "slice_copy"):
            idx = [slice(None)] * (nd + 1)
            idx[b.get("dim", 0) % nd + 1] = slice(b.get("start"), b.get("end"), b.get("step", 1))
            return t[tuple(idx)]
        if name in ("select", "select_copy"):
            return t.select(b["dim"] % nd + 1, b["index"])
        if name in ("sum", "mean"):
            over = b.get("dim", b.get("dims"))
            if over is None or (isinstance(over, (list, tuple)) and len(over) == 0):
                out = t.reshape(batch, -1).sum(1) if name == "sum" else t.reshape(batch, -1).mean(1)
                return out.reshape((batch,) + shape)
            axes = [over % nd + 1] if isinstance(over, int) else [d % nd + 1 for d in over]
            f = torch.sum if name == "sum" else torch.mean
            return f(t, axes, keepdim=bool(b.get("keepdim", False))).reshape((batch,) + shape)
    except Exception:  # noqa: BLE001 - an unusual signature: the op's own forward under vmap decides
        return None
    return None


def _multilinear(target, args, kwargs, tangents_of, batch, value):
    """Sum over the floating tensor arguments of the op with that one replaced by its tangent."""
    import torch

    name = _packet(target)
    args = list(args)
    if _ABSOLUTE.get():  # every factor by its magnitude (Note [Absolute chain]); tangents keyed by the new ones
        given, args = args, [a.abs() if _is_float(a) else a for a in args]
        of = {id(new): tangents_of(old) for new, old in zip(args, given) if _is_float(old)}

        def tangents_of(v):  # noqa: F811 - the lookup follows the arguments it was built from
            return of.get(id(v))

        kwargs = {k: abs(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                  for k, v in kwargs.items()}
    total = torch.zeros((batch,) + tuple(value.shape), dtype=torch.float64)
    if name in ("addmm", "addmv", "baddbmm"):
        beta = kwargs.get("beta", 1)
        alpha = kwargs.get("alpha", 1)
        tb = tangents_of(args[0])
        if tb is not None:
            total += beta * _expand_tangent(tb, tuple(args[0].shape), tuple(value.shape))
        inner = {"addmm": torch.ops.aten.mm.default, "addmv": torch.ops.aten.mv.default,
                 "baddbmm": torch.ops.aten.bmm.default}[name]
        part = _multilinear(inner, args[1:3], {}, tangents_of, batch, value)
        return total + alpha * part
    bias = None
    if name in ("convolution", "_convolution"):
        bias, args[2] = args[2], None
        tb = tangents_of(bias) if bias is not None else None
        if tb is not None:
            total += tb.reshape((batch, 1, -1) + (1,) * (value.dim() - 2))
    for i, a in enumerate(args):
        if not _is_float(a):
            continue
        t = tangents_of(a)
        if t is None:
            continue
        if name in ("mm", "bmm", "matmul", "mv", "dot") and len(args) == 2:
            # matmul broadcasts a leading batch of tangents: the op's own product, no vmap
            other = args[1 - i]
            if name in ("mv", "dot") and i == 1:
                total += (t @ args[0].transpose(-1, -2)) if name == "mv" else t @ args[0]
            elif name == "matmul" and (a.dim() == 1 or other.dim() == 1):
                total += _vmapped(lambda ti, i=i, o=other: _call(target, [ti, o] if i == 0 else [o, ti], {}), [t], batch)
            else:  # both batched: a bmm (a (B*n, k) @ (k, m) mm took 16 ms on a busy 2-core machine, the bmm 12 us)
                wide = other.expand((batch,) + tuple(other.shape))
                total += t @ wide if i == 0 else wide @ t
            continue

        folded = (_folded_convolution(target, args, kwargs, i, t, batch, value)
                  if name in ("convolution", "_convolution") else None)
        if folded is not None:
            total += folded
            continue

        def fn(ti, i=i):
            b = list(args)
            b[i] = ti
            return _call(target, b, kwargs)

        total += _vmapped(fn, [t], batch)
    return total


def _folded_convolution(target, args, kwargs, i: int, t, batch: int, value):
    """A convolution of a batch of tangents as one convolution, the batch folded into the images (the input's
    tangents) or into the output channels (the weight's, ungrouped and not transposed); None otherwise.
    Under vmap, kornia's 347 convolutions of tangents took 1 s."""
    a, shape = args[i], tuple(value.shape)
    if len(args) < 9 or a.dim() < 3 or len(shape) != a.dim():
        return None
    b = list(args)
    if i == 0 and shape[0] == a.shape[0]:
        n = a.shape[0]
        b[0] = t.reshape((batch * n,) + tuple(a.shape[1:]))
        return _call(target, b, kwargs).reshape((batch,) + shape)
    if i == 1 and not args[6] and args[8] == 1:
        b[1] = t.reshape((batch * a.shape[0],) + tuple(a.shape[1:]))
        out = _call(target, b, kwargs)  # (N, B*O, ...)
        return out.reshape((shape[0], batch) + shape[1:]).movedim(1, 0)
    return None


def _special(target, args, kwargs, tangents_of, batch, value):
    """Note [Tensor-level rules]: variance, product, and linear algebra from its defining identities."""
    import torch

    name = _packet(target)
    bound = _bind(target, args, kwargs)
    if name == "_linalg_check_errors":
        return None
    a = args[0]
    t = tangents_of(a)
    if name == "var":
        dims = bound.get("dim", bound.get("dims"))
        dims = list(range(a.dim())) if dims is None or dims == [] else ([dims] if isinstance(dims, int) else list(dims))
        n = math.prod(a.shape[d] for d in dims) if a.dim() else 1
        corr = bound.get("correction")
        corr = (1 if bound.get("unbiased", True) else 0) if corr is None else corr
        keep = bool(bound.get("keepdim", False))
        centred = a - a.mean(dim=dims, keepdim=True)
        centred = centred.abs() if _ABSOLUTE.get() else centred
        out = (2.0 / (n - corr)) * (centred.unsqueeze(0) * t).sum(dim=[d + 1 for d in dims], keepdim=keep)
        return out.reshape((batch,) + tuple(value.shape))
    if name == "prod":
        dim = bound.get("dim")
        keep = bool(bound.get("keepdim", False))
        flat = a.reshape(-1) if dim is None else a.movedim(dim, -1)
        ones = torch.ones_like(flat[..., :1])
        left = torch.cat([ones, flat[..., :-1]], -1).cumprod(-1)  # products of the elements before each
        right = torch.cat([ones, flat.flip(-1)[..., :-1]], -1).cumprod(-1).flip(-1)  # ... and after it
        others = left * right  # the product of all elements but one: no division by zero
        others = others.abs() if _ABSOLUTE.get() else others
        tf = t.reshape(batch, -1) if dim is None else t.movedim(dim + 1, -1)
        out = (others.unsqueeze(0) * tf).sum(-1)
        return out.reshape((batch,) + tuple(value.shape)) if dim is None or not keep else out.unsqueeze(dim + 1)
    if _ABSOLUTE.get():
        raise Uncovered(f"{_overload(target)} has no absolute chain")
    if name in ("linalg_inv_ex", "inverse"):  # A Y = I: dY = -Y dA Y
        y = value[0] if isinstance(value, (tuple, list)) else value
        d = -(y.unsqueeze(0) @ t @ y.unsqueeze(0)) if t is not None else None
        return (d, None) if isinstance(value, (tuple, list)) else d
    if name in ("_linalg_solve_ex", "linalg_solve"):  # A X = B: A dX = dB - dA X
        x = value[0] if isinstance(value, (tuple, list)) else value
        on_left = bool(bound.get("left", True))
        b = args[1]
        tb = tangents_of(b)
        vec = b.dim() == 1 or (b.dim() == a.dim() - 1 and b.shape == a.shape[:-1])
        xm = x.unsqueeze(-1) if vec else x
        rhs = torch.zeros((batch,) + tuple(xm.shape), dtype=torch.float64)
        if tb is not None:
            rhs = rhs + (tb.unsqueeze(-1) if vec else tb)
        if t is not None:
            rhs = rhs - (t @ xm.unsqueeze(0) if on_left else xm.unsqueeze(0) @ t)
        d = torch.linalg.solve(a.unsqueeze(0).expand((batch,) + tuple(a.shape)), rhs, left=on_left)
        d = d.squeeze(-1) if vec else d
        return (d, None, None, None) if isinstance(value, (tuple, list)) else d
    if name in ("linalg_cholesky_ex", "_linalg_eigh", "linalg_qr"):
        return _factorization(name, bound, a, t, value)
    if name == "_linalg_svd":
        return _svd(bound, a, t, value)
    if name == "_linalg_det":  # d det A = det A * tr(A^-1 dA)
        det = value[0]
        inv = torch.linalg.inv(a)
        d = det.unsqueeze(0) * (inv.unsqueeze(0).transpose(-1, -2) * t).sum((-1, -2))
        return (d, None, None)
    raise Uncovered(_overload(target))


def _inverse_gaps(w):
    """``F_ij = 1 / (w_j - w_i)`` off the diagonal, 0 on it (a repeated value gives inf off it)."""
    import torch

    gap = w.unsqueeze(-2) - w.unsqueeze(-1)
    eye = torch.eye(w.shape[-1], dtype=torch.bool)
    return torch.where(eye, torch.zeros_like(gap), 1.0 / torch.where(eye, torch.ones_like(gap), gap))


def _symmetric_part(t, lower: bool):
    """The tangent of the symmetric matrix a factorization reads from one triangle of its argument."""
    tri = t.tril() if lower else t.triu()
    strict = t.tril(-1) if lower else t.triu(1)
    return tri + strict.transpose(-1, -2)


def _factorization(name: str, bound: dict, a, t, value):
    """Note [Tensor-level rules]: Cholesky, symmetric eigendecomposition and QR from their defining identities.

    ``S = L L^T``: ``dL = L Phi(L^-1 dS L^-T)``, ``Phi`` the lower triangle with its diagonal halved.
    ``S V = V diag(w)``, ``V^T V = I``: ``dw = diag(V^T dS V)``, ``dV = V (F o V^T dS V)``, ``F_ij = 1 / (w_j -
    w_i)`` off the diagonal (a repeated eigenvalue gives inf: no tangent-level verdict, the full path judges).
    ``A = Q R`` (``m >= n``, reduced): ``C = Q^T dA R^-1``, ``W = tril(C, -1) - tril(C, -1)^T``, ``dR = (C - W)
    R``, ``dQ = Q W + (I - Q Q^T) dA R^-1``. ``S`` is what the op reads: one triangle of its argument.
    """
    import torch

    if t is None:
        return tuple(None for _ in value)
    tr = functools.partial(torch.transpose, dim0=-1, dim1=-2)
    if name == "linalg_cholesky_ex":
        upper = bool(bound.get("upper", False))
        low = value[0].transpose(-1, -2) if upper else value[0]
        ds = _symmetric_part(t, lower=not upper)
        x = torch.linalg.solve_triangular(low, ds, upper=False)  # L^-1 dS
        x = tr(torch.linalg.solve_triangular(low, tr(x), upper=False))  # L^-1 dS L^-T
        phi = x.tril(-1) + 0.5 * torch.diag_embed(x.diagonal(dim1=-2, dim2=-1))
        d = low @ phi
        return (tr(d) if upper else d, None)
    if name == "_linalg_eigh":
        lower = str(bound.get("UPLO", "L")).upper() == "L"
        ds = _symmetric_part(t, lower)
        w, v = value
        if v.numel() == 0:  # eigenvalues only: the eigenvectors are needed all the same
            w, v = torch.linalg.eigh(_symmetric_part(a, lower))
        inner = tr(v) @ ds @ v
        dw = inner.diagonal(dim1=-2, dim2=-1)
        dv = v @ (_inverse_gaps(w) * inner) if value[1].numel() else None
        return (dw, dv)
    q, r = value
    m, n = a.shape[-2], a.shape[-1]
    mode = str(bound.get("mode", "reduced"))
    if m < n or (mode != "reduced" and m != n):
        raise Uncovered(f"linalg_qr with mode={bound.get('mode')!r} on a {m}x{n} matrix")
    if q.numel() == 0:
        raise Uncovered("linalg_qr with mode='r'")
    da_rinv = torch.linalg.solve_triangular(r, t, upper=True, left=False)  # dA R^-1
    c = tr(q) @ da_rinv
    low = c.tril(-1)
    omega = low - tr(low)
    dr = (c - omega) @ r
    dq = q @ omega + da_rinv - q @ (tr(q) @ da_rinv)
    return (dq, dr)


def _svd(bound: dict, a, t, value):
    """``A = U diag(s) V^T`` from its defining identity (Note [Tensor-level rules]).

    ``dP = U^T dA V``: ``ds = diag(dP)``, ``dU = U (E o (dP S + S dP^T)) + (I - U U^T) dA V S^-1``, ``dV = V (E o
    (S dP + dP^T S)) + (I - V V^T) dA^T U S^-1``, ``E_ij = 1 / (s_j^2 - s_i^2)`` off the diagonal (a repeated
    singular value gives inf: the full path judges). ``full_matrices`` on a non-square matrix has no rule (its
    extra columns are any orthonormal completion).
    """
    import torch

    u, sv, vh = value
    if t is None:
        return (None, None, None)
    m, n = a.shape[-2], a.shape[-1]
    with_uv = u.numel() > 0
    if with_uv and bool(bound.get("full_matrices", False)) and m != n:  # the schema's default
        raise Uncovered("_linalg_svd with full_matrices on a non-square matrix")
    tr = functools.partial(torch.transpose, dim0=-1, dim1=-2)
    if not with_uv:  # singular values only: the vectors are needed all the same
        u, sv, vh = torch.linalg.svd(a, full_matrices=False)
    v = tr(vh)
    dp = tr(u) @ t @ v
    ds = dp.diagonal(dim1=-2, dim2=-1)
    if not with_uv:
        return (None, ds, None)
    e = _inverse_gaps(sv * sv)
    big = torch.diag_embed(sv)
    du = u @ (e * (dp @ big + big @ tr(dp)))
    dv = v @ (e * (big @ dp + tr(dp) @ big))
    if m > sv.shape[-1]:  # the part of dA V outside U's columns
        rest = t @ v - u @ (tr(u) @ t @ v)
        du = du + rest / sv.unsqueeze(-2)
    if n > sv.shape[-1]:
        rest = tr(t) @ u - v @ (tr(v) @ tr(t) @ u)
        dv = dv + rest / sv.unsqueeze(-2)
    return (du, ds, tr(dv))


def _gather_last(t, idx, batch):
    """``t`` ``(B, *shape, n)`` at indices ``idx`` ``(*shape, k)`` of its last dim."""
    return t.gather(-1, idx.unsqueeze(0).expand((batch,) + tuple(idx.shape)))


def _bind(target, args, kwargs) -> dict:
    """The op's arguments by their schema names (``dim``, ``keepdim``...)."""
    schema = getattr(target, "_schema", None)
    names = [a.name for a in schema.arguments] if schema is not None else []
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


def _selection(target, args, kwargs, tangents_of, batch, value):
    """The tangent at the selected position (ties: a kink, see Note [Tensor-level rules])."""
    name = _packet(target)
    a, t = args[0], tangents_of(args[0])
    if t is None:
        return None
    bound = _bind(target, args, kwargs)
    if name.startswith("max_pool") or name == "adaptive_max_pool2d":
        vals, idx = value
        k = min(int(name[8]) if name.startswith("max_pool") else 2, a.dim())
        got = _gather_last(t.flatten(-k), idx.flatten(-k), batch).reshape((batch,) + tuple(vals.shape))
        return (got, None)
    if isinstance(value, (tuple, list)):  # values and indices along one dim
        vals, idx = value[0], value[1]
        dim = bound.get("dim", -1)
        dim = dim % a.dim() if a.dim() else 0
        keep = vals.dim() == a.dim()
        ix = (idx if keep else idx.unsqueeze(dim)).movedim(dim, -1) if a.dim() else idx.reshape(1)
        tm = t.movedim(dim + 1, -1) if a.dim() else t.reshape(batch, 1)
        got = _gather_last(tm, ix, batch)
        got = got.movedim(-1, dim + 1) if a.dim() else got.reshape(batch)
        return (got if keep or not a.dim() else got.squeeze(dim + 1), None)
    if name == "median":
        return _reduce_select(a, t, (), False, value, batch, median=True)
    dims = bound.get("dim", ())
    return _reduce_select(a, t, dims, bool(bound.get("keepdim", False)), value, batch, largest=name in ("amax", "max"))


def _reduce_select(a, t, dims, keepdim, value, batch, largest=True, median=False):
    dims = [dims] if isinstance(dims, int) else list(dims or range(a.dim()))
    dims = sorted(d % max(a.dim(), 1) for d in dims) if a.dim() else []
    kept = [d for d in range(a.dim()) if d not in dims]
    perm = kept + dims
    kshape = [a.shape[d] for d in kept]
    ap = a.permute(perm).reshape(kshape + [-1]) if a.dim() else a.reshape(1)
    tp = t.permute([0] + [p + 1 for p in perm]).reshape([batch] + kshape + [-1]) if a.dim() else t.reshape(batch, 1)
    if median:
        idx = ap.sort(-1).indices[..., (ap.shape[-1] - 1) // 2 : (ap.shape[-1] - 1) // 2 + 1]
    else:
        idx = (ap.argmax(-1) if largest else ap.argmin(-1)).unsqueeze(-1)
    got = _gather_last(tp, idx, batch).squeeze(-1)
    return got.reshape((batch,) + tuple(value.shape))


def forward(graph: TensorGraph, primals: Sequence, tangents: Sequence) -> tuple[list, list]:
    """The float outputs and their tangents ``(B, *shape)`` for leaf values and leaf tangents."""
    import torch

    with torch.no_grad(), np.errstate(all="ignore"):  # once, not per op: the rules' NumPy at poles is inf or NaN
        return _forward(graph, primals, tangents)


def _forward(graph: TensorGraph, primals: Sequence, tangents: Sequence) -> tuple[list, list]:
    import torch

    gm = graph.gm
    env: dict = {}
    tan: dict = {}
    batch = int(tangents[0].shape[0]) if tangents else 1
    leaves = iter(zip(primals, tangents))
    result = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            p, t = next(leaves)
            env[node.name], tan[node.name] = p, t
            continue
        if node.op == "output":
            result = node.args[0]
            break
        if node.name in graph.consts:
            env[node.name] = graph.consts[node.name]
            continue
        if node.op == "get_attr":
            v = getattr(gm, node.target)
            env[node.name] = v.detach().double() if _is_float(v) else v
            continue
        args = torch.fx.node.map_arg(node.args, lambda n: env[n.name])
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n.name])
        if node.target is operator.getitem:
            seq, i = node.args
            env[node.name] = env[seq.name][i]
            t = tan.get(seq.name)
            tan[node.name] = t[i] if t is not None else None
            continue
        value = _call(node.target, args, kwargs)
        env[node.name] = value
        ids: dict = {}
        for a in node.all_input_nodes:
            if tan.get(a.name) is not None:
                ids[id(env[a.name])] = tan[a.name]
        tan[node.name] = _propagate(node.target, args, kwargs, ids, value, batch) if ids else None
    nodes: list = []
    torch.fx.node.map_arg(result, nodes.append)
    flat = [(env[n.name], tan.get(n.name)) for n in nodes]
    values, outs_t = [], []
    for v, t in flat:
        if not _is_float(v):
            continue
        values.append(v)
        outs_t.append(t if t is not None else torch.zeros((batch,) + tuple(v.shape), dtype=torch.float64))
    return values, outs_t


def _propagate(target, args, kwargs, ids: dict, value, batch):
    import torch

    if not (_is_float(value) or isinstance(value, (list, tuple))):
        return None

    def tangents_of(v):
        return ids.get(id(v))

    kind = _kind(target)
    if kind == "special":
        return _special(target, args, kwargs, tangents_of, batch, value)
    if kind in ("linear", "copy"):
        return _linear(target, args, kwargs, tangents_of, batch, value)
    if kind == "multilinear":
        return _multilinear(target, args, kwargs, tangents_of, batch, value)
    if kind == "selection":
        return _selection(target, args, kwargs, tangents_of, batch, value)
    if kind == "pointwise":
        if not _is_float(value):
            return None
        tans = [tangents_of(a) if isinstance(a, torch.Tensor) else None for a in args]
        for v in kwargs.values():
            if isinstance(v, torch.Tensor) and tangents_of(v) is not None:
                raise Uncovered(f"{_overload(target)}: a keyword tensor argument depends on the inputs")
        if not any(t is not None for t in tans):
            return None
        return _pointwise(target, args, kwargs, tans, value, batch)
    raise Uncovered(_overload(target))


def evaluate(graph: TensorGraph, primals: Sequence) -> list:
    """The graph's float outputs at float64 ``primals``, recorded by torch autograd (the autograd leg).

    The same values as :func:`forward` computes, with torch's own derivative
    formulas attached: an independent check of the rules (Note [Tensor-level rules]).
    """
    import torch

    gm = graph.gm
    env: dict = {}
    leaves = iter(primals)
    nodes: list = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node.name] = next(leaves)
        elif node.op == "output":
            torch.fx.node.map_arg(node.args[0], nodes.append)
            break
        elif node.name in graph.consts:
            env[node.name] = graph.consts[node.name]
        elif node.target is operator.getitem:
            env[node.name] = env[node.args[0].name][node.args[1]]
        else:
            args = torch.fx.node.map_arg(node.args, lambda n: env[n.name])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n.name])
            env[node.name] = _call(node.target, args, kwargs, grad=True)
    return [env[n.name] for n in nodes if _is_float(env[n.name])]


def jacobian(graph: TensorGraph, values: Sequence) -> tuple[list, np.ndarray]:
    """The graph's float outputs (float64 tensors) and its Jacobian ``(n_out, n_in)`` at leaf ``values``."""
    outs: list = []
    cols: list = []
    for outs_k, _, block in _jacobian_blocks(graph, values):
        outs = outs_k
        cols.append(block)
    jac = np.concatenate(cols, axis=1) if cols else np.zeros((0, 0))
    return outs, jac


def cotangent_products(graph: TensorGraph, values: Sequence, cots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(C J, |C| |J|)`` for cotangents ``C`` ``(k, n_out)``, a block of Jacobian columns at a time: the
    Jacobian itself is never held (a CNN's 65k outputs by 3k inputs took 1.6 GB)."""
    n_in = sum(max(math.prod(v.shape), 0) for v in values)
    sym, scale = np.zeros((len(cots), n_in)), np.zeros((len(cots), n_in))
    for _, (start, stop), block in _jacobian_blocks(graph, values):
        if block.shape[0] != cots.shape[1]:
            raise ValueError(f"cotangents of {cots.shape[1]} outputs for a graph of {block.shape[0]}")
        sym[:, start:stop] = cots @ block
        scale[:, start:stop] = np.abs(cots) @ np.abs(block)
    return sym, scale


def absolute_products(graph: TensorGraph, values: Sequence, cots: np.ndarray) -> np.ndarray:
    """``|C| |J_n| ... |J_1|``: the rounding scale of each component of ``C J`` (Note [Absolute chain]).

    Note [Absolute chain]
    ~~~~~~~~~~~~~~~~~~~~~
    Each op's rounding is relative to the magnitudes it combines, not to
    its result: the chain rule evaluated with every local derivative and
    every factor replaced by its magnitude (``|d| |t|`` for a pointwise op,
    ``|A| |t|`` for a product, the op's own forward on ``|t|`` for a view,
    an index or a sum) bounds the terms a float evaluation of ``c^T J``
    adds, so its rounding is a few eps of this, however much the terms
    cancel. ``|c|^T |J|`` of the composed Jacobian is smaller where they do:
    kornia's SSIM of an image with itself has gradients of 1e-11 built from
    terms of 1, and its correct backward, 1e-4 off relative to its own
    size, was sent down the per-element path by that scale (as were
    ``warp_perspective`` and the depth warper, at 3e-13). Ops without such
    a form here (the linear-algebra identities) raise :class:`Uncovered`.
    """
    token = _ABSOLUTE.set(True)
    try:
        n_in = sum(max(math.prod(v.shape), 0) for v in values)
        out = np.zeros((len(cots), n_in))
        for _, (start, stop), block in _jacobian_blocks(graph, values):
            out[:, start:stop] = np.abs(cots) @ np.abs(block)
        return out
    finally:
        _ABSOLUTE.reset(token)


def _jacobian_blocks(graph: TensorGraph, values: Sequence):
    """``(outs, (start, stop), J[:, start:stop])`` for consecutive blocks of unit tangents (``CHUNK_ELEMENTS``)."""
    import torch

    primals = [v.detach().to("cpu", torch.float64) for v in values]
    sizes = [max(p.numel(), 0) for p in primals]
    n_in = sum(sizes)
    chunk = max(1, min(n_in, CHUNK_ELEMENTS // max(graph.widest, 1)))
    for start in range(0, n_in, chunk):
        stop = min(start + chunk, n_in)
        # rows start..stop of the identity, cut at the leaves' boundaries (a column slice of one eye)
        eye = torch.zeros((stop - start, n_in), dtype=torch.float64)
        eye[:, start:stop].fill_diagonal_(1.0)
        tangents, off = [], 0
        for p, size in zip(primals, sizes):
            tangents.append(eye[:, off : off + size].reshape((stop - start,) + tuple(p.shape)))
            off += size
        outs, outs_t = forward(graph, primals, tangents)
        yield outs, (start, stop), (torch.cat([t.reshape(stop - start, -1) for t in outs_t], dim=1).numpy().T
                                    if outs_t else np.zeros((0, stop - start)))


def directional(graph: TensorGraph, values: Sequence, directions: np.ndarray) -> np.ndarray:
    """``J V`` ``(n_out, k)`` at leaf ``values`` for directions ``V`` ``(n_in, k)``: one forward pass of k tangents."""
    import torch

    primals = [v.detach().to("cpu", torch.float64) for v in values]
    k = directions.shape[1]
    tangents, off = [], 0
    for p in primals:
        size = p.numel()
        t = torch.from_numpy(np.ascontiguousarray(directions[off : off + size].T)).to(torch.float64)
        tangents.append(t.reshape((k,) + tuple(p.shape)))
        off += size
    _, outs_t = forward(graph, primals, tangents)
    return torch.cat([t.reshape(k, -1) for t in outs_t], dim=1).numpy().T if outs_t else np.zeros((0, k))


def _numel(v) -> int:
    if isinstance(v, (list, tuple)):
        return sum(_numel(x) for x in v)
    shape = getattr(v, "shape", None)
    return math.prod(shape) if shape is not None else 1
