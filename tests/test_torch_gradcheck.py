"""gradcheck_lab.gradcheck / gradgradcheck: the drop-in for torch.autograd's, on real custom Functions."""

import functools
import inspect
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradcheck_lab import GradientMismatch, UsageError, gradcheck, gradgradcheck

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "examples"))
import custom_functions as cf  # noqa: E402


def _t(*shape, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).requires_grad_(True)


def _cases(dtype):
    return {
        "LinearFunction": (cf.LinearFunction.apply, (_t(4, 3, dtype=dtype), _t(2, 3, dtype=dtype, seed=1), _t(2, dtype=dtype, seed=2))),
        "MulConstant": (cf.MulConstant.apply, (_t(2, 3, dtype=dtype), 2.5)),
        "Exp": (cf.Exp.apply, (_t(2, 3, dtype=dtype),)),
        "Swish": (cf.Swish.apply, (_t(2, 3, dtype=dtype),)),
        "Softplus": (cf.Softplus.apply, (_t(2, 3, dtype=dtype),)),
        "LayerNorm": (cf.LayerNorm.apply, (_t(2, 3, dtype=dtype),)),
        "MatMul": (cf.MatMul.apply, (_t(3, 3, dtype=dtype), _t(3, 3, dtype=dtype, seed=1))),
    }


BUGS = {
    "missing factor": (cf.BuggySwish.apply, lambda dt: (_t(2, 3, dtype=dt),)),
    "transposed product": (cf.BuggyMatMul.apply, lambda dt: (_t(3, 3, dtype=dt), _t(3, 3, dtype=dt, seed=1))),
    "dropped variance term": (cf.LayerNormNoVarianceTerm.apply, lambda dt: (_t(2, 3, dtype=dt),)),
    "not the gradient": (cf.StraightThroughClamp.apply, lambda dt: (_t(2, 3, dtype=dt, scale=2.0),)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(_cases(torch.float64)))
def test_correct_functions_pass(name, dtype):
    func, inputs = _cases(dtype)[name]
    assert gradcheck(func, inputs) is True


@pytest.mark.parametrize("name", ["Exp", "Swish", "LayerNorm", "MatMul"])
def test_torch_gradcheck_fails_the_same_correct_functions_in_float32(name):
    func, inputs = _cases(torch.float32)[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(func, inputs, raise_exception=False) is False
    assert gradcheck(func, inputs) is True


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("bug", list(BUGS))
def test_buggy_backwards_are_caught(bug, dtype):
    func, make = BUGS[bug]
    assert gradcheck(func, make(dtype), raise_exception=False) is False
    with pytest.raises(GradientMismatch) as info:
        gradcheck(func, make(dtype))
    assert isinstance(info.value, AssertionError)
    assert "backward" in str(info.value) and "At fault" in str(info.value)


def test_layernorm_ignoring_eps_is_caught_in_float64():
    x = _t(2, 4)
    with pytest.raises(GradientMismatch) as info:
        cf_fn = cf.LayerNormIgnoresEps.apply
        gradcheck(cf_fn, (x,))
    assert "input0[" in str(info.value)
    assert gradcheck(cf.LayerNorm.apply, (x,)) is True


def test_message_names_input_element_output_element_values_and_engine():
    a, b = _t(3, 3), _t(3, 3, seed=1)
    with pytest.raises(GradientMismatch) as info:
        gradcheck(lambda left, right: cf.BuggyMatMul.apply(left, right), (a, b))
    text = str(info.value)
    assert "left[" in text and "output 0 element (" in text
    assert "the exact value is" in text and "finite differences" in text and "symbolic" in text
    assert "At fault: backward (candidate)" in text
    assert info.value.report is not None and "candidate" in info.value.report.at_fault


@pytest.mark.parametrize("fn", [torch.relu, torch.abs], ids=["relu", "abs"])
def test_kinks_pass_at_exact_zero(fn):
    x = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 0.5, -0.3]], dtype=torch.float64, requires_grad=True)
    assert gradcheck(fn, (x,)) is True


def test_relu_at_zero_fails_torch_gradcheck():
    x = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(torch.relu, (x,), raise_exception=False) is False
    assert gradcheck(torch.relu, (x,)) is True


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()


def test_sequential_module_checked_with_its_parameters():
    net = _mlp()
    assert gradcheck(net, (_t(2, 3),)) is True


class _Wrapped(torch.nn.Module):
    def __init__(self, net, buggy=False):
        super().__init__()
        self.net, self.buggy = net, buggy

    def forward(self, x):
        h = self.net(x)
        return cf.BuggySwish.apply(h) if self.buggy else cf.Swish.apply(h)


def test_module_parameter_names_with_dots_and_a_bug_inside():
    net = _mlp()
    assert gradcheck(_Wrapped(net), (_t(2, 3, seed=3).detach(),)) is True
    with pytest.raises(GradientMismatch) as info:
        gradcheck(_Wrapped(net, buggy=True), (_t(2, 3, seed=3).detach(),))
    assert "net.0.weight[" in str(info.value) or "net.2." in str(info.value)


def test_gradgradcheck_catches_a_detached_factor():
    x = _t(4)
    assert gradgradcheck(cf.Square.apply, (x,)) is True
    assert gradgradcheck(cf.DetachedSquare.apply, (x,), raise_exception=False) is False
    with pytest.raises(GradientMismatch, match="double backward"):
        gradgradcheck(cf.DetachedSquare.apply, (x,))
    # right to first order
    assert gradcheck(cf.DetachedSquare.apply, (x,)) is True


def test_gradgradcheck_with_grad_outputs_and_float32():
    x = _t(2, 2, dtype=torch.float32)
    go = torch.ones(2, 2, dtype=torch.float32)
    assert gradgradcheck(cf.Swish.apply, (x,), go) is True


class _ExpWithJvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_forward(y)
        return y

    @staticmethod
    def backward(ctx, g):  # pragma: no cover - forward mode only
        raise NotImplementedError

    @staticmethod
    def jvp(ctx, t):
        (y,) = ctx.saved_tensors
        return t * y * ctx.factor if hasattr(ctx, "factor") else t * y


class _ExpWrongJvp(_ExpWithJvp):
    @staticmethod
    def jvp(ctx, t):
        (y,) = ctx.saved_tensors
        return t * y * 1.001


def test_forward_mode_ad_against_the_symbolic_directional_derivative():
    x = _t(3)
    assert gradcheck(lambda t: t.sin() * t, (x,), check_forward_ad=True) is True
    assert gradcheck(_ExpWithJvp.apply, (x,), check_forward_ad=True, check_backward_ad=False) is True
    with pytest.raises(GradientMismatch, match="forward-mode AD"):
        gradcheck(_ExpWrongJvp.apply, (x,), check_forward_ad=True, check_backward_ad=False)


def _numpy_sin(backward_error: float, jvp_error: float):
    """sin computed by NumPy (outside torch: the fallback judges it), with a backward and a JVP."""

    class NpSin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            ctx.save_for_forward(x)
            return torch.from_numpy(np.sin(x.detach().numpy()))

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x.cos() * (1 + backward_error)

        @staticmethod
        def jvp(ctx, t):
            (x,) = ctx.saved_tensors
            return t * x.cos() * (1 + jvp_error)

    return NpSin.apply


def test_check_forward_ad_checks_the_backward_too_outside_torch():
    # as torch's: with check_forward_ad=True the backward is still checked (the fallback checked the JVP only,
    # and a backward of roma's procrustes off by 1e-6 passed)
    x = _t(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # symbolic and referee legs missing: NumPy
        assert gradcheck(_numpy_sin(0.0, 0.0), (x,), check_forward_ad=True) is True
        with pytest.raises(GradientMismatch, match="the backward of"):
            gradcheck(_numpy_sin(1e-6, 0.0), (x,), check_forward_ad=True)
        with pytest.raises(GradientMismatch, match="forward-mode AD"):
            gradcheck(_numpy_sin(0.0, 1e-6), (x,), check_forward_ad=True)
        assert gradcheck(_numpy_sin(1e-6, 0.0), (x,), check_forward_ad=True, check_backward_ad=False) is True


def test_a_nan_output_at_the_given_inputs_fails_as_under_torch():
    # Note [NaN outputs]: entmax's normmax_bisect with alpha < 1 returned NaN; ours passed, "nothing was judged"
    x = _t(2, 3)
    f = _numpy_sin(0.0, 0.0)

    def partly_nan(t):
        return f(t) * torch.tensor([[1.0, float("nan"), 1.0], [1.0, 1.0, 1.0]], dtype=t.dtype)

    with pytest.raises(GradientMismatch, match=r"NaN at the given inputs: output 0 element \(0, 1\) is nan"):
        gradcheck(partly_nan, (x,))
    assert gradcheck(partly_nan, (x,), raise_exception=False) is False
    assert torch.autograd.gradcheck(partly_nan, (x,), raise_exception=False) is False


def _sparsemax_by_bisection(iterations: int, error: float = 0.0):
    """sparsemax's forward by bisection on its threshold, and its exact backward (off by ``error``)."""

    def forward(x):
        lo, hi = x.amax(-1, keepdim=True) - 1, x.amax(-1, keepdim=True)
        for _ in range(iterations):
            mid = (lo + hi) / 2
            above = torch.relu(x - mid).sum(-1, keepdim=True) >= 1
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return torch.relu(x - (lo + hi) / 2)

    class SparsemaxBisect(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            p = forward(x)
            ctx.save_for_backward(p)
            return p

        @staticmethod
        def backward(ctx, g):
            (p,) = ctx.saved_tensors
            s = (p > 0).to(g.dtype)
            return s * (g - (g * s).sum(-1, keepdim=True) / s.sum(-1, keepdim=True)) * (1 + error)

    return SparsemaxBisect.apply


@pytest.mark.parametrize("path", ["per-element", "proof first"])
def test_a_selection_by_bisection_is_judged_by_the_functions_differences(path, monkeypatch):
    # Note [Differences overrule]: the graph is the function piece by piece (pieces of 2**-50), its exact
    # derivative the piece's (0 where sparsemax's is 0.5): the correct backward was blamed, torch passes it
    from gradcheck_lab import torch_check

    if path == "per-element":
        monkeypatch.setattr(torch_check, "PROOF_FIRST_WORK", 10**9)
    iterations, x = 50, _t(4, 6, seed=3)
    with pytest.warns(RuntimeWarning, match="exact derivative differs from finite differences"):
        assert gradcheck(_sparsemax_by_bisection(iterations), (x,)) is True
    with pytest.raises(GradientMismatch, match="finite differences") as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradcheck(_sparsemax_by_bisection(iterations, 1e-6), (x,))
    assert "the exact value is 0" not in str(info.value)
    assert torch.autograd.gradcheck(_sparsemax_by_bisection(iterations, 1e-6), (x,))  # torch misses it


def test_forward_mode_of_a_selection_by_bisection_is_judged_by_the_functions_differences():
    # with check_forward_ad no tensor-level leg runs: the per-element report's component at the given inputs
    # is checked against the real function's differences (Note [Differences overrule])
    def with_jvp(error):
        apply = _sparsemax_by_bisection(50, error)
        cls, forward = apply.__self__, apply.__self__.forward

        def fwd(ctx, x):
            out = forward(ctx, x)
            ctx.save_for_forward(out)
            return out

        def jvp(ctx, v):
            (p,) = ctx.saved_tensors
            s = (p > 0).to(v.dtype)
            return s * (v - (v * s).sum(-1, keepdim=True) / s.sum(-1, keepdim=True)) * (1 + error)

        cls.forward, cls.jvp = staticmethod(fwd), staticmethod(jvp)
        return apply

    x = _t(4, 6, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gradcheck(with_jvp(0.0), (x,), check_forward_ad=True) is True
        with pytest.raises(GradientMismatch, match="forward-mode AD"):
            gradcheck(with_jvp(1e-6), (x,), check_forward_ad=True, check_backward_ad=False)


def test_nothing_to_check_is_a_usage_error():
    with pytest.raises(UsageError, match="check_backward_ad or check_forward_ad"):
        gradcheck(torch.sin, (_t(3),), check_backward_ad=False)


def test_tuple_outputs_and_non_tensor_arguments_pass_through():
    a, b = _t(3), _t(3, seed=1)

    def f(u, v, k, mode):
        assert mode == "sum"
        return u * v * k, (u - v).exp().sum()

    assert gradcheck(f, (a, b, 3.0, "mode" if False else "sum")) is True


def test_more_outputs_than_the_full_jacobian_limit_use_random_cotangents():
    from gradcheck_lab.torch_check import MAX_JACOBIAN

    x = _t(9, 9)
    assert x.numel() > MAX_JACOBIAN
    assert gradcheck(lambda t: t.tanh() * 2, (x,), points=2) is True
    with pytest.raises(GradientMismatch, match="random cotangent"):
        gradcheck(cf.BuggySwish.apply, (x,), points=0)


def test_user_tolerances_replace_the_derived_ones():
    x = _t(2, 3, dtype=torch.float32)

    class Off(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            ctx.save_for_backward(t)
            return t.exp()

        @staticmethod
        def backward(ctx, g):
            (t,) = ctx.saved_tensors
            return g * t.exp() * (1 + 1e-3)

    assert gradcheck(Off.apply, (x,), raise_exception=False) is False
    assert gradcheck(Off.apply, (x,), atol=1e-2, rtol=1e-2) is True


def test_ops_outside_the_table_fall_back_to_finite_differences():
    class WrongLgamma(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return torch.lgamma(t)

        @staticmethod
        def backward(ctx, g):
            return g

    x = _t(4)
    with pytest.warns(RuntimeWarning, match="symbolic and referee legs missing"):
        assert gradcheck(lambda t: torch.lgamma(t) ** 2, (x,)) is True
    with pytest.raises(GradientMismatch, match="legs missing: lgamma"):
        gradcheck(WrongLgamma.apply, (x,))


def test_fallback_blames_only_what_every_look_estimates(monkeypatch):
    # steps of |a| / 8 cross many jumps of trunc(3a) and see the smooth 3 a^2 (twice the slope); smaller
    # steps cross one jump and give no estimate: the correct backward (trunc(3a)) was blamed
    import gradcheck_lab.torch_check as tc

    x = _t(3, 3, scale=10.0)
    with warnings.catch_warnings():  # the tensor-level rules know trunc: derivative 0 off its jumps
        warnings.simplefilter("error", RuntimeWarning)
        assert gradcheck(lambda a: torch.trunc(a * 3) * a, (x,)) is True
    monkeypatch.setattr(tc, "_tensor_leg", lambda *a, **k: False)  # finite differences alone
    with pytest.warns(RuntimeWarning, match="legs missing"):
        assert gradcheck(lambda a: torch.trunc(a * 3) * a, (x,)) is True


def test_fallback_does_not_judge_where_the_forward_overflows_in_its_dtype():
    # float32 tanh(a) rounds to 1 for a > 9, erfinv(1) is inf: torch's backward gives NaN there (0 * inf)
    x = _t(3, 3, dtype=torch.float32, seed=1, scale=10.0)
    assert not torch.isfinite(torch.erfinv(torch.tanh(x))).all()
    with pytest.warns(RuntimeWarning, match="legs missing"):
        assert gradcheck(lambda a: torch.erfinv(torch.tanh(a)), (x,)) is True


def test_the_symbolic_legs_do_not_judge_where_the_forward_overflows_in_its_dtype():
    # the same with atanh, which the table has: exactly atanh(tanh(a)) = a, but float32 computes inf
    x = _t(3, 3, dtype=torch.float32, seed=1, scale=10.0)
    assert not torch.isfinite(torch.atanh(torch.tanh(x))).all()
    with pytest.warns(RuntimeWarning, match="outputs are not finite"):
        assert gradcheck(lambda a: torch.atanh(torch.tanh(a)), (x,)) is True


def _wrong(f, factor):
    """A Function with forward ``f`` and autograd's gradient of ``f`` times ``factor`` as its backward."""

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *xs):
            ctx.save_for_backward(*xs)
            return f(*xs)

        @staticmethod
        def backward(ctx, grad):
            xs = [x.detach().requires_grad_() for x in ctx.saved_tensors]
            with torch.enable_grad():
                gs = torch.autograd.grad(f(*xs), xs, grad)
            return tuple(g * factor for g in gs)

    return Wrong.apply


_UNIT = {"uniform": True}
_TABLE_OPS = {
    "asin": (lambda a: torch.asin(a) * a, 1, _UNIT),
    "acos": (lambda a: torch.acos(a), 1, _UNIT),
    "atanh": (lambda a: torch.atanh(a), 1, _UNIT),
    "acosh": (lambda a: torch.acosh(a.abs() + 1), 1, {}),
    "erfc": (lambda a: torch.log(torch.erfc(3 * a)), 1, {}),
    "atan2": (lambda a, b: torch.atan2(a, b), 2, {}),
    "hypot": (lambda a, b: torch.hypot(a, b), 2, {}),
    "logaddexp": (lambda a, b: torch.logaddexp(10 * a, b), 2, {}),
    "prod": (lambda a: a.prod(dim=-1), 1, {}),
    "cross_entropy": (lambda a: F.cross_entropy(a, torch.tensor([0, 2, 1])), 1, {}),
    "gather": (lambda a: torch.gather(a, 1, torch.tensor([[0, 0], [1, 2], [2, 1]])).exp().sum(), 1, {}),
}


@pytest.mark.parametrize("name", sorted(_TABLE_OPS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_table_ops_pass_correct_and_catch_wrong_backwards(name, dtype):
    f, n_in, how = _TABLE_OPS[name]
    g = torch.Generator().manual_seed(0)
    base = [torch.rand(3, 3, generator=g, dtype=torch.float64) * 1.8 - 0.9 if how else
            torch.randn(3, 3, generator=g, dtype=torch.float64) for _ in range(n_in)]

    def inputs():
        return tuple(b.to(dtype).requires_grad_() for b in base)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in the table: no fallback warning
        assert gradcheck(f, inputs()) is True
    small = 1e-7 if dtype == torch.float64 else 1e-3
    for factor in (-1.0, 1.0 + small):
        with pytest.raises(GradientMismatch, match="At fault: backward"):
            gradcheck(_wrong(f, factor), inputs())


@pytest.mark.parametrize("f, xs", [
    (torch.sqrt, ([0.0, 1.0],)),  # the exact derivative at 0 is infinite
    (torch.asin, ([1.0, -1.0, 0.3],)),
    (torch.hypot, ([0.0, 3.0], [0.0, 4.0])),  # a cone at the origin: 0/0 in the closed form
    (lambda a, b: torch.sqrt(a * a + b * b), ([0.0, 3.0], [0.0, 4.0])),
    (lambda a: a.norm(), ([0.0, 0.0, 0.0],)),
])
def test_torch_own_backwards_pass_where_the_derivative_does_not_exist(f, xs):
    # torch's own backward gives inf or NaN there (torch.autograd.gradcheck fails them all): no bug
    inputs = tuple(torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the zero-cotangent test has no evidence there
        assert gradcheck(f, inputs) is True


def test_a_finite_value_outside_the_cone_subgradients_is_still_wrong():
    # at the origin of sqrt(a^2 + b^2), each partial's subgradients are [-1, 1]: 5 is a bug
    class Cone(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return torch.sqrt(a * a + b * b)

        @staticmethod
        def backward(ctx, grad):
            a, b = ctx.saved_tensors
            r = torch.sqrt(a * a + b * b)
            safe = torch.where(r > 0, r, torch.ones_like(r))
            return grad * torch.where(r > 0, a / safe, 5.0), grad * torch.where(r > 0, b / safe, 0.0)

    xs = tuple(torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in ([0.0, 3.0], [0.0, 4.0]))
    with pytest.raises(GradientMismatch, match="At fault: backward"):
        gradcheck(Cone.apply, xs)


def test_celu_backward_rounds_alpha_to_float32():
    # torch's derivatives.yaml: celu's backward is elu_backward(..., 1.0 / alpha.toFloat(), ...), so for an
    # alpha float32 cannot hold, its float64 gradient is off by ~2e-8 relative: a real error torch's own
    # gradcheck (rtol 1e-3) cannot see. alpha = 0.5 is exact.
    import mpmath

    x = _t(3, 3)
    assert gradcheck(lambda a: torch.nn.functional.celu(a, 0.5), (x,))
    v = torch.tensor([-0.3], dtype=torch.float64, requires_grad=True)
    torch.nn.functional.celu(v, 0.7).sum().backward()
    off = abs(float(v.grad) / float(mpmath.exp(mpmath.mpf(-0.3) / mpmath.mpf(0.7))) - 1)
    if off > 1e-12:  # torch still rounds alpha
        with pytest.raises(GradientMismatch, match=r"backward of .*<lambda> is wrong"):
            gradcheck(lambda a: torch.nn.functional.celu(a, 0.7), (x,))
    assert gradcheck(lambda a: torch.nn.functional.celu(a, 0.7), (x.detach().float().requires_grad_(),))


@pytest.mark.parametrize(
    "module, shape",
    [
        (lambda: torch.nn.RNN(2, 2, batch_first=True), (1, 3, 2)),  # transpose_ (in place, a new shape) crashed
        (lambda: torch.nn.GRU(2, 3, batch_first=True), (1, 3, 2)),
        (lambda: torch.nn.LSTM(2, 2, batch_first=True), (1, 2, 2)),  # (out, (h, c)): torch's gradcheck crashes
    ],
    ids=["rnn", "gru", "lstm"],
)
def test_recurrent_modules_with_nested_outputs_and_in_place_views(module, shape):
    torch.manual_seed(0)
    assert gradcheck(module().double(), (_t(*shape),))


def test_safe_softmax_of_attention_compares_with_infinity_as_a_constant():
    # torch's attention softmax: where(all(x == -inf), 0, softmax(x)); summing the mask crashed SymPy
    x = _t(2, 3)
    assert gradcheck(lambda a: torch.ops.aten._safe_softmax(a, -1), (x,))
    assert gradcheck(lambda a: torch.where(a == float("-inf"), torch.zeros_like(a), a.exp()), (x,))


def test_ops_torch_can_decompose_keep_the_symbolic_leg():
    x = _t(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "legs missing" warning
        assert gradcheck(lambda t: torch.cumsum(t, 1) ** 2, (x,)) is True
        assert gradcheck(torch.nn.BatchNorm1d(4).double(), (x,)) is True  # training mode: batch statistics
        assert gradcheck(lambda t: t.var(1, unbiased=False) + t.std(), (x,)) is True

    class WrongCumsum(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return torch.cumsum(t, 0)

        @staticmethod
        def backward(ctx, g):
            return g  # the gradient of cumsum is the reversed cumsum

    with pytest.raises(GradientMismatch, match="backward of"):
        gradcheck(WrongCumsum.apply, (_t(4),))


def test_usage_errors():
    with pytest.raises(UsageError, match="requires grad"):
        gradcheck(torch.exp, (torch.ones(2, dtype=torch.float64),))
    with pytest.raises(UsageError, match="float32 or float64"):
        gradcheck(torch.exp, (torch.ones(2, dtype=torch.float16, requires_grad=True),))
    with pytest.raises(UsageError, match="points"):
        gradcheck(torch.exp, (_t(2),), points=-1)


def test_random_points_are_seeded():
    from gradcheck_lab.torch_check import _Target
    from gradcheck_lab.torch_graph import model_of, trace

    target = _Target(torch.sin, (_t(2, 2),))
    traced = trace(target.call, target.values, target.leaves)
    model = model_of(traced, [v.numpy() for v in target.values])
    a, b, c = model.sample(3, seed=0), model.sample(3, seed=0), model.sample(3, seed=1)
    assert (a.theta == b.theta).all() and not (a.theta == c.theta).all()
    # around the inputs: within 10% of each value, same sign
    base = model.init_theta()
    assert (abs(a.theta - base) <= 0.1 * abs(base) + 1e-12).all()


def test_signature_matches_torch():
    import inspect

    ours = inspect.signature(gradcheck).parameters
    theirs = inspect.signature(torch.autograd.gradcheck).parameters
    assert list(theirs) == [p for p in ours if p not in ("points", "seed", "reference", "parameters")]
    ours2 = inspect.signature(gradgradcheck).parameters
    theirs2 = inspect.signature(torch.autograd.gradgradcheck).parameters
    assert list(theirs2) == [p for p in ours2 if p not in ("points", "seed", "parameters")]


def test_eps_adds_torch_style_differences_to_the_message():
    with pytest.raises(GradientMismatch, match=r"torch-style finite differences at eps=1e-06 give"):
        gradcheck(cf.BuggySwish.apply, (_t(2, 3),), eps=1e-6)


def test_nondeterministic_backward_is_caught():
    class Noisy(torch.autograd.Function):
        calls = 0

        @staticmethod
        def forward(ctx, t):
            return t * 2

        @staticmethod
        def backward(ctx, g):
            Noisy.calls += 1
            return g * (2 + (4e-15 if Noisy.calls % 2 else 0.0))  # below the tolerance, not reproducible

    with pytest.raises(GradientMismatch, match="not reentrant"):
        gradcheck(Noisy.apply, (_t(3),), points=0)
    assert gradcheck(Noisy.apply, (_t(3),), points=0, nondet_tol=1e-12)


class _SeededBadDropout(torch.autograd.Function):
    """Dropout with its own seeded mask (deterministic) whose backward forgets the 1 / (1 - p) scale."""

    @staticmethod
    def forward(ctx, x):
        g = torch.Generator().manual_seed(0)
        mask = (torch.rand(x.shape, generator=g, dtype=x.dtype) > 0.5).to(x.dtype)
        ctx.save_for_backward(mask)
        return x * mask * 2

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask


@pytest.mark.parametrize(
    "func",
    [
        lambda a: a * torch.rand(4, dtype=torch.float64),  # was a false alarm: the trace held other random values
        lambda a: torch.nn.functional.dropout(a, 0.5),  # was a vacuous pass: finite differences of noise
        torch.nn.Sequential(torch.nn.Linear(4, 3).double(), torch.nn.Dropout(0.3)),  # a module in training mode
        # draws nothing from torch's generator: compared once more, not at each seed
        lambda a: a * torch.from_numpy(np.random.default_rng().random(4)),
    ],
    ids=["rand-factor", "dropout", "module-dropout", "numpy-random"],
)
def test_a_random_forward_is_refused_with_what_to_do(func):
    x = _t(4)
    with pytest.raises(UsageError, match=r"same outputs at the same inputs.*manual_seed.*eval\(\)"):
        gradcheck(func, (x,))


def test_a_forward_with_no_finite_output_is_refused():
    with pytest.raises(UsageError, match="finite output at the given inputs"):
        gradcheck(lambda a: a / 0.0, (_t(2),))


def test_gradgradcheck_refuses_a_random_forward_too():
    with pytest.raises(UsageError, match="same outputs at the same inputs"):
        gradgradcheck(lambda a: a.sin() * torch.rand(4, dtype=torch.float64), (_t(4),))


def test_seeded_randomness_is_checked_and_its_bugs_caught():
    def seeded_dropout(a):
        torch.manual_seed(0)
        return torch.nn.functional.dropout(a, 0.5)

    x = _t(4)
    with pytest.warns(RuntimeWarning, match="finite differences"):  # bernoulli_ has no symbolic leg
        assert gradcheck(seeded_dropout, (x,))
    with pytest.raises(GradientMismatch, match="backward of Function.apply is wrong"):
        gradcheck(_SeededBadDropout.apply, (x,))


from hypothesis import given, settings  # noqa: E402

from gradcheck_lab.strategies import tensors  # noqa: E402


@settings(max_examples=6, derandomize=True, deadline=None)
@given(tensors((2, 3), dtype="float32", max_magnitude=10.0))
def test_property_swish_float32_and_relu_with_zeros(x):
    assert gradcheck(cf.Swish.apply, (x,), points=2)
    assert gradcheck(torch.relu, (x,), points=2)


# ---------------------------------------------------------------- torch's structural checks


class _TwoOutputs(torch.autograd.Function):
    """x -> (2x, 3x); its backward assumes both output gradients are defined."""

    @staticmethod
    def forward(ctx, x):
        ctx.set_materialize_grads(False)
        return x * 2, x * 3

    @staticmethod
    def backward(ctx, g1, g2):
        return g1 * 2 + g2 * 3  # TypeError when an output gradient is undefined (None)


class _TwoOutputsHandled(_TwoOutputs):
    @staticmethod
    def backward(ctx, g1, g2):
        out = None
        if g1 is not None:
            out = g1 * 2
        if g2 is not None:
            out = g2 * 3 if out is None else out + g2 * 3
        return out


def test_undefined_output_gradients_are_checked_as_torch_does():
    x = _t(3)
    with pytest.raises(GradientMismatch, match="check_undefined_grad"):
        gradcheck(_TwoOutputs.apply, (x,))
    assert gradcheck(_TwoOutputs.apply, (x,), check_undefined_grad=False) is True
    assert gradcheck(_TwoOutputs.apply, (x,), raise_exception=False) is False
    assert gradcheck(_TwoOutputsHandled.apply, (x,)) is True
    with pytest.raises((TypeError, RuntimeError)):  # torch agrees on both
        torch.autograd.gradcheck(_TwoOutputs.apply, (x,))
    assert torch.autograd.gradcheck(_TwoOutputsHandled.apply, (x,))


class _NotMultipliedByGradOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2 + 1e-300  # below any tolerance, but not zero for a zero cotangent


def test_a_backward_not_linear_in_its_cotangent_fails_the_zero_cotangent_check():
    with pytest.raises(GradientMismatch, match="structural check check_backward_ad.*grad_output"):
        gradcheck(_NotMultipliedByGradOutput.apply, (_t(3),))


class _NumpyBackward(torch.autograd.Function):
    """A backward computed in NumPy: right values, but it cannot run under vmap."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return torch.from_numpy(2 * x.detach().numpy() * g.detach().numpy())


def test_batched_gradients_are_checked_only_when_asked():
    x = _t(2, 3)
    assert gradcheck(_NumpyBackward.apply, (x,)) is True
    with pytest.raises(GradientMismatch, match="check_batched_grad"):
        gradcheck(_NumpyBackward.apply, (x,), check_batched_grad=True)
    assert gradcheck(cf.Swish.apply, (x,), check_batched_grad=True, check_grad_dtypes=True) is True
    assert gradcheck(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()).double(), (x,),
                     check_batched_grad=True, check_grad_dtypes=True) is True


def test_structural_keywords_need_their_mode_as_in_torch():
    with pytest.raises(UsageError, match="check_backward_ad=True with check_batched_grad=True"):
        gradcheck(cf.Exp.apply, (_t(3),), check_batched_grad=True, check_backward_ad=False)
    with pytest.raises(UsageError, match="check_forward_ad=True with check_batched_forward_grad=True"):
        gradcheck(cf.Exp.apply, (_t(3),), check_batched_forward_grad=True)


def test_gradgradcheck_forward_over_reverse_and_structural_checks():
    x = _t(4)
    assert gradgradcheck(lambda t: t.exp() * t, (x,), check_fwd_over_rev=True) is True
    assert gradgradcheck(lambda t: torch.tanh(t) * t, (x,), check_fwd_over_rev=True, check_rev_over_rev=False) is True
    assert gradgradcheck(cf.Swish.apply, (x,), check_batched_grad=True, check_grad_dtypes=True) is True
    with pytest.raises(NotImplementedError, match="jvp"):  # as torch: forward AD needs the Function's jvp
        gradgradcheck(cf.Swish.apply, (x,), check_fwd_over_rev=True)


def test_gradgradcheck_checks_undefined_gradients_of_the_first_derivative():
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            ctx.save_for_backward(t)
            return t * t

        @staticmethod
        def backward(ctx, g):
            (t,) = ctx.saved_tensors
            return _Twice.apply(t, g)

    class _Twice(torch.autograd.Function):
        """2 t g, whose own backward assumes its output gradient is defined."""

        @staticmethod
        def forward(ctx, t, g):
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(t, g)
            return 2 * t * g

        @staticmethod
        def backward(ctx, h):
            t, g = ctx.saved_tensors
            return 2 * g * h, 2 * t * h  # TypeError for an undefined h

    x = _t(3)
    with pytest.raises(GradientMismatch, match="check_undefined_grad"):
        gradgradcheck(Square.apply, (x,))
    assert gradgradcheck(Square.apply, (x,), check_undefined_grad=False) is True


def test_gen_non_contig_grad_outputs_reaches_the_backward():
    seen = []

    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            ctx.save_for_backward(t)
            return t**3

        @staticmethod
        def backward(ctx, g):
            seen.append(g.is_contiguous())
            (t,) = ctx.saved_tensors
            return 3 * t**2 * g

    x = _t(2, 3)
    assert gradgradcheck(Cube.apply, (x,), gen_non_contig_grad_outputs=True, points=0) is True
    assert False in seen
    seen.clear()
    assert gradgradcheck(Cube.apply, (x,), points=0) is True
    assert seen and all(seen)


def test_a_backward_wrong_only_beyond_softplus_threshold_is_caught_and_torch_softplus_passes():
    x = _t(3, 4, scale=10.0, seed=4)  # some elements beyond 20
    assert (x > 20).any()
    with pytest.raises(GradientMismatch, match="backward"):
        gradcheck(cf.ThresholdSoftplus.apply, (x,))
    assert torch.autograd.gradcheck(cf.ThresholdSoftplus.apply, (x,))  # torch's tolerance misses it
    assert gradcheck(torch.nn.functional.softplus, (x,)) is True  # torch's own softplus is consistent
    assert gradcheck(cf.Softplus.apply, (x,)) is True


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("scale", [10.0, 100.0])
def test_fused_torch_functions_at_large_inputs_pass(dtype, scale):
    """log_softmax/softmax backwards round inside fused kernels (exp(out) -> 1); exp overflows in float32."""
    F = torch.nn.functional
    for seed in range(3):
        x = _t(3, 4, dtype=dtype, scale=scale, seed=seed)
        for f in (lambda t: torch.log_softmax(t, -1), lambda t: torch.softmax(t, -1), F.softplus, torch.exp):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert gradcheck(f, (x,), seed=seed) is True


def test_elu_at_zero_every_engine_gives_the_derivative():
    # elu with alpha = 1 is differentiable at 0 (derivative 1 on both sides): written as a sum of relus,
    # SymPy read 2 and torch 0 there, and the call warned that our own engines disagree
    x = torch.tensor([0.0, -1.0, 2.0, 800.0], dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(F.elu, (x,)) is True
        assert gradcheck(lambda a: F.elu(a, 0.7), (x,)) is True  # a real kink: alpha on the left
    with pytest.raises(GradientMismatch):
        gradcheck(_wrong(F.elu, 1 + 1e-7), (x,))


def test_sign_is_in_the_table():
    x = torch.tensor([0.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    f = lambda a: torch.sign(a) * a * a  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(f, (x,)) is True
    with pytest.raises(GradientMismatch):
        gradcheck(_wrong(f, 1 + 1e-7), (x,))


def test_empty_inputs_have_nothing_to_check():
    empty = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="nothing to check"):
        assert gradcheck(lambda a: a.sum(0), (empty,)) is True
    with pytest.warns(RuntimeWarning, match="nothing to check"):
        assert gradgradcheck(lambda a: a.sum(0), (empty,)) is True
    # beside a non-empty input, the empty one is passed through and the other checked
    x = _t(3)
    assert gradcheck(lambda a, b: a.sum(0) + b.exp(), (empty, x)) is True
    with pytest.raises(GradientMismatch):
        gradcheck(_wrong(lambda a, b: a.sum(0) + b.exp(), 1.001), (empty, x))


def test_inputs_near_the_largest_float_give_finite_random_points():
    # logsumexp's mask value -1e308: random points around it once drew from an infinite range
    x = torch.tensor([-1.7e308, 0.0, 1.7e308], dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(lambda a: torch.logsumexp(a[:2], 0) + a[2] * 0.5, (x,)) is True


def test_random_points_the_forward_refuses_are_skipped_and_counted():
    # binary_cross_entropy refuses inputs above 1: the random points around 0.95 reach them
    t = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    x = torch.tensor([0.95, 0.01, 0.5], dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning, match=r"\d+ of 8 random points refused by the function"):
        assert gradcheck(lambda a: F.binary_cross_entropy(a, t), (x,)) is True
    with pytest.warns(RuntimeWarning, match="refused"), pytest.raises(GradientMismatch):
        gradcheck(_wrong(lambda a: F.binary_cross_entropy(a, t), 1 + 1e-7), (x,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(lambda a: F.binary_cross_entropy(a, t), (x,), points=0) is True


def _conv_function(bug=None):
    """A hand-written strided convolution, its backward from torch.nn.grad, with one classic bug."""
    from torch.nn.grad import conv2d_input, conv2d_weight

    class Conv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b):
            ctx.save_for_backward(x, w)
            return F.conv2d(x, w, b, stride=2, padding=1)

        @staticmethod
        def backward(ctx, grad):
            x, w = ctx.saved_tensors
            gx = conv2d_input(x.shape, w.flip(-1) if bug == "flipped kernel" else w, grad, stride=2, padding=1)
            gw = conv2d_weight(x, w.shape, grad, stride=2, padding=1)
            gw = gw.transpose(-1, -2) if bug == "transposed weight grad" else gw
            gb = grad.sum((0, 2, 3)) / (grad.shape[0] if bug == "bias mean" else 1)
            return gx, gw, gb

    return Conv.apply


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_hand_written_convolution_is_checked_symbolically(dtype):
    inputs = (_t(2, 2, 5, 5, dtype=dtype), _t(3, 2, 3, 3, dtype=dtype, seed=1), _t(3, dtype=dtype, seed=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # convolution is in the table: no fallback
        assert gradcheck(_conv_function(), inputs) is True
    for bug, culprit in (("flipped kernel", "input0"), ("transposed weight grad", "input1"), ("bias mean", "input2")):
        with pytest.raises(GradientMismatch, match=rf"/ d\[{culprit}\["):
            gradcheck(_conv_function(bug), inputs)


def test_a_transformer_layer_is_checked_and_its_wrong_backward_caught(monkeypatch):
    # Note [Named conditions]: its masks and relus are Piecewises nested in conditions; SymPy's folding
    # of them kept a first call running for over 10 minutes, printing the failing report 140 s more
    from gradcheck_lab import torch_check

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, batch_first=True).eval().double()
    x = _t(1, 3, 4)
    assert gradcheck(layer, (x,)) is True
    # Note [Proof first]: 1,694 element operations, so the tensor referee proves the fault before any derivation
    with pytest.raises(GradientMismatch, match="proven in ball arithmetic") as info:
        gradcheck(_wrong(lambda a: layer(a), 1 + 1e-6), (x,))
    assert "At fault: backward (candidate)" in str(info.value) and info.value.report is None
    monkeypatch.setattr(torch_check, "PROOF_FIRST_WORK", 10**9)  # the per-element path and its report
    with pytest.raises(GradientMismatch, match="At fault: backward") as info:
        gradcheck(_wrong(lambda a: layer(a), 1 + 1e-6), (x,))
    shown = info.value.report.derivatives
    assert list(shown) == ["..."] and "too large to print" in shown["..."]


def _max_pool_function(bug=None):
    """A hand-written 2x2 max pool: the gradient goes to each window's argmax (or, with the bug, its first)."""

    class MaxPool(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            out, idx = F.max_pool2d(x, 2, return_indices=True)
            ctx.save_for_backward(x, idx)
            return out

        @staticmethod
        def backward(ctx, grad):
            x, idx = ctx.saved_tensors
            if bug == "first of window":
                n, c, h, w = x.shape
                rows = torch.arange(0, h, 2).repeat_interleave(w // 2) * w
                idx = (rows + torch.arange(0, w, 2).repeat(h // 2)).reshape(1, 1, h // 2, w // 2).expand_as(idx)
            return F.max_unpool2d(grad, idx, 2, output_size=x.shape[-2:])

    return MaxPool.apply


def test_max_pool_is_in_the_table_and_a_misrouted_gradient_is_caught():
    x = _t(1, 1, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert gradcheck(_max_pool_function(), (x,)) is True
        assert gradcheck(lambda a: F.max_pool2d(torch.relu(a), 2, stride=1, padding=1), (x,)) is True
    with pytest.raises(GradientMismatch, match="At fault: backward"):
        gradcheck(_max_pool_function("first of window"), (x,))
    # the per-element table does not compute its indices; the tensor-level rules select by them
    unpool = lambda a: F.max_unpool2d(*F.max_pool2d(a, 2, return_indices=True), 2)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert gradcheck(unpool, (x,)) is True


def test_a_func_that_is_not_callable_is_a_usage_error():
    with pytest.raises(UsageError, match="Expected func to be a callable"):
        gradcheck("sin", (_t(2),))


class _Scaled(torch.autograd.Function):
    """x * 3 and a statistic of x computed outside autograd (marked non-differentiable)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        stat = torch.tensor([x.detach().max().item() * 0.5], dtype=x.dtype)
        ctx.mark_non_differentiable(stat)
        return x * 3, stat

    @staticmethod
    def backward(ctx, g, _):
        return g * ctx.factor, None


def test_outputs_without_grad_are_not_checked_as_torch():
    # Note [Differentiable outputs]: a threshold read through .item() beside the image (kornia's
    # otsu_threshold) depends on x, has no gradient in torch, and its finite differences blamed the image's
    # correct backward; torch's gradcheck checks only the outputs that require grad.
    x = _t(2, 5)

    def threshold(a):
        t = torch.tensor([a.detach().max().item() / 2], dtype=a.dtype)  # depends on a, outside autograd
        return (a > t).to(a.dtype) * a * a, t

    assert gradcheck(threshold, (x,)) is True
    assert torch.autograd.gradcheck(threshold, (x,)) is True
    assert gradcheck(_Scaled.apply, (x, 3.0)) is True
    with pytest.raises(GradientMismatch, match="backward"):  # the differentiable output is still checked
        gradcheck(_Scaled.apply, (x, 3.0 + 1e-6))
    # when no output requires grad, every float output is checked (torch expects a zero Jacobian)
    with pytest.raises(GradientMismatch):
        gradcheck(lambda a: torch.tensor([a.detach().max().item()], dtype=a.dtype), (x,))


def _where_sqrt(x):
    t = x[..., 0] + x[..., 1]  # about 5e-5 at the inputs: negative at some random points around them
    return torch.where(t > 0.0, torch.sqrt(t.clamp(min=-1.0)), torch.zeros_like(t)) + x.sum(-1)


@pytest.mark.parametrize("path", ["tensor", "per-element"])
def test_nan_gradients_off_the_inputs_are_skipped_with_a_warning(path, monkeypatch):
    # Note [NaN off the inputs]: kornia's rotation_matrix_to_quaternion, 10% off a rotation matrix
    from gradcheck_lab import torch_check

    if path == "per-element":
        monkeypatch.setattr(torch_check, "_tensor_leg", lambda *a, **k: False)
    x = torch.tensor([[0.001, -0.00095, 1.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_where_sqrt, (x,))
    with pytest.warns(RuntimeWarning, match="NaN or inf at 2 of 8 random points"):
        assert gradcheck(_where_sqrt, (x,)) is True
    with pytest.raises(GradientMismatch), warnings.catch_warnings():  # the other points are still judged
        warnings.simplefilter("ignore")
        gradcheck(_wrong(_where_sqrt, 1 + 1e-6), (x,))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_nan_gradient_at_the_given_inputs_fails_as_under_torch(dtype):
    # Note [NaN at the inputs]: the per-element model found the loss undefined there and passed
    def f(t):
        return torch.where(t > 0, torch.sqrt(t), torch.zeros_like(t)) * 2

    x = torch.tensor([-1.0, 0.5, 2.0], dtype=dtype, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x,), raise_exception=False, eps=1e-3 if dtype == torch.float32 else 1e-6,
                                    atol=1e-2 if dtype == torch.float32 else 1e-5) is False
    with pytest.raises(GradientMismatch, match=r"t\[0\]\] at the given inputs: it gives nan, finite differences 0"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradcheck(f, (x,))
    safe = lambda t: torch.where(t > 0, torch.sqrt(t.clamp(min=1e-12)), torch.zeros_like(t)) * 2  # noqa: E731
    assert gradcheck(safe, (x,)) is True


def test_an_infinite_gradient_at_the_given_inputs_is_said_not_judged():
    x = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning, match=r"2 component\(s\) at the given inputs were not judged.*gives inf"):
        assert gradcheck(lambda t: torch.sqrt(t) + t, (x,)) is True



def test_empty_float_outputs_have_nothing_to_check():
    # a descriptor matcher that found no match returns (0, 1) distances: torch's gradcheck passes it
    x = _t(3, 2)
    with pytest.warns(RuntimeWarning, match="nothing to check"):
        assert gradcheck(lambda a: (a[a > 100.0].reshape(0, 1) * 2, torch.zeros(0, 2, dtype=torch.long)), (x,)) is True
    assert torch.autograd.gradcheck(lambda a: a[a > 100.0] * 2, (x,))


def test_a_function_that_draws_without_changing_its_outputs_is_called_with_one_draw():
    # kornia's RandomEqualize3D(p=0.5): the draw leaves the given inputs alone, but at a random point above
    # 1.0 one draw in two applies it and raises its range check; refused once, it must stay refused.
    def augment(x):
        if bool(torch.rand(()) < 0.5) and bool(x.max() > 1.0):
            raise ValueError("Values in the input must lower or equal to 1.0")
        return x * x.sin()

    x = torch.tensor([0.2, 0.5, 0.99], dtype=torch.float64, requires_grad=True)
    for seed in range(4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert gradcheck(augment, (x,), seed=seed) is True


class _SparseLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        dense = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
        self.register_buffer("A", dense.to_sparse_csr())  # as cvxpylayers' CvxpyLayer holds its problem data

    def forward(self, x):
        return self.A @ x


def test_a_module_with_sparse_buffers_is_checked():
    x = _t(3)
    assert torch.autograd.gradcheck(_SparseLayer(), (x,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gradcheck(_SparseLayer(), (x,), parameters=False) is True


def _solver_sqrt(x0, error=0.0):
    """sqrt in NumPy with a solver's bias that grows away from ``x0`` (exact there), and the exact backward."""

    class SolverSqrt(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            a = x.detach().numpy()
            y = torch.from_numpy(np.sqrt(a) + 1e-4 * (a - x0) ** 2)
            ctx.save_for_backward(x)
            return y

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 0.5 / x.sqrt() * (1 + error)

    return SolverSqrt.apply


def test_an_inexact_forward_outside_torch_is_not_failed_off_the_inputs():
    # Note [Inexact forwards]: cvxpylayers and torchdiffeq compute their forward to a solver's tolerance
    x0 = np.array([1.0, 2.0, 3.0])
    x = torch.tensor(x0, requires_grad=True)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert gradcheck(_solver_sqrt(x0), (x,)) is True
    assert len(seen) == 1 and "not at the given inputs" in str(seen[0].message)  # one warning a call
    with pytest.raises(GradientMismatch, match="is wrong"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a wrong backward is still wrong where the forward is exact
        gradcheck(_solver_sqrt(x0, error=1e-6), (x,))


@pytest.mark.parametrize("error", [0.0, 1e-6])
def test_the_fallback_steps_stay_on_the_side_of_0_of_small_inputs(error):
    # Note [Fallback reach]: steps of max(|t|, 1) / 8 took a NumPy sqrt at inputs near 1e-4 to negative values:
    # no estimate anywhere, and a wrong backward passed unjudged
    x0 = 1e-4 + 9e-4 * np.random.default_rng(0).random(6)
    x = torch.tensor(x0, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if error:
            with pytest.raises(GradientMismatch, match="is wrong"):
                gradcheck(_solver_sqrt(x0, error=error), (x,))
        else:
            assert gradcheck(_solver_sqrt(x0), (x,)) is True


class _NumpySin(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.from_numpy(np.sin(x.detach().numpy())).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x)


def _branchy(x):
    y = x * _NumpySin.apply(x)  # computed outside torch: finite differences of the real function judge
    if bool((y > 0).any()):
        y = torch.relu(y - 0.1) + y
    return y.sum(-1)


def test_the_fallback_keeps_to_its_time_budget(monkeypatch):
    # Note [Fallback budget]: kornia's Hausdorff loss and MKD descriptor took over 10 minutes
    from gradcheck_lab import torch_check

    monkeypatch.setattr(torch_check, "FALLBACK_FLOOR_SECONDS", 0.0)  # one component, one point
    monkeypatch.setattr(torch_check, "FALLBACK_TORCH_MULTIPLE", 1e-9)
    x = _t(4, 12)
    with pytest.warns(RuntimeWarning, match="time budget"):
        assert gradcheck(_branchy, (x,)) is True
    with pytest.raises(GradientMismatch), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradcheck(_wrong(_branchy, 1 + 1e-6), (x,))


def test_the_fallback_budget_is_relative_to_torchs_own_cost(monkeypatch):
    # entmax's bisection spent the whole minute per test: the budget follows torch's 2p calls
    from gradcheck_lab import torch_check

    monkeypatch.setattr(torch_check, "FALLBACK_FLOOR_SECONDS", 0.0)
    monkeypatch.setattr(torch_check, "FALLBACK_TORCH_MULTIPLE", 0.5)  # less than the 18 calls a component
    x = _t(4, 12)
    with pytest.warns(RuntimeWarning, match=r"per-component differences at \d+ of 48 components"):
        assert gradcheck(_branchy, (x,)) is True
    monkeypatch.setattr(torch_check, "FALLBACK_TORCH_MULTIPLE", 1e6)  # capped by FALLBACK_SECONDS: all of them
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert gradcheck(_branchy, (x,)) is True
    assert not any("time budget" in str(w.message) for w in caught)


def test_the_fallback_budget_in_fast_mode_follows_torchs_fast_mode(monkeypatch):
    # torch's fast mode differences one projection per input: kornia's TestLocalFeature took our whole minute
    from gradcheck_lab import torch_check

    monkeypatch.setattr(torch_check, "FALLBACK_FLOOR_SECONDS", 0.0)
    monkeypatch.setattr(torch_check, "FALLBACK_TORCH_MULTIPLE", 0.5)
    x = _t(4, 12)
    found = {}
    for fast in (False, True):
        with pytest.warns(RuntimeWarning, match=r"per-component differences at \d+ of 48 components") as caught:
            assert gradcheck(_branchy, (x,), fast_mode=fast) is True
        (w,) = [w for w in caught if "per-component" in str(w.message)]
        found[fast] = int(str(w.message).split("per-component differences at ")[1].split()[0])
        with pytest.raises(GradientMismatch), warnings.catch_warnings():  # a wrong backward is still found
            warnings.simplefilter("ignore")
            gradcheck(_wrong(_branchy, 1 + 1e-6), (x,), fast_mode=fast)
    assert found[True] < found[False]


def test_the_fallback_budget_covers_every_component_at_the_given_inputs_first():
    # Note [Fallback budget]: the given inputs' rows (one per cotangent) are one point; counted as 24 rows, a
    # 4x6 entmax check differenced 8 of its 24 components, and a wrong component went unseen
    import time

    from gradcheck_lab.torch_check import _within_budget

    rows = np.arange(32)  # 24 cotangents at the given inputs, then 8 random points
    kept, columns, note, budget = _within_budget(rows, 24, lambda: time.sleep(0.01), seed=0, given=24)
    assert columns is None and list(kept[:24]) == list(range(24))  # every component at the given inputs
    assert len(kept) < len(rows) and "of 9 points" in note and budget < 60
    kept, columns, note, _ = _within_budget(rows, 24, lambda: None, seed=0, given=24)  # cheap: everything
    assert columns is None and list(kept) == list(rows) and note == ""


def test_the_fallback_stops_calling_a_function_that_is_slow_away_from_the_inputs(monkeypatch):
    # torchdiffeq's adaptive_heun adjoint: 1 ms at the given inputs, 736 s for the whole check
    import time

    from gradcheck_lab import torch_check

    x = _t(3, 4)
    given = x.detach().clone()

    def slow_away(a):
        if not torch.equal(a.detach(), given):
            time.sleep(0.02)
        return (a * _NumpySin.apply(a)).sum(-1)  # outside torch: the fallback judges

    monkeypatch.setattr(torch_check, "FALLBACK_SECONDS", 1.0)
    start = time.perf_counter()
    with pytest.warns(RuntimeWarning, match=r"time ran out .* of its calls were not made"):
        assert gradcheck(slow_away, (x,)) is True
    assert time.perf_counter() - start < 30  # about 2 s here; each of its ~100 calls sleeps 20 ms


def test_bad_keywords_and_inputs_get_one_clear_error():
    x = _t(3)
    with pytest.raises(UsageError, match="parameters to be True or False"):
        gradcheck(torch.sin, (x,), parameters="yes")
    nan = torch.tensor([float("nan"), 1.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(UsageError, match="finite values"):  # was an OverflowError from the sampler
        gradcheck(torch.sin, (nan,))


def test_warnings_point_at_the_callers_line():
    # the fallback's warning is raised four frames deep; routed calls add the wrapper: both at the test's line
    from gradcheck_lab import routing

    x = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gradcheck(lambda t: torch.sqrt(t) + t, (x,))
        with routing():
            torch.autograd.gradcheck(lambda t: torch.sqrt(t) + t, (x,))
    assert caught and {w.filename for w in caught} == {__file__}


def test_the_inexact_forward_note_ignores_components_without_an_estimate():
    # torchdiffeq: a stencil point where the solver gave no value printed "up to nan relative"
    from types import SimpleNamespace

    from gradcheck_lab.torch_check import _off_inputs_note

    bad = np.array([[True, False], [False, True], [False, False]])
    got = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    fd = np.array([[1.1, np.nan], [3.0, 4.4], [np.nan, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        note = _off_inputs_note(SimpleNamespace(func=_Scaled.apply), bad, got, fd, np.array([0, 1, 2]))
    assert "up to 0.091 relative, at random point 0" in note and "nan" not in note


def _complex_product(error=0.0, conjugate=True):
    """``z * w`` with a hand-written complex backward (torch's convention: ``g * conj(w)``)."""

    class CMul(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, w):
            ctx.save_for_backward(z, w)
            return z * w

        @staticmethod
        def backward(ctx, g):
            z, w = ctx.saved_tensors
            return g * (w.conj() if conjugate else w) * (1 + error), g * z.conj()

    return CMul.apply


def _c(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(seed)).requires_grad_()


def test_complex_inputs_and_outputs_are_checked_as_real_pairs():
    # Note [Complex inputs]: torch's gradcheck checks them; ours raised a UsageError
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gradcheck(_complex_product(), (_c(3), _c(3, seed=1))) is True
        assert gradcheck(lambda x: torch.fft.fft(x), (_t(4),)) is True  # a real input, a complex output
        with pytest.raises(GradientMismatch, match=r"input0\[\d\]\.imag|input0\[\d\]\.real"):
            gradcheck(_complex_product(conjugate=False), (_c(3), _c(3, seed=1)))
        with pytest.raises(GradientMismatch, match="is wrong"):  # torch's gradcheck passes it
            gradcheck(_complex_product(error=1e-6), (_c(3), _c(3, seed=1)))


class _WideLayer(torch.autograd.Function):
    """``tanh(x @ W)`` with a backward off by ``off`` relative: a graph past the tensor referee's budget."""

    W = torch.randn(128, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / 12
    off = 0.0

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x @ _WideLayer.W)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved_tensors
        return ((gy * (1 - y * y)) @ _WideLayer.W.T) * (1 + _WideLayer.off)


def _wide_input():
    return torch.randn(32, 128, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)


def test_differences_confirm_a_disagreement_too_large_for_the_referee(monkeypatch):
    # Note [Differences confirm]: 1M element operations, past the referee's budget; the disagreement of the
    # tensor-level legs is localized to one component (Note [Localized projections]) and finite differences
    # of the real function side with the symbolic value there.
    monkeypatch.setattr(_WideLayer, "off", 1e-6)
    with pytest.raises(GradientMismatch, match=r"(?s)the tensor-level symbolic leg .* finite differences of the "
                                               r"real function .*1\.0e-06 relative.*Differences confirm"):
        gradcheck(_WideLayer.apply, (_wide_input(),), fast_mode=True)
    monkeypatch.setattr(_WideLayer, "off", 0.0)
    assert gradcheck(_WideLayer.apply, (_wide_input(),), fast_mode=True) is True


def test_a_detached_path_is_named_where_differences_confirm():
    # autograd skips the path through .detach(); the function's derivative (the symbolic leg, finite
    # differences, torch's gradcheck without fast_mode) does not (kornia's HardNet normalizes so)
    def f(x):
        return torch.tanh(x @ _WideLayer.W) * x.detach().mean()

    with pytest.raises(GradientMismatch, match=r"(?s)Differences confirm.*detaches a value that depends on the inputs"):
        gradcheck(f, (_wide_input(),), fast_mode=True)


def test_one_tolerance_given_keeps_torchs_default_for_the_other():
    # torch reads atol=1e-8 alone as 1e-8 + 1e-3 |g|: a backward 1e-6 off relative passes there, and here
    x = (_t(3, 4) * 10).detach().requires_grad_()
    off = _wrong(lambda t: t * t.sin(), 1 + 1e-6)
    assert torch.autograd.gradcheck(off, (x,), atol=1e-8)
    assert gradcheck(off, (x,), atol=1e-8) is True
    with pytest.raises(GradientMismatch):  # rtol=0 given explicitly: 1e-6 relative is beyond 1e-8
        gradcheck(off, (x,), atol=1e-8, rtol=0.0)
    with pytest.raises(GradientMismatch):  # rtol alone keeps torch's atol=1e-5: 1e-3 relative is beyond it
        gradcheck(_wrong(lambda t: t * t.sin(), 1 + 1e-2), (x,), rtol=1e-3)



@pytest.mark.parametrize("kw", [{"atol": "abc"}, {"rtol": -1.0}, {"atol": float("nan")}, {"rtol": True}])
def test_a_malformed_tolerance_gets_one_clear_error(kw):
    with pytest.raises(UsageError, match=r"to be a finite number >= 0"):
        gradcheck(torch.sin, (_t(3),), **kw)


# ---------------------------------------------------------------- Note [One forward at the given inputs]


class _CountedSin(torch.autograd.Function):
    """sin with a hand-written backward that counts its calls (``scale`` 1: right; else off by that factor)."""

    backwards = 0
    scale = 1.0

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx, g):
        _CountedSin.backwards += 1
        (x,) = ctx.saved_tensors
        return g * x.cos() * _CountedSin.scale


def test_a_fast_mode_call_shares_its_forward_and_backward_at_the_given_inputs(monkeypatch):
    # reentrancy's two passes, the tensor leg's second cotangent, torch's zero-cotangent and undefined-gradient
    # tests: 5 backward passes (torch's own fast mode makes 4); each check had its own before (8)
    x = _t(3, 4)
    monkeypatch.setattr(_CountedSin, "backwards", 0)
    assert gradcheck(_CountedSin.apply, (x,), fast_mode=True) is True
    assert _CountedSin.backwards == 5
    # the first cotangent's product is the reentrancy check's, reused: a wrong backward is still caught there
    monkeypatch.setattr(_CountedSin, "scale", 1 + 1e-6)
    with pytest.raises(GradientMismatch, match="backward of Function.apply is wrong"):
        gradcheck(_CountedSin.apply, (x,), fast_mode=True)
    monkeypatch.setattr(_CountedSin, "scale", 1 + 1e-3)  # float32's detection limit
    with pytest.raises(GradientMismatch, match="backward of Function.apply is wrong"):
        gradcheck(_CountedSin.apply, (_t(3, 4, dtype=torch.float32),), fast_mode=True)


def test_a_forward_that_rounds_otherwise_with_grad_is_not_taken_for_random():
    # the forward with grad is the determinism check's second call only where it gives the same outputs; a
    # fused no-grad path that rounds otherwise is compared with a second call without grad, as before
    def rounds_otherwise(a):
        out = a.exp()
        return out * (1 + 2.0**-52) if torch.is_grad_enabled() else out

    assert gradcheck(rounds_otherwise, (_t(4),)) is True
    assert gradcheck(rounds_otherwise, (_t(4),), fast_mode=True) is True


def test_positional_names_are_inspects():
    from gradcheck_lab.torch_check import _positional_names

    def plain(a, b=1, /, c=2, *args, d, **kw):
        return a

    def wrapper(*args, **kwargs):
        return plain(*args, **kwargs)

    wrapper.__wrapped__ = plain
    module = torch.nn.Linear(2, 2)
    for target in (plain, lambda x, w: x, wrapper, module.forward, cf.Exp.apply, torch.sin,
                   functools.partial(plain, 1), _CountedSin.apply, len):
        try:
            want = [p.name for p in inspect.signature(target).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            want = []
        assert _positional_names(target) == want, target


class _ScaledBackward(torch.autograd.Function):
    """The identity, its backward scaled by ``1 + d`` (``d`` 0: right): a wrong backward downstream of any forward
    (test_fidelity's too)."""

    @staticmethod
    def forward(ctx, y, d):
        ctx.d = d
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        return g * (1 + ctx.d), None


@pytest.mark.parametrize("d, torch_passes", [(0.0, True), (1e-7, True), (0.01, False)])
def test_atol_and_rtol_are_per_component_in_the_fallback(d, torch_passes):
    # torch-harmonics' gradient test (an rfft, so the fallback: no symbolic leg for complex numbers) gives
    # atol=rtol=1e-5; the fallback's projection screen summed them over 576 components and passed a backward
    # 10% wrong, which torch fails. A disagreeing projection now sends its point to per-component differences
    # judged against them, as torch judges: what torch's tolerance allows passes, and the 1% error fails
    x = _t(2, 6, 16)
    c = torch.randn(2, 6, 9, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))

    def loss(t):
        spec = torch.fft.rfft(_ScaledBackward.apply(t, d), dim=-1, norm="forward")
        return torch.mean(torch.norm(spec - c, p="fro", dim=(-1, -2)) / torch.norm(c, p="fro", dim=(-1, -2)))

    kw = dict(eps=1e-6, atol=1e-5, rtol=1e-5)
    assert torch.autograd.gradcheck(loss, (x,), raise_exception=False, **kw) is torch_passes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback's note on what it checked
        assert gradcheck(loss, (x,), raise_exception=False, **kw) is torch_passes


def _soft_argmax_like(x):
    """kornia's conv_soft_argmax2d at its repository's head: a shift by the detached max beside an absolute eps."""
    e = (x - x.amax(dim=(-2, -1), keepdim=True).detach()).exp()
    den = 9 * F.avg_pool2d(e, 3, 1, 1) + 1e-8
    return 9 * F.avg_pool2d(e * x, 3, 1, 1) / den


@pytest.mark.parametrize("fast", [False, True])
def test_a_proven_fault_behind_a_detach_says_so_and_atol_accepts_it(fast):
    # the eps breaks the shift invariance the detach relies on: the backward is 1e-8 relative off the
    # function's derivative (proven by the tensor referee); torch's rtol=1e-3 passes it
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(_soft_argmax_like, (x,), fast_mode=fast)
    with pytest.raises(GradientMismatch, match=r"(?s)proven in ball arithmetic.*detaches a value.*pass atol/rtol"):
        gradcheck(_soft_argmax_like, (x,), fast_mode=fast)
    assert gradcheck(_soft_argmax_like, (x,), fast_mode=fast, atol=1e-6) is True
