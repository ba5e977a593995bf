"""Cold cost of deriving wide models (Note [Reverse-mode derivation]).

Each figure is a fresh Python process, as a user's first command would be:
``gradcheck-lab derive mlp --hidden H`` and ``gradcheck-lab verify mlp
--hidden H --points N`` (wall seconds, a time limit per run), then the
phases in one process (loss expression, derivation, closed forms, the
named shared form, NumPy compile, an mpmath compile of the same program as
the referee can read it, rendering ``derive``'s text), and the warm cost of
one point through the symbolic engine (mlp H = 8).

    python benchmarks/derive.py [--widths 8 64 256] [--points 1000] [--limit 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

PHASES = r"""
import sys, time
t = time.perf_counter()
import sympy
from gradcheck_lab import get_model
from gradcheck_lab.engines import symbolic
from gradcheck_lab.teaching import derive
out = {"import": time.perf_counter() - t}
def phase(name, f):
    t = time.perf_counter(); f(); out[name] = time.perf_counter() - t
m = get_model("mlp", H=int(sys.argv[1]))
phase("loss", lambda: (m.symbols(), m.loss_expr()))
phase("derivation", lambda: symbolic.derivative_program(m))
phase("closed forms", lambda: symbolic.derivatives(m))
phase("shared form", lambda: symbolic.shared_form(m))
phase("numpy compile", lambda: symbolic.compiled(m))
def mp():
    a, o = symbolic.derivative_program(m)
    th, da = m.symbols()
    sympy.lambdify([*th, *da], o, modules="mpmath", cse=lambda _: (a, o))
phase("mpmath compile", mp)
phase("derive text", lambda: derive(m).render("str"))
phase("again by name", lambda: symbolic.compiled(get_model("mlp", H=int(sys.argv[1]))))
print(" ".join(f"{k}={v:.3f}" for k, v in out.items()))
print("assignments", len(symbolic.derivative_program(m)[0]))
"""

WARM = r"""
import timeit
from gradcheck_lab import get_model
from gradcheck_lab.engines import symbolic
m = get_model("mlp", H=8)
b = m.sample(1, seed=0)
symbolic.gradients(m, b)
n = 2000
t = timeit.timeit(lambda: symbolic.gradients(m, b), number=n) / n
t2 = timeit.timeit(lambda: symbolic.gradients(get_model("mlp", H=8), b), number=n // 4) / (n // 4)
print(f"{t * 1e3:.3f} {t2 * 1e3:.3f}")
"""


def _run(argv: list[str], limit: float) -> tuple[float | None, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["src", os.environ.get("PYTHONPATH", "")]))
    t = time.perf_counter()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired:
        return None, ""
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return time.perf_counter() - t, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 64, 256])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--limit", type=float, default=300.0, help="seconds allowed per cold run")
    args = ap.parse_args()
    py = sys.executable
    fmt = lambda t: f"{t:.1f}" if t is not None else f"> {args.limit:.0f}"  # noqa: E731
    print(f"cold runs (wall s, fresh process; limit {args.limit:.0f} s)")
    print(f"{'H':>4} {'params':>6} {'derive':>8} {'verify':>8}")
    for h in args.widths:
        td, _ = _run([py, "-m", "gradcheck_lab", "derive", "mlp", "--hidden", str(h)], args.limit)
        tv, _ = _run(
            [py, "-m", "gradcheck_lab", "verify", "mlp", "--hidden", str(h), "--points", str(args.points)], args.limit
        )
        print(f"{h:>4} {3 * h + 1:>6} {fmt(td):>8} {fmt(tv):>8}", flush=True)
    print("\nphases in one process (s)")
    for h in args.widths:
        _, out = _run([py, "-c", PHASES, str(h)], args.limit)
        print(f"H={h}: " + " ".join(out.split("\n")[:2]), flush=True)
    _, out = _run([py, "-c", WARM], args.limit)
    one, by_name = out.split()
    print(f"\nwarm, one point, mlp H=8: symbolic.gradients {one} ms; with get_model by name each call {by_name} ms")


if __name__ == "__main__":
    main()
