"""MGRIT with the batched gradients through ``torch.compile`` (``compile=True``) against eager, and
both against the plain torch.optim loop, side by side in one process.

    python benchmarks/compile.py                          # digits MLP, N = 4096, SGD f64, Adam f32 and f64
    python benchmarks/compile.py --sizes 1024 --cases sgd-float64

For every case: the plain loop (``pintrain.bench_torch.plain_loop``), MGRIT eager, MGRIT compiled
on a fresh problem (the first compiled run in the process: its compile time included, though
inductor's on-disk cache from earlier processes may shorten it), and MGRIT compiled again on
another fresh problem (the compiled graphs reused), each with the time by level spacing
(``pintrain.bench.TimedProblem``).  fit's defaults: 3 levels, cfactor 4, ``split`` with max_ratio 2;
tol 1e-9 in float64, 1e-5 in float32.  One torch thread for everything (``--threads``).  Record:
``benchmarks/results/compile.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pintrain.bench import TimedProblem
from pintrain.bench_torch import plain_loop
from pintrain.mgrit import SolverOptions, solve
from pintrain.torch.digits import digits_problem

CASES = {"sgd-float64": ("sgd", "float64"), "adam-float32": ("adam", "float32"), "adam-float64": ("adam", "float64")}


def timed_solve(p, options: SolverOptions) -> dict:
    t = TimedProblem(p)
    t0 = time.perf_counter()
    res = solve(t, options=options)
    total = time.perf_counter() - t0
    return {
        "seconds": total,
        "iterations": res.iterations,
        "converged": res.converged,
        "by_spacing": {str(m): t.seconds[m] for m in sorted(t.seconds)},
        "states": res.states,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4096")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "compile.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for name in args.cases.split(","):
            opt, dtype = CASES[name]
            options = SolverOptions(levels=3, cfactor=4, tol=1e-5 if dtype == "float32" else 1e-9)
            p = digits_problem("digits-mlp", steps=n, optimizer=opt, dtype=dtype)
            plain_loop(p, 50)
            serial_s = min(plain_loop(p)[0] for _ in range(2))
            eager = timed_solve(p, options)
            runs = {}
            for label in ("compiled, first", "compiled, again"):
                t0 = time.perf_counter()
                pc = digits_problem("digits-mlp", steps=n, optimizer=opt, dtype=dtype, compile=True)
                build_s = time.perf_counter() - t0
                runs[label] = timed_solve(pc, options) | {"build_s": build_s}
            row = {"case": name, "N": n, "serial_s": serial_s}
            reference = eager["states"]
            for label, r in (("eager", eager), *runs.items()):
                diff = float(np.abs(r.pop("states") - reference).max())
                row[label] = r | {"max_abs_diff_from_eager": diff, "over_serial": r["seconds"] / serial_s}
            rows.append(row)
            print(json.dumps(row), flush=True)
    record = {
        "command": "python benchmarks/compile.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "rows": rows,
    }
    args.out.write_text(json.dumps(record, indent=1))
    print(
        f"{'case':14s} {'N':>6s} {'serial':>8s} {'eager':>8s} {'compiled 1st (build)':>22s} "
        f"{'compiled again':>15s} {'iters':>6s}"
    )
    for r in rows:
        first, again = r["compiled, first"], r["compiled, again"]
        print(
            f"{r['case']:14s} {r['N']:6d} {r['serial_s']:8.2f} {r['eager']['seconds']:8.2f} "
            f"{first['seconds']:12.2f} ({first['build_s']:5.1f}) {again['seconds']:15.2f} {r['eager']['iterations']:6d}"
        )


if __name__ == "__main__":
    main()
