"""The drop-in as a test suite uses it, beside torch.autograd.gradcheck in the same process.

    .venv/bin/python benchmarks/dropin_edge.py

Cases: a Function with a NumPy forward, an opaque custom_op, a module at real
size (Linear(32, 32) + tanh on a 32x32 input: 1,024 input elements) and 50
distinct small functions. Each correct case and its twin whose backward is off
by 1e-6 (relative, float64), ours beside torch's default and ``fast_mode``.
Prints verdicts, times, RSS growth over the 50 functions and what reached stderr.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

from gradcheck_lab import gradcheck


def scaled(fn, err):
    class Scaled(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y):
            return y.clone()

        @staticmethod
        def backward(ctx, g):
            return g * (1 + err)

    return lambda *a: Scaled.apply(fn(*a))


def np_tanh(err):
    class NpTanh(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.from_numpy(np.tanh(x.detach().numpy()))
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * (1 - y * y) * (1 + err)

    return NpTanh.apply


def custom_op(err, tag):
    @torch.library.custom_op(f"gcl_bench::np_sin_{tag}", mutates_args=())
    def op(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.sin(x.numpy()))

    op.register_fake(lambda x: torch.empty_like(x))
    op.register_autograd(lambda ctx, g: g * ctx.x.cos() * (1 + err),
                         setup_context=lambda ctx, inputs, output: setattr(ctx, "x", inputs[0]))
    return op


def timed(check, f, inputs, **kw):
    t = time.perf_counter()
    try:
        out = check(f, inputs, **kw)
    except Exception as exc:  # noqa: BLE001 - a failing check is a result here
        out = type(exc).__name__
    return out, time.perf_counter() - t


def _small(act, c):
    """One distinct small function: ``(c * act(t @ w)).sum(-1)``."""
    return lambda t, w: (c * act(t @ w)).sum(-1)


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    warnings.simplefilter("ignore")
    err_file = tempfile.TemporaryFile(mode="w+")
    saved = os.dup(2)
    os.dup2(err_file.fileno(), 2)  # what reaches stderr, C++ included
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    big = torch.randn(32, 32, generator=g, dtype=torch.float64, requires_grad=True)
    layer = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Tanh()).double()
    rows = []
    cases = [
        ("NumPy forward", np_tanh(0.0), np_tanh(1e-6), (x,)),
        ("custom_op", custom_op(0.0, "a"), custom_op(1e-6, "b"), (x,)),
        ("Linear(32,32)+tanh, 32x32", layer, scaled(layer, 1e-6), (big,)),
    ]
    for name, good, bad, inputs in cases:
        for label, f in (("correct", good), ("1e-6 twin", bad)):
            ours = timed(gradcheck, f, inputs)
            theirs = timed(torch.autograd.gradcheck, f, inputs)
            fast = timed(torch.autograd.gradcheck, f, inputs, fast_mode=True)
            rows.append((name, label, ours, theirs, fast))
    acts = [torch.tanh, torch.sigmoid, torch.sin, torch.nn.functional.softplus, torch.exp]
    ours_t = torch_t = 0.0
    base = rss_mib()
    fails = 0
    for k in range(50):
        f = _small(acts[k % 5], 0.5 + k / 50)
        xs = (torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True),
              torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True))
        out, t = timed(gradcheck, f, xs)
        ours_t += t
        fails += out is not True
        _, t = timed(torch.autograd.gradcheck, f, xs)
        torch_t += t
    growth = rss_mib() - base
    os.dup2(saved, 2)
    err_file.seek(0)
    stderr = [line for line in err_file.read().splitlines() if line.strip()]
    print("| case | backward | ours | torch default | torch fast_mode |")
    print("|---|---|---|---|---|")
    for name, label, (o, to), (t, tt), (f, tf) in rows:
        print(f"| {name} | {label} | {o} {to:.2f} s | {t} {tt:.3f} s | {f} {tf:.3f} s |")
    print(f"\n50 distinct small functions: ours {ours_t:.1f} s, torch {torch_t:.2f} s ({ours_t / torch_t:.0f}x); "
          f"{fails} not passed; RSS growth {growth:.1f} MiB ({growth / 50:.2f} MiB per function); "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"lines on stderr: {len(stderr)}", *stderr[:5], sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
