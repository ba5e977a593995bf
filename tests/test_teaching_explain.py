"""``explain`` and the tracer: the node table, and traced gradients against the engines."""

import json

import numpy as np
import pytest
import torch

from gradcheck_lab import Model, get_model
from gradcheck_lab.engines import engine, referee
from gradcheck_lab.ops import FUNCTIONS, backend
from gradcheck_lab.teaching import explain
from gradcheck_lab.teaching.trace import Node, trace, trace_row


def rows_of(out):
    """The node table as {node: [cells]} (cells split on runs of 2+ spaces)."""
    import re

    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("node "))
    table = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        table[cells[0]] = cells[1:]
    return table


def test_exercise_1_affine_by_hand(cli):
    code, out, err = cli("explain", "affine", "--x", 1, "--y", 2, "--param", "w=1", "--param", "b=1")
    assert code == 0, err
    t = rows_of(out)
    assert list(t) == ["w", "b", "x", "y", "n1", "n2", "n3", "loss"]
    assert t["n1"] == ["w * x", "w, x", "1", "dn1/dw=1, dn1/dx=1", "0", "w:0, x:0"]
    assert t["n2"][:4] == ["n1 + b", "n1, b", "2", "dn2/dn1=1, dn2/db=1"]  # y_hat = 2
    assert t["n3"][:4] == ["n2 - y", "n2, y", "0", "dn3/dn2=1, dn3/dy=-1"]  # residual 0
    assert t["loss"] == ["n3 ** 2", "n3", "0", "dloss/dn3=0", "1", "n3:0"]
    assert "loss = 0.0" in out
    assert "check: the traced gradients agree" in out


def test_exercise_1_at_another_point(cli):
    code, out, _ = cli("explain", "affine", "--x", 2, "--y", 3, "--param", "w=0.5", "--param", "b=-1")
    assert code == 0
    t = rows_of(out)
    # y_hat = 0, residual -3, loss 9; dloss/dw = 2*(-3)*2 = -12, dloss/db = -6
    assert t["loss"] == ["n3 ** 2", "n3", "9", "dloss/dn3=-6", "1", "n3:-6"]
    assert t["w"] == ["parameter", "0.5", "-12"] and t["b"] == ["parameter", "-1", "-6"]


def test_exercise_2_quadratic(cli):
    code, out, err = cli("explain", "quadratic")
    assert code == 0, err
    t = rows_of(out)
    assert t["n1"] == ["x ** 2", "x", "1", "dn1/dx=2", "2", "x:4"]
    assert t["n2"][0] == "w1 * n1" and t["loss"][0] == "n6 ** 2"
    assert [t[p][2] for p in ("w1", "w2", "b")] == ["2", "2", "2"]


@pytest.mark.parametrize("x, y", [(1.0, 2.0), (2.0, 4.0), (3.0, 6.0), (-0.7, 1.3)])
def test_quadratic_gradients_equal_the_engines(x, y):
    m = get_model("quadratic")
    e = explain(m, {"x": x, "y": y}, {"w1": 1.0, "w2": 1.0, "b": 1.0})
    batch = m.batch([{"x": x, "y": y}])
    got = [e.gradients[k] for k in m.param_labels]
    assert got == pytest.approx(engine("symbolic")(m, batch).values[0], rel=1e-15, abs=1e-15)
    assert got == pytest.approx(engine("autograd")(m, batch).values[0], rel=1e-15, abs=1e-15)
    assert got == pytest.approx(referee.gradients(m, batch)[0], rel=1e-15, abs=1e-14)
    assert e.agree


@pytest.mark.parametrize(
    "name, options",
    [("linear", {}), ("affine", {}), ("quadratic", {}), ("logistic", {}), ("mlp", {"H": 3}),
     ("mlp", {"H": 2, "activation": "sigmoid"}), ("mlp", {"H": 2, "activation": "softplus"}),
     ("mlp", {"H": 2, "activation": "sin"}), ("softmax", {})],
)
def test_trace_agrees_with_the_symbolic_engine_on_random_points(name, options):
    m = get_model(name, **options)
    batch = m.sample(25, seed=3)
    sym = engine("symbolic")(m, batch).values
    for r in range(len(batch)):
        tr = trace_row(m, batch.theta[r], batch.data[r])
        got = np.array([tr.gradients[k] for k in m.param_labels])
        np.testing.assert_allclose(got, sym[r], rtol=1e-10, atol=1e-10)


def test_every_function_matches_torch():
    """micrograd's oracle: the same expression traced and in torch, value and gradient."""
    unary = [f for f in FUNCTIONS if f not in ("sum", "logsumexp")]
    for name in unary:
        for a in (-1.3, 0.4, 2.2):
            if (name in ("log", "sqrt") and a <= 0) or (name == "log1p" and a * 0.9 <= -1):
                continue  # outside the domain
            m = Model.from_function(lambda ops, p, v, n=name: getattr(ops, n)(p.w * v.x) * 3 - 1 / (p.w + 5),
                                    params={"w": a})
            tr = trace(m, point={"x": 0.9, "y": 0.5})
            w = torch.tensor(a, dtype=torch.float64, requires_grad=True)
            yhat = getattr(backend("torch"), name)(w * 0.9) * 3 - 1 / (w + 5)
            loss = (yhat - 0.5) ** 2
            loss.backward()
            assert tr.loss == pytest.approx(loss.item(), rel=1e-13), name
            assert tr.gradients["w"] == pytest.approx(w.grad.item(), rel=1e-12, abs=1e-14), name


def test_sum_logsumexp_pow_and_division_match_torch():
    def predict(ops, p, v):
        zs = [p.a * v.x, p.b / v.x, 2.0 ** p.a, p.b ** p.a, 1 - p.a, -p.b]
        return ops.logsumexp(zs) + (ops.sum(zs) + 1.5) / (p.a * p.b)

    m = Model.from_function(predict, params={"a": 0.8, "b": 1.7})
    tr = trace(m, point={"x": 1.3, "y": -0.5})
    a = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)

    class P:
        pass

    p, v = P(), P()
    p.a, p.b, v.x = a, b, 1.3
    loss = (predict(backend("torch"), p, v) - -0.5) ** 2
    loss.backward()
    assert tr.loss == pytest.approx(loss.item(), rel=1e-13)
    assert [tr.gradients["a"], tr.gradients["b"]] == pytest.approx([a.grad.item(), b.grad.item()], rel=1e-12)


def test_constants_are_folded_into_labels():
    m = Model.from_function(lambda ops, p, v: 2 * p.w * v.x + 3, params={"w": 1.0})
    tr = trace(m, point={"x": 1.0, "y": 0.0})
    ops_rows = [r["expression"] for r in tr.rows() if r["kind"] == "op"]
    assert ops_rows == ["2 * w", "n1 * x", "n2 + 3", "n3 - y", "n4 ** 2"]


def test_wrong_local_rule_is_caught(cli, monkeypatch):
    def wrong_mul(self, other):
        if not isinstance(other, Node):
            return Node(self.value * other, (self,), (other,), "· * c")
        return Node(self.value * other.value, (self, other), (2 * other.value, self.value), "· * ·")

    monkeypatch.setattr(Node, "__mul__", wrong_mul)
    code, out, _ = cli("explain", "quadratic", "--x", 2, "--y", 4)
    assert code == 1
    assert "check: MISMATCH for w1" in out
    assert "DIFFERS" in out


def test_json(cli):
    code, out, _ = cli("explain", "linear", "--x", 2, "--y", 4, "--param", "w=1", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["gradients"] == {"w": -8.0} and doc["agree"] is True
    assert [n["name"] for n in doc["nodes"]] == ["w", "x", "y", "n1", "n2", "loss"]
    assert doc["nodes"][-1]["local"] == {"n2": -4.0}


def test_user_expression(cli):
    code, out, err = cli("explain", "--expr", "tanh(w*x) + b", "--params", "w,b", "--x", 0.5, "--y", 1)
    assert code == 0, err
    assert "tanh(n1)" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["explain", "quadratc"], "Did you mean quadratic"),
        (["explain", "quadratic", "--x", 1], "y is missing"),
        (["explain", "quadratic", "--x", "nan", "--y", 1], "finite"),
        (["explain", "quadratic", "--param", "w3=1"], "Expected a parameter"),
        (["explain", "--expr", "w*x", "--params", "w"], "no dataset"),
        (["explain", "--expr", "log(w*x)", "--params", "w", "--x", -1, "--y", 0], "domain"),
    ],
)
def test_bad_input_exits_2_with_one_line(cli, argv, fragment):
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert err.startswith("Error: ") and err.count("\n") == 1
    assert fragment in err


def test_help_imports_neither_torch_nor_sympy():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gradcheck_lab.cli import main\n"
        "for cmd in ('derive', 'explain', 'graph', 'train'):\n"
        "    try:\n"
        "        main([cmd, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'sympy', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_a_kink_is_reported_not_failed(cli):
    code, out, _ = cli("explain", "mlp", "--hidden", 1, "--activation", "relu",
                       "--param", "W1=0", "--param", "b1=0", "--param", "W2=1")
    assert code == 0
    t = rows_of(out)
    assert any("derivative undefined at 0" in cell for cell in t["n3"])
    assert "W1[0]    0.0    -4.0      nan      undefined (kink)" in out  # the referee: KINK, no value
    assert "note: the derivative for W1[0], b1[0] is undefined at this point" in out
    assert "check: every other traced gradient agrees" in out
