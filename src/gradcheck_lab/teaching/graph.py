"""``graph``: the traced computation graph as a picture (Graphviz DOT).

Each node shows its operation, forward value and upstream gradient
``dloss/dnode``; each edge shows the local derivative it carries.
Parameters are shaded boxes, inputs are plain ellipses. The graph runs left
to right (``rankdir=LR``) and nodes that depend on one component index of the
vector parameters only (an mlp's hidden unit ``j``: ``W1[j]``, ``b1[j]``,
``W2[j]``; a softmax class ``k``) are grouped in one cluster, so a wide
model stays readable.

Rendering to SVG or PNG runs the Graphviz ``dot`` binary in a subprocess; a
``.dot`` file needs nothing but this module.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .trace import Node, Trace, expression, point_row, trace_row

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["GraphResult", "graph", "to_dot", "FORMATS"]

#: File suffix -> Graphviz output format (None: the DOT source itself).
FORMATS = {".dot": None, ".gv": None, ".svg": "svg", ".png": "png", ".pdf": "pdf"}


@dataclass
class GraphResult:
    """The DOT source and where it went.

    ``path`` is the requested file; ``dot_path`` the DOT file written instead
    when the ``dot`` binary was missing (``rendered`` is then false and
    ``hint`` says how to render it by hand).
    """

    model: str
    source: str
    path: str | None = None
    format: str | None = None
    rendered: bool = False
    dot_path: str | None = None
    hint: str = ""

    @property
    def ok(self) -> bool:
        """True when the requested file was written."""
        return self.path is not None and (self.format is None or self.rendered)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "path": self.path,
            "format": self.format or "dot",
            "rendered": self.rendered,
            "dot_path": self.dot_path,
            "hint": self.hint,
            "ok": self.ok,
        }


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _num(x: float) -> str:
    return f"{x:.6g}"


def _indices(n: Node, memo: dict[int, frozenset], shaped: set[str]) -> frozenset:
    """First component indices of the shaped parameters ``n`` depends on."""
    if id(n) not in memo:
        if n.kind == "param":
            base, _, idx = n.name.partition("[")
            memo[id(n)] = frozenset({idx.split(",")[0].rstrip("]")}) if base in shaped and idx else frozenset()
        elif n.kind == "input":
            memo[id(n)] = frozenset()
        else:
            memo[id(n)] = frozenset().union(*(_indices(i, memo, shaped) for i in n.inputs))
    return memo[id(n)]


def to_dot(tr: Trace, shaped_params: set[str] | None = None) -> str:
    """DOT source of a traced loss."""
    shaped = set(shaped_params or ())
    lines = [
        f"digraph {_q(tr.model_name)} {{",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9, color="#555555"];',
        f"  label={_q(f'{tr.model_name}: loss = {_num(tr.loss)}  (value / grad = dloss/dnode)')};",
        "  labelloc=t;",
    ]
    clusters: dict[str, list[str]] = {}
    memo: dict[int, frozenset] = {}
    decl: list[tuple[Node, str]] = []
    for n in tr.nodes:
        value = f"value {_num(n.value)}"
        grad = f"grad {_num(n.grad)}"
        if n.kind == "param":
            label = "\n".join([n.name, value, grad])
            attrs = f'shape=box, style="rounded,filled", fillcolor="#ffe9a8", label={_q(label)}'
        elif n.kind == "input":
            label = "\n".join([n.name, value])
            attrs = f"shape=ellipse, label={_q(label)}"
        else:
            label = "\n".join([f"{n.name} = {expression(n)}", value, grad])
            fill = "#c9e4ff" if n.name == "loss" else "#ffffff"
            attrs = f'shape=box, style=filled, fillcolor="{fill}", label={_q(label)}'
        line = f"  {_q(n.name)} [{attrs}];"
        keys = _indices(n, memo, shaped) if shaped else frozenset()
        if len(keys) == 1:
            clusters.setdefault(next(iter(keys)), []).append(line)
        else:
            decl.append((n, line))
    lines += [line for _, line in decl]
    for key, members in sorted(clusters.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0]):
        lines.append(f"  subgraph {_q('cluster_' + key)} {{")
        lines.append(f'    label={_q(f"index [{key}]")}; style=dashed; color="#999999";')
        lines += ["  " + m for m in members]
        lines.append("  }")
    for n in tr.nodes:
        for child, d in zip(n.inputs, n.local):
            lines.append(f"  {_q(child.name)} -> {_q(n.name)} [label={_q('d ' + _num(d))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph(
    model: Model,
    point: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    *,
    dot_binary: str = "dot",
    timeout: float = 60.0,
) -> GraphResult:
    """The traced graph of ``model``'s loss, written to ``out`` (.dot, .gv, .svg, .png, .pdf).

    Without ``out`` only the DOT source is returned. When ``out`` asks for a
    picture and ``dot_binary`` is not found, the DOT source is written next
    to it (``g.svg`` -> ``g.dot``) and the result says how to render it.

    >>> from gradcheck_lab import get_model
    >>> print(graph(get_model("linear")).source.splitlines()[1])
      rankdir=LR;
    """
    theta, data = point_row(model, point, params)
    tr = trace_row(model, theta, data)
    source = to_dot(tr, {v.name for v in model.params if v.shape})
    result = GraphResult(model=model.name, source=source)
    if out is None:
        return result
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(
            f"Expected --out to end in {', '.join(FORMATS)} but got {str(out)!r}."
        )
    fmt = FORMATS[suffix]
    result.path, result.format = str(path), fmt
    if path.parent and not path.parent.exists():
        raise UsageError(f"Expected an existing directory for --out but {str(path.parent)!r} does not exist.")
    if fmt is None:
        path.write_text(source)
        return result
    exe = shutil.which(dot_binary)
    if exe is None:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(source)
        result.dot_path = str(dot_path)
        result.hint = (
            f"Graphviz `{dot_binary}` was not found; wrote {dot_path}. Install Graphviz "
            f"(e.g. apt install graphviz) and render it with: dot -T{fmt} {dot_path} -o {path}"
        )
        return result
    proc = subprocess.run(
        [exe, f"-T{fmt}", "-o", str(path)], input=source, text=True, capture_output=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise UsageError(f"Expected Graphviz to render {path} but it failed: {proc.stderr.strip()[:300]}")
    result.rendered = True
    return result
