"""The lesson's page (``explain --html``): static content, then stepped in a real browser.

Exercise 2 of the lesson: the quadratic model at x = 2, y = 4 with
w1 = w2 = b = 1 (loss 9, gradients 24, 12, 6). The browser tests open the
page from disk in headless Chromium (gradcheck_lab.html.browser), step it
with the keyboard and the buttons, and read what it shows; without a
browser they skip with the reason.
"""

import re

import pytest

from gradcheck_lab import explain, get_model
from gradcheck_lab.html import explain_page
from gradcheck_lab.html.base import external_references
from gradcheck_lab.html.browser import Session, browser_session, unavailable

POINT = {"x": 2, "y": 4}
PARAMS = {"w1": 1, "w2": 1, "b": 1}
#: The lesson page's size target (issue 10).
MAX_BYTES = 300_000

needs_browser = pytest.mark.skipif(unavailable() is not None, reason=f"no browser: {unavailable()}")


@pytest.fixture(scope="module")
def lesson():
    model = get_model("quadratic")
    e = explain(model, POINT, PARAMS)
    return e, explain_page(model, POINT, PARAMS, explanation=e)


@pytest.fixture(scope="module")
def page_file(lesson, tmp_path_factory):
    path = tmp_path_factory.mktemp("explain") / "explain.html"
    path.write_text(lesson[1], encoding="utf-8")
    return path


def test_the_lesson_numbers(lesson):
    e, _ = lesson
    assert e.trace.loss == 9.0
    assert e.gradients == {"w1": 24.0, "w2": 12.0, "b": 6.0}


def test_static_page_is_self_contained_and_small(lesson):
    _, text = lesson
    assert external_references(text) == []
    assert len(text.encode()) <= MAX_BYTES


def test_static_tables_show_the_trace(lesson):
    e, text = lesson
    for r in e.trace.rows():
        row = re.search(rf'<tr data-i="\d+" data-name="{re.escape(r["name"])}">(.*?)</tr>', text).group(1)
        values = [float(v) for v in re.findall(r'data-value="([^"]+)"', row)]
        assert values == [r["value"], r["upstream"]]
    for c in e.checks:
        row = re.search(rf'<tr data-param="{c["param"]}">(.*?)</tr>', text).group(1)
        assert float(re.search(r'data-value="([^"]+)"', row).group(1)) == c["trace"]


def test_partials_are_mathml(lesson):
    _, text = lesson
    for p in PARAMS:
        block = re.search(rf'<div class="eq" data-param="{p}"><math display="block">(.*?)</math>', text)
        assert block is not None and "<mfrac>" in block.group(1)


def test_mlp_page_stays_small():
    model = get_model("mlp", H=4)
    text = explain_page(model, engines=False)
    assert external_references(text) == []
    assert len(text.encode()) <= MAX_BYTES


def test_cli_writes_the_page(cli, tmp_path):
    out = tmp_path / "lesson.html"
    code, stdout, _ = cli("explain", "quadratic", "--x", 2, "--y", 4, "--html", out)
    assert code == 0 and f"wrote {out}" in stdout
    assert 'data-name="loss"' in out.read_text()


@pytest.mark.parametrize(
    "name, fragment",
    [("page.png", "ending in .html"), ("missing/page.html", "existing directory")],
)
def test_cli_bad_html_path(cli, tmp_path, name, fragment):
    code, _, err = cli("explain", "quadratic", "--html", tmp_path / name)
    assert code == 2 and fragment in err and "Traceback" not in err


# ---------------------------------------------------------------- in a browser
@pytest.fixture(scope="module")
def session():
    """One browser driver for this module (Playwright allows one per thread)."""
    with browser_session() as s:
        yield s


@pytest.fixture(scope="module")
def browser(session):
    """One headless Chromium page for this module's tests (each opens its page afresh)."""
    return session.page()


def shown(page, name: str, what: str) -> str:
    """The text of a graph node's ``value``/``grad`` line, without its label."""
    text = page.locator(f'#graph g.node[data-name="{name}"] .{what}').text_content()
    return text.replace("value", "").replace("grad", "").strip()


@needs_browser
def test_stepping_forward_and_backward(lesson, page_file, browser):
    e, _ = lesson
    ops = [n for n in e.trace.nodes if n.kind == "op"]
    page = Session.open(browser, page_file)
    assert page.locator("#step-no").text_content() == f"step 1 of {2 * len(ops) + 2}"
    assert shown(page, "loss", "val") == "?"
    for _ in ops:  # the forward pass, one node per key press
        page.keyboard.press("ArrowRight")
    assert float(shown(page, "loss", "val")) == e.trace.loss
    assert shown(page, "w1", "grad") == ""
    page.keyboard.press("p")  # one back: the loss is not computed yet
    assert shown(page, "loss", "val") == "?"
    page.keyboard.press("n")
    for _ in ops:  # the backward pass
        page.click("#next")
    for label, g in e.gradients.items():
        assert float(shown(page, label, "grad")) == g
    # x is used twice and sums what it receives
    assert float(shown(page, "x", "grad")) == next(n.grad for n in e.trace.nodes if n.name == "x")
    page.keyboard.press("ArrowRight")  # the last step: the check
    lines = page.locator("#step-lines").inner_text()
    for c in e.checks:
        assert f"∂loss/∂{c['param']} = {c['trace']:g} (this trace)" in lines
    assert page.locator("#next").is_disabled()
    page.keyboard.press("Home")
    assert page.locator("#prev").is_disabled() and shown(page, "w1", "grad") == ""
    page.keyboard.press("End")
    page.click("#prev")
    assert page.locator("#steps tbody tr.cur").get_attribute("data-step") == str(2 * len(ops))
    assert page.problems == []
    assert page.requests == [page_file.as_uri()]


@needs_browser
def test_backward_step_highlights_the_node_and_says_what_inputs_receive(lesson, page_file, browser):
    e, _ = lesson
    ops = [n for n in e.trace.nodes if n.kind == "op"]
    n2 = next(k for k, n in enumerate(e.trace.nodes) if n.name == "n2")
    page = Session.open(browser, page_file)
    # forward pass, then backward from the loss down to n2 (= w1 * n1)
    for _ in range(len(ops) + 1 + [n.name for n in reversed(ops)].index("n2")):
        page.keyboard.press("ArrowRight")
    assert page.locator("#step-phase").text_content() == "backward"
    assert page.locator("#graph g.node.cur").get_attribute("data-name") == "n2"
    assert page.locator("#nodes tbody tr.cur").get_attribute("data-i") == str(n2)
    lines = page.locator("#step-lines").inner_text()
    node = e.trace.nodes[n2]
    assert f"w1 receives upstream × local = {node.grad:g} × {node.local[0]:g} = {e.gradients['w1']:g}" in lines
    assert page.problems == []


@needs_browser
def test_readable_without_javascript(lesson, page_file, session):
    e, _ = lesson
    page = Session.open(session.page(javascript=False), page_file)
    assert not page.locator("#stepper").is_visible()
    assert page.locator("#steps tbody tr").count() == 2 * sum(n.kind == "op" for n in e.trace.nodes) + 2
    assert page.locator("#steps").is_visible() and page.locator("#nodes").is_visible()
    for label, g in e.gradients.items():  # the graph shows the final values
        assert float(shown(page, label, "grad")) == g
    assert float(shown(page, "loss", "val")) == e.trace.loss
    assert page.requests == [page_file.as_uri()]
