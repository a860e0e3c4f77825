"""Cost of the coarsest chain, a sub-interval at a time, against one step of the torch.optim loop.

    python benchmarks/chain_cost.py --device cuda --out results/device/chain_cost_h200.json
    python benchmarks/chain_cost.py --device cpu                     # here: one thread

The coarsest level's exact solve is a chain of N / r sequential sub-intervals of r = ``max_ratio``
steps (``curvature``, the default coarse step for Adam and momentum: r gradients at the start, the
curvature term, r optimizer steps), so serial / MGRIT <= r c_loop / (c_chain I) at I iterations
(docs/performance.md).  This times c_chain, a chain of ``--calls`` coarse steps of ``--m`` steps of
one row, each starting from the last one's state (one synchronisation at the end), for the lone
chain eager, compiled one sub-interval a call and a chunk of them a call (``compile=True``'s
graphs), and on a GPU the same replayed as CUDA graphs (``torch.compile``'s
``mode="reduce-overhead"``, what ``compile=True`` runs there), beside c_loop,
a step of the plain loop on the same device (the digits MLP, batch 32; best of ``--repeat``).
Each variant's final state is compared with the eager chain's (max abs difference, relative).
Threads: ``--threads`` (default 1) for every variant alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pintrain.bench_torch import plain_loop
from pintrain.torch.chain import LoneSubInterval
from pintrain.torch.digits import digits_problem


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def chain(p: Any, S: torch.Tensor, calls: int, m: int) -> tuple[float, torch.Tensor]:
    """``calls`` coarse steps of m steps from S, each from the last one's state: (seconds, final state)."""
    sync(p.device)
    t0 = time.perf_counter()
    for i in range(calls):
        k = (i * m) % (p.n_steps - m)
        S = p.lone_chain(S, np.array([k]), m, True)
    sync(p.device)
    return time.perf_counter() - t0, S


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--steps", type=int, default=256, help="the problem's N (the table's size)")
    ap.add_argument("--calls", type=int, default=100, help="coarse steps timed")
    ap.add_argument("--m", type=int, default=16, help="steps a coarse step (the coarsest level's spacing)")
    ap.add_argument("--max-ratio", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default="all", help="names of the table's rows separated by ';', or all")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = digits_problem(
        "digits-mlp",
        steps=args.steps,
        optimizer=args.optimizer,
        dtype=args.dtype,
        device=args.device,
        coarse="curvature",
        max_ratio=args.max_ratio,
    )
    p.prepare()  # the curvature table (its trajectory through the eager chain)
    plain_loop(p)  # warm-up
    loop_s = min(plain_loop(p)[0] for _ in range(args.repeat)) / p.n_steps
    variants: dict[str, Any] = {"eager": p.lone_chain}
    variants["compiled, a sub-interval a call"] = LoneSubInterval(p, compiled=True, graphs=False)
    variants["compiled, a sub-interval a call"].chunk = 1
    variants["compiled"] = LoneSubInterval(p, compiled=True, graphs=False)
    if p.device.type == "cuda":
        variants["compiled, CUDA graph, a sub-interval a call"] = LoneSubInterval(p, compiled=True, graphs=True)
        variants["compiled, CUDA graph, a sub-interval a call"].chunk = 1
        variants["compiled, CUDA graph"] = LoneSubInterval(p, compiled=True, graphs=True)
    if args.variants != "all":
        keep = {v.strip() for v in args.variants.split(";")} | {"eager"}  # eager: the reference (names hold commas)
        variants = {name: unit for name, unit in variants.items() if name in keep}
    S0 = p.ops.asarray(np.asarray(p.initial())[None])
    r, rows, ref = args.max_ratio, [], None
    for name, unit in variants.items():
        p.lone_chain = unit
        row: dict[str, Any] = {"variant": name}
        try:
            t0 = time.perf_counter()
            chain(p, S0, 3, args.m)  # compiles (and records the graph)
            row["first_calls_s"] = time.perf_counter() - t0
            seconds, S = min((chain(p, S0, args.calls, args.m) for _ in range(args.repeat)), key=lambda t: t[0])
        except Exception as err:  # a variant this machine cannot run: recorded, the others still timed
            row["error"] = f"{type(err).__name__}: {err}"[:400]
            rows.append(row)
            print(json.dumps(row), flush=True)
            continue
        ref = S if ref is None else ref
        row["us_per_sub_interval"] = seconds / (args.calls * args.m / r) * 1e6
        row["us_per_step"] = row["us_per_sub_interval"] / r
        row["loop_step_over_step"] = loop_s / (seconds / (args.calls * args.m))
        row["max_rel_diff_vs_eager"] = float((S - ref).abs().max() / ref.abs().max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    cpu = platform.processor() or platform.machine()
    device_name = torch.cuda.get_device_name(p.device) if p.device.type == "cuda" else cpu
    print(f"\n{device_name}, torch {torch.__version__}, {args.dtype}, {args.optimizer}, {args.threads} thread(s)")
    print(f"loop: {loop_s * 1e6:.0f} us a step")
    print(f"coarse steps of {args.m} steps, sub-intervals of r = {r}")
    print("| chain | us a sub-interval | us a step | loop step / chain step | rel diff vs eager |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['variant']} | failed: {row['error'][:120]} | | | |")
            continue
        print(
            f"| {row['variant']} | {row['us_per_sub_interval']:.0f} | {row['us_per_step']:.0f} "
            f"| {row['loop_step_over_step']:.2f} | {row['max_rel_diff_vs_eager']:.1e} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "command": "python benchmarks/chain_cost.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out" and v is not None),
            "device": str(p.device),
            "device_name": device_name,
            "torch": torch.__version__,
            "threads": args.threads,
            "loop_us_per_step": loop_s * 1e6,
            "rows": rows,
        }
        args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
