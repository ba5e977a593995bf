"""torch_graph: aten graphs traced from torch code, interpreted on every backend."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradcheck_lab.ops import backend
from gradcheck_lab.torch_graph import (
    OPS,
    Leaf,
    Traced,
    Unsupported,
    interpret,
    model_of,
    name_leaves,
    op_table,
    points_around,
    trace,
)


def _trace(fn, *shapes, seed=0, values=None):
    g = torch.Generator().manual_seed(seed)
    xs = values or [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    leaves = [Leaf(f"x{i}", "input", i, tuple(x.shape), x.dtype) for i, x in enumerate(xs)]
    name_leaves(leaves)
    return trace(fn, xs, leaves), xs


def _objects(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy().astype(object)


CASES = {
    "arithmetic": (lambda a, b: (a + 2 * b - a / (b * b + 1)) ** 2 - 3 - (-a), [(2, 3), (2, 3)]),
    "broadcast": (lambda a, b: a * b + a.unsqueeze(0), [(3,), (2, 3)]),
    "unary": (lambda a: a.exp() + a.sin() * a.cos() + a.tanh() + torch.sigmoid(a) + a.abs().sqrt()
              + a.abs().log1p() + a.expm1() + a.sinh() + a.cosh() + a.asinh() + a.atan() + a.tan() * 0.1
              + torch.rsqrt(a * a + 1) + a.reciprocal() * 0.01 + torch.square(a), [(2, 3)]),
    "activations": (lambda a: F.relu(a) + F.softplus(a) + F.silu(a) + F.leaky_relu(a, 0.1) + F.elu(a)
                    + F.hardtanh(a) + F.gelu(a, approximate="tanh"), [(2, 3)]),
    "clamp max min": (lambda a, b: a.clamp(-0.5, 0.5) + torch.maximum(a, b) + torch.minimum(a, b)
                      + a.clamp(min=0.1) + a.clamp(max=0.2), [(2, 3), (2, 3)]),
    "where": (lambda a, b: torch.where(a > b, a * b, a - b) + torch.where(a <= 0, 0.0, a), [(2, 3), (2, 3)]),
    "masked_fill": (lambda a: a.masked_fill(a < 0, 0.5), [(2, 3)]),
    "matmul": (lambda a, b, c: a @ b + torch.mm(a, b) + torch.addmm(c, a, b, beta=0.5, alpha=2.0), [(2, 3), (3, 4), (4,)]),
    "bmm": (lambda a, b: torch.bmm(a, b) + a @ b, [(2, 2, 3), (2, 3, 2)]),
    "vectors": (lambda a, b, m: torch.dot(a, b) + (m @ a).sum() + a @ b, [(3,), (3,), (2, 3)]),
    # selected down to 0-d tensors, stacked and reshaped (kornia's quaternion_to_rotation_matrix)
    "scalars stacked": (lambda q: torch.stack([q[0] * 2.0, q[1] - q[2], q[3], q[torch.tensor(1)]], -1).view(2, 2),
                        [(4,)]),
    "linear": (lambda x, w, b: F.linear(x, w, b), [(4, 3), (2, 3), (2,)]),
    "reductions": (lambda a: (a.sum(), a.sum(1), a.mean(0, keepdim=True), a.var(1), a.std(), a.var(0, correction=0),
                              torch.logsumexp(a, 1), a.norm(), a.norm(1)), [(3, 4)]),
    # max as nested relu: small, its SymPy form is a Piecewise tree
    "max reductions": (lambda a: (a.amax(1), a.amin(0), a.max()), [(2, 2)]),
    "softmax": (lambda a: (torch.softmax(a, -1), torch.log_softmax(a, 0), F.softmax(a, dim=1)), [(3, 4)]),
    "views": (lambda a: (a.view(4, 3), a.reshape(-1), a.permute(1, 0), a.transpose(0, 1), a.t(),
                         a.unsqueeze(1).expand(3, 2, 4), a[1], a[:, 1:3], a[::2], a[:, None].squeeze(1),
                         a[torch.tensor([0, 2])], a[a > 0] * 0 + 1 if False else a[:, [1, 3]]), [(3, 4)]),
    "cat stack split": (lambda a, b: (torch.cat([a, b], 0), torch.stack([a, b], 1), *torch.split(a, 2, 1),
                                      *a.unbind(0), a.chunk(2, 1)[1]), [(2, 4), (2, 4)]),
    "constants": (lambda a: a * torch.ones_like(a) + torch.arange(4, dtype=a.dtype) + torch.tensor(2.0, dtype=a.dtype)
                  + torch.zeros(4, dtype=a.dtype).fill_(0.5), [(3, 4)]),
    "in place": (lambda a: a.clone().mul_(2).add_(1).clamp_(-2, 2), [(2, 3)]),
    "pow": (lambda a: a.abs() ** 1.5 + 2.0 ** a + (a.abs() + 0.1) ** a, [(2, 3)]),
}


def _reference(fn, xs):
    with torch.no_grad():
        out = fn(*xs)
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.double().numpy() for o in out if o.is_floating_point()]


@pytest.mark.parametrize("name", list(CASES))
def test_interpretation_reproduces_the_forward_on_float_numpy_torch_and_sympy(name):
    fn, shapes = CASES[name]
    traced, xs = _trace(fn, *shapes)
    assert isinstance(traced, Traced), traced
    want = _reference(fn, xs)
    inputs = [_objects(x) for x in xs]

    got = interpret(traced, backend("float"), inputs)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.astype(float), w, rtol=1e-12, atol=1e-12)

    # numpy and torch backends: every element is a column of points (here 2 copies)
    for name_, make in (("numpy", lambda v: np.full(2, v)), ("torch", lambda v: torch.full((2,), v, dtype=torch.float64))):
        cols = [np.vectorize(make, otypes=[object])(x) if x.ndim else _wrap(make(x[()])) for x in inputs]
        got = interpret(traced, backend(name_), cols)
        for g, w in zip(got, want):
            vals = np.array([[float(c[k]) for k in range(2)] for c in g.ravel()]).reshape(*w.shape, 2)
            np.testing.assert_allclose(vals[..., 0], w, rtol=1e-12, atol=1e-12)

    import sympy as sp

    symbols = [np.array([sp.Symbol(f"s{i}_{k}", real=True) for k in range(x.numel())], dtype=object).reshape(x.shape)
               for i, x in enumerate(xs)]
    exprs = [e for o in interpret(traced, backend("sympy"), symbols) for e in o.ravel()]
    subs = {s: float(v) for sy, x in zip(symbols, xs) for s, v in zip(sy.ravel(), x.numpy().ravel())}
    flat = np.concatenate([w.ravel() for w in want])
    sym = np.array([float(sp.sympify(e).evalf(subs=subs)) for e in exprs])
    np.testing.assert_allclose(sym, flat, rtol=1e-10, atol=1e-10)


def _wrap(e):
    out = np.empty((), dtype=object)
    out[()] = e
    return out


def test_custom_function_forward_is_traced_through_and_backward_ignored():
    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.exp() * 2

        @staticmethod
        def backward(ctx, g):  # pragma: no cover - never traced
            return g * 0

    traced, xs = _trace(Wrong.apply, (3,))
    code = traced.gm.code
    assert "aten.exp" in code and "aten.mul" in code
    got = interpret(traced, backend("float"), [_objects(xs[0])])[0]
    np.testing.assert_allclose(got.astype(float), (xs[0].exp() * 2).numpy())


def test_ops_outside_the_table_are_named():
    traced, _ = _trace(lambda a: torch.lgamma(a) + torch.special.i0(a), (3,))
    assert isinstance(traced, Unsupported)
    assert any("lgamma" in o for o in traced.ops) and any("i0" in o for o in traced.ops)


def test_derivations_are_shared_by_graph_structure_and_points_change():
    t1, xs1 = _trace(lambda a: a.sin() * a, (2, 2), seed=1)
    t2, xs2 = _trace(lambda a: a.sin() * a, (2, 2), seed=2)
    assert t1.key == t2.key
    m1, m2 = model_of(t1, [xs1[0].numpy()]), model_of(t2, [xs2[0].numpy()])
    assert m1._cache is m2._cache
    assert not np.allclose(m1.init_theta(), m2.init_theta())


@pytest.mark.parametrize("n", [1, 2, 16, 17, 40])
@pytest.mark.parametrize("shape", [(3,), (2, 2), ()])
def test_points_around_are_the_models_sample(n, shape):
    """The drop-in draws its random points without building the model: the same numbers as the model's."""
    values = torch.tensor([0.0, -2.5, 1e-300, -1.7e308], dtype=torch.float64)
    fn = (lambda a, b: (a.sum() * b).unsqueeze(0)) if shape == () else (lambda a, b: a.sum() * b)
    traced, xs = _trace(fn, (4,), shape, values=[values, torch.full(shape, 0.75, dtype=torch.float64)])
    model = model_of(traced, [x.numpy() for x in xs])
    sample = model.sample(n, seed=7)
    theta, cots = points_around([x.numpy() for x in xs], traced.n_out, n, seed=7)
    assert np.array_equal(theta, sample.theta) and np.array_equal(cots, sample.data[:, : traced.n_out])
    assert np.isfinite(theta).all()


def test_kinks_are_relu_arguments_for_finite_differences():
    """clamp/maximum become relu, so the FD engine's recording sees their arguments (Note [Kinks through relu])."""
    from gradcheck_lab.engines.finite_diff import _recording_ops

    traced, xs = _trace(lambda a, b: a.clamp(-1, 1) + torch.maximum(a, b), (2,), (2,))
    record = []
    cols = []
    for v in (0.5, 0.25):
        arr = np.empty(2, dtype=object)
        arr[0], arr[1] = np.array([v, -v]), np.array([v, 2 * v])
        cols.append(arr)
    interpret(traced, _recording_ops(record), cols)
    assert len(record) >= 3


def test_leaf_names_are_identifiers():
    leaves = [Leaf("net.0.weight", "parameter", "net.0.weight", (2, 2), torch.float64),
              Leaf("0.bias", "parameter", "0.bias", (2,), torch.float64), Leaf("x", "input", 0, (), torch.float64)]
    name_leaves(leaves)
    names = [n for lf in leaves for n in lf.var_names]
    assert all(n.isidentifier() and not n.startswith("_") for n in names)
    assert len(set(names)) == len(names) == 7
    assert leaves[0].element(3) == "net.0.weight[1, 1]"


@pytest.mark.parametrize("specs", [[("x", (2, 2)), ("x_1", (3,))], [("x", ()), ("x", (2,))],
                                   [("cotangent", ()), ("direction", (2,))], [("a.b", (2,)), ("a_b", (1, 2))],
                                   [("x_1_2", ()), ("x", (2, 3)), ("x_1", (3,))]])
def test_leaf_names_are_unique_where_a_label_looks_like_an_index(specs):
    """Names are generated lazily as ``stem_i_j``; where that could collide they are made unique at once."""
    leaves = [Leaf(label, "input", i, shape, torch.float64) for i, (label, shape) in enumerate(specs)]
    name_leaves(leaves)
    names = [n for lf in leaves for n in lf.var_names]
    assert len(set(names)) == len(names) == sum(math.prod(s) for _, s in specs)
    assert all(n.isidentifier() and n not in ("cotangent", "direction") for n in names)


def test_op_table_lists_every_handler_with_a_meaning():
    table = op_table()
    assert len(table) == len(OPS) and all(meaning for _, meaning in table)
    for op in ("mm", "bmm", "addmm", "sum", "mean", "var", "std", "view", "reshape", "permute", "transpose",
               "expand", "slice", "select", "index", "where.self", "relu", "abs", "clamp", "_softmax",
               "_log_softmax", "logsumexp"):
        assert op in OPS, op
    assert math.isclose(1.0, 1.0)


def _float_objects(t):
    return t.numpy().astype(object)


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("stride, pad, dil, groups", [(1, 0, 1, 1), (2, 1, 1, 2), (1, 1, 2, 1), (2, 0, 2, 2)])
@pytest.mark.parametrize("transposed", [False, True])
def test_convolution_handler_computes_what_torch_computes(nd, stride, pad, dil, groups, transposed):
    from gradcheck_lab.torch_graph import _convolution

    g = torch.Generator().manual_seed(nd * 7 + stride)
    x = torch.randn(2, 2, *[5] * nd, generator=g, dtype=torch.float64)
    shape = (2, 4 // groups) if transposed else (4, 2 // groups)
    w = torch.randn(*shape, *[3] * nd, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    extra = [1 if transposed and stride > 1 else 0] * nd
    args = ([stride] * nd, [pad] * nd, [dil] * nd, transposed, extra, groups)
    ref = torch.ops.aten.convolution(x, w, b, *args)
    got = _convolution(backend("float"), _float_objects(x), _float_objects(w), _float_objects(b), *args)
    assert got.shape == tuple(ref.shape)
    np.testing.assert_allclose(got.astype(float), ref.numpy(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_and_padding_handlers_compute_what_torch_computes(nd, count_include_pad):
    from gradcheck_lab.torch_graph import _avg_pool, _constant_pad_nd

    ops = backend("float")
    x = torch.randn(1, 2, *[5] * nd, generator=torch.Generator().manual_seed(nd), dtype=torch.float64)
    pool = {1: torch.ops.aten.avg_pool1d, 2: torch.ops.aten.avg_pool2d, 3: torch.ops.aten.avg_pool3d}[nd]
    args = ([3] * nd, [2] * nd, [1] * nd, False, count_include_pad)
    got = _avg_pool(ops, _float_objects(x), *args)
    np.testing.assert_allclose(got.astype(float), pool(x, *args).numpy(), rtol=1e-13)
    for pad in ([1, 2], [0, 1, -1, 2][: 2 * min(nd, 2)]):
        got = _constant_pad_nd(ops, _float_objects(x), pad)
        np.testing.assert_array_equal(got.astype(float), torch.ops.aten.constant_pad_nd(x, pad).numpy())


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("kernel, stride, pad, dil", [(2, None, 0, 1), (3, 1, 1, 1), (2, 2, 1, 2), (3, 2, 0, 2)])
def test_max_pool_handler_computes_what_torch_computes(nd, kernel, stride, pad, dil):
    from gradcheck_lab.torch_graph import _max_pool

    x = torch.randn(1, 2, *[7] * nd, generator=torch.Generator().manual_seed(nd + kernel), dtype=torch.float64)
    pool = {1: torch.ops.aten.max_pool1d_with_indices, 2: torch.ops.aten.max_pool2d_with_indices,
            3: torch.ops.aten.max_pool3d_with_indices}[nd]
    args = ([kernel] * nd, [stride] * nd if stride else [], [pad] * nd, [dil] * nd)
    got, indices = _max_pool(backend("float"), _float_objects(x), *args)
    # max(a, b) = b + relu(a - b) (Note [Kinks through relu]): within an ulp of torch's exact max
    np.testing.assert_allclose(got.astype(float), pool(x, *args)[0].numpy(), rtol=1e-15, atol=1e-15)
    assert indices.dtype.kind == "i"  # never a checked output


def test_make_fx_shares_one_fake_mode_only_while_it_traces(monkeypatch):
    # Note [One fake mode]: the patched constructor is torch's own again after the trace, and values are recorded
    from torch.fx.experimental import proxy_tensor

    from gradcheck_lab import recorder
    from gradcheck_lab.torch_graph import _make_graph

    made = []
    real_mode = proxy_tensor.FakeTensorMode
    monkeypatch.setattr(recorder, "record", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("declined")))
    monkeypatch.setattr(proxy_tensor, "FakeTensorMode", type("Counted", (real_mode,), {
        "__init__": lambda self, *a, **k: made.append(1) or real_mode.__init__(self, *a, **k)}))
    before = proxy_tensor.FakeTensorMode
    x = torch.randn(3, 4, dtype=torch.float64)

    def writes_into_a_view(t):  # the recorder declines it: make_fx traces
        out = t.clone()
        out[:, 0] = t[:, 1] * 2
        return out.sin()

    gm = _make_graph(writes_into_a_view, [x])
    assert proxy_tensor.FakeTensorMode is before
    vals = [n.meta.get("val") for n in gm.graph.nodes if n.op == "call_function"]
    assert vals and all(v is None or tuple(v.shape) in {(3, 4), (3,)} for v in vals if hasattr(v, "shape"))
    torch.testing.assert_close(gm(x), writes_into_a_view(x))
    assert len(made) <= 1  # one shared mode for every recorded value (one per value before)


def test_constants_become_object_arrays_only_when_the_per_element_legs_read_them():
    # a vision transformer's weights as Python floats took 24 GB where only the tensor-level leg ran
    w = torch.randn(300, 300, dtype=torch.float64)
    traced, xs = _trace(lambda a: (a @ w).sin(), (2, 300))
    assert isinstance(traced, Traced) and len(traced.consts) >= 1
    assert not traced.consts._converted  # nothing converted by tracing
    name = next(iter(traced.consts))
    assert name in traced.consts and traced.consts[name].dtype == object
    assert list(traced.consts._converted) == [name]


def test_a_users_profile_module_does_not_break_tracing(tmp_path, monkeypatch):
    # pytorch_wavelets' tests folder holds a profile.py; torch's tracers import cProfile, which imports profile
    import sys

    from gradcheck_lab.torch_graph import _standard_cprofile

    (tmp_path / "profile.py").write_text("MINE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("cProfile", "profile"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import profile

    assert getattr(profile, "MINE", False)  # shadowed, as under that suite
    _standard_cprofile()
    import cProfile

    assert callable(cProfile.run) and sys.modules["profile"] is profile  # theirs stays theirs


def test_a_graph_is_folded_once():
    # which nodes depend on a leaf and the others' values depend on the graph only: the trace's analysis and
    # the tensor-level engine's graph share one evaluation
    from gradcheck_lab.engines import tensor
    from gradcheck_lab.recorder import record
    from gradcheck_lab.torch_graph import _fold

    w = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    x = torch.randn(4, 2, dtype=torch.float64)
    gm = record(lambda a: torch.tanh(a @ (w * 2 + 1)), [x])
    live, raw, targets = _fold(gm, [x])
    assert _fold(gm, [x * 3]) == (live, raw, targets) and _fold(gm, [x * 3])[1] is raw
    assert any(torch.equal(v, w * 2 + 1) for v in raw.values())
    graph, why = tensor.graph_of(None, [x], gm)
    assert why == "" and set(graph.consts) == set(raw) and set(graph.live) == live
    assert any(torch.equal(v, w * 2 + 1) for v in graph.consts.values())
