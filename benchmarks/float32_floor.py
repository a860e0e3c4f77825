"""The round-off floor of float32 MGRIT solves, in units of eps sqrt(n_C) (what ``default_tol`` is set from).

    python benchmarks/float32_floor.py                       # N = 1024, 4096; 5 cases (about 10 minutes)
    python benchmarks/float32_floor.py --sizes 1024 --cases digits-mlp-sgd

Each case of the convergence suite (``benchmarks/convergence.py``) is trained in float32 by MGRIT
(3 levels, cfactor 4, or ``--levels`` and ``--cfactor``) with a tolerance below any float32 floor
(1e-12), ``--max-iter`` iterations at most; the row records the residual history, its floor (the
least residual reached) in units of eps sqrt(n_C) (n_C = N / cfactor fine C-points: the l2 residual
adds up every C-point's rounding), the same divided by sqrt(cfactor / 4) above cfactor 4 (a
C-point's residual spans cfactor steps of round-off; ``default_tol`` scales its margin so), and the
distance of the weights from the serial float32 loop's.  One torch thread.  Measured
(``benchmarks/results/float32_floor.json``): floors of 0.87-3.4 units over the 10 runs; the
record's ``extra`` row, the digits problem with Adam at N = 16384 (run by hand, command in the row),
sat at 28 units.  So float32 takes 100 units by default (:func:`pintrain.mgrit.default_tol`), times
sqrt(cfactor / 4) above cfactor 4 (record ``float32_floor_cfactor.json``: the digits problem with Adam
at N = 16384, 2 levels, cfactor 4 and 32).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convergence import CASES, settings_for  # noqa: E402

from pintrain.mgrit import SolverOptions  # noqa: E402
from pintrain.torch import fit  # noqa: E402

DEFAULT_CASES = "digits-mlp-sgd,digits-mlp-adam,cancer-mlp-adam,diabetes-mlp-sgd,digits-cnn-sgd"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024,4096")
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--max-iter", type=int, default=25)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--cfactor", type=int, default=4, help="the first (and every) cfactor: n_C = N / cfactor")
    ap.add_argument("--compile", action="store_true", help="fit(compile=True): faster at large N")
    ap.add_argument("--nested", action="store_true", help="nested iteration (fit's default; the record ran without)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/float32_floor.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    eps = float(np.finfo(np.float32).eps)
    rows = []
    for name in args.cases.split(","):
        for n in map(int, args.sizes.split(",")):
            data, make, loss, case = CASES[name]
            X, y = data()
            torch.manual_seed(0)
            model = make().double()
            kw = settings_for(case, n) | {"steps": n, "seed": 0, "dtype": "float32"}
            serial = fit(model, loss, X, y, method="serial", **kw)
            opts = SolverOptions(
                levels=args.levels, cfactor=args.cfactor, tol=1e-12, max_iter=args.max_iter, nested=args.nested
            )
            res = fit(model, loss, X, y, options=opts, allow_unconverged=True, compile=args.compile, **kw)
            assert res.solver is not None
            floor = min(res.solver.residuals)
            unit = eps * math.sqrt(n // args.cfactor)
            row = {
                "case": name,
                "N": n,
                "iterations": res.solver.iterations,
                "residuals": [float(r) for r in res.solver.residuals],
                "floor": floor,
                "levels": args.levels,
                "cfactor": args.cfactor,
                "nested": args.nested,
                "floor_units": floor / unit,
                # per C-point, relative to cfactor 4's unit: default_tol's margin is scaled by sqrt(c / 4)
                "floor_units_scaled": floor / (unit * math.sqrt(max(1, args.cfactor / 4))),
                "max_abs_diff": float(np.abs(res.states - serial.states).max()),
            }
            rows.append(row)
            print(f"{name:20s} N = {n:6d}: floor {floor:.2e} = {row['floor_units']:.2f} eps sqrt(n_C); "
                  f"max |w - w_serial| {row['max_abs_diff']:.1e}", flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "threads": 1, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
