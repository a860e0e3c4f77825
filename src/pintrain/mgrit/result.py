"""The outcome of one solve: states, residual history, and the options used."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .options import SolverOptions


@dataclass
class Result:
    """What :func:`pintrain.mgrit.solve` returns.

    ``states`` holds the fine trajectory, row i = state at fine point ``first_index + i`` (the
    whole trajectory on one process; on several ranks each rank's own block, or everything on
    rank 0 with ``gather=True``); ``residuals[i]`` is the residual norm after iteration ``i + 1``;
    ``convergence_factors[i]`` is ``residuals[i + 1] / residuals[i]``.  ``stalled``: the solve
    stopped early, not converged, because the residual stopped decreasing (a round-off floor, or
    an iteration that no longer contracts).
    ``points``: with ``storage="c-points"`` the fine points the rows of ``states`` hold (the fine
    C-points and N, at any rank count); None when the rows are consecutive from ``first_index``.
    """

    states: np.ndarray
    residuals: list[float]
    iterations: int
    converged: bool
    wall_s: float
    options: SolverOptions
    hierarchy: list[dict[str, int]] = field(default_factory=list)
    step_counts: list[int] = field(default_factory=list)
    first_index: int = 0
    final: np.ndarray | None = None
    ranks: int = 1
    rank: int = 0
    stalled: bool = False
    points: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        return self.hierarchy[0]["points"] - 1 if self.hierarchy else self.states.shape[0] - 1

    @property
    def final_state(self) -> np.ndarray:
        """The state at fine point N (on every rank)."""
        return self.final if self.final is not None else self.states[-1]

    def state(self, k: int) -> np.ndarray:
        """The converged state at fine point ``k`` (0..N; on several ranks, one this rank holds)."""
        n = self.n_steps
        if not (0 <= k <= n):
            raise IndexError(f"fine point {k} is outside 0..{n}")
        if self.points is not None:
            i = int(np.searchsorted(self.points, k))
            if i < self.points.size and self.points[i] == k:
                return self.states[i]
            raise IndexError(
                f"fine point {k} is not kept: storage='c-points' returns the fine C-points and N "
                "(solve with storage='full' for every point)"
            )
        i = k - self.first_index
        if not (0 <= i < self.states.shape[0]):
            raise IndexError(
                f"fine point {k} is held by another rank (this is rank {self.rank}, holding "
                f"{self.first_index}..{self.first_index + self.states.shape[0] - 1}); solve with gather=True"
            )
        return self.states[i]

    @property
    def convergence_factors(self) -> list[float]:
        r = self.residuals
        return [r[i + 1] / r[i] if r[i] > 0 else 0.0 for i in range(len(r) - 1)]

    def to_dict(self, include_states: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "iterations": self.iterations,
            "converged": self.converged,
            "stalled": self.stalled,
            "residuals": [float(r) for r in self.residuals],
            "convergence_factors": [float(c) for c in self.convergence_factors],
            "wall_s": self.wall_s,
            "options": self.options.to_dict(),
            "hierarchy": self.hierarchy,
            "step_counts": list(self.step_counts),
            "ranks": self.ranks,
            "final_state": self.final_state.tolist(),
        }
        if include_states:
            d["states"] = self.states.tolist()
            if self.points is not None:
                d["points"] = self.points.tolist()
        return d

    def to_json(self, include_states: bool = False, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(include_states), **kwargs)
