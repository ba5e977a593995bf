"""The mutant table and the detection limits of docs/reliability.md (issue 7, item 6).

1. Every mutant of tests/mutants.py and its correct twin through
   ``verify`` (the settings of the mutant's test) and through
   ``torch.autograd.gradcheck`` with its defaults, at the same points (the
   model's dataset or the mutant's explicit points, then its random points),
   in float64 -- float32 for the float32 mutants. A gradient function is put
   under gradcheck as the backward of a ``torch.autograd.Function`` whose
   forward is the model's loss; a torch_loss or module is called as is.
2. Detection limits: every gradient multiplied by ``1 + rel`` for
   rel = 1e-2 .. 1e-12, at the random points of four catalog models, as a
   gradient function and a torch_loss in float64 and a torch_loss in float32;
   torch gradcheck on the same float64 torch_loss for comparison.

    .venv/bin/python benchmarks/mutants.py                  # rewrites the two sections
    .venv/bin/python benchmarks/mutants.py --no-write --only 'fn_*'

The "Mutants" and "Detection limits" sections of docs/reliability.md
(between ``<!-- mutants:start -->`` and ``<!-- mutants:end -->``) are
rewritten unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep  # noqa: E402  (benchmarks/sweep.py: the loader and the docs writer)
from gradcheck_lab import get_model, verify  # noqa: E402
from gradcheck_lab.ops import backend  # noqa: E402

mc = sweep.mc  # tests/mutants.py
RELS = [10.0**-k for k in range(2, 13)]


# ------------------------------------------------------------ points and torch functions


def mutant_batch(m, cap: int | None):
    """The points of the mutant's run: its explicit points or the model's dataset, then its random points."""
    model = m.get_model()
    parts = []
    explicit = list(m.points) if m.points is not None else list(model.dataset)
    if explicit:
        parts.append(model.batch(explicit))
    if m.random:
        parts.append(model.sample(m.random, seed=m.seed))
    theta = np.concatenate([p.theta for p in parts])
    data = np.concatenate([p.data for p in parts])
    if cap is not None:
        theta, data = theta[:cap], data[:cap]
    return theta, data


def _split(model, theta, data):
    p = {}
    for var, sl in zip(model.params, model.param_offsets().values()):
        p[var.name] = theta[sl][0] if not var.shape else theta[sl].reshape(var.shape)
    v, off = {}, 0
    for var in model.data_vars:
        t = data[off : off + var.size]
        off += var.size
        v[var.name] = t[0] if not var.shape else t.reshape(var.shape)
    return p, v


def _user(model, theta: np.ndarray, data: np.ndarray):
    """The (params, point) a gradient function receives, as verify builds them."""
    params = {}
    for var, sl in zip(model.params, model.param_offsets().values()):
        params[var.name] = float(theta[sl][0]) if not var.shape else theta[sl].reshape(var.shape).copy()
    point, off = {}, 0
    for var in model.data_vars:
        vals = data[off : off + var.size]
        off += var.size
        if var.kind == "class":
            point[var.name] = int(np.argmax(vals))
        else:
            point[var.name] = float(vals[0]) if not var.shape else vals.reshape(var.shape).copy()
    return params, point


class HandWritten(torch.autograd.Function):
    """Forward: the model's loss (torch); backward: the hand-written gradient function under test."""

    @staticmethod
    def forward(ctx, theta, data, model, fn):
        ctx.save_for_backward(theta, data)
        ctx.model, ctx.fn = model, fn
        return model.loss(backend("torch"), theta.__getitem__, data.__getitem__)

    @staticmethod
    def backward(ctx, grad):
        theta, data = ctx.saved_tensors
        model = ctx.model
        params, point = _user(model, theta.detach().double().numpy(), data.detach().double().numpy())
        g = ctx.fn(params, point)
        flat = np.concatenate([np.asarray(g[v.name], dtype=float).reshape(-1) for v in model.params])
        return grad * torch.tensor(flat, dtype=theta.dtype), None, None, None


def loss_function(kind: str, cand, model, data: torch.Tensor):
    """theta -> loss tensor computed by the candidate, for gradcheck."""
    if kind == "function":
        return lambda theta: HandWritten.apply(theta, data, model, cand)
    if kind == "torch_loss":
        fn = cand.target

        def f(theta):
            p, v = _split(model, theta, data)
            return fn(SimpleNamespace(**p), SimpleNamespace(**v))

        return f
    from torch.func import functional_call

    def g(theta):
        p, v = _split(model, theta, data)
        return functional_call(cand, p, args=(), kwargs=v)

    return g


def torch_gradcheck(kind: str, make, model, theta: np.ndarray, data: np.ndarray, dtype: str) -> tuple[int, int, str]:
    """(points where gradcheck fails, points, first error text) with gradcheck's defaults."""
    dt = getattr(torch, dtype)
    failed, note = 0, ""
    cand = make()
    for th_row, da_row in zip(theta, data):
        th = torch.tensor(th_row, dtype=dt, requires_grad=True)
        da = torch.tensor(da_row, dtype=dt)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ok = torch.autograd.gradcheck(loss_function(kind, cand, model, da), (th,), raise_exception=False)
        except Exception as err:  # gradcheck raises some failures even with raise_exception=False
            ok = False
            note = note or f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"
        failed += not ok
    return failed, len(theta), note


# ------------------------------------------------------------ part 1: the table


def _lab_verdict(report) -> str:
    if report.ok:
        return "passes"
    who = ", ".join(report.at_fault)
    return f"caught, blames {who}" if report.at_fault == ["candidate"] else f"**blames {who}**"


def run_mutants(pattern: str | None, cap: int | None, progress=print, seed: int = 0):
    rows = []
    for m in mc.MUTANTS:
        if pattern and not any(fnmatch.fnmatchcase(m.name, p) for p in pattern.split(",")):
            continue
        if seed:  # other random points for every mutant (--seed): the verdicts must not depend on them
            m = dataclasses.replace(m, seed=m.seed + seed)
        t0 = time.perf_counter()
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            buggy, twin = m.run("buggy"), m.run("correct")
        model = m.get_model()
        theta, data = mutant_batch(m, cap)
        tg_b = torch_gradcheck(m.kind, m.buggy, model, theta, data, m.dtype)
        tg_c = torch_gradcheck(m.kind, m.correct, model, theta, data, m.dtype)
        row = dict(
            name=m.name, kind=m.kind, model=model.name + (f" {dict(m.options)}" if m.options else ""),
            dtype=m.dtype, description=m.description, region=m.region,
            lab_bug=_lab_verdict(buggy), lab_bug_ok=buggy.at_fault == ["candidate"],
            lab_twin=_lab_verdict(twin), lab_twin_ok=twin.ok,
            lab_points=buggy.random_points + len(buggy.data_points),
            tg_bug=tg_b, tg_twin=tg_c, seconds=time.perf_counter() - t0,
        )
        rows.append(row)
        progress(f"{m.name:40} lab: {row['lab_bug']:28} twin {row['lab_twin']:12} | gradcheck: "
                 f"bug fails at {tg_b[0]}/{tg_b[1]}, twin at {tg_c[0]}/{tg_c[1]} {tg_b[2] or tg_c[2]}")
    return rows


def _tg(t) -> str:
    failed, n, note = t
    return f"fails at {failed}/{n}" + (f" ({note})" if note else "") if failed else f"passes ({n})"


def mutants_markdown(rows) -> str:
    n = len(rows)
    caught = sum(r["lab_bug_ok"] for r in rows)
    twins = sum(r["lab_twin_ok"] for r in rows)
    tg_caught = sum(bool(r["tg_bug"][0]) for r in rows)
    tg_false = sum(bool(r["tg_twin"][0]) for r in rows)
    lines = [
        "## Mutants",
        "",
        f"{n} mutants (tests/mutants.py). gradcheck_lab catches **{caught}/{n}** with only the candidate "
        f"blamed, and passes **{twins}/{n}** correct twins. `torch.autograd.gradcheck` (its defaults, the same "
        f"points) fails on {tg_caught}/{n} mutants and on {tg_false}/{n} correct twins (false alarms).",
        "",
        "gradcheck compares a function's backward with finite differences of *the same function*, at a "
        "relative 1e-3: a torch_loss or module whose forward itself differs from the model (a label off by one, "
        "W.T for W, a mean for a sum, the 1/2 convention, another activation) is self-consistent and passes, and "
        "so does a relative error below 1e-3; in float32 its finite differences fail correct code too. "
        "gradcheck_lab compares with the model's exact derivative. A region-only bug is caught by either check "
        "only where the points reach the region. Verdicts in **bold** break the requirement (the mutant caught "
        "with only the candidate blamed, the twin passing).",
        "",
        "| mutant | kind | model | dtype | bug | gradcheck_lab: mutant | twin | torch gradcheck: mutant | twin |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['name']}` | {r['kind']} | {r['model']} | {r['dtype']} | {r['description']} | "
            f"{r['lab_bug'] if r['lab_bug_ok'] else '**' + r['lab_bug'].strip('*') + '**'} | "
            f"{r['lab_twin'] if r['lab_twin_ok'] else '**' + r['lab_twin'].strip('*') + '**'} | "
            f"{_tg(r['tg_bug'])} | {_tg(r['tg_twin'])} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------ part 2: detection limits


def detection_limits(n: int, tg_points: int, progress=print):
    """rel -> column -> (points blamed, points, only the candidate blamed)."""
    table, columns = {}, []
    for name in mc.GRADS:
        model = get_model(name)
        variants = [
            (f"{name} fn float64", "float64", lambda rel, n=name: mc.scaled_grad(n, rel)),
            (f"{name} torch_loss float64", "float64", lambda rel, n=name: mc.scaled_torch_loss(n, rel)),
            (f"{name} torch_loss float32", "float32", lambda rel, n=name: mc.scaled_torch_loss(n, rel)),
        ]
        for col, dtype, make in variants:
            columns.append(col)
            for rel in RELS:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rep = verify(model, points=[], random=n, seed=1, dtype=dtype, candidate=make(rel))
                table.setdefault(rel, {})[col] = (
                    rep.mismatches.get("candidate", 0), rep.random_points, rep.at_fault in ([], ["candidate"])
                )
            progress(f"{col}: " + " ".join(f"{rel:.0e}:{table[rel][col][0]}" for rel in RELS))
        col = f"{name}: torch gradcheck float64"
        columns.append(col)
        sample = model.sample(tg_points, seed=1)
        for rel in RELS:
            failed, total, _ = torch_gradcheck(
                "torch_loss", lambda rel=rel, n=name: mc.scaled_torch_loss(n, rel),
                model, sample.theta, sample.data, "float64",
            )
            table[rel][col] = (failed, total, True)
        progress(f"{col}: " + " ".join(f"{rel:.0e}:{table[rel][col][0]}" for rel in RELS))
    return columns, table


def limits_markdown(columns, table, n) -> str:
    def smallest(col):
        caught = [rel for rel in RELS if table[rel][col][0]]
        return f"{min(caught):.0e}" if caught else "none"

    lines = [
        "## Detection limits",
        "",
        f"Every gradient multiplied by `1 + rel`, at {n} random points (seed 1) of each model's sampling domain. "
        "A cell is the number of points where the candidate is blamed (a `!` marks a run that blamed an engine "
        "too); the last column, the smallest relative error caught. torch gradcheck (defaults: eps 1e-6, atol "
        "1e-5, rtol 1e-3) runs on the same float64 torch_loss at the first points of the same sample.",
        "",
        "| candidate | " + " | ".join(f"{rel:.0e}" for rel in RELS) + " | smallest caught |",
        "|---|" + "---:|" * (len(RELS) + 1),
    ]
    for col in columns:
        cells = []
        for rel in RELS:
            blamed, total, clean = table[rel][col]
            cells.append(f"{blamed}/{total}" + ("" if clean else " !"))
        lines.append(f"| {col} | " + " | ".join(cells) + f" | **{smallest(col)}** |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated globs over mutant names")
    ap.add_argument("--gradcheck-points", type=int, default=None,
                    help="at most this many points per mutant for torch gradcheck (default: all of the run's)")
    ap.add_argument("--limit-points", type=int, default=200, help="random points per detection-limit run")
    ap.add_argument("--limit-gradcheck-points", type=int, default=50)
    ap.add_argument("--skip-limits", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="do not rewrite docs/reliability.md")
    ap.add_argument("--seed", type=int, default=0, help="added to every mutant's seed (other random points)")
    args = ap.parse_args(argv)
    if args.seed < 0:
        ap.error(f"expected --seed to be a non-negative integer but got {args.seed}")
    started = time.perf_counter()
    rows = run_mutants(args.only, args.gradcheck_points, seed=args.seed)
    body = [mutants_markdown(rows)]
    if not args.skip_limits:
        columns, table = detection_limits(args.limit_points, args.limit_gradcheck_points)
        body.append(limits_markdown(columns, table, args.limit_points))
    command = "benchmarks/mutants.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"Written by `{command.strip()}` ({time.strftime('%Y-%m-%d')}, "
            f"{time.perf_counter() - started:.0f} s).\n\n" + "\n\n".join(body))
    if not args.no_write:
        sweep.write_section("mutants", text)
        print(f"wrote the Mutants and Detection limits sections of {sweep.DOC.relative_to(sweep.ROOT)}")
    else:
        print(text)
    bad = [r["name"] for r in rows if not (r["lab_bug_ok"] and r["lab_twin_ok"])]
    if bad:
        print(f"not as required (mutant caught with only the candidate blamed, twin passing): {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
