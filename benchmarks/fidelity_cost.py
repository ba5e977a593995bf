"""What the trace-fidelity check (Note [Trace fidelity]) adds to a gradcheck call.

    .venv/bin/python benchmarks/fidelity_cost.py

Each function is checked warm (graph and derivations cached) on new inputs,
with the fidelity check and with it replaced by a no-op, alternately in one
loop; the median of REPEAT calls each. Printed as a Markdown table for
docs/torch.md ("The tracer's edge").
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "examples"))
import custom_functions as cf  # noqa: E402

from gradcheck_lab import fidelity, gradcheck  # noqa: E402

REPEAT = 11


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()


def main() -> int:
    real_check = fidelity.check
    cases = [
        ("Exp 3x4", cf.Exp.apply, (3, 4)),
        ("Swish 3x4", cf.Swish.apply, (3, 4)),
        ("LayerNorm 3x4", cf.LayerNorm.apply, (3, 4)),
        ("x * tanh(x) 16x64", lambda x: x * torch.tanh(x), (16, 64)),
    ]
    print("| function | with the fidelity check | without | added |")
    print("|---|---|---|---|")
    warnings.simplefilter("ignore")
    for name, fn, shape in cases:
        gradcheck(fn, (rand(*shape),), fast_mode=shape[0] > 3)
        on, off = [], []
        for s in range(REPEAT):
            for store, check in ((on, real_check), (off, lambda *a, **k: fidelity.Fidelity())):
                fidelity.check = check
                t = time.perf_counter()
                gradcheck(fn, (rand(*shape, seed=s),), fast_mode=shape[0] > 3)
                store.append(time.perf_counter() - t)
        fidelity.check = real_check
        a, b = statistics.median(on), statistics.median(off)
        print(f"| {name} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {(a - b) * 1e3:+.1f} ms ({(a - b) / b:+.0%}) |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
