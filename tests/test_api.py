"""verify / assert_gradients_agree, candidates of every kind."""

import numpy as np
import pytest
import torch

from gradcheck_lab import GradientMismatch, UsageError, assert_gradients_agree, verify
from gradcheck_lab.candidates import torch_loss


def quad_grad(params, point):
    """Hand-written back-propagation of (w1 x^2 + w2 x + b - y)^2."""
    x, y = point["x"], point["y"]
    r = params["w1"] * x**2 + params["w2"] * x + params["b"] - y
    return {"w1": 2 * r * x**2, "w2": 2 * r * x, "b": 2 * r}


def test_verify_report_data_points():
    rep = verify("quadratic", random=50)
    assert rep.ok and rep.verdict == "agree" and not rep.at_fault
    assert [c.exact for c in rep.data_points[1].checks] == [24.0, 12.0, 6.0]
    assert rep.random_points == 50
    assert {s.pair for s in rep.summary} == {
        "symbolic~autograd", "symbolic~finite_differences", "autograd~finite_differences"
    }


@pytest.mark.parametrize("name", ["linear", "affine", "quadratic", "logistic", "mlp", "softmax"])
def test_verify_every_catalog_model(name):
    assert verify(name, random=200).ok


def test_verify_is_reproducible():
    a = verify("mlp", random=100, seed=7).to_dict()
    b = verify("mlp", random=100, seed=7).to_dict()
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_correct_candidate_passes():
    rep = assert_gradients_agree("quadratic", candidate=quad_grad)
    assert rep.ok and "candidate" in rep.engines


def test_candidate_missing_factor_names_parameter():
    def wrong(params, point):
        g = quad_grad(params, point)
        g["w2"] = g["w2"] / 2  # forgot the factor 2 of the square
        return g

    with pytest.raises(GradientMismatch) as info:
        assert_gradients_agree("quadratic", candidate=wrong)
    msg = str(info.value)
    assert "candidate differs from the exact value" in msg and "at w2" in msg
    assert info.value.report.at_fault == ["candidate"]
    assert isinstance(info.value, AssertionError)


def test_candidate_flat_sequence_and_arrays():
    def flat(params, point):
        g = quad_grad(params, point)
        return np.array([g["w1"], g["w2"], g["b"]])

    assert verify("quadratic", candidate=flat, random=30).ok


class WrongSquare(torch.autograd.Function):
    """r**2 with a backward that forgets the factor 2."""

    @staticmethod
    def forward(ctx, r):
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad):
        (r,) = ctx.saved_tensors
        return grad * r


class RightSquare(WrongSquare):
    @staticmethod
    def backward(ctx, grad):
        (r,) = ctx.saved_tensors
        return 2 * grad * r


@pytest.mark.parametrize("fn, ok", [(RightSquare, True), (WrongSquare, False)])
def test_custom_autograd_function(fn, ok):
    cand = torch_loss(lambda p, v: fn.apply(p.w1 * v.x**2 + p.w2 * v.x + p.b - v.y))
    rep = verify("quadratic", candidate=cand, random=40)
    assert rep.ok is ok
    if not ok:
        assert rep.at_fault == ["candidate"]


class QuadModule(torch.nn.Module):
    def __init__(self, square):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.tensor(1.0))
        self.w2 = torch.nn.Parameter(torch.tensor(1.0))
        self.b = torch.nn.Parameter(torch.tensor(1.0))
        self.square = square

    def forward(self, x, y):
        return self.square.apply(self.w1 * x**2 + self.w2 * x + self.b - y)


def test_module_candidate():
    assert verify("quadratic", candidate=QuadModule(RightSquare), random=30).ok
    rep = verify("quadratic", candidate=QuadModule(WrongSquare), random=30)
    assert rep.at_fault == ["candidate"]


def test_module_candidate_with_other_names_is_refused():
    mod = torch.nn.Linear(1, 1)
    with pytest.raises(UsageError, match="named like the model"):
        verify("quadratic", candidate=mod, random=5)


def test_candidate_wrong_length_is_a_usage_error():
    with pytest.raises(UsageError, match="Expected the candidate to return 3 gradient values"):
        verify("quadratic", candidate=lambda p, v: [1.0, 2.0], random=5)


def test_float32_candidate_judged_at_float32():
    cand = torch_loss(lambda p, v: RightSquare.apply(p.w1 * v.x**2 + p.w2 * v.x + p.b - v.y))
    assert verify("quadratic", candidate=cand, random=100, dtype="float32").ok


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"random": -1}, "non-negative integer"),
        ({"random": 1.5}, "non-negative integer"),
        ({"seed": -3}, "non-negative integer"),
        ({"dtype": "float16"}, "dtype"),
        ({"points": [], "random": 0}, "at least one point"),
        ({"points": [{"x": 1}]}, "y is missing"),
        ({"points": [{"x": 1, "y": 2, "z": 3}]}, "'z'"),
        ({"points": [{"x": float("nan"), "y": 2}]}, "finite"),
        ({"params": {"w9": 1}}, "Did you mean"),
        ({"candidate": 42}, "candidate"),
        ({"referee_points": -1}, "referee_points"),
        ({"referee_seconds": float("nan")}, "referee_seconds"),
        ({"order": 3}, "order 1"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment):
        verify("quadratic", **kwargs)


def test_wrong_engine_fails_the_assertion():
    from gradcheck_lab.engines import Gradients, engine

    def bad_autograd(model, batch, **kw):
        g = engine("autograd")(model, batch, **kw)
        return Gradients("autograd", g.values * 3, g.dtype)

    with pytest.raises(GradientMismatch, match="autograd differs from the exact value"):
        assert_gradients_agree("mlp", engines={"autograd": bad_autograd})
