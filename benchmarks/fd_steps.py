"""Sweep the finite-difference step rule (Note [Step rule]) against the referee.

For each base step H0 and ladder length K: the median and worst relative
error of the Richardson estimate, and the worst ratio of the actual error to
the engine's own error estimate (coverage: below 1 means the error bar held).

    python benchmarks/fd_steps.py [--points 300]
"""

from __future__ import annotations

import argparse

import numpy as np

from gradcheck_lab.catalog import get_model
from gradcheck_lab.engines import finite_diff, referee

MODELS = [("quadratic", {}), ("logistic", {}), ("mlp", {}), ("mlp", {"activation": "sigmoid"}), ("softmax", {"d": 4, "K": 5})]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=300)
    args = ap.parse_args()
    cases = []
    for name, opts in MODELS:
        m = get_model(name, **opts)
        b = m.sample(args.points, seed=2)
        cases.append((m, b, referee.gradients(m, b)))
    print(f"{'H0':>6} {'K':>2} {'median rel':>11} {'worst rel':>10} {'worst err/estimate':>19}")
    for k in (3, 4, 5):
        for e in (2, 3, 4, 5, 6, 7, 8, 10):
            finite_diff.H0, finite_diff.K = 2.0**-e, k
            rels, cover = [], []
            for m, b, exact in cases:
                fd = finite_diff.gradients(m, b)
                err = np.abs(fd.values - exact)
                rels.append((err / np.maximum(np.abs(exact), 1e-12)).ravel())
                cover.append((err / np.maximum(fd.error, 1e-300)).ravel())
            rel, cov = np.concatenate(rels), np.concatenate(cover)
            print(f"2^-{e:<3} {k:2d} {np.median(rel):11.1e} {rel.max():10.1e} {cov.max():19.2f}")


if __name__ == "__main__":
    main()
