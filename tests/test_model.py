import numpy as np
import pytest

from gradcheck_lab import InvalidValueError, Model, UsageError, Var, get_model
from gradcheck_lab.ops import FUNCTIONS, backend


def test_every_backend_has_every_function():
    for name in ("sympy", "torch", "numpy", "float"):
        ops = backend(name)
        assert set(FUNCTIONS) <= set(vars(ops))


@pytest.mark.parametrize("fn", ["sigmoid", "softplus", "tanh", "exp", "sin"])
def test_numpy_backend_matches_float_backend(fn):
    z = np.linspace(-30, 30, 61)
    got = getattr(backend("numpy"), fn)(z)
    want = [getattr(backend("float"), fn)(float(v)) for v in z]
    assert np.allclose(got, want, rtol=1e-14, atol=0)


def test_logsumexp_is_stable():
    assert backend("numpy").logsumexp([np.array(1000.0), np.array(1000.0)]) == pytest.approx(1000 + np.log(2))


def test_theta_with_overrides():
    m = get_model("mlp", H=3)
    th = m.theta_with({"W1": [1, 2, 3], "b1[1]": 7, "b2": 0.5})
    assert list(th[:3]) == [1, 2, 3] and th[4] == 7 and th[-1] == 0.5
    with pytest.raises(InvalidValueError, match="shape"):
        m.theta_with({"W1": [1, 2]})


def test_sample_is_reproducible_and_in_domain():
    m = get_model("quadratic")
    a, b = m.sample(100, seed=4, spread=False), m.sample(100, seed=4, spread=False)
    assert np.array_equal(a.theta, b.theta) and np.array_equal(a.data, b.data)
    assert np.all(np.abs(a.theta) <= 3)


def test_sample_does_not_depend_on_chunking():
    m = get_model("mlp", H=2)
    whole = m.sample(3000, seed=7)
    parts = [m.sample(700, seed=7, start=s) for s in range(0, 2800, 700)] + [m.sample(200, seed=7, start=2800)]
    assert np.array_equal(whole.theta, np.concatenate([p.theta for p in parts]))
    assert np.array_equal(whole.data, np.concatenate([p.data for p in parts]))


def test_every_eighth_point_spreads_over_magnitudes():
    from gradcheck_lab.model import SPREAD_EVERY

    m = get_model("quadratic")
    b = m.sample(8000, seed=1)
    tail = np.abs(b.theta[SPREAD_EVERY - 1 :: SPREAD_EVERY])
    body = np.delete(np.abs(b.theta), np.s_[SPREAD_EVERY - 1 :: SPREAD_EVERY], axis=0)
    assert np.all(body <= 3)
    assert tail.max() > 100 and tail.min() < 0.01 and np.all(tail <= m.params[0].max_abs)


def test_class_target_one_hot():
    m = get_model("softmax")
    b = m.batch([{"x": [1, 2], "y": 2}])
    assert list(b.data[0]) == [1, 2, 0, 0, 1]
    assert m.describe_point(b, 0)["y"] == 2


def test_from_function_validates():
    with pytest.raises(UsageError, match="loss"):
        Model.from_function(lambda ops, p, v: p.w, params={"w": 1}, loss="hinge")
    with pytest.raises(UsageError, match="distinct"):
        Model.from_function(lambda ops, p, v: p.x, params={"x": 1})
    with pytest.raises(UsageError, match="identifier"):
        Model.from_function(lambda ops, p, v: 1, params=[Var("__class__")])


def test_binary_target_checked():
    m = get_model("logistic")
    with pytest.raises(InvalidValueError, match="0 or 1"):
        m.batch([{"x": 1, "y": 0.5}])


def test_duplicate_variable_names_are_refused_and_many_names_are_checked_quickly():
    with pytest.raises(UsageError, match=r"distinct variable names but \['w'\]"):
        Model.from_function(lambda ops, p, v: p.w * v.x, params=[Var("w"), Var("w")])
    # 150,528 parameters (a 224x224 image): counted once, not name by name (200 s before)
    many = [Var(f"p{i}") for i in range(150_528)]
    model = Model.from_function(lambda ops, p, v: p.p0 * v.x, params=many)
    assert model.n_params == 150_528
