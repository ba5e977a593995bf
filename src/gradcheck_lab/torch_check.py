"""``gradcheck`` and ``gradgradcheck``: drop-ins for ``torch.autograd``'s, with an exact referee.

``from gradcheck_lab import gradcheck`` in place of ``from torch.autograd
import gradcheck``: the same positional arguments and keywords. The user's
forward is traced into a model (:mod:`gradcheck_lab.torch_graph`), so the
symbolic engine, the referee, finite differences with error bars and
autograd of the traced forward give the truth, and the user's *backward* is
judged as a candidate (Note [Drop-in design]).

Note [Drop-in design]
~~~~~~~~~~~~~~~~~~~~~
* **What is checked**: the floating-point inputs that require grad and, for
  an ``nn.Module``, its parameters that require grad (named as in
  ``named_parameters()``: ``0.weight``); with ``parameters=False`` (and in
  routed calls) the inputs only, as torch's gradcheck checks a module.
* **Outputs**: every floating output element, flattened in order. Each
  checked point is a cotangent ``c``: the model's loss is ``c . f(x)`` and
  its gradient the vector-Jacobian product ``J^T c`` the backward computes.
  At the given inputs the cotangents are the unit vectors while the outputs
  have at most :data:`MAX_JACOBIAN` elements (the full Jacobian, row by
  row), else :data:`RANDOM_COTANGENTS` seeded random ones; ``fast_mode``
  takes :data:`FAST_COTANGENTS` random ones always, the first the
  reentrancy check's (Note [One forward at the given inputs]).
* **Random points**: ``points`` more points around the inputs (each
  component uniform in ``t +- 0.1 |t|``, seeded by ``seed``), each with a
  random cotangent: one call checks more than one point.
* **Tolerances**: derived per component from the dtype and the rounding
  scale (Note [Tolerance model] in tolerance.py), so correct float32
  backwards pass and 1e-8 relative errors in float64 are caught. ``atol``
  and ``rtol``, when given, replace the derived tolerance for the
  candidate: it fails where ``|g - exact| > atol + rtol |exact|``.
* **Structural checks**: after the values, torch's own tests of the
  backward's plumbing run on the user's function, by torch's own code
  (``torch.autograd.gradcheck``'s helpers, so their meaning is exactly
  torch's): a zero cotangent gives zero gradients of the inputs' dtype,
  device and size; ``check_undefined_grad`` (undefined output gradients
  are handled); ``check_batched_grad`` / ``check_batched_forward_grad``
  (``vmap`` over the backward / forward AD matches a loop). Ours:
  ``check_grad_dtypes`` (each gradient has its input's dtype). A failure
  raises :class:`GradientMismatch` naming the keyword that skips it.
* **Ops outside the table** (:data:`gradcheck_lab.torch_graph.OPS`, after
  torch's decompositions): no symbolic or referee leg; the backward is
  checked against finite differences of the user's forward with their error
  bars, and the message says so. The same holds where the graph is not the
  function (Note [Trace fidelity]), where its derivation would exceed
  :data:`DERIVATION_BUDGET`, and where our own pipeline fails (Note
  [Internal failures]). With no proof, a disagreement counts only
  where finite differences at 16, 256 and 4096x smaller steps and 16x larger
  ones (:data:`FALLBACK_LOOKS`) confirm it: each smaller look gives a finite
  estimate with a finite error bar and the backward lies outside it (a jump
  of a histogram's bins inside the default steps vanishes at some smaller
  one: a correct CLAHE was blamed), and the larger one does not agree with
  the backward with an error bar sharp enough to see the difference (it may
  give no estimate: a pole of ``lgamma`` within ``|t|``). Smaller steps with no
  estimate confirm nothing (``trunc(3 a) * a`` at ``|a| ~ 20``: steps of
  ``|a| / 8`` cross many jumps and see the smooth ``3 a^2``; smaller ones
  cross a jump and give none; its correct backward was blamed). Points where
  the forward itself is not finite in the inputs' dtype (``erfinv(tanh(a))``
  in float32 at ``a ~ 10``) are not judged, as the traced path does.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import tensor_check
from .errors import GradcheckError, GradientMismatch, UsageError
from .torch_graph import (
    DROPIN_BLOCK,
    Leaf,
    Traced,
    Unsupported,
    element_work,
    leaf_labels,
    model_of,
    name_leaves,
    points_around,
    reads_of,
    trace,
)

__all__ = ["gradcheck", "gradgradcheck", "MAX_JACOBIAN", "RANDOM_COTANGENTS", "FAST_COTANGENTS", "POINTS",
           "FAST_POINTS"]

#: Largest number of output elements whose full Jacobian is checked at the given inputs.
MAX_JACOBIAN = 64
#: Seeded random cotangents at the given inputs beyond that.
RANDOM_COTANGENTS = 8
#: Seeded random cotangents at the given inputs with ``fast_mode=True``: each checks every input component
#: (torch's fast mode checks one projection of them), and each costs one call of the user's backward.
FAST_COTANGENTS = 2
#: Random points around the inputs checked by default.
POINTS = 8
#: Random points with ``fast_mode=True`` when ``points`` is not given (a suite that asks for speed): the given
#: inputs only, as torch's fast mode (their cotangents check every component; the trace is still re-evaluated
#: at a random point, Note [Trace fidelity]). One random point cost 0.8 ms of a 4.4 ms small call.
FAST_POINTS = 0


# ---------------------------------------------------------------- the function under test


def _warn(message: str) -> None:
    """A RuntimeWarning at the user's line: the first frame outside gradcheck_lab (routed calls included)."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    frame: Any = sys._getframe(1)
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RuntimeWarning, stacklevel=level)


class _Target:
    """The user's callable, its checked leaves and how to call it with new leaf values."""

    def __init__(self, func: Callable, inputs: Sequence[Any], parameters: bool = True):
        import torch

        if not callable(func):
            raise UsageError(f"Expected func to be a callable (a function, a Function's apply or an nn.Module) "
                             f"but got {type(func).__name__} {func!r:.60}.")
        if not isinstance(parameters, bool):
            raise UsageError(f"Expected parameters to be True or False but got parameters={parameters!r}.")
        self.func = func
        self.inputs = tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)
        #: Which floating-point outputs are checked (Note [Differentiable outputs]); None: all of them.
        self.keep: tuple[bool, ...] | None = None
        #: Every call seeded alike: the function draws random numbers that do not change its outputs at the
        #: given inputs (Note [Random forwards]), but may elsewhere.
        self.seeded = False
        #: ``(leaves, float outputs)`` of a forward with grad at the given inputs, for the reentrancy check,
        #: and those outputs' shapes, for the trace.
        self.graph_run: tuple | None = None
        self.out_shapes: list[tuple[int, ...]] | None = None
        #: The checked outputs at the given inputs, flat (Note [NaN outputs]), and as the function returned them
        #: (float tensors, no grad): the trace's fidelity check compares its graph with them there.
        self.given_output: np.ndarray = np.zeros(0)
        self.given_floats: list | None = None
        #: The forward with grad at the given inputs and the reentrancy check's backward (Note [One forward at
        #: the given inputs]); None once its checks are done.
        self.given_run: _GivenRun | None = None
        self.module = func if isinstance(func, torch.nn.Module) else None
        names = _argument_names(func, len(self.inputs))
        leaves: list[Leaf] = []
        for i, a in enumerate(self.inputs):
            if isinstance(a, torch.Tensor) and a.requires_grad:
                if a.is_complex():  # Note [Complex inputs]
                    real = torch.view_as_real(a.detach()).dtype
                    _check_dtype(torch.empty(0, dtype=real), f"input {i} ({names[i]}), as its real parts")
                    leaves.append(Leaf(names[i], "input", i, tuple(a.shape) + (2,), real, pairs=True))
                    continue
                _check_dtype(a, f"input {i} ({names[i]})")
                leaves.append(Leaf(names[i], "input", i, tuple(a.shape), a.dtype))
        if self.module is not None and parameters:
            for pname, p in self.module.named_parameters():
                if p.requires_grad:
                    _check_dtype(p, f"parameter {pname}")
                    leaves.append(Leaf(pname, "parameter", pname, tuple(p.shape), p.dtype))
        #: Leaves with no elements: nothing to check (torch's gradcheck passes them); they keep their tensor.
        self.empty = sum(1 for lf in leaves if math.prod(lf.shape) == 0)
        leaves = [lf for lf in leaves if math.prod(lf.shape) > 0]
        if not leaves and self.empty:
            self.leaves, self.values, self.dtype = [], [], "float64"
            return
        if not leaves:
            raise UsageError(
                "Expected at least one input tensor (or module parameter) that requires grad but got none; "
                "create inputs with requires_grad=True, e.g. torch.randn(3, dtype=torch.float64, requires_grad=True)."
            )
        name_leaves(leaves)
        self.leaves = leaves
        dtypes = {str(lf.dtype).replace("torch.", "") for lf in leaves}
        self.dtype = "float32" if "float32" in dtypes else "float64"
        self.values = [self._tensor(lf).detach() for lf in leaves]
        for lf, v in zip(leaves, self.values):
            if not bool(torch.isfinite(v).all()):
                raise UsageError(f"Expected {lf.kind} {lf.label} to hold finite values but it holds NaN or inf "
                                 f"({int((~torch.isfinite(v)).sum())} of {v.numel()}); a gradient there is not "
                                 "defined: check at finite inputs.")

    def _tensor(self, leaf: Leaf):
        if leaf.kind == "input":
            a = self.inputs[int(leaf.position)]
            if leaf.pairs:
                import torch

                return torch.view_as_real(a.detach()).clone()
            return a
        assert self.module is not None
        return dict(self.module.named_parameters())[str(leaf.position)]

    def call(self, *tensors):
        """The user's function with the leaves replaced by ``tensors``; complex outputs as (real, imaginary)
        pairs (Note [Complex inputs])."""
        import torch

        args = list(self.inputs)
        params: dict[str, Any] = {}
        for leaf, t in zip(self.leaves, tensors):
            if leaf.kind == "input":
                args[int(leaf.position)] = torch.view_as_complex(t.contiguous()) if leaf.pairs else t
            else:
                params[str(leaf.position)] = t
        if self.seeded:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(RANDOM_SEEDS[0])
                out = _as_real(self._run(args, params))
        else:
            out = _as_real(self._run(args, params))
        if self.keep is None:
            return out
        from .torch_graph import _flat_outputs

        floats = [o for o in _flat_outputs(out) if o.is_floating_point()]
        return tuple(o for o, k in zip(floats, self.keep) if k)

    def _run(self, args, params):
        if self.module is not None:
            from torch.func import functional_call

            return functional_call(self.module, params, tuple(args))
        return self.func(*args)

    def key(self):
        from .torch_graph import _fingerprint

        fkey = self.func if _hashable(self.func) else id(self.func)
        consts: tuple = tuple(
            _fingerprint(a) if not (hasattr(a, "requires_grad") and a.requires_grad) else (tuple(a.shape), str(a.dtype))
            for a in self.inputs
        )
        if self.module is not None:
            checked = {str(lf.position) for lf in self.leaves if lf.kind == "parameter"}
            consts += tuple(  # parameters not checked (parameters=False) are constants of the graph
                (k, _fingerprint(t)) for k, t in (*self.module.named_buffers(), *self.module.named_parameters())
                if k not in checked
            )
            consts += (self.module.training,)
        consts += (self.keep,)
        return (fkey, consts, tuple((lf.label, lf.shape, str(lf.dtype)) for lf in self.leaves))

    def theta(self) -> np.ndarray:
        """The given leaves' values as one flat float64 row (as random points are)."""
        return np.concatenate([v.detach().double().cpu().numpy().ravel() for v in self.values])

    def flat_output(self, out):
        import torch

        from .torch_graph import _flat_outputs

        outs = [o for o in _flat_outputs(out) if o.is_floating_point()]
        return torch.cat([o.reshape(-1) for o in outs])

    def leaf_tensors(self, p, dtype):
        import torch

        out = []
        for leaf in self.leaves:
            parts = [getattr(p, n) for n in leaf.var_names]
            out.append(torch.stack(parts).reshape(leaf.shape) if leaf.shape else parts[0])
        return out


def _as_real(out):
    """Complex tensors of a (nested) output as ``torch.view_as_real`` pairs: Note [Complex inputs].

    Note [Complex inputs]
    ~~~~~~~~~~~~~~~~~~~~~
    A complex input is checked as the real tensor of its (real, imaginary)
    pairs, and a complex output likewise: the function checked is the real
    map of pairs to pairs, which determines both Wirtinger derivatives.
    torch's convention makes the backward of that map the user's own: for
    a real loss ``L = sum(c * view_as_real(out))`` autograd passes the
    complex cotangent ``c[..., 0] + i c[..., 1]`` to the user's backward and
    returns ``dL/dRe z + i dL/dIm z``, whose pairs are the gradient of the
    real map. So every leg, and the messages (``z[1].imag``), work on real
    numbers; a backward that forgets a conjugation is off in the imaginary
    parts. Complex module parameters are not supported.
    """
    import torch

    if isinstance(out, torch.Tensor):
        return torch.view_as_real(out) if out.is_complex() else out
    if isinstance(out, (list, tuple)) and not hasattr(out, "_fields"):
        return type(out)(_as_real(o) for o in out)
    return out


def _hashable(x) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def _check_dtype(t, what: str) -> None:
    if t.dtype not in _float_dtypes():
        raise UsageError(
            f"Expected {what} to be float32 or float64 but got {t.dtype}; "
            "half-precision tensors have no tolerance model here: convert to float32 or float64."
        )


def _float_dtypes():
    import torch

    return (torch.float32, torch.float64)


def _argument_names(func, n: int) -> list[str]:
    target = func.forward if hasattr(func, "forward") and callable(func.forward) else func
    params = _positional_names(target)
    names = [params[i] if i < len(params) else f"input{i}" for i in range(n)]
    # *args functions (Function.apply): name by position.
    return [nm if nm not in ("args", "self", "ctx") else f"input{i}" for i, nm in enumerate(names)]


def _positional_names(target) -> list[str]:
    """The names of ``target``'s positional parameters, as ``inspect.signature`` gives them.

    A plain function's (or a method's, less ``self``) are read from its code object: ``inspect.signature``
    took 0.06 ms, a thirtieth of a small ``fast_mode`` call. Anything else (a wrapper with ``__wrapped__``
    or ``__signature__``, a builtin, a callable object) goes through ``inspect.signature``."""
    fn, bound = (target.__func__, True) if isinstance(target, types.MethodType) else (target, False)
    if isinstance(fn, types.FunctionType) and not hasattr(fn, "__wrapped__") and not hasattr(fn, "__signature__"):
        names = list(fn.__code__.co_varnames[: fn.__code__.co_argcount])
        return names[1:] if bound else names
    try:
        return [p.name for p in inspect.signature(target).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return []


# ---------------------------------------------------------------- candidates


def _leaf_values(target: _Target, params, dtype):
    """The checked tensors at a point's ``params`` (name -> float), as fresh leaves requiring grad."""
    import torch

    out = []
    for leaf in target.leaves:
        # float(): the values may be 0-d arrays (a verifier measuring the candidate's own rounding).
        t = torch.tensor([float(params[n]) for n in leaf.var_names], dtype=dtype).reshape(leaf.shape)
        out.append(t.requires_grad_(True))
    return out


def _gradient(grads, leaves) -> np.ndarray:
    import torch

    parts = [(g if g is not None else torch.zeros_like(t)).reshape(-1) for g, t in zip(grads, leaves)]
    return torch.cat(parts).detach().numpy()  # float32 stays float32: judged with float32's tolerance


def _backward_candidate(target: _Target):
    """The user's backward as a candidate: the vector-Jacobian products ``J^T c`` of each point.

    Points that share their inputs (the rows of the Jacobian at the given
    inputs) share one forward; each cotangent is one ``torch.autograd.grad``
    with ``retain_graph``, as torch's gradcheck computes its rows. A torch
    candidate, so its own rounding is measured on every aten operation of
    the forward and the user's backward (Note [Own rounding]).
    """
    import torch

    from .candidates import Candidate

    def gradients(model, batch, dtype, device):
        dt = getattr(torch, target.dtype)
        off = 0
        for var in model.data_vars:
            if var.name == "cotangent":
                break
            off += var.size
        n_out = model.data_vars[[v.name for v in model.data_vars].index("cotangent")].size
        out = np.empty(batch.theta.shape)
        start, n = 0, len(batch)
        while start < n:
            end = start + 1
            while end < n and np.array_equal(batch.theta[end], batch.theta[start]):
                end += 1
            leaves, k = [], 0
            for leaf in target.leaves:
                size = max(math.prod(leaf.shape), 1)
                leaves.append(torch.tensor(batch.theta[start, k : k + size], dtype=dt).reshape(leaf.shape).requires_grad_())
                k += size
            flat = target.flat_output(target.call(*leaves))
            for r in range(start, end):
                if not flat.requires_grad:  # no output depends on a checked input: a zero Jacobian
                    out[r] = 0.0
                    continue
                cot = torch.as_tensor(batch.data[r, off : off + n_out], dtype=flat.dtype)
                grads = torch.autograd.grad(flat, leaves, cot, retain_graph=r < end - 1, allow_unused=True)
                out[r] = _gradient(grads, leaves)
            start = end
        return out, None

    return Candidate("torch_batch", gradients)


def _double_backward_candidate(target: _Target, direction: str, noncontiguous: bool = False):
    """``u . d(c . f)/dx`` with ``create_graph=True``, differentiated again: the user's double backward.

    ``noncontiguous``: each output's cotangent reaches the backward as a
    non-contiguous tensor (``gen_non_contig_grad_outputs``).
    """
    import torch

    from .torch_graph import _flat_outputs

    dt = getattr(torch, target.dtype)

    def grad(params, point):
        leaves = _leaf_values(target, params, dt)
        outs = [o for o in _flat_outputs(target.call(*leaves)) if o.is_floating_point()]
        cot = torch.as_tensor(np.asarray(point["cotangent"], dtype=float), dtype=dt)
        cots, off = [], 0
        for o in outs:
            c = cot[off : off + o.numel()].reshape(o.shape)
            off += o.numel()
            if noncontiguous:  # every other element of a buffer twice the size
                c = torch.zeros((*o.shape, 2), dtype=dt).select(-1, 0).copy_(c)
            cots.append(c)
        used = [(o, c) for o, c in zip(outs, cots) if o.requires_grad]
        first = (
            torch.autograd.grad([o for o, _ in used], leaves, [c for _, c in used], create_graph=True, allow_unused=True)
            if used else [None] * len(leaves)
        )
        u = torch.as_tensor(np.asarray(point[direction], dtype=float), dtype=dt)
        terms, off = [], 0
        for leaf, g in zip(target.leaves, first):
            n = max(math.prod(leaf.shape), 1)
            if g is not None and g.requires_grad:
                terms.append((g.reshape(-1) * u[off : off + n]).sum())
            off += n
        if not terms:
            # A backward that is not differentiable at all: its second derivatives read as 0.
            return np.zeros(sum(max(math.prod(lf.shape), 1) for lf in target.leaves), dtype=np.float32 if
                            target.dtype == "float32" else np.float64)
        return _gradient(torch.autograd.grad(sum(terms), leaves, allow_unused=True), leaves)

    return grad


def _fwd_over_rev_candidate(target: _Target, direction: str):
    """``H u`` as forward-mode AD over the user's backward: the tangent of ``d(c . f)/dx`` along ``u``."""
    import torch
    import torch.autograd.forward_ad as fwAD

    dt = getattr(torch, target.dtype)

    def grad(params, point):
        leaves = _leaf_values(target, params, dt)
        u = torch.as_tensor(np.asarray(point[direction], dtype=float), dtype=dt)
        cot = torch.as_tensor(np.asarray(point["cotangent"], dtype=float), dtype=dt)
        with fwAD.dual_level():
            duals, off = [], 0
            for leaf, t in zip(target.leaves, leaves):
                n = max(math.prod(leaf.shape), 1)
                duals.append(fwAD.make_dual(t, u[off : off + n].reshape(t.shape)))
                off += n
            flat = target.flat_output(target.call(*duals))
            first = torch.autograd.grad(flat, leaves, cot, create_graph=True, allow_unused=True)
            tangents = [None if g is None else fwAD.unpack_dual(g).tangent for g in first]
        return _gradient(tangents, leaves)

    return grad


def _forward_candidate(target: _Target, model):
    """Forward-mode AD (``torch.autograd.forward_ad``) as a gradient function: ``J^T c`` from one JVP per component."""
    import torch
    import torch.autograd.forward_ad as fwAD

    cache: dict = {}
    dt = getattr(torch, target.dtype)

    def jacobian(theta: tuple) -> np.ndarray:
        if theta in cache:
            return cache[theta]
        base, off = [], 0
        for leaf in target.leaves:
            n = max(math.prod(leaf.shape), 1)
            base.append(torch.tensor(theta[off : off + n], dtype=dt).reshape(leaf.shape))
            off += n
        cols = []
        for j, leaf in enumerate(target.leaves):
            for k in range(max(math.prod(leaf.shape), 1)):
                with fwAD.dual_level():
                    duals = []
                    for i, t in enumerate(base):
                        tangent = torch.zeros_like(t)
                        if i == j:
                            tangent.view(-1)[k] = 1.0
                        duals.append(fwAD.make_dual(t, tangent))
                    out = target.call(*duals)
                    from .torch_graph import _flat_outputs

                    parts = []
                    for o in _flat_outputs(out):
                        if o.is_floating_point():
                            tan = fwAD.unpack_dual(o).tangent
                            parts.append(torch.zeros(o.numel(), dtype=dt) if tan is None else tan.reshape(-1))
                cols.append(torch.cat(parts).detach().double().numpy())
        cache[theta] = np.stack(cols, axis=1)  # (n_out, P)
        return cache[theta]

    names = [v.name for v in model.params]

    def grad(params, point):
        jac = jacobian(tuple(float(params[n]) for n in names))
        flat = jac.T @ np.asarray(point["cotangent"], dtype=float)
        return np.asarray(flat, dtype=np.float32) if target.dtype == "float32" else flat

    return grad


# ---------------------------------------------------------------- points and verdicts


def _cotangents(n_out: int, fast_mode: bool, seed: int, given=None) -> list[list[float]]:
    if given is not None:
        return [given]
    if n_out <= MAX_JACOBIAN and not fast_mode:
        return [[1.0 if j == k else 0.0 for j in range(n_out)] for k in range(n_out)]
    rng = np.random.default_rng(seed)
    if fast_mode:  # the first is the reentrancy check's: its product is known (Note [One forward at the given inputs])
        return [_reentrancy_cotangent(n_out, seed).tolist()] + [rng.uniform(-1.0, 1.0, n_out).tolist()
                                                                for _ in range(FAST_COTANGENTS - 1)]
    return [rng.uniform(-1.0, 1.0, n_out).tolist() for _ in range(RANDOM_COTANGENTS)]


def _describe_cotangent(traced, cot) -> str:
    c = np.asarray(cot, dtype=float)
    nz = np.flatnonzero(c)
    if len(nz) == 1 and c[nz[0]] == 1.0:
        return traced.output_element(int(nz[0]))
    return "the outputs projected on a random cotangent"


def _faults(report, atol, rtol, who: str = "candidate"):
    """``(source, point, check)`` for every component where ``who`` is at fault."""
    out = []
    custom = atol is not None or rtol is not None
    a, r = (atol or 0.0), (rtol or 0.0)
    for source, points in (("given", report.data_points), ("random", report.failures)):
        for pt in points:
            for c in pt.checks:
                if custom and who == "candidate":
                    ref = c.exact if c.exact is not None else c.values.get("symbolic")
                    g = c.values.get("candidate")
                    bad = g is None or ref is None or abs(g - ref) > a + r * abs(ref)
                else:
                    bad = who in c.at_fault
                if bad:
                    out.append((source, pt, c))
    return out


def _fmt(x) -> str:
    return "none" if x is None else f"{x:.10g}"


def _mismatch_message(what: str, traced, labels, report, faults, engine_label: str, func) -> str:
    # The worst component, preferring the given inputs (their rows are the Jacobian's).
    source, pt, c = max(
        faults,
        key=lambda f: (f[0] == "given", abs((f[2].values.get("candidate") or 0.0) - (f[2].exact or 0.0))),
    )
    name = getattr(func, "__qualname__", None) or type(func).__name__
    where = "at the given inputs" if source == "given" else f"at random point {pt.index} around the inputs"
    comp = labels.get(c.param, c.param)
    outs = _describe_cotangent(traced, pt.point.get("cotangent", []))
    others = ", ".join(
        f"{'autograd of the traced forward' if e == 'autograd' else e.replace('_', ' ')} {_fmt(v)}"
        for e, v in c.values.items() if e != "candidate"
    )
    n_given = sum(1 for f in faults if f[0] == "given")
    return (
        f"gradcheck_lab.{what}: the {engine_label} of {name} is wrong.\n"
        f"  d[{outs}] / d[{comp}] {where}: {engine_label} gives {_fmt(c.values.get('candidate'))}, "
        f"the exact value is {_fmt(c.exact if c.exact is not None else c.values.get('symbolic'))} "
        f"({others}).\n"
        f"  At fault: {engine_label} (candidate). {len(faults)} component(s) wrong "
        f"({n_given} at the given inputs, {len(faults) - n_given} in the random points the report lists).\n"
        f"  {report.message}"
    )


def _fail(message: str, report, raise_exception: bool) -> bool:
    if raise_exception:
        raise GradientMismatch(message, report)
    return False


def _own_engines(report) -> None:
    ours = [e for e in report.at_fault if e != "candidate"]
    if ours:
        _warn(
            f"gradcheck_lab: the project's own engines disagree ({', '.join(ours)}); the verdict on your "
            f"backward stands, but please report this: {report.message}")


# ---------------------------------------------------------------- gradcheck


def gradcheck(
    func: Callable,
    inputs: Any,
    *,
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    raise_exception: bool = True,
    nondet_tol: float = 0.0,
    check_undefined_grad: bool = True,
    check_grad_dtypes: bool = False,
    check_batched_grad: bool = False,
    check_batched_forward_grad: bool = False,
    check_forward_ad: bool = False,
    check_backward_ad: bool = True,
    fast_mode: bool = False,
    masked: bool | None = None,
    points: int | None = None,
    seed: int = 0,
    reference: Callable | None = None,
    parameters: bool = True,
) -> bool:
    """Check the backward (and optionally forward-mode AD) of ``func`` at ``inputs``; True or GradientMismatch.

    A drop-in for :func:`torch.autograd.gradcheck` (Note [Drop-in design]):
    ``func`` is any callable of tensors or an ``nn.Module``; ``inputs`` a
    tensor or a tuple (non-tensor arguments pass through). Keywords as in
    torch: ``atol``/``rtol`` replace the derived tolerances when given (the
    one not given keeps torch's default, 1e-5 or 1e-3);
    ``eps`` adds torch's fixed-step finite differences to the failure
    message (ours choose their own steps); ``nondet_tol`` bounds the
    difference of two backward passes (reentrancy); ``check_forward_ad``
    checks forward-mode JVPs; ``check_backward_ad=False`` skips the
    backward; ``fast_mode`` checks random cotangents instead of the full
    Jacobian. Once the values pass, torch's structural tests run, by
    torch's own code: a zero cotangent gives zero gradients (of the inputs'
    dtype, device and size; ``masked`` compares with ``allclose``),
    ``check_undefined_grad``, ``check_batched_grad`` and
    ``check_batched_forward_grad``; ``check_grad_dtypes`` checks each
    gradient's dtype. ``points`` random points around the inputs (seeded by
    ``seed``; default :data:`POINTS`, :data:`FAST_POINTS` with ``fast_mode``)
    are checked too. ``reference``: a pure-torch implementation of
    the same forward (called like ``func``; an ``nn.Module`` with the same
    parameters when ``func`` is one) for an opaque op or kernel: the symbolic
    truth is derived from it, after a check that both forwards agree
    (Note [Trace fidelity] in fidelity.py). ``parameters=False`` checks an
    ``nn.Module``'s inputs only, as torch's gradcheck does (routed calls do).

    >>> import torch
    >>> from gradcheck_lab import gradcheck
    >>> x = torch.randn(3, 4, dtype=torch.float32, requires_grad=True)
    >>> gradcheck(lambda t: (t.sin() * t).sum(0), (x,))
    True
    """
    points = (FAST_POINTS if fast_mode else POINTS) if points is None else points
    _validate(points, seed)
    atol, rtol = _torch_tolerances(atol, rtol)
    _requires("check_batched_grad", check_batched_grad, "check_backward_ad", check_backward_ad)
    _requires("check_batched_forward_grad", check_batched_forward_grad, "check_forward_ad", check_forward_ad)
    if not (check_backward_ad or check_forward_ad):
        raise UsageError("Expected check_backward_ad or check_forward_ad to be True (as torch.autograd.gradcheck) "
                         "but got both False: nothing would be checked.")
    target = _Target(func, inputs, parameters)
    if not target.leaves:
        return _nothing_to_check(target)
    if not _deterministic(target, nondet_tol):
        return _no_float_outputs(target)
    if target.dtype == "float64" and np.isnan(target.given_output).any():  # Note [NaN outputs]
        return _fail(_nan_output_message(target), None, raise_exception)
    # Note [Reentrant first]: a backward that mutates what forward saved gives another value at each
    # call; judged by value it was blamed for a number the user never sees.
    if check_backward_ad and not _reentrant(target, nondet_tol, seed, raise_exception):
        return False
    traced, fid = _truth(target, points, seed, reference, raise_exception, decompose=False)
    if traced is None:
        return False
    structural = dict(
        backward=check_backward_ad, forward=check_forward_ad, undefined=check_undefined_grad,
        dtypes=check_grad_dtypes, batched=check_batched_grad, batched_forward=check_batched_forward_grad,
        masked=bool(masked), raise_exception=raise_exception,
    )
    skipped: list[int] = []
    found: list = []
    if check_backward_ad and not check_forward_ad and _tensor_leg(target, traced, fid, points, seed, fast_mode, atol,
                                                                  rtol, skipped, found):
        _refused_warning(fid.refused, points)
        _nan_warning(skipped, points)
        given, target.given_run = target.given_run, None
        return _structural("gradcheck", target.call, target.values, func, given=given, **structural)
    target.given_run = None  # the kept forward's saved tensors: the full path makes its own
    return _judged(target, traced, fid, func, eps, atol, rtol, raise_exception, points, seed, fast_mode,
                   check_backward_ad, check_forward_ad, structural, found)


def _judged(target, traced, fid, func, eps, atol, rtol, raise_exception, points, seed, fast_mode,
            check_backward_ad, check_forward_ad, structural, found=()) -> bool:
    """The full path, where the tensor leg did not pass the call: the per-element symbolic and referee legs
    on a faithful graph, else the tensor referee on the tensor leg's disagreement (``found``) and finite
    differences of the real function (``_fallback``)."""
    reads = reads_of(traced) if not (isinstance(traced, Unsupported) and traced.outside) else ()
    if reads:  # Note [Reads of the inputs]: its derivative passes a call, never fails one (unfaithful: said so)
        from . import fidelity

        where = "; ".join(fidelity.leaks(target.call, target.values)) or ", ".join(sorted(set(reads)))
        traced = Unsupported([], target.leaves, traced.out_shapes, _READS_UNJUDGED.format(where), outside=True)
    if isinstance(traced, Unsupported) and traced.deferred:  # Note [Decompositions on demand]
        # where the legs disagreed, decomposed however large: the tensor referee reads the per-element graph
        traced, fid = _truth(target, points, seed, None, raise_exception, unbounded=bool(found))
    if not isinstance(traced, Unsupported) and check_backward_ad and _nonfinite_backward(target, [target.theta()],
                                                                                         [], seed):
        # Note [NaN at the inputs]
        traced = Unsupported([], target.leaves, traced.out_shapes, "the backward is not finite at the given inputs, "
                             "where the forward is")
    if not isinstance(traced, Unsupported):
        _refused_warning(fid.refused, points)
        if check_backward_ad and fid.points is not None:
            nan = _nonfinite_backward(target, fid.points[0][:points], fid.refused, seed)
            fid.refused = sorted(set(fid.refused) | set(nan))
            _nan_warning(nan, points)
        work = element_work(traced)
        fault = None
        if found and traced.tensor is not None and work > PROOF_FIRST_WORK:  # Note [Proof first]
            fault = tensor_check.proven_fault(traced, traced.tensor, found[0], target.dtype, atol, rtol)
        overruled = bool(found) and traced.tensor is not None and _disagreement_overruled(target, traced, found[0],
                                                                                           fault)
        if fault is not None and not overruled:
            return _fail(_proven_message(target, traced, found[0], fault, "the per-element legs were not "
                                         f"run ({work:,} element operations to derive)"), None, raise_exception)
        try:
            if overruled:  # the graph's derivative, overruled by the function's differences
                raise _Overruled(_OVERRULED)
            return _traced_check(target, traced, fid, func, eps, atol, rtol, raise_exception, points, seed,
                                 fast_mode, check_backward_ad, check_forward_ad, structural)
        except _Overruled as why:
            traced = Unsupported([], target.leaves, traced.out_shapes, str(why))
        except GradcheckError:
            raise
        except Exception as exc:  # noqa: BLE001 - Note [Internal failures]
            if _user_code_raised(exc):
                raise
            reason = (f"internal failure of the symbolic leg: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:120] if str(exc) else ''}")
            traced = Unsupported([], target.leaves, traced.out_shapes, reason)
    elif traced.elements is not None and traced.tensor is not None and found and check_backward_ad:
        fault = tensor_check.proven_fault(traced.elements, traced.tensor, found[0], target.dtype, atol, rtol)
        if fault is not None and _disagreement_overruled(target, traced, found[0], fault):
            traced = replace(traced, reason=_OVERRULED)
        elif fault is not None:
            return _fail(_proven_message(target, traced, found[0], fault,
                                         f"the per-element legs were skipped: {traced.reason}"), None, raise_exception)
        elif (confirmed := _differences_confirm(target, traced, found[0], atol, rtol)) is not None:
            work = element_work(traced.elements)  # Note [Differences confirm]
            unproven = (f"{work:,} element operations would take it past its budget of "
                        f"{tensor_check.REFEREE_SECONDS:g} s" if work * tensor_check.REFEREE_OP_SECONDS
                        > tensor_check.REFEREE_SECONDS else
                        f"it could not enclose the value within its budget of {tensor_check.REFEREE_SECONDS:g} s")
            confirmed_fault, check = confirmed
            return _fail(_confirmed_message(target, traced, found[0], confirmed_fault, check, unproven), None,
                         raise_exception)
    for forward_ad in ([False] if check_backward_ad else []) + ([True] if check_forward_ad else []):  # as torch
        if not _fallback(target, traced, atol, rtol, raise_exception, points, seed, fast_mode, forward_ad):
            return False
    return _structural("gradcheck", target.call, target.values, func, **structural)


_READS_UNJUDGED = ("the forward reads values of its inputs into Python ({}), so its graph is the branch of the given "
                   "inputs, whose derivative may pass a call but not fail one: a solver's stopping test gives a "
                   "graph whose derivative is the iterations', not the solution's that a backward means "
                   "(Note [Reads of the inputs])")


class _Overruled(Exception):
    """The graph's exact derivative is overruled by finite differences (Note [Differences overrule])."""


_OVERRULED = ("the traced graph's exact derivative differs from finite differences of the function: the graph is "
              "the function at its points, but a selection inside the forward that depends on the inputs (a "
              "bisection, a search, a tie) makes it so piece by piece, its derivative only the piece's "
              "(Note [Differences overrule])")


def _differences_overrule(checks) -> bool:
    """Note [Differences overrule]
    ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    The traced graph is shown to be the function at points (Note [Trace
    fidelity]); its derivative can still be another than the function's at
    any scale a user means. A sparsemax by bisection is a ``where`` of
    ``relu(x - tau) - 1 >= 0`` fifty times: piecewise in pieces of 2**-50,
    and in each piece ``tau`` moves with ``max(x)`` only, so the graph's
    exact derivative is 0 where sparsemax's is 0.5. Its correct backward
    was blamed (symbolic 0, autograd of the graph 0, the referee's proof 0,
    finite differences 0.5), where torch's gradcheck passes it. So where
    some component at fault has finite differences that resolve the exact
    value as another (farther than ``FD_SAFETY`` times their error bar plus
    the candidate's tolerance), and none has differences that side with the
    exact value against the candidate, the graph's derivative is not the
    truth: the call goes to finite differences of the real function (the
    fallback), with a warning that says why, and a backward that is wrong
    there (sparsemax's off by 1e-3) fails with their evidence, not with an
    exact value of 0. A smooth graph never meets this (its differences
    agree with its exact derivative), so a wrong backward is still failed
    with its proof; one whose differences cannot resolve the error (1e-10)
    is judged by the exact value, as before.
    """
    from .tolerance import FD_SAFETY

    contradicted = confirmed = 0
    for c in checks:
        fd, err, g, exact = c.values.get("finite differences"), c.fd_error, c.values.get("candidate"), c.exact
        tol = c.tolerance.get("candidate") or 0.0
        if None in (fd, err, g, exact) or not all(map(math.isfinite, (fd, err, g, exact))):
            continue
        bar = FD_SAFETY * err + tol
        if abs(fd - exact) > bar:
            contradicted += 1
        elif abs(fd - g) > bar:
            confirmed += 1
    return contradicted > 0 and confirmed == 0


def _disagreement_overruled(target, traced, found, fault=None) -> bool:
    """Note [Differences overrule] where the tensor-level legs disagreed (``found``): finite differences of
    the real function, along the component the tensor referee proved (``fault``) or else the one furthest
    outside its tolerance, at its point, resolve the graph's value there as another."""
    faults = [fault] if fault is not None else _worst_faults(target, traced, found, 1)
    return bool(faults) and _differences_overrule([_fd_check(target, traced, found.leaves, faults[0])])


def _worst_faults(target, traced, found, limit: int) -> list:
    """Up to ``limit`` components of the tensor-level disagreement ``found`` furthest outside their tolerance,
    worst first, as faults."""
    from types import SimpleNamespace

    tol, _ = tensor_check._model_tolerance(traced.tensor, found, target.dtype)
    worst = [SimpleNamespace(cotangent=found.cotangents[i], row=i, column=j, candidate=float(found.candidate[i, j]),
                             direction=None if found.directions is None else found.directions[:, j],
                             exact=float(found.symbolic[i, j]), tolerance=float(tol[i, j]))
             for i, j in found.worst(tol, limit)]
    return worst


def _given_fault_overruled(target, traced, model, pts, faults) -> bool:
    """Note [Differences overrule] for the per-element report (forward mode, where no tensor-level leg ran): the
    first component at fault at the given inputs, by finite differences of the real function there."""
    from types import SimpleNamespace

    names = [p.name for p in model.params]
    for source, pt, c in faults:
        g = c.values.get("candidate")
        if source != "given" or c.param not in names or c.exact is None or g is None or pt.index >= len(pts):
            continue
        fault = SimpleNamespace(cotangent=np.asarray(pts[pt.index]["cotangent"], dtype=float), direction=None,
                                column=names.index(c.param), candidate=float(g), exact=float(c.exact),
                                tolerance=float(c.tolerance.get("candidate") or 0.0))
        return _differences_overrule([_fd_check(target, traced, target.values, fault)])
    return False


def _fd_check(target, traced, leaves, fault):
    """Finite differences of the real function at ``leaves`` along ``fault``'s component, beside its candidate
    and exact values (the form :func:`_differences_overrule` reads); the estimate is NaN where the inputs
    are paired (complex) leaves."""
    from types import SimpleNamespace

    from .engines import finite_diff
    from .model import Batch

    fd, err = np.full((1, 1), np.nan), np.full((1, 1), np.nan)
    if not any(lf.pairs for lf in target.leaves):
        model, _, _ = _fallback_model(target, Unsupported([], target.leaves, traced.out_shapes, "differences check"))
        theta = np.concatenate([t.detach().double().cpu().numpy().ravel() for t in leaves])
        u = np.zeros_like(theta)
        if fault.direction is None:
            u[fault.column] = 1.0
        else:
            u[:] = fault.direction
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fd, err = finite_diff.directional(model, Batch(theta[None], np.asarray(fault.cotangent, float)[None]),
                                              u[None, None, :])
    return SimpleNamespace(values={"finite differences": float(fd[0, 0]), "candidate": fault.candidate},
                           fd_error=float(err[0, 0]), exact=fault.exact, tolerance={"candidate": fault.tolerance})


def _differences_confirm(target, traced, found, atol=None, rtol=None):
    """Note [Differences confirm]
    ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    Where the tensor-level legs disagree with the backward on a graph too
    large for the tensor referee and the per-element legs (kornia's HardNet,
    79 million element operations), finite differences of the real function
    along the worst components are the second, independent opinion: when
    they side with the symbolic value (within ``FD_SAFETY`` times their
    error bar plus the candidate's tolerance) and resolve the candidate as
    another, two legs that share nothing (exact rules on the graph, and the
    function's own values) say the same, and the call fails at once with
    both figures: ``tanh(x @ W)`` (1M element operations) with a backward
    off by 1e-6 failed in 1.8 s, where the whole finite-difference fallback
    took 5.1 s and gave one figure. Where they do not confirm (HardNet's
    ReLUs leave them without an error bar at every component tried), or
    overrule (Note [Differences overrule]), the fallback decides as before. ``atol``/``rtol``, when given, are the candidate's tolerance (as the referee's). Returns the
    component and its check, or None.
    """
    from .tolerance import FD_SAFETY

    eps = float(np.finfo(np.float32 if target.dtype == "float32" else np.float64).eps)
    for fault in _worst_faults(target, traced, found, CONFIRM_COMPONENTS):
        if fault.direction is not None and found.raw is not None:  # Note [Localized projections] (tensor_check.py)
            where = tensor_check.localize(traced.tensor, found, fault.row, fault.column, eps)
            if where is None:
                continue
            fault.column, fault.candidate, fault.exact, fault.tolerance = where
            fault.direction = None
        if atol is not None or rtol is not None:
            fault.tolerance = (atol or 0.0) + (rtol or 0.0) * abs(fault.exact)
        check = _fd_check(target, traced, found.leaves, fault)
        fd, err = check.values["finite differences"], check.fd_error
        if not (math.isfinite(fd) and math.isfinite(err)):
            continue  # no estimate there (a kink within the steps): the next component
        bar = FD_SAFETY * err + fault.tolerance
        if abs(fd - fault.exact) > bar:
            return None  # the differences side against the symbolic value: the fallback decides
        if abs(fd - fault.candidate) > bar:
            return fault, check
    return None


#: Components of a tensor-level disagreement (the worst first) whose finite differences Note [Differences
#: confirm] tries, until one has an estimate with an error bar.
CONFIRM_COMPONENTS = 4


def _fault_head(target, traced, found, fault) -> tuple[str, str]:
    """The first lines of a failure message on one component (``fault``) of a tensor-level disagreement
    (``found``): the component, where, and the backward's value; and how far off it is, in words."""
    labels = [leaf.element(k) for leaf in traced.leaves for k in range(math.prod(leaf.shape))]
    wrt = (f"d[{labels[fault.column]}]" if fault.direction is None else
           f"d[the inputs along random direction {fault.column} (+-1 in each of {len(labels)} components)]")
    where = "at the given inputs" if found.point is None else f"at random point {found.point} around the inputs"
    size = max(abs(fault.exact), abs(fault.candidate))
    rel = f"{abs(fault.candidate - fault.exact) / size:.1e} relative" if size > 0 else "absolute"
    return (
        f"gradcheck_lab.gradcheck: the backward of {getattr(target.func, '__qualname__', type(target.func).__name__)} "
        f"is wrong.\n"
        f"  d[{_describe_cotangent(traced, fault.cotangent)}] / {wrt} {where}: backward gives {fault.candidate:.12g}, "
    ), rel


def _confirmed_message(target, traced, found, fault, check, why: str) -> str:
    """The failure message of Note [Differences confirm]."""
    head, rel = _fault_head(target, traced, found, fault)
    return (
        head +
        f"the tensor-level symbolic leg {fault.exact:.12g}, finite differences of the real function "
        f"{check.values['finite differences']:.12g} +- {check.fd_error:.2g}.\n"
        f"  At fault: backward (candidate), off by {abs(fault.candidate - fault.exact):.2g} ({rel}) where its own "
        f"rounding allows {fault.tolerance:.2g}; the symbolic leg and the differences agree (Note [Differences "
        f"confirm]). The referee did not prove it: {why}.{_detach_hint(traced)}"
    )


def _detach_hint(traced) -> str:
    """A hint where the forward detaches a value that depends on the inputs: autograd skips that path, the
    function's derivative (finite differences, the symbolic leg, torch's gradcheck without fast_mode) does not."""
    graph = getattr(traced, "tensor", None)
    if graph is None:
        return ""
    for node in graph.gm.graph.nodes:
        if node.op == "call_function" and node.name in graph.live and "detach" in str(node.target):
            return ("\n  The forward detaches a value that depends on the inputs (.detach()): the backward skips that "
                    "path and the function's derivative does not. If that is intended (a stabilising shift such as "
                    "x - x.max().detach() beside an absolute eps, kornia's conv_soft_argmax2d: 1e-8 relative), the "
                    "backward is not the function's derivative; pass atol/rtol to accept a difference of this size.")
    return ""


def _proven_message(target, traced, found, fault, why: str) -> str:
    """The failure message of the tensor referee (Note [Tensor referee]): the component, the candidate, the
    proven exact value, and what the candidate's rounding allows."""
    head, rel = _fault_head(target, traced, found, fault)
    return (
        head +
        f"the exact value is {fault.exact:.12g} (proven in ball arithmetic at {fault.bits} bits to lie in "
        f"[{fault.lo!r}, {fault.hi!r}]; the tensor-level symbolic leg gives {fault.symbolic:.12g}).\n"
        f"  At fault: backward (candidate), off by {abs(fault.candidate - fault.exact):.2g} ({rel}) where its own "
        f"rounding allows {fault.tolerance:.2g}. The tensor referee (Note [Tensor referee]) proved {fault.proven} of "
        f"the {fault.checked} component(s) it was given wrong; {why}.{_detach_hint(traced)}"
    )


def _user_code_raised(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in the user's code (their backward at our points), not in ours.

    Note [Internal failures]: an exception of ours (SymPy's ``zoo``, an
    interpreter gap) never stands in for a verdict: the call falls back to
    finite differences of the real function, with a warning. One raised by
    the user's own code propagates, as under torch's gradcheck.
    """
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1].filename if frames else ""
    return not any(part in last for part in ("/gradcheck_lab/", "/sympy/", "/numpy/", "/mpmath/", "/flint/",
                                              "/torch/fx/", "/torch/_decomp", "/torch/_refs", "/torch/_prims"))


def _traced_check(target, traced, fid, func, eps, atol, rtol, raise_exception, points, seed, fast_mode,
                  check_backward_ad, check_forward_ad, structural) -> bool:
    """The check with the symbolic and referee legs: the graph was shown to be the function."""
    model = model_of(traced, [v.detach().double().numpy() for v in target.values])
    labels = leaf_labels(traced)
    cots = _cotangents(traced.n_out, fast_mode, seed)
    pts = [{"cotangent": c} for c in cots]
    if check_backward_ad:
        cand = _backward_candidate(target)
        report = _check(model, pts, points, seed, cand, target.dtype, atol, rtol, fid.refused)
        faults = _faults(report, atol, rtol)
        if faults and (_differences_overrule([c for _, _, c in faults])  # Note [Differences overrule]
                       or _given_fault_overruled(target, traced, model, pts, faults)):
            raise _Overruled(_OVERRULED)
        if faults:
            msg = _mismatch_message("gradcheck", traced, labels, report, faults, "backward", func)
            if eps is not None:
                msg += "\n  " + _fixed_step_note(target, traced, eps, pts, faults, labels)
            return _fail(msg, report, raise_exception)
        _own_engines(report)
    if check_forward_ad:
        cand = _forward_candidate(target, model)
        report = _check(model, pts, points, seed, cand, target.dtype, atol, rtol, fid.refused)
        faults = _faults(report, atol, rtol)
        if faults and (_differences_overrule([c for _, _, c in faults])
                       or _given_fault_overruled(target, traced, model, pts, faults)):
            raise _Overruled(_OVERRULED)  # Note [Differences overrule]
        if faults:
            msg = _mismatch_message("gradcheck", traced, labels, report, faults, "forward-mode AD (JVP)", func)
            return _fail(msg, report, raise_exception)
    return _structural("gradcheck", target.call, target.values, func, **structural)


def _truth(target: _Target, points: int, seed: int, reference, raise_exception: bool, decompose: bool = True,
           unbounded: bool = False):
    """The traced graph shown to be the function (Note [Trace fidelity]), or Unsupported with why not.

    With ``reference`` the graph is the reference's, and it must agree with
    ``func`` first; ``(None, _)`` when it does not and ``raise_exception`` is False.
    ``decompose=False``: torch's decompositions for the per-element leg are left for later (Note
    [Decompositions on demand] in torch_graph.py). ``unbounded``: decomposed beyond the derivation budget,
    for the tensor referee (Note [Tensor referee]).
    """
    from . import fidelity

    source = _reference_target(target, reference) if reference is not None else target
    traced = trace(source.call, target.values, target.leaves, key=source.key(),
                   budget=DERIVATION_BUDGET if reference is None and not unbounded else None,
                   decompose=decompose or reference is not None,
                   out_shapes=target.out_shapes if reference is None else None)
    name = getattr(target.func, "__qualname__", None) or type(target.func).__name__
    import torch

    from .engines import tensor

    gm = traced.gm
    if traced.tensor is None and not traced.tensor_reason:  # kept with the cached trace
        traced.tensor, traced.tensor_reason = (tensor.graph_of(source.call, [v.detach() for v in target.values], gm)
                                               if gm is not None else (None, getattr(traced, "reason", "")))

    dt = getattr(torch, target.dtype)
    describe = functools.partial(_describe_output, traced.out_shapes)
    if isinstance(traced, Unsupported):
        if reference is not None:
            raise UsageError(
                f"Expected reference to be torch code the tracer follows (docs/torch.md, supported ops) but it "
                f"uses {', '.join(traced.ops) or traced.reason}; write the reference with supported torch ops."
            )
        if traced.tensor is not None:  # outside the per-element table, inside the tensor-level rules
            drawn = _random_points(target, traced, fidelity.probe_count(points), seed)
            rows = _Rows(target, drawn[0], dt)
            fid = fidelity.check(target.call, traced.tensor.gm, rows, 1, dt, describe, known=target.given_floats,
                                 reads=reads_of(traced), used=points)
            fid.points = drawn
            fid.refused = [i for i in fid.refused if i < points]
            if fid.unfaithful is None:
                return traced, fid
            traced = replace(traced, tensor=None, reason=_unfaithful_reason(target, fid), outside=True, deferred=False)
            return traced, fid
        if traced.reason.startswith("tracing failed"):
            where = fidelity.leaks(target.call, target.values)
            if where:
                traced.reason = f"the forward leaves torch: {'; '.join(where)}"
        return traced, fidelity.Fidelity()
    drawn = _random_points(target, traced, fidelity.probe_count(points), seed)
    rows = _Rows(target, drawn[0], dt)
    if reference is not None:
        own = fidelity.check(source.call, traced.gm, rows, 1, dt, describe)
        if own.unfaithful is not None:
            raise UsageError(f"Expected reference to be torch code the tracer follows but {own.unfaithful}; "
                             "write the reference with torch ops only (no NumPy, .item() or custom ops).")
    fid = (fidelity.check(target.call, traced.gm, rows, 1, dt, describe, known=target.given_floats,
                          reads=reads_of(traced), used=points)
           if reference is None else
           fidelity.check(target.call, source.call, rows, 1, dt, describe, ("the reference", "func")))
    fid.refused = [i for i in fid.refused if i < points]
    fid.points = drawn
    if fid.unfaithful is not None and reference is not None:
        msg = (f"gradcheck_lab.gradcheck: the forward of {name} differs from its reference: "
               f"{fid.unfaithful}"
               ".\n  The reference must compute the same function (to rounding); fix whichever is wrong.")
        _fail(msg, None, raise_exception)
        return None, fid
    if fid.unfaithful is not None:
        return Unsupported([], target.leaves, traced.out_shapes, _unfaithful_reason(target, fid), outside=True), fid
    if traced.tensor is not None and traced.tensor.gm is not traced.gm:
        # The tensor-level engine reads torch's decompositions of some ops: shown to be the function too.
        again = fidelity.check(source.call, traced.tensor.gm, rows, 1, dt, describe, used=points)
        if again.unfaithful is not None:
            traced = replace(traced, tensor=None, tensor_reason=f"its decomposed graph: {again.unfaithful}")
    work = element_work(traced)
    if work > DERIVATION_BUDGET and reference is None:
        reason = (f"the graph needs {work:,} element operations, beyond the per-element symbolic leg's budget of "
                  f"{DERIVATION_BUDGET:,} (Note [Derivation budget])")
        return Unsupported([], target.leaves, traced.out_shapes, reason, list(_graph_targets(traced)),
                           tensor=traced.tensor, tensor_reason=traced.tensor_reason, elements=traced), fid
    return traced, fid


def _unfaithful_reason(target: _Target, fid) -> str:
    from . import fidelity

    where = fidelity.leaks(target.call, target.values)
    return fid.unfaithful + (f"; the forward leaves torch: {'; '.join(where)}" if where else
                             "; the forward computes outside torch's dispatcher (a C/CUDA kernel or an opaque op)")


def _random_points(target: _Target, traced, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random rows of leaf values around the inputs and a cotangent for each, as the checks draw them.

    A graph in the per-element table draws them from its model (the same points as its verify); others
    draw each component uniformly in ``t +- SPREAD |t|`` (``+- SPREAD`` at 0) and cotangents in [-1, 1].
    """
    values = [v.detach().double().cpu().numpy() for v in target.values]
    if isinstance(traced, Traced):
        return points_around(values, traced.n_out, n, seed)
    from .torch_graph import SPREAD

    flat = np.concatenate([v.ravel() for v in values])
    half = np.where(flat != 0, SPREAD * np.abs(flat), SPREAD)
    rng = np.random.default_rng([seed, 20261205])
    theta = flat + rng.uniform(-1.0, 1.0, (n, flat.size)) * half
    return theta, rng.uniform(-1.0, 1.0, (n, traced.n_out))


def _tensor_leg(target: _Target, traced, fid, points: int, seed: int, fast_mode: bool, atol, rtol,
                skipped: list[int], found: list) -> bool:
    """Note [Agreement first] (tensor_check.py): True when the tensor-level legs agree everywhere.

    ``skipped`` gets the random points where the user's backward is not finite (Note [NaN off the inputs]);
    ``found``, where the legs disagreed (tensor_check.Disagreement)."""
    graph = getattr(traced, "tensor", None)
    if graph is None:
        return False
    import torch

    dt = getattr(torch, target.dtype)
    rows = [target.values]
    cots = [np.asarray(_cotangents(traced.n_out, fast_mode, seed), dtype=float)]
    theta, data = fid.points if fid.points is not None else _random_points(target, traced, points, seed)
    theta, data = theta[:points], data[:points]
    refused = set(fid.refused)
    index = []
    for i in range(len(theta)):
        if i not in refused:
            rows.append(_leaf_row(target, theta[i], dt))
            cots.append(data[i][None, :])
            index.append(i)
    nan: list[int] = []
    try:
        ok = tensor_check.agrees(target, graph, rows, cots, atol, rtol, fast=fast_mode, skipped=nan, found=found)
    except Exception:  # noqa: BLE001 - an uncovered case or the user's code at our points: the full path decides
        return False
    skipped.extend(index[k - 1] for k in nan)
    for f in found:
        f.point = None if f.row == 0 else index[f.row - 1]
    return ok


#: Note [Proof first]: element operations beyond which a disagreement of the tensor-level legs goes to the
#: tensor referee (Note [Tensor referee]) before the per-element path. The per-element derivation costs about
#: 1 ms per element operation: a backward off by 1e-9 of ``x * (x + 3).clamp(0, 6) / 6`` on 16x64 took 35 s
#: to fail there, and 0.2 s with the referee's proof; a softmax on 16x64 (1,024 by this count, which
#: underestimates a reduction inside one op) 7 s. Below this (a 3x4 input's functions), the per-element
#: path's full report comes first (every component, the engines side by side); the referee's message names
#: the worst proven component.
PROOF_FIRST_WORK = 500

#: Element operations beyond which a graph goes without the symbolic leg (Note [Derivation budget] in
#: torch_graph.py): the per-element derivation costs about 1 ms per element operation (tanh(x @ x) with
#: a 30x30 x: 27,900, 25 s; a TransformerEncoderLayer(4, 2): 1,694, 4 s), so the budget bounds a first
#: call near 20 s; beyond it finite differences of the real function judge, with their error bars.
DERIVATION_BUDGET = 20_000


def _graph_targets(traced: Traced):
    """The aten ops of a graph (the fallback batches with vmap only over aten and prims)."""
    for node in traced.gm.graph.nodes:
        if node.op == "call_function" and hasattr(node.target, "namespace"):
            yield node.target


class _Rows(Sequence):
    """The given inputs' tensors, then a row of leaf tensors per random point of ``theta``, each made when first
    read: the fidelity check reads its probes only until one is accepted (Note [Trace fidelity])."""

    def __init__(self, target: _Target, theta: np.ndarray, dt):
        self._target, self._theta, self._dt = target, theta, dt
        self._made: dict[int, list] = {}

    def __len__(self) -> int:
        return 1 + len(self._theta)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        if i == 0:
            return self._target.values
        if i not in self._made:
            self._made[i] = _leaf_row(self._target, self._theta[i - 1], self._dt)
        return self._made[i]


def _leaf_row(target: _Target, theta: np.ndarray, dt) -> list:
    """The leaves' tensors at one flat row of values."""
    import torch

    return _split(torch.as_tensor(np.asarray(theta, dtype=float), dtype=dt), [lf.shape for lf in target.leaves])


def _describe_output(out_shapes, j: int, k: int) -> str:
    shape = out_shapes[j] if j < len(out_shapes) else ()
    return f"output {j}" + (f" element {tuple(int(i) for i in np.unravel_index(k, shape))}" if shape else "")


def _reference_target(target: _Target, reference) -> _Target:
    """``target`` with ``reference`` as its function: the same leaves, inputs and parameters."""
    import copy

    import torch

    if not callable(reference):
        raise UsageError(f"Expected reference to be a callable (a function or an nn.Module) but got "
                         f"{type(reference).__name__}.")
    ref = copy.copy(target)
    ref.func = reference
    ref.module = reference if isinstance(reference, torch.nn.Module) else None
    if ref.module is not None:
        mine = {lf.position for lf in target.leaves if lf.kind == "parameter"}
        theirs = {n for n, _ in ref.module.named_parameters()}
        if not mine <= theirs:
            raise UsageError(f"Expected reference to have the parameters of func ({', '.join(sorted(map(str, mine)))}) "
                             f"but it lacks {', '.join(sorted(map(str, mine - theirs)))}.")
    elif any(lf.kind == "parameter" for lf in target.leaves):
        raise UsageError("Expected reference to be an nn.Module with the same parameters as func (a module) but "
                         f"got {type(reference).__name__}; or freeze the parameters (requires_grad_(False)).")
    return ref


def _nonfinite_backward(target: _Target, thetas, refused, seed: int) -> list[int]:
    """Note [NaN off the inputs]: random points where the forward is finite and the backward is not.

    A conversion meant for rotation matrices (kornia's
    ``rotation_matrix_to_quaternion``) computes ``sqrt`` of a trace inside
    ``torch.where``; 10% off a rotation matrix the branch not taken is NaN
    and so is the gradient (torch's ``where`` sends ``0 * NaN`` to it), while
    the forward is finite. torch's gradcheck checks the given inputs only and
    passes. Such points are skipped with a warning that says why, never
    judged: the function may not be meant for them.

    Note [NaN at the inputs]: at the given inputs the user asked for that
    point, and a NaN gradient is judged as torch judges it. The per-element
    model cannot: ``where(t > 0, sqrt(t), 0)`` at ``t = -1`` has a loss that
    the referee proves undefined (``sqrt(-1)`` in the branch not taken), so
    the component was "not judged" and the call passed where torch's fails.
    Such a call goes to finite differences of the real function (``0 +- 0``
    there): a finite estimate against a NaN gradient fails; where the
    estimate is not finite either (``sqrt`` at 0), or the differences see a
    kink in that input component (``hypot`` at the origin, where the
    derivative does not exist and torch's own backward gives NaN), those
    components are not judged, and the warning says so.
    """
    import torch

    dt = getattr(torch, target.dtype)
    out = []
    rng = np.random.default_rng([seed, 2026])
    for i, theta in enumerate(thetas):
        if i in refused:
            continue
        leaves = [t.detach().clone().requires_grad_() for t in _leaf_row(target, theta, dt)]
        try:
            with torch.enable_grad():
                flat = target.flat_output(target.call(*leaves))
                if not flat.requires_grad or not bool(torch.isfinite(flat).all()):
                    continue  # judged as the forward's own overflow elsewhere
                cot = torch.as_tensor(rng.uniform(0.5, 1.0, flat.numel()), dtype=flat.dtype)
                grads = torch.autograd.grad(flat, leaves, cot, allow_unused=True)
        except Exception:  # noqa: BLE001 - the user's code at our point: the checks below decide
            continue
        if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
            out.append(i)
    return out


def _nan_note(skipped: list[int], points: int) -> str:
    return (f"the backward gives NaN or inf at {len(skipped)} of {points} random points around the inputs (first: "
            f"random point {min(skipped)}) where the forward is finite; those points were skipped, not judged (Note "
            "[NaN off the inputs]). If the function is meant for such inputs, look for a torch.where whose other "
            "branch is NaN there (its gradient is NaN too).") if skipped else ""


def _nan_warning(skipped: list[int], points: int) -> None:
    if skipped:
        _warn(f"gradcheck_lab: {_nan_note(skipped, points)}")


def _refused_warning(refused: list[int], points: int) -> None:
    if refused:
        _warn(f"gradcheck_lab: {len(refused)} of {points} random points refused by the function (it raised "
                      "its own error there); they were skipped.")


def _nothing_to_check(target) -> bool:
    _warn(f"gradcheck_lab: nothing to check: the {target.empty} tensor(s) that require grad have no "
                  "elements (torch's gradcheck passes them too).")
    return True


def _requires(name: str, value: bool, needs: str, given: bool) -> None:
    if value and not given:
        raise UsageError(f"Expected {needs}=True with {name}=True (as torch.autograd.gradcheck) but got {needs}=False.")


def _structural(what, user_fn, values, func, *, backward, forward, undefined, dtypes, batched, batched_forward, masked,
                raise_exception, given: _GivenRun | None = None) -> bool:
    """torch's structural tests of the backward's plumbing, by torch's own helpers (Note [Drop-in design]).

    ``given``: the forward with grad at the given inputs and a backward of it (Note [One forward at the given
    inputs]), in place of a forward and a backward of cotangent ones here."""
    import importlib

    import torch

    from .torch_graph import _flat_outputs

    tg = importlib.import_module("torch.autograd.gradcheck")  # the module (torch.autograd.gradcheck is its function)

    def fn(*args):  # nested outputs (LSTM's (out, (h, c))) as one flat tuple, as torch's helpers expect
        out = user_fn(*args)
        return out if isinstance(out, torch.Tensor) else tuple(_flat_outputs(out))

    if given is not None:
        leaves, outputs = tuple(given.leaves), tuple(o for o in given.outputs if o.requires_grad)
    else:
        leaves = tuple(v.detach().clone().requires_grad_(True) for v in values)
        out = fn(*leaves)
        outputs = tuple(o for o in (out if isinstance(out, (tuple, list)) else (out,))
                        if isinstance(o, torch.Tensor) and o.requires_grad)
    tests: list[tuple[str, str, Callable]] = []
    if batched_forward:
        tests.append(("check_batched_forward_grad", "_test_batched_grad_forward_ad", lambda h: h(fn, leaves)))
    if backward and outputs:
        for i, o in enumerate(outputs):
            if batched:
                tests.append(("check_batched_grad", "_test_batched_grad", lambda h, i=i, o=o: h(leaves, o, i)))
        # A zero cotangent must give zero gradients, unless a saved output or the gradient itself is
        # inf (0 * inf is NaN: sqrt at 0, whose exact derivative is infinite): no evidence there.
        grads = tuple(given.grads) if given is not None else torch.autograd.grad(
            outputs, leaves, [torch.ones_like(o) for o in outputs], retain_graph=True, allow_unused=True)
        finite_out = (given is not None and given.finite) or all(bool(torch.isfinite(o).all()) for o in outputs)
        if finite_out and all(g is None or bool(torch.isfinite(g).all()) for g in grads):
            tests.append(("check_backward_ad", "_test_backward_mul_by_grad_output",
                          lambda h: h(outputs, leaves, masked)))
            if undefined:
                tests.append(("check_undefined_grad", "_test_undefined_backward_mode",
                              lambda h: h(fn, outputs, leaves)))
        else:
            what_inf = "outputs" if not finite_out else "gradients"
            _warn("gradcheck_lab: the zero-cotangent and undefined-gradient tests were not performed: "
                          f"the {what_inf} are not finite at the given inputs (0 * inf is NaN).")
    if forward and undefined and outputs:
        tests.append(("check_undefined_grad", "_test_undefined_forward_mode", lambda h: h(fn, outputs, leaves)))
    name = getattr(func, "__qualname__", None) or type(func).__name__
    if dtypes and backward and outputs:
        for leaf, g in zip(leaves, grads):
            if g is not None and g.dtype != leaf.dtype:
                return _fail(
                    f"gradcheck_lab.{what}: the backward of {name} returns a {g.dtype} gradient for a {leaf.dtype} "
                    f"input of shape {tuple(leaf.shape)} (check_grad_dtypes); return the input's dtype, or pass "
                    "check_grad_dtypes=False.",
                    None, raise_exception,
                )
    for keyword, helper_name, run in tests:
        helper = getattr(tg, helper_name, None)
        if helper is None:  # another torch version: the helper moved
            _warn(f"gradcheck_lab: {keyword}: torch {torch.__version__} has no {helper_name}; not performed.")
            continue
        try:
            run(helper)
        except Exception as exc:  # torch's GradcheckError, or what the user's backward raised under the test
            return _fail(
                f"gradcheck_lab.{what}: the backward of {name} fails torch's structural check {keyword}: {exc}\n"
                f"  Its values were right; this is about how it handles its arguments. "
                f"Pass {keyword}=False to skip the check (as with torch.autograd.{what}).",
                None, raise_exception,
            )
    return True


def _check(model, pts, points, seed, cand, dtype, atol, rtol, refused=()):
    """``verify`` of the candidate at the given points and ``points`` random ones.

    The given points are listed in full only where needed: when the check
    fails, or when ``atol``/``rtol`` replace the verdict's tolerance (every
    component is then read again).
    """
    from .api import REFEREE_POINTS, REFEREE_SECONDS, _verify

    def run(random: int):
        return _verify(
            model, points=pts, params=None, random=random, seed=seed, dtype=dtype, device="cpu", candidate=cand,
            engines=None, progress=None, strict=False, referee_points=REFEREE_POINTS, referee_seconds=REFEREE_SECONDS,
            order=1, detail=atol is not None or rtol is not None, refused=refused,
        )

    if not points:
        return run(0)
    try:
        return run(points)
    except GradcheckError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code at a point we chose (BCE's input past 1)
        if not _user_code_raised(exc):
            raise  # ours: Note [Internal failures]
        _warn(
            f"gradcheck_lab: your function raised {type(exc).__name__} at a random point around the inputs "
            f"({str(exc).splitlines()[0] if str(exc) else 'no message'}); only the given inputs were checked. "
            "Pass points=0 to skip the random points.")
    return run(0)


#: torch.autograd.gradcheck's defaults, which the keyword not given keeps when the other is given.
TORCH_ATOL, TORCH_RTOL = 1e-5, 1e-3


def _torch_tolerances(atol, rtol) -> tuple[float | None, float | None]:
    """``atol``/``rtol`` in torch's meaning: neither given, our derived tolerances (None, None); one given, the
    other keeps torch's default (``atol=1e-8`` alone is ``1e-8 + 1e-3 |g|`` there; read with ``rtol=0`` a
    correct backward 1e-6 off in a value of 10 failed where torch's passes)."""
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            raise UsageError(f"Expected {name} to be a finite number >= 0 (or left out) but got {name}={value!r}; "
                             f"torch's default is {name}={TORCH_ATOL if name == 'atol' else TORCH_RTOL:g}.")
    if atol is None and rtol is None:
        return None, None
    return float(TORCH_ATOL if atol is None else atol), float(TORCH_RTOL if rtol is None else rtol)


def _validate(points, seed) -> None:
    for name, value in (("points", points), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise UsageError(f"Expected {name} to be a non-negative integer but got {name}={value!r}.")


def _worst_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """The largest ``|a - b|`` and where: the same inf or NaN twice is no difference, NaN beside a number inf."""
    if a.shape == b.shape and np.array_equal(a, b):  # the usual case, bit for bit
        return 0.0, 0
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.nan_to_num(np.abs(a - b), nan=np.inf)).ravel()
    return (float(diff.max()), int(diff.argmax())) if diff.size else (0.0, 0)


#: Generator seeds of the calls that tell a random forward (Note [Random forwards]).
RANDOM_SEEDS = (20261205, 1, 2, 3)


def _deterministic(target: _Target, nondet_tol: float) -> bool:
    """Note [Random forwards]: a function that draws random numbers has no gradient to check.

    False when the function has no floating-point output (nothing to check).

    Two calls at the given inputs must give the same outputs (within
    ``nondet_tol``). Otherwise every leg compares different functions: the
    traced graph holds the random values of the trace (``a * torch.rand(4)``
    had its correct backward blamed), and finite differences of a fresh draw
    per call are noise, so a wrong backward of dropout would pass. torch's
    gradcheck reports a Jacobian mismatch there; we say what is wrong.
    """
    import torch

    from .torch_graph import _flat_outputs

    def run(seed: int):
        # Fixed seeds in a forked generator: the verdict does not depend on the caller's RNG state (a
        # dropout of 3 elements drew the same mask twice one time in five), and the caller's state is kept.
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed also queues CUDA seeding, recording a stack
            # trace each time (0.5 ms a call), and would change a caller's CUDA state fork_rng keeps.
            torch.default_generator.manual_seed(seed)
            return target.call(*target.values)

    # Note [Differentiable outputs]: as torch's gradcheck (``_differentiable_outputs``), only outputs
    # that require grad at the given inputs are checked when some do: a threshold computed through
    # .item() (kornia's otsu_threshold) is returned beside the image, has no gradient in torch, and
    # its finite differences blamed a correct backward. When none does, every float output is checked
    # (torch then expects a zero numerical Jacobian).
    with torch.enable_grad(), torch.random.fork_rng(devices=[]):
        leaves = [v.detach().requires_grad_() for v in target.values]
        torch.default_generator.manual_seed(RANDOM_SEEDS[0])
        before = torch.default_generator.get_state()
        floats = [o for o in _flat_outputs(target.call(*leaves)) if o.is_floating_point()]
        draws = not torch.equal(before, torch.default_generator.get_state())
    if not floats or not sum(o.numel() for o in floats):  # a matcher that found no match: nothing to check
        return False
    wanted = tuple(bool(o.requires_grad) for o in floats)
    if any(wanted) and not all(wanted):
        target.keep = wanted
    # this run's graph serves the reentrancy check next (one call of the function fewer)
    kept = floats if target.keep is None else [o for o, k in zip(floats, target.keep) if k]
    target.graph_run, target.out_shapes = (leaves, kept), [tuple(o.shape) for o in kept]
    with torch.no_grad():
        first = run(RANDOM_SEEDS[0])  # as the runs it is compared with: no grad (fused fast paths may differ)
        a = target.flat_output(first).double()
        target.given_output = a.detach().cpu().numpy()
        target.given_floats = [o for o in _flat_outputs(first) if o.is_floating_point()]
        if a.numel() and not bool(torch.isfinite(a).any()):  # a / 0: SymPy's derivative is zoo, nothing to judge
            raise UsageError(
                f"Expected {getattr(target.func, '__qualname__', type(target.func).__name__)} to give a finite "
                f"output at the given inputs but every output is inf or NaN ({a[0].item()}); check at inputs where "
                "it is defined."
            )
        # A function that drew nothing from torch's generator is compared once more (NumPy's or Python's
        # generator, a nondeterministic kernel); one that drew, at each seed. The forward with grad above is
        # that second call where it gave the same outputs (a call of the function fewer); where it did not
        # (a fused no-grad path rounds otherwise), two calls without grad decide, as before.
        if not draws:
            b = torch.cat([o.detach().reshape(-1) for o in kept]).double() if kept else a[:0]
            if b.shape == a.shape and _worst_difference(a.detach().cpu().numpy(), b.cpu().numpy())[0] <= nondet_tol:
                return True
        for seed in RANDOM_SEEDS[1:] if draws else RANDOM_SEEDS[1:2]:
            b = target.flat_output(run(seed)).double()
            worst, k = _worst_difference(a.detach().cpu().numpy(), b.detach().cpu().numpy())
            if worst > nondet_tol:
                break
        else:
            # Its draws do not change the outputs here (a random augmentation that left these inputs
            # alone), but they may elsewhere (it raised its own range check at a random point in one draw
            # of five): from now on every call draws alike.
            target.seeded = draws
            return True
    raise UsageError(
        f"Expected {getattr(target.func, '__qualname__', type(target.func).__name__)} to give the same outputs "
        f"at the same inputs but two calls at the given inputs differ by {worst:.3g} (output element {k}): it draws "
        "random numbers, and a random function has no gradient to check. Seed it inside the function "
        "(torch.manual_seed), call module.eval() for dropout, or pass nondet_tol= if the difference is "
        "harmless nondeterministic rounding."
    )


def _nan_output_message(target: _Target) -> str:
    """Note [NaN outputs]: a float64 output that is NaN at the given inputs fails the call, as torch's.

    Its derivative does not exist there, and every projection of the outputs
    that includes it is NaN: finite differences had no estimate anywhere and
    the call passed with "nothing was judged" where torch's gradcheck fails
    (entmax's ``normmax_bisect`` with ``alpha < 1`` gives NaN). Only NaN in
    float64: an output that overflows its dtype (``exp(100)`` in float32 is
    inf, ``atanh(tanh(10))`` too) has an exact value and derivative the
    dtype cannot hold; those components stay not judged, with a warning.
    """
    out, shapes = target.given_output, target.out_shapes or []
    bad = np.flatnonzero(np.isnan(out))
    k, j = int(bad[0]), 0
    while j < len(shapes) - 1 and k >= math.prod(shapes[j]):
        k -= math.prod(shapes[j])
        j += 1
    name = getattr(target.func, "__qualname__", type(target.func).__name__)
    return (f"gradcheck_lab.gradcheck: the forward of {name} is NaN at the given inputs: "
            f"{_describe_output(shapes, j, k)} is {out[bad[0]]} ({len(bad)} of {out.size} outputs).\n"
            "  No derivative exists there to check (torch's gradcheck fails such a call too): check the function "
            "at inputs where it is defined, or fix what makes it NaN there.")


def _no_float_outputs(target: _Target) -> bool:
    """torch's gradcheck accepts a function without floating-point outputs (indices, masks): so do we."""
    _warn(f"gradcheck_lab: nothing to check: {getattr(target.func, '__qualname__', type(target.func).__name__)} "
                  "returns no floating-point element at the given inputs (torch's gradcheck passes it too).")
    return True


def _reentrant(target: _Target, nondet_tol: float, seed: int, raise_exception: bool) -> bool:
    """Note [Reentrant first]: two backward passes of one forward, with the same cotangent, agree within ``nondet_tol``.

    Checked before any value (as torch's ``nondet_tol`` check): a backward
    that scales what forward saved on ``ctx`` in place (``grad = ctx.grad;
    grad *= g``) returns a different value at each call, and judging its
    values blamed a number the user never sees. The cotangent is seeded,
    random and away from 1 (a cotangent of ones hides ``grad *= g``).
    """
    import torch

    from .torch_graph import _flat_outputs

    run, target.graph_run = target.graph_run, None
    if run is not None and run[1]:  # the forward _deterministic ran with grad at the given inputs
        leaves, floats = run
    else:
        leaves = [v.detach().clone().requires_grad_(True) for v in target.values]
        floats = [o for o in _flat_outputs(target.call(*leaves)) if o.is_floating_point()]
    flat = torch.cat([o.reshape(-1) for o in floats])
    if not flat.requires_grad:
        return True
    cot_np = _reentrancy_cotangent(flat.numel(), seed)
    cot = torch.as_tensor(cot_np, dtype=flat.dtype)
    # clone: a backward that returns the very tensor it later mutates would change its first answer too
    a = [None if g is None else g.clone() for g in torch.autograd.grad(flat, leaves, cot, retain_graph=True,
                                                                        allow_unused=True)]
    b = torch.autograd.grad(flat, leaves, cot, retain_graph=True, allow_unused=True)
    # Note [One forward at the given inputs]: its graph and this backward serve the checks that follow
    target.given_run = _GivenRun(leaves, tuple(floats), flat, cot_np, a)
    worst, k = _worst_difference(_gradient(a, leaves).astype(float), _gradient(b, leaves).astype(float))
    if worst > nondet_tol:
        label = [lf.element(j) for lf in target.leaves for j in range(len(lf.var_names))][k]
        name = getattr(target.func, "__qualname__", None) or type(target.func).__name__
        msg = (
            f"gradcheck_lab.gradcheck: the backward of {name} is not reentrant: two backward passes of one forward "
            f"with the same cotangent differ by {worst:.3g} at {label} (nondet_tol={nondet_tol}).\n"
            "  Likely cause: backward changes state saved on ctx in place (grad = ctx.saved; grad *= g); compute "
            "into a new tensor (grad = ctx.saved * g). If the difference is harmless nondeterministic rounding, "
            "pass nondet_tol=."
        )
        return _fail(msg, None, raise_exception)
    return True


def _reentrancy_cotangent(n: int, seed: int) -> np.ndarray:
    """The reentrancy check's cotangent (Note [Reentrant first]): seeded, each component in +-[0.5, 1.5]."""
    return _drawn_cotangent(n, seed).copy() if n <= 4096 else _draw_cotangent(n, seed)


def _draw_cotangent(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, n) * rng.choice([-1.0, 1.0], n)


#: A suite checks functions of the same few sizes with the same seed: drawn once (a tenth of a ms a call).
_drawn_cotangent = functools.lru_cache(maxsize=16)(_draw_cotangent)


@dataclass
class _GivenRun:
    """Note [One forward at the given inputs]
    ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    The function runs once with grad at the given inputs (``_deterministic``
    compares it with a call without grad), and its graph serves every check
    there that needs a backward: the reentrancy check's two passes with
    cotangent ``cot``, the tensor leg's products at the given inputs (whose
    first cotangent under ``fast_mode`` is ``cot``: its product is
    ``grads``, not computed again) and torch's structural tests (a zero
    cotangent, the dtypes, which need any gradient, not one of ones). Each
    was a forward and a backward of its own: about a fifth of a small
    ``fast_mode`` call. The graph is kept (``retain_graph``) until the
    structural tests, whose zero-cotangent test is its last backward.
    """

    leaves: list
    outputs: tuple  # the checked float outputs, with their graph
    flat: Any  # the same, concatenated
    cot: np.ndarray  # the reentrancy check's cotangent
    grads: list  # the first of its two backward passes (None where an input is unused)
    _finite: bool | None = None

    def gradient(self) -> np.ndarray:
        """``grads`` flat, in float64."""
        return _gradient(self.grads, self.leaves).astype(np.float64)

    @property
    def finite(self) -> bool:
        """Whether every checked output is finite (asked by the tensor leg and the structural tests; once:
        not a ``functools.cached_property``, whose lock cost as much as the check)."""
        import torch

        if self._finite is None:
            self._finite = bool(torch.isfinite(self.flat).all())
        return self._finite


def _fixed_step_note(target, traced, eps, pts, faults, labels) -> str:
    """torch's own estimate for the worst component: central differences at the fixed step ``eps``."""
    import torch

    source, pt, c = faults[0]
    var = c.param
    li, k = next((i, lf.var_names.index(var)) for i, lf in enumerate(target.leaves) if var in lf.var_names)
    cot = torch.tensor(pt.point["cotangent"], dtype=torch.float64)
    vals = [v.double().clone() for v in target.values]
    if source != "given":
        off = 0
        for i, lf in enumerate(target.leaves):
            for j, n in enumerate(lf.var_names):
                vals[i].view(-1)[j] = float(pt.point["params"][n])
            off += 1

    def f(delta):
        moved = [v.clone() for v in vals]
        moved[li].view(-1)[k] += delta
        with torch.no_grad():
            return float((target.flat_output(target.call(*moved)).double() * cot).sum())

    est = (f(eps) - f(-eps)) / (2 * eps)
    return f"torch-style finite differences at eps={eps:g} give {est:.10g} for {labels.get(var, var)}."


# ---------------------------------------------------------------- gradgradcheck


def gradgradcheck(
    func: Callable,
    inputs: Any,
    grad_outputs: Any = None,
    *,
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    gen_non_contig_grad_outputs: bool = False,
    raise_exception: bool = True,
    nondet_tol: float = 0.0,
    check_undefined_grad: bool = True,
    check_grad_dtypes: bool = False,
    check_batched_grad: bool = False,
    check_fwd_over_rev: bool = False,
    check_rev_over_rev: bool = True,
    fast_mode: bool = False,
    masked: bool = False,
    points: int = POINTS,
    seed: int = 0,
    parameters: bool = True,
) -> bool:
    """Check the double backward of ``func``: a drop-in for :func:`torch.autograd.gradgradcheck`.

    The derivative of the vector-Jacobian product ``u . d(c . f)/dx`` with
    respect to the inputs, as the user's code computes it (backward with
    ``create_graph=True``, then backward again), is judged against SymPy's
    second derivatives, the referee, torch's double backward of the traced
    forward and finite differences of the exact gradient (Note [Hessian as a
    gradient] in hessian.py). ``grad_outputs`` is the cotangent ``c``
    (seeded random if None); at the given inputs ``u`` runs over every
    input component (up to :data:`MAX_JACOBIAN`), so a backward that is
    right to first order but not differentiable (a detached factor) fails.
    ``gen_non_contig_grad_outputs`` hands the cotangents to the backward as
    non-contiguous tensors; ``check_fwd_over_rev`` checks forward-mode AD
    over the backward against the same values; ``check_rev_over_rev=False``
    skips the double backward. The other keywords are as in :func:`gradcheck`.

    >>> import torch
    >>> from gradcheck_lab import gradgradcheck
    >>> x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    >>> gradgradcheck(lambda t: t.exp() * t, (x,))
    True
    """
    # the caller's keywords, for torch's own gradgradcheck where ours has no symbolic leg
    theirs = {k: v for k, v in locals().items() if k not in ("func", "inputs", "grad_outputs", "eps", "atol", "rtol",
                                                             "points", "seed", "parameters")}
    import torch

    from .hessian import hvp_model

    _validate(points, seed)
    atol, rtol = _torch_tolerances(atol, rtol)
    target = _Target(func, inputs, parameters)
    if not target.leaves:
        return _nothing_to_check(target)
    if not _deterministic(target, nondet_tol):
        return _no_float_outputs(target)
    traced, fid = _truth(target, points, seed, None, raise_exception)
    if isinstance(traced, Unsupported):
        # No symbolic leg for second derivatives: torch's own gradgradcheck judges, and says so.
        _warn(f"gradcheck_lab: symbolic and referee legs missing ({traced.reason or ', '.join(traced.ops)}); "
              "the double backward was checked by torch.autograd.gradgradcheck itself.")
        return torch.autograd.gradgradcheck(func, inputs, grad_outputs, eps=1e-6 if eps is None else eps,
                                            atol=1e-5 if atol is None else atol, rtol=1e-3 if rtol is None else rtol,
                                            **theirs)
    assert traced is not None
    _refused_warning(fid.refused, points)
    base = model_of(traced, [v.detach().double().numpy() for v in target.values])
    derived = hvp_model(base)
    cot, pts = _hvp_points(base, derived, traced, grad_outputs, fast_mode, seed)
    direction = derived.inputs[-1].name
    modes = []
    if check_rev_over_rev:
        modes.append(("double backward", _double_backward_candidate(target, direction, gen_non_contig_grad_outputs)))
    if check_fwd_over_rev:
        modes.append(("forward-over-reverse AD", _fwd_over_rev_candidate(target, direction)))
    for label, cand in modes:
        report = _check(derived, pts, points, seed, cand, target.dtype, atol, rtol, fid.refused)
        faults = _faults(report, atol, rtol)
        if faults:
            labels = leaf_labels(traced)
            msg = _mismatch_message("gradgradcheck", traced, labels, report, faults, label, func)
            return _fail(msg.replace("d[the outputs projected on a random cotangent]", "d[u . d(c . f)/dx]"), report,
                         raise_exception)
        _own_engines(report)
    return _structural(
        "gradgradcheck", _first_derivative(target, cot), target.values, func, backward=check_rev_over_rev,
        forward=check_fwd_over_rev, undefined=check_undefined_grad, dtypes=check_grad_dtypes,
        batched=check_batched_grad, batched_forward=False, masked=bool(masked), raise_exception=raise_exception,
    )


def _hvp_points(base, derived, traced, grad_outputs, fast_mode: bool, seed: int):
    """The cotangent ``c`` (the caller's ``grad_outputs`` or a seeded one) and the given points of the
    double backward: ``u`` over every input component up to ``MAX_JACOBIAN``, else random directions."""
    import torch

    if grad_outputs is not None:
        gos = grad_outputs if isinstance(grad_outputs, (list, tuple)) else (grad_outputs,)
        cot = list(torch.cat([g.detach().double().reshape(-1) for g in gos]).numpy())
    else:
        cot = _cotangents(traced.n_out, True, seed)[0]
    p = base.n_params
    dirs = (
        [[1.0 if i == j else 0.0 for i in range(p)] for j in range(p)]
        if p <= MAX_JACOBIAN and not fast_mode
        else [list(np.random.default_rng(seed + 1).uniform(-1, 1, p)) for _ in range(RANDOM_COTANGENTS)]
    )
    direction = derived.inputs[-1].name
    return cot, [{"cotangent": cot, direction: u} for u in dirs]


def _first_derivative(target: _Target, cot) -> Callable:
    """The first derivative ``d(c . f)/dx`` with its graph: torch's gradgradcheck checks it like a function."""
    import torch

    cot_t = torch.tensor(cot, dtype=getattr(torch, target.dtype))

    def first(*leaves):
        leaves = tuple(t if t.requires_grad else t.requires_grad_() for t in leaves)  # its tests detach some
        flat = target.flat_output(target.call(*leaves))
        grads = torch.autograd.grad(flat, leaves, cot_t, create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return first


# ---------------------------------------------------------------- ops outside the table


#: Step factors of the fallback's second and third looks (Note [Drop-in design]): 16, 256 and 4096x smaller
#: than its default steps (``FALLBACK_LADDERS[0]``) and 16x larger.
FALLBACK_LOOKS = (2.0**-5, 2.0**-9, 2.0**-13, 2.0**3)


def _outside_torch(traced) -> bool:
    """Whether the forward was shown to leave torch (NumPy, a solver, a C kernel, data-dependent control flow)."""
    return bool(getattr(traced, "outside", False))


def _off_inputs_note(target, bad, got, fd, points) -> str:
    """Note [Inexact forwards]: a disagreement seen only at random points, in a forward that leaves torch.

    A convex-optimization layer (cvxpylayers, SCS to about 5e-5) or an
    adaptive ODE solver (torchdiffeq) computes its forward only to its own
    tolerance; its backward differentiates the exact solution. At the given
    inputs of their tests (an ODE whose solution is a line, which every
    solver integrates exactly) torch's gradcheck passes; 10% away, finite
    differences of the computed forward differ from the backward by 1e-7 to
    1e-3, while an mpmath check of the closed form found the backward as
    close to the exact gradient as the finite differences, or closer. With
    no symbolic truth for such a forward, finite differences cannot tell a
    wrong backward from an inexact forward there, so this is a warning, not
    a failure; a disagreement at the given inputs still fails.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row with no estimate at all: all-NaN
        # nanmax: a stencil point where the solver gave no value must not make the figure "nan" (torchdiffeq)
        scale = np.maximum(np.abs(fd), np.nanmax(np.abs(fd), axis=1, keepdims=True))
        rel = np.nan_to_num(np.where(bad, np.abs(got - fd) / scale, 0), nan=0.0)
    r = int(np.argmax(rel.max(axis=1)))
    return (f"The backward of {getattr(target.func, '__qualname__', type(target.func).__name__)} differs from "
            f"finite differences of its forward at {int(bad.any(axis=1).sum())} random point(s) around the inputs "
            f"(up to {float(rel.max()):.2g} relative, at random point {int(points[r])}) but not at the given "
            "inputs; a forward outside torch computed to a tolerance (a solver) differs from the exact function its "
            "backward differentiates, so this is not judged a failure (Note [Inexact forwards]). Check the backward "
            "at such inputs by giving them, with points=0.")


def _fd_tol(fd, dtype, atol, rtol) -> np.ndarray:
    """The fallback's tolerance around finite differences: their error bar plus the dtype's rounding
    (or ``atol + rtol |fd|`` when given) at the scale of each point's largest component."""
    from .tolerance import engine_tolerance, fd_tolerance

    scale = np.maximum(np.abs(fd.values), np.max(np.abs(np.nan_to_num(fd.values)), axis=1, keepdims=True))
    if atol is not None or rtol is not None:
        return (atol or 0.0) + (rtol or 0.0) * np.abs(fd.values) + fd_tolerance(fd.error, scale)
    return fd_tolerance(fd.error, scale) + engine_tolerance(dtype, scale)


def _fd_confirms(model, batch, bad, got, base, atol, rtol, dtype) -> np.ndarray:
    """``bad`` where finite differences at 16x smaller and 16x larger steps confirm it.

    Without the referee, a disagreement is proven only if finite differences
    at three step sizes tell the same story, each with a finite estimate:
    truncation a Richardson estimate underestimates (a kink in a higher
    derivative, as huber's) shrinks with the step; rounding staircases
    (``1 - sigmoid(x)`` near 1) grow as it shrinks; a jump inside the steps
    leaves no estimate.
    """

    from .engines import finite_diff

    rows = np.flatnonzero(bad.any(axis=1))
    sub = batch.take(rows)
    keep = bad[rows].copy()
    for shrink in FALLBACK_LOOKS:
        if not keep.any():
            break
        # only the components still blamed: each look costs (2K + 1) calls per component and point
        fd = finite_diff.gradients(model, sub, shrink=shrink, columns=np.flatnonzero(keep.any(axis=0)).tolist())
        # components not differenced keep the base estimate as their scale (their error stays infinite)
        fd = replace(fd, values=np.where(np.isnan(fd.values), base[rows], fd.values))
        assert fd.error is not None
        tol = _fd_tol(fd, dtype, atol, rtol)
        with np.errstate(invalid="ignore"):
            estimate = np.isfinite(tol) & np.isfinite(fd.values)
            agrees = (np.abs(got[rows] - fd.values) <= tol) & estimate
        if shrink < 1:
            keep &= estimate & ~agrees  # smaller steps must confirm: with no estimate (a jump inside) nothing is proven
        else:
            # larger steps may reach a pole (lgamma at 0) and give none: only agreement clears, and only an
            # estimate sharp enough to see the disagreement (a 1e-6 error hides in a coarse step's error bar)
            keep &= ~(agrees & (tol < np.abs(got[rows] - base[rows])))
    out = np.zeros_like(bad)
    out[rows] = keep
    return out


def _forward_finite(target, shapes, theta: np.ndarray) -> np.ndarray:
    """Per row of ``theta``: every output of the user's forward is finite in the inputs' own dtype."""
    import torch

    dt = getattr(torch, target.dtype)
    out = np.ones(len(theta), dtype=bool)
    with torch.no_grad():
        for r, x in enumerate(theta):
            tensors = _split(torch.as_tensor(x, dtype=dt), shapes)
            out[r] = bool(torch.isfinite(target.flat_output(target.call(*tensors))).all())
    return out


def _split(x, shapes) -> list:
    """A flat vector of leaf values as one tensor per leaf shape."""
    tensors, off = [], 0
    for s in shapes:
        n = math.prod(s)  # 1 for a scalar; empty leaves are not checked (_Target)
        tensors.append(x[off : off + n].reshape(s))
        off += n
    return tensors


def _fallback(target, traced: Unsupported, atol, rtol, raise_exception, points, seed, fast_mode, forward_ad) -> bool:
    """Autograd of the user's code against finite differences with their error bars (no symbolic leg)."""
    model, one, clock = _fallback_model(target, traced)
    cots = _cotangents(traced.n_out, fast_mode, seed)
    batch, refused, notes = _fallback_batch(target, traced, model, cots, points, seed, forward_ad)
    from .candidates import as_candidate

    cand = _forward_candidate(target, model) if forward_ad else _backward_candidate(target)
    got_all = np.asarray(as_candidate(cand).gradients(model, batch, dtype=target.dtype).values)
    suspect, disagree, worst, resolution, dirs = _screen(model, batch, got_all, target.dtype, seed)
    columns = None
    if atol is None and rtol is None:
        for row in np.flatnonzero(disagree)[:FALLBACK_BISECTIONS]:
            col = _bisect(model, batch, int(row), got_all, dirs[row, worst[row]], target.dtype)
            if col is not None:
                suspect = np.zeros_like(suspect)
                suspect[row], columns = True, [col]  # confirmed (or cleared) per component below
                break
        else:
            suspect &= ~disagree  # no component found behind the disagreement: not confirmed
    # else Note [Fallback screening]: the caller's atol/rtol are per component, as torch's: every component
    # of a row whose projection disagrees is judged against them (within the budget), not one found by bisection
    rows = np.flatnonzero(suspect)
    missing = ", ".join(traced.ops) or traced.reason
    if any(lf.pairs for lf in target.leaves) or any(op.startswith("view_as_") for op in traced.ops):
        missing = f"complex numbers, checked as (real, imaginary) pairs (Note [Complex inputs]): {missing}"
    budget_note = ""
    if rows.size and columns is None:
        import torch

        # torch's own differences: 2 calls per component, or per input tensor (one projection each) in fast mode
        torch_calls = 2 * (len(target.leaves) if fast_mode else got_all.shape[1])
        rows, columns, budget_note, budget = _within_budget(rows, got_all.shape[1], lambda: one(torch.as_tensor(
            target.theta())), seed, len(cots), torch_calls)
        # twice the estimate, and at least FALLBACK_DEADLINE_FLOOR: one timed call predicts a loaded machine's
        # vmapped batches poorly (a 1 s budget cut a 900-component check short under load and passed 1e-6)
        clock["deadline"] = min(clock["deadline"], time.perf_counter() + max(2 * budget, FALLBACK_DEADLINE_FLOOR))
        clock["budget"], clock["until"] = budget, time.perf_counter() + budget
    if rows.size:
        sub, got = batch.take(rows), got_all[rows]
        planned = got_all.shape[1] if columns is None else len(columns)
        fd, tol, bad, columns = _fallback_judge(target, traced, model, sub, got, columns, atol, rtol, clock)
        if columns is not None and len(columns) < planned:
            budget_note += (f"; the time budget ran out after {len(columns)} of {planned} components "
                            "(Note [Fallback budget])")
        given_bad = bool(disagree[: len(cots)].any()) or bool(bad[rows < len(cots)].any())
        if bad.any() and not given_bad and _outside_torch(traced):
            notes.append(_off_inputs_note(target, bad, got, fd.values, rows - len(cots)))
            bad = np.zeros_like(bad)
        if bad.any():
            return _fail(_fallback_message(target, traced, model, batch, rows, got, fd, bad, len(cots), missing,
                                           forward_ad), None, raise_exception)
        resolution = _resolution(fd.values, tol) + budget_note
        notes.append(_unjudged_note(traced, model, batch, rows, got, tol, len(cots), columns))
    refused_note = f" {len(refused)} of {points} random points refused by the function (skipped)." if refused else ""
    if clock["skipped"]:
        notes.append("The fallback's time ran out (the function was slower away from the given inputs than at "
                     f"them): {clock['skipped']} of its calls were not made, and what they would have estimated was "
                     "not judged (Note [Fallback budget]).")
    _warn(
        f"gradcheck_lab: symbolic and referee legs missing ({missing}); the "
        f"{'forward-mode AD (JVP)' if forward_ad else 'backward'} was checked against "
        f"finite differences of the real function with their error bars only, {resolution}.{refused_note}"
        + "".join(f" {n}" for n in notes if n))
    return True


def _fallback_model(target, traced: Unsupported):
    """The fallback's model: the user's real function, its cotangent products read by finite differences,
    and ``one``, the function at one flat row of inputs.

    Note [Fallback reach]
    ~~~~~~~~~~~~~~~~~~~~~
    The fallback evaluates a function we only know near the inputs: a
    NumPy or C forward, a solver. The catalog's steps (Note [Step rule],
    ``2**-3 max(|t|, 1)``) left that neighbourhood: at ``t`` in [1e-4, 1e-3]
    a NumPy ``sqrt`` was evaluated at negative inputs by every step, gave no
    estimate anywhere, and a backward off by 10% passed unjudged (torch's
    1e-6 steps fail it); torchdiffeq's ``scipy_solver`` reached ``y0 = 2.54``
    from 3.2 (10% sampling and a 12.5% step), where the ODE blows up inside
    its time range and LSODA never returned. So the fallback's model steps
    relative to each component (``|t|``, 1 at an exact 0) and half as far
    (``FALLBACK_LADDERS``: ``2**-4 |t|`` and ``2**-8 |t|``, the two ladders of
    Note [Fallback resolution]): a stencil stays within 17% of the inputs
    (10% sampling, a 6.25% step), on the same side of 0 as its point. Per
    Note [Step rule], ``H0 = 2**-4`` is as accurate as ``2**-3`` on the
    catalog (1.1e-13 and 1.3e-13 median relative error). Only the larger
    look of ``_fd_confirms`` (16x, ``|t|``) goes further, and only for a
    component about to be blamed; it can only clear it.
    """
    import torch

    from .model import Model, Var

    name_leaves(traced.leaves)
    shapes = [lf.shape for lf in traced.leaves]
    names = [lf.var_names for lf in traced.leaves]

    # Note [Quiet fallback]: vmap only over graphs of aten ops; an opaque custom op runs through vmap's
    # slow fallback, which prints a C++ "performance drop" warning to stderr per call.
    batched = {"vmap": _vmappable(traced)}
    clock = {"deadline": time.perf_counter() + FALLBACK_SECONDS, "skipped": 0}  # Note [Fallback budget]

    def one(x):
        return target.flat_output(target.call(*_split(x, shapes))).double()

    def one_or_nan(x):
        if time.perf_counter() > clock["deadline"]:  # out of time: no estimate from this call
            clock["skipped"] += 1
            return np.full(traced.n_out, np.nan)
        try:
            y = one(x).numpy()
        except Exception:  # noqa: BLE001 - the user's own domain check inside a stencil: no estimate there
            return np.full(traced.n_out, np.nan)
        return y if y.size == traced.n_out else np.full(traced.n_out, np.nan)  # another number of outputs there

    def outputs(rows: np.ndarray) -> np.ndarray:
        """The user's flat outputs at each distinct row of inputs (the rows of a Jacobian share their points)."""
        if len(rows) > 1:
            # Rows keyed by a random projection (np.unique(axis=0) sorted rows: 11 s of a 2 s check), each
            # confirmed equal to its representative before it is shared.
            key = rows @ np.random.default_rng(0).uniform(1.0, 2.0, rows.shape[1])
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
            if len(first) < len(rows) and np.array_equal(rows, rows[first][inverse.reshape(-1)]):
                return distinct(rows[first])[inverse.reshape(-1)]
        return distinct(rows)

    def distinct(rows: np.ndarray) -> np.ndarray:
        """``torch.func.vmap`` over the user's function, else one call per row."""
        xs = torch.as_tensor(rows, dtype=torch.float64)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if batched["vmap"] and time.perf_counter() <= clock["deadline"]:
                try:
                    return torch.func.vmap(one)(xs).numpy()
                except Exception:  # noqa: BLE001 - in-place updates, randomness, data-dependent control flow
                    batched["vmap"] = False
            return np.stack([one_or_nan(x) for x in xs]) if len(xs) else np.zeros((0, traced.n_out))

    def predict(ops, p, v):
        if getattr(ops, "name", "") not in ("numpy", "float"):
            raise UsageError(f"ops outside the supported table run on the numpy backend only, not {ops.name}")
        cols = [np.asarray(getattr(p, n), dtype=float) for ns in names for n in ns]
        cot = [np.asarray(c, dtype=float) for c in v.cotangent]
        shape = np.broadcast_shapes(*(c.shape for c in cols + cot))
        rows = np.stack([np.broadcast_to(c, shape).reshape(-1) for c in cols], axis=1)
        cots = np.stack([np.broadcast_to(c, shape).reshape(-1) for c in cot], axis=1)
        return np.einsum("mo,mo->m", outputs(rows), cots).reshape(shape)

    params = []
    for n, t in zip([n for ns in names for n in ns], target.theta()):
        r = 0.1 * abs(t) if t != 0 else 0.1
        # max_abs as the traced model's: the spread random points stay near the inputs (no referee here).
        params.append(Var(n, init=float(t), domain=(float(t - r), float(t + r)), max_abs=max(2 * abs(t), 1.0)))
    model = replace(Model.from_function(
        predict, params=params, inputs=(),
        target=Var("cotangent", shape=(traced.n_out,), domain=(-1.0, 1.0)),
        loss=lambda ops, yhat, y: yhat, name="traced (no symbolic leg)",
    ), spread=False, block=DROPIN_BLOCK, relative_steps=True)  # points around the inputs, as the traced path
    return model, one, clock


def _fallback_batch(target, traced, model, cots, points: int, seed: int, forward_ad: bool):
    """The given inputs at each cotangent, then the random points the function accepts: ``(batch, refused,
    notes)``, refused holding the points it raised at or (backward) where its gradient is NaN."""
    import torch

    batch = model.batch([{"cotangent": c} for c in cots])
    refused: list[int] = []
    notes: list[str] = []
    if points:
        sample = model.sample(points, seed=seed)
        dt = getattr(torch, target.dtype)
        refused = [i for i, th in enumerate(sample.theta) if not _runs(target, _leaf_row(target, th, dt), traced.n_out)]
        if not forward_ad:
            nan = _nonfinite_backward(target, sample.theta, refused, seed)
            notes.append(_nan_note(nan, points))  # in the call's one warning (issue 17: at most one a call)
            refused = sorted(set(refused) | set(nan))
        keep = np.array([i for i in range(len(sample)) if i not in set(refused)], dtype=int)
        batch = type(batch).concat([batch, sample.take(keep)])
    return batch, refused, notes


def _fallback_judge(target, traced, model, sub, got: np.ndarray, columns, atol, rtol, clock=None):
    """Finite differences of the real function at the suspect rows ``sub``: ``(fd, tol, bad, columns)``,
    ``bad`` the components whose candidate value ``got`` they confirm wrong, ``columns`` those differenced
    (None: all).

    The confirmation of a blame gets time of its own (twice the budget again, Note [Fallback budget]):
    with the deadline spent by the estimates, its looks had no values, and a backward of entmax's
    bisection off by 1e-4, which torch fails, passed."""
    fd, columns = _sharpest_in_time(model, sub, columns, got.shape[1], (clock or {}).get("until"))
    if columns is not None:  # components not differenced: the candidate's values set the scale, no estimate
        fd = replace(fd, values=np.where(np.isnan(fd.values), got, fd.values))
    assert fd.error is not None and fd.lower is not None and fd.upper is not None
    tol = _fd_tol(fd, target.dtype, atol, rtol)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(got - fd.values) <= tol) & np.isfinite(tol)
    bad &= _forward_finite(target, [lf.shape for lf in traced.leaves], sub.theta)[:, None]  # forward overflows
    kink = fd.kink if fd.kink is not None else np.zeros_like(bad)
    inside = (got >= fd.lower - tol) & (got <= fd.upper + tol)
    bad = np.where(kink, ~inside & np.isfinite(tol), bad)
    # Note [NaN at the inputs]: where an input component sits at a kink of some output, the derivative
    # does not exist, and NaN or inf is torch's own answer in that column (hypot at the origin gives
    # 0 * (0/0) for the other outputs' cotangents too): not judged, as the per-element referee says
    bad &= np.isfinite(got) | ~kink.any(axis=0)[None, :]
    if bad.any():
        if clock is not None:
            clock["deadline"] = max(clock["deadline"], time.perf_counter() + max(
                2 * clock.get("budget", FALLBACK_FLOOR_SECONDS), FALLBACK_DEADLINE_FLOOR))
        bad = _fd_confirms(model, sub, bad, got, fd.values, atol, rtol, target.dtype)
    return fd, tol, bad, columns


def _sharpest_in_time(model, batch, columns, p: int, until: float | None):
    """:func:`_sharpest` over seeded blocks of the components until ``until``: ``(fd, columns done)``.

    Note [Fallback budget]: the plan rests on one timed call, and a loaded machine's vmapped batches cost
    several times what it predicts (a 900-component check planned at 4 s ran past its deadline and
    judged nothing). Blocks of an eighth of the components each, in a seeded order, stop once the budget
    is spent: what was differenced is judged, the rest is counted as not differenced.
    """
    if until is None:
        return _sharpest(model, batch, columns), columns
    wanted = np.arange(p) if columns is None else np.asarray(columns, dtype=int)
    order = np.random.default_rng(31).permutation(wanted)
    size = max(16, -(-len(order) // 8))
    best = None
    done: list[int] = []
    for start in range(0, len(order), size):
        if done and time.perf_counter() > until:
            break
        block = sorted(int(c) for c in order[start : start + size])
        fd = _sharpest(model, batch, block)
        if best is not None:
            mask = np.zeros((1, p), dtype=bool)
            mask[0, block] = True
            fd = _take(best, fd, mask, ("values", "error", "lower", "upper", "kink"))
        best, done = fd, done + block
    assert best is not None
    return best, (columns if len(done) == len(wanted) else sorted(done))


def _fallback_message(target, traced, model, batch, rows, got, fd, bad, given: int, missing: str,
                      forward_ad: bool) -> str:
    """The failure message of the fallback: the worst confirmed component, both values and where."""
    r, col = (int(k) for k in np.unravel_index(int(np.argmax(np.where(bad, np.abs(got - fd.values), -1))),
                                               bad.shape))
    row = int(rows[r])
    labels = leaf_labels(traced)
    var = model.params[col].name
    where = "at the given inputs" if row < given else f"at random point {row - given} around the inputs"
    return (
        f"gradcheck_lab.gradcheck: the {'forward-mode AD' if forward_ad else 'backward'} of "
        f"{getattr(target.func, '__qualname__', type(target.func).__name__)} is wrong.\n"
        f"  d[{_describe_cotangent(traced, batch.data[row])}] / d[{labels.get(var, var)}] {where}: it gives "
        f"{got[r, col]:.10g}, finite differences {fd.values[r, col]:.10g} +- {fd.error[r, col]:.2g}.\n"
        f"  Symbolic and referee legs missing: {missing}; checked against finite differences of the real "
        f"function with their error bars only. {int(bad.any(axis=1).sum())} point(s) wrong.{_detach_hint(traced)}"
    )


def _unjudged_note(traced, model, batch, rows: np.ndarray, got: np.ndarray, tol: np.ndarray, given: int,
                   columns=None) -> str:
    """Components at the given inputs without a finite estimate (``sqrt`` at 0): said, not passed silently.
    Components not differenced (``columns``, the time budget's choice) are counted by the budget's note."""
    at_given = ~np.isfinite(tol) & (rows < given)[:, None]
    if columns is not None:
        at_given &= np.isin(np.arange(tol.shape[1]), columns)[None, :]
    if not at_given.any() or not np.isfinite(tol).any():  # none, or none anywhere: the resolution says so
        return ""
    r, col = (int(k) for k in np.argwhere(at_given)[0])
    var = model.params[col].name
    return (f"{int(at_given.sum())} component(s) at the given inputs were not judged: the finite differences have "
            f"no finite estimate there (first: d[{_describe_cotangent(traced, batch.data[int(rows[r])])}] / "
            f"d[{leaf_labels(traced).get(var, var)}], the backward gives {got[r, col]:.10g}).")


def _screen(model, batch, got: np.ndarray, dtype: str, seed: int):
    """Note [Fallback screening]: ``(suspect, disagree, worst, note, dirs)``: rows to look at, rows whose
    projection has an estimate that disagrees (``worst``: along which direction most), what the screen
    resolved, and its directions.

    Per-component differences cost ``(2K + 1) P`` calls of the user's
    function a point: a 121-pixel CLAHE took 3 minutes where torch's
    ``fast_mode`` takes milliseconds. With more than
    ``DIRECTIONAL_MIN_P`` components, each point is first checked along
    ``DIRECTIONS`` random directions ``d`` (Note [Directional check] in
    finite_diff.py: a wrong component cannot hide in ``g . d``), ``(2K + 1)
    R`` calls. A disagreeing projection is traced to one component by
    bisection (:func:`_bisect`); a projection with no estimate (a kink or
    jump inside the stencil) sends its point to per-component differences.

    The screen's tolerance is ours (the rounding of the candidate's dtype
    and the estimate's error bar) even where the caller gives ``atol`` or
    ``rtol``: those are torch's tolerances *per component*, which a
    projection cannot apply. Summed along a +-1 direction (``atol |d|_1 +
    rtol |g| . |d|``, what a projection of components that each pass can
    reach) they let a backward 10% wrong pass on torch-harmonics' loss of
    576 components (``atol=rtol=1e-5``), where torch fails one 1% wrong.
    There a disagreeing projection sends its point to per-component
    differences judged against ``atol``/``rtol``, as torch judges: a
    disagreement the caller's tolerance allows passes there, and nothing
    is blamed on a projection.
    """
    from .engines import finite_diff

    n, p = got.shape
    if p <= finite_diff.DIRECTIONAL_MIN_P:
        return np.ones(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=int), "", None
    dirs = finite_diff.directions(batch, seed=seed, relative=model.relative_steps)
    clear, ratio, tol, size = _projections(model, batch, got, dirs, dtype)
    with np.errstate(all="ignore"):
        rel = np.where(clear & (size > 0), tol / size, np.nan)
    disagree = (~clear & np.isfinite(tol)).any(axis=1)
    note = ("which resolve errors down to "
            f"{float(np.nanmedian(rel)):.1g} relative along random directions (worst {float(np.nanmax(rel)):.1g}); "
            "a smaller error passes unseen") if np.isfinite(rel).any() else "which gave no estimate anywhere"
    worst = np.argmax(np.where(clear, -1.0, ratio), axis=1)
    return ~clear.all(axis=1), disagree, worst, note, dirs


def _projections(model, batch, got: np.ndarray, dirs: np.ndarray, dtype: str):
    """``g . d`` of the candidate against finite differences along each direction: ``(clear, ratio, tol, size)``,
    at our tolerance (Note [Fallback screening])."""
    from .engines import finite_diff
    from .tolerance import FD_SAFETY, engine_tolerance

    proj_fd, err = finite_diff.directional(model, batch, dirs)
    g = np.nan_to_num(got.astype(float), nan=np.inf)
    with np.errstate(all="ignore"):
        proj = np.einsum("np,nrp->nr", g, dirs)
        size = np.einsum("np,nrp->nr", np.abs(g), np.abs(dirs))  # the projection's rounding scale
        tol = FD_SAFETY * err + engine_tolerance(dtype, size) + engine_tolerance("float64", np.abs(proj_fd))
        diff = np.abs(proj - proj_fd)
        clear = (diff <= tol) & np.isfinite(tol)
        ratio = np.where(np.isfinite(tol), diff / tol, 0.0)
    return clear, ratio, tol, size


def _bisect(model, batch, row: int, got: np.ndarray, d: np.ndarray, dtype: str) -> int | None:
    """The component of a disagreeing projection ``got[row] . d``: halve the direction's support while one
    half disagrees (``log2 P`` rounds of two directional estimates); where neither half does, the largest
    term of what is left."""
    one = batch.take(np.array([row]))
    idx = np.flatnonzero(d)
    while len(idx) > 1:
        halves = np.array_split(idx, 2)
        dirs = np.zeros((1, 2, len(d)))
        for k, half in enumerate(halves):
            dirs[0, k, half] = d[half]
        clear, ratio, _, _ = _projections(model, one, got[row][None], dirs, dtype)
        if clear[0].all():
            # an error spread over many components, each too small in a half's projection: the largest term
            # of the projection, to be confirmed (or cleared) per component
            return int(idx[np.argmax(np.abs(np.nan_to_num(got[row][idx]) * d[idx]))])
        idx = halves[int(np.argmax(np.where(clear[0], -1.0, ratio[0])))]
    return int(idx[0]) if len(idx) else None


#: Disagreeing points traced to a component by bisection before the check gives up on them.
FALLBACK_BISECTIONS = 3

#: Step factors of the fallback's estimates (Note [Fallback reach]): each component keeps the one with the
#: smallest error bar.
FALLBACK_LADDERS = (2.0**-1, 2.0**-5)


#: Most seconds of per-component finite differences the fallback may spend (Note [Fallback budget]).
FALLBACK_SECONDS = 60.0
#: The fallback's budget as a multiple of torch's own finite differences (``2 p`` calls), at least this many seconds.
FALLBACK_TORCH_MULTIPLE = 10.0
FALLBACK_FLOOR_SECONDS = 1.0
#: Fewest seconds the fallback's calls get before its deadline (Note [Fallback budget]): the budget plans
#: the work, the deadline only stops a function that is far slower away from the inputs.
FALLBACK_DEADLINE_FLOOR = 10.0


def _within_budget(rows: np.ndarray, p: int, call, seed: int, given: int = 0, torch_calls: int | None = None):
    """Note [Fallback budget]: the rows and components per-component differences can afford.

    Each component costs about ``2 (2K + 1)`` calls of the function a point
    (two ladders, Note [Fallback resolution]). kornia's Hausdorff loss (150
    components, a data-dependent branch, kinks along every direction) and
    MKD's descriptor (361) took over 10 minutes, where torch's call takes
    0.1 s. One call is timed; beyond the budget fewer points are
    differenced, and the warning says how many: never a silent pass, never
    a hang of ours.

    Cost is counted per distinct point: the ``given`` first rows (one per
    cotangent) are the given inputs, whose stencils are shared. The given
    inputs come first, with every component (as torch's check covers
    them), then random points while the budget lasts; only where one
    point's components exceed it is a seeded random subset of them
    differenced. (Counting rows, a 4x6 entmax check with 24 cotangents
    differenced 8 of 24 components at 15 rows: a wrong component went
    unseen two times in three.)

    The budget is ``FALLBACK_TORCH_MULTIPLE`` times what torch's own
    finite differences cost (``torch_calls``: ``2 p`` calls, or 2 per input
    tensor under ``fast_mode``, whose one random projection per input is
    all torch differences), at least ``FALLBACK_FLOOR_SECONDS`` and at most
    ``FALLBACK_SECONDS``: a suite's slow function gets a check in proportion
    to torch's, not a minute (kornia's ``TestLocalFeature``, a ``fast_mode``
    call of a detector pipeline with kinks everywhere, took the whole 60 s
    where torch takes 0.1 s).
    entmax's bisection (24 components, a Python loop of 50 iterations a
    call) spent the whole minute on each of its 27 tests (140x torch's time
    on a loaded machine); with a 5 s floor, 46 s for 27 tests where torch
    takes 7.5 s.

    The estimate is one call at the given inputs; an adaptive ODE solver
    (torchdiffeq's ``adaptive_heun`` adjoint) took 1 ms there and far longer
    at the stencil points around the random points: 736 s for a check
    budgeted at 3 s. So ``FALLBACK_SECONDS`` is also a deadline for the
    fallback's calls of the function, and twice the budget (at least
    ``FALLBACK_DEADLINE_FLOOR``, 10 s: under load a 1 s budget cut a
    900-component check short, and a backward off by 1e-6 passed) from the
    moment it is set: past it a call is not made, its
    estimate is missing (not judged) and the warning says how many. A single
    call that never returns cannot be interrupted.
    """
    from .engines.finite_diff import K

    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-6)
    torch_calls = 2 * p if torch_calls is None else torch_calls
    budget = min(FALLBACK_SECONDS, max(FALLBACK_FLOOR_SECONDS, FALLBACK_TORCH_MULTIPLE * torch_calls * once))
    per = 2 * (2 * K + 1) * once  # one component at one point
    at_given = rows[rows < given]
    others = rows[rows >= given]
    points = int(at_given.size > 0) + others.size
    if per * p * points <= budget:
        return rows, None, "", budget
    affordable = int(budget // (per * p))
    if affordable >= 1:  # every component, at the given inputs first
        kept = np.concatenate([at_given, others[: affordable - int(at_given.size > 0)]])
        return kept, None, (f"; per-component differences at {affordable} of {points} points, a time budget of "
                            f"{budget:.0f} s (Note [Fallback budget])"), budget
    kept = at_given if at_given.size else rows[:1]
    m = int(max(1, min(p, budget // per)))
    columns = sorted(int(c) for c in np.random.default_rng([seed, 31]).choice(p, m, replace=False))
    return kept, columns, (f"; per-component differences at {m} of {p} components and 1 point, "
                           f"a time budget of {budget:.0f} s (Note [Fallback budget])"), budget


def _sharpest(model, batch, columns=None):
    """Note [Fallback resolution]: finite differences at the default steps and 16x smaller ones, per component
    the estimate with the smaller error bar.

    The default ladder (Note [Step rule]) is tuned for the catalog; on a
    forward with large higher derivatives at the scale of its steps
    (``lgamma`` near 1.46, ``tanh`` of an input of 1) its truncation estimate
    was 4e-6 of the gradient, so a backward off by 1e-6 passed. 16x smaller
    steps cut the truncation by ``16**8`` and raise the rounding by 16: there
    the error bar fell to about 1e-12. Without the symbolic leg these error
    bars are the whole verdict, so the sharper of the two is kept.
    """

    from .engines import finite_diff

    best = finite_diff.gradients(model, batch, shrink=FALLBACK_LADDERS[0], columns=columns)
    for shrink in FALLBACK_LADDERS[1:]:
        other = finite_diff.gradients(model, batch, shrink=shrink, columns=columns)
        assert best.error is not None and other.error is not None
        with np.errstate(invalid="ignore"):
            take = np.isfinite(other.error) & ~(best.error <= other.error)
        if best.kink is not None and other.kink is not None:
            take &= best.kink == other.kink  # a kink's one-sided bounds come from one ladder
        best = _take(best, other, take, ("values", "error", "lower", "upper"))
    return best


def _take(best, other, mask: np.ndarray, fields: Sequence[str]):
    """``best`` with ``other``'s estimates where ``mask`` holds (fields either lacks are left alone)."""
    return replace(best, **{f: np.where(mask, getattr(other, f), getattr(best, f)) for f in fields
                            if getattr(best, f) is not None and getattr(other, f) is not None})


def _runs(target: _Target, tensors: list, n_out: int) -> bool:
    """The user's function runs at these leaf values with ``n_out`` float output elements, as at the given inputs.

    It may refuse a point with its own error, or give outputs of another size there (a matcher returns as
    many matches as it finds): either way the point is skipped, and counted.
    """
    import torch

    try:
        with torch.no_grad():
            out = target.call(*tensors)
    except Exception:  # noqa: BLE001 - its own domain check ("Some boxes have negative heights")
        return False
    from .torch_graph import _flat_outputs

    return sum(o.numel() for o in _flat_outputs(out) if o.is_floating_point()) == n_out


def _vmappable(traced) -> bool:
    """Whether the fallback may batch the user's function with vmap: its graph is known and all aten/prims."""
    targets = getattr(traced, "targets", [])
    if not targets and not getattr(traced, "ops", None):
        return False  # tracing failed or the graph is not the function: a NumPy or Python forward
    return all(getattr(t, "namespace", "aten") in ("aten", "prims") for t in targets)


def _resolution(values: np.ndarray, tol: np.ndarray) -> str:
    """What finite differences could resolve: the relative error a backward may have and still pass."""
    with np.errstate(all="ignore"):
        scale = np.max(np.abs(values), axis=1, keepdims=True)
        rel = np.where(np.isfinite(tol) & (scale > 0), tol / scale, np.nan)
    if not np.isfinite(rel).any():
        return "which gave no estimate anywhere (nothing was judged)"
    return (f"which resolve errors down to {float(np.nanmedian(rel)):.1g} relative to each point's largest "
            f"gradient component (worst {float(np.nanmax(rel)):.1g}); a smaller error passes unseen")


_ = (Traced,)  # re-exported type for annotations in docs
