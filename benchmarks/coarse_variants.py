"""Iterations of solver variants on the digits MLP with Adam in float32 (``curvature``, nested, the
default tolerance): relaxation, the sub-interval length ``max_ratio``, levels and cfactor.

    python benchmarks/coarse_variants.py --steps 4096 --variants "L=2,c=32;L=2,c=32,relax=F;L=2,c=32,r=4"

Each variant is ``key=value`` pairs separated by commas (``L`` levels, ``c`` first cfactor, ``r``
max_ratio, ``relax``, ``coarse``); eager unless ``--compile``; one thread.  Prints and records
(``--out``) each variant's iterations, residuals, its weights' distance from the serial states, the
curvature table's seconds and the solve's: the iterations are what to read (the seconds are of one
eager run on a noisy machine).
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
    ap.add_argument("--steps", type=int, default=4096)
    ap.add_argument("--variants", default="L=2,c=32;L=2,c=32,relax=F;L=2,c=32,r=4;L=2,c=32,r=4,relax=F")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--max-iter", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    n, rows, ref = args.steps, [], None
    for v in args.variants.split(";"):
        kv = dict(x.split("=") for x in v.split(","))
        p = digits_problem(
            "digits-mlp", steps=n, optimizer="adam", lr=0.002, dtype="float32",
            coarse=kv.get("coarse", "auto"), max_ratio=int(kv.get("r", 2)), compile=args.compile,
        )  # fmt: skip
        if ref is None:
            ref = np.asarray(p.serial_states())
        opts = SolverOptions(
            levels=int(kv.get("L", 2)), cfactor=int(kv.get("c", 32)), max_iter=args.max_iter, nested=True,
            relax=kv.get("relax", "FCF"),
        )  # fmt: skip
        opts = replace(opts, tol=default_tol(np.asarray(p.initial()).dtype, n, opts))
        t0 = time.perf_counter()
        p.prepare()
        table_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = solve(p, options=opts)
        row = {
            "variant": v, "N": n, "tol": opts.tol, "iterations": res.iterations, "converged": res.converged,
            "residuals": res.residuals, "max_abs_diff": float(np.abs(res.states - ref).max()),
            "table_s": table_s, "solve_s": time.perf_counter() - t0,
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out is not None:
            words = [f'--{k.replace("_", "-")} "{val}"' for k, val in vars(args).items() if k not in ("out", "compile")]
            words += ["--compile"] if args.compile else []
            command = " ".join(["python benchmarks/coarse_variants.py", *words])
            record = {"command": command, "threads": 1, "compile": args.compile, "rows": rows}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
