"""``pintrain reproduce``: Schroder (2017)'s Tables 1-16 and Figures 6-7, beside the paper's numbers.

Every table of the paper is a :class:`TableSpec`: a model problem (:mod:`pintrain.training.paper`),
a solver (``naive``, ``solver1``, ``solver2``: :mod:`pintrain.training.propagators`), a cycle, the
learning rates and the training-run lengths N, with the paper's iterations and rho for each N
(``../shared/paper-notes.md``).  The paper's solver settings are used throughout: cfactor 2, FCF
relaxation, levels coarsened until at most 10 steps remain (two-level tables: 2 levels), initial
guess zero at every point but 0, halting tolerance 1e-9 * sqrt(N) on the l2 norm of the residual
at the fine C-points after the F-relaxation that ends a cycle, at most 50 iterations.

rho is the geometric mean of the per-iteration convergence factors, ``(r_k / r_1)^(1/(k-1))``:
where the paper's r_0 is taken is not spelled out (docs/reproduction.md says what it moves).
Figures 6-7 use the paper's cost model (:func:`paper_sigma`) on our iteration counts and on the
paper's, and, beside them, pintrain's own critical-path count (:class:`pintrain.mgrit.Hierarchy`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DivergenceError, OptionError
from .mgrit import Hierarchy, SolverOptions, serial_solve, solve
from .outputs import check_folder, save_figure, write_json, write_text
from .training import model_problem

MAX_ITER = 50  # the paper's cap ("50+")
MAX_COARSE = 10  # coarsen until the coarsest level has at most this many steps
TOL = 1e-9  # times sqrt(N)
N_P1 = (100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600)
N_P2 = (40, 80, 160, 320, 640, 1280)
N_P2B = (100, 200, 400, 800, 1600, 3200, 6400, 12800)


@dataclass(frozen=True)
class TableSpec:
    """One table: what is solved, for which N, and what the paper reports (None: "50+" or none)."""

    table: int | str
    title: str
    problem: str
    coarse: str
    cycle: str  # "two-level", "V" or "F"
    lr: float
    Ns: tuple[int, ...]
    paper_iterations: tuple[int | None, ...] | None = None
    paper_rho: tuple[float | None, ...] | None = None
    alpha_max: float | None = None
    alpha_growth: float | None = None
    examples: int | None = None
    note: str = ""

    @property
    def paper(self) -> bool:
        return self.paper_iterations is not None


PAPER_TABLES: tuple[TableSpec, ...] = (
    TableSpec(1, "Problem 1, naive solver, two-level, alpha(b) = 1", "paper1", "naive", "two-level", 1.0, N_P1,
              (14, 19, 24, 31, 40, 49, None, None, None), (0.31, 0.43, 0.48, 0.59, 0.66, 0.72, None, None, None)),
    TableSpec(2, "Problem 1, Solver 1, two-level, alpha(b) = 1", "paper1", "solver1", "two-level", 1.0, N_P1,
              (6, 6, 6, 6, 6, 6, 6, 6, 5), (0.10, 0.10, 0.10, 0.10, 0.09, 0.09, 0.08, 0.08, 0.07), alpha_max=8.0),
    TableSpec(3, "Problem 1, Solver 1, F-cycle, alpha(b) = 1", "paper1", "solver1", "F", 1.0, N_P1,
              (6, 6, 7, 7, 7, 8, 11, 16, 21), (0.10, 0.10, 0.09, 0.10, 0.09, 0.07, 0.17, 0.24, 0.34), alpha_max=8.0),
    TableSpec(4, "Problem 1, Solver 1, F-cycle, alpha(b) = 0.5", "paper1", "solver1", "F", 0.5, N_P1,
              (5, 5, 5, 6, 6, 5, 6, 9, 12), (0.07, 0.08, 0.08, 0.06, 0.05, 0.04, 0.05, 0.07, 0.18), alpha_max=8.0),
    TableSpec(5, "Problem 1, Solver 2, two-level, alpha(b) = 1", "paper1", "solver2", "two-level", 1.0, N_P1,
              (10, 12, 15, 18, 20, 20, 20, 20, 19), (0.18, 0.23, 0.28, 0.36, 0.40, 0.39, 0.39, 0.38, 0.38),
              alpha_max=8.0),
    TableSpec(6, "Problem 1, Solver 2, F-cycle, alpha(b) = 1", "paper1", "solver2", "F", 1.0, N_P1,
              (10, 12, 15, 21, 26, 27, 29, 41, 50), (0.18, 0.23, 0.29, 0.40, 0.47, 0.47, 0.50, 0.60, 0.99),
              alpha_max=8.0),
    TableSpec(7, "Problem 1, Solver 2, F-cycle, alpha(b) = 0.1, alpha(max) = 30", "paper1", "solver2", "F", 0.1, N_P1,
              (5, 5, 5, 6, 7, 8, 10, 13, 14), (0.05, 0.06, 0.07, 0.11, 0.10, 0.14, 0.15, 0.25, 0.24), alpha_max=30.0),
    TableSpec(8, "Problem 2, naive solver, two-level, alpha(b) = 0.1", "paper2", "naive", "two-level", 0.1, N_P2,
              (9, 13, 19, 36, 48, 50), (0.14, 0.27, 0.38, 0.63, 0.69, 0.88)),
    TableSpec(9, "Problem 2, Solver 1, two-level, alpha(b) = 0.1, alpha(max) = 0.2", "paper2", "solver1", "two-level",
              0.1, N_P2, (9, 50, 50, 50, 50, 50), (0.13, None, None, None, None, None), alpha_max=0.2,
              note="the paper gives rho 1.01-1.02 for the cells N >= 80 without saying which is which"),
    TableSpec(10, "Problem 2, naive solver, two-level, alpha(b) = 0.025", "paper2", "naive", "two-level", 0.025, N_P2,
              (8, 12, 17, 23, 31, 43), (0.11, 0.24, 0.37, 0.49, 0.61, 0.70)),
    TableSpec(11, "Problem 2, Solver 1, two-level, alpha(b) = 0.025, alpha(max) = 0.2", "paper2", "solver1",
              "two-level", 0.025, N_P2, (5, 7, 11, 16, 25, 37), (0.06, 0.12, 0.23, 0.36, 0.53, 0.63), alpha_max=0.2),
    TableSpec(12, "Problem 2 (50 examples), Solver 1, two-level, alpha(b) = 0.025, alpha(max) = 0.2", "paper2",
              "solver1", "two-level", 0.025, N_P2B, (4, 5, 7, 11, 14, 13, 14, 14),
              (0.04, 0.07, 0.15, 0.27, 0.35, 0.37, 0.39, 0.39), alpha_max=0.2, examples=50),
    TableSpec(13, "Problem 2, Solver 2, two-level, alpha(b) = 0.025, alpha(max) = 0.2", "paper2", "solver2",
              "two-level", 0.025, N_P2B, (4, 4, 5, 5, 6, 6, 7, 11), (0.05, 0.07, 0.07, 0.09, 0.10, 0.13, 0.18, 0.29),
              alpha_max=0.2),
    TableSpec(14, "Problem 2, Solver 2, F-cycle, alpha(b) = 0.025, alpha(max) = 0.2", "paper2", "solver2", "F", 0.025,
              N_P2B, (4, 4, 5, 5, 6, 6, 8, 13), (0.05, 0.07, 0.07, 0.09, 0.10, 0.13, 0.17, 0.34), alpha_max=0.2),
    TableSpec(15, "Problem 2, Solver 2, V-cycle, alpha(b) = 0.025, alpha(max) = 0.2", "paper2", "solver2", "V", 0.025,
              N_P2B, (4, 5, 6, 7, 8, 9, 11, 20), (0.05, 0.08, 0.10, 0.13, 0.17, 0.20, 0.28, 0.47), alpha_max=0.2),
    TableSpec(16, "Problem 2, Solver 2, F-cycle, slow growth 1.25 (eq. 18), alpha(b) = 0.025, alpha(max) = 0.2",
              "paper2", "solver2", "F", 0.025, N_P2B, (4, 4, 4, 5, 6, 6, 7, 10),
              (0.04, 0.06, 0.07, 0.08, 0.09, 0.12, 0.14, 0.27), alpha_max=0.2, alpha_growth=1.25),
)  # fmt: skip

EXTRA_TABLES: tuple[TableSpec, ...] = (
    TableSpec("E1", "Problem 1, Gauss-Newton coarse steps, F-cycle, alpha(b) = 1 (beside Table 3)", "paper1",
              "gauss-newton", "F", 1.0, N_P1),
    TableSpec("E2", "Problem 1, Solver 1, V-cycle, alpha(b) = 1 (the paper: 'quite poor', not tabulated)", "paper1",
              "solver1", "V", 1.0, N_P1, alpha_max=8.0),
    TableSpec("E3", "Problem 2, Solver 2 without the cap alpha(max), F-cycle, alpha(b) = 0.025 (beside Table 14)",
              "paper2", "solver2", "F", 0.025, N_P2B),
)  # fmt: skip

ALL_TABLES = PAPER_TABLES + EXTRA_TABLES
QUICK_N = {"paper1": 2, "paper2": 1}  # --quick: the first N of each table (two for problem 1)


def solver_options(spec: TableSpec, n: int) -> SolverOptions:
    """The paper's settings for one cell."""
    two = spec.cycle == "two-level"
    return SolverOptions(
        levels=2 if two else 64,
        cfactor=2,
        relax="FCF",
        cycle="V" if two else spec.cycle,
        tol=TOL * math.sqrt(n),
        max_iter=MAX_ITER,
        guess="zero",
        max_coarse=None if two else MAX_COARSE,
    )


def make_problem(spec: TableSpec, n: int) -> Any:
    kwargs: dict[str, Any] = {"steps": n, "lr": spec.lr, "coarse": spec.coarse, "alpha_max": spec.alpha_max}
    if spec.alpha_growth is not None:
        kwargs["alpha_growth"] = spec.alpha_growth
    if spec.examples is not None:
        kwargs["examples"] = spec.examples
    return model_problem(spec.problem, **kwargs)


def paper_sigma(iterations: int, levels: int, cycle: str) -> float:
    """The paper's count of sequential propagator applications (its Sections 3.4.3, 3.7): per
    V-cycle ``17 + 8 (L - 2)`` on L levels, per F-cycle the sum of the V-cycles on 2..L levels."""
    if levels < 2:
        return float("nan")

    def v(L: int) -> int:
        return 17 + 8 * (L - 2)

    per = v(levels) if cycle in ("V", "two-level") else sum(v(j) for j in range(2, levels + 1))
    return float(iterations * per)


def run_cell(spec: TableSpec, n: int) -> dict[str, Any]:
    """One cell: MGRIT with the paper's settings, rho, and the distance to serial training."""
    opts = solver_options(spec, n)
    problem = make_problem(spec, n)
    hier = Hierarchy(n, opts)
    cell: dict[str, Any] = {"N": n, "levels": len(hier)}
    t0 = time.perf_counter()
    try:
        res = solve(problem, options=opts)
    except DivergenceError as err:
        return cell | {"status": "diverged", "iterations": None, "rho": None, "iterations_run": err.iteration,
                       "diverged_level": err.level, "wall_s": time.perf_counter() - t0}  # fmt: skip
    wall = time.perf_counter() - t0
    r = res.residuals
    k = res.iterations
    rho = (r[-1] / r[0]) ** (1.0 / (k - 1)) if k > 1 and r[0] > 0 else 0.0
    serial = serial_solve(problem)
    diff = float(np.max(np.abs(res.states - serial)))
    path = hier.iteration_cost(1, opts.cycle)["critical_path"]
    return cell | {
        "status": "converged" if res.converged else "not converged",
        "iterations": k if res.converged else None,
        "iterations_run": k,
        "stalled": res.stalled,
        "rho": rho,
        "residuals": [float(x) for x in r],
        "max_abs_diff": diff,
        "wall_s": wall,
        "critical_path_per_iteration": path,
    }


def select(tables: list[int | str] | None, extra: bool = True) -> list[TableSpec]:
    """The specs to run: all (the paper's, then ours unless ``extra=False``), or those named."""
    specs = list(ALL_TABLES if extra else PAPER_TABLES)
    if tables is None:
        return specs
    known = {str(s.table): s for s in ALL_TABLES}
    out = []
    for t in tables:
        if str(t) not in known:
            raise OptionError("tables", t, f"table numbers 1-16 or E1-E{len(EXTRA_TABLES)}")
        out.append(known[str(t)])
    return out


def _cell_job(args: tuple[int | str, int]) -> dict[str, Any]:
    table, n = args
    spec = next(s for s in ALL_TABLES if str(s.table) == str(table))
    return run_cell(spec, n)


def reproduce(
    tables: list[int | str] | None = None,
    quick: bool = False,
    jobs: int = 1,
    extra: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the tables; returns ``{"tables": [...], "extra_tables": [...], ...}`` (see the module doc).

    ``jobs > 1`` runs cells in that many processes, one BLAS thread each."""
    specs = select(tables, extra)
    jobs_list = []
    for spec in specs:
        ns = spec.Ns[: QUICK_N.get(spec.problem, 1)] if quick else spec.Ns
        jobs_list += [(spec.table, n) for n in ns]
    t0 = time.perf_counter()
    results: dict[tuple[Any, int], dict[str, Any]] = {}
    if jobs > 1:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"  # inherited by the workers, which start fresh (spawn)
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for job, res in zip(jobs_list, pool.map(_cell_job, jobs_list), strict=True):
                results[job] = res
                if progress:
                    progress(f"table {job[0]}, N = {job[1]}: {_cell_text(res)}")
    else:
        for job in jobs_list:
            results[job] = _cell_job(job)
            if progress:
                progress(f"table {job[0]}, N = {job[1]}: {_cell_text(results[job])}")
    record: dict[str, Any] = {
        "settings": {
            "cfactor": 2,
            "relax": "FCF",
            "tol": f"{TOL:g} * sqrt(N)",
            "norm": "l2 at the fine C-points",
            "max_iter": MAX_ITER,
            "max_coarse": MAX_COARSE,
            "guess": "zero",
            "rho": "(r_k / r_1)^(1/(k-1))",
        },
        "quick": quick,
        "wall_s": time.perf_counter() - t0,
        "tables": [],
        "extra_tables": [],
    }
    for spec in specs:
        cells = [results[(spec.table, n)] for n in spec.Ns if (spec.table, n) in results]
        cell_ns = [c["N"] for c in cells]
        entry: dict[str, Any] = {
            "table": spec.table,
            "title": spec.title,
            "problem": spec.problem,
            "coarse": spec.coarse,
            "cycle": spec.cycle,
            "lr": spec.lr,
            "alpha_max": spec.alpha_max,
            "alpha_growth": spec.alpha_growth,
            "examples": spec.examples,
            "N": cell_ns,
            "iterations": [c["iterations"] for c in cells],
            "rho": [c["rho"] for c in cells],
            "cells": cells,
        }
        if spec.paper:
            assert spec.paper_iterations is not None and spec.paper_rho is not None
            idx = [spec.Ns.index(n) for n in cell_ns]
            entry["paper_iterations"] = [spec.paper_iterations[i] for i in idx]
            entry["paper_rho"] = [spec.paper_rho[i] for i in idx]
            entry["note"] = spec.note
            record["tables"].append(entry)
        else:
            record["extra_tables"].append(entry)
    return record


def _cell_text(c: dict[str, Any]) -> str:
    if c["status"] == "diverged":
        return f"div (L{c['diverged_level']})"
    if c["iterations"] is None:
        if c.get("stalled"):
            return f"stall ({c['residuals'][-1]:.0e})"
        return f"{MAX_ITER}+"
    return f"{c['iterations']} ({c['rho']:.2f})"


def _paper_text(it: int | None, rho: float | None) -> str:
    if it is None:
        return f"{MAX_ITER}+"
    return f"{it} ({rho:.2f})" if rho is not None else f"{it}"


def differs(ours: int | None, paper: int | None) -> bool:
    """True when a cell differs from the paper's by more than one iteration (both at the cap: same)."""
    a = MAX_ITER if ours is None else ours
    b = MAX_ITER if paper is None else paper
    return abs(a - b) > 1


def to_markdown(record: dict[str, Any]) -> str:
    s = record["settings"]
    lines = [
        f"Settings: cfactor {s['cfactor']}, {s['relax']}, tolerance {s['tol']} ({s['norm']}), at most "
        f"{s['max_iter']} iterations, coarsest level at most {s['max_coarse']} steps (two-level: 2 levels), "
        f"initial guess {s['guess']}. Cells: iterations (rho = {s['rho']}); `{MAX_ITER}+`: not converged in "
        f"{MAX_ITER}; `stall (r)`: not converged, the residual stopped decreasing at r (a round-off floor, "
        "or no contraction); "
        "`div (Lk)`: diverged on level k. **Bold**: more than one iteration from the paper.",
        "",
        "## The paper's tables",
        "",
    ]
    for tab in record["tables"]:
        lines += _table_md(tab, with_paper=True)
    if record["extra_tables"]:
        lines += ["## Beyond the paper (pintrain's own tables)", ""]
        for tab in record["extra_tables"]:
            lines += _table_md(tab, with_paper=False)
    return "\n".join(lines)


def _table_md(tab: dict[str, Any], with_paper: bool) -> list[str]:
    head = f"### Table {tab['table']}: {tab['title']}" if with_paper else f"### {tab['table']}: {tab['title']}"
    lines = [head, "", "| N | " + " | ".join(str(n) for n in tab["N"]) + " |", "|---" * (len(tab["N"]) + 1) + "|"]
    ours = []
    for i, c in enumerate(tab["cells"]):
        text = _cell_text(c)
        if with_paper and differs(c["iterations"], tab["paper_iterations"][i]):
            text = f"**{text}**"
        ours.append(text)
    lines.append("| pintrain | " + " | ".join(ours) + " |")
    if with_paper:
        paper = [_paper_text(it, r) for it, r in zip(tab["paper_iterations"], tab["paper_rho"], strict=True)]
        lines.append("| paper | " + " | ".join(paper) + " |")
    lines.append("| levels | " + " | ".join(str(c["levels"]) for c in tab["cells"]) + " |")
    diffs = [c["max_abs_diff"] for c in tab["cells"] if c["status"] == "converged"]
    if diffs:
        lines += ["", f"max |w_MGRIT - w_serial| over the converged cells: {max(diffs):.1e}"]
    if tab.get("note"):
        lines += ["", f"Note: {tab['note']}."]
    return [*lines, ""]


# -- Figures 6 and 7 -------------------------------------------------------------------------------
FIGURES = {
    6: ("Figure 6: problem 1, F-cycles", (3, 4, 7)),
    7: ("Figure 7: problem 2, Solver 2", (14, 15, 16)),
}


def speedups(tab: dict[str, Any]) -> dict[str, list[float | None]]:
    """Potential speedup N / sigma per cell: the paper's model on our and on the paper's iteration
    counts, and N / (iterations x pintrain's critical path per iteration)."""
    ours, paper, path = [], [], []
    for i, c in enumerate(tab["cells"]):
        n, lv = c["N"], c["levels"]
        it = c["iterations"]
        ours.append(None if it is None else n / paper_sigma(it, lv, tab["cycle"]))
        p_it = tab.get("paper_iterations", [None] * len(tab["cells"]))[i]
        paper.append(None if p_it is None else n / paper_sigma(p_it, lv, tab["cycle"]))
        cp = c.get("critical_path_per_iteration")
        path.append(None if it is None or cp is None else n / (it * cp))
    return {"model_ours": ours, "model_paper": paper, "critical_path_ours": path}


def plot_figures(record: dict[str, Any], out: Path) -> list[Path]:
    """Figures 6 and 7 as PNGs (only those whose tables are in ``record``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_number = {t["table"]: t for t in record["tables"]}
    written = []
    for number, (title, table_ids) in FIGURES.items():
        present = [by_number[t] for t in table_ids if t in by_number]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for n_color, tab in enumerate(present):
            color = f"C{n_color}"
            sp = speedups(tab)
            label = f"Table {tab['table']} ({tab['cycle']}-cycle, alpha(b) = {tab['lr']:g})"
            ax.semilogx(tab["N"], _nan(sp["model_paper"]), "--", color=color, marker="s", alpha=0.6,
                        label=f"{label}: paper's iterations")  # fmt: skip
            ax.semilogx(tab["N"], _nan(sp["model_ours"]), "-", color=color, marker="o", label="  pintrain's iterations")
            ax.semilogx(tab["N"], _nan(sp["critical_path_ours"]), ":", color=color, marker="^",
                        label="  pintrain's critical path")  # fmt: skip
        ax.set_xlabel("N (training steps)")
        ax.set_ylabel("potential speedup N / sigma")
        ax.set_title(f"{title}: paper's cost model (dashed, solid) and pintrain's (dotted)")
        ax.title.set_fontsize(9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"figure{number}.png"
        save_figure(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def _nan(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def write(record: dict[str, Any], out: Path) -> list[Path]:
    """``tables.md``, ``tables.json`` and the figures into ``out`` (each written whole, then renamed)."""
    check_folder(out, "--out")
    md, js = out / "tables.md", out / "tables.json"
    write_text(md, to_markdown(record))
    write_json(js, record)
    return [md, js, *plot_figures(record, out)]


__all__ = ["EXTRA_TABLES", "PAPER_TABLES", "TableSpec", "paper_sigma", "reproduce", "to_markdown", "write"]
