"""Library errors in command-line terms: ``--loss none``, not ``loss=None``.

The library names its keyword arguments in its messages, always in the form
``keyword=value`` (``got loss='foo'``, ``pass loss=None``, ``got H=0``), and
in a few fixed phrases (``Expected loss in ...``, ``1 <= H <= 256``, ``for lr
but``, ``from params.``). The command line knows which flag sets each
keyword: the ``dest`` of each option of the sub-command that ran
(``--hidden`` sets ``H``). :func:`cli_terms` rewrites exactly those forms;
library messages keep library terms, and nothing else in a message changes.

>>> cli_terms("Expected 1 <= H <= 256 but got H=0.", {"H": "--hidden"})
'Expected 1 <= --hidden <= 256 but got --hidden 0.'
>>> cli_terms("... got the target 'y'; pass loss=None if the expression is the loss itself.", {"loss": "--loss"})
"... got the target 'y'; pass --loss none if the expression is the loss itself."
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping

__all__ = ["cli_terms", "flags_of"]

#: A value as the library's messages print it: a repr of a string, a list or
#: tuple, or a bare token (number, None, name) not ending in sentence punctuation.
_VALUE = r"""'[^']*'|"[^"]*"|\[[^\]]*\]|\([^)]*\)|[^\s,;:)\]]*[^\s,;:)\].]"""

#: Options never rewritten: ``verify(points=[...])`` are explicit points while
#: ``--points N`` counts random ones; ``x=2`` in a message is a value of the
#: model's input, not a keyword; and argparse's own.
_DIFFERENT = frozenset({"points", "x", "y", "input", "param", "help", "version"})


def _cli_value(text: str) -> str:
    """A library value as typed on the command line: ``None`` -> ``none``, ``'w'`` -> ``w``."""
    if text == "None":
        return "none"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text[:1] in "[(" and text[-1:] in "])":
        return ",".join(_cli_value(s.strip()) for s in text[1:-1].split(",") if s.strip())
    return text


def cli_terms(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with each library keyword in ``flags`` written as its flag."""
    for keyword, flag in flags.items():
        if keyword in _DIFFERENT:
            continue
        k = re.escape(keyword)

        def spelled(m: re.Match[str], flag: str = flag) -> str:
            return f"{flag} {_cli_value(m.group(1))}"

        message = re.sub(rf"(?<![\w.\-]){k}=({_VALUE})", spelled, message)
        message = re.sub(rf"(?<=<= ){k}(?= <=)", flag, message)
        message = re.sub(rf"\b(Expected|for|from) {k}(?= in\b| but\b|\.|$)", rf"\1 {flag}", message)
    return message


def flags_of(parser: argparse.ArgumentParser, command: str | None) -> dict[str, str]:
    """``dest -> --flag`` for every option of ``command``'s sub-parser (or of ``parser``)."""
    target = parser
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            target = action.choices[command]
    out: dict[str, str] = {}
    for action in target._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.dest not in out:
            out[action.dest] = max(longs, key=len)
    return out
