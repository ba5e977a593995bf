"""``derive``: closed forms as text, LaTeX and JSON; equal to the engine's derivatives."""

import json

import pytest
import sympy as sp

from gradcheck_lab import get_model
from gradcheck_lab.engines.symbolic import derivatives, hessian
from gradcheck_lab.teaching import derive


def test_derive_quadratic(cli):
    code, out, err = cli("derive", "quadratic")
    assert code == 0, err
    assert out.splitlines() == [
        "model: quadratic  (y_hat = w1*x**2 + w2*x + b)",
        "loss = (b + w1*x**2 + w2*x - y)**2",
        "dloss/dw1 = 2*x**2*(b + w1*x**2 + w2*x - y)",
        "dloss/dw2 = 2*x*(b + w1*x**2 + w2*x - y)",
        "dloss/db = 2*b + 2*w1*x**2 + 2*w2*x - 2*y",
    ]


def test_latex_and_hessian(cli):
    code, out, _ = cli("derive", "quadratic", "--latex", "--hessian")
    assert code == 0
    assert r"\frac{\partial L}{\partial w_{1}} = 2 x^{2} \left(b + w_{1} x^{2} + w_{2} x - y\right)" in out
    assert r"\frac{\partial^{2} L}{\partial w_{1} \partial w_{2}} = 2 x^{3}" in out
    assert r"\frac{\partial^{2} L}{\partial b^{2}} = 2" in out


def test_pretty_and_json(cli):
    code, out, _ = cli("derive", "affine", "--pretty")
    assert code == 0 and "dloss/dw =\n" in out
    code, out, _ = cli("derive", "affine", "--json", "--hessian")
    doc = json.loads(out)
    assert doc["partials"] == {"dloss/dw": "2*x*(b + w*x - y)", "dloss/db": "2*b + 2*w*x - 2*y"}
    assert doc["hessian"][0] == {"row": "w", "col": "w", "expr": "2*x**2"}
    assert doc["latex"]["loss"] == r"\left(b + w x - y\right)^{2}"


@pytest.mark.parametrize(
    "name, options", [("linear", {}), ("logistic", {}), ("mlp", {"H": 2}), ("softmax", {"d": 1, "K": 2})]
)
def test_closed_forms_equal_the_engines_derivatives(name, options):
    m = get_model(name, **options)
    d = derive(m, hessian=True)
    th, da = m.symbols()
    point = {s: sp.Rational(k + 2, 7) * (-1) ** k for k, s in enumerate([*th, *da])}
    for (_, shown), raw in zip(d.partials, derivatives(m)):
        assert abs(float((shown - raw).subs(point).evalf(30))) < 1e-25
    H = hessian(m)
    n = len(th)
    assert len(d.hessian) == n * (n + 1) // 2
    for r, c, e in d.hessian:
        i, j = m.param_labels.index(r), m.param_labels.index(c)
        assert abs(float((e - H[i, j]).subs(point).evalf(30))) < 1e-25


def test_mlp_symbols_are_listed(cli):
    code, out, _ = cli("derive", "mlp", "--hidden", 2)
    assert code == 0
    assert "symbols: W1_0 = W1[0]" in out and "dloss/dW2[1] = " in out


def test_user_expression(cli):
    code, out, err = cli("derive", "--expr", "w*x**2 + b", "--params", "w,b")
    assert code == 0, err
    assert "dloss/dw = 2*x**2*(b + w*x**2 - y)" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["derive"], "Expected a MODEL"),
        (["derive", "linaer"], "Did you mean linear"),
        (["derive", "quadratic", "--latex", "--json"], "not allowed with"),
        (["derive", "linear", "--hidden", "3"], "--hidden"),
    ],
)
def test_bad_input_exits_2(cli, argv, fragment):
    code, out, err = cli(*argv)
    assert code == 2 and out == "" and err.startswith("Error: ") and fragment in err
