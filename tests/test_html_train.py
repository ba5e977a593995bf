"""The training page (``train --html``): the run replayed, every step's check shown.

Browser tests open it from disk in headless Chromium, replay steps with the
keyboard and the buttons, and compare what the page shows with the
TrainResult; without a browser they skip with the reason.
"""

import json
import re

import pytest

from gradcheck_lab import get_model, train
from gradcheck_lab.html import train_page
from gradcheck_lab.html.base import external_references, num
from gradcheck_lab.html.browser import Session, browser_session, unavailable

needs_browser = pytest.mark.skipif(unavailable() is not None, reason=f"no browser: {unavailable()}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    q, lin = get_model("quadratic"), get_model("linear")
    ok = train(q, epochs=10)
    bad = train(lin, zero_grad=False)
    out = {}
    for name, (r, m) in {"ok": (ok, q), "bad": (bad, lin)}.items():
        path = d / f"{name}.html"
        path.write_text(train_page(r, m), encoding="utf-8")
        out[name] = (r, path)
    return out


@pytest.fixture(scope="module")
def session():
    """One browser driver for this module (Playwright allows one per thread)."""
    with browser_session() as s:
        yield s


@pytest.fixture(scope="module")
def browser(session):
    """One headless Chromium page for this module's tests (each opens its page afresh)."""
    return session.page()


def rows(text: str) -> dict[int, str]:
    return {int(k): v for k, v in re.findall(r'<tr data-step="(\d+)"[^>]*>(.*?)</tr>', text)}


def test_every_step_is_a_row_with_its_check(runs):
    r, path = runs["ok"]
    text = path.read_text()
    assert external_references(text) == []
    table = rows(text)
    assert sorted(table) == [s.step for s in r.steps]
    for s in r.steps:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", table[s.step])
        assert cells[5] == num(s.loss)
        assert [cells[6 + 3 * k] for k in range(len(s.grads))] == [num(g) for g in s.grads]
        assert cells[-1] == "ok"


def test_no_zero_grad_marks_the_step_where_accumulation_departs(runs):
    r, path = runs["bad"]
    text = path.read_text()
    assert r.mismatch is not None
    bad = re.findall(r'<tr data-step="(\d+)" class="bad"', text)
    assert bad == [str(r.mismatch.step)]
    assert f"step {r.mismatch.step}: mismatch" in text  # the mark on the charts
    assert "--no-zero-grad" in text and "MISMATCH" in text


def test_long_runs_are_thinned(monkeypatch):
    from gradcheck_lab.html import train as html_train

    monkeypatch.setattr(html_train, "MAX_POINTS", 40)
    monkeypatch.setattr(html_train, "MAX_ROWS", 25)
    m = get_model("linear")
    r = train(m, epochs=30)
    text = train_page(r, m)
    table = rows(text)
    assert len(table) <= 25 + 3 and table.keys() >= {1, len(r.steps)}
    assert f"{len(r.steps) - len(table)} of {len(r.steps)} steps are not listed" in text
    replay = re.search(r'<script type="application/json" id="train-data">(.*?)</script>', text).group(1)
    assert len(json.loads(replay)["steps"]) <= 40 + 3


def test_cli_writes_the_page_with_json(cli, tmp_path):
    out = tmp_path / "run.html"
    code, stdout, err = cli("train", "linear", "--epochs", 2, "--json", "--html", out)
    assert code == 0 and json.loads(stdout)["check"]["ok"] and f"wrote {out}" in err
    assert len(rows(out.read_text())) == 6


@needs_browser
def test_replay_with_keys_and_buttons(runs, browser):
    r, path = runs["ok"]
    page = Session.open(browser, path)
    assert page.locator("#r-step").text_content().startswith(f"step {r.steps[-1].step} ")
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    page.click("#next")
    s = r.steps[2]
    assert page.locator("#r-step").text_content() == f"step {s.step} (epoch {s.epoch}, sample {s.sample})"
    shown = [[td.text_content() for td in tr.locator("td").all()] for tr in page.locator("#replay tbody tr").all()]
    assert [row[0] for row in shown] == r.param_labels
    assert [row[2] for row in shown] == [num(g) for g in s.grads]
    assert [row[5] for row in shown] == ["ok"] * len(s.grads)
    assert page.locator("#steps tbody tr.cur").get_attribute("data-step") == str(s.step)
    page.keyboard.press("p")
    assert page.locator("#r-step").text_content().startswith(f"step {r.steps[1].step} ")
    cursor = page.locator("#loss-chart .cursor")
    assert cursor.get_attribute("visibility") == "visible"
    assert page.problems == [] and page.requests == [path.as_uri()]


@needs_browser
def test_replay_opens_on_the_mismatch(runs, browser):
    r, path = runs["bad"]
    page = Session.open(browser, path)
    assert page.locator("#r-step").text_content().startswith(f"step {r.mismatch.step} ")
    row = page.locator(f'#replay tbody tr[data-param="{r.mismatch.param}"] td').all()
    assert row[2].text_content() == num(r.mismatch.autograd) and row[3].text_content() == num(r.mismatch.symbolic)
    assert row[5].text_content() == "FAIL"
    assert page.problems == [] and page.requests == [path.as_uri()]


@needs_browser
def test_readable_without_javascript(runs, session):
    r, path = runs["bad"]
    page = Session.open(session.page(javascript=False), path)
    assert not page.locator("#replay").is_visible()
    assert page.locator("#steps tbody tr").count() == len(r.steps)
    assert page.locator("#mismatch").is_visible()
    assert page.requests == [path.as_uri()]
