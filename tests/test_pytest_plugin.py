"""The pytest plugin in a throwaway project (pytester)."""

TEST_FILE = '''
import pytest
from hypothesis import given, settings
from gradcheck_lab import get_model, verify
from gradcheck_lab.strategies import points

def good(params, point):
    r = params["w"] * point["x"] - point["y"]
    return {"w": 2 * r * point["x"]}

def bad(params, point):
    r = params["w"] * point["x"] - point["y"]
    return {"w": r * point["x"]}

def test_good(gradcheck):
    report = gradcheck.assert_agree("linear", candidate=good)
    assert report.random_points == gradcheck.points

def test_bad(gradcheck):
    gradcheck.assert_agree("linear", candidate=bad)

@pytest.mark.gradcheck(points=7)
def test_marker(gradcheck):
    assert gradcheck.points == 7

MODEL = get_model("affine")

@settings(max_examples=15, derandomize=True, deadline=None)
@given(points(MODEL))
def test_given(point):
    assert verify(MODEL, points=[point], random=0).ok
'''


def test_plugin_fixture_options_and_failure_table(pytester):
    pytester.makepyfile(test_user=TEST_FILE)
    result = pytester.runpytest("--gradcheck-points", "25", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    out = result.stdout.str()
    assert "GradientMismatch" in out
    assert "candidate differs from the exact value" in out and "at w" in out
    assert "exact (referee)" in out  # the per-parameter table


def test_plugin_help_lists_options(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--gradcheck-points*", "*--gradcheck-seed*"])
