"""``explain --html``: the lesson's page, a computation graph to step through.

The page holds, in this order: the graph (inline SVG, :mod:`.graph_svg`);
a stepper that walks the forward pass (each node's value, from the leaves
to the loss) and then the backward pass (each node's upstream gradient,
its local derivatives and what each input receives), highlighting the node
and its edges on the graph and its row in the node table; every step as a
table (the page reads in full with JavaScript off); the node table of the
``explain`` command; the closed-form partial derivatives as MathML (SymPy's
presentation printer; browsers render MathML natively); and, per
parameter, the three engines and the referee at the point.

The backward pass is replayed in the tracer's own order (reverse
topological, :func:`gradcheck_lab.teaching.trace.trace_row`), summing what
each input receives as the tracer does, so the running sums shown end on
exactly the tracer's gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import cell, esc, json_script, num, page
from .graph_svg import graph_svg

__all__ = ["explain_page"]


def _paren(x: float) -> str:
    t = num(x)
    return f"({t})" if t.startswith("-") else t


def _with_values(n) -> str:
    """``w1 * n1`` with the inputs' values: ``1 * 4``."""
    parts = n.op.split("·")
    text = parts[0]
    for i, rest in zip(n.inputs, parts[1:]):
        text += _paren(i.value) + rest
    return text


def _steps(tr, expression, checks) -> list[dict[str, Any]]:
    """Every step of the stepper: the leaves, the forward pass, the backward pass, the gradients."""
    nodes = tr.nodes
    idx = {id(n): k for k, n in enumerate(nodes)}
    leaves = [k for k, n in enumerate(nodes) if n.kind != "op"]
    ops = [k for k, n in enumerate(nodes) if n.kind == "op"]
    return [
        _start_step(nodes, leaves, ops),
        *_forward_steps(nodes, idx, ops, expression),
        *_backward_steps(nodes, idx, ops, expression),
        _done_step(nodes, leaves, checks),
    ]


def _node_step(phase: str, k: int, title: str, lines: list[str], n, idx, sets: list) -> dict[str, Any]:
    """The step at operation node ``k`` (``n``), its inputs and their edges highlighted."""
    return {
        "phase": phase,
        "node": k,
        "title": title,
        "lines": lines,
        "hi": [idx[id(i)] for i in n.inputs],
        "edges": [[idx[id(i)], k] for i in n.inputs],
        "set": sets,
    }


def _start_step(nodes, leaves: list[int], ops: list[int]) -> dict[str, Any]:
    params = [nodes[k] for k in leaves if nodes[k].kind == "param"]
    inputs = [nodes[k] for k in leaves if nodes[k].kind == "input"]
    return {
        "phase": "start",
        "node": None,
        "title": "Start: the leaves of the graph",
        "lines": [
            "Parameters: " + (", ".join(f"{n.name} = {num(n.value)}" for n in params) or "none"),
            "Inputs and target: " + (", ".join(f"{n.name} = {num(n.value)}" for n in inputs) or "none"),
            f"Next: the forward pass computes the {len(ops)} operation node{'s' if len(ops) != 1 else ''}, "
            "one at a time, from the leaves to the loss.",
        ],
        "hi": leaves,
        "edges": [],
        "set": [[k, "v", num(nodes[k].value)] for k in leaves],
    }


def _forward_steps(nodes, idx, ops: list[int], expression) -> list[dict[str, Any]]:
    steps = []
    for j, k in enumerate(ops, 1):
        n = nodes[k]
        lines = [f"{n.name} = {expression(n)} = {_with_values(n)} = {num(n.value)}"]
        locs = ", ".join(f"∂{n.name}/∂{i.name} = {num(d)}" for i, d in zip(n.inputs, n.local))
        lines.append(f"Local derivative{'s' if len(n.inputs) > 1 else ''}, kept for the backward pass: {locs}")
        if n.note:
            lines.append(f"Note: {n.note}.")
        if n.name == "loss":
            lines.append("The forward pass is done: the loss is computed. Next: the backward pass, from the loss back.")
        title = f"Forward {j} of {len(ops)}: {n.name} = {expression(n)}"
        steps.append(_node_step("forward", k, title, lines, n, idx, [[k, "v", num(n.value)]]))
    return steps


def _backward_steps(nodes, idx, ops: list[int], expression) -> list[dict[str, Any]]:
    """Replay the tracer's reverse pass with running sums."""
    steps = []
    running = [0.0] * len(nodes)
    if ops:
        running[ops[-1]] = 1.0
    for j, k in enumerate(reversed(ops), 1):
        n = nodes[k]
        up = running[k]
        if j == 1:
            lines = [f"The backward pass starts at the loss: ∂loss/∂loss = {num(up)}."]
        else:
            lines = [f"Upstream gradient ∂loss/∂{n.name} = {num(up)} (everything that uses {n.name} has passed its share)."]
        sets = [[k, "g", num(up)]]
        for i, d in zip(n.inputs, n.local):
            c = idx[id(i)]
            before = running[c]
            running[c] = before + up * d
            got = up * d
            total = (
                f"∂loss/∂{i.name} is now {num(running[c])}"
                if before == 0
                else f"∂loss/∂{i.name} is now {num(before)} + {_paren(got)} = {num(running[c])}"
            )
            lines.append(f"{i.name} receives upstream × local = {_paren(up)} × {_paren(d)} = {num(got)}; {total}")
            sets.append([c, "g", num(running[c])])
        title = f"Backward {j} of {len(ops)}: {n.name} = {expression(n)}"
        steps.append(_node_step("backward", k, title, lines, n, idx, sets))
    return steps


def _done_step(nodes, leaves: list[int], checks) -> dict[str, Any]:
    lines = []
    for c in checks:
        verdict = "undefined here (kink)" if c["kink"] else "agrees" if c["ok"] else "DIFFERS"
        lines.append(
            f"∂loss/∂{c['param']} = {num(c['trace'])} (this trace); closed form {num(c['symbolic'])}, "
            f"referee {num(c['referee'])}: {verdict}"
        )
    return {
        "phase": "done",
        "node": None,
        "title": "Done: the gradient of every parameter",
        "lines": lines or ["The model has no parameters."],
        "hi": [k for k in leaves if nodes[k].kind == "param"],
        "edges": [],
        "set": [],
    }


_JS = r"""
const D = JSON.parse(document.getElementById('explain-data').textContent);
const N = D.steps.length;
let cur = 0;
const nodes = Array.from(document.querySelectorAll('#graph g.node'));
const edges = Array.from(document.querySelectorAll('#graph .edge, #graph .elabel'));
const stepRows = Array.from(document.querySelectorAll('#steps tbody tr'));
const nodeRows = Array.from(document.querySelectorAll('#nodes tbody tr'));
function show(i) {
  cur = Math.max(0, Math.min(N - 1, i));
  const v = nodes.map(() => null), g = nodes.map(() => null);
  for (let s = 0; s <= cur; s++) {
    for (const [k, what, text] of D.steps[s].set) { (what === 'v' ? v : g)[k] = text; }
  }
  const st = D.steps[cur];
  nodes.forEach((el, k) => {
    el.querySelector('.val').textContent = v[k] === null ? 'value ?' : 'value ' + v[k];
    el.querySelector('.grad').textContent = g[k] === null ? '' : 'grad ' + g[k];
    el.classList.toggle('known', v[k] !== null);
    el.classList.toggle('cur', st.node === k);
    el.classList.toggle('hi', st.hi.includes(k));
  });
  const on = new Set(st.edges.map(([a, b]) => a + '-' + b));
  edges.forEach(el => el.classList.toggle('on', on.has(el.dataset.from + '-' + el.dataset.to)));
  document.body.dataset.phase = st.phase;
  stepRows.forEach((r, s) => r.classList.toggle('cur', s === cur));
  nodeRows.forEach((r, k) => { r.classList.toggle('cur', st.node === k); r.classList.toggle('bwd', st.phase === 'backward'); });
  document.getElementById('step-no').textContent = 'step ' + (cur + 1) + ' of ' + N;
  document.getElementById('step-phase').textContent = st.phase;
  document.getElementById('step-title').textContent = st.title;
  const box = document.getElementById('step-lines');
  box.replaceChildren(...st.lines.map(t => { const d = document.createElement('div'); d.textContent = t; return d; }));
  document.getElementById('prev').disabled = cur === 0;
  document.getElementById('first').disabled = cur === 0;
  document.getElementById('next').disabled = cur === N - 1;
  document.getElementById('last').disabled = cur === N - 1;
}
document.getElementById('first').addEventListener('click', () => show(0));
document.getElementById('prev').addEventListener('click', () => show(cur - 1));
document.getElementById('next').addEventListener('click', () => show(cur + 1));
document.getElementById('last').addEventListener('click', () => show(N - 1));
stepRows.forEach((r, s) => r.addEventListener('click', () => show(s)));
document.addEventListener('keydown', ev => {
  if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
  const k = ev.key;
  if (k === 'ArrowRight' || k === 'n' || k === 'j') { show(cur + 1); ev.preventDefault(); }
  else if (k === 'ArrowLeft' || k === 'p' || k === 'k') { show(cur - 1); ev.preventDefault(); }
  else if (k === 'Home') { show(0); ev.preventDefault(); }
  else if (k === 'End') { show(N - 1); ev.preventDefault(); }
});
show(0);
"""

_CSS = """
#graph { display: block; max-width: 100%; height: auto; }
#graph.big { max-width: none; }
#graph .edge { fill: none; stroke: #b8c0cc; stroke-width: 1.3; }
#graph .elabel { font-size: 10px; fill: #667085; paint-order: stroke; stroke: #fff; stroke-width: 3px; stroke-linejoin: round; }
#graph .node rect { fill: #fff; stroke: #98a2b3; stroke-width: 1.2; }
#graph .node.param rect { fill: var(--param); stroke: #c9a227; }
#graph .node.input rect { fill: var(--input); stroke: #7aa7d9; }
#graph .node.loss rect { fill: #e3ecff; stroke: #3b5bdb; stroke-width: 1.6; }
#graph .node .nm { font-size: 12px; font-weight: 600; fill: #1d2939; }
#graph .node .val { font-size: 11px; fill: var(--fwd); }
#graph .node .grad { font-size: 11px; fill: var(--bwd); font-weight: 600; }
.has-js #graph .node:not(.known) { opacity: 0.45; }
#graph .node.cur rect { stroke-width: 3; }
[data-phase="forward"] #graph .node.cur rect, [data-phase="start"] #graph .node.hi rect { stroke: var(--fwd); }
[data-phase="backward"] #graph .node.cur rect, [data-phase="done"] #graph .node.hi rect { stroke: var(--bwd); stroke-width: 3; }
[data-phase="forward"] #graph .node.hi rect { stroke: var(--fwd); stroke-dasharray: 4 2; stroke-width: 2; }
[data-phase="backward"] #graph .node.hi rect { stroke: var(--bwd); stroke-dasharray: 4 2; stroke-width: 2; }
[data-phase="forward"] #graph .edge.on { stroke: var(--fwd); stroke-width: 2.6; }
[data-phase="backward"] #graph .edge.on { stroke: var(--bwd); stroke-width: 2.6; }
#graph .elabel.on { fill: #1d2939; font-weight: 700; }
.stepper { position: sticky; top: 0; z-index: 2; background: #fff; padding: 8px 0 6px; border-bottom: 1px solid var(--line); }
.controls { display: flex; align-items: center; gap: 6px; flex-wrap: wrap; }
.controls .hint { color: var(--muted); font-size: 0.85em; margin-left: 10px; }
#step-no { font-weight: 600; margin: 0 8px; min-width: 7em; }
#step-phase { display: inline-block; text-transform: uppercase; font-size: 0.75em; letter-spacing: 0.05em;
  padding: 1px 7px; border-radius: 8px; background: var(--soft); color: var(--muted); margin-right: 6px; }
[data-phase="forward"] #step-phase { background: #e3ecff; color: var(--fwd); }
[data-phase="backward"] #step-phase { background: #ffe8d9; color: var(--bwd); }
[data-phase="done"] #step-phase { background: #e6f4ea; color: var(--ok); }
#step-title { font-weight: 600; }
#step-lines { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em; margin-top: 4px; min-height: 4.2em; }
#steps tbody tr { cursor: pointer; }
#steps td.phase { color: var(--muted); font-size: 0.85em; text-transform: uppercase; }
#steps td.what { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.88em; }
.key { display: flex; gap: 16px; flex-wrap: wrap; font-size: 0.85em; color: var(--muted); margin: 4px 0 8px; }
.key span i { display: inline-block; width: 14px; height: 10px; border: 1px solid #98a2b3; border-radius: 2px; margin-right: 4px; vertical-align: middle; }
.eq { display: flex; align-items: center; margin: 0.2em 0 0.6em; font-size: 1.1em; }
"""


def _mathml(derivation) -> str:
    """The loss and each partial derivative as MathML (SymPy's presentation printer)."""
    from sympy.printing.mathml import mathml

    def mm(e) -> str:
        return mathml(e, printer="presentation")

    out = [f'<div class="eq"><math display="block"><mi>L</mi><mo>=</mo>{mm(derivation.loss)}</math></div>']
    syms = dict(zip(derivation.param_labels, derivation.param_symbols))
    for label, expr in derivation.partials:
        p = label[len("dloss/d") :]
        lhs = f"<mfrac><mrow><mo>∂</mo><mi>L</mi></mrow><mrow><mo>∂</mo>{mm(syms[p])}</mrow></mfrac>"
        out.append(f'<div class="eq" data-param="{esc(p)}"><math display="block">{lhs}<mo>=</mo>{mm(expr)}</math></div>')
    return "".join(out)


def explain_page(
    model,
    point: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    explanation=None,
    engines: bool = True,
) -> str:
    """The lesson's page for ``model`` at ``point`` and ``params``, as one HTML string.

    ``explanation`` reuses an :func:`~gradcheck_lab.teaching.explain` result
    for the same arguments (the CLI has one already). ``engines=False``
    leaves out the three engines' table (it runs :func:`gradcheck_lab.verify`
    at the point, about 2 s with torch's import).

    >>> from gradcheck_lab import get_model
    >>> text = explain_page(get_model("quadratic"), {"x": 2, "y": 4}, engines=False)
    >>> text.startswith("<!DOCTYPE html>"), 'data-name="w1"' in text
    (True, True)
    """
    from ..teaching.derive import derive
    from ..teaching.explain import explain
    from ..teaching.trace import expression

    e = explanation if explanation is not None else explain(model, point, params)
    tr = e.trace
    steps = _steps(tr, expression, e.checks)
    title = f"{e.model}: the computation graph, forward and backward"
    facts = [
        ("model", f"{e.model}"),
        ("point", ", ".join(f"{k} = {num(v)}" for k, v in tr.data.items())),
        ("parameters", ", ".join(f"{k} = {num(v)}" for k, v in tr.params.items())),
        ("loss", num(tr.loss)),
    ]
    body = [
        f"<h1>{esc(e.model)}: forward and backward, node by node</h1>",
        f'<p class="sub">{esc(e.formula or "")}</p>' if e.formula else "",
        '<div class="facts">' + "".join(f"<div><b>{esc(k)}</b>{esc(v)}</div>" for k, v in facts) + "</div>",
        "<h2>The computation graph</h2>",
        "<p>Each box is one value. The <b>forward pass</b> computes every node's value from its inputs "
        '(<span style="color:var(--fwd)">blue</span>); the <b>backward pass</b> starts at the loss with gradient 1 '
        "and hands each input <i>upstream gradient × local derivative</i> "
        '(<span style="color:var(--bwd)">orange</span>, <code>grad</code> = ∂loss/∂node); a value used twice '
        "adds up what it receives. Each arrow is labelled with its local derivative.</p>",
        '<div class="key"><span><i style="background:var(--param)"></i>parameter</span>'
        '<span><i style="background:var(--input)"></i>input or target</span>'
        '<span><i style="background:#fff"></i>operation</span>'
        '<span><i style="background:#e3ecff"></i>the loss</span></div>',
        '<section class="stepped"><div class="stepper js-only" id="stepper"><div class="controls">'
        '<button id="first" title="first step (Home)">« first</button>'
        '<button id="prev" title="previous step (← or p)">◀ back</button>'
        '<button id="next" title="next step (→ or n)">next ▶</button>'
        '<button id="last" title="last step (End)">last »</button>'
        '<span id="step-no"></span>'
        '<span class="hint">keys: <kbd>→</kbd>/<kbd>n</kbd> next, <kbd>←</kbd>/<kbd>p</kbd> back, '
        "<kbd>Home</kbd>/<kbd>End</kbd></span></div>"
        '<div><span id="step-phase"></span><span id="step-title"></span></div>'
        '<div id="step-lines" aria-live="polite"></div></div>',
        '<p class="no-js sub">With JavaScript on, a stepper walks through the steps below on the graph; '
        "here the graph shows every node's final value and gradient.</p>",
        f'<div class="scroll">{graph_svg(tr, expression)}</div></section>',
        "<h2>Every step</h2>",
        '<p class="sub">The forward pass, then the backward pass, in the order the stepper follows '
        "(click a row to jump there).</p>",
        _steps_table(steps),
        "<h2>The node table</h2>",
        '<p class="sub">The table of <code>gradcheck-lab explain</code>: upstream = ∂loss/∂node; '
        "each input receives upstream × local, summed over the nodes that use it.</p>",
        _node_table(tr),
        "<h2>The closed form</h2>",
        "<p>SymPy differentiates the same model function symbolically (simplified for reading); "
        "evaluated at the point, each partial derivative gives the value the backward pass found.</p>",
        _mathml(derive(model)),
        "<h2>Checked: three engines and the referee</h2>",
        _checks_table(e, model, point, params, engines),
    ]
    data = json_script("explain-data", {"model": e.model, "steps": steps})
    return page(title, "\n".join(b for b in body if b), css=_CSS, script=_JS, data=data)


def _steps_table(steps) -> str:
    rows = []
    for s, st in enumerate(steps):
        rows.append(
            f'<tr data-step="{s}"><td class="num">{s + 1}</td><td class="phase">{esc(st["phase"])}</td>'
            f'<td><b>{esc(st["title"])}</b><div class="what">'
            + "<br>".join(esc(line) for line in st["lines"])
            + "</div></td></tr>"
        )
    return (
        '<div class="scroll"><table id="steps"><thead><tr><th>#</th><th>phase</th><th>what happens</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></div>"
    )


def _node_table(tr) -> str:
    rows = []
    for k, r in enumerate(tr.rows()):
        kind = {"param": "parameter", "input": "input"}.get(r["kind"], r["expression"])
        names = r["inputs"]
        local = ", ".join(f"∂{r['name']}/∂{i} = {num(d)}" for i, d in zip(names, r["local_list"]))
        if r["note"]:
            local += f" ({r['note']})"
        to_in = ", ".join(f"{i}: {num(g)}" for i, g in zip(names, r["to_inputs"]))
        rows.append(
            f'<tr data-i="{k}" data-name="{esc(r["name"])}"><td><b>{esc(r["name"])}</b></td><td class="mono">{esc(kind)}</td>'
            f'<td>{esc(", ".join(names))}</td>{cell(r["value"])}<td class="mono">{esc(local)}</td>'
            f'{cell(r["upstream"], cls="num up")}<td class="mono">{esc(to_in)}</td></tr>'
        )
    head = "".join(
        f"<th>{h}</th>" for h in ("node", "operation", "inputs", "value", "local derivatives", "upstream", "to inputs")
    )
    return f'<div class="scroll"><table id="nodes"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _checks_table(e, model, point, params, engines: bool) -> str:
    from ..engines import ENGINE_LABELS

    intro = (
        "<p>The backward pass above is one way to get the gradient. <code>verify</code>'s three engines get it "
        "independently: SymPy's closed form, torch autograd and finite differences (Richardson); the mpmath "
        "referee computes it exactly and decides. The check passes when each is within float64 rounding of the "
        "others at this point (Note [Tolerance model]).</p>"
    )
    pc = None
    if engines:
        from ..api import verify

        pt = dict(point) if point is not None else dict(model.dataset[0]) if model.dataset else None
        if pt is not None:
            rep = verify(model, points=[pt], params=params or None, random=0)
            pc = rep.data_points[0] if rep.data_points else None
    names = list(pc.checks[0].values) if pc is not None and pc.checks else []
    head = ["parameter", "this trace"] + [ENGINE_LABELS[n] for n in names] + ["referee (exact)", "tolerance", "verdict"]
    if pc is None:
        head = ["parameter", "this trace", "symbolic", "referee (exact)", "tolerance", "verdict"]
    rows = []
    for k, c in enumerate(e.checks):
        verdict = (
            '<span class="verdict kink">kink</span>' if c["kink"]
            else '<span class="verdict ok">ok</span>' if c["ok"] else '<span class="verdict bad">DIFFERS</span>'
        )
        cells = [f"<td><b>{esc(c['param'])}</b></td>", cell(c["trace"])]
        if pc is not None:
            p = pc.checks[k]
            cells += [cell(p.values[n]) for n in names]
            if p.at_fault:
                verdict = '<span class="verdict bad">MISMATCH: ' + esc(", ".join(ENGINE_LABELS[n] for n in p.at_fault)) + "</span>"
            cells += [cell(p.exact if p.exact is not None else c["referee"]), cell(c["tolerance"], 2)]
        else:
            cells += [cell(c["symbolic"]), cell(c["referee"]), cell(c["tolerance"], 2)]
        rows.append(f'<tr data-param="{esc(c["param"])}">' + "".join(cells) + f"<td>{verdict}</td></tr>")
    ok = e.agree and (pc is None or pc.verdict == "agree")
    if not ok:
        banner = '<div class="banner bad">Mismatch: see the verdict column.</div>'
    elif e.kinks:
        banner = (
            f'<div class="banner ok">The others agree; the derivative for {esc(", ".join(e.kinks))} is undefined at this '
            "point (relu or abs at exactly 0): the trace uses torch's convention (0), the closed form one branch.</div>"
        )
    else:
        banner = '<div class="banner ok">All agree: the backward pass, the engines and the referee give the same gradient.</div>'

    table = (
        '<div class="scroll"><table id="checks"><thead><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )
    return intro + table + banner
