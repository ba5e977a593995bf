"""Measure the constants of Note [Tolerance model] and Note [FD error estimate].

For every catalog model: random points from the sampling domain, points with
magnitudes spread log-uniformly over 1e-3..max_abs, and cancellation points
(target set to the float64 prediction). The referee gives the exact
gradient; we report the worst ratio |g - exact| / (EPS[dtype] * M) per engine
and |fd - exact| / fd_error.

    python benchmarks/tolerance.py [--points 2000]
"""

from __future__ import annotations

import argparse

import numpy as np

from gradcheck_lab.catalog import get_model
from gradcheck_lab.engines import engine, referee
from gradcheck_lab.model import Batch
from gradcheck_lab.ops import backend
from gradcheck_lab.tolerance import EPS, fd_tolerance, rounding_scale

MODELS = [
    ("linear", {}), ("affine", {}), ("quadratic", {}), ("logistic", {}),
    ("mlp", {}), ("mlp", {"activation": "sigmoid"}), ("mlp", {"activation": "softplus"}),
    ("softmax", {}), ("softmax", {"d": 4, "K": 5}),
]


def spread(model, n, rng):
    """Magnitudes log-uniform in [1e-3, max_abs] with random signs."""
    def draw(var):
        if var.kind == "binary":
            return rng.integers(0, 2, (n, var.size)).astype(float)
        if var.kind == "class":
            return np.eye(var.shape[0])[rng.integers(0, var.shape[0], n)]
        mag = 10 ** rng.uniform(-3, np.log10(var.max_abs), (n, var.size))
        return mag * rng.choice([-1.0, 1.0], (n, var.size))
    return Batch(np.concatenate([draw(v) for v in model.params], 1), np.concatenate([draw(v) for v in model.data_vars], 1))


def cancel(model, batch):
    """Target := prediction (real scalar targets only)."""
    if model.target.kind != "real" or model.target.shape:
        return None
    th = [batch.theta[:, i] for i in range(batch.theta.shape[1])]
    da = [batch.data[:, j] for j in range(batch.data.shape[1])]
    pred = np.asarray(model.prediction(backend("numpy"), th.__getitem__, da.__getitem__))
    data = batch.data.copy()
    data[:, -1] = pred
    return Batch(batch.theta, data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'model':28} {'kind':8} {'sym64':>8} {'auto64':>8} {'auto32':>8} {'fd/tol':>8} {'fd rel':>9}")
    worst = {"sym64": 0, "auto64": 0, "auto32": 0, "fd": 0}
    for name, opts in MODELS:
        m = get_model(name, **opts)
        kinds = {"domain": m.sample(args.points, seed=1), "spread": spread(m, args.points, rng)}
        c = cancel(m, kinds["domain"])
        if c is not None:
            kinds["cancel"] = c
        for kind, b in kinds.items():
            exact = referee.gradients(m, b)
            sym = engine("symbolic")(m, b).values
            M = rounding_scale(m, b, sym)
            a64 = engine("autograd")(m, b).values
            a32 = engine("autograd")(m, b, dtype="float32").values
            fd = engine("finite_differences")(m, b)
            ok = np.isfinite(exact) & np.isfinite(M) & (M > 0)
            def r(g, eps, exact=exact, ok=ok, M=M):
                return float(np.max(np.abs(g - exact)[ok] / (eps * M[ok]), initial=0))
            row = {
                "sym64": r(sym, EPS["float64"]), "auto64": r(a64, EPS["float64"]),
                "auto32": r(a32, EPS["float32"]),
                "fd": float(np.max((np.abs(fd.values - exact) / np.maximum(fd_tolerance(fd.error, M), 1e-300))[ok & ~fd.kink], initial=0)),
            }
            fdrel = float(np.median(np.abs(fd.values - exact)[ok] / np.maximum(np.abs(exact[ok]), 1e-300)))
            for k in worst:
                worst[k] = max(worst[k], row[k])
            label = name + (str(opts) if opts else "")
            print(f"{label:28} {kind:8} {row['sym64']:8.2f} {row['auto64']:8.2f} {row['auto32']:8.2f} {row['fd']:8.3f} {fdrel:9.1e}")
    print("worst:", {k: round(v, 3) for k, v in worst.items()})


if __name__ == "__main__":
    main()
