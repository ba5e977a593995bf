"""Engines against each other and the referee (differential oracle)."""

import numpy as np
import pytest

from gradcheck_lab.catalog import get_model, list_models
from gradcheck_lab.engines import ENGINE_NAMES, engine, finite_diff, referee
from gradcheck_lab.engines.symbolic import derivatives, hessian
from gradcheck_lab.model import Model

MODELS = {name: get_model(name) for name in list_models()}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("eng", ENGINE_NAMES)
def test_engine_matches_referee(name, eng):
    m = MODELS[name]
    b = m.sample(40, seed=3)
    exact = referee.gradients(m, b)
    got = engine(eng)(m, b).values
    scale = np.max(np.abs(exact), axis=1, keepdims=True) + 1e-300
    rel = np.abs(got - exact) / scale
    assert rel.max() < (1e-8 if eng == "finite_differences" else 1e-12)


def test_lesson_gradient_at_x2():
    m = MODELS["quadratic"]
    b = m.batch([{"x": 2, "y": 4}])
    for eng in ENGINE_NAMES:
        assert np.allclose(engine(eng)(m, b).values, [[24, 12, 6]], rtol=1e-12, atol=0)
    assert referee.gradients(m, b).tolist() == [[24.0, 12.0, 6.0]]


def test_autograd_float32_is_float32():
    m = MODELS["quadratic"]
    b = m.batch([{"x": 0.1, "y": 0.3}])
    g32 = engine("autograd")(m, b, dtype="float32")
    g64 = engine("autograd")(m, b, dtype="float64")
    assert g32.dtype == "float32"
    assert 0 < np.abs(g32.values - g64.values).max() < 1e-5


def test_symbolic_derivative_is_sympy_closed_form():
    import sympy as sp

    m = MODELS["quadratic"]
    w1, w2, b = m.symbols()[0]
    x, y = m.symbols()[1]
    assert sp.simplify(derivatives(m)[0] - 2 * x**2 * (w1 * x**2 + w2 * x + b - y)) == 0
    H = hessian(m)
    assert sp.simplify(H[0, 0] - 2 * x**4) == 0


def test_fd_error_estimate_covers_error():
    m = MODELS["mlp"]
    b = m.sample(100, seed=5)
    fd = engine("finite_differences")(m, b)
    exact = referee.gradients(m, b)
    assert np.all(np.abs(fd.values - exact) <= 8 * fd.error)


def relu_model():
    return Model.from_function(lambda ops, p, v: ops.relu(p.w * v.x + p.b), params={"w": 1.0, "b": 0.0})


def test_fd_detects_relu_kink_at_zero():
    m = relu_model()
    b = m.batch([{"x": 1.0, "y": -1.0}], params={"w": 0.0, "b": 0.0})  # w*x + b == 0
    fd = engine("finite_differences")(m, b)
    assert fd.kink.all()
    # d/db (relu(z) + 1)**2 at z = 0: left 0, right 2
    assert -0.05 < fd.lower[0, 1] <= 0 and 2 <= fd.upper[0, 1] < 2.05


def test_fd_retries_beside_a_kink_and_gives_up_when_too_close():
    m = relu_model()
    # w*x + b = 0.001: the derivative exists (relu active) but the first stencil crosses 0;
    # the retry's smaller steps fit: d/db (relu(z) + 1)**2 = 2 * 1.001.
    b = m.batch([{"x": 1.0, "y": -1.0}], params={"w": 0.0, "b": 0.001})
    fd = engine("finite_differences")(m, b)
    assert not fd.kink.any()
    assert fd.values[0, 1] == pytest.approx(2.002, rel=1e-9)
    # w*x + b = 1e-7: even the retry's stencil crosses 0: no estimate at all.
    b = m.batch([{"x": 1.0, "y": -1.0}], params={"w": 0.0, "b": 1e-7})
    fd = engine("finite_differences")(m, b)
    assert not fd.kink.any() and np.isinf(fd.error).all()


def test_fd_no_kink_on_smooth_points():
    m = MODELS["mlp"]
    fd = engine("finite_differences")(m, m.sample(200, seed=1))
    assert not fd.kink.any()


def test_richardson_order():
    h = 0.2 * 2.0 ** -np.arange(4)
    d = (np.sin(1 + h) - np.sin(1 - h)) / (2 * h)
    levels = finite_diff.richardson(d)
    errs = [abs(level - np.cos(1)) for level in levels]
    assert errs[-1] < 1e-14 < errs[0]


def test_referee_undefined_nan_and_infinite_inf():
    m = Model.from_function(lambda ops, p, v: ops.log(p.w * v.x), params={"w": 1.0})
    assert np.isnan(referee.gradients(m, m.batch([{"x": -1.0, "y": 0.0}]))).all()  # log of a negative
    assert np.isnan(referee.gradients(m, m.batch([{"x": 0.0, "y": 0.0}]))).all()  # log(0): a pole, undefined
    e = Model.from_function(lambda ops, p, v: ops.exp(p.w * v.x), params={"w": 1.0})
    assert np.isinf(referee.gradients(e, e.batch([{"x": 1000.0, "y": 0.0}]))).all()  # beyond float64
