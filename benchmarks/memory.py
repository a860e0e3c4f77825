"""Peak memory of MGRIT with full and C-point storage, each in a fresh process (peak RSS).

    python benchmarks/memory.py --steps 65536 --out results/memory.json        # the issue's case
    python benchmarks/memory.py --steps 4096 --iterations 1                    # a smoke run

The problem is the digits MLP (64-32-10, tanh, cross-entropy, batch 32) with Adam: a state is the
weights and Adam's two moments (7230 values).  Each configuration runs in its own process (one
torch thread), solves ``--iterations`` MGRIT iterations (the peak is reached in the first: every
level is allocated and swept) and reports the process's peak resident set size (``ru_maxrss``),
the solver's own estimate (``Hierarchy.memory_bytes``, what ``--memory`` prints) and the RSS of
the same process before the solve (Python, torch, the data).  Where both storages run to the same
iteration, the states they keep are compared (the C-points must be equal bit for bit).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from pintrain.mgrit import Hierarchy, SolverOptions, solve
from pintrain.torch.digits import digits_problem
steps, cf, levels, dtype, storage, iters, dump = sys.argv[1:8]
p = digits_problem("digits-mlp", steps=int(steps), optimizer="adam", dtype=dtype)
opts = SolverOptions(levels=int(levels), cfactor=int(cf), max_iter=int(iters), tol=1e-30, storage=storage)
u0 = np.asarray(p.initial())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
res = solve(p, options=opts)
wall = time.perf_counter() - t0
if dump != "-":
    pts = res.points if res.points is not None else np.arange(0, int(steps) + 1, int(cf))
    np.save(dump, res.states[pts] if res.points is None else res.states)
print(json.dumps({
    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "rss_before_solve": before,
    "estimate": Hierarchy(int(steps), opts).memory_bytes(u0.size, u0.dtype.itemsize, storage),
    "state_size": int(u0.size),
    "wall_s": wall,
    "residuals": res.residuals,
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=65536)
    ap.add_argument("--cfactor", type=int, default=16)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--storages", default="c-points,full")
    ap.add_argument("--compare", action="store_true", help="save both runs' C-points and compare them")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    dumps = {}
    for storage in args.storages.split(","):
        dump = f"/tmp/pintrain_memory_{storage}.npy" if args.compare else "-"
        cmd = [sys.executable, "-c", CHILD, str(args.steps), str(args.cfactor), str(args.levels), args.dtype]
        cmd += [storage, str(args.iterations), dump]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{storage}: failed\n{proc.stderr[-2000:]}")
            rows.append({"storage": storage, "failed": proc.stderr[-500:]})
            continue
        rec = json.loads(proc.stdout.strip().splitlines()[-1]) | {"storage": storage}
        rec["process_s"] = time.perf_counter() - t0
        rows.append(rec)
        dumps[storage] = dump
        gib = 2**30
        print(
            f"{storage:9s} peak RSS {rec['peak_rss'] / gib:6.2f} GiB  (before the solve "
            f"{rec['rss_before_solve'] / gib:.2f} GiB; estimate of the level arrays {rec['estimate'] / gib:.2f} GiB)  "
            f"solve {rec['wall_s']:.1f} s",
            flush=True,
        )
    if args.compare and len(dumps) == 2:
        import numpy as np

        a, b = (np.load(d) for d in dumps.values())
        same = a.shape == b.shape and bool((a == b).all())
        print(f"C-points of both storages equal bit for bit: {same}")
        rows.append({"c_points_equal": same})
    if args.out is not None:
        record = {
            "command": " ".join(sys.argv),
            "threads": 1,
            "max_rss_note": "ru_maxrss of the child process",
            "steps": args.steps,
            "cfactor": args.cfactor,
            "levels": args.levels,
            "dtype": args.dtype,
            "iterations": args.iterations,
            "runs": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1))
        print(f"wrote {args.out}")
    _ = resource  # the parent's own RSS is not the measurement


if __name__ == "__main__":
    main()
