"""Cross-check pintrain's MGRIT against PyMGRIT 1.0.6 on the Dahlquist and heat problems.

    python benchmarks/vs_pymgrit.py            # or: make vs-pymgrit

PyMGRIT needs numpy<2, so it runs in its own environment, ``.venv-pymgrit/`` (made here on first
use), see :mod:`pintrain.peer`.  For every case both solvers get the same problem, levels,
cfactor, relaxation, cycle, nested iteration, tolerance and zero initial guess (PyMGRIT's).
The table shows the iteration counts side by side and the largest relative difference of the
residual histories; the last row times the issue's reference case (Dahlquist, 16385 points,
3 levels, cfactor 2, tol 1e-10).  Results go to ``benchmarks/results/vs_pymgrit.json``, which
``tests/test_vs_pymgrit.py`` checks pintrain against.  ``pintrain bench`` times more cases.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from pintrain.bench import PEER_CASES
from pintrain.peer import describe_case, run_pintrain, run_pymgrit

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-pymgrit"
OUT = Path(__file__).resolve().parent / "results" / "vs_pymgrit.json"


def cases() -> list[dict]:
    out = []
    base = {"tol": 1e-10, "max_iter": 60}
    for n in (256, 1001):
        for levels in (2, 3, 4):
            for cf in (2, 4):
                for nu in (0, 1):
                    for cycle in ("V", "F"):
                        for nested in (False, True):
                            if n == 1001 and nested:
                                continue
                            out.append(
                                {
                                    "problem": "dahlquist",
                                    "n_steps": n,
                                    "lam": -1.0,
                                    "t_stop": 5.0,
                                    "levels": levels,
                                    "cfactor": cf,
                                    "nu": nu,
                                    "cycle": cycle,
                                    "nested": nested,
                                    **base,
                                }
                            )
    for levels in (2, 3):
        for cf in (2, 4):
            for nu in (0, 1):
                for cycle in ("V", "F"):
                    out.append(
                        {
                            "problem": "heat",
                            "n_steps": 256,
                            "nx": 31,
                            "t_stop": 1.0,
                            "levels": levels,
                            "cfactor": cf,
                            "nu": nu,
                            "cycle": cycle,
                            "nested": False,
                            **base,
                        }
                    )
    return out


TIMING_CASE = PEER_CASES[0]  # Dahlquist, 16385 points, 3 levels, cfactor 2, FCF, tol 1e-10


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help="where to write the JSON record")
    ap.add_argument("--repeat", type=int, default=3, help="timing repetitions (best of)")
    args = ap.parse_args(argv)

    all_cases = cases()
    timing_case = {**TIMING_CASE, "repeat": args.repeat}
    theirs = run_pymgrit([*all_cases, timing_case], VENV)
    ours = [run_pintrain(c) for c in all_cases]
    ours_t = run_pintrain(timing_case)
    theirs_t = theirs[-1]

    rows = []
    print(f"{'case':44s} {'pintrain':>8s} {'PyMGRIT':>8s} {'max rel diff of residuals':>26s}")
    for case, a, b in zip(all_cases, ours, theirs[:-1], strict=True):
        n = min(a["iterations"], b["iterations"])
        ra, rb = np.array(a["residuals"][:n]), np.array(b["residuals"][:n])
        rel = float(np.max(np.abs(ra - rb) / np.maximum(np.abs(rb), 1e-300))) if n else 0.0
        rows.append({"case": case, "pintrain": a, "pymgrit": b, "max_rel_residual_diff": rel})
        print(f"{describe_case(case):44s} {a['iterations']:8d} {b['iterations']:8d} {rel:26.2e}")

    total_ratio = (theirs_t["setup_s"] + theirs_t["solve_s"]) / (ours_t["setup_s"] + ours_t["solve_s"])
    print(
        f"\n{describe_case(TIMING_CASE)}: iterations pintrain {ours_t['iterations']}, PyMGRIT {theirs_t['iterations']}"
    )
    print(
        f"  setup  pintrain {ours_t['setup_s']:.4f} s  PyMGRIT {theirs_t['setup_s']:.4f} s  "
        f"ratio {theirs_t['setup_s'] / ours_t['setup_s']:.1f}"
    )
    print(
        f"  solve  pintrain {ours_t['solve_s']:.4f} s  PyMGRIT {theirs_t['solve_s']:.4f} s  "
        f"ratio {theirs_t['solve_s'] / ours_t['solve_s']:.1f}"
    )
    print(f"  setup + solve: PyMGRIT / pintrain = {total_ratio:.1f}")

    same = sum(r["pintrain"]["iterations"] == r["pymgrit"]["iterations"] for r in rows)
    print(f"\nsame iteration count in {same} of {len(rows)} cases")
    record = {
        "command": "python benchmarks/vs_pymgrit.py",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "date": time.strftime("%Y-%m-%d"),
        "cases": rows,
        "timing": {
            "case": TIMING_CASE,
            "pintrain": {k: ours_t[k] for k in ("setup_s", "solve_s")},
            "pymgrit": {k: theirs_t[k] for k in ("setup_s", "solve_s")},
            "iterations": {"pintrain": ours_t["iterations"], "pymgrit": theirs_t["iterations"]},
            "ratio_setup_plus_solve": total_ratio,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
