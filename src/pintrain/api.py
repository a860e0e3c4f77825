"""What a researcher calls: train serially or by MGRIT, and compare the two on one problem."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DivergenceError, NotConvergedError, OptionError
from .mgrit import Result, SolverOptions, serial_solve, solve
from .mgrit.comm import resolve


@dataclass
class TrainingRun:
    """One training run: the weights after every step, the training loss after every step, the time."""

    method: str
    states: np.ndarray
    losses: np.ndarray
    wall_s: float
    solver: Result | None = None

    @property
    def final_weights(self) -> np.ndarray:
        return self.states[-1]

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1])


def train(
    problem: Any,
    method: str = "mgrit",
    options: SolverOptions | None = None,
    callback: Callable[[int, float], None] | None = None,
    comm: Any = None,
    allow_unconverged: bool = False,
) -> TrainingRun:
    """Train ``problem`` with ``method="serial"`` (a loop of steps) or ``"mgrit"`` (``options``).

    An MGRIT solve that stops above its tolerance raises :class:`~pintrain.errors.NotConvergedError`
    (its ``result`` is this run) unless ``allow_unconverged=True``: an unconverged answer never
    passes for serial training's.

    ``problem`` is a :class:`~pintrain.training.TrainingProblem` or a
    :class:`~pintrain.torch.TorchProblem`; its ``serial_states()``, if it has one, is the serial
    run (for torch: the usual torch.optim loop), else a loop of its fine steps; ``losses(states)``
    is the loss curve reported.

    Under MPI (``comm``, or mpiexec) the MGRIT weights of all steps are gathered on rank 0, whose
    run has the losses; the other ranks' runs hold their own blocks and no losses.
    """
    if method == "serial":
        t0 = time.perf_counter()
        serial = getattr(problem, "serial_states", None)
        states = serial() if serial is not None else serial_solve(problem)
        wall = time.perf_counter() - t0
        return TrainingRun("serial", states, problem.losses(states), wall)
    if method != "mgrit":
        raise OptionError("method", method, '"serial" or "mgrit"')
    res = solve(problem, options=options or SolverOptions(), callback=callback, comm=comm, gather=True)
    whole = res.first_index == 0 and res.states.shape[0] == problem.n_steps + 1
    losses = problem.losses(res.states) if whole else np.empty(0)
    run = TrainingRun("mgrit", res.states, losses, res.wall_s, res)
    if not res.converged and not allow_unconverged:
        raise not_converged(res, run)
    return run


def not_converged(res: Result, partial: Any) -> NotConvergedError:
    """The error for a solve that stopped above its tolerance, carrying what it reached."""
    how = (
        f"stalled after {res.iterations} iterations: the residual {res.residuals[-1]:.3e} stopped changing above tol "
        f"{res.options.tol:g} (a round-off floor: the trajectory amplifies round-off; a tolerance above it, or a "
        "smaller learning rate)"
        if res.stalled
        else f"did not converge in {res.iterations} iterations (residual {res.residuals[-1]:.3e} > tol "
        f"{res.options.tol:g}; raise max_iter, or use a stabler coarse propagator, fewer levels or a smaller cfactor)"
    )
    return NotConvergedError(
        f"MGRIT {how}: these weights are not serial training's. Pass allow_unconverged=True to take them anyway "
        "(the error's .result holds them)",
        result=partial,
    )


def compare(
    problem: Any,
    options: SolverOptions,
    callback: Callable[[int, float], None] | None = None,
    comm: Any = None,
) -> dict[str, Any] | None:
    """Serial and MGRIT training of the same problem, side by side (the record ``--json`` writes).

    If MGRIT diverges, the record keeps the serial run and says so under ``mgrit``: ``diverged``,
    ``error`` (the message naming level and step), and the residuals up to that point.  Under MPI
    every rank takes part in MGRIT; rank 0 alone runs the serial reference and returns the record,
    the others return None.
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
    record: dict[str, Any] = {
        "problem": problem.describe(),
        "options": options.to_dict(),
        "ranks": ranks.size,
        "serial": {"losses": serial.losses.tolist(), "final_loss": serial.final_loss, "wall_s": serial.wall_s},
    }
    metrics = getattr(problem, "metrics", None)
    if metrics is not None:
        record["serial"]["metrics"] = metrics(serial.final_weights)
    if failure is not None:
        record["mgrit"] = {
            "diverged": True,
            "converged": False,
            "error": str(failure),
            "iterations": failure.iteration,
            "level": failure.level,
            "step": failure.step,
            "residuals": failure.residuals,
        }
        return record
    assert mgrit is not None and mgrit.solver is not None
    diff = np.abs(mgrit.states - serial.states)
    return record | {
        "hierarchy": mgrit.solver.hierarchy,
        "mgrit": {
            "diverged": False,
            "iterations": mgrit.solver.iterations,
            "residuals": mgrit.solver.residuals,
            "convergence_factors": mgrit.solver.convergence_factors,
            "converged": mgrit.solver.converged,
            "stalled": mgrit.solver.stalled,
            "losses": mgrit.losses.tolist(),
            "final_loss": mgrit.final_loss,
            "wall_s": mgrit.wall_s,
            "propagator_applications": mgrit.solver.step_counts,
            **({"metrics": metrics(mgrit.final_weights)} if metrics is not None else {}),
        },
        "max_abs_diff": float(diff.max()),
        "max_abs_diff_final": float(diff[-1].max()),
        "max_abs_loss_diff": float(np.abs(mgrit.losses - serial.losses).max()),
    }
