import math

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


@settings(max_examples=200)
@given(points(get_model("mlp"), cancellation=False))
def test_spread_values_never_exceed_max_abs(point):
    # 10 ** log10(5) is 5.000000000000001: the magnitude is clamped at max_abs itself
    flat = [*point["params"]["W1"], *point["params"]["b1"], *point["params"]["W2"], point["params"]["b2"]]
    assert all(abs(v) <= 5.0 for v in flat)


def test_one_float_decodes_to_zero_boundaries_and_the_log_spread():
    from gradcheck_lab.strategies import _Spread

    spread = _Spread(1e-3, 5.0)
    assert spread(0.0) == 0.0 and spread(-0.0) == 0.0 and spread(spread.ZERO) == 0.0
    assert spread(1.0) == 5.0 and spread(-1.0) == -5.0
    assert abs(spread(math.nextafter(spread.ZERO, 1)) - 1e-3) < 1e-15
    mid = (1 + spread.ZERO) / 2  # halfway in the exponent: sqrt(1e-3 * 5)
    assert math.isclose(spread(-mid), -math.sqrt(5e-3))
    nozero = _Spread(1e-3, 5.0, zeros=False)
    assert nozero(0.0) == 1e-3 and nozero(-1e-300) == -1e-3 and nozero(1.0) == 5.0
