"""The verdict: tolerances, the referee naming the engine at fault, kinks."""

import numpy as np
import pytest

from gradcheck_lab.catalog import get_model
from gradcheck_lab.compare import compare
from gradcheck_lab.engines import Gradients, engine
from gradcheck_lab.model import Model


def scaled(name, factor, where=None):
    """An engine that returns ``factor`` times the real one (at component ``where``)."""
    real = engine(name)

    def wrong(model, batch, **kw):
        g = real(model, batch, **kw)
        v = g.values.copy()
        if where is None:
            v *= factor
        else:
            v[:, where] *= factor
        return Gradients(g.engine, v, g.dtype, g.error, g.kink, g.lower, g.upper)

    return wrong


@pytest.mark.parametrize("eng", ["symbolic", "autograd", "finite_differences"])
def test_wrong_engine_is_named(eng):
    m = get_model("quadratic")
    b = m.sample(50, seed=0)
    c = compare(m, b, engines={eng: scaled(eng, 1 + 1e-6, where=1)})
    assert c.fault[eng][:, 1].all()
    for other in c.fault:
        if other != eng:
            assert not c.fault[other].any()
    assert not c.fault[eng][:, [0, 2]].any()


def test_agreement_has_no_fault():
    m = get_model("softmax")
    c = compare(m, m.sample(200, seed=1))
    assert not c.any_fault().any()
    assert not c.refereed.any()  # nobody disagreed: the referee was not needed


def test_float32_autograd_passes_with_derived_tolerance():
    m = get_model("mlp")
    c = compare(m, m.sample(300, seed=2), dtype="float32")
    assert not c.any_fault().any()


def test_cancellation_point_is_not_a_false_failure():
    m = get_model("quadratic")
    # Target equal to the prediction in float64: the gradient is pure rounding.
    w1, w2, b, x = 123.456, -7.89, 0.001, 31.7
    y = w1 * x**2 + w2 * x + b
    batch = m.batch([{"x": x, "y": y, "params": {"w1": w1, "w2": w2, "b": b}}])
    c = compare(m, batch, dtype="float32")
    assert not c.any_fault().any()


def test_kink_accepts_any_subgradient():
    m = Model.from_function(lambda ops, p, v: ops.relu(p.w * v.x + p.b), params={"w": 0.0, "b": 0.0})
    b = m.batch([{"x": 1.0, "y": -1.0}])
    c = compare(m, b, referee_rows=np.array([True]))
    assert c.kink.all()
    assert not c.any_fault().any()  # torch says 0, SymPy's Piecewise says 2: both in [0, 2]


def test_candidate_outside_kink_interval_fails():
    m = Model.from_function(lambda ops, p, v: ops.relu(p.w * v.x + p.b), params={"w": 0.0, "b": 0.0})
    b = m.batch([{"x": 1.0, "y": -1.0}])
    cand = Gradients("candidate", np.array([[5.0, 5.0]]))
    c = compare(m, b, candidate=cand)
    assert c.fault["candidate"].all()


@pytest.mark.parametrize(
    "x, note",
    [(800.0, "infinite or beyond float64's range"), (0.0, "undefined"), (-1.0, "undefined (not real)")],
)
def test_points_without_a_float64_answer_are_not_judged(x, note):
    from gradcheck_lab import verify

    fn = (lambda ops, p, v: ops.exp(p.w * v.x)) if x == 800.0 else (lambda ops, p, v: ops.log(p.w * v.x))
    m = Model.from_function(fn, params={"w": 1.0})
    rep = verify(m, points=[{"x": x, "y": 1.0}], random=0)
    assert rep.ok and "not judged" in rep.message
    assert any(note in n for n in rep.notes)


def test_float32_engine_not_judged_where_rounding_crosses_a_kink():
    from gradcheck_lab import get_model, verify

    m = get_model("mlp", H=4, activation="relu")
    point = {"x": -1.0, "y": 1.0, "params": {"W1": [0, 0, -4.6e-247, 0], "b1": [0] * 4, "W2": [0, 0, 1, 0], "b2": 0}}
    rep = verify(m, points=[point], random=0, dtype="float32")  # -4.6e-247 is 0 in float32: on the kink
    assert rep.ok and any("rounding the inputs to float32" in n for n in rep.notes)
    assert verify(m, points=[point], random=0, dtype="float64").notes == []


@pytest.mark.parametrize("expr", ["1/(w*x)", "sqrt(w*x)", "log(w*x)"])
def test_poles_and_domain_edges_in_the_stencil_do_not_blame_fd(expr):
    from gradcheck_lab import verify

    m = Model.from_expr(expr, params="w")
    rep = verify(m, points=[], random=3000, seed=0)
    assert rep.ok, rep.message
