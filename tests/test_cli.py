"""The CLI in-process: exit codes, JSON, bad input as one line."""

import json
import subprocess
import sys

import pytest


def test_verify_quadratic_default(cli):
    code, out, err = cli("verify", "quadratic")
    assert code == 0, err
    assert "y_hat = w1*x**2 + w2*x + b" in out
    assert "dL/dw1 = 2*x**2*(b + w1*x**2 + w2*x - y)" in out
    assert "1000 random points" in out and "verdict: OK" in out


def test_verify_json_lesson_point(cli):
    code, out, _ = cli("verify", "quadratic", "--x", 2, "--y", 4, "--param", "w1=1", "--param", "w2=1",
                       "--param", "b=1", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "gradcheck_lab.report/2"
    checks = doc["data_points"][0]["checks"]
    for engine in ("symbolic", "autograd", "finite_differences"):
        got = [c["values"][engine] for c in checks]
        assert got == pytest.approx([24, 12, 6], rel=1e-12)
    assert [c["exact"] for c in checks] == [24, 12, 6]


@pytest.mark.parametrize("model", ["linear", "affine", "quadratic", "logistic", "mlp", "softmax"])
def test_verify_every_model_exits_0(cli, model):
    code, out, err = cli("verify", model, "--points", 300)
    assert code == 0, out + err
    assert "verdict: OK" in out and "partial derivatives" in out


def test_model_options(cli):
    code, out, _ = cli("verify", "mlp", "--hidden", 3, "--activation", "softplus", "--points", 50, "--quiet")
    assert code == 0 and out.startswith("verdict: OK")
    code, out, _ = cli("verify", "softmax", "--dim", 3, "--classes", 4, "--x", "1,2,3", "--y", 2, "--no-random")
    assert code == 0 and "W[3,2]" in out


def test_wrong_engine_exits_1_naming_it(cli, monkeypatch):
    import gradcheck_lab.compare as cmp
    from gradcheck_lab.engines import Gradients, engine

    def table(name):
        real = engine(name)
        if name != "finite_differences":
            return real

        def wrong(model, batch, **kw):
            g = real(model, batch, **kw)
            return Gradients(g.engine, g.values * 1.01, g.dtype, g.error, g.kink, g.lower, g.upper)

        return wrong

    monkeypatch.setattr(cmp, "engine", table)
    code, out, _ = cli("verify", "affine", "--points", 20)
    assert code == 1
    assert "MISMATCH" in out and "finite differences differs from the exact value" in out


def test_list(cli):
    code, out, _ = cli("list")
    assert code == 0
    for name in ("linear", "affine", "quadratic", "logistic", "mlp", "softmax"):
        assert name in out
    code, out, _ = cli("list", "--json")
    assert {m["name"] for m in json.loads(out)} >= {"quadratic", "mlp"}


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["verify", "quadratik"], "Did you mean quadratic"),
        (["verify"], "Expected a MODEL"),
        (["verify", "quadratic", "--param", "w1"], "NAME=VALUE"),
        (["verify", "quadratic", "--param", "w1=abc"], "Expected a number"),
        (["verify", "quadratic", "--param", "w7=1"], "Did you mean"),
        (["verify", "quadratic", "--param", "w1=nan"], "finite"),
        (["verify", "quadratic", "--param", "w1=inf"], "finite"),
        (["verify", "quadratic", "--x", "nan", "--y", "1"], "finite"),
        (["verify", "quadratic", "--x", "2"], "y is missing"),
        (["verify", "quadratic", "--points", "0"], "positive integer"),
        (["verify", "quadratic", "--points", "-5"], "positive integer"),
        (["verify", "quadratic", "--seed", "x"], "non-negative integer"),
        (["verify", "quadratic", "--dtype", "float16"], "invalid choice"),
        (["verify", "quadratic", "--hidden", "4"], "--hidden only with a model"),
        (["verify", "mlp", "--hidden", "0"], "1 <= --hidden <= 256"),
        (["verify", "mlp", "--activation", "tanhh"], "Did you mean tanh"),
        (["verify", "softmax", "--y", "7", "--x", "1,2"], "class label in 0..2"),
        (["verify", "softmax", "--y", "1", "--x", "1,2,3"], "shape (2,)"),
        (["verify", "quadratic", "--device", "cuda:9"], "device"),
        (["verify", "quadratic", "--json", "--quiet"], "not allowed with"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, argv, fragment):
    code, out, err = cli(*argv)
    assert code == 2
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert fragment in err
    assert "Traceback" not in err + out


def test_help_imports_neither_torch_nor_sympy():
    code = (
        "import sys; from gradcheck_lab.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('torch', 'sympy', 'numpy', 'matplotlib') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "gradcheck_lab", "verify", "linear", "--quiet", "--points", "10"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "verdict: OK" in res.stdout


def _hostile():
    from test_expr import HOSTILE

    return [h[0] for h in HOSTILE if h[0].strip() and "\x00" not in h[0]]


@pytest.mark.parametrize("text", _hostile())
def test_hostile_expression_is_one_line_exit_2(cli, text):
    code, out, err = cli("verify", f"--expr={text}", "--params", "w1,w2,b", "--no-random", "--x", "1", "--y", "2")
    assert code == 2
    assert err.startswith("Error: Expected") and err.count("\n") == 1, err
    assert out == ""


def test_expr_model_verifies(cli):
    code, out, _ = cli("verify", "--expr", "w1*x**2 + w2*x + b", "--params", "w1,w2,b", "--x", 2, "--y", 4,
                       "--points", 50, "--json")
    assert code == 0
    checks = json.loads(out)["data_points"][0]["checks"]
    assert [c["exact"] for c in checks] == [24, 12, 6]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "quadratic", "--epochs", "1", "--plot", "/nonexistent/dir/a.png"], "existing directory"),
        (["graph", "quadratic", "--out", "/nonexistent/g.svg"], "existing directory"),
        (["explain", "quadratic", "--param", "w9=1"], "Did you mean w2, w1?"),
        (["verify", "softmax", "--x", "-2,1", "--y", "1"], "--x=-2,1"),
        (["derive", "quadratic", "--param", "w1=2"], "unrecognized arguments: --param"),
        (["verify", "mlp", "--hid", "3"], "unrecognized arguments: --hid"),
    ],
)
def test_more_bad_input(cli, argv, fragment):
    code, out, err = cli(*argv)
    assert code == 2 and err.count("\n") == 1 and fragment in err, err


#: (argv, what the message must say in CLI terms, library spellings it must not contain)
CLI_TERMS = [
    (["verify", "--expr", "w*x", "--params", "w", "--loss", "foo"], "got --loss foo", ["loss=", "None"]),
    (["verify", "--expr", "w*x", "--params", "w", "--loss", "cross_entropy"], "or --loss none", ["loss="]),
    (["verify", "--expr", "w*x + y", "--params", "w"], "pass --loss none if", ["loss=None"]),
    (["explain", "--expr", "w*x", "--params", "w,b"], "remove it from --params.", ["from params"]),
    (["verify", "mlp", "--hidden", "0"], "got --hidden 0", ["H=", " H "]),
    (["verify", "mlp", "--activation", "foo"], "Expected --activation in", ["activation="]),
    (["verify", "softmax", "--classes", "1"], "2 <= --classes <= 64 but got --classes 1", ["K="]),
    (["verify", "softmax", "--dim", "0"], "got --dim 0", ["d="]),
    (["train", "linear", "--lr", "-1"], "got --lr -1.0", ["lr="]),
    (["train", "linear", "--epochs", "0"], "1 <= --epochs <=", ["epochs="]),
]


@pytest.mark.parametrize("argv, says, never", CLI_TERMS, ids=[" ".join(a[:4]) for a, _, _ in CLI_TERMS])
def test_library_errors_are_reworded_in_cli_terms(cli, argv, says, never):
    code, out, err = cli(*argv)
    assert code == 2 and err.startswith("Error: ") and err.count("\n") == 1, err
    assert says in err, err
    for word in never:
        assert word not in err, err


def test_the_library_keeps_its_own_terms():
    from gradcheck_lab import Model, UsageError, get_model

    with pytest.raises(UsageError, match="got loss='foo'"):
        Model.from_expr("w*x", params="w", loss="foo")
    with pytest.raises(UsageError, match="pass loss=None"):
        Model.from_expr("w*x + y", params="w")
    with pytest.raises(UsageError, match=r"got H=0"):
        get_model("mlp", H=0)


def test_cli_terms_rewrites_only_keyword_forms():
    from gradcheck_lab.cli.terms import cli_terms

    flags = {"loss": "--loss", "params": "--params", "H": "--hidden", "x": "--x"}
    assert cli_terms("Expected at least one parameter (e.g. params='w,b').", flags) == (
        "Expected at least one parameter (e.g. --params w,b)."
    )
    assert cli_terms("got params=['w', 'b'].", flags) == "got --params w,b."
    # Not a keyword: words that merely contain one, the loss as a noun, a model input's value.
    same = "the loss of model 'mlp' (Hidden=3, my_loss=None) at x=2 is the loss itself."
    assert cli_terms(same, flags) == same
