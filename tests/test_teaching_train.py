"""``train``: the lesson's figures digit for digit, a plain PyTorch loop as oracle, the checks."""

import io
import json
import struct

import pytest
import torch

from gradcheck_lab import get_model
from gradcheck_lab.errors import InvalidValueError, UsageError
from gradcheck_lab.teaching import train
from gradcheck_lab.teaching.train import parse_data

LESSON_X = [1.0, 2.0, 3.0]
LESSON_Y = [2.0, 4.0, 6.0]


def block(lines, start):
    i = lines.index(start)
    return lines[i : i + 4]


# ---------------------------------------------------------------- SEED.md figures
def test_train_linear_prints_the_lesson_figures(cli):
    code, out, err = cli("train", "linear")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "predict (before training) 4 4.0"
    assert lines[1:5] == [
        "grad: 1.0 2.0 -2.0",
        "grad: 2.0 4.0 -7.840000152587891",
        "grad: 3.0 6.0 -16.228801727294922",
        "progress: 0 7.315943717956543",
    ]
    assert lines[5:9] == [
        "grad: 1.0 2.0 -1.478623867034912",
        "grad: 2.0 4.0 -5.796205520629883",
        "grad: 3.0 6.0 -11.998146057128906",
        "progress: 1 3.9987640380859375",
    ]
    assert len(lines) == 1 + 100 * 4 + 1
    assert lines[-1].startswith("predict (after training) 4 ")


def test_train_quadratic_prints_the_lesson_figures(cli):
    code, out, err = cli("train", "quadratic")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "predict (before training) 4 21.0"
    assert lines[1:5] == [
        "grad: 1.0 2.0 2.0 2.0 2.0",
        "grad: 2.0 4.0 22.880001068115234 11.440000534057617 5.720000267028809",
        "grad: 3.0 6.0 77.04720306396484 25.682401657104492 8.560800552368164",
        "Epoch: 0 18.321826934814453",
    ]
    assert lines[8] == "Epoch: 1 2.858394145965576"
    assert lines[12] == "Epoch: 2 1.1675907373428345"
    # SEED.md lists "epoch 92" as the loss line of epoch 92 and the three grad
    # lines printed right after it (they belong to the next epoch in the
    # loop's order); the printed sequence is reproduced exactly.
    assert block(lines, "Epoch: 92 0.00649801641702652") == [
        "Epoch: 92 0.00649801641702652",
        "grad: 1.0 2.0 0.31499528884887695 0.31499528884887695 0.31499528884887695",
        "grad: 2.0 4.0 -1.7440509796142578 -0.8720254898071289 -0.43601274490356445",
        "grad: 3.0 6.0 1.4478435516357422 0.48261451721191406 0.1608715057373047",
    ]
    assert lines.index("Epoch: 92 0.00649801641702652") == 92 * 4 + 4


# ---------------------------------------------------------------- the oracle
def lesson_loop(forward_of, n_params, *, lr=0.01, epochs=100, init=1.0, data=None, label="Epoch:", dtype=torch.float32):
    """The lesson's code, written out by hand: one leaf per parameter, print, update, zero."""
    data = data or list(zip(LESSON_X, LESSON_Y))
    inits = init if isinstance(init, (list, tuple)) else [init] * n_params
    ps = [torch.tensor([v], dtype=dtype) for v in inits]
    for p in ps:
        p.requires_grad = True

    def forward(x):
        return forward_of(ps, x)

    def loss(x, y):
        y_pred = forward(x)
        return (y_pred - y) ** 2

    buf = io.StringIO()
    print("predict (before training)", 4, forward(4).item(), file=buf)
    for epoch in range(epochs):
        for x, y in data:
            loss_t = loss(x, y)
            loss_t.backward()
            print("grad:", x, y, *[p.grad.item() for p in ps], file=buf)
            for p in ps:
                p.data = p.data - lr * p.grad.data
            for p in ps:
                p.grad.data.zero_()
        print(label, epoch, loss_t.item(), file=buf)
    print("predict (after training)", 4, forward(4).item(), file=buf)
    return buf.getvalue()


FORWARDS = {
    "linear": (lambda ps, x: x * ps[0], 1, "progress:"),
    "affine": (lambda ps, x: ps[0] * x + ps[1], 2, "Epoch:"),
    "quadratic": (lambda ps, x: ps[0] * x**2 + ps[1] * x + ps[2], 3, "Epoch:"),
}


@pytest.mark.parametrize(
    "model, lr, epochs, init",
    [
        ("linear", 0.01, 100, 1.0),
        ("linear", 0.05, 30, -2.5),
        ("linear", 0.001, 7, 0.3),
        ("affine", 0.01, 100, 1.0),
        ("affine", 0.03, 20, [0.5, -1.25]),
        ("quadratic", 0.01, 100, 1.0),
        ("quadratic", 0.002, 50, [0.1, 0.2, 0.3]),
        ("quadratic", 0.02, 10, [-1.0, 2.0, 0.5]),
    ],
)
def test_train_matches_a_plain_pytorch_loop(cli, model, lr, epochs, init):
    fwd, n, label = FORWARDS[model]
    names = get_model(model).param_labels
    inits = init if isinstance(init, list) else [init] * n
    args = ["train", model, "--lr", lr, "--epochs", epochs]
    for name, v in zip(names, inits):
        args += ["--param", f"{name}={v!r}"]
    code, out, err = cli(*args)
    assert code == 0, err
    assert out == lesson_loop(fwd, n, lr=lr, epochs=epochs, init=inits, label=label)


def test_train_custom_data_and_float64_match_the_loop(cli):
    data = [(0.1, 0.3), (0.7, 1.9), (-1.3, -3.2)]
    code, out, err = cli("train", "quadratic", "--data", "0.1:0.3, 0.7:1.9; -1.3:-3.2", "--epochs", 40, "--dtype", "float64")
    assert code == 0, err
    fwd, n, label = FORWARDS["quadratic"]
    assert out == lesson_loop(fwd, n, epochs=40, data=data, label=label, dtype=torch.float64)


def test_train_logistic_matches_a_hand_written_loop():
    r = train(get_model("logistic"), epochs=25, lr=0.1)
    assert r.ok
    w = torch.tensor([1.0], requires_grad=True)
    b = torch.tensor([1.0], requires_grad=True)
    grads = []
    for _ in range(25):
        for x, y in [(1.0, 0.0), (2.0, 0.0), (3.0, 1.0)]:
            z = w * x + b
            loss_t = torch.logaddexp(z, torch.zeros_like(z)) - y * z  # the torch backend's softplus
            loss_t.backward()
            grads.append([w.grad.item(), b.grad.item()])
            w.data -= 0.1 * w.grad.data
            b.data -= 0.1 * b.grad.data
            w.grad.data.zero_()
            b.grad.data.zero_()
    assert [s.grads for s in r.steps] == grads
    assert r.final_params == [w.item(), b.item()]


@pytest.mark.parametrize("name, options", [("mlp", {"H": 3}), ("softmax", {}), ("mlp", {"activation": "relu"})])
def test_train_other_catalog_models_check_every_step(name, options):
    r = train(get_model(name, **options), epochs=20)
    assert r.ok and r.checked_steps == 60
    assert r.epoch_label == "Epoch:" and len(r.epoch_losses) == 20
    assert r.steps[-1].loss < r.steps[2].loss


# ---------------------------------------------------------------- the check
def test_no_zero_grad_is_caught_at_step_2(cli):
    code, out, err = cli("train", "linear", "--no-zero-grad")
    assert code == 1
    lines = out.splitlines()
    assert lines[:3] == ["predict (before training) 4 4.0", "grad: 1.0 2.0 -2.0", "grad: 2.0 4.0 -9.84000015258789"]
    assert lines[3] == "MISMATCH at step 2 (epoch 0, sample 2: x = 2.0, y = 4.0), parameter w:"
    assert lines[4].split() == ["autograd", "(torch,", "float32)", "-9.84000015258789"]
    assert lines[5].split() == ["symbolic", "(closed", "form,", "float64)", "-7.840000152587891"]
    assert lines[6].startswith("  |difference| 2 > tolerance 0.000239 = 256 * (eps(float32) * M + tiny)")
    assert "never zeroed" in lines[7]
    assert lines[8:] == ["Training stopped."]


def test_no_zero_grad_quadratic_json(cli):
    code, out, _ = cli("train", "quadratic", "--no-zero-grad", "--json")
    assert code == 1
    doc = json.loads(out)
    m = doc["check"]["mismatch"]
    assert (m["step"], m["epoch"], m["sample"], m["param"]) == (2, 0, 2, "w1")
    assert m["autograd"] == pytest.approx(2.0 + 22.880001068115234)
    assert m["symbolic"] == pytest.approx(22.880001068115234, rel=1e-7)
    assert doc["prediction_after"] is None and doc["check"]["checked_steps"] == 1


def test_a_one_percent_error_is_caught_at_step_1(monkeypatch):
    """A 1% error on either side (here: the closed form) is caught at the first step."""
    import gradcheck_lab.engines.symbolic as sym

    real = sym.compiled

    def off_by_one_percent(model):
        fn = real(model)
        return lambda *a: [g * 1.01 for g in fn(*a)]

    monkeypatch.setattr(sym, "compiled", off_by_one_percent)
    r = train(get_model("quadratic"))
    assert not r.ok and r.mismatch.step == 1 and r.mismatch.param == "w1"
    assert "rounding" in r.mismatch.hint


def test_json_document(cli):
    code, out, _ = cli("train", "affine", "--epochs", 3, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["settings"] == {
        "lr": 0.01,
        "epochs": 3,
        "dtype": "float32",
        "zero_grad": True,
        "initial_params": {"w": 1.0, "b": 1.0},
        "data": [{"x": 1.0, "y": 2.0}, {"x": 2.0, "y": 4.0}, {"x": 3.0, "y": 6.0}],
    }
    assert len(doc["steps"]) == 9 and doc["steps"][0]["grads"] == [0.0, 0.0]
    assert doc["prediction_before"] == {"at": {"x": 4.0}, "value": 5.0}
    assert doc["check"]["ok"] is True


def test_plot_writes_a_png(cli, tmp_path):
    path = tmp_path / "loss.png"
    code, out, err = cli("train", "quadratic", "--plot", path)
    assert code == 0, err
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    width, height = struct.unpack(">II", raw[16:24])
    assert (width, height) == (1000, 400)
    assert out.splitlines()[-1] == f"wrote {path}"


def test_prediction_uses_the_models_forward_at_4():
    r = train(get_model("quadratic"), epochs=1)
    assert r.prediction_before == 21.0 and r.at == {"x": 4.0}
    r = train(get_model("linear"), epochs=1, at=2.5)
    assert r.prediction_before == 2.5 and r.lines()[0] == "predict (before training) 2.5 2.5"


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "lineer"], "Did you mean linear"),
        (["train", "linear", "--data", "1:2,2"], "X:Y pairs"),
        (["train", "linear", "--data", "1:2:3"], "X:Y pairs"),
        (["train", "linear", "--data", "a:2"], "Expected a number for x"),
        (["train", "linear", "--data", "1:inf"], "finite"),
        (["train", "linear", "--data", ""], "X:Y pairs"),
        (["train", "logistic", "--data", "1:0.5"], "0 or 1"),
        (["train", "softmax", "--data", "1:1"], "one scalar input"),
        (["train", "linear", "--lr", "nan"], "learning rate"),
        (["train", "linear", "--lr", "-0.1"], "learning rate"),
        (["train", "linear", "--epochs", "0"], "epochs"),
        (["train", "linear", "--epochs", "1.5"], "invalid int"),
        (["train", "linear", "--dtype", "float16"], "invalid choice"),
        (["train", "linear", "--param", "v=1"], "Expected a parameter"),
        (["train", "linear", "--param", "w=nan"], "finite"),
        (["train", "linear", "--plot", "loss.txt"], ".png"),
    ],
)
def test_bad_input_exits_2_with_one_line(cli, argv, fragment):
    code, out, err = cli(*argv)
    assert code == 2
    assert out == ""
    assert err.startswith("Error: ") and err.count("\n") == 1
    assert fragment in err


@pytest.mark.parametrize(
    "kwargs, error",
    [({"epochs": 0}, InvalidValueError), ({"lr": float("inf")}, InvalidValueError), ({"dtype": "half"}, UsageError),
     ({"epochs": True}, UsageError)],
)
def test_library_validates(kwargs, error):
    with pytest.raises(error):
        train(get_model("linear"), **kwargs)


def test_parse_data():
    assert parse_data("1:2;3:4", get_model("quadratic")) == [{"x": 1.0, "y": 2.0}, {"x": 3.0, "y": 4.0}]


def test_relu_exactly_at_its_kink_is_not_a_mismatch():
    from gradcheck_lab import get_model, train

    model = get_model("mlp", H=2, activation="relu")
    result = train(model, epochs=2, params={"W1": 0.0, "b1": 0.0})  # every pre-activation is 0
    assert result.mismatch is None and result.checked_steps == 6
    bad = train(model, epochs=2, params={"W1": 0.0, "b1": 0.0}, zero_grad=False)
    assert bad.mismatch is not None  # the accumulated-gradient bug is still caught
