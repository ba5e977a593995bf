"""Trace fidelity: the traced graph is the truth only where it was shown to be the user's function.

Note [Trace fidelity]
~~~~~~~~~~~~~~~~~~~~~
``make_fx`` records the aten ops a forward dispatches. Whatever the forward
computes *outside* torch enters the graph as a constant: a NumPy or SciPy
round trip (``torch.from_numpy(np.tanh(x.numpy()))``), a C kernel, a value
read with ``.item()`` or ``.tolist()`` and used as a Python number. At the
given inputs such a graph gives the same outputs as the function, so a
check of the given inputs alone proves nothing; its derivative, though, is
that of a constant (0), and a correct backward was blamed against it.

So the graph counts as the function only after it was *re-evaluated* at
the given inputs and at random points around them (every random point the
check uses; with fewer than one, ``points=0`` or ``fast_mode``, a probe of
:data:`PROBES` drawn, the second only where the function refuses the first):
the graph module and the user's function each run at the same inputs, in
the inputs' dtype, and every floating output must agree to the rounding of
both, ``|f - g| <= ROUNDING * eps * (|f| + |g| + max |f| of that output)``
with ``ROUNDING = 256``: a graph replays the same aten kernels (bit for bit
in practice; torch's decompositions of ``batch_norm`` or ``group_norm``
reorder a reduction, which moved float32 outputs by a few ``eps`` of the
tensor's largest element), while a constant that should have moved with a
10% perturbation is off by about 10%.

One accepted random point suffices: a value computed outside torch enters
the graph as a constant that each component's 10% perturbation moves, and
every component moves at once, so a second random point could only catch
what the first missed by an exact coincidence. It cost a tenth of a small
``fast_mode`` call (a call of the function and a run of the graph).

Where they disagree the call loses its symbolic and referee legs and is
judged by finite differences of the real function (torch_check's fallback).
Its one warning names the point, the output element and both values, and the
places where values left torch: :func:`leaks` re-runs the function under a
``TorchFunctionMode`` that records ``Tensor.numpy``, ``.item``, ``.tolist``,
``__bool__`` (a data-dependent branch), ``__float__``... with the user's
source line. A point where the user's function *raises* (its own domain
check) is not a point of the function: it is refused, skipped and counted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np

__all__ = ["PROBES", "ROUNDING", "Fidelity", "check", "leaks"]

#: Random points drawn for the re-evaluation when the check uses none (``points=0``): the first is evaluated,
#: the second only where the function refuses the first (Note [Trace fidelity]).
PROBES = 2
#: Multiple of the dtype's roundoff by which graph and function may differ (Note [Trace fidelity]).
ROUNDING = 256.0


@dataclass
class Fidelity:
    """What the re-evaluation found: refused random rows, and why the graph is not the function (or None)."""

    refused: list[int] = field(default_factory=list)
    unfaithful: str | None = None
    #: The random points re-evaluated, ``(theta, cotangents)``, for the checks that follow (the same points).
    points: Any = None


def _flat_floats(out) -> list:
    from .torch_graph import _flat_outputs

    return [o for o in _flat_outputs(out) if o.is_floating_point()]


def _differ(real: list, traced: list, dtype) -> tuple[int, int, float, float] | None:
    """The first output element where ``traced`` is not ``real`` to rounding: (output, flat index, real, traced)."""
    import torch

    if len(real) != len(traced):
        return (len(traced), -1, float(len(real)), float(len(traced)))
    eps = float(torch.finfo(dtype).eps)
    for j, (r, t) in enumerate(zip(real, traced)):
        if tuple(r.shape) != tuple(t.shape):
            return (j, -1, float("nan"), float("nan"))
        if r.dtype == t.dtype and r.device == t.device and torch.equal(r, t):  # a replay, bit for bit: the usual case
            continue
        a = r.detach().double().reshape(-1).cpu().numpy()
        b = t.detach().double().reshape(-1).cpu().numpy()
        with np.errstate(all="ignore"):
            finite = np.isfinite(a)
            scale = float(np.max(np.abs(a[finite]))) if finite.any() else 0.0
            same = (a == b) | (np.isnan(a) & np.isnan(b))
            close = np.abs(a - b) <= ROUNDING * eps * (np.abs(a) + np.abs(b) + scale)
        bad = np.flatnonzero(~(same | close))
        if bad.size:
            k = int(bad[0])
            return (j, k, float(a[k]), float(b[k]))
    return None


def check(call: Callable, graph: Callable, rows: Sequence[Sequence[Any]], given: int, dtype,
          describe: Callable[[int, int], str], names: tuple[str, str] = ("the traced graph", "the function"),
          known: list | None = None, reads: Sequence[str] = (), used: int | None = None) -> Fidelity:
    """Re-evaluate ``graph`` against ``call`` at every row of leaf tensors (the first ``given`` are the given inputs).

    ``describe(output, k)`` names an output element; ``names`` the two sides in messages. Rows past ``given``
    where ``call`` raises are refused (their indices, counted from the first
    random row), and so are rows where its outputs have other sizes than at the given inputs (a matcher
    that returns as many matches as it finds); a raise at the given inputs propagates (the user's own error).
    ``known``: ``call``'s float outputs at the first row, when the caller has them (one call fewer).
    ``reads``: the ops through which the recorded graph read values of the inputs (Note [Reads of the inputs]
    in recorder.py): such a graph is unfaithful unless some random row showed it is the function.
    ``used``: how many random rows the checks that follow read; the rows past them are probes only
    (Note [Trace fidelity]), evaluated until one is accepted. None: every row.
    """
    import torch

    from .torch_graph import run_graph

    found = Fidelity()
    shapes = None
    accepted = 0
    for i in range(len(rows)):
        if used is not None and i - given >= used and accepted:
            break  # a probe past the rows the checks read: one that showed the graph is enough
        tensors = rows[i]  # made when read (the caller's rows may be lazy)
        with torch.no_grad():
            try:
                real = known if i == 0 and known is not None else _flat_floats(call(*[t.clone() for t in tensors]))
            except Exception:  # noqa: BLE001 - the user's own check at a point we chose
                if i < given:
                    raise
                found.refused.append(i - given)
                continue
            if i < given:
                shapes = [tuple(r.shape) for r in real]
            elif shapes is not None and [tuple(r.shape) for r in real] != shapes:
                # outputs of another size there (a matcher's matches): not the same Jacobian, not a point to check
                found.refused.append(i - given)
                continue
            try:
                args = [t.clone() for t in tensors]
                traced = _flat_floats(run_graph(graph, *args) if isinstance(graph, torch.fx.GraphModule)
                                      else graph(*args))
            except Exception as exc:  # noqa: BLE001 - a graph that cannot run where the function runs
                found.unfaithful = (f"{names[0]} fails where {names[1]} runs "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})")
                return found
        accepted += i >= given
        diff = _differ(real, traced, dtype)
        if diff is not None:
            j, k, a, b = diff
            where = "at the given inputs" if i < given else f"at random point {i - given} around the inputs"
            what = describe(j, k) if k >= 0 else f"output {j}"
            sa, sb = _digits(a, b)
            found.unfaithful = f"{names[0]} is not {names[1]} {where}: {what} is {sa}, {names[0]} gives {sb}"
            return found
    if reads and not accepted:
        found.unfaithful = (f"{names[0]} holds the branch of the given inputs ({names[1]} reads their values into "
                            f"Python: {', '.join(sorted(set(reads)))}), and no random point around them could show "
                            f"it is {names[1]} there (each was refused)")
    return found


#: Tensor methods through which a value leaves torch's dispatcher (and so the traced graph).
_LEAVING = {
    "numpy": "a NumPy round trip (Tensor.numpy)",
    "__array__": "a NumPy round trip (np.asarray of a tensor)",
    "item": "a Python number (Tensor.item)",
    "tolist": "Python numbers (Tensor.tolist)",
    "__float__": "a Python number (float of a tensor)",
    "__int__": "a Python number (int of a tensor)",
    "__index__": "a Python index (a tensor used as an index)",
    "__bool__": "a data-dependent branch (bool of a tensor)",
    "data_ptr": "raw memory (Tensor.data_ptr: a C/CUDA kernel)",
}


def _user_frame() -> str:
    """``file:line`` of the innermost frame outside torch, NumPy and gradcheck_lab."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not any(part in path for part in ("/torch/", "/numpy/", "/gradcheck_lab/", "<frozen")):
            return f"{path.rsplit('/', 1)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def leaks(call: Callable, tensors: Sequence[Any], limit: int = 3) -> list[str]:
    """Where values leave torch in ``call(*tensors)``: ``'a NumPy round trip (Tensor.numpy) at model.py:12'``."""
    import torch
    from torch.overrides import TorchFunctionMode

    seen: dict[str, None] = {}

    class _Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            what = _LEAVING.get(getattr(func, "__name__", ""))
            if what is not None and len(seen) < limit:
                seen.setdefault(f"{what} at {_user_frame()}", None)
            return func(*args, **(kwargs or {}))

    try:
        with torch.no_grad(), _Record():
            call(*[t.clone() for t in tensors])
    except Exception:  # noqa: BLE001 - only the record matters here
        pass
    return list(seen)


def probe_count(points: int) -> int:
    """Random rows to re-evaluate at: every random point of the check, at least :data:`PROBES`."""
    return max(int(points), PROBES)


def _digits(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with enough digits to differ (10, else up to 17: 1.000000001 twice said nothing)."""
    for n in (10, 13, 15, 17):
        sa, sb = f"{a:.{n}g}", f"{b:.{n}g}"
        if sa != sb:
            break
    return sa, sb
