"""The honest benchmark: gradcheck_lab against the anchors at their best, in one run.

Writes the tables of docs/performance.md (between ``<!-- bench:start -->`` and
``<!-- bench:end -->``) and the speed table of README.md (between
``<!-- speed:start -->`` and ``<!-- speed:end -->``)::

    make bench                       # installs numdifftools and jax, then runs this
    .venv/bin/python benchmarks/bench.py [--quick] [--no-write]

A "point" is one complete check of every parameter of one sample.

* gradcheck_lab: ``verify(model, points=[], random=N)`` in a fresh process
  per run (so the peak RSS is that run's), warm (the model compiled by a
  first small call in the same process), with the full tolerance model of
  Note [Verdict]: screening, and the referee plus Monte Carlo arithmetic
  wherever engines disagree.
* torch.autograd.gradcheck: one call per point on the loss as a function of
  the parameters (float64), both its default mode and ``fast_mode=True``.
* numdifftools.Gradient: one call per point (Richardson, its defaults).
* jax.test_util.check_grads: order 1, modes fwd+rev, on a ``jax.jit``-compiled
  loss (compiled once, outside the timing), when jax is installed.

The anchors are per-point loops whose cost per point does not depend on N:
they are timed on ``--anchor-points`` points (best of 3) and their rate is
compared with ours at every N. The machine has 2 noisy cores: compare ratios
within one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [
    ("quadratic", {}, [1_000, 10_000, 100_000, 1_000_000]),
    ("mlp", {"H": 8}, [1_000, 10_000, 100_000, 1_000_000]),
    ("mlp", {"H": 64}, [1_000, 10_000]),
]
QUICK = [
    ("quadratic", {}, [1_000, 10_000]),
    ("mlp", {"H": 8}, [1_000, 10_000]),
    ("mlp", {"H": 64}, [1_000]),
]

_CHILD = r"""
import json, sys, time
from gradcheck_lab import get_model, verify
name, opts, n, kind = json.loads(sys.argv[1])
m = get_model(name, **opts)
cand = None
if kind != "plain":
    from gradcheck_lab.candidates import torch_loss
    import torch
    factor = 1.0 + (1e-4 if kind == "wrong" else 0.0)
    ops_loss = m.loss
    from gradcheck_lab.ops import backend
    tops = backend("torch")

    class Scaled(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * factor

    def loss(p, v):
        names = [var.name for var in m.params]
        flat = torch.cat([getattr(p, k).reshape(-1) for k in names])
        flat = Scaled.apply(flat)
        data = torch.cat([getattr(v, var.name).reshape(-1) for var in m.data_vars])
        return ops_loss(tops, flat.__getitem__, data.__getitem__)

    cand = torch_loss(loss)
verify(m, points=[], random=64, candidate=cand)  # warm: compile once
t = time.perf_counter()
r = verify(m, points=[], random=n, candidate=cand)
dt = time.perf_counter() - t
# VmHWM, not getrusage's ru_maxrss: that one keeps the forking parent's peak across exec.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": dt, "ok": r.ok, "counts": r.counts, "rss_mib": hwm / 1024}))
"""


def child(name, opts, n, kind="plain") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps([name, opts, n, kind])],
        capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_of(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _torch_loss(model, data_row):
    import torch

    x, y = float(data_row[0]), float(data_row[1])
    if model.name == "mlp":
        H = model.options["H"]

        def f(theta):
            W1, b1, W2, b2 = theta[:H], theta[H : 2 * H], theta[2 * H : 3 * H], theta[3 * H]
            return ((W2 * torch.tanh(W1 * x + b1)).sum() + b2 - y) ** 2

        return f
    return lambda t: (t[0] * x**2 + t[1] * x + t[2] - y) ** 2


def _numpy_loss(model, data_row):
    x, y = float(data_row[0]), float(data_row[1])
    if model.name == "mlp":
        H = model.options["H"]

        def f(theta):
            W1, b1, W2, b2 = theta[:H], theta[H : 2 * H], theta[2 * H : 3 * H], theta[3 * H]
            return ((W2 * np.tanh(W1 * x + b1)).sum() + b2 - y) ** 2

        return f
    return lambda t: (t[0] * x**2 + t[1] * x + t[2] - y) ** 2


def anchors(model, n_anchor: int) -> dict:
    import torch

    torch.set_num_threads(1)
    batch = model.sample(n_anchor, seed=0, spread=False)
    out = {}

    def run_torch(fast):
        for i in range(n_anchor):
            theta = torch.tensor(batch.theta[i], dtype=torch.float64, requires_grad=True)
            torch.autograd.gradcheck(_torch_loss(model, batch.data[i]), (theta,), fast_mode=fast)

    out["torch gradcheck"] = n_anchor / best_of(lambda: run_torch(False))
    out["torch gradcheck fast_mode"] = n_anchor / best_of(lambda: run_torch(True))
    try:
        import numdifftools as nd

        def run_nd():
            for i in range(n_anchor):
                nd.Gradient(_numpy_loss(model, batch.data[i]))(batch.theta[i])

        out["numdifftools"] = n_anchor / best_of(run_nd)
    except ImportError:
        pass
    try:
        import jax
        import jax.numpy as jnp
        from jax.test_util import check_grads

        jax.config.update("jax_enable_x64", True)
        if model.name == "mlp":
            H = model.options["H"]

            def jloss(theta, x, y):
                W1, b1, W2, b2 = theta[:H], theta[H : 2 * H], theta[2 * H : 3 * H], theta[3 * H]
                return ((W2 * jnp.tanh(W1 * x + b1)).sum() + b2 - y) ** 2
        else:
            def jloss(theta, x, y):
                return (theta[0] * x**2 + theta[1] * x + theta[2] - y) ** 2

        jl = jax.jit(jloss)
        thetas = [jnp.asarray(t) for t in batch.theta]
        xs = [(jnp.asarray(d[0]), jnp.asarray(d[1])) for d in batch.data]
        check_grads(lambda t: jl(t, *xs[0]), (thetas[0],), order=1)  # compile outside the timing

        def run_jax():
            for i in range(n_anchor):
                x, y = xs[i]
                check_grads(lambda t, x=x, y=y: jl(t, x, y), (thetas[i],), order=1)

        out["jax check_grads (jit)"] = n_anchor / best_of(run_jax)
    except ImportError:
        pass
    return out


def cold(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gradcheck_lab", *cmd], capture_output=True, check=False)
    return time.perf_counter() - t


def one_point_ms() -> float:
    from gradcheck_lab import get_model, verify

    m = get_model("mlp", H=8)
    pt = [{"x": 0.5, "y": 0.1}]
    verify(m, points=pt, random=0)
    return 1000 * best_of(lambda: [verify(m, points=pt, random=0) for _ in range(20)]) / 20


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller N (a smoke run)")
    ap.add_argument("--anchor-points", type=int, default=200)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    from gradcheck_lab import __version__, get_model

    configs = QUICK if args.quick else CONFIGS
    lines = []
    readme_rows = []
    for name, opts, ns in configs:
        model = get_model(name, **opts)
        label = f"{name}" + (f" H={opts['H']}" if opts else "") + f" ({model.n_params} parameters)"
        n_anchor = max(10, args.anchor_points // (1 if model.n_params < 50 else 5))
        anc = anchors(model, n_anchor)
        print(label, {k: round(v) for k, v in anc.items()}, flush=True)
        lines.append(f"\n### {label}\n")
        lines.append("| N | gradcheck_lab points/s | peak RSS (MiB) | " + " | ".join(f"÷ {k}" for k in anc) + " |")
        lines.append("|---:|---:|---:|" + "---:|" * len(anc))
        best = None
        for n in ns:
            r = child(name, opts, n)
            rate = n / r["seconds"]
            print(f"  N={n}: {rate:,.0f} points/s, {r['rss_mib']:.0f} MiB, ok={r['ok']}", flush=True)
            ratios = " | ".join(f"x{rate / v:,.0f}" for v in anc.values())
            lines.append(f"| {n:,} | {_fmt(rate)} | {r['rss_mib']:.0f} | {ratios} |")
            best = (n, rate, r["rss_mib"])
        n_fail = min(ns[-1], 10_000)
        good, bad = child(name, opts, n_fail, "correct"), child(name, opts, n_fail, "wrong")
        lines.append(
            f"\nFailing path, N={n_fail:,} with a torch candidate: correct {good['seconds']:.2f} s, "
            f"off by 1e-4 {bad['seconds']:.2f} s (x{bad['seconds'] / good['seconds']:.2f}); "
            f"verdicts {'pass' if good['ok'] else 'FAIL'} / {'fail' if not bad['ok'] else 'PASS'}.\n"
        )
        anchors_text = " / ".join(f"{_fmt(v)} (x{best[1] / v:,.0f})" for v in anc.values())
        readme_rows.append(f"| {label} | {_fmt(best[1])} at N={best[0]:,} | {anchors_text} |")

    cold_verify = cold(["verify", "mlp", "--hidden", "256", "--points", "1000", "--quiet"])
    cold_derive = cold(["derive", "mlp", "--hidden", "256"])
    one = one_point_ms()
    print(f"cold verify mlp H=256: {cold_verify:.1f} s; derive: {cold_derive:.1f} s; one point: {one:.1f} ms")
    head = [
        f"Measured by `benchmarks/bench.py` on {platform.machine()} ({os.cpu_count()} cores), "
        f"gradcheck_lab {__version__}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}; anchor columns are ours ÷ theirs in points/s (theirs timed on "
        f"{args.anchor_points} points, best of 3; {'quick run' if args.quick else 'full run'}).",
        "",
        f"- Cold `gradcheck-lab verify mlp --hidden 256 --points 1000`: {cold_verify:.1f} s (a fresh process: imports, derivation, compile, check).",
        f"- Cold `gradcheck-lab derive mlp --hidden 256`: {cold_derive:.1f} s.",
        f"- One explicit point per `verify` call, warm, mlp H=8: {one:.1f} ms.",
    ]
    text = "\n".join(head + lines)
    print(text)
    if args.no_write:
        return
    _replace(ROOT / "docs" / "performance.md", "bench", text)
    readme = ["| model (parameters) | gradcheck_lab | " + " / ".join(anc) + " |", "|---|---:|---|", *readme_rows]
    _replace(ROOT / "README.md", "speed", "\n".join(readme))


def _replace(path: Path, tag: str, text: str) -> None:
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{start}\n{text}\n{end}"
    if start in old and end in old:
        new = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, old, flags=re.S)
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new, encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
