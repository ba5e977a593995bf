"""Cost of the certified referee (Note [Certified referee]) per catalog model.

For each model: the cold cost (SymPy's derivative program, then our code
generation), the per-point cost of :func:`certify` on random points (uniform
in the sampling domain) and on spread-magnitude points (log-uniform up to each
variable's ``max_abs``, both signs), and how often precision had to rise
beyond the first 128 bits. Run::

    PYTHONPATH=src python benchmarks/referee.py            # the table
    PYTHONPATH=src python benchmarks/referee.py --points 50 --wide   # adds mlp H=256 cold start
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from gradcheck_lab.catalog import ACTIVATIONS, get_model
from gradcheck_lab.engines import referee
from gradcheck_lab.engines.symbolic import derivative_program
from gradcheck_lab.model import Batch

REPEATS = 3


def spread(model, n: int, seed: int) -> Batch:
    """Points with magnitudes log-uniform in [1e-3, max_abs] and both signs (binary/class kept)."""
    rng = np.random.default_rng(seed)
    b = model.sample(n, seed=seed)
    theta, data = b.theta.copy(), b.data.copy()
    col = 0
    for var in model.params:
        k = var.size
        mag = 10 ** rng.uniform(-3, np.log10(var.max_abs), (n, k))
        theta[:, col : col + k] = mag * rng.choice([-1.0, 1.0], (n, k))
        col += k
    col = 0
    for var in model.data_vars:
        k = var.size
        if var.kind == "real":
            mag = 10 ** rng.uniform(-3, np.log10(var.max_abs), (n, k))
            data[:, col : col + k] = mag * rng.choice([-1.0, 1.0], (n, k))
        col += k
    return Batch(theta, data)


def row(label: str, model, n: int) -> str:
    t0 = time.perf_counter()
    derivative_program(model)
    t1 = time.perf_counter()
    referee._compiled(model)
    t2 = time.perf_counter()
    cells = []
    escalated = 0
    statuses = np.zeros(5, dtype=int)
    for _kind, batch in (("uniform", model.sample(n, seed=1)), ("spread", spread(model, n, seed=2))):
        best = math.inf
        for _ in range(REPEATS):  # best of REPEATS: the machine is shared
            t = time.perf_counter()
            ex = referee.certify(model, batch)
            best = min(best, time.perf_counter() - t)
        cells.append(best / n * 1e3)
        escalated += int((ex.bits > referee.START_BITS).sum())
        statuses += np.bincount(ex.status.ravel(), minlength=5)
    st = " ".join(f"{referee.STATUS_NAMES[k][:4]}={statuses[k]}" for k in range(5) if statuses[k])
    return (
        f"{label:<28} {model.n_params if hasattr(model, 'n_params') else len(model.param_labels):>6} "
        f"{t1 - t0:>9.2f} {t2 - t1:>9.3f} {cells[0]:>10.3f} {cells[1]:>10.3f} {escalated:>5}/{2 * n:<5} {st}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100, help="points per sampling (default 100)")
    ap.add_argument("--wide", action="store_true", help="also mlp H=64 and H=256 (cold start dominated)")
    args = ap.parse_args()
    configs = [(name, {}) for name in ("linear", "affine", "quadratic", "logistic")]
    configs += [("mlp", {"activation": a}) for a in ACTIVATIONS]
    configs += [("softmax", {}), ("softmax", {"d": 4, "K": 5})]
    configs += [("mlp", {"H": 64})]
    if args.wide:
        configs += [("mlp", {"H": 256})]
    print(f"{'model':<28} {'params':>6} {'program s':>9} {'codegen s':>9} {'ms/pt unif':>10} "
          f"{'ms/pt sprd':>10} {'>128 bits':>11} statuses")
    for name, kw in configs:
        n = args.points if kw.get("H", 8) <= 64 else max(10, args.points // 10)
        label = name + ("" if not kw else str(kw).replace(" ", ""))
        print(row(label, get_model(name, **kw), n), flush=True)
    print(f"{args.points} points per sampling, best of 3; 2-core machine; program s = SymPy's derivative_program (shared "
          "with the symbolic engine), codegen s = the referee's own compile")
    escalation(args.points)


def escalation(n: int) -> None:
    """Precision needed by BCE of sigmoid(w*x + b) at saturated logits (1 - sigmoid(z) ~ exp(-z))."""
    from gradcheck_lab import Model

    m = Model.from_expr("sigmoid(w*x + b)", params="w,b", loss="bce")
    referee._compiled(m)  # compile outside the timing
    rng = np.random.default_rng(3)
    print("\nBCE of sigmoid(w*x + b), y = 0 and 1 alternately, logit z = b (x = 1, w = 0):")
    print(f"{'logits':<16} {'ms/pt':>8}  bits used (points)")
    for lo_, hi_ in ((1, 30), (30, 100), (100, 1000), (1000, 10000)):
        z = 10 ** rng.uniform(np.log10(lo_), np.log10(hi_), n)
        theta = np.stack([np.zeros(n), z], axis=1)
        data = np.stack([np.ones(n), np.arange(n) % 2], axis=1).astype(float)
        best = math.inf
        for _ in range(REPEATS):
            t = time.perf_counter()
            ex = referee.certify(m, Batch(theta, data))
            best = min(best, time.perf_counter() - t)
        ms = best / n * 1e3
        used = dict(zip(*np.unique(ex.bits, return_counts=True)))
        cert = int((ex.status == referee.CERTIFIED).sum())
        print(f"{f'{lo_}..{hi_}':<16} {ms:>8.3f}  " + ", ".join(f"{b}: {c}" for b, c in used.items())
              + f"  (certified {cert}/{2 * n})")


if __name__ == "__main__":
    main()
