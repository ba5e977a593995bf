"""The drop-in at the tracer's edge (fidelity.py, torch_check): code that leaves torch is judged against itself.

Each kind of Function comes as a correct version and as a twin whose backward
is off by a relative ``ERR``, in float64 and float32. Correct code passes; the
twin off by 1e-6 fails in float64 and the one off by 1e-3 in float32 (finite
differences of a float32 backward cannot resolve 1e-6: the passing warning
says what they resolved).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from gradcheck_lab import GradientMismatch, UsageError, gradcheck, gradgradcheck
from gradcheck_lab.fidelity import leaks
from test_torch_gradcheck import _ScaledBackward as _Scaled  # identity, backward scaled by 1 + err
from test_torch_gradcheck import _wrong  # a Function with autograd's gradient of f, scaled

DTYPES = [torch.float64, torch.float32]
#: The smallest relative error each dtype's untraced path must catch (issue 17, point 3).
CAUGHT = {torch.float64: 1e-6, torch.float32: 1e-3}


def _np_tanh(err: float):
    class NpTanh(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.from_numpy(np.tanh(x.detach().cpu().numpy())).to(x.dtype)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * (1 - y * y) * (1 + err)

    return NpTanh.apply


def _np_linear(err: float):
    class NpLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return torch.from_numpy(x.detach().numpy() @ w.detach().numpy())

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            gn = g.numpy()
            return torch.from_numpy(gn @ w.numpy().T), torch.from_numpy(x.numpy().T @ gn) * (1 + err)

    return NpLinear.apply


def _math_lgamma(err: float):
    class LogGamma(torch.autograd.Function):  # a special function from outside torch, through NumPy
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.from_numpy(np.vectorize(math.lgamma)(x.detach().numpy())).to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * torch.digamma(x) * (1 + err)

    return LogGamma.apply


def _branch(err: float):
    class Branch(torch.autograd.Function):  # data-dependent Python control flow
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x if x.sum() > 0 else -x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return (g * 2 * x if x.sum() > 0 else -g) * (1 + err)

    return Branch.apply


def _item_scale(err: float):
    class ItemScale(torch.autograd.Function):  # a value of the input read as a Python number
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * float(x.sum())

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return (g * x.sum() + (g * x).sum()) * (1 + err)

    return ItemScale.apply


_OPS: dict = {}


def _custom_op(err: float):
    """An opaque torch.library.custom_op whose kernel runs in NumPy (one op per error: ops are global)."""
    if err in _OPS:
        return _OPS[err]
    name = f"gradcheck_lab_tests::np_sin_{len(_OPS)}"

    @torch.library.custom_op(name, mutates_args=())
    def np_sin(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.sin(x.numpy()))

    @np_sin.register_fake
    def _(x):
        return torch.empty_like(x)

    def setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x) * (1 + err)

    np_sin.register_autograd(backward, setup_context=setup)
    _OPS[err] = np_sin
    return np_sin


def _constants(err: float):
    class SoftplusByHand(torch.autograd.Function):  # constant operands of every kind
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            zero = torch.zeros_like(x)
            half = torch.full_like(x, 0.5)
            ramp = torch.arange(x.shape[-1], dtype=x.dtype) / 8
            return torch.logaddexp(x, zero) + torch.maximum(x, half) * 0.25 + torch.atan2(x, 2.0 + ramp) + 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            ramp = 2.0 + torch.arange(x.shape[-1], dtype=x.dtype) / 8
            d = torch.sigmoid(x) + 0.25 * (x > 0.5).to(x.dtype) + ramp / (x * x + ramp * ramp)
            return g * d * (1 + err)

    return SoftplusByHand.apply


KINDS = {
    "numpy-forward": (_np_tanh, [(3, 4)]),
    "numpy-forward-and-backward": (_np_linear, [(3, 4), (4, 2)]),
    "special-function": (_math_lgamma, [(3, 4)]),
    "custom-op": (_custom_op, [(3, 4)]),
    "data-dependent-branch": (_branch, [(3, 4)]),
    "item": (_item_scale, [(2, 3)]),
    "constant-operands": (_constants, [(3, 4)]),
}


def _inputs(shapes, dtype):
    g = torch.Generator().manual_seed(7)
    return tuple((torch.rand(*s, generator=g, dtype=torch.float64) + 0.5).to(dtype).requires_grad_() for s in shapes)


def _quiet_call(fn, inputs, capfd):
    """gradcheck, returning (result or exception, Python warnings, stderr lines)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result: object = gradcheck(fn, inputs)
        except GradientMismatch as exc:
            result = exc
    err = capfd.readouterr().err
    return result, caught, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_correct_code_that_leaves_torch_passes_quietly(kind, dtype, capfd):
    make, shapes = KINDS[kind]
    result, caught, stderr = _quiet_call(make(0.0), _inputs(shapes, dtype), capfd)
    assert result is True, result
    assert len(caught) <= 1, [str(w.message) for w in caught]
    assert not stderr, stderr  # no C++ warning of our machinery (vmap's BatchedFallback) reaches stderr


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_backward_off_by_the_dtypes_resolution_is_caught(kind, dtype, capfd):
    make, shapes = KINDS[kind]
    result, _, stderr = _quiet_call(make(CAUGHT[dtype]), _inputs(shapes, dtype), capfd)
    assert isinstance(result, GradientMismatch), f"{kind} {dtype}: passed"
    assert len(stderr) <= 2, stderr


def test_a_float32_twin_below_resolution_passes_saying_what_was_resolved():
    x = _inputs([(3, 4)], torch.float32)
    with pytest.warns(RuntimeWarning, match=r"resolve errors down to \S+ relative"):
        assert gradcheck(_np_tanh(1e-6), x) is True


@pytest.mark.parametrize("make", [_np_tanh, _math_lgamma, _item_scale], ids=["numpy", "lgamma", "item"])
def test_the_warning_says_why_and_names_the_source_line(make):
    x = _inputs([(3, 4)], torch.float64)
    with pytest.warns(RuntimeWarning) as caught:
        assert gradcheck(make(0.0), x) is True
    (w,) = [w for w in caught if "symbolic and referee legs missing" in str(w.message)]
    assert "test_fidelity.py:" in str(w.message)
    assert w.filename == __file__  # attributed to the caller's line


def test_leaks_lists_the_ways_out_of_torch():
    def f(x):
        a = torch.from_numpy(x.detach().numpy())
        b = x.max().item()
        if x.sum() > 0:
            a = a * b
        return a + torch.tensor(x.tolist())

    found = leaks(f, [torch.ones(2)], limit=10)
    assert [w.split(" at ")[0] for w in found] == [
        "a NumPy round trip (Tensor.numpy)", "a Python number (Tensor.item)",
        "a data-dependent branch (bool of a tensor)", "Python numbers (Tensor.tolist)",
    ]


def test_finite_differences_see_the_real_function_not_the_trace():
    # The trace holds np.tanh's values as a constant: its derivative is 0 and the correct backward was blamed.
    x = _inputs([(3, 4)], torch.float64)
    with pytest.warns(RuntimeWarning, match="the traced graph is not the function at random point"):
        assert gradcheck(_np_tanh(0.0), x, points=0) is True  # probes are drawn even with points=0


def test_a_non_reentrant_backward_is_reported_as_such(capfd):
    class Mish(torch.autograd.Function):  # as published: backward scales the tensor saved on ctx in place
        @staticmethod
        def forward(ctx, x):
            t = torch.tanh(torch.nn.functional.softplus(x))
            ctx.grad = t + x * torch.sigmoid(x) * (1 - t * t)
            return x * t

        @staticmethod
        def backward(ctx, g):
            grad = ctx.grad
            grad *= g
            return grad

    for dtype in DTYPES:
        with pytest.raises(GradientMismatch, match=r"(?s)not reentrant.*state saved on ctx in place"):
            gradcheck(Mish.apply, _inputs([(3, 4)], dtype))
        assert gradcheck(Mish.apply, _inputs([(3, 4)], dtype), raise_exception=False) is False
    assert not capfd.readouterr().err


def test_a_nondeterministic_but_harmless_backward_passes_with_nondet_tol():
    calls = []

    class Jitter(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            calls.append(1)
            return 2 * g * x * (1 + 2e-15 * (len(calls) % 2))  # alternates by a few ulps

    x = _inputs([(2, 2)], torch.float64)
    with pytest.raises(GradientMismatch, match="not reentrant"):
        gradcheck(Jitter.apply, x)
    assert gradcheck(Jitter.apply, x, nondet_tol=1e-12) is True


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_in_place_writes_into_views_follow_torchs_aliasing(dtype):
    def scatter(x, w):
        out = torch.ones(1, 3, dtype=x.dtype).expand_as(x).clone()
        out[..., 0] = x[..., 0] / w
        base = torch.zeros(4, 3, dtype=x.dtype)
        base[1:3].mul_(0).add_(x[:2] * w)
        return out * x + base

    x = _inputs([(4, 3)], dtype)[0]
    w = torch.tensor(1.7, dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # on the symbolic path: no fallback warning
        assert gradcheck(scatter, (x, w)) is True

    def wrong(x, w):
        return _Scaled.apply(scatter(x, w), CAUGHT[dtype] if dtype == torch.float64 else 1e-3)

    with pytest.raises(GradientMismatch, match="exact value"):
        gradcheck(wrong, (x, w))


def test_constants_are_folded_in_the_codes_own_dtype():
    # A float32 kernel normalised in place inside the function: its float64 backward is exact for the
    # float32 values the code uses, and was blamed at 1.8e-8 against the ideal coefficients.
    def blur(x):
        k = torch.linspace(-1, 1, 3)
        k = torch.exp(-k * k / 0.7)
        k.div_(k.sum())
        return (x * k.to(x.dtype)).sum(-1)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(blur, _inputs([(4, 3)], torch.float64)) is True


def test_a_function_without_floating_outputs_is_accepted():
    x = _inputs([(5,)], torch.float64)[0]
    with pytest.warns(RuntimeWarning, match="no floating-point element"):
        assert gradcheck(lambda a: torch.argsort(a), (x,)) is True
    with pytest.warns(RuntimeWarning, match="no floating-point element"):
        assert gradgradcheck(lambda a: (a > 0.7, a.argmax()), (x,)) is True


def test_a_domain_check_at_a_random_point_is_skipped_and_counted():
    def boxes(b):  # the user's own domain check, as in a detection library
        if bool((b[:, 2] - b[:, 0] < 0.45).any()):
            raise ValueError("Some boxes have negative heights")
        return (b[:, 2] - b[:, 0]).log()

    b = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.1, 0.2, 0.7, 0.9]], dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning, match=r"[1-8] of 8 random points refused by the function"):
        assert gradcheck(boxes, (b,)) is True


def test_reference_gives_an_opaque_op_its_symbolic_leg():
    op = _custom_op(0.0)
    x = _inputs([(3, 4)], torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the symbolic leg: no fallback warning
        assert gradcheck(op, x, reference=torch.sin) is True
    with pytest.raises(GradientMismatch, match="exact value"):
        gradcheck(_custom_op(1e-7), x, reference=torch.sin)  # below what finite differences alone resolve


def test_reference_that_is_not_the_same_function_fails_first():
    x = _inputs([(3, 4)], torch.float64)
    with pytest.raises(GradientMismatch, match=r"(?s)differs from its reference: the reference is not func at the given inputs.*fix whichever is wrong"):
        gradcheck(_custom_op(0.0), x, reference=torch.cos)
    assert gradcheck(_custom_op(0.0), x, reference=torch.cos, raise_exception=False) is False


def test_reference_for_a_numpy_kernel_and_bad_references():
    x = _inputs([(3, 4)], torch.float64)
    assert gradcheck(_np_tanh(0.0), x, reference=torch.tanh) is True
    with pytest.raises(GradientMismatch):
        gradcheck(_np_tanh(1e-9), x, reference=torch.tanh)
    with pytest.raises(UsageError, match="Expected reference to be a callable"):
        gradcheck(_np_tanh(0.0), x, reference=3)
    with pytest.raises(UsageError, match="torch code the tracer follows"):
        gradcheck(_np_tanh(0.0), x, reference=_np_tanh(0.0))
    module = torch.nn.Linear(4, 2).double()
    with pytest.raises(UsageError, match="nn.Module with the same parameters"):
        gradcheck(module, x, reference=lambda t: t @ module.weight.T + module.bias)


def test_gradgradcheck_of_code_that_leaves_torch_defers_to_torch():
    x = _inputs([(3, 4)], torch.float64)
    with pytest.warns(RuntimeWarning, match="checked by torch.autograd.gradgradcheck itself"):
        assert gradgradcheck(lambda t: _math_lgamma(0.0)(t) * t, x) is True


def test_an_internal_failure_falls_back_instead_of_crashing(monkeypatch):
    import gradcheck_lab.torch_check as tc

    monkeypatch.setattr(tc, "leaf_labels", dict)  # a TypeError inside our own pipeline
    monkeypatch.setattr(tc, "_tensor_leg", lambda *a, **k: False)  # which the tensor-level leg would not reach
    x = _inputs([(3, 4)], torch.float64)
    with pytest.warns(RuntimeWarning, match="internal failure of the symbolic leg: TypeError"):
        assert gradcheck(torch.tanh, x) is True


def test_a_graph_that_fails_its_own_evaluation_falls_back_instead_of_crashing(monkeypatch):
    # a recorded op that cannot run again (gpytorch's Matern kernel: pow_.Scalar was recorded as pow.Scalar,
    # whose arguments are the other way round) raised from the trace's analysis into the user's test
    import gradcheck_lab.torch_graph as tg

    def broken(*args, **kwargs):
        raise RuntimeError("aten::pow() Expected a value of type 'number' for argument 'self'")

    monkeypatch.setattr(tg, "_fold", broken)
    x = _inputs([(3, 4)], torch.float64)
    with pytest.warns(RuntimeWarning, match="tracing failed"):
        assert gradcheck(lambda t: t.clone().pow_(2) + 0.5, x) is True
    with pytest.raises(GradientMismatch, match="finite differences of the real function"):
        gradcheck(_wrong(lambda t: t.clone().pow_(2) + 0.5, 1 + 1e-6), x)


def test_in_place_ops_whose_overloads_differ_from_their_twins_are_recorded_as_their_twins():
    # pow_.Scalar is (Tensor self, Scalar exponent); pow.Scalar is (Scalar self, Tensor exponent): recorded as
    # pow.Tensor_Scalar, the symbolic leg keeps the call (gpytorch's d.clone().pow_(2))
    from gradcheck_lab.recorder import _functional

    aten = torch.ops.aten
    assert _functional(aten.pow_.Scalar) is aten.pow.Tensor_Scalar
    assert _functional(aten.float_power_.Scalar) is aten.float_power.Tensor_Scalar
    assert _functional(aten.ldexp_.default) is aten.ldexp.Tensor
    assert _functional(aten.elu_.default) is aten.elu.default and _functional(aten.add_.Scalar) is aten.add.Scalar
    x = _inputs([(3, 4)], torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the symbolic leg decided
        assert gradcheck(lambda t: (t * 2).pow_(2).float_power_(1.5), x) is True
    with pytest.raises(GradientMismatch, match="is wrong"):
        gradcheck(_wrong(lambda t: (t * 2).pow_(2), 1 + 1e-8), x)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_wide_inputs_are_screened_along_directions_and_still_caught(dtype):
    x = (torch.rand(8, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5).to(dtype)
    with pytest.warns(RuntimeWarning, match="along random directions"):
        assert gradcheck(_np_tanh(0.0), (x.requires_grad_(),)) is True
    with pytest.raises(GradientMismatch, match="finite differences of the real function"):
        gradcheck(_np_tanh(CAUGHT[dtype]), (x,))


def test_a_graph_beyond_the_derivation_budget_is_judged_by_finite_differences(monkeypatch):
    import gradcheck_lab.torch_check as tc
    from gradcheck_lab.torch_check import DERIVATION_BUDGET

    x = torch.randn(30, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():  # the tensor-level leg passes it without a per-element expression
        warnings.simplefilter("error", RuntimeWarning)
        assert gradcheck(lambda a: torch.tanh(a @ a), (x,)) is True
    monkeypatch.setattr(tc, "_tensor_leg", lambda *a, **k: False)
    # detection, not the time budget, is under test: a machine loaded by other jobs ran the fallback past its
    # 60 s deadline and passed the 1e-6 twin unjudged (the budget itself: test_torch_gradcheck's budget tests)
    for name, seconds in (("FALLBACK_SECONDS", 1800.0), ("FALLBACK_FLOOR_SECONDS", 600.0),
                          ("FALLBACK_DEADLINE_FLOOR", 1800.0), ("FALLBACK_TORCH_MULTIPLE", 1000.0)):
        monkeypatch.setattr(tc, name, seconds)
    with pytest.warns(RuntimeWarning, match=r"needs 27,900 element operations, beyond .* budget of 20,000"):
        assert gradcheck(lambda a: torch.tanh(a @ a), (x,)) is True
    assert DERIVATION_BUDGET == 20_000
    # located by bisection along the disagreeing direction, then confirmed per component
    with pytest.raises(GradientMismatch, match=r"(?s)d\[.*\] / d\[a\[\d+, \d+\]\].*finite differences of the real"):
        gradcheck(lambda a: _Scaled.apply(torch.tanh(a @ a), 1e-6), (x,))


def test_random_points_lie_around_each_calls_own_inputs():
    # a traced graph's model is shared by calls on the same graph; its random points were drawn once,
    # around the first call's inputs, and reused for every later call (sample blocks cached by seed alone)
    import numpy as np

    from gradcheck_lab.torch_graph import Leaf, model_of, name_leaves, trace

    leaves = [Leaf("x", "input", 0, (3,), torch.float64)]
    name_leaves(leaves)
    traced = trace(torch.tanh, [torch.ones(3, dtype=torch.float64)], leaves, key="around each call's inputs")
    for centre in (np.array([1.0, 2.0, 3.0]), np.array([100.0, -200.0, 300.0])):
        theta = model_of(traced, [centre]).sample(16, seed=0).theta  # none spread over magnitudes
        assert (np.abs(theta - centre) <= 0.1 * np.abs(centre) + 1e-12).all()


def test_random_points_where_the_outputs_change_size_are_skipped():
    # a matcher returns as many matches as it finds: at a point we chose, another number of outputs
    def matches(a, b):
        d = torch.cdist(a, b)
        return d[d < 1.2]

    torch.manual_seed(3)
    a = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(matches, (a, b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gradcheck(matches, (a, b), points=16) is True
    rows = [[a.detach(), b.detach()], [a.detach() * 3, b.detach()]]
    fid = fidelity_check(matches, rows)
    assert fid.refused == [0] and fid.unfaithful is None


def fidelity_check(call, rows):
    from gradcheck_lab import fidelity

    return fidelity.check(call, call, rows, 1, torch.float64, lambda j, k: f"output {j}[{k}]")


def test_a_mismatch_is_printed_with_digits_that_differ():
    # cvxpylayers: "output 0 is 1.000000001, the traced graph gives 1.000000001" said nothing
    from gradcheck_lab.fidelity import _digits

    assert _digits(1.0000000012, 1.0000000013) == ("1.0000000012", "1.0000000013")
    assert _digits(0.25, 0.5) == ("0.25", "0.5")


# Note [Reads of the inputs] (recorder.py): a branch on the inputs' values keeps the symbolic leg where the
# fidelity check shows it holds around the inputs.


def _validated(err: float):
    class Validated(torch.autograd.Function):  # a validity check that never fires, as kornia's boxes
        @staticmethod
        def forward(ctx, x):
            if (x <= -100).any():
                raise ValueError("out of range")
            ctx.save_for_backward(x)
            return torch.tanh(x) * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            t = torch.tanh(x)
            return g * (t + x * (1 - t * t)) * (1 + err)

    return Validated.apply


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_a_branch_that_holds_around_the_inputs_keeps_the_symbolic_leg(dtype):
    x = _inputs([(3, 4)], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "symbolic and referee legs missing"
        assert gradcheck(_validated(0.0), x) is True
    with pytest.raises(GradientMismatch), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the failure is found by finite differences of the real function
        gradcheck(_validated(CAUGHT[dtype]), x)


def _newton_sqrt(err: float, tol: float):
    class NewtonSqrt(torch.autograd.Function):  # a solver that stops on its residual; the implicit backward
        @staticmethod
        def forward(ctx, x):
            y = x.clone() + 1
            while ((y * y - x).abs() > tol * x).any():
                y = 0.5 * (y + x / y)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g / (2 * y) * (1 + err)

    return NewtonSqrt.apply


@pytest.mark.parametrize("tol", [1e-13, 1e-6])
def test_a_solver_stopping_on_its_residual_is_not_blamed_for_its_tolerance(tol):
    # stopped at 1e-6 the graph's exact derivative (of the iterations) differs from the solution's by 4e-10
    # relative, below what finite differences resolve: blamed when the graph's derivative could fail a call
    x = (torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 3 + 0.5)
    x.requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gradcheck(_newton_sqrt(0.0, tol), (x,)) is True
        with pytest.raises(GradientMismatch):
            gradcheck(_newton_sqrt(1e-6, tol), (x,))


def test_each_call_records_its_own_branch():
    def sign_scaled(t):  # the same function at inputs of either sign: a cached graph would hold the other branch
        return t * t * 2 if t.sum() > 0 else t.sin() * 3

    for sign in (1.0, -1.0):
        x = (sign * _inputs([(3, 4)], torch.float64)[0]).detach().requires_grad_()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert gradcheck(sign_scaled, (x,)) is True
        with pytest.raises(GradientMismatch):
            gradcheck(_wrong(sign_scaled, 1 + 1e-6), (x,))


def test_a_branch_that_flips_near_the_inputs_goes_to_finite_differences():
    def near_edge(t):  # the sum is 1e-3 of its terms: the random points take either branch
        return t * 2 if t.sum() > 0 else t * 3

    x = torch.tensor([[1.0, -0.999], [0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="symbolic and referee legs missing.*data-dependent branch"):
        assert gradcheck(near_edge, (x,)) is True


def test_a_read_no_random_point_could_show_is_not_trusted():
    from gradcheck_lab import fidelity

    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)

    def sized(t):  # as many outputs as the first value's integer part: another size at every random point
        return t[: int(t[0].item() * 1e6) % 3 + 1] * 2

    gm = lambda t: t[:2] * 2  # noqa: E731 - the graph of the given inputs' branch (2 outputs)
    rows = [[x], [x * 1.5], [x * 0.5]]  # 1 and 3 outputs there
    found = fidelity.check(sized, gm, rows, 1, torch.float64, lambda j, k: f"output {j}", reads=("item",))
    assert found.refused == [0, 1] and "no random point" in found.unfaithful
    assert fidelity.check(sized, gm, rows, 1, torch.float64, lambda j, k: f"output {j}").unfaithful is None


def test_writes_into_slices_with_a_validity_check_keep_the_symbolic_leg():
    def boxes(x):  # as kornia's boxes: a result assembled in slices, its widths checked
        out = torch.zeros(x.shape[0], 2, dtype=x.dtype)
        out[:, 0] = x[:, 0].sin()
        if (out[:, 0] <= -100).any():
            raise ValueError("Some boxes have negative widths or 0.")
        out[:, 1] = x[:, 1] * x[:, 0]
        return out

    x = _inputs([(3, 2)], torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(boxes, x) is True
    with pytest.raises(GradientMismatch), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradcheck(_wrong(boxes, 1 + 1e-6), x)


def test_a_probe_past_the_checked_points_is_evaluated_until_one_is_accepted():
    # Note [Trace fidelity]: with no random point checked (points=0, fast_mode) one accepted probe suffices;
    # the second drawn is evaluated only where the function refuses the first
    from gradcheck_lab import fidelity
    from gradcheck_lab.recorder import record

    x = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    rows = [[x], [x * 1.05], [x * 0.95]]
    gm = record(torch.sin, [x])
    seen: list[float] = []

    def call(t, refuse=None):
        seen.append(float(t[0]))
        if refuse is not None and math.isclose(float(t[0]), refuse):
            raise ValueError("outside my domain")
        return torch.sin(t)

    def describe(j, k):
        return f"output {j}[{k}]"

    read: list[int] = []

    class Lazy(list):  # rows made when read, as the drop-in passes them
        def __getitem__(self, i):
            read.append(i)
            return super().__getitem__(i)

    found = fidelity.check(call, gm, Lazy(rows), 1, torch.float64, describe, used=0)
    assert found.unfaithful is None and found.refused == [] and len(seen) == 2 and read == [0, 1]
    seen.clear()
    found = fidelity.check(lambda t: call(t, refuse=0.525), gm, rows, 1, torch.float64, describe, used=0)
    assert found.unfaithful is None and found.refused == [0] and len(seen) == 3
    seen.clear()
    found = fidelity.check(call, gm, rows, 1, torch.float64, describe)  # every row: the checks read them all
    assert found.unfaithful is None and len(seen) == 3
    # a value that left torch (a constant in the graph) is caught by the one probe
    leaked = record(lambda t: torch.from_numpy(np.sin(t.numpy())), [x])
    found = fidelity.check(torch.sin, leaked, rows, 1, torch.float64, describe, used=0)
    assert found.unfaithful is not None and "random point 0" in found.unfaithful
