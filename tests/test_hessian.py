"""verify(order=2): the Hessian checked like a gradient (hessian.py)."""

import numpy as np
import pytest

from gradcheck_lab import UsageError, get_model, verify
from gradcheck_lab.engines import Gradients, engine
from gradcheck_lab.engines.symbolic import hessian
from gradcheck_lab.hessian import hvp_model


def test_full_hessian_at_the_given_point_matches_sympy_hessian():
    model = get_model("mlp", H=2)
    point = dict(model.dataset[0])
    report = verify(model, order=2, points=[point], random=10)
    assert report.ok, report.message
    th, da = model.symbols()
    batch = model.batch([point])
    subs = dict(zip(th, batch.theta[0])) | dict(zip(da, batch.data[0]))
    want = np.array(hessian(model).subs(subs).evalf(), dtype=float)
    got = np.array([[c.exact for c in pc.checks] for pc in report.data_points])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_wrong_double_backward_is_blamed():
    def off(model, batch, *, dtype="float64", device="cpu"):
        g = engine("autograd")(model, batch, dtype=dtype, device=device)
        return Gradients("autograd", g.values * (1 + 1e-6), dtype=dtype)

    report = verify("logistic", order=2, points=[{"x": 0.5, "y": 1}], random=5, engines={"autograd": off})
    assert not report.ok and report.at_fault == ["autograd"]


def test_derived_model_is_cached_and_named():
    model = get_model("quadratic")
    derived = hvp_model(model)
    assert hvp_model(model) is derived
    assert derived.inputs[-1].name == "direction" and derived.inputs[-1].shape == (model.n_params,)


def test_order_is_validated_and_candidates_refused():
    with pytest.raises(UsageError, match="order"):
        verify("quadratic", order=3)
    with pytest.raises(UsageError, match="first order"):
        verify("quadratic", order=2, candidate=lambda p, v: p)


def test_cli_order_2(cli):
    code, out, _ = cli("verify", "softmax", "--order", "2", "--points", "5", "--quiet")
    assert code == 0, out
    code, _, err = cli("verify", "quadratic", "--order", "3")
    assert code == 2 and "order" in err
