"""The dispatch-level recorder (recorder.py, Note [Recorded graphs])."""

from __future__ import annotations

import pytest
import torch

from gradcheck_lab.recorder import Declined, record


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


@pytest.mark.parametrize("f", [lambda x: x.clone().mul_(2), lambda x: x * x.sum().item(),
                               lambda x: x if x.sum() > 0 else -x],
                         ids=["in place", "item", "data-dependent branch"])
def test_it_declines_what_could_change_the_meaning(f):
    with pytest.raises(Declined):
        record(f, [_x(3)])


def test_modules_stay_off_their_fused_fast_paths():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, batch_first=True).eval().double()

    def f(a):
        with torch.no_grad():  # as inside an autograd.Function's forward
            return layer(a)

    gm = record(f, [_x(1, 3, 4)])
    assert not any("transformer_encoder_layer" in t for t in _targets(gm))
