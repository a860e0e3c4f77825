"""Cost of one batched step of the digits MLP per row: in one pass against cache-sized passes.

    python benchmarks/step_cost.py                     # 4096 rows, Adam and SGD, float32/float64
    python benchmarks/step_cost.py --rows 1024 --profile

One torch thread.  "one pass" sets ``ops.pass_bytes`` above the states' size, so the step takes all
rows at once (what pintrain did before passes); "passes" is the default (16 MB of states a pass on a
CPU).  Every timing is the best of ``--repeat`` in the same process; the two outputs are compared
bit for bit.  "compiled": the default path with ``compile=True`` (the gradient and the update in one graph
per chunk of at most 128 rows; compiled once before timing; written into the rows of a reused
array, as a solve's levels take it), compared with the default path to rounding; beside it the
compiled gradient followed by the compiled update (what ``compile=True`` ran before).
``--profile`` prints torch.profiler's table of the default path and the compiled step's time in
batched matrix products (the arithmetic).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from pintrain.bench import best_of
from pintrain.torch.digits import digits_problem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(
        "| optimizer | dtype | one pass (us/row) | passes (us/row) | same bits | compiled (us/row) "
        "| compiled gradient, then update (us/row) | max rel diff |"
    )
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for optimizer, dtype in (("adam", "float32"), ("adam", "float64"), ("sgd", "float64")):
        p = digits_problem("digits-mlp", steps=max(2 * args.rows, 1000), optimizer=optimizer, dtype=dtype)
        U = p.ops.asarray(np.repeat(np.asarray(p.initial())[None], args.rows, 0))
        ks = np.arange(args.rows)
        default = p.ops.pass_bytes
        p.ops.pass_bytes = 1 << 40
        whole = p.step_many(U, ks, 1)
        one = best_of(lambda: p.step_many(U, ks, 1), args.repeat)[0]  # noqa: B023
        p.ops.pass_bytes = default
        parts = p.step_many(U, ks, 1)
        passes = best_of(lambda: p.step_many(U, ks, 1), args.repeat)[0]  # noqa: B023
        same = bool((whole == parts).all())
        pc = digits_problem(
            "digits-mlp", steps=max(2 * args.rows, 1000), optimizer=optimizer, dtype=dtype, compile=True
        )
        out = torch.empty_like(U)  # the compiled step writes into the solver's rows, as in a solve
        compiled = pc.step_many(U, ks, 1, out=out).clone()  # compiles the shapes it meets
        comp = best_of(lambda: pc.step_many(U, ks, 1, out=out), args.repeat)[0]  # noqa: B023
        rel = float((compiled - parts).abs().max() / parts.abs().max())
        fused, pc.compiled_step = pc.compiled_step, None  # the compiled gradient, then the compiled update
        pc.step_many(U, ks, 1, out=out)
        separate = best_of(lambda: pc.step_many(U, ks, 1, out=out), args.repeat)[0]  # noqa: B023
        pc.compiled_step = fused
        print(
            f"| {optimizer} | {dtype} | {one / args.rows * 1e6:.1f} | {passes / args.rows * 1e6:.1f} | {same} "
            f"| {comp / args.rows * 1e6:.1f} | {separate / args.rows * 1e6:.1f} | {rel:.1e} |"
        )
        if args.profile and optimizer == "adam" and dtype == "float32":
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                pc.step_many(U, ks, 1, out=out)
            bmm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key == "aten::bmm")
            total = sum(e.self_cpu_time_total for e in prof.key_averages())
            print(f"compiled step: bmm {bmm / args.rows:.1f} of {total / args.rows:.1f} us a row (profiler)")
        if args.profile and optimizer == "adam" and dtype == "float32":
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                p.step_many(U, ks, 1)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
