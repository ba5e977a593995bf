"""The pytest plugin in a throwaway project (pytester)."""

import re
from pathlib import Path

# pytester's in-process runs restore sys.modules afterwards, and extension modules
# cannot be loaded twice in one process: import them once, outside the runs.
import numpy  # noqa: F401
import pytest
import torch  # noqa: F401
from torch._decomp import get_decompositions  # noqa: F401
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: F401

try:  # registers a TORCH_LIBRARY when tracing first needs it: a second import (after a run) fails
    import torch._inductor.test_operators  # noqa: F401
except ImportError:  # a torch without it: nothing to register twice
    pass

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


ROUTED_SUITE = '''
import importlib

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck


def make(err):
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * g * x * (1 + err)

    return Square.apply


def inputs():
    return (torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True),)


def test_module_level_import():
    assert gradcheck(make(0), inputs())


def test_attribute_with_torch_keywords():
    assert torch.autograd.gradcheck(make(0), inputs(), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_the_modules_own_function():
    assert importlib.import_module("torch.autograd.gradcheck").gradcheck(make(0), inputs())


def test_double_backward():
    assert gradgradcheck(lambda t: t.sin() * t, inputs())


def test_off_by_1e6_relative():
    assert torch.autograd.gradcheck(make(1e-6), inputs())


def test_an_expected_failure_still_raises_torchs_error():
    with pytest.raises(RuntimeError):
        gradcheck(make(0.5), inputs())


def test_half_precision_defers_to_torch():
    x = torch.randn(3, dtype=torch.float16, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: t * 2, (x,), eps=1e-2, atol=0.1, rtol=0.1)
'''


def test_gradcheck_lab_flag_routes_an_existing_suite(pytester):
    """Issue 19's done-when: the correct tests pass, 1e-6 fails with our message, the summary counts calls."""
    pytester.makepyfile(test_existing=ROUTED_SUITE)
    plain = pytester.runpytest("-p", "no:cacheprovider")
    plain.assert_outcomes(passed=7)  # torch's gradcheck misses the 1e-6 error
    assert "gradchecks routed" not in plain.stdout.str()

    routed = pytester.runpytest("-p", "no:cacheprovider", "--gradcheck-lab")
    routed.assert_outcomes(passed=6, failed=1)
    out = routed.stdout.str()
    assert "FAILED test_existing.py::test_off_by_1e6_relative" in out
    assert "GradientMismatch: gradcheck_lab.gradcheck: the backward of Function.apply is wrong" in out
    routed.stdout.re_match_lines([
        r"gradcheck_lab: 6 gradchecks routed, 2 failed \(test_existing.py::test_off_by_1e6_relative: the backward "
        r".*\), 1 deferred to torch \(Expected input 0 \(t\) to be float32 or float64 but got torch.float16\), "
        r"\d+\.\d s",
    ])


def test_gradcheck_lab_flag_from_addopts_and_under_xdist(pytester):
    import pytest

    pytest.importorskip("xdist")
    pytester.makepyfile(test_existing=ROUTED_SUITE)
    pytester.makeini("[pytest]\naddopts = --gradcheck-lab\n")
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.re_match_lines([r"gradcheck_lab: 6 gradchecks routed, 2 failed .*"])


@pytest.mark.parametrize("conftest", [False, True], ids=["alone", "beside a conftest"])
def test_a_tests_folder_that_shadows_the_standard_librarys_profile_keeps_the_trace(pytester, conftest):
    # pytorch_wavelets' tests folder holds a profile.py: make_fx's lazy import of cProfile found it, and
    # every routed call lost its symbolic leg ("module 'profile' has no attribute 'run'"); a conftest.py
    # beside it puts the folder on sys.path before any plugin is configured
    tests = pytester.mkdir("tests")
    (tests / "profile.py").write_text("PROFILE = 'the suite own helper'\n")
    if conftest:
        (tests / "conftest.py").write_text("import profile\n\nassert profile.PROFILE\n")
    (tests / "test_shadow.py").write_text('''
import warnings

import torch


def test_traced():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a missing symbolic leg warns
        assert torch.autograd.gradcheck(lambda t: t.sin() * t, (x,))
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gradcheck-lab", "tests")
    result.assert_outcomes(passed=1)
