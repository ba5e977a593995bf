"""The one error hierarchy of gradcheck_lab.

Every error a user can cause derives from :class:`GradcheckError` and carries
the exit code the CLI uses for it. Messages follow one shape: where, what was
expected, what was got, and what to do about it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Report

__all__ = [
    "GradcheckError",
    "UsageError",
    "UnknownModelError",
    "InvalidValueError",
    "ExpressionError",
    "GradientMismatch",
]


class GradcheckError(Exception):
    """Base class of every error gradcheck_lab raises on purpose.

    ``exit_code`` is what ``python -m gradcheck_lab`` exits with when the
    error reaches the command line.
    """

    exit_code = 2


class UsageError(GradcheckError, ValueError):
    """Raised when an argument has the wrong type, shape or range.

    Raised by the library as well as the CLI (exit code 2).
    """


class UnknownModelError(UsageError, LookupError):
    """Raised when a model name is not in the catalog; lists the closest names."""


class InvalidValueError(UsageError):
    """Raised when a value is malformed, NaN, infinite or out of range."""


class ExpressionError(UsageError):
    """Raised when a user expression is rejected by the whitelist parser.

    ``position`` is the 0-based column of the offending token (or ``None``).
    """

    def __init__(self, message: str, expression: str | None = None, position: int | None = None):
        self.expression = expression
        self.position = position
        if expression is not None and position is not None and len(expression) <= 200:
            pointer = " " * position + "^"
            message = f"{message}\n  {expression}\n  {pointer}"
        super().__init__(message)


class GradientMismatch(GradcheckError, AssertionError):
    """Raised by ``assert_gradients_agree`` when an engine or candidate is off.

    The message is the per-parameter table with the engine at fault; the
    :class:`~gradcheck_lab.Report` is kept in ``report``. Exit code 1.
    """

    exit_code = 1

    def __init__(self, message: str, report: Report | None = None):
        super().__init__(message)
        self.report = report

    def _repr_html_(self) -> str:
        """Jupyter's view of a caught failure: the message (culprit, component, values), then the report."""
        if self.report is not None:
            return self.report._repr_html_(headline=str(self))
        import html

        return ('<div class="gcl-report"><div id="caught" style="padding: 10px 14px; border-radius: 8px; '
                'background: #fde8e8; color: #7f1d1d; font-weight: 600"><pre style="white-space: pre-wrap; margin: 0">'
                f"{html.escape(str(self))}</pre></div></div>")
