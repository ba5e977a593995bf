"""A CI sample of the false-alarm sweep (benchmarks/sweep.py): correct code is never blamed.

Every model of the sweep (catalog and expression zoo) on domain, spread and
strategy points, float64 and float32, with its correct gradient function as
candidate (the engines are judged in the same run). The full sweep
(``benchmarks/sweep.py --points 1000000``) runs a million points per
configuration; the ``slow`` test runs 20,000, plain and with the candidate.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


slow = pytest.mark.slow  # deselected by default (addopts: -m "not slow"); `make test-slow` runs them


def _sweep():
    if "sweep_bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sweep_bench", ROOT / "benchmarks" / "sweep.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["sweep_bench"] = module
        spec.loader.exec_module(module)
    return sys.modules["sweep_bench"]


sweep = _sweep()
CI = [c for c in sweep.CONFIGS if c.candidate == "fn"]
CI_POINTS = {"domain": 1500, "spread": 1500, "strategy": 200}


def _check(config, n):
    res = sweep.run_config(config, n, chunk=5000)
    assert res.points == n or config.kind == "strategy"
    first = res.failures[0] if res.failures else None
    assert res.mismatches == 0, (
        f"{config.name}: {res.mismatches} mismatches ({res.per_engine}); first at chunk seed "
        f"{first['chunk_seed']}, point {first['point']}: {first['message']}"
    )


@pytest.mark.parametrize("config", CI, ids=[c.name for c in CI])
def test_correct_code_is_never_blamed(config):
    _check(config, CI_POINTS[config.kind])


@slow
@pytest.mark.parametrize("config", sweep.CONFIGS, ids=[c.name for c in sweep.CONFIGS])
def test_correct_code_is_never_blamed_more_points(config):
    _check(config, 5000 if config.kind == "strategy" else 20_000)


def test_strategy_draws_are_hypothesis_draws_of_the_public_strategy():
    subject = next(s for s in sweep.SUBJECTS if s.name == "quadratic")
    batch = sweep._strategy_points(subject, 300, 7)
    again = sweep._strategy_points.__wrapped__(subject, 300, 7)
    assert len(batch) == 300 and (batch.theta == again.theta).all()  # seeded: a chunk can be rerun
    rows = {tuple(r) for r in zip(*batch.theta.T, *batch.data.T)}
    assert len(rows) > 250  # no engine replaying earlier draws
    values = abs(batch.theta)
    assert (values <= 1e3).all() and (values == 0).any() and (values == 1e3).any()  # zero and max_abs (1e3) are drawn


def test_replayed_choices_give_the_points_a_seeded_draw_gives(tmp_path, monkeypatch):
    from gradcheck_lab.strategies import points

    monkeypatch.setattr(sweep, "CHOICES", tmp_path)
    tanh, sigmoid = (sweep.model_of(s) for s in sweep.SUBJECTS if s.name in ("mlp-tanh", "mlp-sigmoid"))
    key = sweep._structure(tanh)
    assert key == sweep._structure(sigmoid)  # same variables: the strategies differ only in the cancel map
    assert key != sweep._structure(sweep.model_of(sweep.SUBJECTS[0]))
    drawn = sweep._draw_direct(points(tanh), 120, 3, key)  # records the choices
    assert len(list(tmp_path.iterdir())) == 1
    replayed = sweep._draw_direct(points(sigmoid), 120, 3, key)
    direct = sweep._draw_direct(points(sigmoid), 120, 3)  # no record: a seeded draw
    assert replayed == direct
    cancelled = [i for i, (a, b) in enumerate(zip(drawn, replayed)) if a["y"] != b["y"]]
    assert cancelled and all(drawn[i]["params"] == replayed[i]["params"] for i in range(120))


def test_configuration_names_and_filter():
    names = [c.name for c in sweep.CONFIGS]
    assert len(names) == len(set(names)) == len(sweep.SUBJECTS) * 3 * 2 * 2
    assert {c.name for c in sweep.select("mlp-*/spread/float32/*")} == {
        f"mlp-{a}/spread/float32/{c}" for a in ("tanh", "sigmoid", "softplus", "relu", "sin") for c in ("plain", "fn")
    }


def test_sections_are_replaced_between_markers():
    text = "# R\n\nintro\n\n<!-- sweep:start -->\nold\n<!-- sweep:end -->\n\ntail\n"
    out = sweep.replace_section(text, "sweep", "new")
    assert out == "# R\n\nintro\n\n<!-- sweep:start -->\nnew\n<!-- sweep:end -->\n\ntail\n"
    assert sweep.replace_section(out, "sweep", "newer").count("sweep:start") == 1
