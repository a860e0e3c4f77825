"""The time-grid hierarchy: which fine points each level holds, and what one iteration costs."""

from __future__ import annotations

from dataclasses import dataclass

from .options import SolverOptions


@dataclass(frozen=True)
class Level:
    """One time grid: points ``0..n_steps`` at fine indices ``spacing * j``.

    ``cfactor`` is the coarsening factor to the next level (0 on the coarsest level, which is
    solved by sequential time stepping).
    """

    index: int
    n_steps: int
    spacing: int
    cfactor: int

    @property
    def n_points(self) -> int:
        return self.n_steps + 1

    @property
    def is_coarsest(self) -> bool:
        return self.cfactor == 0


class Hierarchy:
    """Levels from fine (0) to coarsest, built from the number of fine steps and the options.

    Coarsening stops at ``options.levels``, when the next grid would have fewer than
    ``options.min_coarse`` points, or at the first grid with at most ``options.max_coarse`` steps.
    ``print(hierarchy)`` shows the grids and the cost model.
    """

    def __init__(self, n_steps: int, options: SolverOptions) -> None:
        levels: list[Level] = []
        n, spacing = int(n_steps), 1
        for lvl in range(options.levels):
            cf = options.cfactor_at(lvl)
            small = options.max_coarse is not None and n <= options.max_coarse
            last = lvl == options.levels - 1 or (n // cf) + 1 < options.min_coarse or small
            levels.append(Level(lvl, n, spacing, 0 if last else cf))
            if last:
                break
            n, spacing = n // cf, spacing * cf
        self.levels = levels
        self.n_steps = int(n_steps)

    def __len__(self) -> int:
        return len(self.levels)

    def __getitem__(self, i: int) -> Level:
        return self.levels[i]

    def level_costs(self, nu: int, ranks: int | None = None) -> list[dict[str, float]]:
        """Per level, one visit: propagator applications in all (``work``) and the sequential chain
        (``path``) with one processor per C-interval, or with ``ranks`` processors (each steps its
        share of the level's points, at least one C-interval's worth, in every sweep); the
        coarsest level is one sequential sweep."""
        out = []
        for lev in self.levels:
            if lev.is_coarsest:
                out.append({"work": float(lev.n_steps), "path": float(lev.n_steps)})
                continue
            # relaxation F (C F)^nu; restriction: one fine + one coarse step per C-point; correction: F
            if ranks is None:
                path = (lev.cfactor - 1) * (nu + 2) + nu + 2
            else:
                path = (nu + 2) * max(-(-lev.n_steps // ranks), lev.cfactor)
            out.append({"work": float(lev.n_steps * (nu + 2)), "path": float(path)})
        return out

    def iteration_cost(self, nu: int, cycle: str = "V", ranks: int | None = None) -> dict[str, float]:
        """Cost model of one iteration, in propagator applications.

        ``work``: all applications on all levels (what one process does); ``critical_path``: the
        sequential applications with one processor per C-interval (what unlimited parallelism
        leaves), or with ``ranks`` processors; both count a coarse step as one application (its
        real cost is problem specific).
        """
        costs = self.level_costs(nu, ranks)

        def cyc(lvl: int, kind: str) -> tuple[float, float]:
            w, p = costs[lvl]["work"], costs[lvl]["path"]
            if self.levels[lvl].is_coarsest:
                return w, p
            cw, cp = cyc(lvl + 1, kind)
            w, p = w + cw, p + cp
            if kind == "F" and not self.levels[lvl + 1].is_coarsest:
                vw, vp = cyc(lvl + 1, "V")
                w, p = w + vw, p + vp
            return w, p

        work, path = cyc(0, cycle)
        return {"work": work, "critical_path": path, "serial": float(self.n_steps)}

    def memory_bytes(self, state_size: int, itemsize: int = 8, storage: str = "full") -> int:
        """Bytes of the level arrays one process holds: every level's states, the FAS right-hand
        sides of the coarse levels, the cached propagations at the C-points, and the temporaries of
        the largest batched step (about one C-point's worth of rows).  With ``storage="c-points"``
        the levels above the coarsest keep their C-points only, and a sweep holds, besides them,
        three (fine level: the input, the output, then the cache) or four (coarse levels: the
        right-hand side's rows are added) arrays of one row per C-interval: the batched sweep's
        price, so the fine level takes about 4 N / cfactor states."""
        rows = 0
        for lev in self.levels:
            cf = max(lev.cfactor, 1)
            per_c = lev.n_points // cf + 1
            g = lev.n_points if lev.index > 0 else 0
            if storage == "c-points" and not lev.is_coarsest:
                rows += g + (per_c + 1) + (4 if lev.index > 0 else 3) * per_c
            else:
                rows += lev.n_points + g + 2 * per_c
        return rows * state_size * itemsize

    def table(self, nu: int = 1, cycle: str = "V") -> str:
        rows = ["level   points  spacing  cfactor", "-----  -------  -------  -------"]
        for lev in self.levels:
            cf = "-" if lev.is_coarsest else str(lev.cfactor)
            rows.append(f"{lev.index:5d}  {lev.n_points:7d}  {lev.spacing:7d}  {cf:>7}")
        cost = self.iteration_cost(nu, cycle)
        rows.append(
            f"one {cycle}-cycle: {cost['work']:.0f} propagator applications in all, "
            f"critical path {cost['critical_path']:.0f} (serial: {self.n_steps})"
        )
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> list[dict[str, int]]:
        return [
            {"level": lev.index, "points": lev.n_points, "spacing": lev.spacing, "cfactor": lev.cfactor}
            for lev in self.levels
        ]
