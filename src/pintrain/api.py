"""What a researcher calls: train serially or by MGRIT, and compare the two on one problem."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import DivergenceError, NotConvergedError, OptionError
from .mgrit import Result, SolverOptions, solve
from .mgrit.comm import resolve
from .mgrit.hierarchy import Hierarchy


class TrainingRun:
    """One training run: the state after every step, the time, and the solver's result (MGRIT).

    ``points``: the fine points whose states ``states`` holds (all, or the ones ``keep`` asked
    for).  ``losses`` (the whole-training-set loss at each kept state) and ``step_losses`` (the loss
    of each step's batch before the step, what a training loop logs; the loop's own record for a
    serial run of the torch backend) are computed when first asked for."""

    def __init__(
        self,
        method: str,
        states: np.ndarray,
        wall_s: float,
        problem: Any,
        solver: Result | None = None,
        points: np.ndarray | None = None,
        step_losses: np.ndarray | None = None,
    ) -> None:
        self.method = method
        self.states = states
        self.wall_s = wall_s
        self.problem = problem
        self.solver = solver
        self.points = np.arange(states.shape[0]) if points is None else points
        self._step_losses = step_losses
        self._losses: np.ndarray | None = None

    @property
    def whole(self) -> bool:
        """Whether ``states`` holds the whole trajectory (not one MPI rank's block, not a subset)."""
        first = 0 if self.solver is None else self.solver.first_index
        return first == 0 and self.states.shape[0] == self.problem.n_steps + 1

    @property
    def losses(self) -> np.ndarray:
        if self._losses is None:
            self._losses = self.problem.losses(self.states) if self.points[0] == 0 else np.empty(0)
        return self._losses

    def step_losses(self) -> np.ndarray:
        if self._step_losses is not None:
            return self._step_losses
        return self.problem.step_losses(self.states) if self.whole else np.empty(0)

    @property
    def final_weights(self) -> np.ndarray:
        return self.states[-1]

    @property
    def final_loss(self) -> float:
        return float(self.problem.losses(self.states[-1:])[0]) if self._losses is None else float(self._losses[-1])


def train(
    problem: Any,
    method: str = "mgrit",
    options: SolverOptions | None = None,
    callback: Callable[[int, float], None] | None = None,
    comm: Any = None,
    allow_unconverged: bool = False,
    keep: Any = "all",
) -> TrainingRun:
    """Train ``problem`` with ``method="serial"`` (a loop of steps) or ``"mgrit"`` (``options``).

    ``keep``: the states the run returns: ``"all"``, ``"final"`` (the initial and the last: a
    serial run then takes memory independent of the number of steps) or an int K (every K-th, and
    the last: checkpoints).  MGRIT itself holds every point of the fine level while it solves,
    unless ``options.storage == "c-points"``: it then holds and returns the fine C-points and the
    last point (``"all"`` means those; K must be a multiple of the fine cfactor).

    An MGRIT solve that stops above its tolerance raises :class:`~pintrain.errors.NotConvergedError`
    (its ``result`` is this run) unless ``allow_unconverged=True``: an unconverged answer never
    passes for serial training's.

    ``problem`` is a :class:`~pintrain.training.TrainingProblem` (any backend); its
    ``serial_states()`` is the serial run (for torch: the usual torch.optim loop).

    Under MPI (``comm``, or mpiexec) the MGRIT weights of all steps are gathered on rank 0, whose
    run has the losses; the other ranks' runs hold their own blocks and no losses.
    """
    if method == "serial":
        points = problem.kept_points(keep)  # checked before the work
        t0 = time.perf_counter()
        points, states, step_losses = problem.serial_run(keep)
        return TrainingRun("serial", states, time.perf_counter() - t0, problem, None, points, step_losses)
    if method != "mgrit":
        raise OptionError("method", method, '"serial" or "mgrit"')
    options = options or SolverOptions()
    c_points = options.storage == "c-points"
    if c_points and keep not in ("all", "final"):
        problem.kept_points(keep)  # checked before the work
        cf = options.cfactor_at(0)
        if len(Hierarchy(problem.n_steps, options)) > 1 and keep % cf:
            want = f'"all", "final" or a multiple of the fine cfactor {cf} (storage="c-points")'
            raise OptionError("keep", keep, want)
    # a table the coarse step built before this solve (the cost model's prepare(), or an earlier solve of
    # this problem) counts in every solve that uses it, as if built there
    before = float(getattr(problem, "setup_s", 0.0))
    res = solve(problem, options=options, callback=callback, comm=comm, gather=True)
    res.wall_s += before
    run = TrainingRun("mgrit", res.states, res.wall_s, problem, res, res.points)
    if keep != "all" and res.points is not None and res.first_index == 0 and res.rank == 0:
        points = problem.kept_points(keep)
        rows = np.searchsorted(res.points, points)
        run = TrainingRun("mgrit", res.states[rows], res.wall_s, problem, res, points)
    elif keep != "all" and run.whole:
        step_losses = run.step_losses()
        points = problem.kept_points(keep)
        run = TrainingRun("mgrit", res.states[points], res.wall_s, problem, res, points, step_losses)
    if not res.converged and not allow_unconverged:
        raise not_converged(res, run)
    return run


def not_converged(res: Result, partial: Any) -> NotConvergedError:
    """The error for a solve that stopped above its tolerance, carrying what it reached."""
    how = (
        f"stalled after {res.iterations} iterations: the residual {res.residuals[-1]:.3e} stopped decreasing above tol "
        f"{res.options.tol:g}: a round-off floor (the trajectory amplifies round-off: a tolerance above it, or a "
        "smaller learning rate) or, far above round-off, an iteration that no longer contracts (a stabler coarse "
        "propagator, fewer levels or a smaller cfactor)"
        if res.stalled
        else f"did not converge in {res.iterations} iterations (residual {res.residuals[-1]:.3e} > tol "
        f"{res.options.tol:g}; raise max_iter, or use a stabler coarse propagator, fewer levels or a smaller cfactor)"
    )
    return NotConvergedError(
        f"MGRIT {how}: these weights are not serial training's. Pass allow_unconverged=True to take them anyway "
        "(the error's .result holds them)",
        result=partial,
    )


@dataclass
class RunSummary:
    """One method's side of a comparison: its loss curve (whole training set), time and metrics."""

    losses: list[float]
    final_loss: float
    wall_s: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class MgritSummary(RunSummary):
    iterations: int = 0
    residuals: list[float] = field(default_factory=list)
    convergence_factors: list[float] = field(default_factory=list)
    converged: bool = False
    stalled: bool = False
    propagator_applications: list[int] = field(default_factory=list)
    points: list[int] | None = None  # the fine points of ``losses`` (storage="c-points"); None: all


@dataclass
class Comparison:
    """Serial and MGRIT training of one problem side by side (:func:`compare`); ``to_dict`` is the
    record ``pintrain train --json`` writes, ``from_dict`` reads it back.  When MGRIT diverged,
    ``mgrit`` is None and ``failure`` is the :class:`DivergenceError` (level and step named)."""

    problem: dict[str, Any]
    options: SolverOptions
    ranks: int
    serial: RunSummary
    mgrit: MgritSummary | None = None
    failure: DivergenceError | None = None
    hierarchy: list[dict[str, int]] = field(default_factory=list)
    max_abs_diff: float | None = None
    max_abs_diff_final: float | None = None
    max_abs_loss_diff: float | None = None

    @property
    def diverged(self) -> bool:
        return self.failure is not None

    @property
    def converged(self) -> bool:
        return self.mgrit is not None and self.mgrit.converged

    def to_dict(self) -> dict[str, Any]:
        serial = asdict(self.serial)
        if not serial["metrics"]:
            del serial["metrics"]
        out: dict[str, Any] = {
            "problem": self.problem,
            "options": self.options.to_dict(),
            "ranks": self.ranks,
            "serial": serial,
        }
        if self.failure is not None:
            err = self.failure
            out["mgrit"] = {
                "diverged": True,
                "converged": False,
                "error": str(err),
                "iterations": err.iteration,
                "level": err.level,
                "step": err.step,
                "residuals": err.residuals,
            }
            return out
        assert self.mgrit is not None
        mgrit = {"diverged": False} | asdict(self.mgrit)
        if not mgrit["metrics"]:
            del mgrit["metrics"]
        return out | {
            "hierarchy": self.hierarchy,
            "mgrit": mgrit,
            "max_abs_diff": self.max_abs_diff,
            "max_abs_diff_final": self.max_abs_diff_final,
            "max_abs_loss_diff": self.max_abs_loss_diff,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Comparison:
        m = dict(record["mgrit"])
        failure = mgrit = None
        if m.pop("diverged"):
            failure = DivergenceError(
                m["error"], iteration=m["iterations"], level=m["level"], step=m["step"], residuals=m["residuals"]
            )
        else:
            mgrit = MgritSummary(**m)
        return cls(
            problem=record["problem"],
            options=SolverOptions.from_dict(record["options"]),
            ranks=record["ranks"],
            serial=RunSummary(**record["serial"]),
            mgrit=mgrit,
            failure=failure,
            hierarchy=record.get("hierarchy", []),
            max_abs_diff=record.get("max_abs_diff"),
            max_abs_diff_final=record.get("max_abs_diff_final"),
            max_abs_loss_diff=record.get("max_abs_loss_diff"),
        )


def compare(
    problem: Any,
    options: SolverOptions,
    callback: Callable[[int, float], None] | None = None,
    comm: Any = None,
) -> Comparison | None:
    """Serial and MGRIT training of the same problem, side by side.

    If MGRIT diverges, the comparison keeps the serial run and the error (``failure``: the message
    naming level and step, and the residuals up to that point).  Under MPI every rank takes part in
    MGRIT; rank 0 alone runs the serial reference and returns the comparison, the others None.
    """
    ranks = resolve(comm)
    mgrit: TrainingRun | None = None
    failure: DivergenceError | None = None
    try:
        mgrit = train(problem, "mgrit", options, callback, comm=ranks, allow_unconverged=True)
    except DivergenceError as err:
        failure = err
    if ranks.rank != 0:
        return None
    serial = train(problem, "serial")
    out = Comparison(
        problem=problem.describe(),
        options=options,
        ranks=ranks.size,
        serial=RunSummary(
            serial.losses.tolist(), serial.final_loss, serial.wall_s, problem.metrics(serial.final_weights)
        ),
        failure=failure,
    )
    if mgrit is None:
        return out
    res = mgrit.solver
    assert res is not None
    at = slice(None) if res.points is None else res.points  # storage="c-points": the points MGRIT kept
    diff = np.abs(mgrit.states - serial.states[at])
    out.hierarchy = res.hierarchy
    out.mgrit = MgritSummary(
        losses=mgrit.losses.tolist(),
        final_loss=mgrit.final_loss,
        wall_s=mgrit.wall_s,
        metrics=problem.metrics(mgrit.final_weights),
        iterations=res.iterations,
        residuals=res.residuals,
        convergence_factors=res.convergence_factors,
        converged=res.converged,
        stalled=res.stalled,
        propagator_applications=res.step_counts,
        points=None if res.points is None else res.points.tolist(),
    )
    out.max_abs_diff = float(diff.max())
    out.max_abs_diff_final = float(diff[-1].max())
    out.max_abs_loss_diff = float(np.abs(mgrit.losses - serial.losses[at]).max())
    return out
