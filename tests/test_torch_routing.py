"""torch_routing.py: torch's gradcheck calls routed through ours outside pytest; reports in notebooks (_repr_html_)."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

import gradcheck_lab
from gradcheck_lab import GradientMismatch, verify
from gradcheck_lab.html.base import external_references
from gradcheck_lab.html.browser import Session, browser_session, unavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "examples"))
import custom_functions as cf  # noqa: E402

needs_browser = pytest.mark.skipif(unavailable() is not None, reason=f"no browser: {unavailable()}")
TORCH_GRADCHECK = importlib.import_module("torch.autograd.gradcheck")


def _square(err: float):
    """x**2 (docs/examples/custom_functions.py), its backward off by ``err`` (relative) when given."""
    if not err:
        return cf.Square.apply

    class OffSquare(cf.Square):
        @staticmethod
        def backward(ctx, g):
            return cf.Square.backward(ctx, g) * (1 + err)

    return OffSquare.apply


def _x():
    return torch.rand(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)


def test_routing_replaces_every_way_to_reach_torchs_gradcheck_and_restores_it():
    original = torch.autograd.gradcheck
    caller = {"gc": original}  # stands for a module that did `from torch.autograd import gradcheck` earlier
    namespace = type("M", (), {})()
    namespace.__dict__["gc"] = original
    sys.modules["_gcl_fake_module"] = namespace  # type: ignore[assignment]
    try:
        with gradcheck_lab.routing() as stats:
            assert torch.autograd.gradcheck is not original
            assert TORCH_GRADCHECK.gradcheck is torch.autograd.gradcheck
            assert namespace.gc is torch.autograd.gradcheck
            assert caller["gc"](_square(0), (_x(),)) is True  # a reference taken before routing is torch's own
            assert namespace.gc(_square(0), (_x(),)) is True
            with pytest.raises(GradientMismatch, match="the backward of .*apply is wrong") as caught:
                torch.autograd.gradcheck(_square(1e-6), (_x(),))
            assert isinstance(caught.value, RuntimeError)  # torch's GradcheckError too
            assert torch.autograd.gradcheck(_square(1e-6), (_x(),), raise_exception=False) is False
        assert (stats.routed, stats.failed, stats.deferred) == (3, 2, 0)
        assert stats.summary().startswith("gradcheck_lab: 3 gradchecks routed, 2 failed (the backward of")
    finally:
        del sys.modules["_gcl_fake_module"]
    assert torch.autograd.gradcheck is original and TORCH_GRADCHECK.gradcheck is original
    assert namespace.gc is original
    assert original(_square(1e-6), (_x(),)) is True  # torch's own again: it misses 1e-6


def test_a_routed_call_that_raises_counts_as_failed():
    def raises(t):
        raise ValueError("not for these inputs")

    with gradcheck_lab.routing() as stats, pytest.raises(ValueError, match="not for these inputs"):
        torch.autograd.gradcheck(raises, (_x(),))
    assert (stats.routed, stats.failed) == (1, 1)
    assert "1 failed (raised ValueError: not for these inputs" in stats.summary()


def test_torchs_gradgradcheck_keeps_calling_torchs_gradcheck_inside_routing():
    # complex: no symbolic leg for second derivatives, so ours hands the call to torch's gradgradcheck, which
    # calls the module's gradcheck: that call must not recurse into ours
    with gradcheck_lab.routing() as stats:
        z = torch.randn(3, dtype=torch.complex128, requires_grad=True)
        with pytest.warns(RuntimeWarning, match="checked by torch.autograd.gradgradcheck itself"):
            assert torch.autograd.gradgradcheck(lambda t: (t * t).abs(), (z,))
    assert (stats.routed, stats.deferred) == (1, 0)


def test_routed_keywords_keep_torchs_meaning():
    with gradcheck_lab.routing():
        # atol/rtol given replace the derived tolerance: a 1e-6 error within rtol=1e-3 passes, as with torch
        assert torch.autograd.gradcheck(_square(1e-6), (_x(),), atol=1e-5, rtol=1e-3)
        assert torch.autograd.gradcheck(_square(0), (_x(),), fast_mode=True, nondet_tol=0.0, check_undefined_grad=True)


def test_report_repr_html_is_a_scoped_fragment():
    report = verify("quadratic", points=[{"x": 2, "y": 4}], random=50)
    html = report._repr_html_()
    assert html.startswith('<div class="gcl-report">') and "<script" not in html and "<html" not in html
    assert 'data-verdict="agree"' in html and "Worst discrepancy per engine pair" in html
    assert not external_references(html)
    assert len(html) < 200_000


def test_caught_gradcheck_repr_html_shows_culprit_component_and_values():
    with pytest.raises(GradientMismatch) as caught:
        gradcheck_lab.gradcheck(_square(1e-6), (_x(),))
    html = caught.value._repr_html_()
    assert 'id="caught"' in html and "backward gives" in html and "the exact value is" in html
    assert re.search(r"d\[output 0 element \(\d, \d\)\] / d\[input0\[\d, \d\]\]", html)


@needs_browser
def test_repr_html_renders_in_a_browser(tmp_path):
    report = verify("quadratic", points=[{"x": 2, "y": 4}], random=50)
    with pytest.raises(GradientMismatch) as caught:
        gradcheck_lab.gradcheck(_square(1e-6), (_x(),))
    with browser_session() as session:
        page = session.page(javascript=False)
        for name, html, verdict in (("ok", report._repr_html_(), "agree"),
                                    ("caught", caught.value._repr_html_(), "mismatch")):
            # As a notebook embeds it: inside someone else's page, which it must not restyle.
            path = tmp_path / f"{name}.html"
            path.write_text(f'<!DOCTYPE html><html><body><h1 id="host">notebook</h1>{html}</body></html>',
                            encoding="utf-8")
            Session.open(page, path)
            assert not page.problems and all(u.startswith("file:") for u in page.requests)
            assert page.locator("#verdict").get_attribute("data-verdict") == verdict
            assert page.locator("#verdict").is_visible()
            host = page.eval_on_selector("#host", "e => getComputedStyle(e).fontSize")
            assert host == "32px", host  # the browser's default h1: our styles stay inside the fragment
            if name == "caught":
                assert "backward gives" in page.locator("#caught").inner_text()


def test_routed_calls_check_a_modules_inputs_only_as_torch_does():
    # torch's gradcheck of a module differentiates its inputs; a CNN's weights (1.3M in a public
    # descriptor network) made a routed call check every one of them
    class WrongWeight(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return x * w

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g * w, g * x * 2  # the weight's gradient is wrong, the input's right

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.rand(3, dtype=torch.float64) + 0.5)

        def forward(self, x):
            return WrongWeight.apply(x, self.w)

    module, x = Scale(), _x()
    assert torch.autograd.gradcheck(module, (x,))
    with gradcheck_lab.routing():
        assert torch.autograd.gradcheck(module, (x,))
    with pytest.raises(GradientMismatch, match=r"d\[w"):
        gradcheck_lab.gradcheck(module, (x,))
    assert gradcheck_lab.gradcheck(module, (x,), parameters=False)


def test_the_public_routing_is_the_function_even_after_its_module_is_imported():
    # the module was named routing.py: importing it (the pytest plugin does) set the package's attribute
    # `routing` to the module, and `gradcheck_lab.routing()` raised "'module' object is not callable"
    import subprocess

    code = ("import gradcheck_lab.torch_routing, gradcheck_lab.pytest_plugin, gradcheck_lab; "
            "assert callable(gradcheck_lab.routing) and not isinstance(gradcheck_lab.routing, type(gradcheck_lab)), "
            "gradcheck_lab.routing")
    subprocess.run([sys.executable, "-c", code], check=True)
    import pkgutil

    import gradcheck_lab as package

    modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert not set(package.__all__) & modules  # no public name is also a submodule's name
