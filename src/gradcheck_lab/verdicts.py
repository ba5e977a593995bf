"""The verdict vocabulary: the codes a comparison gives and the words a report uses for them.

How each verdict is reached is Note [Verdict] in compare.py. In short, per
engine and parameter component:

* ``AGREE`` ("agree") -- within its screening tolerance of the other engines,
  or of the referee's certified exact value, or within what its own
  rounding explains with fewer than half its digits lost;
* ``MISMATCH`` ("mismatch") -- beyond what its own rounding explains, with
  the exact value as proof (or a candidate's NaN or inf where the exact
  gradient is finite): the engine is at fault;
* ``UNSTABLE`` ("unstable") -- explained by its own rounding, but more than
  half its dtype's digits lost: no bug, a numerically hard point (a
  mismatch with ``strict=True``);
* ``NOT_JUDGED`` ("not_judged") -- no verdict possible there; ``REASONS``
  says why, per reason;
* ``KINK`` ("kink") -- the derivative does not exist (``relu``/``abs`` at 0):
  every subgradient is accepted.

A point or a component with several engines' codes takes the first of
``PRIORITY`` present. This module imports nothing, so that the comparison
(compare.py) and the report (report.py) share it without importing each other.
"""

from __future__ import annotations

__all__ = ["AGREE", "MISMATCH", "UNSTABLE", "NOT_JUDGED", "KINK", "CLASSES", "PRIORITY", "REASONS",
           "not_judged_note"]

#: Per-engine and per-component verdict codes (Note [Verdict]).
AGREE, MISMATCH, UNSTABLE, NOT_JUDGED, KINK = 0, 1, 2, 3, 4
CLASSES = {AGREE: "agree", MISMATCH: "mismatch", UNSTABLE: "unstable", NOT_JUDGED: "not_judged", KINK: "kink"}
#: The class a point or a component with several engines' classes takes: the first present.
PRIORITY = (MISMATCH, UNSTABLE, KINK, NOT_JUDGED, AGREE)

#: Why a component was not judged, for the notes.
REASONS = {
    "undefined": "the loss is undefined (not real) there",
    "beyond": "the exact gradient is infinite or beyond float64's range",
    "unresolved": "the referee could not certify the exact value within its budget",
    "budget": "the referee's budget for this run was spent (disagreement not proven)",
    "range": "the point lies outside float32's range (an input overflows to inf there)",
    "range32": "the exact gradient (or the model's own float32 computation of it) lies beyond float32's range",
    "underflow32": "the exact gradient lies below float32's normal range and the float32 value within it of 0",
    "overflow": "the candidate's own float64 arithmetic (or the model's) overflows on the way to a representable gradient",
    "model_lost": "autograd of the model itself, in the candidate's precision, gives no finite value there",
    "kink_rounding": "rounding the inputs to float32 moves them onto or across a relu/abs kink",
}


def not_judged_note(reason: str, count: int) -> str:
    """The note that ``count`` components were not judged for ``reason`` (a key of ``REASONS``).

    >>> not_judged_note("budget", 3)
    "3 component(s) not judged for some engine: the referee's budget for this run was spent (disagreement not proven)."
    """
    return f"{count} component(s) not judged for some engine: {REASONS[reason]}."
