"""Verdicts of gradcheck_lab and torch.autograd.gradcheck on the same cases.

Each case is a gradient that is right (a checker should pass it) or wrong (a
checker should fail it), checked at the same points by both:

* correct float32 autograd gradients of the quadratic and the mlp;
* relu at its kink (w*x + b == 0): the derivative does not exist, any
  subgradient is right;
* a custom autograd Function whose backward is off by 1e-4 relative,
  and one off by 3x.

    python benchmarks/anchors.py [--points 200]
"""

from __future__ import annotations

import argparse
import warnings

import torch

from gradcheck_lab import Model, get_model, verify
from gradcheck_lab.candidates import torch_loss
from gradcheck_lab.ops import backend


def scaled_square(factor):
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, r):
            ctx.save_for_backward(r)
            return r * r

        @staticmethod
        def backward(ctx, g):
            (r,) = ctx.saved_tensors
            return 2 * factor * g * r

    return Square


def torch_verdicts(loss_of_theta, thetas, dtype):
    """How many points torch.autograd.gradcheck passes."""
    passed = 0
    for th in thetas:
        t = torch.tensor(th, dtype=dtype, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                passed += bool(torch.autograd.gradcheck(loss_of_theta, (t,), raise_exception=False))
            except RuntimeError:
                pass
    return passed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=200)
    n = ap.parse_args().points
    ops = backend("torch")
    rows = []

    for name in ("quadratic", "mlp"):
        m = get_model(name)
        b = m.sample(n, seed=0)
        ours = n - verify(m, points=[], random=n, dtype="float32").mismatches["autograd"]
        def loss_at(i, m=m, b=b):
            d = torch.tensor(b.data[i], dtype=torch.float32)
            return lambda th: m.loss(ops, th.__getitem__, d.__getitem__)

        theirs = sum(torch_verdicts(loss_at(i), [b.theta[i]], torch.float32) for i in range(n))
        rows.append((f"{name}: correct float32 autograd", "pass", ours, theirs))

    relu = Model.from_function(lambda o, p, v: o.relu(p.w * v.x + p.b), params={"w": 0.0, "b": 0.0}, name="relu")
    pts = [{"x": float(x), "y": float(y)} for x, y in zip(torch.linspace(-2, 2, n).tolist(), torch.linspace(-1, 1, n).tolist())]
    rep = verify(relu, points=pts, random=0)
    ours = n - rep.mismatches["autograd"]
    theirs = sum(
        torch_verdicts(lambda th, p=p: (torch.relu(th[0] * p["x"] + th[1]) - p["y"]) ** 2, [[0.0, 0.0]], torch.float64)
        for p in pts
    )
    rows.append(("relu at its kink (w = b = 0)", "pass", ours, theirs))

    m = get_model("quadratic")
    b = m.sample(n, seed=1)
    for factor, label in ((1 + 1e-4, "backward off by 1e-4"), (3.0, "backward off by 3x")):
        sq = scaled_square(factor)
        cand = torch_loss(lambda p, v, sq=sq: sq.apply(p.w1 * v.x**2 + p.w2 * v.x + p.b - v.y))
        ours = n - verify(m, points=[], random=n, candidate=cand).mismatches["candidate"]
        theirs = sum(
            torch_verdicts(lambda th, x=b.data[i, 0], y=b.data[i, 1], sq=sq: sq.apply(th[0] * x**2 + th[1] * x + th[2] - y),
                           [b.theta[i]], torch.float64)
            for i in range(n)
        )
        rows.append((f"quadratic: {label}", "fail", ours, theirs))

    print(f"{'case':36} {'right answer':>12} {'gradcheck_lab passes':>21} {'torch gradcheck passes':>23}   (of {n})")
    for case, want, ours, theirs in rows:
        print(f"{case:36} {want:>12} {ours:21d} {theirs:23d}")


if __name__ == "__main__":
    main()
