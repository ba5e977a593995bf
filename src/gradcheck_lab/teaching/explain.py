"""``explain``: the computation graph of one loss, node by node, then checked.

The loss is traced (:mod:`.trace`) at one point: every node's operation,
inputs, forward value and local derivatives; the reverse pass gives every
node's upstream gradient ``dloss/dnode`` and what it passes to each input
(upstream times local derivative: the chain rule, one step at a time).
The resulting ``dloss/dparam`` are then checked against SymPy's closed form
(the symbolic engine, float64) and the exact referee, within the float64
tolerance of :mod:`gradcheck_lab.tolerance` (Note [Tolerance model]).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..tolerance import tolerance_at
from .trace import Trace, params_below_kinks, point_row, trace_row

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["Explanation", "explain"]


@dataclass
class Explanation:
    """A traced loss and the check of its gradients.

    ``checks`` holds one dict per parameter component: ``param``, ``trace``,
    ``symbolic``, ``referee``, ``tolerance``, ``ok`` and ``kink``. ``agree``
    is true when every check passed. A parameter upstream of a kink (``relu``
    or ``abs`` at exactly 0) has no derivative at the point: the trace uses
    torch's convention (0) and SymPy's closed form one branch, so a
    difference there is reported with ``kink`` true and does not fail.
    """

    model: str
    formula: str
    trace: Trace
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return all(c["ok"] for c in self.checks)

    @property
    def kinks(self) -> list[str]:
        """Parameters whose derivative is undefined at the point and whose sides differ."""
        return [c["param"] for c in self.checks if c["kink"]]

    @property
    def gradients(self) -> dict[str, float]:
        return dict(self.trace.gradients)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.trace.rows():
            r = dict(r)
            r.pop("local_list")
            rows.append(r)
        return {
            "model": self.model,
            "formula": self.formula,
            "params": self.trace.params,
            "point": self.trace.data,
            "loss": self.trace.loss,
            "nodes": rows,
            "gradients": self.gradients,
            "checks": self.checks,
            "agree": self.agree,
            "kinks": self.kinks,
        }


def explain(model: Model, point: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None) -> Explanation:
    """Trace ``model``'s loss at ``point`` and ``params`` and check the gradients.

    ``point`` maps inputs and target to values (default: the model's first
    data point); ``params`` overrides initial parameter values.

    >>> from gradcheck_lab import get_model
    >>> e = explain(get_model("quadratic"))
    >>> e.gradients, e.agree
    ({'w1': 2.0, 'w2': 2.0, 'b': 2.0}, True)
    """
    from ..engines import engine, referee
    from ..model import Batch

    theta, data = point_row(model, point, params)
    tr = trace_row(model, theta, data)
    batch = Batch(theta[None, :], data[None, :])
    sym = engine("symbolic")(model, batch).values[0]
    ref = referee.gradients(model, batch)[0]
    tol = tolerance_at(model, batch, sym[None, :], "float64")[0]
    at_kink = params_below_kinks(tr)
    checks = []
    for i, label in enumerate(model.param_labels):
        got = tr.gradients[label]
        ok = bool(abs(got - sym[i]) <= tol[i] and (np.isnan(ref[i]) or abs(got - ref[i]) <= tol[i]))
        kink = not ok and label in at_kink
        checks.append(
            {
                "param": label,
                "trace": got,
                "symbolic": float(sym[i]),
                "referee": float(ref[i]),
                "tolerance": float(tol[i]),
                "ok": ok or kink,
                "kink": kink,
            }
        )
    return Explanation(model=model.name, formula=model.formula, trace=tr, checks=checks)
