"""Points checked per second: gradcheck_lab against the anchors, in one run.

A "point" is one full gradient check of one sample at one parameter vector.

* gradcheck_lab: ``verify(model, points=[], random=N)`` -- symbolic, autograd,
  Richardson finite differences, the precision probes, and the referee
  wherever engines disagree (warm: the model's SymPy compile is cached, as
  in any run after the first point).
* torch.autograd.gradcheck: one call per point on the loss as a function of
  the parameters (float64, its default eps 1e-6, atol 1e-5, rtol 1e-3).
* numdifftools.Gradient: one call per point (Richardson, its defaults).
* jax.test_util.check_grads (if jax is installed): order 1, modes fwd+rev.

    python benchmarks/speed.py [--points 2000]

Ratios are ours / anchor; this machine has 2 noisy cores, so each timing is
the best of 3 repeats.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gradcheck_lab import get_model, verify
from gradcheck_lab.ops import backend


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def torch_loss_fn(model, data_row):
    """The loss as a user of the anchor would write it: vectorised where it can be."""
    x, y = float(data_row[0]), float(data_row[1])
    if model.name == "mlp":
        H = model.options["H"]

        def f(theta):
            W1, b1, W2, b2 = theta[:H], theta[H : 2 * H], theta[2 * H : 3 * H], theta[3 * H]
            return ((W2 * torch.tanh(W1 * x + b1)).sum() + b2 - y) ** 2

        return f
    ops = backend("torch")
    data = torch.tensor(data_row, dtype=torch.float64)
    return lambda theta: model.loss(ops, theta.__getitem__, data.__getitem__)


def numpy_loss_fn(model, data_row):
    x, y = float(data_row[0]), float(data_row[1])
    if model.name == "mlp":
        H = model.options["H"]

        def f(theta):
            W1, b1, W2, b2 = theta[:H], theta[H : 2 * H], theta[2 * H : 3 * H], theta[3 * H]
            return float(((W2 * np.tanh(W1 * x + b1)).sum() + b2 - y) ** 2)

        return f
    ops = backend("numpy")
    cols = [np.float64(v) for v in data_row]
    return lambda theta: float(model.loss(ops, theta.__getitem__, cols.__getitem__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import numdifftools as nd

    try:
        import jax
        import jax.numpy as jnp
        from jax.test_util import check_grads

        jax.config.update("jax_enable_x64", True)
    except ImportError:
        jax = None

    rows = []
    for name, opts, n_anchor in [("quadratic", {}, 300), ("mlp", {"H": 8}, 100), ("mlp", {"H": 64}, 20)]:
        model = get_model(name, **opts)
        n = args.points
        verify(model, points=[], random=10)  # compile once (cached on the model)
        ours = n / best_of(lambda: verify(model, points=[], random=n))
        batch = model.sample(n_anchor, seed=0)

        def run_torch():
            for i in range(n_anchor):
                theta = torch.tensor(batch.theta[i], dtype=torch.float64, requires_grad=True)
                torch.autograd.gradcheck(torch_loss_fn(model, batch.data[i]), (theta,))

        def run_nd():
            for i in range(n_anchor):
                nd.Gradient(numpy_loss_fn(model, batch.data[i]))(batch.theta[i])

        tg = n_anchor / best_of(run_torch)
        ndg = n_anchor / best_of(run_nd)
        row = {"model": f"{name}{opts or ''} ({model.n_params} params)", "ours": ours, "torch": tg, "nd": ndg}
        if jax is not None and name == "quadratic":
            def jloss(theta, x, y):
                return (theta[0] * x**2 + theta[1] * x + theta[2] - y) ** 2

            def run_jax():
                for i in range(n_anchor):
                    x, y = batch.data[i]
                    check_grads(lambda t: jloss(t, x, y), (jnp.asarray(batch.theta[i]),), order=1)

            run_jax()
            row["jax"] = n_anchor / best_of(run_jax)
        rows.append(row)

    print(f"{'model':32} {'gradcheck_lab':>14} {'torch gradcheck':>16} {'numdifftools':>13} {'jax check_grads':>16}   ratios (ours/anchor)")
    for r in rows:
        jx = f"{r['jax']:16,.0f}" if "jax" in r else f"{'-':>16}"
        ratios = f"x{r['ours'] / r['torch']:.0f} torch, x{r['ours'] / r['nd']:.0f} numdifftools"
        if "jax" in r:
            ratios += f", x{r['ours'] / r['jax']:.0f} jax"
        print(f"{r['model']:32} {r['ours']:14,.0f} {r['torch']:16,.0f} {r['nd']:13,.0f} {jx}   {ratios}")
    print("points/s, best of 3; torch", torch.__version__, "numdifftools", nd.__version__, "jax", getattr(jax, "__version__", "not installed"))


if __name__ == "__main__":
    main()
