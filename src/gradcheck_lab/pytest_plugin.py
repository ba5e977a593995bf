"""pytest plugin (entry point ``pytest11``): a ``gradcheck`` fixture and options.

Installed with gradcheck_lab; nothing to configure. In any test::

    def test_my_backprop(gradcheck):
        gradcheck.assert_agree("quadratic", candidate=my_grad)

Options: ``--gradcheck-points N`` (random points per check, default 100) and
``--gradcheck-seed S`` (default 0). A failure is reported as the
per-parameter table with the engine or candidate at fault, without a
traceback into gradcheck_lab. The marker ``@pytest.mark.gradcheck(points=N,
seed=S)`` overrides the options for one test.
"""

from __future__ import annotations

from typing import Any

import pytest

from .errors import GradientMismatch

__all__ = ["GradcheckFixture"]


def pytest_addoption(parser):
    group = parser.getgroup("gradcheck", "gradient checks (gradcheck_lab)")
    group.addoption("--gradcheck-points", type=int, default=100, metavar="N", help="random points per gradient check (default 100)")
    group.addoption("--gradcheck-seed", type=int, default=0, metavar="S", help="seed of the random points (default 0)")


def pytest_configure(config):
    config.addinivalue_line("markers", "gradcheck(points=N, seed=S): settings of the gradcheck fixture for one test")


class GradcheckFixture:
    """What the ``gradcheck`` fixture gives a test: ``verify`` and ``assert_agree``
    with the session's number of points and seed."""

    def __init__(self, points: int, seed: int):
        self.points = points
        self.seed = seed

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.setdefault("random", self.points)
        kwargs.setdefault("seed", self.seed)
        return kwargs

    def verify(self, model, **kwargs):
        """:func:`gradcheck_lab.verify` with the session's points and seed."""
        from .api import verify

        return verify(model, **self._kwargs(kwargs))

    def assert_agree(self, model, **kwargs):
        """:func:`gradcheck_lab.assert_gradients_agree` with the session's points and seed."""
        from .api import assert_gradients_agree

        __tracebackhide__ = True
        return assert_gradients_agree(model, **self._kwargs(kwargs))


@pytest.fixture
def gradcheck(request) -> GradcheckFixture:
    """Gradient checks with ``--gradcheck-points`` / ``--gradcheck-seed`` (or the marker)."""
    points = request.config.getoption("--gradcheck-points")
    seed = request.config.getoption("--gradcheck-seed")
    marker = request.node.get_closest_marker("gradcheck")
    if marker is not None:
        points = marker.kwargs.get("points", points)
        seed = marker.kwargs.get("seed", seed)
    return GradcheckFixture(points, seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Show a GradientMismatch as its table, not as a traceback into the library."""
    outcome = yield
    report = outcome.get_result()
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, GradientMismatch) and report.failed:
        report.longrepr = f"GradientMismatch: {exc}"
