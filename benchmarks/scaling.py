"""Wall time of serial training against MGRIT on P MPI ranks, and the cost model's predicted speedup.

    python benchmarks/scaling.py                     # P = 1, 2 (this machine has 2 cores)
    python benchmarks/scaling.py --ranks 1,2,4,8     # on a bigger machine

Serial training (a plain loop of SGD steps) is timed in this process; MGRIT is timed under
``mpiexec -n P`` (the one next to this Python, from the ``mpi`` extra) for each P, best of
``--repeat``, on the same problem and options.  The table gives speedup = serial / MGRIT(P).
The cost model then predicts the speedup at P = 2..1024 from the hierarchy, the measured
iteration count and the measured cost of one propagator application per level: per iteration
and level, time = visits x cost_l x max(work_l / P, path_l) (work spread over P ranks, but never
below the sequential chain inside one C-interval; the coarsest level is sequential).
Beside the times, the critical path the run actually walked: the propagator applications each
rank made (all levels; rank 0 also solves the small levels alone), their maximum over the ranks,
and the speedup that implies, N / that maximum (a coarse application counted as one).
``--problem digits-adam`` runs the digits MLP with Adam on torch states (float64, ``split``), one
torch thread per rank, against the plain torch.optim loop.
Results go to ``benchmarks/results/scaling.json`` (``scaling_<problem>.json`` for other problems).
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

from pintrain.mgrit import Hierarchy, SolverOptions, serial_solve, solve, step_many
from pintrain.training import model_problem

OUT = Path(__file__).resolve().parent / "results" / "scaling.json"
PROBLEMS = {
    "sine": ({"name": "sine", "steps": 8192, "coarse": "gauss-newton"}, {"levels": 4, "cfactor": 8}),
    "digits-adam": (
        {"name": "digits-mlp", "steps": 2048, "optimizer": "adam", "coarse": "split"},
        {"levels": 3, "cfactor": 4},
    ),
}
PROBLEM, _LAYOUT = PROBLEMS["sine"]
OPTIONS = {**_LAYOUT, "relax": "FCF", "tol": 1e-9, "max_iter": 60}


def select(name: str) -> None:
    global PROBLEM, OPTIONS
    PROBLEM, layout = PROBLEMS[name]
    OPTIONS = {**layout, "relax": "FCF", "tol": 1e-9, "max_iter": 60}


def build():
    kwargs = {k: v for k, v in PROBLEM.items() if k != "name"}
    if PROBLEM["name"] == "digits-mlp":
        import torch

        from pintrain.torch.digits import digits_problem

        torch.set_num_threads(1)
        return digits_problem(PROBLEM["name"], **kwargs)
    return model_problem(PROBLEM["name"], **kwargs)


def serial_run(problem):
    """The serial reference: the torch.optim loop for a torch problem, else the loop of fine steps."""
    if PROBLEM["name"] == "digits-mlp":
        return problem.serial_run("final")[1]
    return serial_solve(problem)


def worker() -> None:
    """Under mpiexec: one timed MGRIT solve; rank 0 prints a JSON line."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    problem = build()
    comm.Barrier()
    t0 = time.perf_counter()
    res = solve(problem, comm=comm, **OPTIONS)
    comm.Barrier()
    wall = time.perf_counter() - t0
    per_rank = comm.gather(int(sum(res.step_counts)), root=0)
    if comm.rank == 0:
        print(
            json.dumps(
                {
                    "wall_s": wall,
                    "iterations": res.iterations,
                    "converged": res.converged,
                    "final_state": res.final_state.tolist(),
                    "applications_per_rank": per_rank,
                }
            )
        )


def cost_per_application(problem, hier: Hierarchy, batch: int = 256) -> list[float]:
    """Seconds per propagator application on each level, measured in batches of ``batch`` starts."""
    u0 = problem.initial()
    out = []
    for lev in hier.levels:
        n = max(1, min(batch, lev.n_steps))
        U = np.repeat(u0[None], n, axis=0)
        ks = np.arange(n, dtype=np.int64) * lev.spacing
        t0 = time.perf_counter()
        reps = 0
        while time.perf_counter() - t0 < 0.2:
            step_many(problem, U, ks, lev.spacing)
            reps += 1
        out.append((time.perf_counter() - t0) / (reps * n))
    return out


def predicted_speedup(
    hier: Hierarchy, nu: int, iterations: int, costs: list[float], t_fine: float, ranks: list[int]
) -> dict[int, float]:
    per_level = hier.level_costs(nu)
    serial = hier.n_steps * t_fine
    out = {}
    for p in ranks:
        t = 0.0
        for lvl, c in enumerate(per_level):
            if hier[lvl].is_coarsest:
                t += costs[lvl] * c["work"]
            else:
                t += costs[lvl] * max(c["work"] / p, c["path"])
        out[p] = serial / (iterations * t)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", default="1,2", help="comma list of rank counts to run (default 1,2)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions, best of (default 3)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--problem", choices=sorted(PROBLEMS), default="sine")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    select(args.problem)
    if args.problem != "sine" and args.out == OUT:
        args.out = OUT.with_name(f"scaling_{args.problem}.json")
    if args.worker:
        worker()
        return 0

    problem = build()
    serial_times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ref = serial_run(problem)
        serial_times.append(time.perf_counter() - t0)
    t_serial = min(serial_times)
    mpiexec = Path(sys.executable).with_name("mpiexec")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "HYDRA_"))}
    rows = []
    for p in [int(x) for x in args.ranks.split(",")]:
        runs = []
        for _ in range(args.repeat):
            proc = subprocess.run(
                [str(mpiexec), "-n", str(p), sys.executable, __file__, "--worker", "--problem", args.problem],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        best = min(runs, key=lambda r: r["wall_s"])
        diff = float(np.abs(np.array(best["final_state"]) - ref[-1]).max())
        rows.append(
            {
                "ranks": p,
                "wall_s": best["wall_s"],
                "iterations": best["iterations"],
                "converged": best["converged"],
                "speedup": t_serial / best["wall_s"],
                "max_abs_diff_final": diff,
                "applications_per_rank": best["applications_per_rank"],
                "walked_critical_path": max(best["applications_per_rank"]),
                "implied_speedup": problem.n_steps / max(best["applications_per_rank"]),
            }
        )

    opts = SolverOptions(**OPTIONS)
    hier = Hierarchy(problem.n_steps, opts)
    costs = cost_per_application(problem, hier)
    model_ranks = [2**i for i in range(1, 11)]
    pred = predicted_speedup(hier, opts.nu, rows[0]["iterations"], costs, t_serial / problem.n_steps, model_ranks)

    print(f"problem: {PROBLEM}, options: {OPTIONS}")
    print(f"serial training: {t_serial:.3f} s ({problem.n_steps} steps)\n")
    print(
        f"{'ranks':>5s} {'MGRIT (s)':>10s} {'iterations':>10s} {'speedup':>8s} {'|w_N - serial|':>15s} "
        f"{'applications per rank':>24s} {'N / max':>8s}"
    )
    for r in rows:
        print(
            f"{r['ranks']:5d} {r['wall_s']:10.3f} {r['iterations']:10d} {r['speedup']:8.3f} "
            f"{r['max_abs_diff_final']:15.2e} {str(r['applications_per_rank']):>24s} {r['implied_speedup']:8.3f}"
        )
    print(
        "\ncost model (measured seconds per application: "
        + ", ".join(f"level {i}: {c * 1e6:.1f} us" for i, c in enumerate(costs))
        + ")"
    )
    print(f"{'ranks':>5s} {'predicted speedup':>18s}")
    for p in model_ranks:
        print(f"{p:5d} {pred[p]:18.2f}")
    record = {
        "command": f"python benchmarks/scaling.py --problem {args.problem} --ranks {args.ranks}",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "problem": PROBLEM,
        "options": OPTIONS,
        "serial_s": t_serial,
        "mgrit": rows,
        "cost_per_application_s": costs,
        "predicted_speedup": pred,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
