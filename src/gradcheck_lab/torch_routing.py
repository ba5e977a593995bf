"""Route an existing suite's ``torch.autograd.gradcheck`` calls through gradcheck_lab, unchanged.

``with gradcheck_lab.routing(): ...`` (or ``pytest --gradcheck-lab``) makes
every call of torch's ``gradcheck`` and ``gradgradcheck`` run ours instead,
however the caller reached it:

* ``torch.autograd.gradcheck(...)`` and ``torch.autograd.gradgradcheck(...)``;
* ``torch.autograd.gradcheck.gradcheck(...)`` (the module's own function,
  which helpers such as ``torch.testing``'s wrappers call);
* ``from torch.autograd import gradcheck`` done *before* routing started:
  every loaded module whose globals hold torch's function gets ours in its
  place, and gets torch's back when routing ends.

Note [Routed calls]
~~~~~~~~~~~~~~~~~~~
The caller's keywords keep torch's meaning (``atol``/``rtol`` given
explicitly replace our derived tolerances; ``eps`` adds torch's estimate to a
failure message; ``fast_mode``, ``nondet_tol``, the ``check_*`` flags as in
torch). A failure raises :class:`RoutedGradcheckError`, which is both our
:class:`~gradcheck_lab.GradientMismatch` and torch's ``GradcheckError`` (a
``RuntimeError``), so a suite's ``pytest.raises(RuntimeError)`` around an
expected failure still holds. Where ours cannot check a call at all (complex
or half-precision inputs, a ``UsageError``), torch's own function runs it
and the call is counted as *deferred*. Calls torch's functions make of each
other (``gradgradcheck`` calls ``gradcheck``) and calls from inside
gradcheck_lab go to torch's originals.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch.autograd.gradcheck import GradcheckError as _TorchGradcheckError

from .errors import GradientMismatch, UsageError

__all__ = ["routing", "RoutingStats", "RoutedGradcheckError"]


@dataclass
class RoutingStats:
    """What routed calls did: counts, the failures' first lines, and the seconds spent in them."""

    routed: int = 0
    failed: int = 0
    deferred: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    deferrals: list[str] = field(default_factory=list)
    #: The test running now (the pytest plugin sets it): failures are named by it.
    current: str | None = None

    def summary(self) -> str:
        """``gradcheck_lab: 4 gradchecks routed, 1 failed (Square.apply: the backward ... is wrong), 2.1 s``."""
        parts = [f"gradcheck_lab: {self.routed} gradcheck{'s' if self.routed != 1 else ''} routed"]
        if self.failed:
            parts.append(f"{self.failed} failed ({'; '.join(self.failures[:3])}"
                         f"{'; ...' if len(self.failures) > 3 else ''})")
        if self.deferred:
            parts.append(f"{self.deferred} deferred to torch ({'; '.join(dict.fromkeys(self.deferrals))})")
        return ", ".join(parts) + f", {self.seconds:.1f} s"


_state = threading.local()


def _inside() -> bool:
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def _ours() -> Iterator[None]:
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


class RoutedGradcheckError(GradientMismatch, _TorchGradcheckError):
    """A routed call's failure: gradcheck_lab's GradientMismatch and torch's GradcheckError (a RuntimeError)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).split("\n")[0].replace("gradcheck_lab.gradcheck: ", "").replace("gradcheck_lab.gradgradcheck: ", "")
    return text[:120]


def _wrap(ours, original, stats: RoutingStats, what: str, active: dict):
    def routed(func, inputs, *args, **kwargs):
        if _inside() or not active["on"]:  # torch calling itself, or a module imported inside a finished block
            return original(func, inputs, *args, **kwargs)
        start = time.perf_counter()
        try:
            with _ours():
                try:
                    # torch's meaning: a module's inputs are checked, not its parameters (a CNN's 1.3M weights)
                    result = ours(func, inputs, *args, **{"parameters": False, **kwargs})
                    if result is False:  # raise_exception=False
                        stats.failed += 1
                        name = getattr(func, "__qualname__", None) or type(func).__name__
                        stats.failures.append(f"{stats.current + ': ' if stats.current else ''}{name} returned False")
                    return result
                except UsageError as exc:
                    if "same outputs at the same inputs" in str(exc):
                        raise  # a random forward: torch would compare noise
                    stats.deferred += 1
                    stats.deferrals.append(_first_line(exc).split(";")[0][:80])
                    stats.routed -= 1
                    return original(func, inputs, *args, **kwargs)
                except GradientMismatch as exc:
                    stats.failed += 1
                    stats.failures.append(f"{stats.current}: {_first_line(exc)}" if stats.current else _first_line(exc))
                    raise RoutedGradcheckError(str(exc), exc.report) from None
                except Exception as exc:  # the function raised under the check (as it would under torch's): failed
                    stats.failed += 1
                    what = f"{type(exc).__name__}: {_first_line(exc)}"
                    stats.failures.append(f"{stats.current}: raised {what}" if stats.current else f"raised {what}")
                    raise
        finally:
            stats.routed += 1
            stats.seconds += time.perf_counter() - start

    routed.__name__ = what
    routed.__qualname__ = what
    routed.__doc__ = f"torch.autograd.{what}, routed through gradcheck_lab.{what} (Note [Routed calls])."
    routed.__wrapped_torch__ = original  # type: ignore[attr-defined]
    return routed


@contextlib.contextmanager
def routing(stats: RoutingStats | None = None) -> Iterator[RoutingStats]:
    """Route torch's ``gradcheck``/``gradgradcheck`` through gradcheck_lab inside the block (Note [Routed calls]).

    >>> import torch
    >>> import gradcheck_lab
    >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    >>> with gradcheck_lab.routing() as stats:
    ...     torch.autograd.gradcheck(torch.sin, (x,))
    True
    >>> stats.routed, stats.failed
    (1, 0)
    """
    import importlib

    import torch

    from .torch_check import gradcheck, gradgradcheck

    stats = stats if stats is not None else RoutingStats()
    module = importlib.import_module("torch.autograd.gradcheck")
    originals = {"gradcheck": module.gradcheck, "gradgradcheck": module.gradgradcheck}
    if hasattr(originals["gradcheck"], "__wrapped_torch__"):  # already routed (nested): nothing to do
        yield stats
        return
    active = {"on": True}
    replacements = {
        "gradcheck": _wrap(gradcheck, originals["gradcheck"], stats, "gradcheck", active),
        "gradgradcheck": _wrap(gradgradcheck, originals["gradgradcheck"], stats, "gradgradcheck", active),
    }
    patched: list[tuple[Any, str, Any]] = []

    def patch(owner, name, value):
        patched.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    for name, new in replacements.items():
        patch(module, name, new)
        patch(torch.autograd, name, new)
    patched.extend(_rebind_imported(originals, replacements))
    try:
        yield stats
    finally:
        active["on"] = False
        for owner, name, old in reversed(patched):
            if isinstance(owner, dict):
                owner[name] = old
            else:
                setattr(owner, name, old)


def _rebind_imported(originals: dict, replacements: dict) -> list[tuple[Any, str, Any]]:
    """``from torch.autograd import gradcheck`` done earlier: point those module globals at ours."""
    done = []
    by_id = {id(fn): name for name, fn in originals.items()}
    for mod in list(sys.modules.values()):
        if mod is None or getattr(mod, "__name__", "").startswith(("torch.", "gradcheck_lab")):
            continue
        namespace = getattr(mod, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            name = by_id.get(id(value))
            if name is not None:
                done.append((namespace, key, value))
                namespace[key] = replacements[name]
    return done
