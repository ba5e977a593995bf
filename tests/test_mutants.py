"""The mutant catalog (tests/mutants.py): every bug caught, only the candidate blamed; every twin passes.

Each mutant is run as a user would run it: ``verify`` with the model's
default points plus random ones (``Mutant.run``). Mutants marked ``region``
are wrong only in part of the input space (a pre-activation above 20, x < 0):
the default random points must reach that part.
"""

from functools import cache

import pytest

from gradcheck_lab import get_model, verify
from mutants import GRADS, KINDS, MUTANTS, by_name, scaled_grad, scaled_torch_loss

slow = pytest.mark.slow  # deselected by default (addopts: -m "not slow"); `make test-slow` runs them


def _ids(ms):
    return [m.name for m in ms]


@cache
def _buggy_report(name):
    return by_name(name).run("buggy")


def test_catalog_covers_the_three_kinds():
    counts = {k: sum(m.kind == k for m in MUTANTS) for k in KINDS}
    assert len(MUTANTS) >= 30 and all(n >= 8 for n in counts.values()), counts


@pytest.mark.parametrize("mutant", MUTANTS, ids=_ids(MUTANTS))
def test_mutant_is_caught_with_only_the_candidate_blamed(mutant):
    report = _buggy_report(mutant.name)
    assert report.ok is False, f"{mutant.name} ({mutant.description}) passed: {report.message}"
    assert report.at_fault == ["candidate"], report.message
    assert report.mismatches["candidate"] > 0


@pytest.mark.parametrize("mutant", MUTANTS, ids=_ids(MUTANTS))
def test_correct_twin_passes(mutant):
    report = mutant.run("correct")
    assert report.ok, f"correct twin of {mutant.name} failed: {report.message}"


REGION = [m for m in MUTANTS if m.region]


@pytest.mark.parametrize("mutant", REGION, ids=_ids(REGION))
def test_region_mutant_is_caught_inside_its_region(mutant):
    """Where its region is hit, a region-only bug is caught like any other (the default run must reach it)."""
    assert mutant.region_points
    report = mutant.run("buggy", points=list(mutant.region_points), random=0)
    assert report.at_fault == ["candidate"], report.message
    assert mutant.run("correct", points=list(mutant.region_points), random=0).ok


@slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("mutant", MUTANTS, ids=_ids(MUTANTS))
def test_mutant_and_twin_on_more_points(mutant, seed):
    """Longer runs: more random points and other seeds."""
    n = 100 if mutant.name == "fn_one_of_193" else 1000
    buggy = mutant.run("buggy", random=n, seed=seed)
    assert buggy.at_fault == ["candidate"], buggy.message
    assert mutant.run("correct", random=n, seed=seed).ok


def test_one_wrong_component_of_193_is_the_one_reported():
    report = _buggy_report("fn_one_of_193")
    blamed = {c.param for p in report.failures for c in p.checks if "candidate" in c.at_fault}
    assert report.params == by_name("fn_one_of_193").get_model().param_labels and len(report.params) == 193
    assert blamed == {"W1[17]"}, blamed


@pytest.mark.parametrize("name", list(GRADS))
def test_detection_limits_at_generic_points(name):
    """float64 catches a relative error of 1e-10 at generic points, float32 one of 1e-3 (issue 7)."""
    model = get_model(name)
    f64 = verify(model, points=[], random=200, seed=1, candidate=scaled_grad(name, 1e-10))
    assert f64.at_fault == ["candidate"], f64.message
    f32 = verify(model, points=[], random=200, seed=1, dtype="float32", candidate=scaled_torch_loss(name, 1e-3))
    assert f32.at_fault == ["candidate"], f32.message
