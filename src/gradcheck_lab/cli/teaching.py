"""Sub-commands of the lesson: ``derive``, ``explain``, ``graph``, ``train``.

Parse, call :mod:`gradcheck_lab.teaching`, render. torch, SymPy and
matplotlib are imported inside the ``run`` functions only.
"""

from __future__ import annotations

import argparse
import json
import sys

from .common import (
    add_model_arguments,
    add_point_arguments,
    model_from_args,
    params_from_args,
    point_from_args,
)

__all__ = ["add_parser"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "derive",
        help="the loss and every partial derivative in closed form",
        description="Print the loss and every partial derivative dloss/dparam in closed form (SymPy, simplified).",
    )
    add_model_arguments(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--latex", action="store_true", help="print LaTeX")
    fmt.add_argument("--pretty", action="store_true", help="print SymPy's 2-D pretty form")
    fmt.add_argument("--json", action="store_true", help="one JSON document (text and LaTeX)")
    p.add_argument("--hessian", action="store_true", help="also the second derivatives (upper triangle)")
    p.set_defaults(run=run_derive)

    p = subparsers.add_parser(
        "explain",
        help="the computation graph of one loss, node by node, with the chain rule",
        description="Trace the loss at one point: every node's operation, inputs, forward value, local "
        "derivatives, upstream gradient and the gradient passed to each input; then check dloss/dparam "
        "against the symbolic engine and the exact referee (exit 1 if they differ). Defaults: the "
        "model's first data point and initial parameters.",
    )
    add_model_arguments(p)
    add_point_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--html", metavar="FILE.html", help="also write the lesson's page: the graph to step through (opens from disk)")
    p.set_defaults(run=run_explain)

    p = subparsers.add_parser(
        "graph",
        help="the traced computation graph as a picture (Graphviz)",
        description="Draw the traced graph with forward values and gradients on each node. --out FILE "
        "ending in .dot/.gv (DOT source), .svg, .png or .pdf (rendered by the Graphviz `dot` binary). "
        "Without --out the DOT source goes to stdout.",
    )
    add_model_arguments(p)
    add_point_arguments(p)
    p.add_argument("--out", "-o", metavar="FILE", help="output file (.dot, .gv, .svg, .png, .pdf)")
    p.set_defaults(run=run_graph)

    p = subparsers.add_parser(
        "train",
        help="the lesson's per-sample SGD in PyTorch, every gradient checked",
        description="Per-sample SGD the lesson's way (float32 leaf tensors, backward, print grad, "
        "p.data -= lr * p.grad.data, zero the gradient), each step's autograd gradient checked against "
        "the closed form; the first disagreement stops training (exit 1).",
    )
    add_model_arguments(p)
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--epochs", type=int, default=100, help="number of epochs (default 100)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="initial parameter value (repeatable; default the model's, 1.0 for the lesson's models)",
    )
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default float32")
    p.add_argument(
        "--data",
        metavar="X:Y,...",
        help='training samples as X:Y pairs separated by commas, e.g. "1:2,2:4,3:6" '
        "(one-input models; default the model's dataset)",
    )
    p.add_argument("--at", metavar="X", help="input of the before/after prediction (default 4)")
    p.add_argument(
        "--no-zero-grad",
        dest="zero_grad",
        action="store_false",
        help="never zero .grad (the classic bug: gradients accumulate; the check stops it)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document instead of the lesson's lines")
    p.add_argument("--plot", metavar="FILE.png", help="save the loss curve and parameter trajectories (PNG)")
    p.add_argument("--html", metavar="FILE.html", help="also write the run as a page: charts, every step's check (opens from disk)")
    p.set_defaults(run=run_train)


# ---------------------------------------------------------------- derive
def run_derive(args: argparse.Namespace) -> int:
    from ..teaching import derive

    model = model_from_args(args)
    d = derive(model, hessian=args.hessian)
    if args.json:
        print(json.dumps(d.to_dict(), indent=2))
        return 0
    form = "latex" if args.latex else "pretty" if args.pretty else "str"
    sep = "\n" if form == "pretty" else " "
    print(f"model: {d.model}" + (f"  ({d.formula})" if d.formula else ""))
    if d.symbols:
        print("symbols: " + ", ".join(f"{k} = {v}" for k, v in d.symbols.items()))
    for lhs, rhs in d.render(form)["equations"]:
        print(f"{lhs} ={sep}{rhs}")
    return 0


# ---------------------------------------------------------------- explain
def _g(x: float) -> str:
    return f"{x + 0.0:.6g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)]


def render_explanation(e) -> list[str]:
    tr = e.trace
    out = [f"model: {e.model}" + (f"  ({e.formula})" if e.formula else "")]
    out.append("point: " + ", ".join(f"{k} = {v!r}" for k, v in tr.data.items()))
    out.append("params: " + ", ".join(f"{k} = {v!r}" for k, v in tr.params.items()))
    out.append("")
    out.append("Forward: each node's value and local derivatives; backward: upstream = dloss/dnode,")
    out.append("and each input receives upstream * local (summed over the nodes that use it).")
    rows = []
    for r in tr.rows():
        kind = {"param": "parameter", "input": "input"}.get(r["kind"], r["expression"])
        names = r["inputs"]
        local = ", ".join(f"d{r['name']}/d{i}={_g(d)}" for i, d in zip(names, r["local_list"]))
        to_in = ", ".join(f"{i}:{_g(g)}" for i, g in zip(names, r["to_inputs"]))
        rows.append([r["name"], kind, ", ".join(names), _g(r["value"]), local, _g(r["upstream"]), to_in])
        if r["note"]:
            rows[-1][4] += f"  ({r['note']})"
    out += _table(["node", "operation", "inputs", "value", "local derivatives", "upstream", "to inputs"], rows)
    out.append("")
    out.append(f"loss = {tr.loss!r}")
    out += _table(
        ["dloss/d", "trace", "symbolic", "referee", "check"],
        [
            [c["param"], repr(c["trace"] + 0.0), repr(c["symbolic"] + 0.0), repr(c["referee"] + 0.0),
             "undefined (kink)" if c["kink"] else "ok" if c["ok"] else f"DIFFERS (tolerance {c['tolerance']:.3g})"]
            for c in e.checks
        ],
    )
    if e.kinks:
        out.append(
            f"note: the derivative for {', '.join(e.kinks)} is undefined at this point (relu or abs at exactly 0): "
            "the trace uses torch's convention (0), the closed form one branch; not counted as a mismatch."
        )
    if e.agree:
        out.append(("check: every other traced gradient agrees" if e.kinks else "check: the traced gradients agree")
                   + " with the symbolic engine and the referee "
                   "(within float64 rounding at this point, Note [Tolerance model]).")
    else:
        bad = [c["param"] for c in e.checks if not c["ok"]]
        out.append(f"check: MISMATCH for {', '.join(bad)}: the traced gradient differs from the closed form.")
    return out


def run_explain(args: argparse.Namespace) -> int:
    from ..teaching import explain

    model = model_from_args(args)
    if args.html:
        from ..html.base import check_path

        check_path(args.html)
    point, params = point_from_args(model, args), params_from_args(args)
    e = explain(model, point, params)
    if args.json:
        print(json.dumps(e.to_dict(), indent=2))
    else:
        print("\n".join(render_explanation(e)))
    if args.html:
        from ..html import explain_page, write_page

        write_page(explain_page(model, point, params, explanation=e), args.html)
        print(f"wrote {args.html}", file=sys.stderr if args.json else sys.stdout)
    return 0 if e.agree else 1


# ---------------------------------------------------------------- graph
def run_graph(args: argparse.Namespace) -> int:
    from ..teaching import graph

    model = model_from_args(args)
    g = graph(model, point_from_args(model, args), params_from_args(args), out=args.out)
    if args.out is None:
        sys.stdout.write(g.source)
        return 0
    if g.ok:
        print(f"wrote {g.path}")
        return 0
    print(f"Error: {g.hint}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------- train
def run_train(args: argparse.Namespace) -> int:
    from ..teaching import train
    from ..teaching.train import parse_data, plot_training
    from .common import parse_number_list

    model = model_from_args(args)
    data = parse_data(args.data, model) if args.data is not None else None
    at = parse_number_list(args.at, "--at") if args.at is not None else None
    if args.plot is not None:
        from pathlib import Path

        from ..errors import UsageError

        if not args.plot.lower().endswith(".png"):
            raise UsageError(f"Expected --plot FILE ending in .png but got {args.plot!r}.")
        parent = Path(args.plot).parent
        if not parent.is_dir():
            raise UsageError(f"Expected an existing directory for --plot but {str(parent)!r} does not exist.")
    if args.html:
        from ..html.base import check_path

        check_path(args.html)
    r = train(
        model,
        lr=args.lr,
        epochs=args.epochs,
        params=params_from_args(args),
        dtype=args.dtype,
        data=data,
        zero_grad=args.zero_grad,
        at=at,
    )
    if args.json:
        print(json.dumps(r.to_dict()))
    else:
        print("\n".join(r.lines()))
    if args.plot:
        plot_training(r, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)
    if args.html:
        from ..html import train_page, write_page

        write_page(train_page(r, model), args.html)
        print(f"wrote {args.html}", file=sys.stderr if args.json else sys.stdout)
    return 0 if r.ok else 1
