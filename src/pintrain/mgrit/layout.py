"""Which rank owns which time points of each level.

The levels finer than the *agglomeration level* q are distributed: rank r owns a contiguous block
of whole C-intervals on each of them, so F-relaxation is local and only one state per rank
boundary crosses the wire.  The blocks are cut from the points of level q (q is the coarsest level
that still has at least one point per rank): rank r's share of level-q points, each standing for
``spacing_q`` fine steps, fixes its block on every finer level.  Levels q and coarser are small;
rank 0 holds them whole and solves them alone.  With one rank, q is the coarsest level and
everything is local.
"""

from __future__ import annotations

from dataclasses import dataclass

from .hierarchy import Hierarchy


@dataclass(frozen=True)
class LevelPart:
    """This rank's part of one level: global level indices ``lo..hi`` (empty when hi < lo).

    Row i of the level's array is global point ``base + i``; ``base = lo - 1`` when the rank has a
    ghost row (a copy of the left neighbour's last point), else ``lo``.
    """

    lo: int
    hi: int
    distributed: bool
    ghost: bool
    ranges: tuple[tuple[int, int], ...]  # (lo, hi) of every rank, for gathers and scatters

    @property
    def base(self) -> int:
        return self.lo - 1 if self.ghost else self.lo

    @property
    def n_rows(self) -> int:
        return max(self.hi - self.base + 1, 0)

    @property
    def empty(self) -> bool:
        return self.hi < self.lo

    @property
    def counts(self) -> list[int]:
        return [max(hi - lo + 1, 0) for lo, hi in self.ranges]

    def multiples(self, cf: int) -> list[int]:
        """Number of multiples of ``cf`` (C-points) each rank owns."""
        return [max(hi // cf - (lo + cf - 1) // cf + 1, 0) if hi >= lo else 0 for lo, hi in self.ranges]


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``0..n-1`` in ``parts`` contiguous near-equal blocks (first blocks one longer)."""
    q, r = divmod(n, parts)
    out, start = [], 0
    for p in range(parts):
        size = q + (1 if p < r else 0)
        out.append((start, start + size - 1))
        start += size
    return out


class Layout:
    def __init__(self, hier: Hierarchy, rank: int, size: int) -> None:
        levels = hier.levels
        n_lev = len(levels)
        q = 0
        for lev in levels:
            if lev.n_points >= size:
                q = lev.index
        if size == 1:
            q = n_lev - 1
        self.q = q
        self.rank, self.size = rank, size
        blocks = split(levels[q].n_points, size)
        parts: list[LevelPart] = []
        for lev in levels:
            if lev.index < q:
                ratio = levels[q].spacing // lev.spacing
                ranges: list[tuple[int, int]] = []
                for r, (a, b) in enumerate(blocks):
                    lo = a * ratio
                    hi = lev.n_steps if r == size - 1 else min((b + 1) * ratio - 1, lev.n_steps)
                    ranges.append((lo, hi) if b >= a else (lo, lo - 1))
                lo, hi = ranges[rank]
                parts.append(LevelPart(lo, hi, True, lo > 0 and hi >= lo, tuple(ranges)))
            else:
                whole = ((0, lev.n_steps),) + ((0, -1),) * (size - 1)
                lo, hi = whole[rank]
                parts.append(LevelPart(lo, hi, False, False, whole))
        self.parts = parts

    def __getitem__(self, lvl: int) -> LevelPart:
        return self.parts[lvl]

    def active(self, lvl: int) -> bool:
        """Whether this rank takes part in the work of level ``lvl``."""
        return self.parts[lvl].distributed or self.rank == 0
