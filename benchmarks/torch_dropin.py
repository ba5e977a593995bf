"""gradcheck_lab.gradcheck against torch.autograd.gradcheck: warm and first-call cost.

    PYTHONPATH=src python benchmarks/torch_dropin.py

Warm: the same function called again on new 3x4 inputs (graph and derivations cached),
median of REPEAT calls, beside torch.autograd.gradcheck on the same function and inputs
(float64). First call: a function never seen in this process (imports already done), on
inputs of up to 100 elements. Figures are quoted in docs/torch.md.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "examples"))
import custom_functions as cf  # noqa: E402

from gradcheck_lab import gradcheck  # noqa: E402

REPEAT = 5


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    warnings.simplefilter("ignore")
    gradcheck(lambda t: t * 2, (rand(2),))  # imports, make_fx warm-up
    print("warm repeated call, 3x4 input (s, median of 5): ours, torch, ratio")
    for name, fn in (("Exp", cf.Exp.apply), ("Swish", cf.Swish.apply), ("LayerNorm", cf.LayerNorm.apply)):
        gradcheck(fn, (rand(3, 4),))
        ours = statistics.median(timed(lambda s=s, fn=fn: gradcheck(fn, (rand(3, 4, seed=s),))) for s in range(REPEAT))
        theirs = statistics.median(
            timed(lambda s=s, fn=fn: torch.autograd.gradcheck(fn, (rand(3, 4, seed=s),))) for s in range(REPEAT)
        )
        print(f"  {name:10} {ours:.4f} {theirs:.4f} {ours / theirs:.1f}x")
    print("first call (new graph), s")
    cases = {
        "Exp 10x10 (100)": (cf.Exp.apply, lambda: (rand(10, 10),)),
        "Swish 10x10 (100)": (cf.Swish.apply, lambda: (rand(10, 10),)),
        "MatMul 5x5 @ 5x5 (50)": (cf.MatMul.apply, lambda: (rand(5, 5), rand(5, 5, seed=1))),
        "LinearFunction 8x5, 4x5, 4 (64)": (cf.LinearFunction.apply, lambda: (rand(8, 5), rand(4, 5, seed=1), rand(4, seed=2))),
        "LayerNorm 3x5 (15)": (cf.LayerNorm.apply, lambda: (rand(3, 5),)),
        "LayerNorm 5x8 (40)": (cf.LayerNorm.apply, lambda: (rand(5, 8),)),
    }
    for name, (fn, make) in cases.items():
        print(f"  {name:34} {timed(lambda fn=fn, make=make: gradcheck(fn, make())):.2f}")


if __name__ == "__main__":
    main()
