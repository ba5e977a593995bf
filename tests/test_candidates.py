"""Candidates of every kind and shape: what is accepted, judged, refused or passed through."""

import json

import numpy as np
import pytest
import torch

from gradcheck_lab import GradientMismatch, UsageError, assert_gradients_agree, get_model, verify
from gradcheck_lab.candidates import as_candidate, torch_loss

QUADRATIC = get_model("quadratic")


def quad_grad(params, point):
    """Hand-written back-propagation of (w1 x^2 + w2 x + b - y)^2."""
    x, y = point["x"], point["y"]
    r = params["w1"] * x**2 + params["w2"] * x + params["b"] - y
    return {"w1": 2 * r * x**2, "w2": 2 * r * x, "b": 2 * r}


def softmax_grad(params, point):
    """Hand-written back-propagation of softmax regression with cross-entropy."""
    W, b, x = params["W"], params["b"], point["x"]
    z = W @ x + b
    p = np.exp(z - z.max())
    p /= p.sum()
    dz = p - np.eye(len(b))[point["y"]]
    return {"W": np.outer(dz, x), "b": dz}


def mlp_grad(params, point):
    """Hand-written back-propagation of the tanh mlp; one gradient per parameter, in order."""
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    h = np.tanh(W1 * point["x"] + b1)
    dy = 2 * (W2 @ h + b2 - point["y"])
    dpre = dy * W2 * (1 - h**2)
    return [dpre * point["x"], dpre, dy * h, dy]


# ------------------------------------------------------------------ gradient functions


class UserBug(Exception):
    pass


def test_exception_in_candidate_propagates_unchanged():
    bug = UserBug("my backprop is broken")

    def broken(params, point):
        raise bug

    with pytest.raises(UserBug) as info:
        verify("quadratic", candidate=broken, random=5)
    assert info.value is bug and info.value.__cause__ is None and info.value.__context__ is None


def test_nan_is_a_mismatch_with_the_candidate_at_fault():
    def nan_b(params, point):
        return {**quad_grad(params, point), "b": float("nan")}

    rep = verify("quadratic", candidate=nan_b, random=20)
    assert not rep.ok and rep.at_fault == ["candidate"]
    check = rep.data_points[0].checks[2]
    assert check.param == "b" and check.verdict == "mismatch" and check.at_fault == ["candidate"]
    assert check.values["candidate"] is None  # NaN is null in JSON
    assert json.loads(rep.to_json())["at_fault"] == ["candidate"]
    assert "at b" in rep.message
    with pytest.raises(GradientMismatch):
        assert_gradients_agree("quadratic", candidate=nan_b, random=20)


def _as_flat(g):
    return [g["w1"], g["w2"], g["b"]]


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda g: torch.tensor(_as_flat(g), dtype=torch.float64), id="torch-float64-tensor"),
        pytest.param(lambda g: {k: torch.tensor(v) for k, v in g.items()}, id="dict-of-tensors"),
        pytest.param(lambda g: [np.array(v) for v in _as_flat(g)], id="list-of-0d-arrays"),
        pytest.param(lambda g: tuple(_as_flat(g)), id="tuple-of-floats"),
        pytest.param(lambda g: np.array(_as_flat(g)).reshape(1, 3), id="row-array"),
    ],
)
def test_return_types_accepted(convert):
    assert verify("quadratic", candidate=lambda p, v: convert(quad_grad(p, v)), random=30).ok


def test_list_of_arrays_one_per_parameter():
    rep = verify("mlp", H=4, candidate=mlp_grad, random=20)
    assert rep.ok and "candidate" in rep.engines


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda g: {k: np.float32(v) for k, v in g.items()}, id="dict-of-float32"),
        pytest.param(lambda g: np.array(_as_flat(g), dtype=np.float32), id="float32-array"),
        pytest.param(lambda g: torch.tensor(_as_flat(g), dtype=torch.float32), id="float32-tensor"),
        pytest.param(lambda g: [np.float32(g["w1"]), g["w2"], g["b"]], id="one-float32-in-a-list"),
    ],
)
def test_float32_values_are_judged_with_float32_tolerance(convert):
    assert verify("quadratic", candidate=lambda p, v: convert(quad_grad(p, v)), random=100).ok


def test_float32_rounding_fails_when_passed_off_as_float64():
    # The same float32-rounded values, handed over as float64, are judged at float64.
    def rounded(params, point):
        return {k: float(np.float32(v)) for k, v in quad_grad(params, point).items()}

    rep = verify("quadratic", candidate=rounded, random=100)
    assert rep.at_fault == ["candidate"]


def test_float32_tolerance_still_catches_a_missing_factor():
    def wrong(params, point):
        g = quad_grad(params, point)
        return np.array([g["w1"], g["w2"] / 2, g["b"]], dtype=np.float32)

    rep = verify("quadratic", candidate=wrong, random=30)
    assert rep.at_fault == ["candidate"] and "at w2" in rep.message


# ------------------------------------------------------------------ matrix parameters


def test_softmax_matrix_gradient_passes():
    rep = verify("softmax", candidate=softmax_grad, random=30)
    assert rep.ok and "candidate" in rep.engines


def test_softmax_flat_row_major_gradient_passes():
    def flat(params, point):
        g = softmax_grad(params, point)
        return np.concatenate([g["W"].ravel(), g["b"]])

    assert verify("softmax", candidate=flat, random=20).ok


def test_softmax_transposed_square_gradient_fails_at_a_w_component():
    def transposed(params, point):
        g = softmax_grad(params, point)
        return {"W": g["W"].T, "b": g["b"]}

    with pytest.raises(GradientMismatch) as info:
        assert_gradients_agree("softmax", d=3, K=3, candidate=transposed, random=30)
    report = info.value.report
    assert report.at_fault == ["candidate"]
    assert "candidate differs from the exact value" in report.message and "at W[" in report.message
    wrong = {c.param for p in report.data_points for c in p.checks if c.at_fault}
    assert wrong and all(label.startswith("W[") for label in wrong)


def test_softmax_transposed_rectangular_gradient_is_a_shape_error():
    def transposed(params, point):
        g = softmax_grad(params, point)
        return {"W": g["W"].T, "b": g["b"]}

    with pytest.raises(UsageError, match=r"gradient for W to have shape \(3, 2\) but got shape \(2, 3\) \(transposed\?\)"):
        verify("softmax", candidate=transposed, random=5)


# ------------------------------------------------------------------ bad return values


@pytest.mark.parametrize(
    "result, fragment",
    [
        (None, "got None .*return statement missing"),
        ({"w1": 1.0, "w2": 1.0}, "'b' is missing"),
        ({"w1": 1.0, "w2": 1.0, "b": 1.0, "w3": 1.0}, "got 'w3'"),
        ({"w1": 1.0, "w2": None, "b": 1.0}, "gradient for w2 but got None"),
        ({"w1": 1.0, "w2": "two", "b": 1.0}, "Expected numbers for w2"),
        ({"w1": [1.0, 2.0], "w2": 1.0, "b": 1.0}, r"w1 to have shape \(\) but got shape \(2,\)"),
        ([1.0, 2.0], "Expected the candidate to return 3 gradient values"),
        (np.ones(3, dtype=np.float16), "float16"),
        (torch.ones(3, dtype=torch.bfloat16), "bfloat16"),
    ],
)
def test_bad_return_values_are_usage_errors(result, fragment):
    with pytest.raises(UsageError, match=fragment):
        verify("quadratic", candidate=lambda p, v: result, random=3)


def test_ragged_flat_list_is_a_usage_error():
    with pytest.raises(UsageError, match="list of pieces of shapes"):
        verify("mlp", H=2, candidate=lambda p, v: [np.ones(2), np.ones(2), 1.0], random=3)


def test_usage_error_says_where():
    with pytest.raises(UsageError, match=r"at point 0 \(x=1.0, y=2.0, params="):
        verify("quadratic", candidate=lambda p, v: None, random=0)


@pytest.mark.parametrize("obj", [42, torch.ones(3), "grad"])
def test_non_candidates_are_refused(obj):
    with pytest.raises(UsageError, match="Expected a candidate gradient function"):
        as_candidate(obj)


# ------------------------------------------------------------------ torch losses


class WrongTanh(torch.autograd.Function):
    """tanh whose backward forgets to square: 1 - t instead of 1 - t**2."""

    @staticmethod
    def forward(ctx, z):
        t = torch.tanh(z)
        ctx.save_for_backward(t)
        return t

    @staticmethod
    def backward(ctx, grad):
        (t,) = ctx.saved_tensors
        return grad * (1 - t)


def test_torch_loss_mlp_with_vector_parameters():
    shapes = []

    def loss(p, v):
        shapes.append((tuple(p.W1.shape), tuple(p.b1.shape), tuple(p.W2.shape), tuple(p.b2.shape)))
        return ((p.W2 * torch.tanh(p.W1 * v.x + p.b1)).sum() + p.b2 - v.y) ** 2

    assert verify("mlp", H=4, candidate=torch_loss(loss), random=20).ok
    assert set(shapes) == {((4,), (4,), (4,), ())}


def test_torch_loss_mlp_wrong_custom_function_fails():
    def loss(p, v):
        return ((p.W2 * WrongTanh.apply(p.W1 * v.x + p.b1)).sum() + p.b2 - v.y) ** 2

    rep = verify("mlp", H=4, candidate=torch_loss(loss), random=20)
    assert rep.at_fault == ["candidate"]
    assert "at W1[" in rep.message or "at b1[" in rep.message


def test_torch_loss_must_return_a_scalar():
    with pytest.raises(UsageError, match="scalar loss tensor"):
        verify("mlp", H=4, candidate=torch_loss(lambda p, v: p.W1 * v.x), random=3)


# ------------------------------------------------------------------ torch modules


class SoftmaxModule(torch.nn.Module):
    def __init__(self, W_shape=(3, 2), b_shape=(3,)):
        super().__init__()
        self.W = torch.nn.Parameter(torch.zeros(W_shape, dtype=torch.float32))
        self.b = torch.nn.Parameter(torch.zeros(b_shape, dtype=torch.float32))

    def forward(self, x, y):
        z = self.W @ x + self.b
        return torch.logsumexp(z, 0) - (y * z).sum()


def test_module_with_matrix_parameter_passes_and_is_left_unchanged():
    module = SoftmaxModule()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    assert verify("softmax", candidate=module, random=20).ok
    after = module.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], before[k]) for k in before)
    assert all(p.grad is None for p in module.parameters())


@pytest.mark.parametrize(
    "W_shape, b_shape, fragment",
    [
        ((2, 3), (3,), r"W: expected shape \(3, 2\), got \(2, 3\)"),
        ((3, 2), (4,), r"b: expected shape \(3,\), got \(4,\)"),
        ((6,), (3,), r"W: expected shape \(3, 2\), got \(6,\)"),
    ],
)
def test_module_with_other_shapes_is_refused(W_shape, b_shape, fragment):
    with pytest.raises(UsageError, match=fragment):
        verify("softmax", candidate=SoftmaxModule(W_shape, b_shape), random=3)


class AffineModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))  # shape (1,) for a scalar parameter
        self.b = torch.nn.Parameter(torch.tensor(0.0))

    def forward(self, x, y):
        return ((self.w * x + self.b - y) ** 2).sum()


def test_module_scalar_parameter_of_shape_one_is_accepted():
    assert verify("affine", candidate=AffineModule(), random=20).ok


class ScaledModule(AffineModule):
    """Reads a float32 buffer: it is converted to the check's dtype with the parameters."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x, y):
        return 2 * self.scale * super().forward(x, y)


def test_module_buffers_follow_the_dtype():
    module = ScaledModule()
    assert verify("affine", candidate=module, random=20).ok
    assert module.scale.dtype == torch.float32
