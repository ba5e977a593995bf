from hypothesis import given, settings

from gradcheck_lab import get_model
from gradcheck_lab.strategies import points

SOFTMAX = get_model("softmax")
QUAD = get_model("quadratic")


@given(points(SOFTMAX))
def test_points_have_the_models_shape(point):
    assert set(point) == {"x", "y", "params"}
    assert len(point["x"]) == 2 and point["y"] in (0, 1, 2)
    assert len(point["params"]["W"]) == 3 and len(point["params"]["W"][0]) == 2
    SOFTMAX.batch([point])  # accepted as-is


@given(points(QUAD, uniform=True))
def test_uniform_points_stay_in_domain(point):
    assert all(-3 <= v <= 3 for v in point["params"].values())


@given(points(QUAD, cancellation="only"))
def test_cancellation_points(point):
    p = point["params"]
    x = point["x"]
    assert point["y"] == p["w1"] * x**2 + p["w2"] * x + p["b"]


@settings(max_examples=20)
@given(points(QUAD, max_magnitude=10))
def test_magnitude_cap(point):
    assert all(abs(v) <= 10 for v in point["params"].values())
