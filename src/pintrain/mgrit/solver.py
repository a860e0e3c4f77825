"""Nonlinear (FAS) MGRIT, vectorised across the independent points of each level, on one or many ranks.

Level l holds the states of its points in one 2-D array ``U[l]`` (row = time point) and, on coarse
levels, the FAS right-hand side ``G[l]``; the equations are ``U[j] - Phi_l(U[j-1]) = G[j]`` with
``U[0]`` fixed.  Relaxation, restriction (injection), the coarsest serial solve and the FAS
correction follow Falgout et al. (2014) and XBraid's nonlinear formulation.  Every batch of
independent propagations is one ``step_many`` call.

One code path serves one process and many: each rank holds its block of whole C-intervals of the
distributed levels (see :mod:`.layout`) plus one ghost row, the left neighbour's last point; the
small levels are gathered to rank 0.  With one process every communication is the identity.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import DivergenceError, OptionError, check_int, check_memory
from .comm import resolve
from .hierarchy import Hierarchy
from .layout import Layout
from .options import SolverOptions
from .problem import Problem, checked, step_many
from .result import Result


class _Solver:
    def __init__(self, problem: Problem, options: SolverOptions, comm: Any = None) -> None:
        u0 = _initial_state(problem)
        self.problem = problem
        self.opt = options
        self.comm = resolve(comm)
        self.hier = Hierarchy(problem.n_steps, options)
        self.layout = Layout(self.hier, self.comm.rank, self.comm.size)
        self.u0 = u0
        d = u0.size
        check_memory(
            self.hier.memory_bytes(d, u0.dtype.itemsize) // self.comm.size,
            f"MGRIT over {problem.n_steps} steps of a state of {d} values ({len(self.hier)} levels)",
            "use fewer steps, more MPI ranks, or float32 states where the problem offers them",
        )
        n_lev = len(self.hier)
        self.U = [np.empty((self.layout[lvl].n_rows, d), dtype=u0.dtype) for lvl in range(n_lev)]
        self.G: list[np.ndarray | None] = [None] + [
            np.zeros((self.layout[lvl].n_rows, d), dtype=u0.dtype) for lvl in range(1, n_lev)
        ]
        for lvl in range(n_lev):
            if self.layout[lvl].base == 0 and self.layout[lvl].n_rows:
                self.U[lvl][0] = u0
        self.fresh = [False] * n_lev  # F-points consistent with C-points and G
        self.phi_cache: list[np.ndarray | None] = [None] * n_lev
        self.step_counts = [0] * n_lev
        self.iteration = 0
        self.alone = False  # True while rank 0 works on the levels it holds alone
        self.origin: tuple[int, int] | None = None  # (level, fine step) of the first step that made a NaN/inf
        self.state_bound = options.divergence_factor * max(1.0, float(np.abs(u0).max()))

    # -- index helpers -----------------------------------------------------------------------
    def c_points(self, lvl: int, skip_zero: bool = False) -> np.ndarray:
        """Global indices of this rank's C-points on level ``lvl`` (all points on the coarsest)."""
        part, cf = self.layout[lvl], max(self.hier[lvl].cfactor, 1)
        first = max(part.lo, 1 if skip_zero else 0)
        first = -(-first // cf) * cf
        return np.arange(first, part.hi + 1, cf, dtype=np.int64)

    def owned(self, lvl: int) -> np.ndarray:
        """This rank's rows of level ``lvl``, without the ghost row."""
        part = self.layout[lvl]
        return self.U[lvl][part.lo - part.base :] if part.n_rows else self.U[lvl][:0]

    def gathers_to_root(self, lvl: int) -> bool:
        """Whether level ``lvl`` is distributed and level ``lvl + 1`` lives on rank 0 alone."""
        return self.layout[lvl].distributed and not self.layout[lvl + 1].distributed

    # -- propagation -------------------------------------------------------------------------
    def prop(self, lvl: int, js: np.ndarray) -> np.ndarray:
        """Propagate level ``lvl``'s points ``js`` (global) one step of that level (one batched call)."""
        lev = self.hier[lvl]
        rows = self.U[lvl][js - self.layout[lvl].base]
        return self.steps(lvl, rows, js * lev.spacing)

    def steps(self, lvl: int, rows: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """One step of level ``lvl`` for every row, from fine points ``ks``: counted, and the first
        non-finite value a step makes from a finite state noted (:meth:`note_origin`)."""
        m = self.hier[lvl].spacing
        out = step_many(self.problem, rows, ks, m)
        self.step_counts[lvl] += rows.shape[0]
        if not math.isfinite(float(np.sum(out))):
            self.note_origin(lvl, rows, out, ks)
        return out

    def note_origin(self, lvl: int, rows: np.ndarray, out: np.ndarray, ks: np.ndarray) -> None:
        """Remember the first step (in time, on this rank) that turned a finite state non-finite."""
        made = ~np.isfinite(out).all(axis=-1) & np.isfinite(rows).all(axis=-1)
        if self.origin is None and made.any():
            self.origin = (lvl, int(ks[int(np.argmax(made))]))

    def _add_g(self, lvl: int, js: np.ndarray, values: np.ndarray) -> np.ndarray:
        G = self.G[lvl]
        return values if G is None else values + G[js - self.layout[lvl].base]

    # -- relaxation --------------------------------------------------------------------------
    def f_relax(self, lvl: int) -> None:
        """Step every C-interval's F-points in turn: ``cfactor - 1`` batched calls on strided views."""
        lev, part = self.hier[lvl], self.layout[lvl]
        U, G, base, cf = self.U[lvl], self.G[lvl], part.base, lev.cfactor
        starts = self.c_points(lvl)
        for p in range(1, cf):
            n = int(np.count_nonzero(starts + p <= part.hi))
            if n == 0:
                break
            first = int(starts[0]) + p - 1  # global index of the first point stepped from
            src = slice(first - base, first - base + (n - 1) * cf + 1, cf)
            dst = slice(src.start + 1, src.stop + 1, cf)
            ks = (first + cf * np.arange(n, dtype=np.int64)) * lev.spacing
            values = self.steps(lvl, U[src], ks)
            if G is None:
                U[dst] = values
            else:
                np.add(values, G[dst], out=U[dst])
        self.fresh[lvl] = True
        self.phi_cache[lvl] = None

    def exchange_ghost(self, lvl: int) -> None:
        """Receive the left neighbour's last point into the ghost row (distributed levels only)."""
        part = self.layout[lvl]
        if not part.distributed:
            return
        U = self.U[lvl]
        self.comm.shift_right(U[-1] if U.shape[0] else None, U[0] if part.ghost else None)

    def phi_at_c(self, lvl: int) -> np.ndarray:
        """``Phi(U[c-1])`` for this rank's C-points c > 0 (cached until the F-points change)."""
        cached = self.phi_cache[lvl]
        if cached is None:
            self.exchange_ghost(lvl)
            cached = self.phi_cache[lvl] = self.prop(lvl, self.c_points(lvl, skip_zero=True) - 1)
        return cached

    def c_relax(self, lvl: int) -> None:
        js = self.c_points(lvl, skip_zero=True)
        self.U[lvl][js - self.layout[lvl].base] = self._add_g(lvl, js, self.phi_at_c(lvl))
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
        coarse, cf = lvl + 1, self.hier[lvl].cfactor
        cpts = self.c_points(lvl)
        values = self.U[lvl][cpts - self.layout[lvl].base]
        fine_part = self._add_g(lvl, cpts[cpts > 0], self.phi_at_c(lvl))
        cpart = self.layout[coarse]
        if not self.gathers_to_root(lvl):
            Uc = self.U[coarse]
            Uc[cpts // cf - cpart.base] = values
            self.exchange_ghost(coarse)
        else:  # the coarse level lives on rank 0: gather the C-point values and fine parts there
            # a NaN/inf made on this level is reported where it arose, before rank 0 sees it downstream
            self.raise_collective(self.origin_error() if self.origin is not None else None)
            if cpts.size and cpts[0] == 0:
                fine_part = np.concatenate([np.zeros_like(values[:1]), fine_part])
            counts = self.layout[lvl].multiples(cf)
            full = self.comm.gather_rows(values, counts)
            gathered = self.comm.gather_rows(fine_part, counts)
            if self.comm.rank == 0:
                assert full is not None and gathered is not None
                self.U[coarse][:] = full
                fine_part = gathered[1:]
        if self.layout.active(coarse):
            Js = _owned(cpart, skip_zero=True)
            G = self.G[coarse]
            assert G is not None
            G[Js - cpart.base] = fine_part - self.prop(coarse, Js - 1)
        self.fresh[coarse] = False
        self.phi_cache[coarse] = None

    def inject(self, lvl: int) -> None:
        """Set level ``lvl``'s C-points to the values of level ``lvl + 1`` (scattering from rank 0 if needed)."""
        coarse, cf = lvl + 1, self.hier[lvl].cfactor
        cpts = self.c_points(lvl)
        rows = cpts - self.layout[lvl].base
        cpart = self.layout[coarse]
        if not self.gathers_to_root(lvl):
            self.U[lvl][rows] = self.U[coarse][cpts // cf - cpart.base]
        else:
            local = np.empty((cpts.size, self.u0.size), dtype=self.u0.dtype)
            self.comm.scatter_rows(
                self.U[coarse] if self.comm.rank == 0 else None, local, self.layout[lvl].multiples(cf)
            )
            self.U[lvl][rows] = local
        self.fresh[lvl] = False
        self.phi_cache[lvl] = None

    def correct(self, lvl: int) -> None:
        """FAS correction: with injection it sets the C-points to the coarse values; then F-relax."""
        self.inject(lvl)
        self.f_relax(lvl)
        self.check_finite(lvl)

    def coarsest_solve(self, lvl: int) -> None:
        """Sequential time stepping on the coarsest level (rank 0 holds it whole): ``problem.step``
        on row views, without the batching machinery, since nothing here is independent."""
        U, G = self.U[lvl], self.G[lvl]
        spacing = self.hier[lvl].spacing
        problem, step, shape, dtype = self.problem, self.problem.step, U.shape[1:], U.dtype
        for j in range(1, U.shape[0]):
            k = (j - 1) * spacing
            value = checked(problem, step(U[j - 1], k, spacing), shape, dtype, k, spacing)
            if self.origin is None and not math.isfinite(float(np.sum(value))):
                self.note_origin(lvl, U[j - 1 : j], value[None], np.array([k]))
            U[j] = value if G is None else value + G[j]
        self.step_counts[lvl] += U.shape[0] - 1
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
        self.coarse_cycle(lvl + 1, kind)
        if kind == "F" and not self.hier[lvl + 1].is_coarsest:
            self.coarse_cycle(lvl + 1, "V")
        self.correct(lvl)

    def coarse_cycle(self, lvl: int, kind: str) -> None:
        """A cycle from level ``lvl``: on every rank if distributed, else on rank 0 alone."""
        if self.layout[lvl].distributed:
            self.cycle(lvl, kind)
        else:
            self.on_root(lambda: self.cycle(lvl, kind))

    def on_root(self, work: Callable[[], None]) -> None:
        """Run ``work`` on rank 0 alone; a divergence there is raised on every rank."""
        if self.comm.size == 1 or self.alone:
            work()  # one process, or already inside rank 0's solo part: nobody else is listening
            return
        err: DivergenceError | None = None
        if self.comm.rank == 0:
            self.alone = True
            try:
                work()
            except DivergenceError as e:
                err = e
            finally:
                self.alone = False
        info = self.comm.bcast(_error_info(err), root=0)
        if info is not None:
            raise _error_from_info(info)

    def nested_iteration(self) -> None:
        """Initial guess from the coarse grids: solve the coarsest, then inject and cycle upwards."""
        last, q = len(self.hier) - 1, self.layout.q

        def on_rank0() -> None:
            self.coarsest_solve(last)
            for lvl in range(last - 1, q - 1, -1):
                self.inject(lvl)
                if lvl > 0:
                    self.cycle(lvl, "V")

        self.on_root(on_rank0)
        for lvl in range(min(q, last) - 1, -1, -1):
            self.inject(lvl)
            if lvl > 0:
                self.coarse_cycle(lvl, "V")

    # -- residual and checks -----------------------------------------------------------------
    def residual_norm(self) -> float:
        """Norm over the fine C-points of ``U[c] - Phi(U[c-1])``, F-points freshly relaxed (as XBraid)."""
        r = np.zeros((0,))
        if self.layout.active(0):
            if not self.fresh[0]:
                self.f_relax(0)
            js = self.c_points(0, skip_zero=True)
            r = np.abs(self.U[0][js - self.layout[0].base] - self.phi_at_c(0))
        local_peak = float(np.max(r)) if r.size else 0.0
        bad = None
        if not math.isfinite(local_peak):
            bad = self.locate_bad(0) or self.divergence(0, 0, "the residual is not finite")
        self.raise_collective(bad)
        peak = self.comm.allreduce_max(local_peak)
        if self.opt.norm == "inf" or peak == 0.0:
            return peak
        local = float(np.sum((r / peak) ** 2)) if r.size else 0.0
        return peak * math.sqrt(self.comm.allreduce_sum(local))  # scaled: no overflow before inf

    def locate_bad(self, lvl: int) -> DivergenceError | None:
        """Where this rank's first non-finite value arose (the step that made it), else the first
        of its states on ``lvl`` that is non-finite or past the growth bound."""
        if self.origin is not None:
            return self.origin_error()
        part = self.layout[lvl]
        U = self.owned(lvl)
        if U.shape[0] == 0:
            return None
        peak = np.abs(U).max(axis=1)
        bad = ~(peak <= self.state_bound)  # NaN compares False, so it counts as bad
        if not bad.any():
            return None
        i = int(np.argmax(bad))
        what = (
            "became non-finite (NaN or inf)"
            if not np.isfinite(peak[i])
            else f"grew to |u| = {peak[i]:.3e}, past divergence_factor = {self.opt.divergence_factor:g} times "
            "the size of the initial state"
        )
        return self.divergence(lvl, part.lo + i, f"the state {what}")

    def origin_error(self) -> DivergenceError:
        assert self.origin is not None
        lvl, k = self.origin
        rank = f" (rank {self.comm.rank})" if self.comm.size > 1 else ""
        m = self.hier[lvl].spacing
        if lvl == 0:
            what = f"the fine step (level 0) from fine point {k}{rank} returned a non-finite value (NaN or inf) "
            what += "from a finite state"
            hint = (
                "the problem's own fine step produced it: serial training from that state would too (check the "
                "learning rate, the data and the step); if serial training stays finite, MGRIT's intermediate "
                f"iterates strayed there: {self.hint()}"
            )
        else:
            what = (
                f"the coarse step of level {lvl} (spacing {m}) from fine point {k}{rank} returned a non-finite "
                "value (NaN or inf) from a finite state"
            )
            hint = self.hint()
        return DivergenceError(
            f"MGRIT diverged in iteration {self.iteration}: {what}. Suggestion: {hint}.",
            iteration=self.iteration,
            level=lvl,
            step=k,
        )

    def divergence(self, lvl: int, j: int, what: str, residuals: list[float] | None = None) -> DivergenceError:
        lev = self.hier[lvl]
        where = "the fine level" if lvl == 0 else f"level {lvl} (one step = {lev.spacing} fine steps)"
        k = j * lev.spacing
        rank = f" (rank {self.comm.rank})" if self.comm.size > 1 else ""
        return DivergenceError(
            f"MGRIT diverged in iteration {self.iteration}: on {where}{rank}, {what} at fine step {k}. "
            f"Suggestion: {self.hint()}.",
            iteration=self.iteration,
            level=lvl,
            step=k,
            residuals=residuals,
        )

    def raise_collective(self, err: DivergenceError | None) -> None:
        """Raise ``err`` on every rank (the lowest rank's, if several have one); collective."""
        if self.comm.size == 1:
            if err is not None:
                raise err
            return
        first = self.comm.first_flagged(err is not None)
        if first == self.comm.size:
            return
        info = self.comm.bcast(_error_info(err), root=first)
        raise _error_from_info(info)

    def check_finite(self, lvl: int) -> None:
        """Stop at the first state of level ``lvl`` that is non-finite or past the growth bound."""
        err = self.locate_bad(lvl)
        if self.layout[lvl].distributed:
            self.raise_collective(err)
        elif err is not None:
            raise err  # rank 0 alone: on_root passes it on to every rank

    def hint(self) -> str:
        return getattr(self.problem, "divergence_hint", None) or (
            "the coarse propagator is probably unstable at its spacing: use fewer levels, a smaller "
            "cfactor, or a more stable coarse propagator"
        )

    def residual_blowup(self, r: float, residuals: list[float]) -> None:
        """Raise, naming the level and fine step of the largest state, when the residual grew past its bound."""
        best = (-1.0, 0, 0)
        for lvl in range(len(self.hier)):
            part = self.layout[lvl]
            U = self.owned(lvl)
            if U.shape[0]:
                peaks = np.abs(U).max(axis=1)
                i = int(np.argmax(peaks))
                if peaks[i] > best[0]:
                    best = (float(peaks[i]), lvl, part.lo + i)
        top = self.comm.allreduce_max(best[0])
        mine = best[0] == top
        first = self.comm.first_flagged(mine)
        err = None
        if self.comm.rank == first:
            err = self.divergence(
                best[1],
                best[2],
                f"the residual {r:.3e} grew past {self.opt.divergence_factor:g} times the first one "
                f"({residuals[0]:.3e}); the largest state, |u| = {best[0]:.3e}, is",
                residuals,
            )
        self.raise_collective(err)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- driver ------------------------------------------------------------------------------
    def initial_guess(self) -> None:
        if self.opt.nested and len(self.hier) > 1:
            self.nested_iteration()
            return
        part = self.layout[0]
        U = self.U[0]
        start = 1 if part.base == 0 else 0
        U[start:] = self.u0 if self.opt.guess == "initial" else 0.0

    def final_state(self) -> np.ndarray:
        part = self.layout[0]
        owner = max(r for r, (lo, hi) in enumerate(part.ranges) if hi >= lo and hi == self.hier[0].n_steps)
        value = self.U[0][-1].copy() if self.comm.rank == owner else None
        out = value if self.comm.size == 1 else self.comm.bcast(value, root=owner)
        assert out is not None
        return out

    def run(self, callback: Callable[[int, float], None] | None, gather: bool) -> Result:
        t0 = time.perf_counter()
        residuals: list[float] = []
        converged = stalled = False
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            self.initial_guess()
            for it in range(1, self.opt.max_iter + 1):
                self.iteration = it
                self.coarse_cycle(0, self.opt.cycle)
                r = self.residual_norm()
                residuals.append(r)
                if callback is not None and self.comm.rank == 0:
                    callback(it, r)
                if r < self.opt.tol or (self.opt.rtol is not None and r < self.opt.rtol * residuals[0]):
                    converged = True
                    break
                if _stalled(residuals):
                    stalled = True
                    break
                if r > self.opt.divergence_factor * max(residuals[0], np.finfo(float).tiny):
                    self.residual_blowup(r, residuals)
        states, first = self.owned(0), self.layout[0].lo
        if gather and self.comm.size > 1:
            full = self.comm.gather_rows(states, self.layout[0].counts)
            if self.comm.rank == 0:
                assert full is not None
                states, first = full, 0
        return Result(
            states=states,
            residuals=residuals,
            iterations=len(residuals),
            converged=converged,
            stalled=stalled,
            wall_s=time.perf_counter() - t0,
            options=self.opt,
            hierarchy=self.hier.to_dict(),
            step_counts=list(self.step_counts),
            first_index=first,
            final=self.final_state(),
            ranks=self.comm.size,
            rank=self.comm.rank,
        )


STALL_ITERATIONS = 3


def _stalled(residuals: list[float]) -> bool:
    """The residual has not moved (1e-10 relative) for STALL_ITERATIONS iterations: the iteration sits
    at its floating-point fixed point, above the tolerance; more iterations cannot help."""
    if len(residuals) <= STALL_ITERATIONS:
        return False
    last = residuals[-STALL_ITERATIONS - 1 :]
    return all(abs(b - a) <= 1e-10 * abs(b) for a, b in zip(last, last[1:], strict=False))


def _owned(part: Any, skip_zero: bool) -> np.ndarray:
    return np.arange(max(part.lo, 1 if skip_zero else 0), part.hi + 1, dtype=np.int64)


def _error_info(err: DivergenceError | None) -> dict[str, Any] | None:
    if err is None:
        return None
    return {
        "message": str(err),
        "iteration": err.iteration,
        "level": err.level,
        "step": err.step,
        "residuals": err.residuals,
    }


def _error_from_info(info: dict[str, Any]) -> DivergenceError:
    return DivergenceError(
        info["message"],
        iteration=info["iteration"],
        level=info["level"],
        step=info["step"],
        residuals=info["residuals"],
    )


def _initial_state(problem: Problem) -> np.ndarray:
    if problem is None or not all(callable(getattr(problem, name, None)) for name in ("initial", "step")):
        raise OptionError(
            "problem",
            type(problem).__name__,
            "an object with n_steps, initial() and step(u, k, m) (the pintrain.mgrit.Problem protocol)",
        )
    check_int("problem.n_steps", getattr(problem, "n_steps", None), 1, " (the number of fine time steps)")
    u0 = np.asarray(problem.initial())
    if u0.dtype.kind not in "fiu":
        raise OptionError("problem.initial()", f"an array of dtype {u0.dtype}", "a real (float) array")
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
    max_coarse: int | None = None,
    guess: str = "initial",
    divergence_factor: float = 1e8,
    options: SolverOptions | None = None,
    callback: Callable[[int, float], None] | None = None,
    comm: Any = None,
    gather: bool = False,
) -> Result:
    """Solve the evolution ``problem`` with nonlinear MGRIT; see :class:`SolverOptions` for the settings.

    ``options``, when given, replaces the keyword settings.  ``callback(iteration, residual)`` is
    called after every iteration on rank 0 (for progress).  ``comm``: an mpi4py communicator to
    distribute the time points over (default: COMM_WORLD under mpiexec, else one process;
    ``"serial"`` forces one process).  On several ranks each rank's ``Result.states`` holds its
    own block of fine points (from ``Result.first_index``); ``gather=True`` collects all of them
    on rank 0.  ``final_state`` is on every rank.

    Raises :class:`~pintrain.errors.OptionError` for a bad setting before any work,
    :class:`~pintrain.errors.DivergenceError` (on every rank) when states turn non-finite or blow up.
    """
    if options is not None:
        if not isinstance(options, SolverOptions):
            raise OptionError("options", type(options).__name__, "a SolverOptions, or None with keyword settings")
        given = {
            "levels": levels, "cfactor": cfactor, "relax": relax, "cycle": cycle, "tol": tol, "max_iter": max_iter,
            "nested": nested, "norm": norm, "rtol": rtol, "min_coarse": min_coarse, "max_coarse": max_coarse,
            "guess": guess, "divergence_factor": divergence_factor,
        }  # fmt: skip
        mixed = [k for k, v in given.items() if v != _DEFAULTS[k]]
        if mixed:
            raise OptionError(
                "options", "given with " + ", ".join(mixed), "given alone: put every setting in the SolverOptions"
            )
    else:
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
            max_coarse=max_coarse,
            guess=guess,
            divergence_factor=divergence_factor,
        )
    solver = _Solver(problem, options, comm)
    if solver.comm.size == 1:
        return solver.run(callback, gather)
    try:
        return solver.run(callback, gather)
    except (DivergenceError, OptionError):
        raise  # raised identically on every rank: no rank is left waiting
    except KeyboardInterrupt:  # Ctrl-C under mpiexec reaches every rank: a line, not a traceback per rank
        import sys

        print(f"pintrain: rank {solver.comm.rank} of {solver.comm.size}: interrupted", file=sys.stderr, flush=True)
        solver.comm.abort(130)
        raise
    except BaseException as err:  # anything else on one rank would leave the others waiting forever
        import sys
        import traceback

        print(
            f"pintrain: rank {solver.comm.rank} of {solver.comm.size} failed: {type(err).__name__}: {err}",
            file=sys.stderr,
            flush=True,
        )
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        solver.comm.abort(1)
        raise


_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(solve).parameters.items()
    if p.default is not inspect.Parameter.empty
}


def describe(n_steps: int, options: SolverOptions) -> str:
    """The printable hierarchy and cost model of a solve with these settings."""
    return Hierarchy(n_steps, options).table(options.nu, options.cycle)


__all__ = ["solve", "describe"]
