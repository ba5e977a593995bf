"""The tensor-level engine (engines/tensor.py) and its leg of the drop-in (tensor_check.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck_lab import gradcheck
from gradcheck_lab.engines import tensor
from gradcheck_lab.engines.tensor import graph_of as tensor_graph


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _torch_jacobian(f, xs):
    def flat(*a):
        out = f(*a)
        outs = [out] if isinstance(out, torch.Tensor) else list(out)
        return torch.cat([o.reshape(-1) for o in outs if o.is_floating_point()])

    jac = torch.autograd.functional.jacobian(flat, tuple(xs))
    return torch.cat([j.reshape(j.shape[0], -1) for j in jac], 1).numpy()


IMG = _rand(2, 3, 6, 6, seed=3)
CASES = {
    "tanh of a product": (lambda x, w: (0.5 * torch.tanh(x @ w)).sum(-1), [_rand(4, 6), _rand(6, 5, seed=1)]),
    "linear": (lambda x, w, b: F.linear(x, w, b), [_rand(4, 6), _rand(5, 6, seed=1), _rand(5, seed=2)]),
    "softmax": (lambda x: torch.softmax(x, -1), [_rand(3, 5)]),
    "log_softmax": (lambda x: torch.log_softmax(x, 0), [_rand(3, 5)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (5,), w, b), [_rand(3, 5), _rand(5, seed=1), _rand(5, seed=2)]),
    "gelu tanh": (lambda x: F.gelu(x, approximate="tanh"), [_rand(3, 5)]),
    "softplus beta": (lambda x: F.softplus(x, beta=2.0), [_rand(3, 5)]),
    "pow and abs": (lambda x: x.abs() ** 1.5 + x**2, [_rand(3, 5)]),
    "clamp": (lambda x: x.clamp(-0.5, 0.5) * x, [_rand(3, 5)]),
    "where": (lambda x: torch.where(x > 0, x.exp(), x.sin()), [_rand(3, 5)]),
    "amax and max": (lambda x: x.amax(-1) + x.max(), [_rand(3, 5)]),
    "max.dim, sort, topk": (lambda x: x.max(dim=1).values.sum() + x.sort(dim=1).values[:, 0] + x.topk(2, dim=1).values[:, 1],
                           [_rand(3, 5)]),
    "cumsum and prod": (lambda x: x.cumsum(1).sum(0) + x.prod(0), [_rand(3, 5)]),
    "prod with a zero": (lambda x: (x * torch.tensor([0.0, 1, 1, 1, 1], dtype=x.dtype)).prod(1), [_rand(3, 5)]),
    "var, std, norm": (lambda x: x.var(1) + x.std(0).sum() + x.norm(dim=1), [_rand(3, 5)]),
    "logsumexp": (lambda x: torch.logsumexp(x, 1), [_rand(3, 5)]),
    "cat, stack, index": (lambda x: torch.cat([x, x * 2], 0).sum(0) + x[[0, 2]][:, 1:4].sum() + torch.stack([x, x.sin()]).mean(0)[1],
                          [_rand(3, 5)]),
    "write into a slice": (lambda x: (lambda y: (y.__setitem__((slice(None), 0), x[:, 1] * 2), y)[1])(x.clone()), [_rand(3, 5)]),
    "conv2d with bias": (lambda a, k, b: F.conv2d(a, k, b, padding=1), [IMG, _rand(4, 3, 3, 3, seed=1), _rand(4, seed=2)]),
    # the tangents' batch folded into the images and the output channels (Note: _folded_convolution)
    "conv2d grouped, strided, dilated; conv_transpose2d": (
        lambda a, k, kt: F.conv2d(a[:, :2], k, stride=2, dilation=(1, 2), groups=2, padding=2).sum(1)[..., :3, :3]
        + F.conv_transpose2d(a[:, :2], kt, stride=2)[..., :3, :3].sum(1),
        [IMG, _rand(4, 1, 2, 2, seed=1), _rand(2, 3, 2, 2, seed=2)]),
    "copy_ into a buffer": (lambda x: (lambda buf: (buf.copy_(x.sin() * 2), buf * x)[1])(torch.zeros(3, 5, dtype=x.dtype)),
                            [_rand(3, 5)]),
    "max_pool and avg_pool": (lambda a: F.max_pool2d(a, 2).sum(1) + F.avg_pool2d(a, 2).sum(1), [IMG]),
    "batch and group norm": (lambda a: F.batch_norm(a, None, None, training=True) + F.group_norm(a, 3), [IMG]),
    "floor, remainder, fmod": (lambda x: torch.floor(x * 3) * x + torch.remainder(x, 0.7) + torch.fmod(x, 0.3), [_rand(3, 5)]),
    "log2, flip, round": (lambda x: torch.log2(x.abs() + 1).flip(0) + torch.round(x) * x, [_rand(3, 5)]),
    "fill with an int, masked_fill": (lambda x: x.clone().fill_(1) * x + x.masked_fill(x > 0, 2), [_rand(3, 5)]),
    "contiguous, then view": (lambda x: x.permute(1, 0).contiguous().view(-1) * x.sum(), [_rand(3, 5)]),
    "pad with a value": (lambda x: F.pad(x, (1, 2), value=3.0) ** 2, [_rand(3, 5)]),
    "cross entropy": (lambda x: F.cross_entropy(x, torch.tensor([0, 2, 1])), [_rand(3, 5)]),
    "bilinear interpolation": (lambda a: F.interpolate(a, scale_factor=2, mode="bilinear"), [IMG[:, :, :3, :3]]),
    "grid_sample": (lambda a, g: F.grid_sample(a, g, align_corners=False), [IMG, torch.rand(2, 4, 4, 2, dtype=torch.float64,
                                                                                                 generator=torch.Generator().manual_seed(0)) * 2 - 1]),
    "grid_sample 3D, trilinear and nearest": (
        lambda a, g: F.grid_sample(a, g, align_corners=False) + F.grid_sample(a, g, mode="nearest", padding_mode="border",
                                                                              align_corners=True),
        [_rand(1, 2, 3, 4, 5), torch.rand(1, 2, 3, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2]),
    "grid_sample 3D, reflection": (lambda a, g: F.grid_sample(a, g, padding_mode="reflection", align_corners=False),
                                   [_rand(1, 1, 3, 3, 4), torch.rand(1, 2, 2, 2, 3, dtype=torch.float64,
                                                                     generator=torch.Generator().manual_seed(1)) * 3 - 1.5]),
    "cholesky, lower and upper": (lambda a: torch.linalg.cholesky(a @ a.mT + 3 * torch.eye(3, dtype=a.dtype)).sum(0)
                                  + torch.linalg.cholesky(a @ a.mT + torch.eye(3, dtype=a.dtype), upper=True)[0],
                                  [_rand(3, 3)]),
    "eigh and eigvalsh": (lambda a: torch.linalg.eigh(a + a.mT)[1].abs().sum(0) + torch.linalg.eigvalsh(a @ a.mT, UPLO="U"),
                          [_rand(3, 3)]),
    "qr, square and tall": (lambda a, b: torch.linalg.qr(a)[0].sum(0) + torch.linalg.qr(a)[1][0]
                            + torch.linalg.qr(b)[0].sum(0)[:3] + torch.linalg.qr(b)[1].sum(1), [_rand(3, 3), _rand(5, 3, seed=1)]),
    "svd, square, wide and tall, and svdvals": (
        lambda a, b, c: (torch.linalg.svd(a)[0] * torch.linalg.svd(a)[2]).sum(0)  # a sign-invariant product
        + torch.linalg.svd(b, full_matrices=False)[1] + (lambda r: r[0] @ torch.diag(r[1]) @ r[2])(
            torch.linalg.svd(c, full_matrices=False))[:3, 0] + torch.linalg.svdvals(c),
        [_rand(3, 3), _rand(3, 5, seed=1), _rand(5, 3, seed=2)]),
    "cdist p=2 and p=1": (lambda a, b: torch.cdist(a, b) + torch.cdist(a, b, p=1), [_rand(3, 4), _rand(5, 4, seed=1)]),
    "inv, solve, det": (lambda m, v: torch.linalg.inv(m).sum(0) + torch.linalg.solve(m, v).sum(1) + torch.linalg.det(m),
                        [_rand(3, 3) + 3 * torch.eye(3, dtype=torch.float64), _rand(3, 2, seed=1)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_jacobian_matches_torch_autograd(name):
    f, xs = CASES[name]
    graph, why = tensor_graph(f, xs)
    assert graph is not None, why
    outs, jac = tensor.jacobian(graph, xs)
    want = _torch_jacobian(f, xs)
    assert jac.shape == want.shape
    np.testing.assert_allclose(jac, want, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(want).max()))


def test_jacobian_goes_through_tangents_in_chunks(monkeypatch):
    f, xs = CASES["conv2d with bias"]
    graph, _ = tensor_graph(f, xs)
    _, whole = tensor.jacobian(graph, xs)
    monkeypatch.setattr(tensor, "CHUNK_ELEMENTS", 1000)
    _, chunked = tensor.jacobian(graph, xs)
    np.testing.assert_array_equal(whole, chunked)


def test_cotangent_products_never_hold_the_whole_jacobian(monkeypatch):
    f, xs = CASES["conv2d with bias"]
    graph, _ = tensor_graph(f, xs)
    _, whole = tensor.jacobian(graph, xs)
    cots = np.random.default_rng(0).uniform(-1, 1, (3, whole.shape[0]))
    monkeypatch.setattr(tensor, "CHUNK_ELEMENTS", 1000)  # several blocks of unit tangents
    sym, scale = tensor.cotangent_products(graph, xs, cots)
    np.testing.assert_allclose(sym, cots @ whole, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(scale, np.abs(cots) @ np.abs(whole), rtol=1e-13)
    with pytest.raises(ValueError, match="cotangents"):
        tensor.cotangent_products(graph, xs, cots[:, :-1])


def test_an_uncovered_op_is_named():
    graph, why = tensor_graph(lambda a: torch.special.bessel_j0(a), [_rand(3)])
    assert graph is None and "bessel_j0" in why


def test_an_inplace_graph_is_functionalized_when_traced_again():
    # LSTM's first graph holds an in-place copy_; tracing the graph again through the decompositions
    # functionalizes it (it was "not covered" when the function itself was traced again)
    lstm = torch.nn.LSTM(3, 4).double()
    x = _rand(2, 1, 3)
    graph, why = tensor_graph(lambda a: lstm(a)[0], [x])
    assert graph is not None, why
    _, jac = tensor.jacobian(graph, [x])
    np.testing.assert_allclose(jac, _torch_jacobian(lambda a: lstm(a)[0], [x]), atol=1e-13)


def test_rules_are_derived_once_per_signature_and_bounded():
    f = CASES["softplus beta"][0]
    x = _rand(3, 5)
    graph, _ = tensor_graph(f, [x])
    tensor.jacobian(graph, [x])
    before = tensor._rule.cache_info()
    graph2, _ = tensor_graph(lambda t: F.softplus(t, beta=3.0), [x])  # another beta: the same rule
    tensor.jacobian(graph2, [x])
    after = tensor._rule.cache_info()
    assert after.misses == before.misses and after.hits > before.hits
    assert after.maxsize == tensor.RULE_CACHE


UNARY = [torch.tanh, torch.sigmoid, torch.sin, torch.exp, F.softplus, F.gelu, F.silu, torch.atan, torch.erf,
         lambda t: t.abs() + 1.0, F.elu, lambda t: F.leaky_relu(t, 0.2), torch.cos, torch.expm1, torch.relu]


def composition(chain, c: float):
    """``x @ w`` through the activations ``UNARY[k]`` of ``chain``, each ``c * a(h) + h``, summed over a row:
    the random functions of the composition property tests (here and in test_engines_tensor_referee.py)."""

    def f(x, w):
        h = x @ w
        for k in chain:
            h = c * UNARY[k](h) + h
        return h.sum(-1) / c

    return f


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, len(UNARY) - 1), min_size=1, max_size=4), st.integers(0, 2**16),
       st.floats(0.25, 4.0))
def test_compositions_match_torch_autograd(chain, seed, c):
    f = composition(chain, c)
    xs = [_rand(3, 4, seed=seed) * 0.5, _rand(4, 2, seed=seed + 1) * 0.5]
    graph, why = tensor_graph(f, xs)
    assert graph is not None, why
    _, jac = tensor.jacobian(graph, xs)
    want = _torch_jacobian(f, xs)
    np.testing.assert_allclose(jac, want, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(want).max()))


# ---------------------------------------------------------------- the drop-in's tensor-level leg


def _tanh_function(error: float):
    """tanh with its backward off by ``error`` relative."""

    class Tanh(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.tanh(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * (1 - y * y) * (1 + error)

    return Tanh


_Tanh, _Wrong6, _Wrong3 = _tanh_function(0.0), _tanh_function(1e-6), _tanh_function(1e-3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_correct_backward_at_real_size_passes_at_tensor_level(dtype, monkeypatch):
    from gradcheck_lab import torch_check

    calls = []
    monkeypatch.setattr(torch_check, "_traced_check", lambda *a, **k: calls.append("per-element") or True)
    monkeypatch.setattr(torch_check, "_fallback", lambda *a, **k: calls.append("fallback") or True)
    x = _rand(16, 64).to(dtype).requires_grad_()
    w = (_rand(64, 32, seed=1) / 8).to(dtype).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(lambda a, b: _Tanh.apply(a @ b) * a[:, :32], (x, w))
    assert calls == []  # decided by the tensor-level leg alone


@pytest.mark.parametrize("dtype, wrong", [(torch.float64, _Wrong6), (torch.float32, _Wrong3)])
@pytest.mark.parametrize("fast_mode", [False, True])
def test_a_wrong_backward_at_real_size_is_caught(dtype, wrong, fast_mode):
    # fast_mode: the given inputs' 1024 components are checked by projections, as the random points'
    from gradcheck_lab.errors import GradientMismatch

    x = _rand(16, 64).to(dtype).requires_grad_()
    with pytest.raises(GradientMismatch), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradcheck(lambda a: wrong.apply(a * 0.5).sum(0), (x,), points=1, fast_mode=fast_mode)


def test_fast_mode_projects_the_given_inputs_of_a_wide_function(monkeypatch):
    from gradcheck_lab import tensor_check

    seen = []
    real = tensor.cotangent_products
    monkeypatch.setattr(tensor, "cotangent_products", lambda *a: seen.append(1) or real(*a))
    x = _rand(16, 64).requires_grad_()
    assert gradcheck(lambda a: _Tanh.apply(a * 0.5).sum(0), (x,), fast_mode=True)
    assert seen == []  # 1024 components: projections only
    assert gradcheck(lambda a: _Tanh.apply(a * 0.5).sum(0), (x[:, :8].detach().requires_grad_(),), fast_mode=True)
    assert seen  # 128 components: every one, at the given inputs and at the random points
    assert tensor_check.FULL_JACOBIAN >= 128


def test_ops_outside_the_per_element_table_keep_a_symbolic_leg():
    x = _rand(4, 5).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "symbolic and referee legs missing" warning
        assert gradcheck(lambda t: torch.floor(t * 3) * t + torch.remainder(t, 0.7) + torch.log2(t.abs() + 1), (x,))


def _spread(x):
    return (x * x).mean(-1) - x.mean(-1) ** 2  # a variance by cancellation: terms of 3e5, gradients of 1e-3


def test_the_absolute_chain_bounds_every_component_and_sees_cancellation():
    # Note [Absolute chain]: |c| |J_n| ... |J_1| >= |c^T J|, and far above it where the chain cancels
    x = 1000 + _rand(3, 6)
    graph, why = tensor_graph(_spread, [x])
    assert graph is not None, why
    cots = np.eye(3)
    sym, scale = tensor.cotangent_products(graph, [x], cots)
    chain = tensor.absolute_products(graph, [x], cots)
    assert (chain >= np.abs(sym) * (1 - 1e-12)).all() and (chain >= scale * (1 - 1e-12)).all()
    assert (chain.max(axis=1) > 1e3 * scale.max(axis=1)).all()  # terms of 667, gradients below 1


def _spread_function(error: float):
    """``_spread`` with the stable backward ``2 (x - mean) / n``: other rounding than the cancelling forward's."""

    class Spread(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return _spread(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g[:, None] * 2 * (x - x.mean(-1, keepdim=True)) / x.shape[-1] * (1 + error)

    return Spread.apply


def test_a_correct_backward_of_a_cancelling_chain_passes_at_tensor_level(monkeypatch):
    # kornia's SSIM of an image with itself went down the per-element path: its gradients cancel to 1e-11
    from gradcheck_lab import torch_check

    calls = []
    monkeypatch.setattr(torch_check, "_traced_check", lambda *a, **k: calls.append("per-element") or True)
    monkeypatch.setattr(torch_check, "_fallback", lambda *a, **k: calls.append("fallback") or True)
    x = (1000 + _rand(3, 6)).requires_grad_()
    assert gradcheck(_spread_function(0.0), (x,))
    assert calls == []


def test_a_wrong_backward_of_a_cancelling_chain_is_still_caught():
    from gradcheck_lab.errors import GradientMismatch

    x = (1000 + _rand(3, 6)).requires_grad_()
    with pytest.raises(GradientMismatch), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradcheck(_spread_function(1e-6), (x,))


@pytest.mark.parametrize("name", ["cholesky", "eigvalsh upper"])
def test_factorizations_differentiate_the_triangle_they_read(name):
    # torch's own derivatives assume a symmetric input; the function reads one triangle, and so do our rules
    f = {"cholesky": lambda a: torch.linalg.cholesky(a + 4 * torch.eye(3, dtype=a.dtype)),
         "eigvalsh upper": lambda a: torch.linalg.eigvalsh(a + 4 * torch.eye(3, dtype=a.dtype), UPLO="U")}[name]
    a = _rand(3, 3)
    graph, why = tensor_graph(f, [a])
    assert graph is not None, why
    _, jac = tensor.jacobian(graph, [a])
    h = 1e-6
    numeric = np.stack([((f(a + h * e) - f(a - h * e)) / (2 * h)).reshape(-1).numpy()
                        for e in torch.eye(9, dtype=torch.float64).reshape(9, 3, 3)], axis=1)
    np.testing.assert_allclose(jac, numeric, atol=1e-7)


def test_a_disagreement_on_a_projection_is_localized_to_its_component():
    # Note [Localized projections] in tensor_check.py: halving the +-1 direction finds the component of the
    # user's backward that is off, among 300, in log2(300) passes
    from gradcheck_lab import tensor_check

    x = _rand(20, 15)

    def f(t):
        return torch.tanh(t) * 2.0

    graph, _ = tensor_graph(f, [x], None)
    n = x.numel()
    cot = np.random.default_rng(0).uniform(-1.0, 1.0, (1, n))
    y = torch.tanh(x)
    raw = (torch.as_tensor(cot[0]).reshape(20, 15) * 2.0 * (1 - y * y)).reshape(1, -1).numpy().copy()
    raw[0, 137] *= 1 + 1e-7  # the user's backward, off at one component
    dirs = np.random.default_rng(1).choice([-1.0, 1.0], size=(n, 2))
    sym = cot @ tensor.directional(graph, [x], dirs)
    found = tensor_check.Disagreement(0, [x], cot, dirs, raw @ dirs, sym, np.abs(raw) @ np.abs(dirs),
                                      np.zeros_like(sym), raw)
    k, cand, exact, tol = tensor_check.localize(graph, found, 0, 1, float(np.finfo(np.float64).eps))
    assert k == 137 and cand == raw[0, 137] and abs(exact - raw[0, 137] / (1 + 1e-7)) < 1e-15 and tol < 1e-12
    raw[0, 137] /= 1 + 1e-7  # a correct backward: nothing to localize
    assert tensor_check.localize(graph, found, 0, 1, float(np.finfo(np.float64).eps)) is None
