"""The backend-neutral namespace: every function on every backend, against known formulas."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch

from gradcheck_lab import Model, explain
from gradcheck_lab.engines import engine, referee
from gradcheck_lab.ops import FUNCTIONS, HUBER_DELTA, LAMBDIFY_NUMPY, backend, huber_float, numpy_erf
from gradcheck_lab.teaching.trace import Node

#: name -> (value, derivative) written from the textbook, in mpmath; and points in the domain.
KNOWN = {
    "cosh": (mpmath.cosh, mpmath.sinh),
    "sinh": (mpmath.sinh, mpmath.cosh),
    "asinh": (mpmath.asinh, lambda z: 1 / mpmath.sqrt(1 + z**2)),
    "atan": (mpmath.atan, lambda z: 1 / (1 + z**2)),
    "log1p": (lambda z: mpmath.log(1 + z), lambda z: 1 / (1 + z)),
    "expm1": (lambda z: mpmath.exp(z) - 1, mpmath.exp),
    "erf": (mpmath.erf, lambda z: 2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-(z**2))),
}
POINTS = [-2.5, -0.7, -1e-9, 1e-12, 0.3, 1.0, 4.0]
NEW = [*KNOWN, "huber"]


def _points(name: str) -> list[float]:
    return [p for p in POINTS if name != "log1p" or p > -1]


def _exact(fn, z: float) -> float:
    with mpmath.workdps(40):
        return float(fn(mpmath.mpf(z)))


def test_every_function_is_on_every_backend():
    for name in ("sympy", "torch", "numpy", "float", "trace"):
        assert set(FUNCTIONS) <= set(vars(backend(name))), name
    assert set(NEW) <= set(FUNCTIONS)


@pytest.mark.parametrize("name", list(KNOWN))
def test_values_on_every_backend_match_the_textbook(name):
    value, _ = KNOWN[name]
    points = _points(name)
    z = np.array(points)
    exact = np.array([_exact(value, p) for p in points])
    got = {
        "numpy": getattr(backend("numpy"), name)(z),
        "float": np.array([getattr(backend("float"), name)(p) for p in points]),
        "torch": getattr(backend("torch"), name)(torch.tensor(z, dtype=torch.float64)).numpy(),
        "trace": np.array([getattr(backend("trace"), name)(Node(p)).value for p in points]),
    }
    for b, vals in got.items():
        # log1p/expm1 near 0 are where log(1 + z) would lose every digit: 4 ulp, not 1e-7.
        np.testing.assert_allclose(vals, exact, rtol=4 * np.finfo(float).eps, atol=0, err_msg=b)


@pytest.mark.parametrize("name", list(KNOWN))
def test_derivatives_match_the_textbook(name):
    _, derivative = KNOWN[name]
    points = _points(name)
    exact = np.array([_exact(derivative, p) for p in points])
    z = sp.Symbol("z", real=True)
    d = sp.diff(getattr(backend("sympy"), name)(z), z)
    sym = np.array([float(d.subs(z, sp.Float(p, 30))) for p in points])
    t = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    getattr(backend("torch"), name)(t).sum().backward()
    local = np.array([getattr(backend("trace"), name)(Node(p)).local[0] for p in points])
    for b, vals in {"sympy": sym, "torch": t.grad.numpy(), "trace": local}.items():
        np.testing.assert_allclose(vals, exact, rtol=1e-14, atol=0, err_msg=b)


def test_asinh_slope_does_not_overflow_in_the_tracer():
    assert backend("trace").asinh(Node(1e200)).local[0] == pytest.approx(1e-200, rel=1e-15)


def test_log1p_outside_its_domain_is_an_invalid_value():
    from gradcheck_lab.errors import InvalidValueError

    with pytest.raises(InvalidValueError, match="log1p"):
        backend("trace").log1p(Node(-1.0))


# ---------------------------------------------------------------- erf in NumPy
def test_numpy_erf_is_math_erf_elementwise_keeping_shape_and_dtype():
    z = np.linspace(-4, 4, 12).reshape(3, 4)
    np.testing.assert_array_equal(numpy_erf(z), np.vectorize(math.erf)(z))
    assert numpy_erf(z.astype(np.float32)).dtype == np.float32
    assert numpy_erf(0.5) == math.erf(0.5)
    assert numpy_erf(np.array(0.5)).shape == ()
    assert LAMBDIFY_NUMPY["erf"] is numpy_erf


def test_numpy_erf_is_accurate_to_an_ulp():
    z = np.random.default_rng(0).uniform(-4, 4, 300)
    exact = np.array([_exact(mpmath.erf, p) for p in z])
    rel = np.abs(numpy_erf(z) - exact) / np.abs(exact)
    assert rel.max() <= np.finfo(float).eps


# ---------------------------------------------------------------- huber
def _huber_exact(z: float, delta: float) -> float:
    return 0.5 * z * z if abs(z) <= delta else delta * (abs(z) - 0.5 * delta)


@pytest.mark.parametrize("delta", [HUBER_DELTA, 0.5, 2.0])
def test_huber_pieces_on_every_backend(delta):
    zs = [-3.0, -delta, -0.4, 0.0, 0.25, delta, 1.7, 5.0]
    exact = np.array([_huber_exact(z, delta) for z in zs])
    z = sp.Symbol("z", real=True)
    expr = backend("sympy").huber(z, delta)
    assert isinstance(expr, sp.Piecewise)
    got = {
        "sympy": np.array([float(expr.subs(z, v)) for v in zs]),
        "numpy": backend("numpy").huber(np.array(zs), delta),
        "float": np.array([huber_float(v, delta) for v in zs]),
        "torch": backend("torch").huber(torch.tensor(zs, dtype=torch.float64), delta).numpy(),
        "trace": np.array([backend("trace").huber(Node(v), delta).value for v in zs]),
    }
    for b, vals in got.items():
        np.testing.assert_allclose(vals, exact, rtol=1e-15, atol=0, err_msg=b)


def test_huber_slope_is_continuous_and_its_curvature_jumps_at_delta():
    z = sp.Symbol("z", real=True)
    h = backend("sympy").huber(z, 2)
    slope, curve = sp.diff(h, z), sp.diff(h, z, 2)
    for side in (-1, 1):
        below, above = side * (2 - sp.Rational(1, 10**9)), side * (2 + sp.Rational(1, 10**9))
        assert abs(float(slope.subs(z, below) - slope.subs(z, above))) < 1e-8
        assert (float(curve.subs(z, below)), float(curve.subs(z, above))) == (1.0, 0.0)
    # torch and the tracer: clip(z, -delta, delta).
    t = torch.tensor([-3.0, -1.0, 0.5, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    backend("torch").huber(t, 2.0).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [-2.0, -1.0, 0.5, 2.0, 2.0])
    assert [backend("trace").huber(Node(v), 2.0).local[0] for v in (-3.0, 0.5, 3.0)] == [-2.0, 0.5, 2.0]


def test_numpy_huber_is_clean_near_delta():
    # m*(|z| - m/2) against the exact piecewise value in 40 digits, across the bend.
    z = 1.0 + np.array([-1e-12, -1e-15, 0.0, 1e-15, 1e-12, 1e8])
    with mpmath.workdps(40):
        exact = []
        for v in z:
            a = abs(mpmath.mpf(v))
            exact.append(float(a * a / 2 if a <= 1 else a - mpmath.mpf(1) / 2))
    np.testing.assert_allclose(backend("numpy").huber(z), exact, rtol=np.finfo(float).eps, atol=0)


def test_finite_differences_see_no_kink_at_a_huber_bend_and_stay_accurate():
    m = Model.from_expr("huber(w*x - b) + huber(w, 0.5)", params="w,b", loss=None)
    # w*x - b exactly at the bend (1.0), just beside it, and w at its own bend (0.5).
    batch = m.batch([{"x": 1.0, "y": 0.0}], {"w": 0.5, "b": -0.5})
    more = m.batch([{"x": 1.0, "y": 0.0}], {"w": 0.5, "b": -0.5 + 1e-5})
    for b in (batch, more):
        fd = engine("finite_differences")(m, b)
        assert not fd.kink.any()
        exact = referee.gradients(m, b)
        ok = np.isinf(fd.error) | (np.abs(fd.values - exact) <= 16 * fd.error + 1e-12)
        assert ok.all(), (fd, exact)
    fd = engine("finite_differences")(m, batch)
    assert np.all(np.isfinite(fd.error))  # at the bend: one-sided derivatives, which agree


def test_a_huber_loss_agrees_everywhere_including_at_its_bends():
    from gradcheck_lab import verify

    m = Model.from_expr("w*x + b", params="w,b", loss="huber")
    report = verify(m, points=[{"x": 1.0, "y": 0.0}, {"x": 2.0, "y": 0.0}], params={"w": 0.5, "b": 0.5}, random=400)
    assert report.ok, report.message
    assert "kink" not in report.message


# ---------------------------------------------------------------- engines and the tracer on each function
@pytest.mark.parametrize(
    "text",
    ["cosh(w*x) + b", "sinh(w*x) + b", "asinh(w*x) + b", "atan(w*x) + b", "log1p(w**2*x**2) + b",
     "expm1(w*x) + b", "erf(w*x) + b", "exp(erf(w*x)) + b", "huber(w*x) + b", "huber(w*x + b, 0.5)"],
)  # fmt: skip
def test_engines_and_explain_agree_on_each_new_function(text):
    from gradcheck_lab import verify

    m = Model.from_expr(text, params={"w": 0.7, "b": 0.2}, domain=(-2.0, 2.0))
    report = verify(m, points=[{"x": 1.3, "y": 0.5}], random=200, seed=3)
    assert report.ok, report.message
    e = explain(m, {"x": 1.3, "y": 0.5})
    assert e.agree and not e.kinks
    assert any(text.split("(")[0] + "(" in r["op"] for r in e.trace.rows())


def test_graph_labels_show_the_new_functions_and_huber_delta():
    from gradcheck_lab import graph

    m = Model.from_expr("huber(w*x, 0.5) + erf(b) + expm1(huber(b))", params="w,b")
    src = graph(m, {"x": 1.0, "y": 0.0}).source
    for label in ("huber(n1, 0.5)", "erf(b)", "huber(b)", "expm1("):
        assert label in src, label


def test_sympy_huber_derivative_is_the_clip_without_sign():
    z = sp.Symbol("z", real=True)
    d = sp.diff(backend("sympy").huber(z, 2), z)
    assert not d.has(sp.sign) and not d.has(sp.Abs)
    assert [d.subs(z, v) for v in (-3, -1, 3)] == [-2, -1, 2]
