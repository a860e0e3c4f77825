"""Solver settings chosen for the user: the hierarchy (levels, cfactors) that the cost model says
takes the least time per iteration, from the problem's own measured step costs.

A batched call of ``step_many`` over R rows at spacing m costs about ``a(m) + b(m) R`` seconds (a
fixed cost per call, then a cost per row); both are measured on the problem itself at a few
spacings (1, 4, 16, ...) and interpolated between them (log-log).  One FCF V-cycle on a level of n
steps with cfactor c makes about ``3 c`` calls over ``3 n`` rows in all at its own spacing, and one
call over ``n / c`` rows at the next level's spacing (the restriction); the coarsest level is a
sequential chain of lone steps, whose cost is measured on their own path (``problem.step``: the
compiled ``curvature`` chain's 0.8 ms a step of 16, where a batched call of one row took 5 ms).
The candidate hierarchies (a first cfactor of 4 to 64, then 4 or 8, as many levels as leave at
least two coarse points) are ranked by that time; the number of iterations is taken to be the same
for all of them, which holds for coarse propagators that are stable at any spacing
(``gauss-newton``, ``split``: measured in docs/performance.md), the only ones this is used for
(``lagged`` and ``curvature`` take ``split``'s sub-intervals and are treated alike: ``curvature``
on the digits MLP with Adam at N = 4096 took 2 iterations with 3 levels and cfactor 4, and with 2
levels and cfactor 4, 8, 16, 32 and 64; docs/performance.md).  A problem's ``prepare()`` (the
``curvature`` table) runs before the timing and is reported apart.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..arrays import NUMPY, Native
from .comm import resolve
from .hierarchy import Hierarchy
from .options import SolverOptions
from .problem import Batched, step_many

FIRST = (4, 8, 16, 32, 64)
THEN = (4, 8)
PROBE_ROWS = 64
AUTO_MIN_STEPS = 512  # below it a fixed hierarchy: few coarse grids to choose from, and a short solve


@dataclass
class StepCosts:
    """Measured ``a(m)`` (seconds per call) and ``b(m)`` (seconds per row) at some spacings m."""

    spacings: list[int] = field(default_factory=list)
    per_call: list[float] = field(default_factory=list)
    per_row: list[float] = field(default_factory=list)
    seconds: float = 0.0  # time the measurement took
    setup_seconds: float = 0.0  # time the problem's prepare() took before it (a coarse step's table)
    lone: list[float] = field(default_factory=list)  # seconds of one state's step on its own (the coarsest's)

    def at(self, m: int) -> tuple[float, float]:
        """``(a(m), b(m))``, interpolated in log-log between the measured spacings (extrapolated
        from the last two beyond them)."""
        a, b = self._interpolated(m, (self.per_call, self.per_row))
        return a, b

    def lone_at(self, m: int) -> float:
        """The seconds of one step of spacing m on its own (``problem.step``: the coarsest level's
        sequential chain), interpolated as :meth:`at`; ``a(m) + b(m)`` where it was not measured."""
        if len(self.lone) != len(self.spacings):
            return sum(self.at(m))
        return self._interpolated(m, (self.lone,))[0]

    def _interpolated(self, m: int, series: tuple[list[float], ...]) -> list[float]:
        s = np.log(np.asarray(self.spacings, dtype=float))
        x = math.log(m)
        out = []
        for ys in series:
            y = np.log(np.maximum(np.asarray(ys, dtype=float), 1e-12))
            if len(s) == 1:
                out.append(float(np.exp(y[0])))
                continue
            if x <= s[-1]:
                out.append(float(np.exp(np.interp(x, s, y))))
            else:  # the trend of the last two, never falling
                slope = max((y[-1] - y[-2]) / (s[-1] - s[-2]), 0.0)
                out.append(float(np.exp(y[-1] + slope * (x - s[-1]))))
        return out


def lone_step(problem: Any, u: Any, k: int, m: int) -> Any:
    """One state's step on its own: the path of the coarsest level's sequential solve (a model's
    lone-row path, the ``curvature`` chain's compiled unit), which may cost far less, or more, than a
    batched call of one row."""
    return problem.step(u, k, m)


def _best(fn: Any, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(problem: Any, max_spacing: int, budget_s: float = 1.0) -> StepCosts:
    """The step costs of ``problem`` at spacings 1, 4, 16, ... up to ``max_spacing``: one row and
    up to :data:`PROBE_ROWS` rows per call (about as many as a level of that spacing steps at
    once), best of a few; after two spacings at least, stops early once a probe costs more than a
    fifth of ``budget_s``, half of it has gone, or the next probe (4 times the spacing: at most about
    4 times this one's time) would overrun it (larger spacings are extrapolated).  The budget counts
    the probes' best times, not the first calls' compiling (``compile=True`` on a cold inductor
    cache: the first probe took 2.7 s, which stopped the measuring after one spacing and made the
    costs flat, and the choice 4 levels where 2 are fastest).  The digits MLP at N = 1000, eager: the
    probe of spacing 256 alone took 1.1 of the 1.5 s before the rule of the next probe, 0.4 s in all
    since."""
    prepare = getattr(problem, "prepare", None)
    built = float(getattr(problem, "setup_s", 0.0))
    if callable(prepare):  # what the coarse step builds once (a table), not a step's cost
        prepare()
    setup = float(getattr(problem, "setup_s", 0.0)) - built  # 0 when there was nothing to build
    t_start = time.perf_counter()
    u0 = np.asarray(problem.initial())
    ops = problem.ops if isinstance(problem, Native) else NUMPY
    native = None if ops is NUMPY else ops
    batched = isinstance(problem, Batched)
    n = int(problem.n_steps)
    costs = StepCosts()
    m, spent = 1, 0.0
    while m <= max(1, max_spacing):
        rows = min(PROBE_ROWS, max(2, n // (4 * m)))  # about as many as a level of that spacing batches
        ks = (np.arange(rows, dtype=np.int64) * m) % max(n - m + 1, 1)
        U = np.repeat(u0[None], rows, axis=0)
        if native is not None:
            U = native.asarray(U)
        one = _best(lambda: step_many(problem, U[:1], ks[:1], m, batched, native), 3)  # noqa: B023
        many = _best(lambda: step_many(problem, U, ks, m, batched, native), 2)  # noqa: B023
        lone = _best(lambda: lone_step(problem, U[0], int(ks[0]), m), 3)  # noqa: B023
        per_row = max((many - one) / (rows - 1), 0.0)
        costs.spacings.append(m)
        costs.per_call.append(max(one - per_row, one * 0.05))
        costs.per_row.append(max(per_row, 1e-9))
        costs.lone.append(max(lone, 1e-9))
        probe = 3 * one + 2 * many + 3 * lone  # the best times: a first call's compiling is not the step's cost
        spent += probe
        enough = len(costs.spacings) >= 2  # two spacings at least: a trend to extrapolate, not a flat cost
        if enough and (one + many > budget_s / 5 or spent > budget_s / 2 or spent + 4 * probe > budget_s):
            break
        m *= 4
    costs.seconds = time.perf_counter() - t_start
    costs.setup_seconds = setup
    return costs


def iteration_seconds(hier: Hierarchy, costs: StepCosts, nu: int = 1) -> float:
    """The cost model's seconds for one V-cycle of ``hier`` with these step costs."""
    total = 0.0
    levels = hier.levels
    for i, lev in enumerate(levels):
        a, b = costs.at(lev.spacing)
        if lev.is_coarsest:  # a chain of lone steps
            total += lev.n_steps * costs.lone_at(lev.spacing)
            continue
        c = lev.cfactor
        total += (nu + 2) * c * a + (nu + 2) * lev.n_steps * b
        a_next, b_next = costs.at(levels[i + 1].spacing)
        total += a_next + (lev.n_steps / c) * b_next
    return total


@dataclass
class Choice:
    """The settings chosen, the model's time per iteration for them and for the ``base`` settings,
    and the measured step costs."""

    options: SolverOptions
    seconds: float
    base_seconds: float
    costs: StepCosts
    measured: bool = True  # False: too few steps to coarsen, ``options`` are the base's

    def describe(self) -> str:
        o = self.options
        cf = o.cfactor if isinstance(o.cfactor, int) else ",".join(map(str, o.cfactor))
        return (
            f"settings chosen by the cost model from measured step costs ({self.costs.seconds:.2f} s to measure"
            + (
                f"; {self.costs.setup_seconds:.2f} s before it to build the coarse step's table, counted in "
                "MGRIT's time"
                if self.costs.setup_seconds
                else ""
            )  # fmt: skip
            + "): "
            f"levels {o.levels}, cfactor {cf}, nested; a V-cycle about {self.seconds * 1e3:.3g} ms "
            f"(3 levels, cfactor 4: {self.base_seconds * 1e3:.3g} ms)"
        )


def candidates(n_steps: int, base: SolverOptions) -> list[SolverOptions]:
    """Hierarchies with a first cfactor from :data:`FIRST`, then one from :data:`THEN`, with every
    depth that keeps at least ``base.min_coarse`` coarse points (deduplicated by their grids)."""
    out, seen = [], set()
    for f1 in FIRST:
        for f2 in THEN:
            for levels in range(2, 12):
                opts = replace(base, levels=levels, cfactor=(f1, f2), nested=True, max_coarse=None)
                hier = Hierarchy(n_steps, opts)
                key = tuple((lev.n_steps, lev.spacing) for lev in hier.levels)
                if len(hier) < levels or key in seen:
                    continue
                seen.add(key)
                out.append(replace(opts, levels=len(hier)))
    return out


def choose(
    problem: Any,
    base: SolverOptions | None = None,
    budget_s: float = 1.0,
    costs: StepCosts | None = None,
    comm: Any = None,
) -> Choice:
    """The candidate settings (:func:`candidates`) of least modelled time per iteration for
    ``problem``, from its step costs measured now (:func:`measure`; or ``costs`` as given).  The
    other fields (tolerance, relaxation, storage, ...) are ``base``'s.  Under MPI (``comm``, or
    mpiexec) rank 0 measures and chooses, and every rank gets its choice: one hierarchy for all."""
    ranks = resolve(comm)
    if ranks.size == 1:
        return _choose(problem, base, budget_s, costs)
    return ranks.guarded(lambda: ranks.bcast(_choose(problem, base, budget_s, costs) if ranks.rank == 0 else None))


def auto_layout(problem: Any, base: SolverOptions, comm: Any = None) -> Choice | None:
    """The cost model's choice for a problem given no layout (``fit`` without ``levels``, ``cfactor``
    and ``options``; ``pintrain train`` without ``--levels``, ``--cfactor``, ``--nested``,
    ``--max-coarse``), or None where it does not apply and the fixed default stands: fewer than
    :data:`AUTO_MIN_STEPS` steps, or a coarse propagator whose iterations depend on the hierarchy
    (``problem.any_spacing`` false or absent: the model counts iterations as equal)."""
    if int(problem.n_steps) < AUTO_MIN_STEPS or not getattr(problem, "any_spacing", False):
        return None
    choice = choose(problem, base, comm=comm)
    return choice if choice.measured else None


def _choose(problem: Any, base: SolverOptions | None, budget_s: float, costs: StepCosts | None) -> Choice:
    base = base or SolverOptions()
    n = int(problem.n_steps)
    options = candidates(n, base)
    if not options:  # too few steps to coarsen
        return Choice(base, 0.0, 0.0, StepCosts([1], [0.0], [0.0]), measured=False)
    if costs is None:
        costs = measure(problem, max(Hierarchy(n, o).levels[-1].spacing for o in options), budget_s)
    ranked = sorted(options, key=lambda o: iteration_seconds(Hierarchy(n, o), costs, o.nu))
    best = ranked[0]
    base_hier = Hierarchy(n, replace(base, levels=3, cfactor=4))
    return Choice(
        best,
        iteration_seconds(Hierarchy(n, best), costs, best.nu),
        iteration_seconds(base_hier, costs, base.nu),
        costs,
    )


__all__ = [
    "AUTO_MIN_STEPS",
    "Choice",
    "StepCosts",
    "auto_layout",
    "candidates",
    "choose",
    "iteration_seconds",
    "lone_step",
    "measure",
]
