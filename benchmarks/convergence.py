"""The convergence suite: MGRIT iterations to tolerance on the models and optimizers people train.

    python benchmarks/convergence.py                        # N = 1024, 4096, 16384 (long)
    python benchmarks/convergence.py --sizes 1024 --cases digits-mlp-sgd,gru-adam
    python benchmarks/convergence.py --coarse split         # another coarse propagator for all

Every case (defined in ``pintrain.torch.suite``, which ``pintrain bench --suite`` runs too) is a real
``torch.nn.Module`` on data that ships with scikit-learn or is generated here,
trained through ``pintrain.torch.fit`` with the settings a user would pass; MGRIT runs with the
default coarse propagator unless ``--coarse`` says otherwise, ``--levels`` levels (default 3),
cfactor 4, tolerance 1e-9 (float64), at most ``--max-iter`` iterations, from nested iteration
(fit's default; ``--no-nested``: from copies of the initial state).  A row records the
iterations, whether it converged, diverged (and where) or stalled, the distance of the weights from
the serial loop's (checked against a real serial run), and the wall times of both (one torch
thread each).  The record goes to ``--out`` (JSON) and the table to stdout (Markdown), for
``docs/convergence.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pintrain.torch.suite import CASES, CFACTOR, run_case, settings_for, table

__all__ = ["CASES", "run_case", "settings_for", "table"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024,4096,16384")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--cfactor", type=int, default=CFACTOR)
    ap.add_argument("--relax", default="FCF", help="relaxation (F, FCF, ...)")
    ap.add_argument("--max-iter", type=int, default=30)
    ap.add_argument("--coarse", default=None, help="coarse propagator for every case (default: fit's)")
    ap.add_argument("--max-ratio", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rank", type=int, default=None, help="curvature table: directions an entry (default 8)")
    ap.add_argument("--block", type=int, default=None, help="curvature table: steps an entry (default 64)")
    ap.add_argument("--no-nested", dest="nested", action="store_false", help="start from u0 (fit's default: nested)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/convergence.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        for name in args.cases.split(","):
            row = run_case(
                name,
                n,
                levels=args.levels,
                max_iter=args.max_iter,
                nested=args.nested,
                coarse=args.coarse,
                max_ratio=args.max_ratio if args.coarse else None,
                cfactor=args.cfactor,
                relax=args.relax,
                coarse_options={k: v for k, v in (("rank", args.rank), ("block", args.block)) if v is not None} or None,
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "out"},
                                            "rows": rows}, indent=1))  # fmt: skip
    print(table(rows, sizes))


if __name__ == "__main__":
    main()
