"""``pintrain reproduce``: the tables of the paper's numerical section, regenerated.

Shape of the paper's results: MGRIT iterations (and the mean convergence factor) against the
number of training steps, the number of levels and the coarsening factor, and F against FCF
relaxation, for two model problems.  Each table is run with the paper's coarse propagator and with
the stable Gauss-Newton one.  The paper's own numbers could not be read here (see
docs/reproduction.md), so the "paper" entries say so instead of inventing figures.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import DivergenceError
from .mgrit import solve
from .training import model_problem

COARSE = ("paper", "gauss-newton")
PAPER_NUMBERS: dict[str, Any] = {}  # none reachable; see docs/reproduction.md
TOL = 1e-9
MAX_ITER = 60


def run_case(problem_name: str, steps: int, coarse: str, levels: int, cfactor: int, relax: str) -> dict[str, Any]:
    problem = model_problem(problem_name, steps=steps, coarse=coarse)
    case = {
        "problem": problem_name,
        "steps": steps,
        "coarse": coarse,
        "levels": levels,
        "cfactor": cfactor,
        "relax": relax,
    }
    t0 = time.perf_counter()
    try:
        res = solve(problem, levels=levels, cfactor=cfactor, relax=relax, tol=TOL, max_iter=MAX_ITER)
    except DivergenceError as err:
        return case | {
            "status": "diverged",
            "level": err.level,
            "iterations": err.iteration,
            "wall_s": time.perf_counter() - t0,
        }
    factors = [f for f in res.convergence_factors if f > 0]
    mean = math.exp(sum(math.log(f) for f in factors) / len(factors)) if factors else 0.0
    return case | {
        "status": "converged" if res.converged else "not converged",
        "iterations": res.iterations,
        "mean_factor": mean,
        "levels_used": len(res.hierarchy),
        "wall_s": time.perf_counter() - t0,
    }


def cell(r: dict[str, Any]) -> str:
    if r["status"] == "diverged":
        return f"div (L{r['level']})"
    if r["status"] == "not converged":
        return f"> {MAX_ITER}"
    return f"{r['iterations']} ({r['mean_factor']:.2f})"


def tables(quick: bool = False) -> list[dict[str, Any]]:
    """Definitions of the tables: title, row and column labels, and the case of each cell."""
    steps_list = [256, 1024] if quick else [256, 1024, 4096, 16384]
    n_mid = 512 if quick else 4096
    level_list = [2, 3] if quick else [2, 3, 4, 5]
    cf_list = [2, 4] if quick else [2, 4, 8]
    out = []
    for name in ("xor", "sine"):
        out.append(
            {
                "title": f"{name}: iterations against the number of training steps N (2 levels, cfactor 4, FCF)",
                "rows": [f"N = {n}" for n in steps_list],
                "cols": [f"coarse '{c}'" for c in COARSE],
                "cases": [[(name, n, c, 2, 4, "FCF") for c in COARSE] for n in steps_list],
            }
        )
        for coarse in COARSE:
            out.append(
                {
                    "title": f"{name}, coarse propagator '{coarse}': iterations against levels and cfactor "
                    f"(N = {n_mid}, FCF)",
                    "rows": [f"{lv} levels" for lv in level_list],
                    "cols": [f"cfactor {cf}" for cf in cf_list],
                    "cases": [[(name, n_mid, coarse, lv, cf, "FCF") for cf in cf_list] for lv in level_list],
                }
            )
        out.append(
            {
                "title": f"{name}: F against FCF relaxation (N = {n_mid}, 3 levels, cfactor 4)",
                "rows": ["F", "FCF", "FCFCF"],
                "cols": [f"coarse '{c}'" for c in COARSE],
                "cases": [[(name, n_mid, c, 3, 4, relax) for c in COARSE] for relax in ("F", "FCF", "FCFCF")],
            }
        )
    return out


def reproduce(quick: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every table; returns ``{"tables": [...]}`` with each cell's result."""
    done = []
    for tab in tables(quick):
        if progress:
            progress(tab["title"])
        results = [[run_case(*case) for case in row] for row in tab["cases"]]
        done.append({k: v for k, v in tab.items() if k != "cases"} | {"results": results})
    return {"tol": TOL, "max_iter": MAX_ITER, "quick": quick, "paper_numbers": PAPER_NUMBERS, "tables": done}


def to_markdown(record: dict[str, Any]) -> str:
    lines = [
        "Cells: MGRIT iterations to residual < "
        f"{record['tol']:g} (mean convergence factor); `div (Lk)`: diverged, first on level k; "
        f"`> {record['max_iter']}`: not converged. \"paper's figure\": the paper's number for the cell; n/a: "
        "not available (see docs/reproduction.md).",
        "",
    ]
    for tab in record["tables"]:
        lines += [f"### {tab['title']}", ""]
        header = ["", *tab["cols"], "paper's figure"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for label, row in zip(tab["rows"], tab["results"], strict=True):
            lines.append("| " + " | ".join([label, *[cell(r) for r in row], "n/a"]) + " |")
        lines.append("")
    return "\n".join(lines)


def write(record: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "tables.md", out / "tables.json"
    md.write_text(to_markdown(record))
    js.write_text(json.dumps(record, indent=1))
    return md, js
