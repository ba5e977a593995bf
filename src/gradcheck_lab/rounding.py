"""Monte Carlo arithmetic: each engine's rounding error measured on the computation it performs.

Note [Own rounding]
~~~~~~~~~~~~~~~~~~~
A tolerance derived from one algorithm says nothing about another: SymPy's
derivative of ``sigmoid`` is ``exp(-z)/(1 + exp(-z))**2``, well conditioned,
while torch's autograd computes ``s * (1 - s)`` and loses ``log10(1/(1-s))``
digits when ``s`` saturates. So every engine (and a candidate written in
NumPy or torch) is re-run with **Monte Carlo arithmetic** (Parker 1997;
the "random rounding" mode of verificarlo): the result of every floating
point operation it performs is multiplied by ``1 + d`` with ``|d|`` uniform
in ``[2**-VIRTUAL / 2, 2**-VIRTUAL]`` and a random sign. (Not uniform down
to 0: with a few runs, a perturbation that happens to be tiny in all of them
hides a cancellation, as ``log(1 + exp(-35))`` rounding to ``1 + 2 ulp`` did
in about one point in 400 of the million-point sweep's cancellation points;
bounded away from 0, every operation moves every run.)
and the spread of ``SAMPLES`` perturbed runs around the plain run
estimates how far the plain run's own rounding can have moved the result.

How the perturbation reaches each engine:

* NumPy (the symbolic engine's compiled closed form, the finite differences'
  loss evaluations): the inputs are wrapped in :class:`MCAArray`, an
  ``ndarray`` subclass whose ``__array_ufunc__`` perturbs the output of
  every ufunc (``+ - * / **``, ``exp``, ``log``, reductions...). Every
  operation lambdify's generated code or the NumPy backend performs is a
  ufunc, so no operation escapes.
* torch (the autograd engine and torch candidates, custom
  ``autograd.Function`` backwards included): a ``TorchDispatchMode`` sees
  every aten operation of the forward *and* the backward pass and perturbs
  the floating output of each computing one (views and copies are exact and
  left alone). ``TorchDispatchMode`` lives in ``torch.utils._python_dispatch``:
  private, but the mechanism torch's own ``FlopCounterMode`` and
  ``CrossRefMode`` use, stable since torch 1.13; the autograd engine's
  values themselves are never computed under it.
* A gradient function (Python or NumPy code we cannot instrument) is
  measured by its sensitivity to its inputs: it is called at inputs moved
  by ``2**-VIRTUAL`` relative, as the issue of hand-written code suggests.

Each engine's runner is in compare.py (``_own_rounding``), which reads the
engines; this module reads none, so the engines may use it.

The estimate is ``(max_r g_r - min_r g_r) * 2**-(MANTISSA - VIRTUAL)``: with
``VIRTUAL = MANTISSA - 3`` the perturbations are 8 units of roundoff, well
above the plain run's own rounding (so the spread measures the
perturbations, not noise) and far below any nonlinearity. The verdict uses
``OWN_SAFETY`` times it (Note [Verdict] in compare.py, the constant in tolerance.py); the
figures that set it are in docs/reliability.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "MCAArray",
    "noise",
    "SAMPLES",
    "VIRTUAL",
    "context",
    "perturbed_numpy",
    "plain",
    "torch_mca",
    "spread",
    "scale_back",
    "estimate",
]

#: Number of perturbed runs per estimate. Five, not three: successive operations' perturbations
#: can cancel (``c = 1 + e`` then ``1 / c``, each moved about 10 ulp in opposite directions), and in
#: the million-point sweep all three runs and the plain one landed on the same ulp at 4 points in 1e6.
SAMPLES = 5
#: Bits below the dtype's unit roundoff at which results are perturbed: 2**-(p - 3) relative.
VIRTUAL_SHIFT = 3
VIRTUAL = {"float64": 52 - VIRTUAL_SHIFT, "float32": 23 - VIRTUAL_SHIFT}


#: Operations that never round: their results are not perturbed.
_EXACT_UFUNCS = frozenset({"negative", "positive", "absolute", "maximum", "minimum", "fmax", "fmin", "sign",
                           "copysign", "greater", "less", "equal", "not_equal", "greater_equal", "less_equal",
                           "logical_and", "logical_or", "logical_not", "isfinite", "isnan", "isinf"})
#: ... and those whose result is exact whenever it is subnormal (Sterbenz): they cannot underflow.
_NO_UNDERFLOW = _EXACT_UFUNCS | {"add", "subtract"}


class _Context:
    """What the perturbed arrays of one run share: the generator, the size, the underflow record."""

    def __init__(self, rng: np.random.Generator, delta: float, n: int):
        self.rng, self.delta, self.n = rng, delta, n
        #: points where some operation underflowed (a result below the smallest normal number):
        #: relative perturbations cannot measure the absolute error that makes (Note [Own rounding]).
        self.tainted = np.zeros(n, dtype=bool)

    def underflow(self, result: np.ndarray, inputs: list, elementwise: bool = True) -> None:
        """Record where an operation under- or overflowed: a result below the smallest normal
        number from nonzero inputs, or an infinite one from finite inputs."""
        tiny = np.finfo(result.dtype).tiny
        with np.errstate(all="ignore"):
            mag = np.abs(result)
            small = mag < tiny
            huge = np.isinf(mag)
            if not (small.any() or huge.any()):
                return
            if elementwise:
                for x in inputs:
                    if isinstance(x, (np.ndarray, int, float)) or np.isscalar(x):
                        small = small & (np.asarray(x) != 0)
                        huge = huge & np.isfinite(np.asarray(x, dtype=float))
            else:  # matmul and other generalized ufuncs: a 0 may be exact, a subnormal is not
                small = small & (mag != 0)
                huge = huge & all(np.isfinite(np.asarray(x, dtype=float)).all() for x in inputs
                                  if isinstance(x, np.ndarray) or np.isscalar(x))
            small = small | huge
        if small.ndim and small.shape[-1] == self.n:
            self.tainted |= small.reshape(-1, self.n).any(axis=0)
        elif small.any():
            self.tainted[:] = True


class MCAArray(np.ndarray):
    """An array whose every ufunc result is perturbed by a random relative error.

    Created by :func:`perturbed_numpy`; the run's :class:`_Context` travels
    to every result.
    """

    _ctx: _Context | None

    def __array_finalize__(self, obj: Any) -> None:
        self._ctx = getattr(obj, "_ctx", None)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        ctx = None
        plain_inputs = []
        for x in inputs:
            if isinstance(x, MCAArray):
                ctx = ctx or x._ctx
                plain_inputs.append(x.view(np.ndarray))
            else:
                plain_inputs.append(x)
        if "out" in kwargs:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, MCAArray) else o for o in kwargs["out"])
        result = getattr(ufunc, method)(*plain_inputs, **kwargs)
        if ctx is not None and method == "__call__" and ufunc.__name__ not in _NO_UNDERFLOW:
            for r in result if isinstance(result, tuple) else (result,):
                arr = np.asarray(r)
                if arr.dtype.kind == "f":
                    ctx.underflow(arr, plain_inputs, elementwise=ufunc.signature is None)
        return _wrap(result, ctx, ufunc.__name__ not in _EXACT_UFUNCS)


    def __array_function__(self, func, types, args, kwargs):
        # np.where, np.stack, np.max, ... : run on plain arrays and keep the result perturbing,
        # so no later operation escapes; functions that round (sums, products) perturb their result.
        ctx = self._ctx
        result = func(*_plain_tree(args), **_plain_tree(kwargs))
        return _wrap_tree(result, ctx, func in _ROUNDING_FUNCTIONS)


def _plain_tree(x: Any) -> Any:
    if isinstance(x, MCAArray):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_plain_tree(v) for v in x)
    if isinstance(x, dict):
        return {k: _plain_tree(v) for k, v in x.items()}
    return x


def _wrap_tree(x: Any, ctx: _Context | None, perturb: bool) -> Any:
    if isinstance(x, (list, tuple)):
        return type(x)(_wrap_tree(v, ctx, perturb) for v in x)
    if isinstance(x, (np.ndarray, np.floating)):
        return _wrap(x, ctx, perturb)
    return x


#: NumPy functions (reached through ``__array_function__``) whose results are rounded.
_ROUNDING_FUNCTIONS = frozenset(
    {np.sum, np.prod, np.mean, np.dot, np.matmul, np.einsum, np.cumsum, np.cumprod, np.var, np.std, np.inner,
     np.outer, np.tensordot, np.vdot, np.linalg.norm, np.logaddexp, np.trace}
)


def _wrap(result: Any, ctx: _Context | None, perturb: bool) -> Any:
    if isinstance(result, tuple):
        return tuple(_wrap(r, ctx, perturb) for r in result)
    arr = np.asarray(result)
    if ctx is None or arr.dtype.kind != "f":
        return result
    if perturb:
        arr = np.asarray(arr * (1 + noise(ctx.rng, ctx.delta, arr.shape).astype(arr.dtype)))
    out = arr.view(MCAArray)
    out._ctx = ctx
    return out


def perturbed_numpy(columns: list[np.ndarray], rng: np.random.Generator, dtype: str, ctx: _Context | None = None):
    """``columns`` as :class:`MCAArray` views that perturb every operation done with them."""
    if ctx is None:
        n = max((np.shape(c)[-1] for c in columns if np.ndim(c)), default=1)
        ctx = _Context(rng, 2.0 ** -VIRTUAL[dtype], n)
    out = []
    for c in columns:
        a = np.asarray(c).view(MCAArray)
        a._ctx = ctx
        out.append(a)
    return out


def context(n: int, seed: int, dtype: str) -> _Context:
    """A fresh run context for ``n`` points."""
    return _Context(np.random.default_rng(seed), 2.0 ** -VIRTUAL[dtype], n)


def plain(x: Any) -> np.ndarray:
    """An :class:`MCAArray` (or anything array-like) as a plain float array."""
    return np.asarray(x).view(np.ndarray) if isinstance(x, np.ndarray) else np.asarray(x, dtype=float)


def torch_mca(dtype: str, seed: int, n: int | None = None):
    """A ``TorchDispatchMode`` perturbing every computing aten operation's floating result.

    With ``n`` (points along the last axis) it records in ``mode.tainted``
    the points where some operation underflowed.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    gen = torch.Generator().manual_seed(seed)
    delta = 2.0 ** -VIRTUAL[dtype]
    exact_ops = _exact_ops()

    fused = _fused_decompositions()

    class _MCA(TorchDispatchMode):
        tainted = np.zeros(n or 1, dtype=bool)
        depth = 0  # > 0 inside a fused operation's decomposition

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            decomposed = func in fused
            if decomposed:
                # A fused kernel rounds its intermediates too (1 - y in sigmoid's backward, exp(out) in
                # log_softmax's): run its decomposition, so every operation of it is perturbed.
                self.depth += 1
                try:
                    with self:
                        out = fused[func](*args, **(kwargs or {}))
                finally:
                    self.depth -= 1
                if out is NotImplemented:
                    decomposed, out = False, func(*args, **(kwargs or {}))
            else:
                out = func(*args, **(kwargs or {}))
            if name in exact_ops or name.endswith("_") or func._schema.is_mutable:
                return out
            # Underflow is judged on whole operations: inside a fused one, exp(-800) = 0 in a softmax is harmless.
            if (self.depth == 0 and name not in ("add", "sub", "rsub") and isinstance(out, torch.Tensor)
                    and out.is_floating_point() and out.numel()):
                self._underflow(out, args, torch.Tag.pointwise in func.tags)
            return out if decomposed else _perturb_tree(out, gen, delta, torch)

        def _underflow(self, out, args, pointwise):
            mag = out.abs()
            small = mag < torch.finfo(out.dtype).tiny
            huge = torch.isinf(mag)
            if not bool(small.any() or huge.any()):
                return
            if not pointwise:  # a reduction or matmul: a 0 may be exact, a subnormal is not
                small = small & (mag != 0)
                if not all(bool(torch.isfinite(a).all()) for a in args
                           if isinstance(a, torch.Tensor) and a.is_floating_point()):
                    huge = huge & False
                args = ()
            for a in args:
                # An exact zero factor (a tensor's zero or a Python 0) makes an exact zero result.
                if isinstance(a, torch.Tensor):
                    try:
                        small = small & (a != 0).broadcast_to(out.shape)
                        if a.is_floating_point():
                            huge = huge & torch.isfinite(a).broadcast_to(out.shape)
                    except RuntimeError:
                        pass
                elif isinstance(a, (int, float)) and not isinstance(a, bool):
                    if a == 0:
                        small = small & False
                    if not math.isfinite(a):
                        huge = huge & False
            small = small | huge
            small_np = small.detach().cpu().numpy()
            size = len(self.tainted)
            if small_np.ndim and small_np.shape[-1] == size:
                self.tainted |= small_np.reshape(-1, size).any(axis=0)
            elif small_np.any():
                self.tainted[:] = True

    return _MCA()


def noise(rng: np.random.Generator, delta: float, shape) -> np.ndarray:
    """Relative perturbations of magnitude between ``delta / 2`` and ``delta``, random sign (Note [Own rounding])."""
    return rng.choice(np.array([-1.0, 1.0]), size=shape) * rng.uniform(delta / 2, delta, size=shape)


def _perturb_tree(out, gen, delta, torch):
    if isinstance(out, torch.Tensor):
        if out.is_floating_point() and out.numel():
            u = torch.rand(out.shape, generator=gen, dtype=torch.float64, device="cpu")
            sign = torch.where(torch.rand(out.shape, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
            noise = (sign * (0.5 + 0.5 * u) * delta).to(out.dtype)  # |noise| in [delta/2, delta]
            return out * (1 + noise.to(out.device))
        return out
    if isinstance(out, (tuple, list)):
        return type(out)(_perturb_tree(o, gen, delta, torch) for o in out)
    return out


#: Fused aten operations whose intermediates round where their output's relative perturbation cannot
#: show it (cancellation inside the kernel); Monte Carlo arithmetic runs their decompositions instead.
FUSED = """sigmoid_backward tanh_backward _softmax _log_softmax _softmax_backward_data _log_softmax_backward_data
    logsumexp native_layer_norm native_layer_norm_backward native_batch_norm softplus softplus_backward
    binary_cross_entropy binary_cross_entropy_backward binary_cross_entropy_with_logits mse_loss mse_loss_backward
    huber_loss huber_loss_backward smooth_l1_loss smooth_l1_loss_backward silu silu_backward gelu gelu_backward
    elu elu_backward mish mish_backward log_sigmoid_forward log_sigmoid_backward logit_backward logaddexp xlogy
    special_xlog1py addcmul addcdiv lerp var std var_mean linalg_vector_norm sinc""".split()


def _fused_decompositions() -> dict:
    """OpOverload -> decomposition (``torch._decomp``, torch's own tables) for the :data:`FUSED` operations."""
    import torch
    from torch._decomp import decomposition_table

    out = {}
    for name in FUSED:
        packet = getattr(torch.ops.aten, name, None)
        if packet is None:
            continue
        for overload in packet.overloads():
            op = getattr(packet, overload)
            if op in decomposition_table and not op._schema.is_mutable:
                out[op] = decomposition_table[op]
    return out


def _exact_ops() -> frozenset[str]:
    """aten operations that move, select or compare values without rounding them."""
    return frozenset(
        """view _unsafe_view reshape alias t transpose permute expand squeeze unsqueeze select slice
        index index_select gather narrow clone contiguous copy detach lift_fresh zeros_like ones_like
        empty_like new_zeros new_ones new_empty zeros ones empty full fill scalar_tensor stack cat
        split split_with_sizes unbind _to_copy to where masked_fill relu threshold_backward abs neg
        sign ge gt le lt eq ne maximum minimum max min clamp _conj resolve_conj resolve_neg
        as_strided expand_as flatten unflatten diagonal movedim select_backward slice_backward
        expand_copy permute_copy view_copy t_copy transpose_copy squeeze_copy unsqueeze_copy
        index_put new_empty_strided empty_strided zero roll flip repeat tile""".split()
    )


def spread(runs: list[np.ndarray]) -> np.ndarray:
    """``max - min`` over perturbed runs per component; infinite where a run is NaN (a run
    that under- or overflowed is marked NaN) or where runs are not finite alike.

    The runs are compared with each other, not with the engine's reported
    values, so the estimate is that of the computation itself even where
    an engine was replaced (tests of the checker) or is wrong.
    """
    stack = np.stack([np.asarray(r, dtype=float) for r in runs])
    with np.errstate(invalid="ignore"):
        out = np.max(stack, axis=0) - np.min(stack, axis=0)
    finite = np.isfinite(stack).all(axis=0)
    all_same_nonfinite = (stack == stack[0]).all(axis=0)
    return np.where(finite, out, np.where(all_same_nonfinite & ~np.isnan(stack[0]), 0.0, np.inf))


def scale_back(s: np.ndarray) -> np.ndarray:
    """A spread measured at the virtual precision, scaled to the dtype's own rounding."""
    return s * 2.0**-VIRTUAL_SHIFT


def estimate(run: Callable[[int], np.ndarray], base: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """The own-rounding estimate of a computation: ``run(sample) -> values`` perturbed, ``SAMPLES`` times.

    ``base`` is the same computation run plainly (not the values an engine
    reported, which may come from a replaced engine): the perturbed runs'
    largest distance from it counts as well as their spread, which alone
    can be small where every perturbed run moves the same way.
    """
    runs = [run(seed * 1009 + s) for s in range(SAMPLES)]
    out = spread(runs)
    if base is not None:
        out = np.maximum(out, spread([base, *runs]))
    return scale_back(out)
