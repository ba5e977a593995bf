"""The graph layout of the lesson page: every node on the canvas, none overlapping, inputs to the left."""

import pytest

from gradcheck_lab import get_model
from gradcheck_lab.html.graph_svg import NODE_H, NODE_W, graph_svg, layout
from gradcheck_lab.teaching.trace import expression, trace


@pytest.mark.parametrize(
    "name, options",
    [("linear", {}), ("quadratic", {}), ("logistic", {}), ("mlp", {"H": 4}), ("softmax", {})],
)
def test_layout_is_a_left_to_right_drawing(name, options):
    tr = trace(get_model(name, **options))
    pos, width, height = layout(tr)
    assert sorted(pos) == list(range(len(tr.nodes)))
    for x, y in pos.values():
        assert 0 <= x and x + NODE_W <= width and 0 <= y and y + NODE_H <= height
    boxes = sorted(pos.values())
    for k, (x, y) in enumerate(boxes):
        for x2, y2 in boxes[k + 1 :]:
            assert abs(x - x2) >= NODE_W or abs(y - y2) >= NODE_H, (x, y, x2, y2)
    idx = {id(n): k for k, n in enumerate(tr.nodes)}
    for k, n in enumerate(tr.nodes):
        for i in n.inputs:
            assert pos[idx[id(i)]][0] < pos[k][0]


def test_svg_has_one_group_per_node_and_one_edge_per_input():
    tr = trace(get_model("quadratic"), {"w1": 1, "w2": 1, "b": 1}, {"x": 2, "y": 4})
    svg = graph_svg(tr, expression)
    assert svg.count('<g class="node ') == len(tr.nodes)
    assert svg.count('<path class="edge"') == sum(len(n.inputs) for n in tr.nodes)
    for n in tr.nodes:
        assert f'data-name="{n.name}"' in svg
