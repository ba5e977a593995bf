"""The pytest plugin in a throwaway project (pytester)."""

import re
from pathlib import Path

# pytester's in-process runs restore sys.modules afterwards, and extension modules
# cannot be loaded twice in one process: import them once, outside the runs.
import numpy  # noqa: F401
import torch  # noqa: F401

LIBRARY_GUIDE = Path(__file__).resolve().parents[1] / "docs" / "library.md"

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


def _guide_blocks() -> dict[str, str]:
    """docs/library.md's fenced blocks: ``# content of test_x.py`` files and ``$ pytest`` transcripts."""
    text = LIBRARY_GUIDE.read_text(encoding="utf-8")
    files = dict(re.findall(r"```python\n# content of (test_\w+\.py)\n(.*?)```", text, re.S))
    runs = re.findall(r"```text\n\$ pytest (.*?)\n(.*?)```", text, re.S)
    return files, {args.split()[-1]: (args.split()[:-1], shown) for args, shown in runs}


def test_library_guide_plugin_examples(pytester):
    """The guide's test files run, with the guide's options, as the guide says."""
    files, runs = _guide_blocks()
    assert set(files) == {"test_backprop.py", "test_broken.py"} == set(runs)
    for name, source in files.items():
        pytester.makepyfile(**{name[:-3]: source})

    args, _ = runs["test_backprop.py"]
    result = pytester.runpytest(*args, "test_backprop.py", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)

    args, shown = runs["test_broken.py"]
    result = pytester.runpytest(*args, "test_broken.py", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    # The transcript in the guide is real output: its message and table header lines appear verbatim.
    for line in shown.splitlines():
        if line.startswith(("GradientMismatch:", "test_broken.py::", "┃param", "data point 0:", "model quadratic")):
            assert line in out, line
    assert "Traceback" not in out and "gradcheck_lab/api.py" not in out


def test_plugin_under_xdist(pytester):
    """``pytest -n 2``: the fixture and options work in xdist workers (issue 8)."""
    import pytest

    pytest.importorskip("xdist")
    files, _ = _guide_blocks()
    for name, source in files.items():
        pytester.makepyfile(**{name[:-3]: source})
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--gradcheck-points", "25",
                                           *files)
    result.assert_outcomes(passed=3, failed=1)
    assert "GradientMismatch" in result.stdout.str()
