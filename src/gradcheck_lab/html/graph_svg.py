"""The traced computation graph as inline SVG, laid out in layers, left to right.

Layout (a small Sugiyama-style scheme, enough for the lesson's graphs and
the catalog's): an operation's layer is one more than its deepest input; a
leaf (parameter or input) sits one layer before its first consumer, so
``b`` and ``y`` enter next to where they are used instead of dragging long
edges across the picture. Within a layer, nodes are ordered by the mean
position of their neighbours (a few sweeps each way), which removes most
crossings. Edges are cubic curves from an input's right side to its
consumer's left side.

Graphviz's ``dot`` lays out better for big graphs, but it is an optional
binary; this layout needs nothing and is the same on every machine.

Each node is a ``<g class="node" data-i="K" data-name="NAME">`` with
``<text class="val">`` and ``<text class="grad">``: the static page shows
the final forward value and upstream gradient, and the stepper's script
rewrites them step by step. A graph of more than 24 nodes gets class
``big``: it keeps its size and scrolls instead of shrinking to the page.
"""

from __future__ import annotations

from .base import esc, num

__all__ = ["layout", "graph_svg", "NODE_W", "NODE_H"]

NODE_W, NODE_H = 132, 56
GAP_X, GAP_Y = 46, 16
PAD = 10


def _label(n, expression) -> str:
    if n.kind == "op":
        return f"{n.name} = {expression(n)}"
    return n.name


def layout(tr) -> tuple[dict[int, tuple[float, float]], int, int]:
    """``{node index: (x, y)}`` (top-left corners) and the picture's width and height."""
    nodes = tr.nodes
    idx = {id(n): k for k, n in enumerate(nodes)}
    rank = [0] * len(nodes)
    consumers: list[list[int]] = [[] for _ in nodes]
    for k, n in enumerate(nodes):
        for i in n.inputs:
            consumers[idx[id(i)]].append(k)
        if n.kind == "op":
            rank[k] = 1 + max((rank[idx[id(i)]] for i in n.inputs), default=-1)
    for k, n in enumerate(nodes):
        if n.kind != "op" and consumers[k]:
            rank[k] = max(0, min(rank[c] for c in consumers[k]) - 1)
    layers: dict[int, list[int]] = {}
    for k in range(len(nodes)):
        layers.setdefault(rank[k], []).append(k)
    order = {k: pos for layer in layers.values() for pos, k in enumerate(layer)}
    inputs = [[idx[id(i)] for i in n.inputs] for n in nodes]

    def sweep(neigh, ranks):
        for r in ranks:
            layer = layers[r]
            def key(k):
                ns = neigh[k]
                return (sum(order[j] for j in ns) / len(ns)) if ns else order[k]
            layer.sort(key=key)
            for pos, k in enumerate(layer):
                order[k] = pos

    ranks = sorted(layers)
    for _ in range(4):
        sweep(inputs, ranks[1:])
        sweep(consumers, list(reversed(ranks[:-1])))
    tallest = max(len(v) for v in layers.values())
    height = tallest * (NODE_H + GAP_Y) - GAP_Y + 2 * PAD
    width = len(ranks) * (NODE_W + GAP_X) - GAP_X + 2 * PAD
    pos: dict[int, tuple[float, float]] = {}
    for col, r in enumerate(ranks):
        layer = layers[r]
        span = len(layer) * (NODE_H + GAP_Y) - GAP_Y
        top = PAD + (height - 2 * PAD - span) / 2
        for j, k in enumerate(layer):
            pos[k] = (PAD + col * (NODE_W + GAP_X), top + j * (NODE_H + GAP_Y))
    return pos, int(width), int(height)


def _clip(text: str, limit: int = 19) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def graph_svg(tr, expression, *, edge_labels: bool | None = None) -> str:
    """The graph of trace ``tr`` as one ``<svg id="graph">`` element."""
    pos, width, height = layout(tr)
    nodes = tr.nodes
    idx = {id(n): k for k, n in enumerate(nodes)}
    if edge_labels is None:
        edge_labels = len(nodes) <= 40
    big = ' class="big"' if len(nodes) > 24 else ""
    out = [
        f'<svg id="graph"{big} width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="computation graph of {esc(tr.model_name)}" xmlns="http://www.w3.org/2000/svg">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#98a2b3"/></marker></defs>',
        '<g class="edges">',
    ]
    for k, n in enumerate(nodes):
        if n.kind != "op":
            continue
        tx, ty = pos[k]
        m = len(n.inputs)
        for j, (child, d) in enumerate(zip(n.inputs, n.local)):
            c = idx[id(child)]
            sx, sy = pos[c]
            x1, y1 = sx + NODE_W, sy + NODE_H / 2
            x2, y2 = tx, ty + NODE_H * (j + 1) / (m + 1)
            dx = max((x2 - x1) / 2, 30)
            path = f"M{x1:.1f},{y1:.1f} C{x1 + dx:.1f},{y1:.1f} {x2 - dx:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
            title = f"{child.name} → {n.name}: local derivative d{n.name}/d{child.name} = {num(d)}"
            out.append(
                f'<path class="edge" data-from="{c}" data-to="{k}" d="{path}" marker-end="url(#arrow)">'
                f"<title>{esc(title)}</title></path>"
            )
            if edge_labels:
                out.append(
                    f'<text class="elabel" data-from="{c}" data-to="{k}" x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 + 3.5:.1f}" '
                    f'text-anchor="middle">∂ {esc(num(d, 4))}</text>'
                )
    out.append("</g><g class=\"nodes\">")
    for k, n in enumerate(nodes):
        x, y = pos[k]
        label = _label(n, expression)
        cls = {"param": "param", "input": "input"}.get(n.kind, "loss" if n.name == "loss" else "op")
        rx = 22 if n.kind == "input" else 6
        grad = f"grad {num(n.grad)}"
        out.append(
            f'<g class="node {cls}" data-i="{k}" data-name="{esc(n.name)}" transform="translate({x:.1f},{y:.1f})">'
            f"<title>{esc(label)}: value {esc(repr(n.value))}, dloss/d{esc(n.name)} = {esc(repr(n.grad + 0.0))}</title>"
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="{rx}"/>'
            f'<text class="nm" x="{NODE_W / 2}" y="17" text-anchor="middle">{esc(_clip(label))}</text>'
            f'<text class="val" x="{NODE_W / 2}" y="34" text-anchor="middle">value {esc(num(n.value))}</text>'
            f'<text class="grad" x="{NODE_W / 2}" y="50" text-anchor="middle">{esc(grad)}</text>'
            "</g>"
        )
    out.append("</g></svg>")
    return "".join(out)
