"""Settings chosen by the cost model against the defaults and the hand-tuned bench settings, side
by side with the serial loop, in one process (one thread).

    python benchmarks/autotune.py                        # xor and sine, N = 16384
    python benchmarks/autotune.py --problems xor --sizes 4096,16384 --repeat 5

For each problem and N: the serial loop of fine steps (``serial_solve``), MGRIT with the defaults
(3 levels, cfactor 4), with the bench's hand-tuned settings (4 levels, cfactor 64 then 8, nested)
and with the cost model's choice (``pintrain.mgrit.autotune.choose``, measured once; the time to
measure is reported, and counted in "auto + measuring"), all at the same tolerance (1e-9 unless
``--tol``).  Every time is the best of ``--repeat``; the answers are compared with the serial
states.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from pintrain.bench import best_of as best
from pintrain.mgrit import SolverOptions, serial_solve, solve
from pintrain.mgrit.autotune import choose
from pintrain.training import model_problem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", default="xor,sine")
    ap.add_argument("--sizes", default="16384")
    ap.add_argument("--tol", type=float, default=1e-9)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    print("| problem | N | settings | iterations | MGRIT (s) | serial (s) | serial / MGRIT | max abs diff |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name in args.problems.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            p = model_problem(name, steps=n)
            serial_s, ref = best(lambda: serial_solve(p), args.repeat)  # noqa: B023
            base = SolverOptions(tol=args.tol, max_iter=60)
            t0 = time.perf_counter()
            choice = choose(p, base)
            measure_s = time.perf_counter() - t0
            settings = {
                "defaults (3 levels, cfactor 4)": base,
                "bench (4 levels, cfactor 64,8, nested)": SolverOptions(
                    levels=4, cfactor=(64, 8), nested=True, tol=args.tol, max_iter=60
                ),
                f"cost model ({choice.options.levels} levels, cfactor "
                f"{','.join(map(str, choice.options.cfactor))}, nested)": choice.options,
            }
            for label, opts in settings.items():
                t, res = best(lambda: solve(p, options=opts), args.repeat)  # noqa: B023
                diff = float(np.abs(res.states - ref).max())
                row = {
                    "problem": name,
                    "N": n,
                    "settings": label,
                    "iterations": res.iterations,
                    "converged": res.converged,
                    "mgrit_s": t,
                    "serial_s": serial_s,
                    "ratio": serial_s / t,
                    "max_abs_diff": diff,
                }
                if label.startswith("cost model"):
                    row["measure_s"] = measure_s
                    row["ratio_with_measuring"] = serial_s / (t + measure_s)
                rows.append(row)
                extra = (
                    f" ({serial_s / (t + measure_s):.2f} with the {measure_s:.2f} s to measure)"
                    if "measure_s" in row
                    else ""
                )
                print(
                    f"| {name} | {n} | {label} | {res.iterations}{'' if res.converged else ' (not converged)'} | "
                    f"{t:.3f} | {serial_s:.3f} | {serial_s / t:.2f}{extra} | {diff:.1e} |",
                    flush=True,
                )
    if args.out is not None:
        args.out.write_text(
            json.dumps({"command": "python benchmarks/autotune.py", "threads": 1, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
