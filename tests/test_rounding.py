"""Monte Carlo arithmetic (rounding.py): perturbations reach every operation; under/overflow taint."""

import numpy as np
import torch

from gradcheck_lab.rounding import SAMPLES, MCAArray, context, estimate, perturbed_numpy, plain, spread, torch_mca


def _runs(fn, n=3):
    out = []
    for seed in range(n):
        ctx = context(1, seed, "float64")
        (x,) = perturbed_numpy([np.array([0.5])], ctx.rng, "float64", ctx)
        out.append(plain(fn(x)))
    return out


def test_every_ufunc_and_numpy_function_result_is_perturbed():
    # np.where and np.sum go through __array_function__: what follows them stays perturbed.
    runs = _runs(lambda x: np.sum(np.where(x > 0, 1 - x, x) * 3.0, keepdims=True))
    assert len({float(r[0]) for r in runs}) == 3
    assert all(abs(r[0] - 1.5) < 1e-13 for r in runs)


def test_results_stay_mca_arrays_and_exact_operations_are_not_perturbed():
    ctx = context(2, 0, "float64")
    (x,) = perturbed_numpy([np.array([2.0, -3.0])], ctx.rng, "float64", ctx)
    assert isinstance(x * 2, MCAArray)
    assert np.array_equal(plain(np.abs(x)), [2.0, 3.0])  # absolute value never rounds
    assert np.array_equal(plain(np.maximum(x, 0.0)), [2.0, 0.0])


def test_underflow_and_overflow_taint_only_their_point():
    ctx = context(3, 0, "float64")
    (z,) = perturbed_numpy([np.array([-1300.0, 1.0, 800.0])], ctx.rng, "float64", ctx)
    np.exp(z)  # exp(-1300) underflows to 0, exp(800) overflows to inf
    assert ctx.tainted.tolist() == [True, False, True]


def test_an_exact_zero_factor_is_no_underflow():
    ctx = context(2, 0, "float64")
    (z,) = perturbed_numpy([np.array([0.0, 1.0])], ctx.rng, "float64", ctx)
    _ = z * 1e-5
    assert not ctx.tainted.any()


def test_torch_mode_perturbs_the_backward_of_a_saturated_sigmoid():
    z = torch.tensor([9.0, 0.5], dtype=torch.float64, requires_grad=True)
    grads = []
    for seed in range(3):
        z.grad = None
        with torch_mca("float64", seed, 2) as mode:
            torch.sigmoid(z).sum().backward()
        grads.append(z.grad.clone())
        assert not mode.tainted.any()
    rel = [(g[0] / grads[0][0] - 1).abs().item() for g in grads[1:]]
    # s = 1 - 1.2e-4 at z = 9: perturbing s by ~2e-15 moves s (1 - s) by ~1e-11 relative
    assert max(rel) > 1e-13


def test_spread_and_estimate():
    assert spread([np.array([1.0]), np.array([1.5]), np.array([0.5])]).tolist() == [1.0]
    assert spread([np.array([1.0]), np.array([np.nan])]).tolist() == [np.inf]
    # base: runs that all move the same way still count
    runs = iter([np.array([2.0])] * SAMPLES)
    assert estimate(lambda seed: next(runs), base=np.array([1.0])).tolist() == [1.0 / 8]
