"""``pintrain bench``: serial training against MGRIT, and pintrain against PyMGRIT, in one run.

Part 1 times a plain loop of fine training steps (``serial_solve``: the same numpy step a user's
loop would call, one weight vector at a time) and MGRIT in one process, to the same answer, for
several N, and counts the work.  Part 2 times pintrain and PyMGRIT 1.0.6 (in its own numpy<2
environment, :mod:`pintrain.peer`) on the same Dahlquist and heat problems with the same settings.
Part 3 says where MGRIT's time goes on the largest N (time in the problem's steps by level, and the
rest: the solver's own work).  All timings are the best of ``repeat`` runs, taken side by side.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .mgrit import SolverOptions, serial_solve, solve
from .mgrit.problem import step_many
from .outputs import save_figure
from .peer import PeerUnavailable, describe_case, run_pintrain, run_pymgrit

# The settings measured for model problem 1 (docs/performance.md): Gauss-Newton coarse steps,
# a first coarsening by 64 (cheap coarse levels, few long intervals), nested iteration, and a
# tolerance that puts every weight within 1e-8 relative of serial training.
TRAINING_OPTIONS = SolverOptions(levels=4, cfactor=(64, 8), relax="FCF", cycle="V", tol=1e-7, nested=True)
TRAINING_SIZES = (1024, 4096, 16384, 65536)

PEER_CASES: list[dict[str, Any]] = [
    {
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
    },
    {
        "problem": "heat",
        "n_steps": 4096,
        "nx": 63,
        "t_stop": 1.0,
        "levels": 3,
        "cfactor": 4,
        "nu": 1,
        "cycle": "V",
        "nested": False,
        "tol": 1e-10,
        "max_iter": 60,
    },
]


class TimedProblem:
    """A transparent wrapper of a problem that adds up the time and rows of its steps by spacing m."""

    def __init__(self, problem: Any) -> None:
        self._problem = problem
        self.n_steps = problem.n_steps
        self.seconds: dict[int, float] = defaultdict(float)
        self.calls: dict[int, int] = defaultdict(int)
        self.rows: dict[int, int] = defaultdict(int)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._problem, name)

    def initial(self) -> np.ndarray:
        return self._problem.initial()

    def _timed(self, m: int, rows: int, fn: Callable[[], np.ndarray]) -> np.ndarray:
        t0 = time.perf_counter()
        out = fn()
        self.seconds[m] += time.perf_counter() - t0
        self.calls[m] += 1
        self.rows[m] += rows
        return out

    def step(self, u: np.ndarray, k: int, m: int) -> np.ndarray:
        return self._timed(m, 1, lambda: self._problem.step(u, k, m))

    def step_many(self, U: np.ndarray, ks: np.ndarray, m: int, out: Any = None) -> np.ndarray:
        """The wrapped problem's own (the solver checks its answer); ``out`` only reaches here when the
        wrapped problem ``steps_into`` (the attribute is the wrapped problem's)."""
        own = getattr(self._problem, "step_many", None)
        if own is None:
            return self._timed(m, U.shape[0], lambda: step_many(self._problem, U, ks, m, out=out))
        return self._timed(m, U.shape[0], lambda: own(U, ks, m) if out is None else own(U, ks, m, out=out))


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The shortest wall time of ``repeat`` calls of ``fn`` (at least one), and the last result."""
    best, out = np.inf, None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_training(
    problem: str = "xor",
    sizes: Sequence[int] = TRAINING_SIZES,
    options: SolverOptions = TRAINING_OPTIONS,
    repeat: int = 3,
    coarse: str | None = None,
    progress: Callable[[str], None] | None = None,
    coarse_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Serial training and MGRIT side by side for every N in ``sizes`` (one process); ``coarse``:
    the coarse propagator (None: the problem's default); each row records the one that ran."""
    from .training import model_problem

    rows = []
    for n in sizes:
        if progress:
            progress(f"training {problem}, N = {n}")
        kwargs = dict(coarse_options or {}) | ({} if coarse is None else {"coarse": coarse})
        p = model_problem(problem, steps=int(n), **kwargs)
        serial_s, ref = best_of(functools.partial(serial_solve, p), repeat)
        mgrit_s, res = best_of(functools.partial(solve, p, options=options, comm="serial"), repeat)
        timed = TimedProblem(p)
        t0 = time.perf_counter()
        solve(timed, options=options, comm="serial")
        profiled_s = time.perf_counter() - t0
        in_steps = sum(timed.seconds.values())
        rel = float(np.abs(res.states - ref).max() / max(np.abs(ref).max(), np.finfo(float).tiny))
        fine = res.step_counts[0]
        auto = _auto_row(p, options, serial_s, ref, repeat)
        rows.append(
            {
                "N": int(n),
                "coarse": p.coarse,
                "serial_s": serial_s,
                "mgrit_s": mgrit_s,
                "ratio_serial_over_mgrit": serial_s / mgrit_s,
                "iterations": res.iterations,
                "converged": res.converged,
                "max_rel_diff": rel,
                "work": {
                    "serial_fine_steps": int(n),
                    "fine_steps_total": int(fine),
                    "fine_steps_per_iteration": fine / max(res.iterations, 1),
                    "fine_steps_total_over_N": fine / n,
                    "steps_by_level": [int(c) for c in res.step_counts],
                },
                "time_by_spacing": {
                    str(m): {"seconds": timed.seconds[m], "calls": timed.calls[m], "rows": timed.rows[m]}
                    for m in sorted(timed.seconds)
                },
                "time_outside_steps_s": profiled_s - in_steps,
                "profiled_s": profiled_s,
                "auto": auto,
            }
        )
    return rows


def _auto_row(p: Any, options: SolverOptions, serial_s: float, ref: np.ndarray, repeat: int) -> dict[str, Any]:
    """The same solve with the hierarchy the cost model chooses (what `pintrain train` does without
    layout flags); the time to measure the step costs is reported beside it."""
    from .mgrit.autotune import choose

    t0 = time.perf_counter()
    choice = choose(p, options, comm="serial")
    measure_s = time.perf_counter() - t0
    mgrit_s, res = best_of(functools.partial(solve, p, options=choice.options, comm="serial"), repeat)
    return {
        "levels": choice.options.levels,
        "cfactor": list(choice.options.cfactor)
        if isinstance(choice.options.cfactor, tuple)
        else choice.options.cfactor,
        "mgrit_s": mgrit_s,
        "measure_s": measure_s,
        "iterations": res.iterations,
        "converged": res.converged,
        "ratio_serial_over_mgrit": serial_s / mgrit_s,
        "max_rel_diff": float(np.abs(res.states - ref).max() / max(np.abs(ref).max(), np.finfo(float).tiny)),
    }


def bench_pymgrit(
    cases: Sequence[dict[str, Any]] = tuple(PEER_CASES), repeat: int = 3, venv: str | os.PathLike = ".venv-pymgrit"
) -> list[dict[str, Any]]:
    """pintrain and PyMGRIT on the same cases: iterations, setup and solve times (best of ``repeat``)."""
    cases = [{**c, "repeat": repeat} for c in cases]
    theirs = run_pymgrit(cases, Path(venv))
    rows = []
    for case, b in zip(cases, theirs, strict=True):
        a = run_pintrain(case)
        rows.append(
            {
                "case": case,
                "pintrain": {k: a[k] for k in ("iterations", "setup_s", "solve_s")},
                "pymgrit": {k: b[k] for k in ("iterations", "setup_s", "solve_s")},
                "ratio_setup": b["setup_s"] / a["setup_s"],
                "ratio_solve": b["solve_s"] / a["solve_s"],
                "ratio_total": (b["setup_s"] + b["solve_s"]) / (a["setup_s"] + a["solve_s"]),
                "final_state_max_diff": float(np.abs(np.subtract(a["final_state"], b["final_state"])).max()),
            }
        )
    return rows


def run(
    problem: str = "xor",
    sizes: Sequence[int] = TRAINING_SIZES,
    options: SolverOptions = TRAINING_OPTIONS,
    repeat: int = 3,
    pymgrit: bool = True,
    venv: str | os.PathLike = ".venv-pymgrit",
    progress: Callable[[str], None] | None = None,
    coarse_options: dict[str, Any] | None = None,
    coarse: str | None = None,
) -> dict[str, Any]:
    """Both comparisons in one run: the record that ``pintrain bench`` writes."""
    rows = bench_training(problem, sizes, options, repeat, coarse, progress=progress, coarse_options=coarse_options)
    record: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "repeat": repeat,
        "training": {
            "problem": problem,
            "coarse": rows[0]["coarse"],
            "coarse_options": dict(coarse_options or {}),
            "options": options.to_dict(),
            "rows": rows,
        },
    }
    if pymgrit:
        if progress:
            progress("pintrain and PyMGRIT 1.0.6 on Dahlquist and heat")
        try:
            record["pymgrit"] = {"rows": bench_pymgrit(repeat=repeat, venv=venv)}
        except PeerUnavailable as err:
            record["pymgrit"] = {"rows": [], "unavailable": str(err)}
    return record


def tables(record: dict[str, Any]) -> str:
    """The comparison tables as text."""
    tr = record["training"]
    opts = SolverOptions(**{**tr["options"], "cfactor": _cf(tr["options"]["cfactor"])})
    out = [
        f"1. Serial training against MGRIT in one process: {tr['problem']}, coarse {tr['coarse']!r}"
        f"{''.join(f' {k}={v}' for k, v in tr.get('coarse_options', {}).items())}, "
        f"{opts.levels} levels, cfactor {_cf_text(opts.cfactor)}, {opts.relax}, {opts.cycle}-cycles"
        f"{', nested' if opts.nested else ''}, tol {opts.tol:g}; best of {record['repeat']}",
        f"{'N':>7s} {'serial (s)':>11s} {'MGRIT (s)':>10s} {'serial/MGRIT':>13s} {'iters':>6s} "
        f"{'max rel diff':>13s} {'fine steps/iter':>16s} {'fine steps/N':>13s}",
    ]
    for r in tr["rows"]:
        w = r["work"]
        out.append(
            f"{r['N']:7d} {r['serial_s']:11.4f} {r['mgrit_s']:10.4f} {r['ratio_serial_over_mgrit']:13.2f} "
            f"{r['iterations']:6d} {r['max_rel_diff']:13.1e} {w['fine_steps_per_iteration']:16.0f} "
            f"{w['fine_steps_total_over_N']:13.1f}"
        )
    out.append("   (serial: N fine steps, one weight vector at a time; MGRIT: batched over the C-intervals)")
    if all("auto" in r for r in tr["rows"]):
        out += ["", "1b. The same with the hierarchy the cost model chooses (pintrain train without layout flags)"]
        out.append(
            f"{'N':>7s} {'settings':>22s} {'MGRIT (s)':>10s} {'serial/MGRIT':>13s} {'iters':>6s} {'measuring (s)':>14s}"
        )
        for r in tr["rows"]:
            a = r["auto"]
            cf = str(a["cfactor"]) if isinstance(a["cfactor"], int) else ",".join(map(str, a["cfactor"]))
            setting = f"{a['levels']} levels, cf {cf}"
            out.append(
                f"{r['N']:7d} {setting:>22s} {a['mgrit_s']:10.4f} "
                f"{a['ratio_serial_over_mgrit']:13.2f} {a['iterations']:6d} {a['measure_s']:14.3f}"
            )
    if "pymgrit" in record:
        out += ["", "2. pintrain against PyMGRIT 1.0.6 (same problem, levels, cfactor, relaxation, tol; zero guess)"]
        pm = record["pymgrit"]
        if pm.get("unavailable"):
            out.append(f"   not run: {pm['unavailable']}")
        else:
            out.append(
                f"{'case':44s} {'iters':>9s} {'setup (s) ours/PyMGRIT':>24s} {'ratio':>7s} "
                f"{'solve (s) ours/PyMGRIT':>24s} {'ratio':>7s} {'total ratio':>12s}"
            )
            for r in pm["rows"]:
                a, b = r["pintrain"], r["pymgrit"]
                out.append(
                    f"{describe_case(r['case']):44s} {a['iterations']:>4d}/{b['iterations']:<4d} "
                    f"{a['setup_s']:11.4f}/{b['setup_s']:<12.4f} {r['ratio_setup']:7.1f} "
                    f"{a['solve_s']:11.4f}/{b['solve_s']:<12.4f} {r['ratio_solve']:7.1f} {r['ratio_total']:12.1f}"
                )
            out.append("   (ratio = PyMGRIT / pintrain; pintrain's setup builds the problem, hierarchy and arrays)")
    last = tr["rows"][-1]
    out += ["", f"3. Where MGRIT's time goes (N = {last['N']}, one profiled run of {last['profiled_s']:.3f} s)"]
    out.append(f"{'level spacing m':>16s} {'calls':>7s} {'rows':>9s} {'seconds':>9s} {'us/row':>8s} {'share':>6s}")
    for m, t in last["time_by_spacing"].items():
        out.append(
            f"{m:>16s} {t['calls']:7d} {t['rows']:9d} {t['seconds']:9.4f} {1e6 * t['seconds'] / t['rows']:8.2f} "
            f"{t['seconds'] / last['profiled_s']:6.0%}"
        )
    rest = last["time_outside_steps_s"]
    out.append(f"{'solver (rest)':>16s} {'':7s} {'':9s} {rest:9.4f} {'':8s} {rest / last['profiled_s']:6.0%}")
    return "\n".join(out)


def plot(record: dict[str, Any], path: str | os.PathLike) -> None:
    """Wall time against N for serial training and MGRIT (and the PyMGRIT ratios, if run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["training"]["rows"]
    pm = record.get("pymgrit", {}).get("rows", [])
    fig, axes = plt.subplots(1, 2 if pm else 1, figsize=(10 if pm else 5.5, 4), squeeze=False)
    ax = axes[0, 0]
    n = [r["N"] for r in rows]
    ax.loglog(n, [r["serial_s"] for r in rows], "o-", label="serial training (loop of fine steps)")
    ax.loglog(n, [r["mgrit_s"] for r in rows], "s-", label="MGRIT, one process (batched)")
    for r in rows:
        ax.annotate(f"{r['ratio_serial_over_mgrit']:.1f}x", (r["N"], r["mgrit_s"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=8)  # fmt: skip
    ax.set_xlabel("training steps N")
    ax.set_ylabel("wall time (s)")
    ax.set_title(f"{record['training']['problem']}: serial against MGRIT")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    if pm:
        ax = axes[0, 1]
        labels = [r["case"]["problem"] for r in pm]
        x = np.arange(len(pm))
        ax.bar(x - 0.2, [r["ratio_setup"] for r in pm], 0.4, label="setup")
        ax.bar(x + 0.2, [r["ratio_solve"] for r in pm], 0.4, label="solve")
        ax.set_yscale("log")
        ax.set_xticks(x, labels)
        ax.set_ylabel("PyMGRIT time / pintrain time")
        ax.set_title("pintrain against PyMGRIT 1.0.6")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, Path(path))
    plt.close(fig)


def _cf(value: Any) -> int | tuple[int, ...]:
    return tuple(value) if isinstance(value, list) else value


def _cf_text(cf: int | tuple[int, ...]) -> str:
    return ",".join(map(str, cf)) if isinstance(cf, tuple) else str(cf)
