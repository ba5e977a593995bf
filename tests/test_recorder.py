"""The dispatch-level recorder (recorder.py, Note [Recorded graphs])."""

from __future__ import annotations

import pytest
import torch

from gradcheck_lab.recorder import Declined, record
from gradcheck_lab.torch_graph import run_graph


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _targets(gm) -> set[str]:
    return {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}


def test_a_recorded_graph_computes_the_function():
    w = _x(4, 3)

    def f(x):
        return (torch.tanh(x @ w) * 2.0).sum(-1), x.max(dim=0)

    x = _x(5, 4)
    gm = record(f, [x])
    assert {"aten.mm.default", "aten.tanh.default", "aten.max.dim"} <= _targets(gm)
    assert any(n.op == "get_attr" for n in gm.graph.nodes)  # the closure's weight, a constant
    got, want = gm(x), [f(x)[0], *f(x)[1]]
    assert len(got) == 3 and all(torch.equal(a, b) for a, b in zip(got, want))
    y = _x(5, 4) + 1  # other inputs, the same graph
    assert torch.allclose(gm(y)[0], f(y)[0])
    walked = run_graph(gm, y)  # what the fidelity check runs: node by node, no generated code
    assert len(walked) == 3 and all(torch.equal(a, b) for a, b in zip(walked, gm(y)))


def test_a_recorded_graph_generates_its_code_only_when_called():
    gm = record(lambda x: torch.sin(x) * 2, [_x(3)])
    assert torch.equal(run_graph(gm, _x(3))[0], torch.sin(_x(3)) * 2)
    assert "sin" in gm.code  # generated on demand, and the same module still runs
    assert torch.equal(gm(_x(3))[0], torch.sin(_x(3)) * 2)


def _write_through_view(x):
    h = x * 2
    h[0].mul_(3)  # changes h through a view
    return h


def _view_then_write(x):
    h = x * 2
    v = h.view(-1)
    h.add_(1)  # v changes too
    return v


@pytest.mark.parametrize("f", [lambda x: x.mul_(2), _write_through_view, _view_then_write],
                         ids=["in place into an input", "through a view", "with a view alive"])
def test_it_declines_what_could_change_the_meaning(f):
    with pytest.raises(Declined):
        record(f, [_x(3, 2).clone()])


@pytest.mark.parametrize(("f", "reads"), [(lambda x: x * x.sum().item(), 1), (lambda x: x if x.sum() > 0 else -x, 1),
                                          (lambda x: x[: int(x[0, 0] > 0) + 1] * 2, 1), (lambda x: x.sin(), 0)],
                         ids=["item", "data-dependent branch", "a slice bound", "none"])
def test_reads_of_the_inputs_are_recorded_as_the_given_inputs_branch_and_listed(f, reads):
    """Note [Reads of the inputs]: the graph holds the branch and numbers of these inputs, and says so."""
    from gradcheck_lab.torch_graph import reads_of, run_graph

    x = _x(3, 2)
    gm = record(f, [x.clone()])
    assert len(reads_of(gm)) == reads
    assert torch.equal(run_graph(gm, x.clone())[0], f(x))


def test_in_place_ops_on_the_functions_own_tensors_are_recorded_out_of_place():
    def f(x):
        h = x.clone().mul_(2)
        h.relu_()
        h += x
        torch.nn.functional.elu(h, inplace=True)
        return h.sin()

    x = _x(3, 4)
    gm = record(f, [x])
    assert {"aten.mul.Tensor", "aten.relu.default", "aten.add.Tensor", "aten.elu.default"} <= _targets(gm)
    assert not any(t.endswith("_.default") or "_.Tensor" in t for t in _targets(gm))
    y = _x(3, 4) - 0.5  # the graph is the function at other inputs too
    assert torch.equal(gm(y)[0], f(y))


def test_modules_stay_off_their_fused_fast_paths():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, batch_first=True).eval().double()

    def f(a):
        with torch.no_grad():  # as inside an autograd.Function's forward
            return layer(a)

    gm = record(f, [_x(1, 3, 4)])
    assert not any("transformer_encoder_layer" in t for t in _targets(gm))


def test_constants_made_inside_the_function_are_read_and_written_freely():
    # kornia's MKD descriptor builds its module inside the call: buffers filled in place, weights converted by
    # .double() (a .data assignment no op records), and a Gaussian blur that checks bool((sigma > 0).all())
    def f(x):
        layer = torch.nn.Linear(3, 2)
        with torch.no_grad():
            layer.weight[:, :2] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        layer = layer.double()
        sigma = torch.tensor([1.5, 0.5], dtype=x.dtype)
        if not bool((sigma > 0).all()):
            raise ValueError("sigma must be positive")
        return layer(x) * sigma

    x = _x(4, 3)
    y = _x(4, 3) * 3 - 1
    torch.manual_seed(0)
    want = f(y)  # the Linear's random init is part of the function: compare with the same draw
    torch.manual_seed(0)
    gm = record(f, [x])
    assert torch.allclose(gm(y)[0], want)


def test_a_graph_traced_again_shares_its_own_constants():
    w = _x(3, 3)
    first = record(lambda x: (x @ w).sin(), [_x(2, 3)])
    again = record(first, [_x(2, 3)])
    (mine,) = list(first.buffers())
    (theirs,) = list(again.buffers())
    assert torch.equal(mine, w) and mine.data_ptr() != w.data_ptr()  # the function's tensor: copied
    assert theirs.data_ptr() == mine.data_ptr()  # the graph's own: shared, not copied again
