"""How well Monte Carlo arithmetic measures each engine's own rounding (sets OWN_SAFETY).

For every configuration and point, each engine's value is compared with the
certified exact value, and the error is divided by the engine's own-rounding
estimate (Note [Own rounding]). Only components where the error exceeds the
screening tolerance count: those are the ones the estimate decides. The
largest ratio must stay below ``tolerance.OWN_SAFETY``::

    .venv/bin/python benchmarks/own_rounding.py [--points 2000]
"""

from __future__ import annotations

import argparse

import numpy as np

from gradcheck_lab import Model, get_model
from gradcheck_lab.compare import _own_rounding
from gradcheck_lab.engines import engine, referee
from gradcheck_lab.tolerance import OWN_SAFETY, engine_tolerance, rounding_scale

CONFIGS = [
    ("sigmoid(w*x+b)", lambda: Model.from_expr("sigmoid(w*x + b)", params="w,b")),
    ("tanh 2 inputs", lambda: Model.from_expr("tanh(w1*x1 + w2*x2 + b)", params="w1,w2,b", inputs="x1,x2")),
    ("bce", lambda: Model.from_expr("sigmoid(w*x + b)", params="w,b", loss="bce")),
    ("softplus", lambda: Model.from_expr("softplus(w*x + b)", params="w,b")),
    ("logistic", lambda: get_model("logistic")),
    ("mlp tanh", lambda: get_model("mlp", H=4)),
    ("mlp sigmoid", lambda: get_model("mlp", H=4, activation="sigmoid")),
    ("softmax", lambda: get_model("softmax")),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=2000)
    args = ap.parse_args()
    print(f"{'model':16} {'engine':10} {'judged':>7} {'worst err/own':>14} {'median':>8}")
    worst_all = 0.0
    for label, make in CONFIGS:
        m = make()
        b = m.sample(args.points, seed=11)
        # every point spread over magnitudes: where the engines lose digits
        b = type(b)(b.theta[7::8].repeat(8, axis=0)[: args.points], b.data[7::8].repeat(8, axis=0)[: args.points])
        cert = referee.certify(m, b)
        ok = cert.status == referee.CERTIFIED
        exact = np.where(ok, cert.value, np.nan)
        sym = engine("symbolic")(m, b)
        scale = rounding_scale(m, b, sym.values)
        for name in ("symbolic", "autograd"):
            res = sym if name == "symbolic" else engine("autograd")(m, b)
            with np.errstate(invalid="ignore"):
                dev = np.abs(res.values - exact)
                screened = ok & np.isfinite(res.values) & (dev > engine_tolerance("float64", scale))
            rows = np.flatnonzero(screened.any(axis=1))
            if not len(rows):
                print(f"{label:16} {name:10} {0:7d} {'-':>14} {'-':>8}")
                continue
            sub = b.take(rows)
            est = _own_rounding(name, m, sub, res, res.values[rows], dtype="float64")
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = (dev[rows] / est)[screened[rows] & np.isfinite(est) & (est > 0)]
            if ratio.size:
                worst_all = max(worst_all, float(ratio.max()))
                print(f"{label:16} {name:10} {ratio.size:7d} {ratio.max():14.3g} {np.median(ratio):8.3g}")
            else:
                print(f"{label:16} {name:10} {0:7d} {'(no finite estimate)':>14}")
    print(f"worst error / own-rounding estimate: {worst_all:.3g} (OWN_SAFETY = {OWN_SAFETY:g})")


if __name__ == "__main__":
    main()
