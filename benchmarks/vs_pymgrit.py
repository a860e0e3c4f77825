"""Cross-check pintrain's MGRIT against PyMGRIT 1.0.6 on the Dahlquist and heat problems.

    python benchmarks/vs_pymgrit.py            # or: make vs-pymgrit

PyMGRIT needs numpy<2, so it runs in its own environment, ``.venv-pymgrit/`` (made here on first
use), from ``_pymgrit_child.py``.  For every case both solvers get the same problem, levels,
cfactor, relaxation, cycle, nested iteration, tolerance and zero initial guess (PyMGRIT's).
The table shows the iteration counts side by side and the largest relative difference of the
residual histories; the last row times the issue's reference case (Dahlquist, 16385 points,
3 levels, cfactor 2, tol 1e-10).  Results go to ``benchmarks/results/vs_pymgrit.json``, which
``tests/test_vs_pymgrit.py`` checks pintrain against.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pintrain.mgrit import solve
from pintrain.problems import Dahlquist, Heat1D

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-pymgrit"
CHILD = Path(__file__).resolve().parent / "_pymgrit_child.py"
OUT = Path(__file__).resolve().parent / "results" / "vs_pymgrit.json"
PYMGRIT_REQS = ["pymgrit==1.0.6", "numpy<2", "mpich"]


def pymgrit_python() -> Path:
    """The interpreter of .venv-pymgrit, created with PyMGRIT 1.0.6 if missing."""
    py = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        print(f"creating {VENV.name}/ with {' '.join(PYMGRIT_REQS)} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PYMGRIT_REQS], check=True)
        (VENV / ".installed").touch()
    return py


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


TIMING_CASE = {
    "problem": "dahlquist",
    "n_steps": 16384,
    "lam": -1.0,
    "t_stop": 5.0,
    "levels": 3,
    "cfactor": 2,
    "nu": 1,
    "cycle": "V",
    "nested": False,
    "tol": 1e-10,
    "max_iter": 60,
    "timing": True,
}


def build(case: dict):
    if case["problem"] == "dahlquist":
        return Dahlquist(case["n_steps"], lam=case["lam"], t_stop=case["t_stop"])
    return Heat1D(case["n_steps"], nx=case["nx"], t_stop=case["t_stop"], forcing=Heat1D.manufactured)


def run_pintrain(case: dict) -> dict:
    t0 = time.perf_counter()
    problem = build(case)
    t1 = time.perf_counter()
    res = solve(
        problem,
        levels=case["levels"],
        cfactor=case["cfactor"],
        relax="F" + "CF" * case["nu"],
        cycle=case["cycle"],
        nested=case["nested"],
        tol=case["tol"],
        max_iter=case["max_iter"],
        guess="zero",
    )
    t2 = time.perf_counter()
    return {
        "residuals": res.residuals,
        "iterations": res.iterations,
        "setup_s": t1 - t0,
        "solve_s": t2 - t1,
        "final_state": res.final_state.tolist(),
    }


def best_of(runs: list[dict]) -> dict[str, float]:
    return {key: min(r[key] for r in runs) for key in ("setup_s", "solve_s")}


def describe_case(c: dict) -> str:
    relax = "F" + "CF" * c["nu"]
    nested = " nested" if c["nested"] else ""
    grid = f"L={c['levels']} cf={c['cfactor']} {relax:3s} {c['cycle']}{nested}"
    return f"{c['problem']:9s} N={c['n_steps']:<5d} {grid}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help="where to write the JSON record")
    ap.add_argument("--repeat", type=int, default=3, help="timing repetitions (best of)")
    args = ap.parse_args(argv)

    all_cases = cases()
    py = pymgrit_python()
    timing = [TIMING_CASE] * args.repeat
    child = subprocess.run(
        [str(py), str(CHILD)],
        input=json.dumps(all_cases + timing),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    theirs = json.loads(child.stdout)
    ours = [run_pintrain(c) for c in all_cases]
    ours_timing = [run_pintrain(TIMING_CASE) for _ in range(args.repeat)]

    rows = []
    print(f"{'case':44s} {'pintrain':>8s} {'PyMGRIT':>8s} {'max rel diff of residuals':>26s}")
    for case, a, b in zip(all_cases, ours, theirs[: len(all_cases)], strict=True):
        n = min(a["iterations"], b["iterations"])
        ra, rb = np.array(a["residuals"][:n]), np.array(b["residuals"][:n])
        rel = float(np.max(np.abs(ra - rb) / np.maximum(np.abs(rb), 1e-300))) if n else 0.0
        rows.append({"case": case, "pintrain": a, "pymgrit": b, "max_rel_residual_diff": rel})
        print(f"{describe_case(case):44s} {a['iterations']:8d} {b['iterations']:8d} {rel:26.2e}")

    ours_t = best_of(ours_timing)
    theirs_t = best_of(theirs[len(all_cases) :])
    total_ratio = (theirs_t["setup_s"] + theirs_t["solve_s"]) / (ours_t["setup_s"] + ours_t["solve_s"])
    print(
        f"\n{describe_case(TIMING_CASE)}: iterations pintrain {ours_timing[0]['iterations']}, "
        f"PyMGRIT {theirs[len(all_cases)]['iterations']}"
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
            "pintrain": ours_t,
            "pymgrit": theirs_t,
            "iterations": {
                "pintrain": ours_timing[0]["iterations"],
                "pymgrit": theirs[len(all_cases)]["iterations"],
            },
            "ratio_setup_plus_solve": total_ratio,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
