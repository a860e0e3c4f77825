"""The nested start from the curvature table's trajectory against the sequential coarsest solve,
alternating in one process (digits MLP, Adam, float32, ``curvature``, the default tolerance, one
thread; best of ``--repeat`` each; the table is built once, before, and timed apart).

    python benchmarks/nested_guess.py --steps 16384 --levels 2 --cfactor 32 --compile
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pintrain.mgrit import SolverOptions, solve
from pintrain.mgrit.options import default_tol
from pintrain.torch.digits import digits_problem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=16384)
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--cfactor", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = args.steps
    p = digits_problem("digits-mlp", steps=n, optimizer="adam", lr=0.002, dtype="float32", compile=args.compile)
    p.prepare()
    guess = p.trajectory_guess
    opts = SolverOptions(levels=args.levels, cfactor=args.cfactor, nested=True)
    opts = replace(opts, tol=default_tol(np.float32, n, opts))
    runs: dict[str, list] = {"trajectory": [], "sequential": []}
    for _ in range(args.repeat):
        for mode in runs:
            p.trajectory_guess = guess if mode == "trajectory" else (lambda: None)  # type: ignore[method-assign]
            t0 = time.perf_counter()
            res = solve(p, options=opts)
            runs[mode].append({"s": time.perf_counter() - t0, "iterations": res.iterations, "residuals": res.residuals})
            print(mode, json.dumps(runs[mode][-1]), flush=True)
    best = {mode: min(r["s"] for r in rs) for mode, rs in runs.items()}
    print(f"best of {args.repeat}: nested start from the trajectory {best['trajectory']:.2f} s, "
          f"sequential {best['sequential']:.2f} s (table {p.setup_s:.2f} s apart)")  # fmt: skip
    if args.out is not None:
        command = f"python benchmarks/nested_guess.py --steps {n} --levels {args.levels} --cfactor {args.cfactor}"
        command += f" --repeat {args.repeat}" + (" --compile" if args.compile else "")
        record = {"command": command, "threads": 1, "table_s": p.setup_s, "best_s": best, "runs": runs}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
