"""Serial torch.optim training against MGRIT on one device (a GPU where there is one), side by side.

    python benchmarks/device.py --device cuda --sizes 4096,16384 --out results/device.json
    python benchmarks/device.py --device cpu --sizes 512 --threads 1      # a smoke run here

The problem is the digits MLP (64-32-10, tanh, cross-entropy, batch 32; ``pintrain.torch.digits``)
with the optimizer named.  "serial" is the plain loop a torch user writes (``zero_grad();
loss.backward(); opt.step()`` on the device, the same batches in the same order, nothing stored,
one synchronisation at the end); "serial, every state kept" is pintrain's reference loop
(``method="serial"``), which copies every state to the host.  MGRIT keeps its level arrays on the
device (torch-native states).  Every timing is the best of ``--repeat``, measured in the same
process; the answer is compared with the reference states (max abs difference over all steps).
Threads: ``--threads`` sets torch's intra-op threads for both methods alike (default 1).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pintrain.bench import TimedProblem
from pintrain.bench import best_of as best
from pintrain.bench_torch import plain_loop as torch_loop
from pintrain.mgrit import Hierarchy, SolverOptions, default_tol, solve
from pintrain.torch import chain
from pintrain.torch.digits import digits_problem


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(p, steps: int | None = None) -> float:
    """The loop a torch user writes, on the problem's device; returns its wall time."""
    return torch_loop(p, steps)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="4096,16384")
    ap.add_argument("--optimizers", default="sgd,adam")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--levels", type=int, default=0, help="0: coarsen until at most 16 points remain")
    ap.add_argument("--cfactor", type=int, default=4)
    ap.add_argument(
        "--coarse",
        default="auto",
        choices=["auto", "split", "union", "lagged", "curvature"],
        help="coarse propagator (auto, fit's default: curvature for momentum/Adam, split for SGD; split; union)",
    )
    ap.add_argument("--max-ratio", type=int, default=2, help="split: longest sub-interval (fit's default 2)")
    ap.add_argument("--max-iter", type=int, default=60)
    ap.add_argument("--rank", type=int, default=None, help="curvature table: directions an entry (default 8)")
    ap.add_argument("--block", type=int, default=None, help="curvature table: steps an entry (default 64)")
    ap.add_argument(
        "--nested", action=argparse.BooleanOptionalAction, default=True, help="nested iteration (fit's default)"
    )
    ap.add_argument("--costs", action="store_true", help="only the cost of one batched step against the rows")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="batched gradients through torch.compile")
    ap.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --compile on a GPU: replay the coarsest chain's sub-interval as a CUDA graph (the default)",
    )
    ap.add_argument(
        "--shares", action="store_true", help="one more solve, timed by spacing: each level's calls, rows, seconds"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    chain.CUDA_GRAPHS = args.cuda_graphs
    if args.costs:
        step_costs(args)
        return
    rows = []
    table_options = {k: v for k, v in (("rank", args.rank), ("block", args.block)) if v is not None}
    for dtype in args.dtypes.split(","):
        for name in args.optimizers.split(","):
            lr = 0.002 if name.startswith("adam") else 0.05
            for n in (int(s) for s in args.sizes.split(",")):
                p = digits_problem(
                    "digits-mlp",
                    steps=n,
                    optimizer=name,
                    lr=lr,
                    dtype=dtype,
                    device=args.device,
                    coarse=args.coarse,
                    max_ratio=args.max_ratio,
                    compile=args.compile,
                    coarse_options=table_options or None,
                )
                levels = args.levels or 64
                opts = SolverOptions(
                    levels=levels,
                    cfactor=args.cfactor,
                    max_iter=args.max_iter,
                    max_coarse=None if args.levels else 16,
                    nested=args.nested,
                )
                tol = default_tol(np.asarray(p.initial()).dtype, n, opts)  # fit's default (float32: above its floor)
                opts = replace(opts, tol=tol)
                plain_loop(p, 50)  # warm-up (kernels, allocator)
                serial_s = min(plain_loop(p) for _ in range(args.repeat))
                kept_s, ref = best(p.serial_states, 1)
                p.prepare()  # a table the coarse step builds once (curvature): timed apart, added once
                mgrit_s, res = best(lambda p=p, opts=opts: solve(p, options=opts), args.repeat)
                mgrit_s += p.setup_s
                row = {
                    "optimizer": name,
                    "dtype": dtype,
                    "N": n,
                    "coarse": p.coarse,
                    "coarse_options": table_options,
                    "max_ratio": args.max_ratio,
                    "levels": len(Hierarchy(n, opts)),
                    "nested": args.nested,
                    "setup_s": p.setup_s,
                    "cfactor": args.cfactor,
                    "tol": tol,
                    "serial_s": serial_s,
                    "serial_kept_s": kept_s,
                    "mgrit_s": mgrit_s,
                    "serial_over_mgrit": serial_s / mgrit_s,
                    "compile": args.compile,
                    "cuda_graphs": bool(getattr(p.lone_chain, "graphs", False)),  # what the chain ran
                    "iterations": res.iterations,
                    "residuals": [float(x) for x in res.residuals],
                    "converged": res.converged,
                    "max_abs_diff": float(np.abs(res.states - ref).max()),
                    "fine_steps_over_N": res.step_counts[0] / n,
                }
                if args.shares:
                    timed = TimedProblem(p)
                    solve(timed, options=opts)
                    row["by_spacing"] = {
                        str(m): {"calls": timed.calls[m], "rows": timed.rows[m], "s": timed.seconds[m]}
                        for m in sorted(timed.seconds)
                    }
                rows.append(row)
                print(json.dumps(row), flush=True)
                write(args, p, rows)
    print(f"{'optimizer':9s} {'dtype':8s} {'N':>6s} {'lev':>3s} {'serial':>8s} {'MGRIT':>8s} {'ser/MG':>7s} {'it':>3s}")
    for r in rows:
        print(
            f"{r['optimizer']:9s} {r['dtype']:8s} {r['N']:6d} {r['levels']:3d} {r['serial_s']:8.3f} "
            f"{r['mgrit_s']:8.3f} {r['serial_over_mgrit']:7.2f} {r['iterations']:3d}"
        )


def step_costs(args: argparse.Namespace) -> None:
    """Seconds per batched call (fine SGD/Adam step, and a union coarse step of spacing 16) against
    the number of rows, on the device's own states; beside the plain loop's seconds per step."""
    out = []
    for dtype in args.dtypes.split(","):
        for name in args.optimizers.split(","):
            lr = 0.002 if name.startswith("adam") else 0.05
            p = digits_problem("digits-mlp", steps=20000, optimizer=name, lr=lr, dtype=dtype, device=args.device)
            plain_loop(p, 50)
            per_step = min(plain_loop(p, 400) for _ in range(2)) / 400
            for rows in (1, 16, 256, 4096, 16384):
                U = p.ops.asarray(np.repeat(p.initial()[None], rows, axis=0))
                ks = np.arange(rows, dtype=np.int64)
                for m in (1, 16):
                    p.step_many(U, ks, m)
                    sync(p.device)
                    reps = 5
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        p.step_many(U, ks, m)
                    sync(p.device)
                    call = (time.perf_counter() - t0) / reps
                    row = {"optimizer": name, "dtype": dtype, "rows": rows, "m": m, "call_s": call,
                           "per_row_s": call / rows, "plain_loop_step_s": per_step}  # fmt: skip
                    out.append(row)
                    print(json.dumps(row), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": args.device, "torch": torch.__version__, "costs": out}, indent=1))


def command(args: argparse.Namespace) -> str:
    """The command line that repeats this run (flags as flags: ``--compile``, ``--no-nested``)."""
    words = ["python benchmarks/device.py"]
    for k, v in vars(args).items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            words += [flag] if v else ([f"--no-{k.replace('_', '-')}"] if k in ("nested", "cuda_graphs") else [])
        elif v is not None:
            words += [flag, str(v)]
    return " ".join(words)


def write(args: argparse.Namespace, p, rows: list) -> None:
    """The record so far (written after every row: a run cut short keeps what it measured)."""
    if args.out is None:
        return
    record = {
        "device": str(p.device),
        "device_name": torch.cuda.get_device_name() if p.device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "threads": args.threads,
        "command": command(args),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
