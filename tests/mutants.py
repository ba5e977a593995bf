"""The mutant catalog: classic back-propagation bugs, each beside its correct twin.

A data module (no tests here): ``MUTANTS`` is a list of :class:`Mutant`
records. Each names a model (a catalog name with options, or a
``Model.from_function``/``from_expr`` model), the candidate kind (a
gradient ``function``, a ``torch_loss`` or an ``nn.Module``), a factory for
the buggy candidate and one for its correct twin (factories, because some
mutants carry state across calls and every run needs a fresh one), the
dtype and how many random points a run checks.

``tests/test_mutants.py`` asserts that each mutant is caught with only the
candidate blamed and that its twin passes; ``benchmarks/mutants.py`` runs
the same records through ``torch.autograd.gradcheck`` and writes the table
of docs/reliability.md. Only the public API is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gradcheck_lab import Model, Var, get_model, verify
from gradcheck_lab.candidates import torch_loss

__all__ = ["Mutant", "MUTANTS", "KINDS", "by_name"]

KINDS = ("function", "torch_loss", "module")


@dataclass(frozen=True)
class Mutant:
    """One bug: the model, the candidate kind, the buggy candidate and its correct twin."""

    name: str
    model: str | Callable[[], Model]  # a catalog name (with ``options``) or a zero-argument model factory
    kind: str  # one of KINDS
    buggy: Callable[[], Any]  # factory: a fresh buggy candidate
    correct: Callable[[], Any]  # factory: a fresh correct twin
    description: str
    options: Mapping[str, Any] = field(default_factory=dict)
    dtype: str = "float64"
    random: int = 200
    points: tuple | None = None  # explicit points; None: the model's dataset
    seed: int = 0
    region: bool = False  # wrong only in a region the default run must reach
    region_points: tuple = ()  # explicit points inside that region
    slow: bool = False

    def get_model(self) -> Model:
        if isinstance(self.model, str):
            return _catalog(self.model, tuple(sorted(self.options.items())))
        return self.model()

    def candidate(self, which: str = "buggy") -> Any:
        return {"buggy": self.buggy, "correct": self.correct}[which]()

    def run(self, which: str = "buggy", **overrides: Any):
        """``verify`` of the buggy candidate or its correct twin with this mutant's settings."""
        kwargs: dict[str, Any] = dict(random=self.random, seed=self.seed, dtype=self.dtype)
        if self.points is not None:
            kwargs["points"] = list(self.points)
        kwargs.update(overrides)
        return verify(self.get_model(), candidate=self.candidate(which), **kwargs)


@cache
def _catalog(name: str, options: tuple) -> Model:
    # One Model per configuration: its compiled engines are cached on the object.
    return get_model(name, **dict(options))


# ---------------------------------------------------------------- models


@cache
def sigmoid_unit() -> Model:
    return Model.from_function(
        lambda ops, p, v: ops.sigmoid(p.w * v.x + p.b),
        params={"w": 0.5, "b": 0.0},
        name="sigmoid_unit",
        formula="y_hat = sigmoid(w*x + b)",
    )


@cache
def tanh_unit() -> Model:
    return Model.from_function(
        lambda ops, p, v: ops.tanh(p.w * v.x + p.b),
        params={"w": 0.5, "b": 0.0},
        name="tanh_unit",
        formula="y_hat = tanh(w*x + b)",
    )


@cache
def softplus_unit() -> Model:
    # from_expr: every variable has max_abs 1e3, so spread magnitudes reach w*x + b > 20.
    return Model.from_expr("softplus(w*x + b)", params="w,b", name="softplus_unit")


@cache
def abs_input() -> Model:
    return Model.from_expr("w*abs(x) + b", params="w,b", name="abs_input")


N_SUM = 4


@cache
def sum_of_squares() -> Model:
    """``loss = sum_j (w*x_j + b - y)**2`` over a 4-vector input: the sum that a mean would shrink."""

    def predict(ops, p, v):
        return [p.w * v.x[j] + p.b for j in range(N_SUM)]

    def summed(ops, y_hat, y):
        return ops.sum([(yj - y) ** 2 for yj in y_hat])

    return Model.from_function(
        predict,
        params={"w": 1.0, "b": 0.0},
        inputs=[Var("x", (N_SUM,))],
        loss=summed,
        name="sum_of_squares",
        formula="y_hat_j = w*x_j + b, loss = sum_j (y_hat_j - y)**2",
    )


# ------------------------------------------------------- numpy helpers


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))  # accurate in both tails


_ACT = {
    "tanh": (np.tanh, lambda z, h: 1 - h**2),
    "sigmoid": (_sigmoid, lambda z, h: h * _sigmoid(-z)),
    "softplus": (lambda z: np.logaddexp(0.0, z), lambda z, h: _sigmoid(z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z, h: (z > 0).astype(float)),
    "sin": (np.sin, lambda z, h: np.cos(z)),
}


def _scaled(fn: Callable, rel: float) -> Callable:
    """``fn`` with every gradient multiplied by ``1 + rel`` (a relative error ``rel``)."""

    def grad(params, point):
        return {k: np.asarray(g) * (1 + rel) for k, g in fn(params, point).items()}

    return grad


# ------------------------------------------- gradient functions (correct)


def quadratic_grad(params, point):
    x, y = point["x"], point["y"]
    r = params["w1"] * x**2 + params["w2"] * x + params["b"] - y
    return {"w1": 2 * r * x**2, "w2": 2 * r * x, "b": 2 * r}


def linear_grad(params, point):
    x = point["x"]
    return {"w": 2 * (params["w"] * x - point["y"]) * x}


def affine_grad(params, point):
    x = point["x"]
    r = params["w"] * x + params["b"] - point["y"]
    return {"w": 2 * r * x, "b": 2 * r}


def sigmoid_unit_grad(params, point, *, prime=lambda z, s: s * _sigmoid(-z)):
    x = point["x"]
    z = params["w"] * x + params["b"]
    s = _sigmoid(z)
    dz = 2 * (s - point["y"]) * prime(z, s)
    return {"w": dz * x, "b": dz}


def tanh_unit_grad(params, point, *, prime=lambda t: 1 - t**2):
    x = point["x"]
    t = np.tanh(params["w"] * x + params["b"])
    dz = 2 * (t - point["y"]) * prime(t)
    return {"w": dz * x, "b": dz}


def logistic_grad(params, point, *, denominator=True):
    """BCE of sigmoid(w*x + b): dL/ds = (s - y) / (s (1 - s)), times ds/dz = s (1 - s)."""
    x = point["x"]
    z = params["w"] * x + params["b"]
    s = _sigmoid(z)
    dz = (s - point["y"]) if denominator else (s - point["y"]) * s * _sigmoid(-z)
    return {"w": dz * x, "b": dz}


def softmax_grad(params, point, *, transpose=False, label_shift=0):
    W, b, x = params["W"], params["b"], point["x"]
    z = W @ x + b
    e = np.exp(z - z.max())
    dz = e / e.sum() - np.eye(len(b))[(point["y"] + label_shift) % len(b)]
    return {"W": np.outer(x, dz) if transpose else np.outer(dz, x), "b": dz}


def mlp_grad(activation: str = "tanh", *, wrong_prime=None, lost_chain_unit=None, dtype=np.float64):
    """Hand-written back-propagation of the catalog mlp (squared loss)."""
    act, prime = _ACT[activation]
    prime = wrong_prime or prime

    def grad(params, point):
        W1, b1, W2 = (np.asarray(params[k], dtype=dtype) for k in ("W1", "b1", "W2"))
        b2, x, y = dtype(params["b2"]), dtype(point["x"]), dtype(point["y"])
        z = W1 * x + b1
        h = act(z)
        dy = 2 * (W2 @ h + b2 - y)
        dz = dy * W2 * prime(z, h)
        dW1 = dz * x
        if lost_chain_unit is not None:  # one unit's weight gradient lost its factor x
            dW1[lost_chain_unit] = dz[lost_chain_unit]
        return {"W1": dW1, "b1": dz, "W2": dy * h, "b2": dy}

    return grad


def softplus_unit_grad(params, point, *, threshold=None):
    x = point["x"]
    z = params["w"] * x + params["b"]
    dz = 2 * (np.logaddexp(0.0, z) - point["y"]) * _sigmoid(z)
    if threshold is not None and z > threshold:
        # Copied torch's threshold branch (softplus(z) = z above 20) but took its slope as 0.
        dz = 0.0 * dz
    return {"w": dz * x, "b": dz}


def abs_input_grad(params, point, *, forgot_abs=False):
    x = point["x"]
    r = params["w"] * abs(x) + params["b"] - point["y"]
    return {"w": 2 * r * (x if forgot_abs else abs(x)), "b": 2 * r}


def sum_of_squares_grad(params, point, *, mean=False):
    x = np.asarray(point["x"])
    r = params["w"] * x + params["b"] - point["y"]
    k = 1.0 / len(x) if mean else 1.0
    return {"w": k * np.sum(2 * r * x), "b": k * np.sum(2 * r)}


# ------------------------------------------------ the buggy gradient functions


def _negated(fn):
    def grad(params, point):
        return {k: -np.asarray(g) for k, g in fn(params, point).items()}

    return grad


def quadratic_grad_no_factor_2(params, point):
    g = quadratic_grad(params, point)
    return {**g, "w2": g["w2"] / 2}


def linear_grad_no_chain(params, point):
    return {"w": 2 * (params["w"] * point["x"] - point["y"])}  # the factor x of d(w*x)/dw is missing


def affine_grad_dropped_bias(params, point):
    return {**affine_grad(params, point), "b": 0.0}


def affine_grad_swapped(params, point):
    g = affine_grad(params, point)
    return {"w": g["b"], "b": g["w"]}


def _float32_mlp(rel: float = 0.0):
    grad = mlp_grad("tanh", dtype=np.float32)

    def g32(params, point):
        return {k: (np.asarray(v, dtype=np.float32) * np.float32(1 + rel)).astype(np.float32) for k, v in grad(params, point).items()}

    return g32


# ---------------------------------------------------- torch pieces


class ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``factor``."""

    @staticmethod
    def forward(ctx, z, factor):
        ctx.factor = factor
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class Square(torch.autograd.Function):
    """``r**2`` with a hand-written backward; ``factor`` is 2 when correct."""

    @staticmethod
    def forward(ctx, r, factor=2.0):
        ctx.save_for_backward(r)
        ctx.factor = factor
        return r * r

    @staticmethod
    def backward(ctx, grad):
        (r,) = ctx.saved_tensors
        return ctx.factor * r * grad, None


class Sigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, buggy=False):
        s = torch.sigmoid(z)
        ctx.save_for_backward(s)
        ctx.buggy = buggy
        return s

    @staticmethod
    def backward(ctx, grad):
        (s,) = ctx.saved_tensors
        return grad * (s if ctx.buggy else s * (1 - s)), None  # buggy: sigmoid' written as sigmoid


class Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, buggy=False):
        t = torch.tanh(z)
        ctx.save_for_backward(t)
        ctx.buggy = buggy
        return t

    @staticmethod
    def backward(ctx, grad):
        (t,) = ctx.saved_tensors
        return grad * ((1 - t) if ctx.buggy else (1 - t * t)), None  # buggy: tanh' as 1 - tanh


class Softplus(torch.autograd.Function):
    """softplus with a hand-written backward; the buggy one takes the slope above torch's threshold 20 as 0.

    The forward is ``logaddexp(z, 0)``, exact in both tails. (``F.softplus``
    itself returns ``z`` above its threshold 20, off by ``exp(-z)``: at
    z = 25 that moves a gradient by a relative 5.8e-13, which is blamed.)
    """

    @staticmethod
    def forward(ctx, z, buggy=False):
        ctx.save_for_backward(z)
        ctx.buggy = buggy
        return torch.logaddexp(z, torch.zeros_like(z))

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        slope = torch.sigmoid(z)
        if ctx.buggy:
            slope = torch.where(z > 20, torch.zeros_like(slope), slope)
        return grad * slope, None


class AffineNoBias(torch.autograd.Function):
    """``w*x + b`` with a hand-written backward; the buggy one returns no gradient for ``b``."""

    @staticmethod
    def forward(ctx, w, b, x, buggy=False):
        ctx.save_for_backward(x)
        ctx.buggy = buggy
        return w * x + b

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x, (None if ctx.buggy else grad), None, None


class BufferedAffine(torch.autograd.Function):
    """``w*x + b`` whose backward adds into a gradient buffer and returns it (a layer's ``.grad``).

    ``zero``: the buffer is zeroed before each backward (``zero_grad``); without
    it, gradients accumulate across calls.
    """

    @staticmethod
    def forward(ctx, w, b, x, buf, zero):
        ctx.save_for_backward(x)
        ctx.buf, ctx.zero = buf, zero
        return w * x + b

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        buf = ctx.buf
        if ctx.zero:
            buf.update(w=0.0, b=0.0)
        buf["w"] = buf["w"] + grad * x
        buf["b"] = buf["b"] + grad
        return buf["w"], buf["b"], None, None, None


def accumulating_affine_loss(*, zero: bool):
    """A torch_loss whose gradient buffer persists in a closure; ``zero=False`` never resets it."""
    buf = {"w": 0.0, "b": 0.0}

    def loss(p, v):
        return (BufferedAffine.apply(p.w, p.b, v.x, buf, zero) - v.y) ** 2

    return torch_loss(loss)


def _softplus(z):
    """BCE's ``log(1 + e^z)`` exactly: ``F.softplus`` is linear above its ``threshold=20`` (its gradient 1
    where the model's is ``sigmoid(z) = 1 - e^-z``), and a correct twin written with it was judged, rightly,
    2.8e-11 off at ``z = 24`` (seed 1 of the longer runs), far beyond its rounding."""
    return torch.logaddexp(z, torch.zeros_like(z))


def _torch_mlp(p, v, act=torch.tanh):
    return (p.W2 * act(p.W1 * v.x + p.b1)).sum() + p.b2


def _softmax_loss(W, b, x, y):
    z = W @ x + b
    return torch.logsumexp(z, 0) - (y * z).sum()


#: Correct gradient functions and torch losses of four catalog models (default options):
#: the detection limits are measured on them (tests/test_mutants.py, benchmarks/mutants.py).
GRADS = {"quadratic": quadratic_grad, "logistic": logistic_grad, "mlp": mlp_grad("tanh"), "softmax": softmax_grad}
TORCH_LOSSES = {
    "quadratic": lambda p, v: (p.w1 * v.x**2 + p.w2 * v.x + p.b - v.y) ** 2,
    "logistic": lambda p, v: _softplus(p.w * v.x + p.b) - v.y * (p.w * v.x + p.b),
    "mlp": lambda p, v: (_torch_mlp(p, v) - v.y) ** 2,
    "softmax": lambda p, v: _softmax_loss(p.W, p.b, v.x, v.y),
}


def scaled_grad(name: str, rel: float) -> Callable:
    """The correct gradient function of catalog model ``name``, off by a relative ``rel``."""
    return _scaled(GRADS[name], rel)


def scaled_torch_loss(name: str, rel: float):
    """A torch_loss of catalog model ``name`` whose every gradient is off by a relative ``rel``."""
    fn = TORCH_LOSSES[name]
    return torch_loss(lambda p, v: ScaleGrad.apply(fn(p, v), 1 + rel))


# ---------------------------------------------------- modules


class AffineModule(torch.nn.Module):
    def __init__(self, swapped=False, half=False, detach_bias=False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))
        self.b = torch.nn.Parameter(torch.tensor(0.0))
        self.swapped, self.half, self.detach_bias = swapped, half, detach_bias

    def forward(self, x, y):
        w, b = (self.b, self.w) if self.swapped else (self.w, self.b)  # swapped: w used as the bias
        if self.detach_bias:
            b = b.detach()
        r = w * x + b - y
        return 0.5 * r**2 if self.half else r**2  # half: the 1/2 convention the model does not use


class AccumulatingQuadratic(torch.nn.Module):
    """The quadratic with a hand-written backward into a gradient buffer kept on the module."""

    def __init__(self, zero: bool):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.tensor(1.0))
        self.w2 = torch.nn.Parameter(torch.tensor(1.0))
        self.b = torch.nn.Parameter(torch.tensor(1.0))
        self.zero = zero
        self.buf = {"w": 0.0, "b": 0.0}  # not a buffer: functional_call does not reset it

    def forward(self, x, y):
        # w1*x**2 + (w2*x + b): the affine part through the buffered backward.
        return (self.w1 * x**2 + BufferedAffine.apply(self.w2, self.b, x, self.buf, self.zero) - y) ** 2


class LogisticModule(torch.nn.Module):
    def __init__(self, squared=False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))
        self.b = torch.nn.Parameter(torch.tensor(1.0))
        self.squared = squared

    def forward(self, x, y):
        z = self.w * x + self.b
        if self.squared:  # the forward differs from the model: squared error, not BCE
            return (torch.sigmoid(z) - y) ** 2
        return _softplus(z) - y * z


class MLPModule(torch.nn.Module):
    def __init__(self, H=4, act=torch.tanh, detach_unit=None, rel=0.0):
        super().__init__()
        self.W1 = torch.nn.Parameter(torch.zeros(H))
        self.b1 = torch.nn.Parameter(torch.zeros(H))
        self.W2 = torch.nn.Parameter(torch.zeros(H))
        self.b2 = torch.nn.Parameter(torch.tensor(0.0))
        self.act, self.detach_unit, self.rel = act, detach_unit, rel

    def forward(self, x, y):
        h = self.act(self.W1 * x + self.b1)
        if self.detach_unit is not None:
            k = self.detach_unit
            h = torch.cat([h[:k], h[k : k + 1].detach(), h[k + 1 :]])
        loss = ((self.W2 * h).sum() + self.b2 - y) ** 2
        return ScaleGrad.apply(loss, 1 + self.rel) if self.rel else loss


class SoftmaxModule(torch.nn.Module):
    def __init__(self, d=2, K=3, label_shift=0):
        super().__init__()
        self.W = torch.nn.Parameter(torch.zeros(K, d))
        self.b = torch.nn.Parameter(torch.zeros(K))
        self.label_shift = label_shift

    def forward(self, x, y):
        label = (torch.argmax(y) + self.label_shift) % y.shape[0]
        return F.cross_entropy((self.W @ x + self.b).unsqueeze(0), label.unsqueeze(0))


class SumModule(torch.nn.Module):
    def __init__(self, mean=False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))
        self.b = torch.nn.Parameter(torch.tensor(0.0))
        self.mean = mean

    def forward(self, x, y):
        sq = (self.w * x + self.b - y) ** 2
        return sq.mean() if self.mean else sq.sum()


class AbsInputModule(torch.nn.Module):
    def __init__(self, forgot_abs=False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))
        self.b = torch.nn.Parameter(torch.tensor(1.0))
        self.forgot_abs = forgot_abs

    def forward(self, x, y):
        return (self.w * (x if self.forgot_abs else x.abs()) + self.b - y) ** 2


# ---------------------------------------------------- the catalog


def _fn(f):
    return lambda: f


def _loss(f):
    return lambda: torch_loss(f)


M = Mutant
#: Points where w*x + b is above torch's softplus threshold 20 (25 and 32).
SOFTPLUS_TAIL = ({"x": 3.0, "y": 1.0, "params": {"w": 8.0, "b": 1.0}}, {"x": -2.0, "y": 0.5, "params": {"w": -15.0, "b": 2.0}})
H64 = {"H": 64, "activation": "tanh"}

MUTANTS: list[Mutant] = [
    # ------------------------------------------------ gradient functions
    M("fn_wrong_sign", "quadratic", "function", _fn(_negated(quadratic_grad)), _fn(quadratic_grad),
      "every gradient negated (descent written as ascent)"),
    M("fn_missing_factor_2", "quadratic", "function", _fn(quadratic_grad_no_factor_2), _fn(quadratic_grad),
      "dL/dw2 lacks the factor 2 of the squared loss"),
    M("fn_missing_chain_x", "linear", "function", _fn(linear_grad_no_chain), _fn(linear_grad),
      "dL/dw = 2r: the chain factor x of d(w*x)/dw is missing"),
    M("fn_sigmoid_prime_as_sigmoid", sigmoid_unit, "function",
      _fn(lambda pa, pt: sigmoid_unit_grad(pa, pt, prime=lambda z, s: s)), _fn(sigmoid_unit_grad),
      "sigmoid'(z) written as sigmoid(z) instead of sigmoid(z)(1 - sigmoid(z))"),
    M("fn_tanh_prime_as_1_minus_tanh", tanh_unit, "function",
      _fn(lambda pa, pt: tanh_unit_grad(pa, pt, prime=lambda t: 1 - t)), _fn(tanh_unit_grad),
      "tanh'(z) written as 1 - tanh(z) instead of 1 - tanh(z)**2"),
    M("fn_bce_without_denominator", "logistic", "function",
      _fn(lambda pa, pt: logistic_grad(pa, pt, denominator=False)), _fn(logistic_grad),
      "dBCE/ds taken as (s - y) without its denominator s(1 - s): dz = (s - y) s (1 - s)"),
    M("fn_dropped_bias", "affine", "function", _fn(affine_grad_dropped_bias), _fn(affine_grad),
      "the bias gradient is dropped (returned as 0)"),
    M("fn_swapped_w_b", "affine", "function", _fn(affine_grad_swapped), _fn(affine_grad),
      "the gradients of w and b are swapped"),
    M("fn_transposed_W", "softmax", "function", _fn(lambda pa, pt: softmax_grad(pa, pt, transpose=True)),
      _fn(softmax_grad), "dW = outer(x, dz) instead of outer(dz, x) on a square 3x3 W (no shape error)",
      options={"d": 3, "K": 3}),
    M("fn_label_off_by_one", "softmax", "function", _fn(lambda pa, pt: softmax_grad(pa, pt, label_shift=1)),
      _fn(softmax_grad), "softmax cross-entropy with the one-hot label shifted by one class"),
    M("fn_mean_for_sum", sum_of_squares, "function", _fn(lambda pa, pt: sum_of_squares_grad(pa, pt, mean=True)),
      _fn(sum_of_squares_grad), "the loss sums 4 squared errors; the gradient is of their mean (1/N factor)"),
    M("fn_one_of_193", "mlp", "function", _fn(mlp_grad("tanh", lost_chain_unit=17)), _fn(mlp_grad("tanh")),
      "mlp H=64 (193 parameters): only dL/dW1[17] lacks its factor x", options=H64, random=6, points=()),
    M("fn_relu_prime_region", "mlp", "function",
      _fn(mlp_grad("relu", wrong_prime=lambda z, h: np.ones_like(z))), _fn(mlp_grad("relu")),
      "relu'(z) taken as 1 everywhere: wrong only where a pre-activation is negative",
      options={"H": 4, "activation": "relu"}, region=True,
      region_points=({"x": 1.0, "y": 0.5, "params": {"W1": [1.0, -2.0, 0.5, 1.0], "b1": [0.5, 0.5, -1.0, 0.2]}},)),
    M("fn_abs_input_region", abs_input, "function", _fn(lambda pa, pt: abs_input_grad(pa, pt, forgot_abs=True)),
      _fn(abs_input_grad), "d(w*|x|)/dw written as x: wrong only for x < 0", region=True,
      region_points=({"x": -2.0, "y": 0.5},)),
    M("fn_softplus_threshold_region", softplus_unit, "function",
      _fn(lambda pa, pt: softplus_unit_grad(pa, pt, threshold=20.0)), _fn(softplus_unit_grad),
      "softplus' taken as 0 where w*x + b > 20 (torch's threshold branch): wrong only in the tail",
      region=True, random=300, region_points=SOFTPLUS_TAIL),
    M("fn_rel_1e-4", "mlp", "function", _fn(_scaled(mlp_grad("tanh"), 1e-4)), _fn(mlp_grad("tanh")),
      "every gradient off by a relative 1e-4 (mlp H=8 tanh)"),
    M("fn_rel_1e-6", "logistic", "function", _fn(_scaled(logistic_grad, 1e-6)), _fn(logistic_grad),
      "every gradient off by a relative 1e-6 (logistic)"),
    M("fn_rel_1e-8", "softmax", "function", _fn(_scaled(softmax_grad, 1e-8)), _fn(softmax_grad),
      "every gradient off by a relative 1e-8 (softmax 2x3)"),
    M("fn_rel_1e-10", "quadratic", "function", _fn(_scaled(quadratic_grad, 1e-10)), _fn(quadratic_grad),
      "every gradient off by a relative 1e-10 (quadratic)"),
    M("fn_rel_1e-10_mlp", "mlp", "function", _fn(_scaled(mlp_grad("tanh"), 1e-10)), _fn(mlp_grad("tanh")),
      "every gradient off by a relative 1e-10 (mlp H=8 tanh)"),
    M("fn_float32_rel_1e-3", "mlp", "function", _fn(_float32_mlp(1e-3)), _fn(_float32_mlp(0.0)),
      "float32 back-propagation (float32 values returned), every gradient off by a relative 1e-3",
      dtype="float32"),
    # ------------------------------------------------ torch losses
    M("loss_custom_square_backward", "quadratic", "torch_loss",
      _loss(lambda p, v: Square.apply(p.w1 * v.x**2 + p.w2 * v.x + p.b - v.y, 1.0)),
      _loss(lambda p, v: Square.apply(p.w1 * v.x**2 + p.w2 * v.x + p.b - v.y, 2.0)),
      "a custom autograd.Function r**2 whose backward returns r*grad (factor 2 missing)"),
    M("loss_custom_sigmoid_backward", sigmoid_unit, "torch_loss",
      _loss(lambda p, v: (Sigmoid.apply(p.w * v.x + p.b, True) - v.y) ** 2),
      _loss(lambda p, v: (Sigmoid.apply(p.w * v.x + p.b, False) - v.y) ** 2),
      "a custom autograd.Function sigmoid whose backward uses sigmoid as its derivative"),
    M("loss_custom_tanh_backward", "mlp", "torch_loss",
      _loss(lambda p, v: (_torch_mlp(p, v, lambda z: Tanh.apply(z, True)) - v.y) ** 2),
      _loss(lambda p, v: (_torch_mlp(p, v, lambda z: Tanh.apply(z, False)) - v.y) ** 2),
      "a custom autograd.Function tanh whose backward is 1 - tanh (mlp H=4)", options={"H": 4}),
    M("loss_custom_softplus_threshold_region", softplus_unit, "torch_loss",
      _loss(lambda p, v: (Softplus.apply(p.w * v.x + p.b, True) - v.y) ** 2),
      _loss(lambda p, v: (Softplus.apply(p.w * v.x + p.b, False) - v.y) ** 2),
      "a custom softplus whose backward is 0 above torch's threshold 20: wrong only in the tail",
      region=True, random=300, region_points=SOFTPLUS_TAIL),
    M("loss_custom_affine_no_bias_grad", "affine", "torch_loss",
      _loss(lambda p, v: (AffineNoBias.apply(p.w, p.b, v.x, True) - v.y) ** 2),
      _loss(lambda p, v: (AffineNoBias.apply(p.w, p.b, v.x, False) - v.y) ** 2),
      "a custom affine Function whose backward returns None for the bias (dropped bias gradient)"),
    M("loss_detached_path", "logistic", "torch_loss",
      _loss(lambda p, v: _softplus(p.w * v.x + p.b) - v.y * (p.w * v.x + p.b).detach()),
      _loss(lambda p, v: _softplus(p.w * v.x + p.b) - v.y * (p.w * v.x + p.b)),
      "BCE as softplus(z) - y*z with z detached in the second term: one path of the gradient missing"),
    M("loss_never_zeroed", "affine", "torch_loss", lambda: accumulating_affine_loss(zero=False),
      lambda: accumulating_affine_loss(zero=True),
      "a hand-written backward adds into a gradient buffer held by a closure and never reset between calls"),
    M("loss_transposed_W", "softmax", "torch_loss",
      _loss(lambda p, v: _softmax_loss(p.W.T, p.b, v.x, v.y)), _loss(lambda p, v: _softmax_loss(p.W, p.b, v.x, v.y)),
      "logits W.T @ x instead of W @ x on a square 3x3 W", options={"d": 3, "K": 3}),
    M("loss_label_off_by_one", "softmax", "torch_loss",
      _loss(lambda p, v: _softmax_loss(p.W, p.b, v.x, torch.roll(v.y, 1))),
      _loss(lambda p, v: _softmax_loss(p.W, p.b, v.x, v.y)),
      "cross-entropy against the one-hot label rolled by one class"),
    M("loss_mean_for_sum", sum_of_squares, "torch_loss", _loss(lambda p, v: ((p.w * v.x + p.b - v.y) ** 2).mean()),
      _loss(lambda p, v: ((p.w * v.x + p.b - v.y) ** 2).sum()), "mean of the 4 squared errors where the model sums"),
    M("loss_rel_1e-8", "softmax", "torch_loss",
      _loss(lambda p, v: ScaleGrad.apply(_softmax_loss(p.W, p.b, v.x, v.y), 1 + 1e-8)),
      _loss(lambda p, v: _softmax_loss(p.W, p.b, v.x, v.y)), "every gradient off by a relative 1e-8 (softmax 2x3)"),
    M("loss_float32_rel_1e-3", "mlp", "torch_loss",
      _loss(lambda p, v: ScaleGrad.apply((_torch_mlp(p, v) - v.y) ** 2, 1 + 1e-3)),
      _loss(lambda p, v: (_torch_mlp(p, v) - v.y) ** 2), "float32 autograd, every gradient off by a relative 1e-3 (mlp H=8)",
      dtype="float32"),
    # ------------------------------------------------ modules
    M("module_swapped_w_b", "affine", "module", lambda: AffineModule(swapped=True), lambda: AffineModule(),
      "the module uses w as the bias and b as the weight: gradients swapped"),
    M("module_half_convention", "affine", "module", lambda: AffineModule(half=True), lambda: AffineModule(),
      "0.5*(y_hat - y)**2 where the model's loss is (y_hat - y)**2: every gradient missing its factor 2"),
    M("module_dropped_bias", "affine", "module", lambda: AffineModule(detach_bias=True), lambda: AffineModule(),
      "the bias is detached in the forward: its gradient is 0"),
    M("module_never_zeroed", "quadratic", "module", lambda: AccumulatingQuadratic(zero=False),
      lambda: AccumulatingQuadratic(zero=True),
      "a hand-written backward adds into a gradient buffer kept on the module and never zeroed"),
    M("module_forward_differs_loss", "logistic", "module", lambda: LogisticModule(squared=True),
      lambda: LogisticModule(), "the module's forward differs from the model: squared error instead of BCE"),
    M("module_forward_differs_activation", "mlp", "module", lambda: MLPModule(act=torch.sigmoid),
      lambda: MLPModule(), "the module's forward differs from the model: sigmoid where the model has tanh (H=4)",
      options={"H": 4}),
    M("module_detached_unit", "mlp", "module", lambda: MLPModule(detach_unit=1), lambda: MLPModule(),
      "hidden unit 1 detached in the forward: W1[1] and b1[1] get no gradient (H=4)", options={"H": 4}),
    M("module_label_off_by_one", "softmax", "module", lambda: SoftmaxModule(label_shift=1), lambda: SoftmaxModule(),
      "F.cross_entropy against the label + 1"),
    M("module_mean_for_sum", sum_of_squares, "module", lambda: SumModule(mean=True), lambda: SumModule(),
      "mean of the 4 squared errors where the model sums"),
    M("module_abs_input_region", abs_input, "module", lambda: AbsInputModule(forgot_abs=True),
      lambda: AbsInputModule(), "w*x where the model has w*|x|: wrong only for x < 0", region=True,
      region_points=({"x": -2.0, "y": 0.5},)),
    M("module_rel_1e-6", "mlp", "module", lambda: MLPModule(act=torch.tanh, rel=1e-6), lambda: MLPModule(),
      "every gradient off by a relative 1e-6 (mlp H=4)", options={"H": 4}),
]


def by_name(name: str) -> Mutant:
    return next(m for m in MUTANTS if m.name == name)


assert len({m.name for m in MUTANTS}) == len(MUTANTS), "mutant names must be unique"
assert all(m.kind in KINDS for m in MUTANTS)
