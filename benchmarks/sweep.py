"""False-alarm sweep: correct code must never be blamed (issue 7, item 7).

Every catalog model (linear, affine, quadratic, logistic, the mlp with each
activation, softmax 2x3 and 4x5) and an expression zoo (sigmoid, tanh of two
inputs, softplus, exp, log where defined, sigmoid with BCE, absolute loss) is
checked on three kinds of points:

* ``domain``: ``verify(model, random=N)``, the model's own random points;
* ``spread``: magnitudes log-uniform from 1e-3 up to each variable's
  ``max_abs`` with both signs and some exact zeros (saturation), every other
  point with its target set to the float64 prediction (cancellation);
* ``strategy``: draws of ``gradcheck_lab.strategies.points(model)`` (Hypothesis:
  spread magnitudes, boundary values, cancellation), drawn once per subject
  and shared by its four configurations. A draw costs 0.4-1.8 ms (about
  60 us a value), more than the check of the point, so
  ``--strategy-points`` can cap this kind.

each in float64 and float32, plain (the three engines) and with a correct
candidate (a hand-written gradient function). Zero mismatches is the
requirement. Points are processed in chunks (``--chunk``), so memory stays
small; ``spread`` and ``strategy`` points go through ``verify``'s random-point
path (the model's ``sample`` is replaced on a copy of the model), so they are
judged exactly as random points are, without the referee forced on every point.

    .venv/bin/python benchmarks/sweep.py --points 1000000            # the full sweep (hours)
    .venv/bin/python benchmarks/sweep.py --points 20000 --configs 'mlp-*/domain/*'

To split the sweep over processes, give each its own ``--configs`` and
``--jsonl FILE`` (one line per finished configuration), then write the docs
section from all of them with ``--merge FILE...``.

``--configs`` takes comma-separated glob patterns over configuration names
``model/kind/dtype/candidate`` (``candidate`` is ``plain`` or ``fn``). The
"Sweep" section of docs/reliability.md (between ``<!-- sweep:start -->`` and
``<!-- sweep:end -->``) is rewritten unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import hashlib
import importlib.util
import json
import os
import pickle
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from gradcheck_lab import Model, get_model, verify

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
KINDS = ("domain", "spread", "strategy")
DTYPES = ("float64", "float32")
CANDIDATES = ("plain", "fn")


def _load(name: str, path: Path):
    """A module from a file path (tests/ and benchmarks/ are not packages)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses look their module up
    spec.loader.exec_module(module)
    return module


mc = _load("mutant_catalog", ROOT / "tests" / "mutants.py")


# ------------------------------------------------------ correct gradients of the zoo


def tanh2_grad(params, point):
    x1, x2 = point["x1"], point["x2"]
    t = np.tanh(params["w1"] * x1 + params["w2"] * x2 + params["b"])
    dz = 2 * (t - point["y"]) * (1 - t**2)
    return {"w1": dz * x1, "w2": dz * x2, "b": dz}


def exp_grad(params, point):
    x = point["x"]
    e = np.exp(params["w"] * x)
    return {"w": 2 * (e - point["y"]) * e * x}


def log_grad(params, point):
    w, x = params["w"], point["x"]
    return {"w": 2 * (np.log(w * x) - point["y"]) / w}


def abs_loss_grad(params, point):
    x = point["x"]
    s = np.sign(params["w"] * x + params["b"] - point["y"])
    return {"w": s * x, "b": s}


# ------------------------------------------------------ configurations


@dataclass(frozen=True)
class Subject:
    """A model under the sweep and its correct gradient function."""

    name: str
    build: Callable[[], Model]
    grad: Callable
    positive: bool = False  # only positive values are in the domain (log(w*x))


def _catalog(name: str, **options):
    return lambda: get_model(name, **options)


def _expr(text: str, **kwargs):
    return lambda: Model.from_expr(text, **kwargs)


SUBJECTS: list[Subject] = [
    Subject("linear", _catalog("linear"), mc.linear_grad),
    Subject("affine", _catalog("affine"), mc.affine_grad),
    Subject("quadratic", _catalog("quadratic"), mc.quadratic_grad),
    Subject("logistic", _catalog("logistic"), mc.logistic_grad),
    *[
        Subject(f"mlp-{act}", _catalog("mlp", activation=act), mc.mlp_grad(act))
        for act in ("tanh", "sigmoid", "softplus", "relu", "sin")
    ],
    Subject("softmax-2x3", _catalog("softmax", d=2, K=3), mc.softmax_grad),
    Subject("softmax-4x5", _catalog("softmax", d=4, K=5), mc.softmax_grad),
    Subject("expr-sigmoid", _expr("sigmoid(w*x + b)", params="w,b", name="expr-sigmoid"), mc.sigmoid_unit_grad),
    Subject(
        "expr-tanh2",
        _expr("tanh(w1*x1 + w2*x2 + b)", params="w1,w2,b", inputs="x1,x2", name="expr-tanh2"),
        tanh2_grad,
    ),
    Subject("expr-softplus", _expr("softplus(w*x + b)", params="w,b", name="expr-softplus"), mc.softplus_unit_grad),
    Subject("expr-exp", _expr("exp(w*x)", params="w", name="expr-exp"), exp_grad),
    Subject("expr-log", _expr("log(w*x)", params="w", name="expr-log", domain=(0.05, 3.0)), log_grad, positive=True),
    Subject(
        "expr-sigmoid-bce",
        _expr("sigmoid(w*x + b)", params="w,b", loss="bce", name="expr-sigmoid-bce"),
        mc.logistic_grad,
    ),
    Subject("expr-absolute", _expr("w*x + b", params="w,b", loss="absolute", name="expr-absolute"), abs_loss_grad),
]


@dataclass(frozen=True)
class Config:
    subject: Subject
    kind: str
    dtype: str
    candidate: str

    @property
    def name(self) -> str:
        return f"{self.subject.name}/{self.kind}/{self.dtype}/{self.candidate}"


CONFIGS: list[Config] = [
    Config(s, k, d, c) for s in SUBJECTS for k in KINDS for d in DTYPES for c in CANDIDATES
]


def select(patterns: str | None) -> list[Config]:
    if not patterns:
        return list(CONFIGS)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    return [c for c in CONFIGS if any(fnmatch.fnmatchcase(c.name, p) for p in pats)]


@cache
def model_of(subject: Subject) -> Model:
    return subject.build()  # one Model per subject: its compiled engines are cached on it


# ------------------------------------------------------ points


def _spread_batch(model: Model, n: int, rng: np.random.Generator, positive: bool):
    """Log-uniform magnitudes in [1e-3, max_abs], both signs, 2% zeros; every other point cancels."""
    from gradcheck_lab.model import Batch
    from gradcheck_lab.ops import backend

    def draw(var):
        if var.kind == "binary":
            return rng.integers(0, 2, (n, var.size)).astype(float)
        if var.kind == "class":
            return np.eye(var.shape[0])[rng.integers(0, var.shape[0], n)]
        mag = 10.0 ** rng.uniform(-3.0, np.log10(var.max_abs), (n, var.size))
        sign = 1.0 if positive else rng.choice([-1.0, 1.0], (n, var.size))
        return np.where(rng.random((n, var.size)) < 0.02, 0.0, mag * sign)

    theta = np.concatenate([draw(v) for v in model.params], axis=1)
    data = np.concatenate([draw(v) for v in model.data_vars], axis=1)
    target = model.target
    if target.kind == "real" and not target.shape:
        th = [theta[1::2, i] for i in range(theta.shape[1])]
        da = [data[1::2, j] for j in range(data.shape[1])]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = np.broadcast_to(
                np.asarray(model.prediction(backend("numpy"), th.__getitem__, da.__getitem__), dtype=float),
                th[0].shape,
            )
        col = data.shape[1] - 1  # the target comes last among the data variables
        data[1::2, col] = np.where(np.isfinite(pred), pred, data[1::2, col])
    return Batch(theta, data)


@cache
def _strategy_points(subject: Subject, n: int, seed: int):
    """``n`` draws of ``strategies.points(model)`` from seed ``seed``, as a Batch (cached per subject)."""
    from gradcheck_lab.strategies import points

    model = model_of(subject)
    try:
        out = _draw_direct(points(model), n, seed, _structure(model) if CHOICES is not None else None)
    except (ImportError, TypeError, AttributeError):  # Hypothesis moved its internals: use the engine
        out = _draw_engine(points(model), n, seed)
    if subject.positive:
        out = [_positive(p) for p in out]
    return model.batch(out)


#: Where choice sequences of earlier draws are kept, shared between subjects (and processes) whose
#: strategies match; ``main`` sets it (``--choices-dir``), library use and tests leave it off.
CHOICES: Path | None = None


def _structure(model: Model) -> str:
    """What ``strategies.points(model)`` depends on besides the prediction its cancel map computes."""
    import hypothesis

    import gradcheck_lab.strategies as strategies

    vars_ = [(v.name, v.kind, v.shape, v.max_abs, v.domain) for v in (*model.data_vars, *model.params)]
    code = hashlib.sha256(Path(strategies.__file__).read_bytes()).hexdigest()  # the strategy's own code
    text = repr((vars_, model.target.name, model.target.kind, model.target.shape, hypothesis.__version__, code))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _draw_direct(strategy, n: int, seed: int, structure: str | None = None) -> list:
    """Note [Strategy draws without the engine]: Hypothesis's own generation, one draw per point.

    Each point is ``strategy`` drawn on a fresh ``ConjectureData`` with
    Hypothesis's default provider (its boundary and "nasty" floats, its
    constants), seeded by ``seed``. This skips the engine that ``@given``
    runs around each draw: its bookkeeping costs about 1 ms a point (2.6 ->
    1.6 ms for an mlp point with Hypothesis 6.170), and its mutations repeat
    earlier draws (126 of 2,000 mlp points were duplicates), neither of
    which a sweep wants. Hypothesis's internals move between versions; if
    these names do, the engine path is used instead.

    The choices behind each point are kept (under ``CHOICES``, keyed by
    ``structure``, ``n`` and ``seed``). The strategies of models with the
    same variables, such as the five mlp activations, differ only in the
    target their cancel map computes from the prediction, which draws
    nothing, so replaying the choices (``ConjectureData.for_choices``) gives
    exactly the points a seeded draw would give
    (tests/test_sweep.py checks it), in 0.6 of the time.
    """
    import random

    from hypothesis.control import BuildContext
    from hypothesis.internal.conjecture.data import ConjectureData

    path = CHOICES / f"{structure}-{n}-{seed}.pkl" if structure and CHOICES is not None else None
    if path is not None and path.exists():
        recorded = pickle.loads(path.read_bytes())
        datas = (ConjectureData.for_choices(ch) for ch in recorded)
    else:
        rnd = random.Random(seed)
        recorded = []
        datas = (ConjectureData(random=rnd) for _ in range(n))
    out = []
    for data in datas:
        with BuildContext(data, wrapped_test=None):
            out.append(data.draw(strategy))
        if path is not None and len(recorded) < n:
            recorded.append(tuple(data.choices))
    if path is not None and not path.exists():
        CHOICES.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(recorded))
        tmp.replace(path)  # atomic: another process may be replaying the same chunk
    return out


def _draw_engine(strategy, n: int, seed: int) -> list:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    out: list[dict[str, Any]] = []

    @hseed(seed)
    @settings(
        max_examples=n, phases=[Phase.generate], database=None, deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(point):
        out.append(point)

    collect()
    return out


def _positive(point):
    def fold(v):
        if isinstance(v, dict):
            return {k: fold(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fold(x) for x in v]
        if isinstance(v, float):
            return abs(v) if v != 0 else 1.0
        return v

    return fold(point)


class _Sampler:
    """A copy of the model whose random points are ours (verify's random path, no forced referee)."""

    def __init__(self, model: Model, batch):
        self.batch, self.called = batch, False
        self.model = copy.copy(model)
        self.model.sample = self  # instance attribute: verify calls model.sample(n, seed=...)

    def __call__(self, n, seed=0, start=0, **_):
        # verify streams its random points in chunks: points start .. start + n of ours.
        if start + n > len(self.batch):
            raise RuntimeError(f"sweep: verify asked for points {start}..{start + n}, the chunk has {len(self.batch)}")
        self.called = True
        return self.batch.take(slice(start, start + n))


# ------------------------------------------------------ running


@dataclass
class Result:
    config: str
    points: int = 0
    mismatches: int = 0  # (engine, point) pairs at fault
    per_engine: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # verdict classes, where the report has them
    kinks: int = 0
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)


def _add(into: dict, more: dict | None, prefix: str = ""):
    """Add integer counts into ``into``; nested mappings become ``outer.inner`` keys."""
    for k, v in (more or {}).items():
        if isinstance(v, dict):
            _add(into, v, f"{prefix}{k}.")
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            into[prefix + str(k)] = into.get(prefix + str(k), 0) + int(v)


def run_config(
    config: Config,
    n: int,
    *,
    chunk: int = 20_000,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    max_failures: int = 5,
) -> Result:
    """Check ``n`` points of one configuration in chunks; count mismatches, keep the first failures."""
    subject = config.subject
    model = model_of(subject)
    cand = subject.grad if config.candidate == "fn" else None
    res = Result(config.name)
    started = time.perf_counter()
    for i, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        cseed = seed * 1_000_003 + i  # the chunk's seed: rerun one chunk with --seed/--chunk
        sampler = None
        if config.kind == "domain":
            target, kwargs = model, dict(random=m, seed=cseed)
        elif config.kind == "spread":
            rng = np.random.default_rng([cseed, 1])
            sampler = _Sampler(model, _spread_batch(model, m, rng, subject.positive))
            target, kwargs = sampler.model, dict(random=m, seed=cseed)
        else:
            pts = _strategy_points(subject, m, cseed)
            sampler = _Sampler(model, pts)
            target, kwargs = sampler.model, dict(random=len(pts), seed=cseed)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = verify(target, points=[], dtype=config.dtype, candidate=cand, **kwargs)
        if sampler is not None and not sampler.called:
            raise RuntimeError("verify no longer draws random points through Model.sample: update benchmarks/sweep.py")
        res.points += report.random_points
        _add(res.per_engine, report.mismatches)
        _add(res.counts, getattr(report, "counts", None))
        res.kinks += int(report.kinks)
        if not report.ok and len(res.failures) < max_failures:
            for f in report.failures[: max_failures - len(res.failures)]:
                bad = [(c.param, c.at_fault, c.exact, c.values) for c in f.checks if c.at_fault]
                res.failures.append(
                    {"chunk_seed": cseed, "index": f.index, "point": f.point, "faults": bad[:3],
                     "message": report.message}
                )
        if progress:
            progress(f"{config.name}: {res.points}/{n} points, {sum(res.per_engine.values())} mismatches")
    res.mismatches = sum(res.per_engine.values())
    res.seconds = time.perf_counter() - started
    return res


def points_for(config: Config, n: int, strategy_cap: int | None) -> int:
    return min(n, strategy_cap) if config.kind == "strategy" and strategy_cap is not None else n


# ------------------------------------------------------ the docs section


def replace_section(text: str, tag: str, body: str) -> str:
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip() + "\n\n" + block + "\n"


def write_section(tag: str, body: str, path: Path = DOC) -> None:
    text = path.read_text() if path.exists() else "# Reliability\n"
    path.write_text(replace_section(text, tag, body))


def _fmt_counts(c: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "-"


def sweep_markdown(results: list[Result], command: str) -> str:
    total = sum(r.mismatches for r in results)
    failing = [r for r in results if r.mismatches]
    lines = [
        "## Sweep",
        "",
        f"Written by `{command}` ({time.strftime('%Y-%m-%d')}).",
        f"{len(results)} configurations, {sum(r.points for r in results):,} points in all; "
        f"**{total} mismatches** (engine-point pairs at fault) in {len(failing)} configurations.",
        "",
        "| configuration | points | mismatches | classes | kinks | seconds |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in results:
        who = ", ".join(f"{k} {v}" for k, v in r.per_engine.items() if v)
        lines.append(
            f"| `{r.config}` | {r.points:,} | {r.mismatches}{f' ({who})' if who else ''} | "
            f"{_fmt_counts(r.counts)} | {r.kinks} | {r.seconds:.1f} |"
        )
    if failing:
        lines += [
            "",
            "Per failing configuration: the first failing point of the first failing chunk (its index in the "
            "chunk, and the chunk's seed), then the report's headline for that chunk (which names its worst point).",
            "",
        ]
        for r in failing:
            f = r.failures[0]
            msg = f["message"].splitlines()[0]
            lines.append(f"- `{r.config}`, chunk seed {f['chunk_seed']}, first failing point {f['index']}: "
                         f"`{_short(f['point'])}`; headline: {msg}")
    return "\n".join(lines)


def _short(point, limit=240) -> str:
    s = repr(point)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _plain(value):
    """JSON for what a failure record holds (NumPy scalars and arrays)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def merge(paths: list[Path]) -> list[Result]:
    """Results from ``--jsonl`` files, in the order of CONFIGS (a later line for a configuration wins)."""
    found: dict[str, Result] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                r = Result(**json.loads(line))
                found[r.config] = r
    order = {c.name: i for i, c in enumerate(CONFIGS)}
    return sorted(found.values(), key=lambda r: order.get(r.config, len(order)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=1_000_000, help="points per configuration (default 1,000,000)")
    ap.add_argument("--strategy-points", type=int, default=None,
                    help="cap on Hypothesis draws per strategy configuration (default: --points)")
    ap.add_argument("--configs", default=None, help="comma-separated globs over model/kind/dtype/candidate")
    ap.add_argument("--chunk", type=int, default=20_000, help="points per verify call (memory)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="do not rewrite docs/reliability.md")
    ap.add_argument("--list", action="store_true", help="list the configuration names and exit")
    ap.add_argument("--jsonl", type=Path, default=None,
                    help="append each configuration's result to this file as it finishes (runs split over processes)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSONL",
                    help="write the docs section from the --jsonl files of earlier runs instead of running")
    ap.add_argument("--command", default=None, help="with --merge: the command line the section names")
    ap.add_argument("--choices-dir", type=Path, default=Path(tempfile.gettempdir()) / "gradcheck_lab-sweep-choices",
                    help="where strategy draws' choices are kept for subjects with the same variables (see "
                         "Note [Strategy draws without the engine]; default: %(default)s)")
    args = ap.parse_args(argv)
    for flag, value in (("--points", args.points), ("--strategy-points", args.strategy_points), ("--chunk", args.chunk)):
        if value is not None and value < 1:
            ap.error(f"expected {flag} to be a positive integer but got {value}")
    try:
        args.choices_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        ap.error(f"expected --choices-dir to be a folder that can be created or written but got {exc}")
    global CHOICES
    CHOICES = args.choices_dir
    if args.merge:
        try:
            results = merge(args.merge)
        except (OSError, ValueError, TypeError) as exc:  # a missing file, a line that is not a result
            print(f"error: expected --jsonl files of earlier runs for --merge but could not read them: {exc}",
                  file=sys.stderr)
            return 2
        if not results:
            print(f"error: no results in {', '.join(map(str, args.merge))}", file=sys.stderr)
            return 2
        command = args.command or "benchmarks/sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
        if not args.no_write:
            write_section("sweep", sweep_markdown(results, command.strip()))
            print(f"wrote the Sweep section of {DOC.relative_to(ROOT)} from {len(results)} configurations")
        return 1 if any(r.mismatches for r in results) else 0
    configs = select(args.configs)
    if args.list:
        print("\n".join(c.name for c in configs))
        return 0
    if not configs:
        print(f"error: no configuration matches --configs {args.configs!r} (see --list)", file=sys.stderr)
        return 2
    results = []
    for k, cfg in enumerate(configs, 1):
        if k > 1 and cfg.subject != configs[k - 2].subject:
            _strategy_points.cache_clear()  # the draws are shared by one subject's configurations only
        n = points_for(cfg, args.points, args.strategy_points)
        r = run_config(cfg, n, chunk=args.chunk, seed=args.seed,
                       progress=lambda s, k=k: print(f"[{k}/{len(configs)}] {s}", file=sys.stderr, flush=True))
        results.append(r)
        if args.jsonl:
            with args.jsonl.open("a") as fh:
                fh.write(json.dumps(asdict(r), default=_plain) + "\n")
        print(f"{r.config:45} {r.points:>9,} pts  {r.mismatches:>5} mismatches  "
              f"classes {_fmt_counts(r.counts)}  kinks {r.kinks}  {r.seconds:8.1f} s", flush=True)
        for f in r.failures[:1]:
            print(f"    first failure: chunk seed {f['chunk_seed']} point {f['index']}: {_short(f['point'])}\n"
                  f"    {f['message'].splitlines()[0]}", flush=True)
    command = "benchmarks/sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.no_write:
        write_section("sweep", sweep_markdown(results, command.strip()))
        print(f"wrote the Sweep section of {DOC.relative_to(ROOT)}")
    return 1 if any(r.mismatches for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
