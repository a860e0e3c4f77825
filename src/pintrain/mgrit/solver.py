"""Nonlinear (FAS) MGRIT in one process, vectorised across the independent points of each level.

Level l holds the states of its points in one 2-D array ``U[l]`` (row j = point j) and, on coarse
levels, the FAS right-hand side ``G[l]``; the equations are ``U[j] - Phi_l(U[j-1]) = G[j]`` with
``U[0]`` fixed.  Relaxation, restriction (injection), the coarsest serial solve and the FAS
correction follow Falgout et al. (2014) and XBraid's nonlinear formulation.  Every batch of
independent propagations is one ``step_many`` call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from ..errors import DivergenceError, OptionError
from .hierarchy import Hierarchy, Level
from .options import SolverOptions
from .problem import Problem, step_many
from .result import Result


class _Solver:
    def __init__(self, problem: Problem, options: SolverOptions) -> None:
        self.problem = problem
        self.opt = options
        self.hier = Hierarchy(problem.n_steps, options)
        u0 = _initial_state(problem)
        d = u0.size
        self.U = [np.empty((lev.n_points, d), dtype=u0.dtype) for lev in self.hier.levels]
        self.G: list[np.ndarray | None] = [None] + [
            np.zeros((lev.n_points, d), dtype=u0.dtype) for lev in self.hier.levels[1:]
        ]
        for U in self.U:
            U[0] = u0
        self.fresh = [False] * len(self.hier)  # F-points consistent with C-points and G
        self.phi_cache: list[np.ndarray | None] = [None] * len(self.hier)
        self.step_counts = [0] * len(self.hier)
        self.state_bound = options.divergence_factor * max(1.0, float(np.abs(u0).max()))
        self.iteration = 0

    # -- propagation -------------------------------------------------------------------------
    def prop(self, lvl: int, rows: np.ndarray) -> np.ndarray:
        """Propagate level ``lvl``'s points ``rows`` one step of that level (one batched call)."""
        lev = self.hier[lvl]
        self.step_counts[lvl] += rows.size
        return step_many(self.problem, self.U[lvl][rows], rows * lev.spacing, lev.spacing)

    def _add_g(self, lvl: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        G = self.G[lvl]
        return values if G is None else values + G[rows]

    # -- relaxation --------------------------------------------------------------------------
    def f_relax(self, lvl: int) -> None:
        lev = self.hier[lvl]
        U = self.U[lvl]
        starts = lev.c_points
        for p in range(1, lev.cfactor):
            rows = starts[starts + p <= lev.n_steps] + (p - 1)
            if rows.size == 0:
                break
            U[rows + 1] = self._add_g(lvl, rows + 1, self.prop(lvl, rows))
        self.fresh[lvl] = True
        self.phi_cache[lvl] = None

    def phi_at_c(self, lvl: int) -> np.ndarray:
        """``Phi(U[c-1])`` for every C-point c > 0 (cached until the F-points change)."""
        if self.phi_cache[lvl] is None:
            rows = self.hier[lvl].c_points[1:]
            self.phi_cache[lvl] = self.prop(lvl, rows - 1)
        return self.phi_cache[lvl]

    def c_relax(self, lvl: int) -> None:
        rows = self.hier[lvl].c_points[1:]
        self.U[lvl][rows] = self._add_g(lvl, rows, self.phi_at_c(lvl))
        self.fresh[lvl] = False

    def relax(self, lvl: int) -> None:
        if not self.fresh[lvl]:
            self.f_relax(lvl)
        for _ in range(self.opt.nu):
            self.c_relax(lvl)
            self.f_relax(lvl)

    # -- coarse-grid correction ---------------------------------------------------------------
    def restrict(self, lvl: int) -> None:
        """Inject C-points to level ``lvl + 1`` and form its FAS right-hand side."""
        cpts = self.hier[lvl].c_points
        coarse = lvl + 1
        Uc = self.U[coarse]
        Uc[:] = self.U[lvl][cpts]
        fine_part = self._add_g(lvl, cpts[1:], self.phi_at_c(lvl))
        rows = np.arange(Uc.shape[0] - 1, dtype=np.int64)
        self.G[coarse][1:] = fine_part - self.prop(coarse, rows)
        self.fresh[coarse] = False
        self.phi_cache[coarse] = None

    def correct(self, lvl: int) -> None:
        """FAS correction: with injection it sets the C-points to the coarse values; then F-relax."""
        self.U[lvl][self.hier[lvl].c_points] = self.U[lvl + 1]
        self.fresh[lvl] = False
        self.f_relax(lvl)
        self.check_finite(lvl)

    def coarsest_solve(self, lvl: int) -> None:
        U = self.U[lvl]
        for j in range(1, U.shape[0]):
            row = np.array([j - 1], dtype=np.int64)
            U[j] = self._add_g(lvl, row + 1, self.prop(lvl, row))[0]
        self.fresh[lvl] = True
        self.phi_cache[lvl] = None
        self.check_finite(lvl)

    # -- cycles ------------------------------------------------------------------------------
    def cycle(self, lvl: int, kind: str) -> None:
        if self.hier[lvl].is_coarsest:
            self.coarsest_solve(lvl)
            return
        self.relax(lvl)
        self.restrict(lvl)
        self.cycle(lvl + 1, kind)
        if kind == "F" and not self.hier[lvl + 1].is_coarsest:
            self.cycle(lvl + 1, "V")
        self.correct(lvl)

    def nested_iteration(self) -> None:
        """Initial guess from the coarse grids: solve the coarsest, then inject and cycle upwards."""
        last = len(self.hier) - 1
        self.coarsest_solve(last)
        for lvl in range(last - 1, -1, -1):
            self.U[lvl][self.hier[lvl].c_points] = self.U[lvl + 1]
            self.fresh[lvl] = False
            self.phi_cache[lvl] = None
            if lvl > 0:
                self.cycle(lvl, "V")

    # -- residual and checks -----------------------------------------------------------------
    def residual_norm(self) -> float:
        """Norm over the fine C-points of ``U[c] - Phi(U[c-1])``, F-points freshly relaxed (as XBraid)."""
        if not self.fresh[0]:
            self.f_relax(0)
        rows = self.hier[0].c_points[1:]
        if rows.size == 0:
            return 0.0
        r = np.abs(self.U[0][rows] - self.phi_at_c(0))
        peak = float(np.max(r))
        if self.opt.norm == "inf" or peak == 0.0 or not math.isfinite(peak):
            return peak
        return peak * float(np.sqrt(np.sum((r / peak) ** 2)))  # scaled: no overflow before inf

    def check_finite(self, lvl: int) -> None:
        """Stop at the first state of level ``lvl`` that is non-finite or past the growth bound."""
        peak = np.abs(self.U[lvl]).max(axis=1)
        bad = ~(peak <= self.state_bound)  # NaN compares False, so it counts as bad
        if not bad.any():
            return
        j = int(np.argmax(bad))
        lev = self.hier[lvl]
        k = j * lev.spacing
        where = "the fine level" if lvl == 0 else f"level {lvl} (one step = {lev.spacing} fine steps)"
        what = (
            "became non-finite (NaN or inf)"
            if not np.isfinite(peak[j])
            else f"grew to |u| = {peak[j]:.3e}, past divergence_factor = {self.opt.divergence_factor:g} times "
            "the size of the initial state"
        )
        raise DivergenceError(
            f"MGRIT diverged in iteration {self.iteration}: the state on {where} {what} at fine step {k}. "
            f"Suggestion: {self.hint()}.",
            iteration=self.iteration,
            level=lvl,
            step=k,
        )

    def hint(self) -> str:
        return getattr(self.problem, "divergence_hint", None) or (
            "the coarse propagator is probably unstable at its spacing: use fewer levels, a smaller "
            "cfactor, or a more stable coarse propagator"
        )

    def diverged(self, what: str, residuals: list[float]) -> None:
        """Raise a DivergenceError naming the level and fine step of the largest state."""
        peaks = [np.abs(U).max(axis=1) for U in self.U]
        lvl = int(np.argmax([p.max() for p in peaks]))
        j = int(np.argmax(peaks[lvl]))
        lev = self.hier[lvl]
        where = "the fine level" if lvl == 0 else f"level {lvl} (one step = {lev.spacing} fine steps)"
        raise DivergenceError(
            f"MGRIT diverged in iteration {self.iteration}: {what}. The largest state, |u| = "
            f"{peaks[lvl][j]:.3e}, is on {where} at fine step {j * lev.spacing}. Suggestion: {self.hint()}.",
            iteration=self.iteration,
            level=lvl,
            step=j * lev.spacing,
            residuals=residuals,
        )

    # -- driver ------------------------------------------------------------------------------
    def initial_guess(self) -> None:
        U = self.U[0]
        if self.opt.nested and len(self.hier) > 1:
            self.nested_iteration()
        elif self.opt.guess == "initial":
            U[1:] = U[0]
        else:
            U[1:] = 0.0

    def run(self, callback: Callable[[int, float], None] | None) -> Result:
        t0 = time.perf_counter()
        residuals: list[float] = []
        converged = False
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            self.initial_guess()
            for it in range(1, self.opt.max_iter + 1):
                self.iteration = it
                if len(self.hier) == 1:
                    self.coarsest_solve(0)
                else:
                    self.cycle(0, self.opt.cycle)
                r = self.residual_norm()
                if not math.isfinite(r):
                    self.check_finite(0)
                    self.diverged(f"the residual is {r}", residuals)
                residuals.append(r)
                if callback is not None:
                    callback(it, r)
                if r < self.opt.tol or (self.opt.rtol is not None and r < self.opt.rtol * residuals[0]):
                    converged = True
                    break
                if r > self.opt.divergence_factor * max(residuals[0], np.finfo(float).tiny):
                    self.diverged(
                        f"the residual {r:.3e} grew past {self.opt.divergence_factor:g} times the "
                        f"first one ({residuals[0]:.3e})",
                        residuals,
                    )
        return Result(
            states=self.U[0],
            residuals=residuals,
            iterations=len(residuals),
            converged=converged,
            wall_s=time.perf_counter() - t0,
            options=self.opt,
            hierarchy=self.hier.to_dict(),
            step_counts=list(self.step_counts),
        )


def _initial_state(problem: Problem) -> np.ndarray:
    n = getattr(problem, "n_steps", None)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise OptionError("problem.n_steps", n, "an int >= 1 (the number of fine time steps)")
    u0 = np.asarray(problem.initial())
    if u0.ndim != 1 or u0.size == 0:
        raise OptionError("problem.initial()", f"array of shape {u0.shape}", "a non-empty 1-D array")
    if not np.issubdtype(u0.dtype, np.floating):
        u0 = u0.astype(np.float64)
    if not np.isfinite(u0).all():
        raise OptionError("problem.initial()", "an array with NaN/inf", "finite")
    return u0


def solve(
    problem: Problem,
    levels: int = 3,
    cfactor: int | list[int] | tuple[int, ...] = 4,
    relax: str = "FCF",
    cycle: str = "V",
    tol: float = 1e-9,
    max_iter: int = 50,
    nested: bool = False,
    norm: str = "l2",
    *,
    rtol: float | None = None,
    min_coarse: int = 2,
    guess: str = "initial",
    divergence_factor: float = 1e8,
    options: SolverOptions | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> Result:
    """Solve the evolution ``problem`` with nonlinear MGRIT; see :class:`SolverOptions` for the settings.

    ``options``, when given, replaces the keyword settings.  ``callback(iteration, residual)`` is
    called after every iteration (for progress).  Raises :class:`~pintrain.errors.OptionError` for a
    bad setting before any work, :class:`~pintrain.errors.DivergenceError` when states turn
    non-finite or the residual blows up.
    """
    if options is None:
        options = SolverOptions(
            levels=levels,
            cfactor=tuple(cfactor) if isinstance(cfactor, list) else cfactor,
            relax=relax,
            cycle=cycle,
            tol=tol,
            rtol=rtol,
            max_iter=max_iter,
            nested=nested,
            norm=norm,
            min_coarse=min_coarse,
            guess=guess,
            divergence_factor=divergence_factor,
        )
    return _Solver(problem, options).run(callback)


def describe(n_steps: int, options: SolverOptions) -> str:
    """The printable hierarchy and cost model of a solve with these settings."""
    return Hierarchy(n_steps, options).table(options.nu, options.cycle)


__all__ = ["solve", "describe", "Level"]
