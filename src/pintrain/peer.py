"""PyMGRIT 1.0.6 as a peer: the same Dahlquist and heat cases solved by both libraries.

PyMGRIT needs numpy<2, so it runs in its own virtual environment (``.venv-pymgrit/`` by default,
made on first use with pip) from the script ``_pymgrit_child.py``, which reads the cases as JSON on
stdin and prints its results.  A case is a dict: ``problem`` ("dahlquist" with ``lam``, or "heat"
with ``nx``), ``n_steps``, ``t_stop``, ``levels``, ``cfactor``, ``nu`` (CF sweeps after the first
F: 0 = F, 1 = FCF), ``cycle``, ``nested``, ``tol``, ``max_iter`` and optionally ``repeat`` (timings
are the best of that many runs).  Both solvers start from a zero guess (PyMGRIT's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .mgrit import solve
from .problems import Dahlquist, Heat1D

CHILD = Path(__file__).resolve().parent / "_pymgrit_child.py"
PYMGRIT_REQS = ["pymgrit==1.0.6", "numpy<2", "mpich"]
DEFAULT_VENV = Path(".venv-pymgrit")


class PeerUnavailable(RuntimeError):
    """PyMGRIT's environment could not be made or run (no network for pip, no venv module, ...)."""


def pymgrit_python(venv: Path = DEFAULT_VENV) -> Path:
    """The interpreter of ``venv``, created with PyMGRIT 1.0.6 and numpy<2 if missing."""
    venv = Path(venv)
    py = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        print(f"creating {venv}/ with {' '.join(PYMGRIT_REQS)} (once) ...", file=sys.stderr, flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", *PYMGRIT_REQS], check=True)
        except (OSError, subprocess.CalledProcessError) as err:
            raise PeerUnavailable(f"could not make {venv}/ with {' '.join(PYMGRIT_REQS)}: {err}") from err
        (venv / ".installed").touch()
    return py


def run_pymgrit(cases: list[dict[str, Any]], venv: Path = DEFAULT_VENV) -> list[dict[str, Any]]:
    """PyMGRIT's results for ``cases``: residuals, iterations, setup_s, solve_s, final_state."""
    py = pymgrit_python(venv)
    child = subprocess.run(
        [str(py), str(CHILD)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if child.returncode != 0:
        raise PeerUnavailable(f"PyMGRIT run failed (exit {child.returncode}): {child.stderr.strip()[-2000:]}")
    return json.loads(child.stdout)


def build(case: dict[str, Any]) -> Dahlquist | Heat1D:
    if case["problem"] == "dahlquist":
        return Dahlquist(case["n_steps"], lam=case["lam"], t_stop=case["t_stop"])
    return Heat1D(case["n_steps"], nx=case["nx"], t_stop=case["t_stop"], forcing=Heat1D.manufactured)


def run_pintrain_once(case: dict[str, Any]) -> dict[str, Any]:
    """pintrain on one case.  ``setup_s``: building the problem, the hierarchy and the level arrays;
    ``solve_s``: the iterations (``Result.wall_s``)."""
    t0 = time.perf_counter()
    problem = build(case)
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
    total = time.perf_counter() - t0
    return {
        "residuals": res.residuals,
        "iterations": res.iterations,
        "setup_s": total - res.wall_s,
        "solve_s": res.wall_s,
        "final_state": res.final_state.tolist(),
    }


def run_pintrain(case: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_pintrain_once`, timings the best of ``case["repeat"]`` runs (default 1)."""
    runs = [run_pintrain_once(case) for _ in range(int(case.get("repeat", 1)))]
    best = dict(runs[-1])
    best["setup_s"] = min(r["setup_s"] for r in runs)
    best["solve_s"] = min(r["solve_s"] for r in runs)
    return best


def describe_case(c: dict[str, Any]) -> str:
    relax = "F" + "CF" * c["nu"]
    nested = " nested" if c["nested"] else ""
    grid = f"L={c['levels']} cf={c['cfactor']} {relax:3s} {c['cycle']}{nested}"
    return f"{c['problem']:9s} N={c['n_steps']:<5d} {grid}"
