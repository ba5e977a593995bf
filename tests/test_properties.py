"""Property tests: the three engines agree within the tolerance model for every catalog model.

Points come from :mod:`gradcheck_lab.strategies`: magnitudes from 1e-3 up to
each variable's ``max_abs`` (1e3 for the lesson's models), both signs, zeros,
and cancellation points where the prediction equals the target.
"""

import pytest
from hypothesis import given, note

from gradcheck_lab import get_model, verify
from gradcheck_lab.strategies import points

MODELS = {
    "linear": get_model("linear"),
    "affine": get_model("affine"),
    "quadratic": get_model("quadratic"),
    "logistic": get_model("logistic"),
    "mlp-tanh": get_model("mlp", H=4),
    "mlp-sigmoid": get_model("mlp", H=4, activation="sigmoid"),
    "mlp-softplus": get_model("mlp", H=4, activation="softplus"),
    "mlp-relu": get_model("mlp", H=4, activation="relu"),
    "softmax": get_model("softmax", d=3, K=3),
}


def check(model, point, dtype="float64"):
    report = verify(model, points=[point], random=0, dtype=dtype)
    note(report.render())
    assert report.ok, report.message


@pytest.mark.parametrize("name", list(MODELS))
def test_engines_agree_spread_magnitudes(name):
    model = MODELS[name]

    @given(points(model))
    def prop(point):
        check(model, point)

    prop()


@pytest.mark.parametrize("name", list(MODELS))
def test_engines_agree_in_domain_float32(name):
    model = MODELS[name]

    @given(points(model, uniform=True))
    def prop(point):
        check(model, point, dtype="float32")

    prop()


@pytest.mark.parametrize("name", ["linear", "affine", "quadratic", "mlp-tanh"])
def test_engines_agree_at_cancellation(name):
    model = MODELS[name]

    @given(points(model, cancellation="only"))
    def prop(point):
        check(model, point)

    prop()
