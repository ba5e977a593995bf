"""pytest plugin (entry point ``pytest11``): a ``gradcheck`` fixture and options.

Installed with gradcheck_lab; nothing to configure. In any test::

    def test_my_backprop(gradcheck):
        gradcheck.assert_agree("quadratic", candidate=my_grad)

Options: ``--gradcheck-points N`` (random points per check, default 100) and
``--gradcheck-seed S`` (default 0). ``--gradcheck-lab`` routes every call of
``torch.autograd.gradcheck``/``gradgradcheck`` in the session through
gradcheck_lab (:func:`gradcheck_lab.routing`), and the terminal summary gets
one line: ``gradcheck_lab: 4 gradchecks routed, 1 failed (...), 2.1 s``. A failure is reported as the
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
    group.addoption("--gradcheck-lab", action="store_true", default=False,
                    help="route every torch.autograd.gradcheck/gradgradcheck call through gradcheck_lab")


_ROUTING_KEY = "gradcheck_lab_routing"


def pytest_configure(config):
    config.addinivalue_line("markers", "gradcheck(points=N, seed=S): settings of the gradcheck fixture for one test")
    if config.getoption("--gradcheck-lab", default=False):
        # (a tests folder's profile.py that shadows the standard library's: torch_graph._standard_cprofile)
        from .torch_routing import routing

        context = routing()
        stats = context.__enter__()
        setattr(config, _ROUTING_KEY, (context, stats))


def pytest_unconfigure(config):
    held = getattr(config, _ROUTING_KEY, None)
    if held is not None:
        held[0].__exit__(None, None, None)
        delattr(config, _ROUTING_KEY)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    held = getattr(item.config, _ROUTING_KEY, None)
    if held is not None:
        held[1].current = item.nodeid.rsplit("/", 1)[-1]


def pytest_sessionfinish(session, exitstatus):
    """An xdist worker hands its routed-call counts to the controller (``workeroutput``)."""
    held = getattr(session.config, _ROUTING_KEY, None)
    out = getattr(session.config, "workeroutput", None)
    if held is not None and out is not None:
        stats = held[1]
        out["gradcheck_lab"] = {k: getattr(stats, k) for k in ("routed", "failed", "deferred", "seconds", "failures",
                                                               "deferrals")}


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist must not validate it
def pytest_testnodedown(node, error):
    """The controller under xdist adds each worker's routed-call counts to its own."""
    held = getattr(node.config, _ROUTING_KEY, None)
    part = getattr(node, "workeroutput", {}).get("gradcheck_lab")
    if held is not None and part:
        stats = held[1]
        for k in ("routed", "failed", "deferred", "seconds"):
            setattr(stats, k, getattr(stats, k) + part[k])
        stats.failures.extend(part["failures"])
        stats.deferrals.extend(part["deferrals"])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    held = getattr(config, _ROUTING_KEY, None)
    if held is not None:
        terminalreporter.write_line(held[1].summary())


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
    if isinstance(exc, GradientMismatch) and report.failed:  # a routed call's failure too
        report.longrepr = f"GradientMismatch: {exc}"
