"""The referee at tensor size (engines/tensor_referee.py) and its verdicts in the drop-in (tensor_check.py)."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from gradcheck_lab import gradcheck
from gradcheck_lab.engines import tensor_referee
from gradcheck_lab.engines.referee import CERTIFIED, KINK, UNRESOLVED
from gradcheck_lab.errors import GradientMismatch
from gradcheck_lab.torch_graph import Leaf, Traced, name_leaves, trace
from test_engines_tensor import UNARY, composition


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _traced(f, xs) -> Traced:
    leaves = [Leaf(f"x{i}", "input", i, tuple(x.shape), x.dtype) for i, x in enumerate(xs)]
    name_leaves(leaves)
    traced = trace(f, xs, leaves)
    assert isinstance(traced, Traced), traced
    return traced


def _prove(f, xs, cot, dirs, deadline=None):
    return tensor_referee.prove(_traced(f, xs), [x.numpy() for x in xs], cot, dirs,
                                need=np.zeros((len(np.atleast_2d(cot)), dirs.shape[1])),
                                deadline=time.perf_counter() + 60 if deadline is None else deadline)


def _vjp(f, xs, cot):
    leaves = [x.detach().clone().requires_grad_() for x in xs]
    out = f(*leaves)
    grads = torch.autograd.grad(out, leaves, torch.as_tensor(cot).reshape(out.shape))
    return torch.cat([g.reshape(-1) for g in grads]).numpy()


IMG = _rand(1, 2, 6, 6, seed=3)
CASES = {
    "tanh of a product": (lambda x, w: torch.tanh(x @ w) * 2.0, [_rand(4, 6), _rand(6, 5, seed=1) / 2]),
    "softmax": (lambda x: torch.softmax(x, -1), [_rand(3, 5)]),
    "layer_norm": (lambda x: F.layer_norm(x, (5,)), [_rand(3, 5)]),
    "conv2d, sigmoid": (lambda a, k: F.conv2d(a, k, padding=1).sigmoid(), [IMG, _rand(3, 2, 3, 3, seed=1)]),
    "max_pool, log1p": (lambda a: F.max_pool2d(a.abs(), 2).log1p(), [IMG]),
    "where, clamp, pow": (lambda x: torch.where(x > 0, x.exp(), x.sin()) + x.clamp(-0.5, 0.5) * x.abs() ** 1.5,
                          [_rand(3, 5)]),
    "atan2, erf, logsumexp": (lambda x, y: torch.atan2(x, y) + torch.erf(x) + torch.logsumexp(x * y, 0),
                              [_rand(3, 4), _rand(3, 4, seed=1)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_enclosures_hold_torch_autograd(name):
    f, xs = CASES[name]
    n_in = sum(x.numel() for x in xs)
    n_out = f(*xs).numel()
    rng = np.random.default_rng(1)
    cot = rng.uniform(-1, 1, (2, n_out))
    dirs = np.zeros((n_in, 3))
    dirs[[0, n_in // 2, n_in - 1], [0, 1, 2]] = 1.0
    ex = _prove(f, xs, cot, dirs)
    want = np.array([_vjp(f, xs, c) @ dirs for c in cot]).ravel()
    assert (ex.status == CERTIFIED).all(), ex.status
    scale = np.abs(want).max()
    assert (ex.lo[0] <= want + 1e-13 * scale).all() and (want - 1e-13 * scale <= ex.hi[0]).all()
    assert (ex.hi - ex.lo <= 1e-15 * max(scale, 1.0)).all()  # a proof to the last digits


@given(st.lists(st.integers(0, len(UNARY) - 1), min_size=1, max_size=4), st.integers(0, 2**16),
       st.floats(0.25, 4.0))
def test_compositions_are_enclosed(chain, seed, c):
    f = composition(chain, c)
    xs = [_rand(3, 4, seed=seed) * 0.5, _rand(4, 2, seed=seed + 1) * 0.5]
    dirs = np.eye(20)[:, [seed % 20, (seed // 20) % 20]]
    cot = np.random.default_rng(seed).uniform(-1, 1, (1, 3))
    ex = _prove(f, xs, cot, dirs)
    want = _vjp(f, xs, cot[0]) @ dirs
    assert (ex.status[0] == CERTIFIED).all(), ex.status  # a relu argument is never exactly 0 at these points
    slack = 1e-12 * max(1.0, np.abs(want).max())
    assert (ex.lo[0] - slack <= want).all() and (want <= ex.hi[0] + slack).all()


def test_a_tie_is_a_kink_only_along_the_directions_that_cross_it():
    x = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    ex = _prove(lambda t: torch.relu(t) * 3.0, [x], np.ones((1, 3)), np.eye(3))
    assert ex.status[0].tolist() == [KINK, CERTIFIED, CERTIFIED]  # relu at 0 along its own axis only
    assert ex.value[0, 1:].tolist() == [3.0, 0.0]
    # the boundary reached by higher-order terms: x*x > 0 on both sides of 0, so the function is 2x there
    # (derivative 2) though the branch taken at 0 is the constant; a zero tangent of x*x proves nothing
    ex = _prove(lambda t: torch.where(t * t > 0, 2 * t, torch.zeros_like(t)), [x], np.ones((1, 3)), np.eye(3))
    assert ex.status[0].tolist() == [KINK, CERTIFIED, CERTIFIED]
    ex = _prove(lambda t: torch.sqrt(t * t), [x], np.ones((1, 3)), np.eye(3))  # |x|: no derivative at 0
    assert ex.status[0, 0] != CERTIFIED and ex.status[0, 1:].tolist() == [CERTIFIED, CERTIFIED]
    # elu (alpha 1) is smooth at 0, but its two selections each tie: not judged (conservative, never wrong)
    ex = _prove(lambda t: F.elu(t), [x], np.ones((1, 3)), np.eye(3))
    assert ex.status[0].tolist() == [KINK, CERTIFIED, CERTIFIED]


def test_a_derivative_outside_its_domain_is_not_judged():
    x = torch.tensor([0.0, 4.0], dtype=torch.float64)
    ex = _prove(lambda t: torch.sqrt(t), [x], np.ones((1, 2)), np.eye(2))
    assert ex.status[0, 0] != CERTIFIED and not np.isfinite(ex.lo[0, 0])
    assert ex.status[0, 1] == CERTIFIED and ex.value[0, 1] == 0.25


def test_past_its_deadline_nothing_is_judged():
    f, xs = CASES["tanh of a product"]
    ex = _prove(f, xs, np.ones((1, 20)), np.eye(54)[:, :2], deadline=time.perf_counter() - 1)
    assert (ex.status == UNRESOLVED).all() and np.isinf(ex.lo).all() and np.isinf(ex.hi).all()


# ---------------------------------------------------------------- verdicts in the drop-in


def _layer(error: float, where: str = "w"):
    """``2 tanh(x @ w)`` whose backward is off by ``error`` relative in one input's gradient."""

    class Layer(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return torch.tanh(x @ w) * 2.0

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            d = g * 2.0 * (1 - torch.tanh(x @ w) ** 2)
            gx, gw = d @ w.mT, x.mT @ d
            return (gx * (1 + error), gw) if where == "x" else (gx, gw * (1 + error))

    return Layer.apply


def _real_size(dtype):
    # 34k element operations: beyond the per-element leg's budget (Note [Derivation budget])
    return _rand(16, 64).to(dtype).requires_grad_(), (_rand(64, 32, seed=1) / 8).to(dtype).requires_grad_()


@pytest.mark.parametrize("dtype, error, fast_mode", [(torch.float64, 1e-10, False), (torch.float64, 1e-10, True),
                                                      (torch.float32, 1e-3, False)])
def test_a_small_error_at_real_size_is_proven(dtype, error, fast_mode):
    # finite differences resolve about 1e-8 relative: a 1e-10 error passed with a warning before
    with pytest.raises(GradientMismatch, match="proven in ball arithmetic") as caught, warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, no warning: the proof decides
        gradcheck(_layer(error, "x" if fast_mode else "w"), _real_size(dtype), fast_mode=fast_mode)
    assert "At fault: backward (candidate)" in str(caught.value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_correct_backward_at_real_size_is_not_blamed(dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(_layer(0.0), _real_size(dtype))


def test_a_wrong_symbolic_leg_is_never_blamed_on_the_backward(monkeypatch):
    # the referee re-derives the disagreeing components from the forward; a rule of ours that is off sends
    # the call on to finite differences (which pass it), never to a verdict against the user's backward
    from gradcheck_lab.engines import tensor

    real = tensor.cotangent_products
    monkeypatch.setattr(tensor, "cotangent_products", lambda *a: (lambda s: (s[0] * (1 + 1e-6), s[1]))(real(*a)))
    real_dir = tensor.directional
    monkeypatch.setattr(tensor, "directional", lambda *a: real_dir(*a) * (1 + 1e-6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback's "symbolic and referee legs missing"
        assert gradcheck(_layer(0.0), _real_size(torch.float64))


def test_a_mid_size_fault_is_proven_before_any_per_element_derivation(monkeypatch):
    # Note [Proof first]: x * hardtanh-like on 16x64 is within the derivation budget; the per-element path took
    # 35 s to fail a 1e-9 error, the proof takes a fraction of a second
    from gradcheck_lab import torch_check

    monkeypatch.setattr(torch_check, "_traced_check", lambda *a, **k: pytest.fail("the per-element path ran"))

    class Bent(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * (x + 3).clamp(0, 6) / 6

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            inside = ((x > -3) & (x < 3)).to(x.dtype)
            return g * ((x + 3).clamp(0, 6) / 6 + x * inside / 6) * (1 + 1e-9)

    with pytest.raises(GradientMismatch, match="proven in ball arithmetic.*\n.*per-element legs were not run"):
        gradcheck(Bent.apply, (_rand(16, 64).requires_grad_(),))
