"""Runs inside .venv-pymgrit (PyMGRIT 1.0.6, numpy<2): solves the cases given as JSON on stdin.

Prints one JSON list: per case, PyMGRIT's residual history, iteration count and timings (the best
of ``case["repeat"]`` runs, default 1).  Run by :mod:`pintrain.peer` as a script, never imported:
it is kept free of pintrain imports, since pintrain needs numpy>=2 and this environment has numpy<2.
"""

import json
import sys
import time

import numpy as np
from pymgrit.core.mgrit import Mgrit
from pymgrit.core.simple_setup_problem import simple_setup_problem
from pymgrit.dahlquist.dahlquist import Dahlquist
from pymgrit.heat.heat_1d import Heat1D


def manufactured(x, t):
    return -np.sin(np.pi * x) * (np.sin(t) - np.pi**2 * np.cos(t))


def build(case):
    n = case["n_steps"]
    if case["problem"] == "dahlquist":
        return Dahlquist(constant_lambda=case["lam"], method="BE", t_start=0, t_stop=case["t_stop"], nt=n + 1)
    return Heat1D(
        x_start=0,
        x_end=1,
        nx=case["nx"] + 2,
        a=1.0,
        init_cond=lambda x: np.sin(np.pi * x),
        rhs=manufactured,
        t_start=0,
        t_stop=case["t_stop"],
        nt=n + 1,
    )


def run_once(case):
    t0 = time.perf_counter()
    problem = simple_setup_problem(problem=build(case), level=case["levels"], coarsening=case["cfactor"])
    mgrit = Mgrit(
        problem=problem,
        cf_iter=case["nu"],
        cycle_type=case["cycle"],
        nested_iteration=case["nested"],
        tol=case["tol"],
        max_iter=case["max_iter"],
        logging_lvl=30,
    )
    t1 = time.perf_counter()
    info = mgrit.solve()
    t2 = time.perf_counter()
    conv = [float(c) for c in info["conv"]]
    u_final = np.atleast_1d(np.asarray(mgrit.u[0][-1].get_values(), dtype=float)).tolist()
    return {
        "residuals": conv,
        "iterations": len(conv),
        "setup_s": t1 - t0,
        "solve_s": t2 - t1,
        "final_state": u_final,
    }


def run(case):
    runs = [run_once(case) for _ in range(int(case.get("repeat", 1)))]
    best = dict(runs[-1])
    best["setup_s"] = min(r["setup_s"] for r in runs)
    best["solve_s"] = min(r["solve_s"] for r in runs)
    return best


if __name__ == "__main__":
    cases = json.load(sys.stdin)
    json.dump([run(c) for c in cases], sys.stdout)
