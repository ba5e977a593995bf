"""CLI commands ``verify`` and ``list``: thin shells over the library."""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from .common import (
    add_model_arguments,
    add_point_arguments,
    model_from_args,
    params_from_args,
    point_from_args,
)

__all__ = ["add_parser"]


def _int_at_least(minimum: int, maximum: int = 10_000_000):
    """An argparse type: an integer in ``[minimum, maximum]``."""
    what = "a positive integer" if minimum == 1 else "a non-negative integer"

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} but got {text!r}") from None
        if not minimum <= n <= maximum:
            raise argparse.ArgumentTypeError(f"expected {what} of at most {maximum} but got {n}")
        return n

    return parse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="check a model's gradients with all engines and the referee",
        description="Compare SymPy, torch autograd and finite differences at the model's data points "
        "and at random points; an mpmath referee names the engine at fault. "
        "Exit 0: all agree; 1: mismatch; 2: usage error.",
    )
    add_model_arguments(p)
    add_point_arguments(p)
    p.add_argument("--points", type=_int_at_least(1), default=1000, metavar="N", help="random points (default 1000)")
    p.add_argument("--no-random", action="store_true", help="check only the data points")
    p.add_argument("--seed", type=_int_at_least(0, 2**32 - 1), default=0, metavar="S", help="seed of the random points (default 0)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="autograd precision")
    p.add_argument("--device", default="cpu", help="torch device for autograd, e.g. cuda (default cpu)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="count numerically unstable components (an engine losing most of its digits) as mismatches",
    )
    p.add_argument("--order", type=int, choices=(1, 2), default=1, help="1: the gradient; 2: the Hessian (default 1)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON document (schema: docs/json.md)")
    out.add_argument("--quiet", "-q", action="store_true", help="print only the verdict")
    p.add_argument("--html", metavar="FILE.html", help="also write the report as a page (opens from disk; with --json too)")
    p.set_defaults(run=_run_verify)

    q = sub.add_parser("list", help="the model catalog with formulas and parameters")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(run=_run_list)


def _run_verify(args) -> int:
    from ..api import verify

    model = model_from_args(args)
    if args.html:
        from ..html.base import check_path

        check_path(args.html)
    params = params_from_args(args)
    point = point_from_args(model, args)
    points = [point] if point is not None else None
    if points is None and not model.dataset:
        points = []
        if not params and args.no_random:
            raise UsageError("Expected --x/--y (or --input) for a model without a dataset when --no-random is given.")
    if points == [] and params:
        raise UsageError("Expected --x/--y (or --input) with --param for a model without a dataset.")
    progress = None
    bar = None
    if not args.json and not args.quiet and sys.stderr.isatty() and not args.no_random and args.points >= 2000:
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task("random points", total=args.points)
        bar.start()

        def progress(done, total):
            bar.update(task, completed=done)

    try:
        report = verify(
            model,
            points=points,
            params=params or None,
            random=0 if args.no_random else args.points,
            seed=args.seed,
            dtype=args.dtype,
            device=args.device,
            progress=progress,
            strict=args.strict,
            order=args.order,
        )
    finally:
        if bar is not None:
            bar.stop()
    if args.json:
        print(report.to_json())
    else:
        from ..render import print_report

        print_report(report, quiet=args.quiet)
    if args.html:
        from ..html import verify_page, write_page

        write_page(verify_page(report), args.html)
        print(f"wrote {args.html}", file=sys.stderr if args.json else sys.stdout)
    return 0 if report.ok else 1


def _run_list(args) -> int:
    from ..catalog import MODEL_OPTIONS, get_model, list_models

    models = [get_model(name) for name in list_models()]
    if args.json:
        import json

        print(json.dumps([m.summary() for m in models], indent=2))
        return 0
    for m in models:
        opts = MODEL_OPTIONS[m.name]
        params = ", ".join(f"{v.name}{list(v.shape) if v.shape else ''}" for v in m.params)
        print(f"{m.name:10} {m.formula}")
        print(f"{'':10} loss: {m.loss_name}; parameters: {params} ({m.n_params}); {m.description}")
        if opts:
            print(f"{'':10} options: " + "; ".join(f"{k}={spec[1]!r} ({spec[2]})" for k, spec in opts.items()))
    return 0
