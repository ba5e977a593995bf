"""The command line: parse, call the library, render. Nothing else.

Each command lives in a module listed in :data:`COMMAND_MODULES`; the module
defines ``add_parser(subparsers)`` which registers its sub-parser and sets
``run=function(args) -> exit code`` as a default. Command modules import
torch and SymPy inside ``run`` only, so ``--help`` stays fast (a test checks).

Exit codes: 0 all engines agree, 1 a mismatch, 2 a usage error (one line on
stderr, ``Error: ...``, never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import GradcheckError, UsageError
from .terms import cli_terms, flags_of

__all__ = ["main", "build_parser"]

#: Modules that contribute sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "gradcheck_lab.cli.verify",
    "gradcheck_lab.cli.teaching",
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every error has one shape.

    Abbreviations are off: ``derive --param w1=2`` (a flag ``derive`` does not
    have) was silently taken as ``--params`` and ignored.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D401 - argparse API
        if "expected one argument" in message:
            message += "; a value that starts with '-' needs the form --option=VALUE (e.g. --x=-2,1)"
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="gradcheck-lab",
        description="Verify gradients three ways (SymPy, torch autograd, finite differences) "
        "and let an exact referee settle every disagreement.",
    )
    parser.add_argument("--version", action="version", version=f"gradcheck-lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            parser.print_help()
            return 2
        return int(args.run(args) or 0)
    except GradcheckError as exc:
        # One line: an expression error's caret display is for library users;
        # its first line already names the token and its column.
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if args is not None and isinstance(exc, UsageError):
            message = cli_terms(message, flags_of(parser, getattr(args, "command", None)))
        print(f"Error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
