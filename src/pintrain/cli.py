"""The ``pintrain`` command line.

Exit codes: 0 converged, 1 not converged within ``--max-iter``, 2 bad input (also a problem that
breaks the protocol, or work that cannot fit in memory), 3 diverged, 4 an internal error (a bug:
the traceback is printed for a report), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, outputs
from .errors import DivergenceError, NotConvergedError, PintrainError, gib
from .mgrit import Hierarchy, SolverOptions, describe, serial_solve, solve, with_default_tol
from .mgrit.autotune import AUTO_MIN_STEPS, auto_layout
from .mgrit.options import DEFAULT_TOL
from .training.propagators import COARSE_PROPAGATORS

EXIT_OK, EXIT_NOT_CONVERGED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERNAL = 0, 1, 2, 3, 4


DEFAULT_LEVELS, DEFAULT_CFACTOR = 3, "4"


def add_solver_arguments(
    p: argparse.ArgumentParser, *, levels: int, cfactor: str, tol: float, memory: bool = True, auto: bool = False
) -> None:
    g = p.add_argument_group("MGRIT solver")
    by_model = (
        f" (default: chosen by the cost model from {AUTO_MIN_STEPS} steps on, for the propagators stable at any "
        "spacing; else {})"
    )
    chosen = by_model if auto else " (default {})"
    g.add_argument(
        "--levels",
        type=int,
        default=None if auto else levels,
        help="maximum number of time grids" + chosen.format(levels),
    )
    g.add_argument(
        "--cfactor",
        default=None if auto else cfactor,
        help="coarsening factor, one int or a comma list per level" + chosen.format(cfactor),
    )
    g.add_argument("--relax", default="FCF", help='relaxation: "F", "FCF", "FCFCF", ... (default FCF)')
    g.add_argument("--cycle", default="V", choices=["V", "F"], help="cycle type (default V)")
    by_dtype = "; float32: 100 eps sqrt(N / cfactor), above its round-off floor" if auto else ""
    g.add_argument(
        "--tol",
        type=float,
        default=None if auto else tol,
        help=f"absolute residual tolerance (default {tol:g}{by_dtype})",
    )
    g.add_argument("--rtol", type=float, default=None, help="residual tolerance relative to the first")
    g.add_argument("--max-iter", type=int, default=50, help="maximum MGRIT iterations (default 50)")
    g.add_argument(
        "--nested",
        action="store_true",
        default=None,
        help="initial guess by nested iteration (the default for the torch problems, as in fit)",
    )
    g.add_argument("--no-nested", dest="nested", action="store_false", help="start from copies of u0 instead")
    g.add_argument("--norm", default="l2", choices=["l2", "inf"], help="residual norm (default l2)")
    g.add_argument("--min-coarse", type=int, default=2, help="fewest points on the coarsest grid (default 2)")
    g.add_argument(
        "--max-coarse",
        type=int,
        default=None,
        help="coarsen until a level has at most this many steps (the paper: 10); --levels is then a cap",
    )
    g.add_argument(
        "--guess",
        choices=["initial", "zero"],
        default="initial",
        help="initial value of every point but 0: a copy of w_0, or zero as the paper (default initial)",
    )
    g.add_argument(
        "--storage",
        choices=["full", "c-points"],
        default="full",
        help="keep every point, or only the C-points of each level (about N/cfactor states; F-points are "
        "recomputed; the same answer at the C-points) (default full)",
    )
    if memory:
        g.add_argument("--memory", action="store_true", help="print the hierarchy and memory estimate, and stop")


def options_from_args(args: argparse.Namespace) -> SolverOptions:
    try:
        parts = [int(c) for c in str(DEFAULT_CFACTOR if args.cfactor is None else args.cfactor).split(",")]
    except ValueError:
        raise PintrainError(f"--cfactor={args.cfactor!r} is not allowed: give an int or a comma list of ints") from None
    cfactor: int | tuple[int, ...] = parts[0] if len(parts) == 1 else tuple(parts)
    return SolverOptions(
        levels=DEFAULT_LEVELS if args.levels is None else args.levels,
        cfactor=cfactor,
        relax=args.relax,
        cycle=args.cycle,
        tol=DEFAULT_TOL if args.tol is None else args.tol,
        rtol=args.rtol,
        max_iter=args.max_iter,
        nested=bool(args.nested),
        norm=args.norm,
        min_coarse=args.min_coarse,
        max_coarse=args.max_coarse,
        guess=args.guess,
        storage=args.storage,
    )


def print_iteration(quiet: bool) -> Callable[[int, float], None] | None:
    """A callback that prints one residual line per iteration as it happens (the progress)."""
    if quiet:
        return None
    last: list[float] = []

    def show(it: int, r: float) -> None:
        factor = f"{r / last[0]:10.3e}" if last and last[0] > 0 else f"{'-':>10s}"
        print(f"{it:5d}  {r:12.4e}  {factor}", flush=True)
        last[:] = [r]

    print(f"{'iter':>5s}  {'residual':>12s}  {'factor':>10s}")
    return show


def write_json(path: Path | None, record: dict) -> None:
    if path is None:
        return
    outputs.write_json(path, record)
    print(f"wrote {path}")


def memory_line(n_steps: int, u0: np.ndarray, opts: SolverOptions) -> str:
    """The memory estimate printed before a run (what the solver checks against the free memory)."""
    levels = Hierarchy(n_steps, opts).memory_bytes(u0.size, u0.dtype.itemsize, opts.storage)
    serial = (n_steps + 1) * u0.size * u0.dtype.itemsize
    return (
        f"memory: about {gib(levels)} for MGRIT's level arrays ({opts.storage} storage), {gib(serial)} for the "
        "serial reference's states"
    )


# -- pintrain solve ---------------------------------------------------------------------------
def cmd_solve(args: argparse.Namespace) -> int:
    from .problems import Dahlquist, Heat1D

    opts = options_from_args(args)
    outputs.check_outputs({"--json": args.json})
    problem: Heat1D | Dahlquist
    if args.problem == "heat":
        problem = Heat1D(args.steps, nx=args.nx, t_stop=args.t_stop, forcing=Heat1D.manufactured)
    else:
        problem = Dahlquist(args.steps, lam=args.lam, t_stop=args.t_stop)
    quiet = args.quiet and not args.memory
    if not quiet:
        print(
            f"pintrain solve: {args.problem}, {args.steps} steps, {opts.relax} relaxation, "
            f"{opts.cycle}-cycles, tol {opts.tol:g}"
        )
        print(describe(args.steps, opts))
        print(memory_line(args.steps, np.asarray(problem.initial()), opts))
        print()
    if args.memory:
        return EXIT_OK
    res = solve(problem, options=opts, callback=print_iteration(quiet), gather=True)
    if res.rank != 0:  # under mpiexec: rank 0 holds the gathered states, runs the reference and reports
        return EXIT_OK if res.converged else EXIT_NOT_CONVERGED
    t0 = time.perf_counter()
    ref = serial_solve(problem)
    serial_s = time.perf_counter() - t0
    diff = float(np.abs(res.states - ref).max())
    status = "converged" if res.converged else "NOT converged"
    print(
        f"{status} in {res.iterations} iterations ({res.wall_s:.3f} s); serial time stepping "
        f"{serial_s:.3f} s; max |u_mgrit - u_serial| over all steps = {diff:.2e}"
    )
    write_json(
        args.json,
        {
            "problem": {"name": args.problem, "steps": args.steps},
            "serial": {"wall_s": serial_s},
            "mgrit": res.to_dict(),
            "max_abs_diff": diff,
        },
    )
    return EXIT_OK if res.converged else EXIT_NOT_CONVERGED


# -- pintrain train ---------------------------------------------------------------------------
TORCH_PROBLEMS = ("digits-mlp", "digits-cnn")
PAPER_PROBLEMS = ("paper1", "paper2")


# the flags each kind of problem takes besides --steps, --lr and the coarse propagator's
NUMPY_FLAGS = {
    "xor": ("hidden", "seed", "alpha_growth", "alpha_max", "max_ratio", "sample", "theta"),
    "sine": ("hidden", "batch_size", "seed", "alpha_growth", "alpha_max", "max_ratio", "sample", "theta"),
    "paper1": ("data", "alpha_growth", "alpha_max", "max_ratio", "sample", "theta"),
    "paper2": ("data", "examples", "alpha_growth", "alpha_max", "max_ratio", "sample", "theta"),
}
TORCH_FLAGS = (
    "batch_size", "seed", "max_ratio", "sample", "optimizer", "momentum", "weight_decay", "dtype", "device", "compile",
)  # fmt: skip
TORCH_COARSE = ("auto", "union", "split", "lagged", "curvature")
FLAG_NAMES = {
    "hidden": "--hidden", "batch_size": "--batch-size", "seed": "--seed", "max_ratio": "--max-ratio",
    "sample": "--coarse-sample", "data": "--data", "examples": "--examples", "alpha_growth": "--alpha-growth",
    "alpha_max": "--alpha-max", "optimizer": "--optimizer", "momentum": "--momentum",
    "weight_decay": "--weight-decay", "dtype": "--dtype", "device": "--device", "theta": "--theta",
    "compile": "--compile",
}  # fmt: skip


def given(args: argparse.Namespace) -> dict:
    """The problem settings the user set (None: not given, the problem's own default applies)."""
    names = ("steps", "lr", "coarse", *FLAG_NAMES)
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def problem_from_args(args: argparse.Namespace):
    """The problem named by --problem, built from its own defaults and only the flags the user set."""
    kwargs = given(args)
    torch_problem = args.problem in TORCH_PROBLEMS
    allowed = TORCH_FLAGS if torch_problem else NUMPY_FLAGS[args.problem]
    for name in kwargs:
        if name in FLAG_NAMES and name not in allowed:
            if name in TORCH_FLAGS and not torch_problem and name not in ("batch_size", "seed"):
                raise PintrainError(f"{FLAG_NAMES[name]} applies to the torch problems ({', '.join(TORCH_PROBLEMS)})")
            if name == "seed" and args.problem in PAPER_PROBLEMS:
                raise PintrainError(f"--seed does not apply to {args.problem}: its data and weights are the paper's")
            if name == "batch_size" and args.problem == "xor":
                raise PintrainError("--batch-size does not apply to xor, which trains full-batch")
            if name == "examples" and args.problem == "paper1":
                raise PintrainError("--examples applies to paper2; paper1 has its four XOR samples")
            raise PintrainError(f"{FLAG_NAMES[name]} does not apply to --problem {args.problem}")
    if not torch_problem:
        from .training import model_problem

        return model_problem(args.problem, **kwargs)
    if kwargs.get("coarse", "auto") not in TORCH_COARSE:
        raise PintrainError(
            f"--coarse {args.coarse} is for the numpy problems; {args.problem} takes "
            "'auto', 'union', 'split', 'lagged' or 'curvature'"
        )
    try:
        from .torch.digits import digits_problem
    except ImportError as err:
        raise PintrainError(f"--problem {args.problem} needs PyTorch: pip install 'pintrain[torch]' ({err})") from None
    return digits_problem(args.problem, **kwargs)


def auto_settings(args: argparse.Namespace, problem: Any, opts: SolverOptions) -> Any:
    """The cost model's hierarchy (:func:`pintrain.mgrit.autotune.auto_layout`: at least
    ``AUTO_MIN_STEPS`` steps, a coarse propagator stable at any spacing) when the user set none of
    --levels, --cfactor, --nested, --max-coarse; else None: the settings as given."""
    given_layout = (
        args.levels is not None or args.cfactor is not None or args.nested is not None or args.max_coarse is not None
    )
    return None if given_layout else auto_layout(problem, opts)


def cmd_train(args: argparse.Namespace) -> int:
    from .api import compare

    opts = options_from_args(args)
    outputs.check_outputs({"--json": args.json, "--plot": args.plot})
    problem = problem_from_args(args)
    quiet = args.quiet and not args.memory
    chosen = auto_settings(args, problem, opts)
    if chosen is not None:
        opts = chosen.options
    elif args.nested is None and args.problem in TORCH_PROBLEMS:  # fit's default: a stateful optimizer's
        opts = replace(opts, nested=True)  # slots are empty in copies of u0 (docs/convergence.md)
    if args.tol is None:  # the default: above the round-off floor of the problem's dtype
        opts = with_default_tol(opts, problem)
    if not quiet:
        print(f"pintrain train: {problem.summary()}")
        if chosen is not None:
            print(chosen.describe())
        print(describe(problem.n_steps, opts))
        print(memory_line(problem.n_steps, np.asarray(problem.initial()), opts))
        print()
    if args.memory:
        return EXIT_OK
    rec = compare(problem, opts, callback=print_iteration(quiet))
    if rec is None:  # an MPI rank other than 0: it took part in MGRIT; rank 0 reports
        return EXIT_OK
    s = rec.serial
    if rec.mgrit is None:
        assert rec.failure is not None
        write_json(args.json, rec.to_dict())
        print(f"serial training: final loss {s.final_loss:.4e} in {s.wall_s:.3f} s")
        raise rec.failure
    m = rec.mgrit
    if not quiet:
        print()
    print(f"{'':28s} {'serial':>12s} {'MGRIT':>12s}")
    print(f"{'iterations':28s} {'-':>12s} {m.iterations:12d}")
    print(f"{'wall time (s)':28s} {s.wall_s:12.3f} {m.wall_s:12.3f}")
    print(f"{'final loss':28s} {s.final_loss:12.4e} {m.final_loss:12.4e}")
    for key in s.metrics:
        print(f"{key.replace('_', ' '):28s} {s.metrics[key]:12.4f} {m.metrics[key]:12.4f}")
    where = f"all {problem.n_steps + 1} points" if m.points is None else f"the {len(m.points)} C-points and N kept"
    print(f"max |w_mgrit - w_serial| over {where}: {rec.max_abs_diff:.2e}")
    if quiet:
        print("residuals: " + " ".join(f"{r:.2e}" for r in m.residuals))
    growth = serial_growth(s.losses)
    if m.converged:
        print(f"converged: residual {m.residuals[-1]:.2e} < tol {opts.tol:g}")
    elif growth > SERIAL_BLOWUP:
        print(
            f"NOT converged: serial training itself diverges (its loss grows {growth:.3g}-fold, to "
            f"{s.losses[-1]:.3e}); a trajectory that amplifies every difference cannot be matched to the "
            "tolerance by an iterative method. Lower --lr."
        )
    elif m.stalled:
        print(
            f"NOT converged: the residual stopped at {m.residuals[-1]:.2e} after {m.iterations} iterations, "
            f"above tol {opts.tol:g}: a round-off floor (the trajectory amplifies round-off: raise --tol above "
            "it, or lower --lr) or, far above round-off, an iteration that no longer contracts (a stabler "
            "--coarse, fewer --levels or a smaller --cfactor)"
        )
    else:
        print(
            f"NOT converged in {m.iterations} iterations (residual {m.residuals[-1]:.2e}); "
            "try a stabler --coarse (gauss-newton; split for the torch problems), fewer --levels, a smaller "
            "--cfactor, or more --max-iter"
        )
    record = rec.to_dict()
    write_json(args.json, record)
    if args.plot is not None:
        from .plots import plot_comparison

        plot_comparison(record, args.plot)
        print(f"wrote {args.plot}")
    if m.converged:
        return EXIT_OK
    return EXIT_DIVERGED if growth > SERIAL_BLOWUP else EXIT_NOT_CONVERGED


SERIAL_BLOWUP = 1e3  # serial training whose loss grows this much is itself diverging


def serial_growth(losses: list[float]) -> float:
    """How many times serial training's loss grew from its first value to its largest (inf if not finite)."""
    arr = np.asarray(losses, dtype=float)
    if arr.size == 0:
        return 1.0
    if not np.isfinite(arr).all():
        return float("inf")
    return float(arr.max() / arr[0]) if arr[0] > 0 else 1.0


# -- pintrain reproduce -----------------------------------------------------------------------
def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import reproduce, to_markdown, write

    def progress(title: str) -> None:
        if not args.quiet:
            print(f"running: {title}", file=sys.stderr, flush=True)

    tables = None
    if args.tables is not None:
        tables = [t.strip().upper() if t.strip().upper().startswith("E") else _int(t) for t in args.tables.split(",")]
    if args.jobs < 1:
        raise PintrainError(f"--jobs={args.jobs} is not allowed: give an int >= 1")
    rank0 = _mpi_rank() == 0
    if rank0:
        outputs.check_folder(args.out, "--out")
    record = reproduce(tables, quick=args.quick, jobs=args.jobs, extra=not args.no_extra, progress=progress)
    if not rank0:  # under mpiexec only rank 0 writes files
        return EXIT_OK
    print(to_markdown(record))
    paths = write(record, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise PintrainError(f"--tables: {text!r} is not a table number (1-16, E1-E3)") from None


# -- pintrain bench ---------------------------------------------------------------------------
def _torch_missing() -> str | None:
    """The name of the first of torch and scikit-learn (``pintrain[torch]``) that is not installed."""
    try:
        import sklearn  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        return err.name or "torch"
    return None


def _bench_torch(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    """Part 4 (torch models against the torch.optim loop), or why it did not run."""
    missing = _torch_missing()
    if missing is not None:
        return {"steps": args.torch_steps, "threads": args.threads, "repeat": args.repeat,
                "unavailable": f"{missing} is not installed (pip install 'pintrain[torch]')"}  # fmt: skip
    from .bench_torch import bench_torch

    return bench_torch(args.torch_steps, repeat=args.repeat, threads=args.threads, progress=progress)


def _suite_cases(args: argparse.Namespace) -> list[str]:
    """The convergence suite's cases that ``--suite`` names (checked before anything runs)."""
    if args.suite is None:
        return []
    missing = _torch_missing()
    if missing is not None:
        raise PintrainError(f"--suite needs {missing}: pip install 'pintrain[torch]'")
    from .torch.suite import CASES

    names = list(CASES) if args.suite == "all" else [s for s in str(args.suite).split(",") if s]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise PintrainError(f"--suite={args.suite!r} is not allowed: give 'all' or a comma list of {', '.join(CASES)}")
    if args.suite_steps < 2:
        raise PintrainError(f"--suite-steps={args.suite_steps} is not allowed: give an int >= 2")
    return names


def _bench_suite(args: argparse.Namespace, names: list[str], progress: Callable[[str], None]) -> dict[str, Any]:
    """The convergence suite at ``--suite-steps`` (serial loop and MGRIT, ``--threads`` torch threads)."""
    import torch

    from .torch.suite import CFACTOR, LEVELS, TOL, run_case

    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    rows = []
    try:
        run_case(names[0], 8, comm="serial")  # warm-up (the data set's first load, torch's first calls), not recorded
        for name in names:
            progress(f"suite {name}, N = {args.suite_steps}")
            rows.append(run_case(name, args.suite_steps, comm="serial"))
    finally:
        torch.set_num_threads(before)
    return {"N": args.suite_steps, "threads": args.threads, "levels": LEVELS, "cfactor": CFACTOR, "tol": TOL,
            "rows": rows}  # fmt: skip


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    opts = options_from_args(args)
    try:
        sizes = [int(n) for n in str(args.sizes).split(",")]
    except ValueError:
        raise PintrainError(f"--sizes={args.sizes!r} is not allowed: give a comma list of ints") from None
    if args.quick:
        sizes = [n for n in sizes if n <= 4096] or [min(sizes)]
    for n in sizes:
        if n < 2:
            raise PintrainError(f"--sizes: {n} is not allowed: every N must be >= 2")
    if args.repeat < 1:
        raise PintrainError(f"--repeat={args.repeat} is not allowed: give an int >= 1")
    if args.torch_steps < 2:
        raise PintrainError(f"--torch-steps={args.torch_steps} is not allowed: give an int >= 2")
    if args.threads < 1:
        raise PintrainError(f"--threads={args.threads} is not allowed: give an int >= 1")
    suite = _suite_cases(args)

    if _mpi_rank() == 0:
        outputs.check_folder(args.out, "--out")

    def progress(what: str) -> None:
        if not args.quiet:
            print(f"running: {what}", file=sys.stderr, flush=True)

    record = bench.run(
        args.problem,
        sizes,
        opts,
        args.repeat,
        pymgrit=not args.no_pymgrit,
        venv=args.pymgrit_venv,
        progress=progress,
        coarse_options={} if args.sample is None else {"sample": args.sample},
    )
    if _mpi_rank() != 0:  # parts 4 and the suite are one-process benchmarks: rank 0 runs them alone
        return EXIT_OK
    if not args.no_torch:
        record["torch"] = _bench_torch(args, progress)
    if suite:
        record["suite"] = _bench_suite(args, suite, progress)
    record["command"] = " ".join(["pintrain", *args.argv])
    print(bench.tables(record))
    if "torch" in record:
        from .bench_torch import torch_table

        print("\n" + torch_table(record["torch"]))
    if "suite" in record:
        from .torch.suite import bench_table

        s = record["suite"]
        print(f"\nConvergence suite, N = {s['N']} ({s['levels']} levels, cfactor {s['cfactor']}, tol {s['tol']:g}, "
              f"float64, fit's defaults; {s['threads']} torch thread(s)):\n" + bench_table(s["rows"]))  # fmt: skip
    write_json(args.out / "bench.json", record)
    bench.plot(record, args.out / "bench.png")
    print(f"wrote {args.out / 'bench.png'}")
    converged = all(r["converged"] for r in record["training"]["rows"])
    return EXIT_OK if converged else EXIT_NOT_CONVERGED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pintrain",
        description="Parallel-in-time training of neural networks with multigrid reduction in time (MGRIT).",
    )
    parser.add_argument("--version", action="version", version=f"pintrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ps = sub.add_parser("solve", help="MGRIT on a linear test problem (heat or Dahlquist), checked against serial")
    ps.add_argument("--problem", choices=["heat", "dahlquist"], default="heat", help="test problem (default heat)")
    ps.add_argument("--steps", type=int, default=4096, help="number of time steps N (default 4096)")
    ps.add_argument("--nx", type=int, default=63, help="heat: interior grid points (default 63)")
    ps.add_argument("--lam", type=float, default=-1.0, help="dahlquist: lambda (default -1)")
    ps.add_argument("--t-stop", type=float, default=1.0, help="final time (default 1)")
    ps.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    ps.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    add_solver_arguments(ps, levels=3, cfactor="4", tol=1e-9)
    ps.set_defaults(func=cmd_solve)

    pt = sub.add_parser("train", help="train a model problem serially and by MGRIT, and compare")
    pt.add_argument(
        "--problem",
        choices=["xor", "sine", *PAPER_PROBLEMS, *TORCH_PROBLEMS],
        default="xor",
        help="model problem (default xor; paper1, paper2: Schroder 2017's two; digits-* need pintrain[torch])",
    )
    pt.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps N (default: the problem's, 4096; paper2 1024; digits 1000)",
    )
    pt.add_argument("--lr", type=float, default=None, help="learning rate (default: the problem's)")
    pt.add_argument("--hidden", type=int, default=None, help="xor, sine: hidden units (default: the problem's)")
    pt.add_argument("--batch-size", type=int, default=None, help="mini-batch size (sine 4, digits 32)")
    pt.add_argument("--seed", type=int, default=None, help="seed of the data order and initial weights (default 0)")
    pt.add_argument(
        "--coarse",
        choices=["auto", *COARSE_PROPAGATORS],
        default=None,
        help="coarse propagator (default gauss-newton; paper1/2: solver1; digits: auto, which is curvature "
        "for momentum/Adam and split for SGD). naive, solver1, solver2: Schroder 2017's one step with a "
        "learning rate growing by level",
    )
    pt.add_argument("--alpha-growth", type=float, default=None, help="solver1/2: growth per level (default 2)")
    pt.add_argument("--alpha-max", type=float, default=None, help="naive/solver1/2: cap of the coarse learning rate")
    pt.add_argument(
        "--data",
        choices=["full", "serialized"],
        default=None,
        help="paper1/2: all examples every step, or one example per step (default: serialized for solver2)",
    )
    pt.add_argument("--examples", type=int, default=None, help="paper2: number of training examples (500)")
    pt.add_argument(
        "--max-ratio",
        type=int,
        default=None,
        help="split, lagged: longest sub-interval in fine steps (default 4; digits 2)",
    )
    pt.add_argument(
        "--coarse-sample",
        dest="sample",
        type=int,
        default=None,
        help="coarse steps estimate their gradient from this many of their m batches (default: all)",
    )
    pt.add_argument(
        "--theta",
        type=float,
        default=None,
        help="gauss-newton: implicit weight, 1 (backward Euler, default) to 0.5 (trapezoidal)",
    )
    g = pt.add_argument_group("torch problems (digits-*)")
    g.add_argument(
        "--optimizer", choices=["sgd", "momentum", "nesterov", "adam", "adamw"], default=None, help="(default sgd)"
    )
    g.add_argument("--momentum", type=float, default=None, help="momentum, nesterov: momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, default=None, help="weight decay (default 0; adamw 0.01)")
    g.add_argument("--dtype", choices=["float64", "float32"], default=None, help="(default float64)")
    g.add_argument("--device", default=None, help='where the data, steps and states live: "cuda", "mps" (default cpu)')
    g.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="batched gradients through torch.compile (seconds to compile once; pays on long runs)",
    )
    pt.add_argument("--json", type=Path, default=None, help="write serial and MGRIT results as JSON")
    pt.add_argument("--plot", type=Path, default=None, help="write a PNG of residuals and loss curves")
    pt.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    add_solver_arguments(pt, levels=DEFAULT_LEVELS, cfactor=DEFAULT_CFACTOR, tol=1e-9, auto=True)
    pt.set_defaults(func=cmd_train)

    pr = sub.add_parser(
        "reproduce", help="regenerate the paper's Tables 1-16 beside its numbers, and Figures 6-7 (Markdown, JSON, PNG)"
    )
    pr.add_argument("--out", type=Path, default=Path("reproduction"), help="output folder (default ./reproduction)")
    pr.add_argument("--tables", default=None, help="comma list of tables to run, e.g. 2,3 or E1 (default: all)")
    pr.add_argument("--quick", action="store_true", help="the first N of each table only (about 20 s)")
    pr.add_argument("--jobs", type=int, default=1, help="cells run in this many processes (default 1)")
    pr.add_argument("--no-extra", action="store_true", help="only the paper's tables, not pintrain's own")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    pr.set_defaults(func=cmd_reproduce)
    pb = sub.add_parser(
        "bench", help="time serial training against MGRIT, and pintrain against PyMGRIT 1.0.6 (JSON + PNG)"
    )
    pb.add_argument("--problem", choices=["xor", "sine"], default="xor", help="training problem (default xor)")
    pb.add_argument(
        "--sizes", default="1024,4096,16384,65536", help="training steps N, comma list (default: up to 65536)"
    )
    pb.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs (default 3)")
    pb.add_argument("--quick", action="store_true", help="only N <= 4096 (a smoke run)")
    pb.add_argument("--no-pymgrit", action="store_true", help="skip the PyMGRIT comparison")
    pb.add_argument("--no-torch", action="store_true", help="skip the torch models against the torch.optim loop")
    pb.add_argument("--torch-steps", type=int, default=1000, help="N of the torch models (default 1000)")
    pb.add_argument(
        "--threads", type=int, default=1, help="torch threads for the torch models, both methods alike (default 1)"
    )
    pb.add_argument(
        "--suite",
        default=None,
        help="also run the convergence suite's cases (comma list, or 'all'; docs/convergence.md): iterations, "
        "distance from the serial loop, times",
    )
    pb.add_argument("--suite-steps", type=int, default=1024, help="N of the suite's cases (default 1024)")
    pb.add_argument(
        "--coarse-sample",
        dest="sample",
        type=int,
        default=None,
        help="coarse steps estimate their gradient from this many of their m batches (default: all)",
    )
    pb.add_argument(
        "--pymgrit-venv",
        type=Path,
        default=Path(".venv-pymgrit"),
        help="PyMGRIT's own environment, made with pip on first use (default ./.venv-pymgrit)",
    )
    pb.add_argument("--out", type=Path, default=Path("."), help="folder for bench.json and bench.png (default .)")
    pb.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    add_solver_arguments(pb, levels=4, cfactor="64,8", tol=1e-7, memory=False)
    pb.set_defaults(func=cmd_bench, nested=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    rank = _mpi_rank()
    if rank != 0:  # under mpiexec only rank 0 prints and writes files
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    try:
        return int(args.func(args))
    except DivergenceError as err:
        if rank == 0:
            print(f"pintrain: diverged: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except NotConvergedError as err:
        if rank == 0:
            print(f"pintrain: not converged: {err}", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    except PintrainError as err:
        if rank == 0:
            print(f"pintrain: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pintrain: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `pintrain reproduce | head`
        sys.stderr.close()
        return EXIT_OK
    except Exception:  # not a user's mistake: pintrain's own bug, reported as such (not as "not converged")
        import traceback

        traceback.print_exc()
        print(
            "pintrain: internal error (a bug in pintrain: please report it with the traceback above)", file=sys.stderr
        )
        return EXIT_INTERNAL


def _mpi_rank() -> int:
    from .mgrit.comm import resolve

    return resolve(None).rank


if __name__ == "__main__":
    raise SystemExit(main())
