"""Gradient engines: one module each, behind one small interface.

Every engine module exposes ``gradients(model, batch, *, dtype, device)``
returning :class:`Gradients` for a :class:`~gradcheck_lab.model.Batch` of
points: the gradient of the loss with respect to every flat parameter
component, shape ``(N, P)``, as float64 whatever precision it computed in.
Engines are looked up by name from :data:`ENGINES` (data, not a class tree).
The referee is not in the table: it is only asked where engines disagree.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Gradients", "ENGINES", "engine", "ENGINE_NAMES", "ENGINE_LABELS"]


@dataclass
class Gradients:
    """One engine's gradients for a batch.

    ``error`` is the engine's own error estimate per component where it has
    one (finite differences), else ``None``. ``kink`` marks components where
    the loss has a kink at the point (finite differences detect them) and
    ``lower``/``upper`` bound the one-sided derivatives there. ``f32`` marks
    components computed in float32 where precision varies per point and
    component (a candidate returning NumPy float32 at some points only).
    """

    engine: str
    values: np.ndarray
    dtype: str = "float64"
    error: np.ndarray | None = None
    kink: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    f32: np.ndarray | None = None

    def take(self, rows: slice | np.ndarray) -> Gradients:
        """The gradients at some points (rows) only."""
        def part(a):
            return None if a is None else a[rows]

        return Gradients(self.engine, self.values[rows], self.dtype, part(self.error), part(self.kink),
                         part(self.lower), part(self.upper), part(self.f32))


#: name -> module implementing ``gradients``; imported on first use.
ENGINES: dict[str, str] = {
    "symbolic": "gradcheck_lab.engines.symbolic",
    "autograd": "gradcheck_lab.engines.autograd",
    "finite_differences": "gradcheck_lab.engines.finite_diff",
}
ENGINE_NAMES = tuple(ENGINES)

#: How reports and tables name each engine (and a user's candidate gradient).
#: Here rather than in report.py so that render.py needs no import of report.
ENGINE_LABELS: dict[str, str] = {
    "symbolic": "symbolic",
    "autograd": "autograd",
    "finite_differences": "finite differences",
    "candidate": "candidate",
}


def engine(name: str) -> Callable[..., Gradients]:
    """The ``gradients`` function of engine ``name``."""
    return importlib.import_module(ENGINES[name]).gradients
