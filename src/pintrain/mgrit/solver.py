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

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..arrays import NUMPY, ArrayOps, Native
from ..errors import DivergenceError, OptionError, check_int, check_memory
from .comm import resolve
from .hierarchy import Hierarchy, Level
from .layout import Layout, LevelPart
from .options import FIELDS, SolverOptions, roundoff_scale
from .problem import Batched, Guessed, Hinted, Problem, checked, step_many
from .result import Result


class LevelState:
    """One level of the hierarchy on this rank: its states, its FAS right-hand side, the cache of
    ``Phi(U[c-1])`` at its C-points, its propagator count, and its row arithmetic.

    With full storage row i of ``U`` (and ``G``) is the level's global point ``base + i``
    (``base = lo - 1`` when the rank holds a ghost row: the left neighbour's last point).  With
    C-point storage (``c_only``) ``U`` holds only the points of ``kept``: the ghost, the rank's
    C-points and its last point ``hi``; ``G`` stays full (its F-point values are inputs of every
    sweep).  ``fresh``: the F-points are consistent with the C-points and G (an F-relaxation would
    change nothing); the cache is valid only while neither the C-points nor the F-points have moved.
    """

    def __init__(self, grid: Level, part: LevelPart, u0: Any, ops: ArrayOps, c_only: bool = False) -> None:
        self.grid, self.part, self.ops = grid, part, ops
        self.spacing, self.cfactor, self.base = grid.spacing, grid.cfactor, part.base
        self.kept: np.ndarray | None = None
        n_rows = part.n_rows
        if c_only:
            own = self.c_points()
            if not part.empty and part.hi % self.cfactor:
                own = np.append(own, part.hi)
            self.kept = np.concatenate([np.array([part.lo - 1] if part.ghost else [], dtype=np.int64), own])
            n_rows = self.kept.size
        self.U = ops.empty((n_rows, u0.shape[0]), u0)
        self.G = None if grid.index == 0 else ops.zeros((part.n_rows, u0.shape[0]), u0)
        if part.base == 0 and n_rows:
            self.U[0] = u0
        self.fresh = False
        self.phi: np.ndarray | None = None
        self.applications = 0

    @property
    def c_only(self) -> bool:
        """Whether the level keeps only its C-points (and ghost and last point): ``kept`` is set."""
        return self.kept is not None

    def rows(self, js: np.ndarray) -> Any:
        """Rows of ``U`` holding the global points ``js`` (numpy), as an index of the level's arrays."""
        if self.kept is None:
            return self.ops.index(js - self.base)
        i = np.searchsorted(self.kept, js)
        assert i.size == 0 or (i[-1] < self.kept.size and (self.kept[i] == js).all()), "an F-point is not stored"
        return self.ops.index(i)

    def g_rows(self, js: np.ndarray) -> Any:
        """Rows of ``G`` (every point, from ``base``) holding the global points ``js``."""
        return self.ops.index(js - self.base)

    def c_points(self, skip_zero: bool = False) -> np.ndarray:
        """Global indices of this rank's C-points (all its points on the coarsest level)."""
        cf = max(self.cfactor, 1)
        first = max(self.part.lo, 1 if skip_zero else 0)
        first = -(-first // cf) * cf
        return np.arange(first, self.part.hi + 1, cf, dtype=np.int64)

    def points(self, skip_zero: bool = False) -> np.ndarray:
        """Global indices of all this rank's own points."""
        return np.arange(max(self.part.lo, 1 if skip_zero else 0), self.part.hi + 1, dtype=np.int64)

    def owned_points(self) -> np.ndarray:
        """Global indices of the rows of :meth:`owned`."""
        return self.points() if self.kept is None else self.kept[int(self.part.ghost) :]

    def owned(self) -> Any:
        """This rank's rows, without the ghost row."""
        if not self.part.n_rows:
            return self.U[:0]
        return self.U[self.part.lo - self.base :] if self.kept is None else self.U[int(self.part.ghost) :]

    def plus_g(self, js: np.ndarray, values: Any) -> Any:
        """``values + G[js]`` (the FAS right-hand side; nothing on the fine level)."""
        return values if self.G is None else values + self.G[self.g_rows(js)]

    def moved_c(self) -> None:
        """The C-points changed: the F-points and the cache are stale."""
        self.fresh = False
        self.phi = None

    def moved_f(self) -> None:
        """The F-points were relaxed from the current C-points: consistent, the cache stale."""
        self.fresh = True
        self.phi = None


class _Solver:
    def __init__(self, problem: Problem, options: SolverOptions, comm: Any = None) -> None:
        u0 = _initial_state(problem)
        self.problem = problem
        self.batched = isinstance(problem, Batched)  # checked once: isinstance on a protocol is slow
        # a problem that writes its steps into the level's rows (Batched.steps_into) is handed them
        self.into = self.batched and bool(getattr(problem, "steps_into", False))
        self.ops: ArrayOps = problem.ops if isinstance(problem, Native) else NUMPY
        self.native = None if self.ops is NUMPY else self.ops
        self.opt = options
        self.comm = resolve(comm)
        self.hier = Hierarchy(problem.n_steps, options)
        self.layout = Layout(self.hier, self.comm.rank, self.comm.size)
        check_memory(
            self.hier.memory_bytes(u0.size, u0.dtype.itemsize, options.storage) // self.comm.size,
            f"MGRIT over {problem.n_steps} steps of a state of {u0.size} values ({len(self.hier)} levels)",
            "use fewer steps, more MPI ranks, or float32 states where the problem offers them",
            have=self.ops.free_bytes(),
        )
        self.dim, self.dtype = u0.size, u0.dtype
        self.u0 = self.ops.asarray(u0)  # the states live in the problem's arrays (numpy, or torch on its device)
        self.roundoff = roundoff_scale(u0.dtype, self.hier[0].n_steps, options)  # the unit of its floor
        c_only = options.storage == "c-points"
        self.levels = [
            LevelState(self.hier[lvl], part, self.u0, self.ops, c_only and part.distributed)
            for lvl, part in enumerate(self.layout.parts)
        ]
        self.iteration = 0
        self.origin: tuple[int, int] | None = None  # (level, fine step) of the first step that made a NaN/inf
        self.state_bound = options.divergence_factor * max(1.0, float(np.abs(u0).max()))

    def result_counts(self) -> list[int]:
        """Rows of the result each rank holds with C-point storage."""
        cf, n = self.levels[0].cfactor, self.hier[0].n_steps
        return [_result_points(n, cf, lo, hi).size if hi >= lo else 0 for lo, hi in self.layout[0].ranges]

    def gathers_to_root(self, lvl: int) -> bool:
        """Whether level ``lvl`` is distributed and level ``lvl + 1`` lives on rank 0 alone."""
        return self.layout[lvl].distributed and not self.layout[lvl + 1].distributed

    # -- propagation -------------------------------------------------------------------------
    def prop(self, lvl: int, js: np.ndarray) -> np.ndarray:
        """Propagate level ``lvl``'s points ``js`` (global) one step of that level (one batched call)."""
        lev = self.levels[lvl]
        return self.steps(lvl, lev.U[lev.rows(js)], js * lev.spacing)

    def steps(self, lvl: int, rows: Any, ks: np.ndarray, out: Any = None) -> Any:
        """One step of level ``lvl`` for every row, from fine points ``ks`` (into ``out`` when given):
        counted, and the first non-finite value a step makes from a finite state noted
        (:meth:`note_origin`)."""
        lev = self.levels[lvl]
        out = step_many(self.problem, rows, ks, lev.spacing, self.batched, self.native, out)
        lev.applications += rows.shape[0]
        if not math.isfinite(float(out.sum())):
            self.note_origin(lvl, rows, out, ks)
        return out

    def note_origin(self, lvl: int, rows: Any, out: Any, ks: np.ndarray) -> None:
        """Remember the first step (in time, on this rank) that turned a finite state non-finite."""
        made = ~self.ops.finite_rows(out) & self.ops.finite_rows(rows)
        if self.origin is None and made.any():
            self.origin = (lvl, int(ks[int(np.argmax(made))]))

    # -- relaxation --------------------------------------------------------------------------
    def f_relax(self, lvl: int, into: int | None = None) -> None:
        """Step every C-interval's F-points in turn: ``cfactor - 1`` batched calls on strided views.

        With C-point storage the F-points live only in the sweep (:meth:`sweep`); ``into`` (a finer
        level) then receives every point of this level at its C-points (the injection)."""
        lev = self.levels[lvl]
        if lev.c_only:
            self.sweep(lvl, into)
            return
        U, G, cf = lev.U, lev.G, lev.cfactor
        starts = lev.c_points()
        for p in range(1, cf):
            n = int(np.count_nonzero(starts + p <= lev.part.hi))
            if n == 0:
                break
            first = int(starts[0]) + p - 1  # global index of the first point stepped from
            src = slice(first - lev.base, first - lev.base + (n - 1) * cf + 1, cf)
            dst = slice(src.start + 1, src.stop + 1, cf)
            ks = (first + cf * np.arange(n, dtype=np.int64)) * lev.spacing
            rows = U[dst]
            values = self.steps(lvl, U[src], ks, out=rows if self.into else None)
            if G is not None:
                self.ops.add_into(rows, values, G[dst])
            elif values is not rows:
                rows[...] = values
        lev.moved_f()

    def sweep(self, lvl: int, into: int | None) -> None:
        """F-relaxation of a level with C-point storage: the same batched calls as :meth:`f_relax`
        on full storage, on a buffer of one F-point per C-interval.  Without ``into`` it ends with
        the cache ``Phi(U[c-1])`` (the last F-points exist only here); with ``into`` it writes every
        point of this level into that finer level's C-points instead."""
        lev = self.levels[lvl]
        U, G, cf, hi, ops = lev.U, lev.G, lev.cfactor, lev.part.hi, self.ops
        starts = lev.c_points()
        lev.phi = None  # remade at the end: not held beside the sweep's buffers
        if starts.size == 0:
            lev.moved_f()
            return
        fine = None if into is None else self.levels[into]
        if fine is not None:
            own = lev.owned_points()
            fine.U[fine.rows(own * fine.cfactor)] = lev.owned()
        src = U[lev.rows(starts)]
        for p in range(1, cf):
            n = int(np.count_nonzero(starts + p <= hi))
            if n == 0:
                break
            js = starts[:n] + p
            values = self.steps(lvl, src[:n], (js - 1) * lev.spacing)
            src = values if G is None else values + G[lev.g_rows(js)]
            if js[-1] == hi:
                U[-1] = src[n - 1]
            if fine is not None:
                fine.U[fine.rows(js * fine.cfactor)] = src
        lev.moved_f()
        if fine is None:  # the cache Phi(U[c-1]) at this rank's C-points c > 0, in full storage's row order
            self.exchange_ghost(lvl)
            last = src[: starts.size - 1]
            if lev.part.ghost:
                last = ops.concat_rows([U[:1], last])
            lev.phi = self.steps(lvl, last, (lev.c_points(skip_zero=True) - 1) * lev.spacing)

    def exchange_ghost(self, lvl: int) -> None:
        """Receive the left neighbour's last point into the ghost row (distributed levels only)."""
        lev = self.levels[lvl]
        if not lev.part.distributed:
            return
        U, ops = lev.U, self.ops
        send = ops.to_numpy(U[-1]) if U.shape[0] else None
        recv = np.empty(self.dim, dtype=self.dtype) if lev.part.ghost else None
        self.comm.shift_right(send, recv)  # MPI messages are numpy buffers on the host
        if recv is not None:
            U[0] = ops.asarray(recv)

    def phi_at_c(self, lvl: int) -> Any:
        """``Phi(U[c-1])`` for this rank's C-points c > 0 (cached until the C- or F-points move)."""
        lev = self.levels[lvl]
        if lev.phi is None:
            if lev.c_only:  # the F-points are recomputed from the C-points: only a consistent level has them
                assert lev.fresh, "C-point storage: the cache is made by the F-relaxation"
                self.sweep(lvl, None)
            else:
                self.exchange_ghost(lvl)
                lev.phi = self.prop(lvl, lev.c_points(skip_zero=True) - 1)
        return lev.phi

    def c_relax(self, lvl: int) -> None:
        lev = self.levels[lvl]
        js = lev.c_points(skip_zero=True)
        lev.U[lev.rows(js)] = lev.plus_g(js, self.phi_at_c(lvl))
        lev.fresh = False  # the C-points moved; the cache, Phi of the unchanged F-points, stays valid

    def relax(self, lvl: int) -> None:
        if not self.levels[lvl].fresh:
            self.f_relax(lvl)
        for _ in range(self.opt.nu):
            self.c_relax(lvl)
            self.f_relax(lvl)

    # -- coarse-grid correction ---------------------------------------------------------------
    def restrict(self, lvl: int) -> None:
        """Inject C-points to level ``lvl + 1`` and form its FAS right-hand side."""
        fine, coarse = self.levels[lvl], self.levels[lvl + 1]
        cpts = fine.c_points()
        values = fine.U[fine.rows(cpts)]
        fine_part = fine.plus_g(cpts[cpts > 0], self.phi_at_c(lvl))
        if not self.gathers_to_root(lvl):
            if coarse.c_only:  # the coarse level keeps its own C-points and last point
                own = coarse.owned_points()
                coarse.U[coarse.rows(own)] = values[self.ops.index(own - coarse.part.lo)]
            else:
                coarse.U[coarse.rows(cpts // fine.cfactor)] = values
            self.exchange_ghost(lvl + 1)
        else:  # the coarse level lives on rank 0: gather the C-point values and fine parts there
            # a NaN/inf made on this level is reported where it arose, before rank 0 sees it downstream
            self.comm.raise_collective(self.origin_error() if self.origin is not None else None)
            ops = self.ops
            if cpts.size and cpts[0] == 0:
                fine_part = ops.concat_rows([ops.zeros((1, self.dim), values), fine_part])
            counts = fine.part.multiples(fine.cfactor)
            full = self.comm.gather_rows(ops.to_numpy(values), counts)
            gathered = self.comm.gather_rows(ops.to_numpy(fine_part), counts)
            if self.comm.rank == 0:
                assert full is not None and gathered is not None
                coarse.U[:] = ops.asarray(full)
                fine_part = ops.asarray(gathered[1:])
        if self.layout.active(lvl + 1):
            Js = coarse.points(skip_zero=True)
            assert coarse.G is not None
            if coarse.c_only:  # Phi(U[J-1]) from the injected values: the ghost, then all but the last
                before = values[: Js.size]
                if coarse.part.ghost:
                    before = self.ops.concat_rows([coarse.U[:1], values[:-1]])
                coarse_part = self.steps(lvl + 1, before, (Js - 1) * coarse.spacing)
            else:
                coarse_part = self.prop(lvl + 1, Js - 1)
            coarse.G[coarse.g_rows(Js)] = fine_part - coarse_part
        coarse.moved_c()

    def inject(self, lvl: int) -> None:
        """Set level ``lvl``'s C-points to the values of level ``lvl + 1`` (scattering from rank 0 if needed)."""
        fine, coarse = self.levels[lvl], self.levels[lvl + 1]
        cpts = fine.c_points()
        if coarse.c_only:  # its F-points come from the sweep that its correction left to this moment
            self.f_relax(lvl + 1, into=lvl)
        elif not self.gathers_to_root(lvl):
            fine.U[fine.rows(cpts)] = coarse.U[coarse.rows(cpts // fine.cfactor)]
        else:
            local = np.empty((cpts.size, self.dim), dtype=self.dtype)
            counts = fine.part.multiples(fine.cfactor)
            self.comm.scatter_rows(self.ops.to_numpy(coarse.U) if self.comm.rank == 0 else None, local, counts)
            fine.U[fine.rows(cpts)] = self.ops.asarray(local)
        fine.moved_c()

    def correct(self, lvl: int) -> None:
        """FAS correction: with injection it sets the C-points to the coarse values; then F-relax.

        A coarse level with C-point storage leaves the F-relaxation to the next use of its
        F-points (the injection into the finer level, or the next relaxation): the same work once."""
        self.inject(lvl)
        if lvl > 0 and self.levels[lvl].c_only:
            self.levels[lvl].moved_c()
        else:
            self.f_relax(lvl)
        self.check_finite(lvl)

    def coarsest_solve(self, lvl: int, start: int = 1) -> None:
        """Sequential time stepping on the coarsest level (rank 0 holds it whole): ``problem.step``
        on row views, without the batching machinery, since nothing here is independent (from point
        ``start`` on: the points before it are set)."""
        lev = self.levels[lvl]
        U, G, spacing = lev.U, lev.G, lev.spacing
        problem, step, shape, dtype = self.problem, self.problem.step, U.shape[1:], U.dtype
        for j in range(start, U.shape[0]):
            k = (j - 1) * spacing
            value = checked(problem, step(U[j - 1], k, spacing), shape, dtype, k, spacing, native=self.native)
            if self.origin is None and not math.isfinite(float(value.sum())):
                self.note_origin(lvl, U[j - 1 : j], value[None], np.array([k]))
            U[j] = value if G is None else value + G[j]
        lev.applications += max(U.shape[0] - start, 0)
        lev.moved_f()
        self.check_finite(lvl)

    def coarsest_start(self, lvl: int) -> None:
        """The nested start's coarsest level: from the trajectory the problem computed already where
        it offers one (:class:`~.problem.Guessed`, states every s fine steps), every point of this
        level (spacing m) that lies on it taken from it, the ``s / m - 1`` points after each stepped
        from it in as many batched calls; points past its end stepped one by one.  Else (s and m not
        multiples of one another) the sequential solve: a pass of ``N / m`` lone steps saved where it
        applies (the ``curvature`` step: its table's trajectory, docs/performance.md)."""
        guess = self.problem.trajectory_guess() if isinstance(self.problem, Guessed) else None
        lev = self.levels[lvl]
        m, n = lev.spacing, lev.U.shape[0] - 1  # the level's points 0..n (rank 0 holds it whole)
        if guess is None or (guess[0] % m and m % guess[0]):
            self.coarsest_solve(lvl)
            return
        s, X = guess
        if s >= m:  # every q-th point from the guess, the q - 1 after each stepped from it
            q = s // m
            have = min(int(X.shape[0]) - 1, n // q)  # the guess's states that are points of this level
            on = np.arange(1, have + 1, dtype=np.int64)
            lev.U[lev.rows(on * q)] = X[self.ops.index(on)]
            starts = np.arange(0, have + 1, dtype=np.int64) * q
            for p in range(1, q):
                js = starts[starts + p <= n] + p
                if js.size:
                    lev.U[lev.rows(js)] = lev.plus_g(js, self.steps(lvl, lev.U[lev.rows(js - 1)], (js - 1) * m))
            done = min(n, have * q + q - 1)
        else:  # every point on the guess: its (m / s)-th states
            q = m // s
            done = min(n, (int(X.shape[0]) - 1) // q)
            on = np.arange(1, done + 1, dtype=np.int64)
            lev.U[lev.rows(on)] = X[self.ops.index(on * q)]
        self.coarsest_solve(lvl, start=done + 1)  # the rest, if any; and the level's checks

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
            self.comm.on_root(lambda: self.cycle(lvl, kind))

    def nested_iteration(self) -> None:
        """Initial guess from the coarse grids: solve the coarsest, then inject and cycle upwards."""
        last, q = len(self.hier) - 1, self.layout.q

        def on_rank0() -> None:
            self.coarsest_start(last)
            for lvl in range(last - 1, q - 1, -1):
                self.inject(lvl)
                if lvl > 0:
                    self.cycle(lvl, "V")

        self.comm.on_root(on_rank0)
        for lvl in range(min(q, last) - 1, -1, -1):
            self.inject(lvl)
            if lvl > 0:
                self.coarse_cycle(lvl, "V")

    # -- residual and checks -----------------------------------------------------------------
    def residual_norm(self) -> float:
        """Norm over the fine C-points of ``U[c] - Phi(U[c-1])``, F-points freshly relaxed (as XBraid)."""
        r: Any = None
        fine = self.levels[0]
        if self.layout.active(0):
            if not fine.fresh:
                self.f_relax(0)
            js = fine.c_points(skip_zero=True)
            phi = self.phi_at_c(0)  # on every rank: it exchanges the ghost rows
            if js.size:
                r = abs(fine.U[fine.rows(js)] - phi)
        local_peak = float(r.max()) if r is not None else 0.0
        bad = None
        if not math.isfinite(local_peak):
            bad = self.locate_bad(0) or self.divergence(0, 0, "the residual is not finite")
        self.comm.raise_collective(bad)
        peak = self.comm.allreduce_max(local_peak)
        if self.opt.norm == "inf" or peak == 0.0:
            return peak
        local = float(((r / peak) ** 2).sum()) if r is not None else 0.0
        return peak * math.sqrt(self.comm.allreduce_sum(local))  # scaled: no overflow before inf

    def locate_bad(self, lvl: int) -> DivergenceError | None:
        """Where this rank's first non-finite value arose (the step that made it), else the first
        of its states on ``lvl`` that is non-finite or past the growth bound."""
        if self.origin is not None:
            return self.origin_error()
        lev = self.levels[lvl]
        U = lev.owned()
        if U.shape[0] == 0:
            return None
        peak = self.ops.max_abs_rows(U)
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
        return self.divergence(lvl, int(lev.owned_points()[i]), f"the state {what}")

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

    def check_finite(self, lvl: int) -> None:
        """Stop at the first state of level ``lvl`` that is non-finite or past the growth bound."""
        err = self.locate_bad(lvl)
        if self.layout[lvl].distributed:
            self.comm.raise_collective(err)
        elif err is not None:
            raise err  # rank 0 alone: on_root passes it on to every rank

    def hint(self) -> str:
        hint = self.problem.divergence_hint if isinstance(self.problem, Hinted) else None
        return hint or (
            "the coarse propagator is probably unstable at its spacing: use fewer levels, a smaller "
            "cfactor, or a more stable coarse propagator"
        )

    def residual_blowup(self, r: float, residuals: list[float]) -> None:
        """Raise, naming the level and fine step of the largest state, when the residual grew past its bound."""
        best = (-1.0, 0, 0)
        for lev in self.levels:
            U = lev.owned()
            if U.shape[0]:
                peaks = self.ops.max_abs_rows(U)
                i = int(np.argmax(peaks))
                if peaks[i] > best[0]:
                    best = (float(peaks[i]), lev.grid.index, int(lev.owned_points()[i]))
        top = self.comm.allreduce_max(best[0])
        first = self.comm.first_flagged(best[0] == top)
        err = None
        if self.comm.rank == first:
            err = self.divergence(
                best[1],
                best[2],
                f"the residual {r:.3e} grew past {self.opt.divergence_factor:g} times the first one "
                f"({residuals[0]:.3e}); the largest state, |u| = {best[0]:.3e}, is",
                residuals,
            )
        self.comm.raise_collective(err)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- driver ------------------------------------------------------------------------------
    def initial_guess(self) -> None:
        if self.opt.nested and len(self.hier) > 1:
            self.nested_iteration()
            return
        fine = self.levels[0]
        start = 1 if fine.base == 0 else 0
        fine.U[start:] = self.u0 if self.opt.guess == "initial" else 0.0

    def final_state(self) -> np.ndarray:
        part = self.layout[0]
        owner = max(r for r, (lo, hi) in enumerate(part.ranges) if hi >= lo and hi == self.hier[0].n_steps)
        value = self.ops.to_numpy(self.levels[0].U[-1]).copy() if self.comm.rank == owner else None
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
                if _stalled(residuals, self.roundoff):
                    stalled = True
                    break
                if r > self.opt.divergence_factor * max(residuals[0], np.finfo(float).tiny):
                    self.residual_blowup(r, residuals)
        fine, n = self.levels[0], self.hier[0].n_steps
        states, first, points = self.ops.to_numpy(fine.owned()), self.layout[0].lo, None
        if fine.c_only:  # the fine C-points and N, whatever the rank count (not the ranks' block ends)
            own = fine.owned_points()
            mine = (own % fine.cfactor == 0) | (own == n)
            states, points = states[mine], own[mine]
        if gather and self.comm.size > 1:
            counts = self.layout[0].counts if points is None else self.result_counts()
            full = self.comm.gather_rows(states, counts)
            if self.comm.rank == 0:
                assert full is not None
                states, first = full, 0
                points = None if points is None else _result_points(n, fine.cfactor)
        return Result(
            states=states,
            residuals=residuals,
            iterations=len(residuals),
            converged=converged,
            stalled=stalled,
            wall_s=time.perf_counter() - t0,
            options=self.opt,
            hierarchy=self.hier.to_dict(),
            step_counts=[lev.applications for lev in self.levels],
            first_index=first,
            points=points,
            final=self.final_state(),
            ranks=self.comm.size,
            rank=self.comm.rank,
        )


def _result_points(n: int, cf: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """The fine points of ``lo..hi`` that a C-point storage result holds: the C-points, and N."""
    hi = n if hi is None else hi
    own = np.arange(-(-lo // cf) * cf, hi + 1, cf, dtype=np.int64)
    return np.append(own, n) if hi == n and n % cf and hi >= lo else own


STALL_ITERATIONS = 3  # an exact floating-point fixed point: this many iterations without change
STALL_WINDOW = 8  # a wobbling floor (float32): this many iterations on a plateau without progress
NOISY_FLOOR = 1000.0  # below this many round-off units (eps sqrt(n_C)), a noisier plateau is a floor too


def _stalled(residuals: list[float], roundoff: float = 0.0) -> bool:
    """The residual stopped decreasing above the tolerance: more iterations cannot help.

    Either it has not moved (1e-10 relative) for ``STALL_ITERATIONS`` iterations (the iteration sits
    at its floating-point fixed point), or for ``STALL_WINDOW`` iterations it has stayed within 5%
    without going 1% below its earlier minimum (a round-off floor that wobbles, as float32's does:
    digits MLP with Adam, N = 4096, sat at 1.26e-5 to 1.30e-5 for 40 iterations, tol 1e-5), or,
    within ``NOISY_FLOOR`` units ``roundoff`` (eps sqrt(n_C), :func:`~pintrain.mgrit.options.roundoff_scale`)
    of round-off, it has stayed within a factor 2 without going 10% below its earlier minimum (a
    noisier floor: a small float32 MLP, N = 1024, wandered between 1.75e-6 and 2.35e-6 for 25
    iterations, about 1 unit).  A transient hump far above round-off is not a plateau (heavy ball on
    least squares rose from 1.67 to 2.74 over 7 iterations and converged at 35; its flattest 8
    iterations spanned a factor 1.4), nor is a slow decrease of more than 1% in ``STALL_WINDOW``
    iterations."""
    if len(residuals) > STALL_ITERATIONS:
        last = residuals[-STALL_ITERATIONS - 1 :]
        if all(abs(b - a) <= 1e-10 * abs(b) for a, b in zip(last, last[1:], strict=False)):
            return True
    if len(residuals) > STALL_WINDOW:
        recent, before = residuals[-STALL_WINDOW:], min(residuals[:-STALL_WINDOW])
        if min(recent) > 0.99 * before and max(recent) <= 1.05 * min(recent):
            return True
        near_roundoff = max(recent) < NOISY_FLOOR * roundoff
        return near_roundoff and min(recent) > 0.9 * before and max(recent) <= 2.0 * min(recent)
    return False


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
    options: SolverOptions | None = None,
    *,
    callback: Callable[[int, float], None] | None = None,
    comm: Any = None,
    gather: bool = False,
    **settings: Any,
) -> Result:
    """Solve the evolution ``problem`` with nonlinear MGRIT.

    The settings are one :class:`SolverOptions` (``options``) or its fields as keywords
    (``solve(p, levels=4, cfactor=8, tol=1e-8)``), not both: a keyword beside ``options`` would be
    ignored, so the mix is refused.  ``callback(iteration, residual)`` is called after every
    iteration on rank 0 (for progress).  ``comm``: an mpi4py communicator to distribute the time
    points over (default: COMM_WORLD under mpiexec, else one process; ``"serial"`` forces one
    process).  On several ranks each rank's ``Result.states`` holds its own block of fine points
    (from ``Result.first_index``); ``gather=True`` collects all of them on rank 0.  ``final_state``
    is on every rank.

    Raises :class:`~pintrain.errors.OptionError` for a bad setting before any work,
    :class:`~pintrain.errors.DivergenceError` (on every rank) when states turn non-finite or blow up.
    """
    unknown = sorted(set(settings) - set(FIELDS))
    if unknown:
        raise OptionError("solve() keyword", unknown[0], f"one of the SolverOptions fields: {', '.join(FIELDS)}")
    if options is not None:
        if not isinstance(options, SolverOptions):
            raise OptionError("options", type(options).__name__, "a SolverOptions, or None with keyword settings")
        if settings:
            raise OptionError(
                "options",
                "given with " + ", ".join(settings),
                "given alone: put every setting in the SolverOptions (or pass only keywords)",
            )
    else:
        if isinstance(settings.get("cfactor"), list):
            settings["cfactor"] = tuple(settings["cfactor"])
        options = SolverOptions(**settings)
    solver = _Solver(problem, options, comm)
    return solver.comm.guarded(lambda: solver.run(callback, gather))


def describe(n_steps: int, options: SolverOptions) -> str:
    """The printable hierarchy and cost model of a solve with these settings."""
    return Hierarchy(n_steps, options).table(options.nu, options.cycle)


__all__ = ["solve", "describe"]
