"""``train --html``: an SGD run replayed, every step's gradient with its check.

The page shows the loss per sample (log scale when every loss is positive,
with each epoch's last-sample loss, the figure the lesson prints), the
parameter trajectories, and a table of the steps: the sample, the
parameters the gradient was computed at, the loss, autograd's gradient,
the closed form at the same parameters and sample, and ``|difference| /
tolerance`` (the check :func:`gradcheck_lab.teaching.train` made; a ratio
above 1 fails). A slider and the keyboard replay the run on the charts.

When a check failed, training stopped there; the step is marked on the
charts and in the table. With ``zero_grad=False`` that is the step where
``.grad``, never zeroed, stops being the true gradient (the sum of this
step's gradient and all earlier ones).

Long runs are thinned for the page (Note [Train page size]): the charts and
the replay keep at most :data:`MAX_POINTS` steps, the table
:data:`MAX_ROWS`, always with the first and last steps and the failed one.
"""

from __future__ import annotations

import numpy as np

from .base import esc, json_script, num, page
from .charts import line_chart

__all__ = ["train_page", "MAX_POINTS", "MAX_ROWS"]

# Note [Train page size]
# ~~~~~~~~~~~~~~~~~~~~~~
# A step embedded for the replay costs about 60 bytes per parameter plus 80;
# a table row about 90 bytes per parameter plus 300. The lesson's run (300
# steps, 3 parameters) is about 130 KB whole. A 100,000-epoch run has 300,000
# steps: thinned to 2,000 chart points and 300 table rows it stays under
# about 500 KB for a handful of parameters, and the charts (a few hundred
# pixels wide) lose nothing visible.
MAX_POINTS = 2000
MAX_ROWS = 300


def _pick(n: int, limit: int, keep: list[int]) -> list[int]:
    """At most ``limit`` indices of ``range(n)``, evenly spread, always with ``keep``."""
    if n <= limit:
        return list(range(n))
    chosen = {round(k * (n - 1) / (limit - 1)) for k in range(limit)}
    return sorted(chosen | {k for k in keep if 0 <= k < n})


def _checks(result, model, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form gradients and tolerances at the chosen steps (as the training loop checked them)."""
    from ..engines.symbolic import compiled
    from ..model import Batch
    from ..tolerance import tolerance_at

    if not idx:
        return np.zeros((0, len(result.param_labels))), np.zeros((0, len(result.param_labels)))
    rows = [np.asarray(model.encode_data(p), dtype=float) for p in result.data]
    theta = np.asarray([result.steps[i].params for i in idx], dtype=float)
    data = np.asarray([rows[result.steps[i].sample - 1] for i in idx], dtype=float)
    fn = compiled(model)
    with np.errstate(all="ignore"):
        sym = np.asarray([[float(v) for v in fn(*t, *d)] for t, d in zip(theta, data)], dtype=float)
        tol = np.asarray(tolerance_at(model, Batch(theta, data), sym, result.dtype), dtype=float)
    return sym, tol


_JS = r"""
const D = JSON.parse(document.getElementById('train-data').textContent);
const S = D.steps, N = S.length;
let cur = N - 1;
const slider = document.getElementById('slider');
const rowsByStep = new Map(Array.from(document.querySelectorAll('#steps tbody tr')).map(r => [Number(r.dataset.step), r]));
function moveCursor(svg, step) {
  if (!svg) return;
  const x0 = Number(svg.dataset.x0), x1 = Number(svg.dataset.x1), left = Number(svg.dataset.left), w = Number(svg.dataset.plotw);
  const px = left + (step - x0) / (x1 - x0) * w;
  const line = svg.querySelector('.cursor');
  line.setAttribute('x1', px); line.setAttribute('x2', px); line.setAttribute('visibility', 'visible');
}
function show(i) {
  cur = Math.max(0, Math.min(N - 1, i));
  const s = S[cur];
  slider.value = cur;
  moveCursor(document.getElementById('loss-chart'), s.step);
  moveCursor(document.getElementById('param-chart'), s.step);
  document.getElementById('r-step').textContent = 'step ' + s.step + ' (epoch ' + s.epoch + ', sample ' + s.sample + ')';
  document.getElementById('r-xy').textContent = 'x = ' + s.x + ', y = ' + s.y + ', loss = ' + s.loss;
  const body = document.querySelector('#replay tbody');
  body.replaceChildren(...D.params.map((p, k) => {
    const tr = document.createElement('tr');
    const vals = [p, s.params[k], s.grads[k], s.sym[k], s.ratio[k], s.ok[k] ? 'ok' : 'FAIL'];
    vals.forEach((v, c) => { const td = document.createElement('td'); td.textContent = v; if (c > 0 && c < 5) td.className = 'num'; tr.appendChild(td); });
    if (!s.ok[k]) tr.className = 'bad';
    tr.dataset.param = p;
    return tr;
  }));
  document.getElementById('r-verdict').textContent = s.note;
  document.getElementById('replay').classList.toggle('failed', s.ok.includes(false));
  rowsByStep.forEach((r, st) => r.classList.toggle('cur', st === s.step));
}
slider.max = N - 1;
slider.addEventListener('input', () => show(Number(slider.value)));
document.getElementById('prev').addEventListener('click', () => show(cur - 1));
document.getElementById('next').addEventListener('click', () => show(cur + 1));
document.getElementById('first').addEventListener('click', () => show(0));
document.getElementById('last').addEventListener('click', () => show(N - 1));
document.addEventListener('keydown', ev => {
  if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.target === slider) return;
  const k = ev.key;
  if (k === 'ArrowRight' || k === 'n') { show(cur + 1); ev.preventDefault(); }
  else if (k === 'ArrowLeft' || k === 'p') { show(cur - 1); ev.preventDefault(); }
  else if (k === 'Home') { show(0); ev.preventDefault(); }
  else if (k === 'End') { show(N - 1); ev.preventDefault(); }
});
show(D.start);
"""

_CSS = """
.replay { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; margin: 8px 0 14px; }
.replay .controls { display: flex; align-items: center; gap: 6px; flex-wrap: wrap; }
.replay input[type=range] { flex: 1 1 260px; }
#r-step { font-weight: 600; margin-left: 8px; }
#r-xy { color: var(--muted); margin: 4px 0; font-family: ui-monospace, monospace; font-size: 0.9em; }
#r-verdict { font-size: 0.92em; }
#replay.failed #r-verdict { color: var(--bad); font-weight: 600; }
.mismatch { border-left: 4px solid var(--bad); background: #fff5f5; padding: 8px 14px; margin: 10px 0; }
.mismatch pre { margin: 4px 0 0; white-space: pre-wrap; font-size: 0.88em; }
#steps td { padding: 1px 8px; text-align: right; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.88em; }
#steps td.bad { color: var(--bad); font-weight: 700; }
#steps tr.cur td { background: #e7f0ff; }
"""


def train_page(result, model) -> str:
    """The run ``result`` (from :func:`gradcheck_lab.train` on ``model``) as one HTML page.

    The closed-form gradients and tolerances shown are recomputed here at
    the steps kept for the page, the way the training loop checked them.
    """
    steps = result.steps
    n = len(steps)
    labels = list(result.param_labels)
    mm = result.mismatch
    bad_i = mm.step - 1 if mm is not None else None
    keep = [0, n - 1] + ([bad_i] if bad_i is not None else [])
    idx_chart = _pick(n, MAX_POINTS, keep)
    idx_rows = _pick(n, MAX_ROWS, keep)
    both = sorted(set(idx_chart) | set(idx_rows))
    sym, tol = _checks(result, model, both)
    pos = {i: k for k, i in enumerate(both)}

    def ratio_ok(i):
        return _ratio_ok(result, sym[pos[i]], tol[pos[i]], i)

    replay = _replay(result, idx_chart, sym, pos, ratio_ok)
    loss_chart, param_chart = _charts(result, idx_chart)
    start = len(replay) - 1 if mm is None else next(k for k, r in enumerate(replay) if r["step"] == mm.step)
    body = [
        f"<h1>{esc(result.model)}: training replayed</h1>",
        f'<p class="sub">{esc(result.formula)}, per-sample SGD the lesson\'s way: <code>loss.backward()</code>, '
        "<code>p.data -= lr * p.grad.data</code>, "
        + ("<code>p.grad.data.zero_()</code>" if result.zero_grad else "<b>without</b> <code>p.grad.data.zero_()</code>")
        + "; every step's gradient checked against the closed form.</p>",
        '<div class="facts">' + "".join(f"<div><b>{esc(k)}</b>{esc(v)}</div>" for k, v in _facts(result)) + "</div>",
        _banner(result),
        "<h2>Loss and parameters</h2>",
        '<div class="charts">'
        f"<figure>{loss_chart}<figcaption>The loss of each sample, before its update; dots: each epoch's last "
        "sample (the figure the lesson prints).</figcaption></figure>"
        f"<figure>{param_chart}<figcaption>Each parameter before each step"
        + (" (the first 8)" if len(labels) > 8 else "")
        + ".</figcaption></figure></div>",
        '<div class="replay js-only" id="replay"><div class="controls">'
        '<button id="first" title="first step (Home)">« first</button>'
        '<button id="prev" title="previous step (← or p)">◀ back</button>'
        '<input type="range" id="slider" min="0" value="0" aria-label="step">'
        '<button id="next" title="next step (→ or n)">next ▶</button>'
        '<button id="last" title="last step (End)">last »</button>'
        '<span id="r-step"></span></div><div id="r-xy"></div>'
        '<table><thead><tr><th>parameter</th><th>value</th><th>autograd grad</th><th>closed form</th>'
        '<th>|diff| / tol</th><th>check</th></tr></thead><tbody></tbody></table><div id="r-verdict"></div></div>',
        "<h2>Every step's gradient, checked</h2>",
        f'<p class="sub">|diff| / tol = |autograd − closed form| / tolerance, the tolerance being '
        f"{esc(result.to_dict()['check']['tolerance'])}; above 1 fails."
        + (f" {n - len(idx_rows)} of {n} steps are not listed (evenly thinned; the first, last and failed steps are)." if len(idx_rows) < n else "")
        + "</p>",
        _table(result, steps, idx_rows, sym, tol, pos, ratio_ok, _fmt),
    ]
    data = json_script("train-data", {"params": labels, "steps": replay, "start": start})
    title = f"{result.model}: training replayed"
    return page(title, "\n".join(body), css=_CSS, script=_JS, data=data)


def _fmt(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(num(x) for x in v) + "]"
    return num(v)


def _ratio_ok(result, r, t, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Step ``i``'s |diff| / tol per parameter (closed form ``r``, tolerance ``t``), and which passed."""
    mm = result.mismatch
    g = np.asarray(result.steps[i].grads, dtype=float)
    with np.errstate(all="ignore"):
        ratio = np.abs(g - r) / np.maximum(t, np.finfo(float).tiny)
    if mm is None or i + 1 < mm.step:
        # Training's own verdict: these steps passed (a parameter below a kink is not judged).
        return ratio, np.ones(len(result.param_labels), dtype=bool)
    return ratio, np.asarray([lab != mm.param and bool(r <= 1) for lab, r in zip(result.param_labels, ratio)])


def _replay(result, idx_chart: list[int], sym, pos, ratio_ok) -> list[dict]:
    """The steps the page's replay walks through, as its script reads them."""
    mm = result.mismatch
    replay = []
    for i in idx_chart:
        s = result.steps[i]
        ratio, ok = ratio_ok(i)
        note = "every gradient within tolerance of the closed form"
        if not ok.all():
            note = f"MISMATCH for {mm.param}: training stopped at this step. {mm.hint}" if mm else "MISMATCH"
        replay.append(
            {
                "step": s.step, "epoch": s.epoch, "sample": s.sample, "x": _fmt(s.x), "y": _fmt(s.y),
                "loss": num(s.loss), "params": [num(v) for v in s.params], "grads": [num(v) for v in s.grads],
                "sym": [num(v) for v in sym[pos[i]]], "ratio": [num(v, 3) for v in ratio], "ok": [bool(o) for o in ok],
                "note": note,
            }
        )
    return replay


def _charts(result, idx_chart: list[int]) -> tuple[str, str]:
    """The loss chart and the parameters' chart (the failed step marked on both)."""
    steps, mm = result.steps, result.mismatch
    xs = [s.step for s in steps]
    pick_xs = [xs[i] for i in idx_chart]
    losses = [steps[i].loss for i in idx_chart]
    per = len(result.data)
    marks = []
    if mm is not None:
        marks.append((mm.step, f"step {mm.step}: mismatch", "#c92a2a"))
    # Log scale only when the loss spans more than two decades (a shorter span would get one tick).
    logy = all(v > 0 for v in losses) and max(losses) > 100 * min(losses)
    epoch_x = [(e + 1) * per for e in range(len(result.epoch_losses))]
    pick_e = _pick(len(epoch_x), MAX_POINTS, [])
    loss_chart = line_chart(
        [("loss per sample", pick_xs, losses), ("epoch's last sample (dots)", [epoch_x[k] for k in pick_e], [result.epoch_losses[k] for k in pick_e])],
        xlabel="step", ylabel="loss" + (" (log scale)" if logy else ""), logy=logy, marks=marks, chart_id="loss-chart", cursor=True,
    )
    traj = [(lab, pick_xs, [steps[i].params[k] for i in idx_chart]) for k, lab in enumerate(result.param_labels[:8])]
    param_chart = line_chart(traj, xlabel="step", ylabel="parameter value", marks=marks, chart_id="param-chart", cursor=True)
    return loss_chart, param_chart


def _facts(result) -> list[tuple[str, str]]:
    facts = [
        ("model", result.model), ("learning rate", num(result.lr)), ("epochs", str(result.epochs)),
        ("dtype", result.dtype), ("samples per epoch", str(len(result.data))), ("steps run", str(len(result.steps))),
        ("zero .grad after each step", "yes" if result.zero_grad else "no (--no-zero-grad)"),
        ("initial", ", ".join(f"{k} = {num(v)}" for k, v in zip(result.param_labels, result.initial_params))),
    ]
    if result.prediction_after is not None:
        facts.append(("prediction at " + ", ".join(f"{k} = {_fmt(v)}" for k, v in result.at.items()),
                      f"{_fmt(result.prediction_before)} before, {_fmt(result.prediction_after)} after"))
    return facts


def _banner(result) -> str:
    """All steps agreed, or where training stopped and why."""
    mm = result.mismatch
    if mm is None:
        return (
            f'<div class="banner ok">All {result.checked_steps} steps checked: autograd ({esc(result.dtype)}) agrees with '
            "the closed form at every step, within the rounding of the dtype (Note [Tolerance model]).</div>"
        )
    banner = (
        f'<div class="banner bad">Training stopped at step {mm.step}: autograd\'s gradient for {esc(mm.param)} is '
        f"not the closed form's.</div>"
        f'<div class="mismatch" id="mismatch"><pre>{esc(mm.message())}</pre></div>'
    )
    if not result.zero_grad:
        banner += (
            f'<p>With <code>--no-zero-grad</code>, <code>.grad</code> is never zeroed: each <code>backward()</code> '
            f"adds this step's gradient to what is already there. Step {mm.step} is the first at which the accumulated "
            "<code>.grad</code> (this step's gradient plus every earlier one) departs from the true gradient; "
            "it is marked in red on the charts and in the table.</p>"
        )
    return banner


def _table(result, steps, idx_rows, sym, tol, pos, ratio_ok, fmt) -> str:
    labels = result.param_labels
    head = ["step", "epoch", "sample", "x", "y", "loss"]
    for lab in labels:
        head += [f"∂loss/∂{lab} autograd", "closed form", "|diff| / tol"]
    head.append("check")
    rows = []
    for i in idx_rows:
        s = steps[i]
        ratio, ok = ratio_ok(i)
        # Plain cells (no exact values in attributes): this table is the bulk of the page (Note [Train page size]).
        cells = [f"<td>{s.step}</td><td>{s.epoch}</td><td>{s.sample}</td><td>{esc(fmt(s.x))}</td><td>{esc(fmt(s.y))}</td>",
                 f"<td>{num(s.loss)}</td>"]
        for k in range(len(labels)):
            b = "" if ok[k] else ' class="bad"'
            cells.append(f"<td{b}>{num(s.grads[k])}</td><td>{num(sym[pos[i]][k])}</td><td{b}>{num(ratio[k], 3)}</td>")
        if not ok.all():
            verdict = '<span class="verdict bad">MISMATCH</span>'
        elif np.all(ratio <= 1):
            verdict = "ok"
        else:  # training did not judge it: a parameter below a relu/abs exactly at 0
            verdict = '<span title="derivative undefined here (relu/abs at 0); not judged">ok (kink)</span>'
        cls = ' class="bad"' if not ok.all() else ""
        rows.append(f'<tr data-step="{s.step}"{cls}>' + "".join(cells) + f"<td>{verdict}</td></tr>")
    ths = "".join(f"<th>{esc(h)}</th>" for h in head)
    return f'<div class="scroll"><table id="steps"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
