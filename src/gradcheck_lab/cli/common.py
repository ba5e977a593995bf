"""Arguments every model-taking command shares: the model and one point.

Kept free of torch and SymPy imports (``--help`` must stay fast).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InvalidValueError, UsageError

__all__ = [
    "add_model_arguments",
    "add_point_arguments",
    "model_from_args",
    "params_from_args",
    "point_from_args",
    "parse_number_list",
]


def add_model_arguments(parser: argparse.ArgumentParser, *, allow_expr: bool = True) -> None:
    """MODEL (a catalog name) or --expr, plus the catalog models' options."""
    parser.add_argument("model", nargs="?", metavar="MODEL", help="catalog model (see `gradcheck-lab list`)")
    group = parser.add_argument_group("model options")
    group.add_argument("--hidden", "-H", dest="H", type=int, help="mlp: hidden width (default 8)")
    group.add_argument("--activation", help="mlp: tanh, sigmoid, softplus, relu or sin (default tanh)")
    group.add_argument("--dim", "-d", dest="d", type=int, help="softmax: input dimension (default 2)")
    group.add_argument("--classes", "-K", dest="K", type=int, help="softmax: number of classes (default 3)")
    if allow_expr:
        ex = parser.add_argument_group("user model (instead of MODEL)")
        ex.add_argument("--expr", help='prediction (or loss) as an expression, e.g. "w1*x**2 + w2*x + b"')
        ex.add_argument("--params", help="comma-separated parameter names, e.g. w1,w2,b (with --expr)")
        ex.add_argument("--inputs", default="x", help="comma-separated input names (default x)")
        ex.add_argument("--target", default="y", help="target name (default y)")
        ex.add_argument(
            "--loss",
            default="squared",
            help="squared, absolute, huber (delta 1), bce, or none when --expr is the loss itself (default squared)",
        )


def add_point_arguments(parser: argparse.ArgumentParser) -> None:
    """--x/--y (or --input NAME=VALUE) and --param NAME=VALUE."""
    parser.add_argument("--x", help="input value (vector: comma-separated)")
    parser.add_argument("--y", help="target value (a class label for softmax)")
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value of a named input or target of a user model (repeatable)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="parameter value (repeatable); NAME may be a component such as W1[3]; VALUE may be a comma list",
    )


def parse_number_list(text: str, what: str) -> Any:
    """``"2"`` -> 2.0, ``"1,2"`` -> [1.0, 2.0]; rejects NaN, infinities and junk."""
    import math

    parts = [s.strip() for s in str(text).split(",")]
    out = []
    for s in parts:
        try:
            x = float(s)
        except ValueError:
            raise InvalidValueError(f"Expected a number for {what} but got {s!r}.") from None
        if not math.isfinite(x):
            raise InvalidValueError(
                f"Expected a finite number for {what} but got {s!r}; gradients are checked at finite points only."
            )
        out.append(x)
    return out[0] if len(out) == 1 else out


def _pairs(items: list[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            raise InvalidValueError(f"Expected {flag} NAME=VALUE (e.g. {flag} w1=0.5) but got {flag} {item!r}.")
        out[name] = parse_number_list(value, f"{flag} {name}")
    return out


def params_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return _pairs(getattr(args, "param", []) or [], "--param")


def model_from_args(args: argparse.Namespace):
    """The model named by MODEL or described by --expr."""
    from ..catalog import MODEL_OPTIONS, get_model

    expr = getattr(args, "expr", None)
    options = {k: getattr(args, k, None) for k in ("H", "activation", "d", "K")}
    if expr is not None:
        if args.model:
            raise UsageError(f"Expected either MODEL or --expr but got both ({args.model!r} and --expr).")
        if not args.params:
            raise UsageError('Expected --params with --expr (e.g. --expr "w*x + b" --params w,b).')
        from ..model import Model

        loss = None if args.loss in ("none", "") else args.loss
        return Model.from_expr(
            expr,
            params=[p.strip() for p in args.params.split(",")],
            inputs=[s.strip() for s in args.inputs.split(",") if s.strip()],
            target=args.target.strip(),
            loss=loss,
        )
    if not args.model:
        raise UsageError("Expected a MODEL (see `gradcheck-lab list`) or --expr.")
    allowed = MODEL_OPTIONS.get(args.model, {})
    given = {k: v for k, v in options.items() if v is not None}
    wrong = [k for k in given if k not in allowed]
    if wrong and args.model in MODEL_OPTIONS:
        flag = {"H": "--hidden", "activation": "--activation", "d": "--dim", "K": "--classes"}[wrong[0]]
        raise UsageError(f"Expected {flag} only with a model that takes it, but model {args.model!r} does not.")
    return get_model(args.model, **given)


def point_from_args(model, args: argparse.Namespace) -> dict[str, Any] | None:
    """The one point given by --x/--y/--input, or None when none was given."""
    given = _pairs(getattr(args, "input", []) or [], "--input")
    names = [v.name for v in model.data_vars]
    if getattr(args, "x", None) is not None:
        given[model.inputs[0].name if model.inputs else "x"] = parse_number_list(args.x, "--x")
    if getattr(args, "y", None) is not None:
        given[model.target.name] = parse_number_list(args.y, "--y")
    if not given:
        return None
    missing = [n for n in names if n not in given]
    if missing:
        raise InvalidValueError(
            f"Expected values for all of {', '.join(names)} but {', '.join(missing)} is missing "
            f"(use --x/--y or --input NAME=VALUE)."
        )
    return given
