"""The symbolic engine's reverse-mode derivation against ``sympy.diff``, its program and its caches."""

import random

import numpy as np
import pytest
import sympy as sp

from gradcheck_lab import Model, get_model
from gradcheck_lab.catalog import ACTIVATIONS
from gradcheck_lab.engines import symbolic
from gradcheck_lab.teaching import derive

CATALOG = [
    ("linear", {}),
    ("affine", {}),
    ("quadratic", {}),
    ("logistic", {}),
    ("softmax", {}),
    ("softmax", {"d": 3, "K": 4}),
    ("mlp", {"H": 8}),
    *[("mlp", {"H": 3, "activation": a}) for a in ACTIVATIONS],
]

EXPRESSIONS = [
    ("w*x**2 + b", "w,b", "squared"),
    ("sigmoid(w*x + b)", "w,b", "bce"),
    ("log(1 + exp(w*x))*sqrt(b**2 + 1) - cos(w*b)", "w,b", "absolute"),
    ("abs(w*x - b) + softplus(w)*tanh(b*x)/(1 + w**2)", "w,b", "squared"),
    ("(w - y)**2 * exp(-b*x) + relu(w + b)", "w,b", None),
    ("abs(w)**b + (w*x)**2.5 - sqrt(abs(b*x)) + x", "w,b", "squared"),
    ("exp(w)**(b*x) / (1 + sin(w)**2)", "w,b", "squared"),
]


def _points(symbols, n=3, seed=1):
    """Random exact points; away from 0 so that no relu/abs sits at its kink."""
    rng = random.Random(seed)
    for _ in range(n):
        yield {s: sp.Float(rng.choice((-1, 1)) * rng.uniform(0.1, 2.0), 30) for s in symbols}


def _assert_equal_to_diff(m: Model):
    loss = m.loss_expr()
    th, da = m.symbols()
    got = symbolic.derivatives(m)
    assert len(got) == len(th)
    for point in _points([*th, *da]):
        for t, g in zip(th, got):
            a = complex(g.xreplace(point).evalf(30))
            b = complex(sp.diff(loss, t).xreplace(point).evalf(30))
            assert abs(a - b) <= 1e-12 * max(abs(b), 1e-300), (t, g)


@pytest.mark.parametrize("name, options", CATALOG)
def test_catalog_derivatives_equal_sympy_diff(name, options):
    _assert_equal_to_diff(get_model(name, **options))


@pytest.mark.parametrize("expr, params, loss", EXPRESSIONS)
def test_expression_derivatives_equal_sympy_diff(expr, params, loss):
    _assert_equal_to_diff(Model.from_expr(expr, params=params, loss=loss))


@pytest.mark.parametrize("name", ["linear", "affine", "quadratic"])
def test_lesson_closed_forms_are_sympy_diffs_own(name):
    m = get_model(name)
    loss, (th, _) = m.loss_expr(), m.symbols()
    assert symbolic.derivatives(m) == [sp.diff(loss, t) for t in th]


def test_mlp_closed_form_reads_like_the_chain_rule():
    m = get_model("mlp", H=2)
    (W1_0, _, b1_0, _, W2_0, _, _), (x, _) = m.symbols()
    residual = m.loss_expr().base  # loss = residual**2
    t0 = sp.tanh(W1_0 * x + b1_0)
    assert symbolic.derivatives(m)[0] == 2 * W2_0 * x * (1 - t0**2) * residual


@pytest.mark.parametrize("name, options", [("mlp", {"H": 5, "activation": "relu"}), ("softmax", {}), ("logistic", {})])
def test_program_evaluated_in_order_gives_the_derivatives(name, options):
    m = get_model(name, **options)
    assignments, outputs = symbolic.derivative_program(m)
    th, da = m.symbols()
    assert len(outputs) == len(th)
    for point in _points([*th, *da], n=2, seed=7):
        env = dict(point)
        for s, e in assignments:
            assert isinstance(s, sp.Symbol) and s not in env
            env[s] = e.xreplace(env).evalf(30)
        for out, closed in zip(outputs, symbolic.derivatives(m)):
            a, b = complex(out.xreplace(env).evalf(30)), complex(closed.xreplace(point).evalf(30))
            assert abs(a - b) <= 1e-12 * max(abs(b), 1e-300)


def test_parameters_the_loss_ignores_have_zero_derivative():
    m = Model.from_function(lambda ops, p, v: 2 * v.x, params={"w": 1.0})
    assert symbolic.derivatives(m) == [0]
    assert symbolic.gradients(m, m.sample(4)).values.tolist() == [[0.0]] * 4
    const = Model.from_function(lambda ops, p, v: 1, params={"w": 1.0}, loss=lambda ops, yhat, y: 3)
    assert symbolic.derivatives(const) == [0]


def test_program_grows_linearly_with_the_width():
    sizes = {H: len(symbolic.derivative_program(get_model("mlp", H=H))[0]) for H in (4, 16, 32)}
    # One tanh and one adjoint per unit, plus the residual's adjoint.
    assert all(n <= 2 * H + 2 for H, n in sizes.items()), sizes


def test_compiled_numpy_function_reads_the_program():
    m = get_model("mlp", H=6, activation="sigmoid")
    b = m.sample(50, seed=2)
    got = symbolic.gradients(m, b).values
    th, da = m.symbols()
    fn = sp.lambdify([*th, *da], symbolic.derivatives(m), modules="numpy")
    want = symbolic.evaluate(fn, m, b)
    assert np.allclose(got, want, rtol=1e-12, atol=1e-300)


def test_catalog_model_is_derived_once(monkeypatch):
    made = []
    real = symbolic._Derivation

    class Counting(real):
        def __init__(self, *a):
            made.append(1)
            super().__init__(*a)

    monkeypatch.setattr(symbolic, "_Derivation", Counting)
    monkeypatch.setattr(symbolic, "_DERIVATIONS", type(symbolic._DERIVATIONS)())
    m1, m2 = get_model("mlp", H=7, activation="sin"), get_model("mlp", H=7, activation="sin")
    assert m1 is not m2
    assert symbolic.derivative_program(m1) is symbolic.derivative_program(m2)
    assert symbolic.compiled(m1) is symbolic.compiled(m2)
    assert symbolic.derivatives(m1) is symbolic.derivatives(m2)
    assert len(made) <= 1
    assert symbolic.derivative_program(get_model("mlp", H=7)) is not symbolic.derivative_program(m1)


def test_expression_model_is_derived_once(monkeypatch):
    made = []
    real = symbolic._Derivation

    class Counting(real):
        def __init__(self, *a):
            made.append(1)
            super().__init__(*a)

    monkeypatch.setattr(symbolic, "_Derivation", Counting)
    monkeypatch.setattr(symbolic, "_DERIVATIONS", type(symbolic._DERIVATIONS)())
    a = Model.from_expr("tanh(w*x) + b", params="w,b")
    b = Model.from_expr("tanh(w*x) + b", params="w,b")
    assert symbolic.derivative_program(a) is symbolic.derivative_program(b)
    assert len(made) == 1
    c = Model.from_expr("tanh(w*x) + b", params="b,w")  # other parameter order: another derivation
    assert symbolic.derivative_program(c) is not symbolic.derivative_program(a)
    assert len(made) == 2


def test_shared_form_substitutes_back_to_the_derivatives():
    m = get_model("mlp", H=12)
    shared, partials = symbolic.shared_form(m)
    assert [str(s) for s, _ in shared] == ["s1"]
    assert shared[0][1] == m.loss_expr().base  # the residual
    d = derive(m)
    assert d.shared == shared
    for (_, shown), closed in zip(d.partials, symbolic.derivatives(m)):
        assert len(str(shown)) < 60
        assert sp.expand(d.closed(shown) - closed) == 0


def test_small_models_have_no_shared_names():
    for name, options in [("quadratic", {}), ("logistic", {}), ("mlp", {"H": 2}), ("softmax", {})]:
        assert symbolic.shared_form(get_model(name, **options))[0] == []


def test_derive_shows_the_shared_residual_once(cli):
    code, out, err = cli("derive", "mlp", "--hidden", 6)
    assert code == 0, err
    lines = out.splitlines()
    s1 = [ln for ln in lines if ln.startswith("s1 = ")]
    assert len(s1) == 1 and s1[0].endswith("+ b2 - y")
    assert "dloss/dW1[0] = 2*W2_0*s1*x*(1 - tanh(W1_0*x + b1_0)**2)" in lines
    assert "dloss/db2 = 2*s1" in lines
    assert sum(ln.startswith("dloss/d") for ln in lines) == 19


def test_simplified_leaves_large_derivatives_as_derived():
    m = get_model("mlp", H=80)
    big = symbolic.simplified(m, [0])[0]
    assert big is symbolic.derivatives(m)[0]
