"""Solver options: one frozen, validated dataclass."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..errors import OptionError, check_int, check_positive

RELAX_PATTERN = re.compile(r"^F(?:CF)*$|^F\(CF\)\^(\d+)$")
CYCLES = ("V", "F")
NORMS = ("l2", "inf")
GUESSES = ("zero", "initial")
STORAGES = ("full", "c-points")
MAX_NU = 100
DEFAULT_TOL = 1e-9
# the round-off floor of the l2 residual in float32, in units of eps sqrt(n_C) (benchmarks/float32_floor.py):
# 0.87-3.4 on 5 cases at N = 1024 and 4096, but 28 for the digits MLP with Adam at N = 16384 (the trajectory
# amplifies round-off more over longer runs); a default tolerance of this many units sits above all of them.
# Measured with cfactor 4. A C-point's residual spans its interval's round-off: with 2 levels at N = 16384
# (digits MLP, Adam, nested) the floor was 8.8e-5 (11.6 units) at cfactor 4 and 2.0e-4 (76 units) at cfactor
# 32, so default_tol scales the margin by sqrt(cfactor / 4) above cfactor 4 (cfactor 32: 27 scaled units, the
# margin 3.7 times above it, where unscaled it was 1.3; record benchmarks/results/float32_floor_cfactor.json)
FLOOR_MARGIN = 100.0
FLOOR_CFACTOR = 4


def parse_relax(relax: str) -> int:
    """Number ``nu`` of CF sweeps in ``F(CF)^nu`` from a name such as "F", "FCF", "FCFCF", "F(CF)^3"."""
    if not isinstance(relax, str):
        raise OptionError("relax", relax, 'a string such as "F", "FCF", "FCFCF" or "F(CF)^nu"')
    text = relax.strip().upper()
    match = RELAX_PATTERN.match(text)
    if match is None:
        raise OptionError("relax", relax, 'one of "F", "FCF", "FCFCF", ... or "F(CF)^nu" with nu >= 0')
    nu = int(match.group(1)) if match.group(1) is not None else (len(text) - 1) // 2
    if nu > MAX_NU:
        raise OptionError("relax", relax, f"F(CF)^nu with nu <= {MAX_NU} (each CF sweep costs a full pass)")
    return nu


@dataclass(frozen=True)
class SolverOptions:
    """Every MGRIT setting, validated on construction (a bad value raises :class:`OptionError`).

    ``cfactor`` is one int for all levels or a list, one factor per coarsening (level l -> l+1).
    ``tol`` is an absolute bound on the residual norm, ``rtol`` (optional) a bound relative to the
    first iteration's residual; the solve stops at whichever is met first.  ``divergence_factor``
    bounds growth: a residual above it times the first one, or a state on any level above it times
    ``max(1, max |u_0|)``, stops the solve with a :class:`~pintrain.errors.DivergenceError`.
    ``max_coarse`` (optional) stops coarsening at the first level with at most that many steps
    (Schroder 2017 coarsens until at most 10 remain); ``levels`` is then only an upper bound.
    ``guess`` is the initial value of every point but 0: ``"initial"`` (a copy of ``u_0``) or
    ``"zero"`` (the paper's choice).  ``storage``: ``"full"`` keeps every point of every level;
    ``"c-points"`` (XBraid's default) keeps only the C-points (and each rank's last point) of the
    levels that are cut over ranks, recomputing F-points in each sweep: about ``N / cfactor``
    states on the fine level instead of N, the same arithmetic (the same answer bit for bit), and
    the result holds the fine C-points and N (``Result.points``).
    """

    levels: int = 3
    cfactor: int | tuple[int, ...] = 4
    relax: str = "FCF"
    cycle: str = "V"
    tol: float = DEFAULT_TOL
    rtol: float | None = None
    max_iter: int = 50
    nested: bool = False
    norm: str = "l2"
    min_coarse: int = 2
    max_coarse: int | None = None
    guess: str = "initial"
    divergence_factor: float = 1e8
    storage: str = "full"
    nu: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_int("levels", self.levels, 1)
        if isinstance(self.cfactor, list | tuple):
            if len(self.cfactor) == 0:
                raise OptionError("cfactor", self.cfactor, "an int >= 2 or a non-empty list of ints >= 2")
            for c in self.cfactor:
                check_int("cfactor", c, 2)
            object.__setattr__(self, "cfactor", tuple(int(c) for c in self.cfactor))
        else:
            check_int("cfactor", self.cfactor, 2)
        object.__setattr__(self, "nu", parse_relax(self.relax))
        object.__setattr__(self, "relax", self.relax.strip().upper())
        if self.cycle not in CYCLES:
            raise OptionError("cycle", self.cycle, f"one of {', '.join(map(repr, CYCLES))}")
        check_positive("tol", self.tol)
        if self.rtol is not None:
            check_positive("rtol", self.rtol)
            if self.rtol >= 1:
                raise OptionError("rtol", self.rtol, "a float in (0, 1), or None")
        check_int("max_iter", self.max_iter, 1)
        if not isinstance(self.nested, bool):
            raise OptionError("nested", self.nested, "True or False")
        if self.norm not in NORMS:
            raise OptionError("norm", self.norm, f"one of {', '.join(map(repr, NORMS))}")
        check_int("min_coarse", self.min_coarse, 2)
        if self.max_coarse is not None:
            check_int("max_coarse", self.max_coarse, 1, ", or None")
        if self.guess not in GUESSES:
            raise OptionError("guess", self.guess, f"one of {', '.join(map(repr, GUESSES))}")
        if self.storage not in STORAGES:
            raise OptionError("storage", self.storage, f"one of {', '.join(map(repr, STORAGES))}")
        check_positive("divergence_factor", self.divergence_factor)
        if self.divergence_factor <= 1:
            raise OptionError("divergence_factor", self.divergence_factor, "a float > 1")

    def cfactor_at(self, level: int) -> int:
        """Coarsening factor from ``level`` to ``level + 1`` (a list's last entry repeats)."""
        if isinstance(self.cfactor, tuple):
            return self.cfactor[min(level, len(self.cfactor) - 1)]
        return int(self.cfactor)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("nu", None)
        if isinstance(d["cfactor"], tuple):
            d["cfactor"] = list(d["cfactor"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SolverOptions:
        """The options of :meth:`to_dict` (a JSON record), validated again."""
        kw = {k: v for k, v in d.items() if k != "nu"}
        if isinstance(kw.get("cfactor"), list):
            kw["cfactor"] = tuple(kw["cfactor"])
        unknown = sorted(set(kw) - {f.name for f in fields(cls) if f.init})
        if unknown:
            raise OptionError("option", unknown[0], f"one of the SolverOptions fields ({', '.join(FIELDS)})")
        return cls(**kw)


FIELDS = tuple(f.name for f in fields(SolverOptions) if f.init)


def roundoff_scale(dtype: Any, n_steps: int, options: SolverOptions) -> float:
    """eps sqrt(n_C): the unit of the residual's round-off floor for states of ``dtype`` (the l2
    norm over the n_C fine C-points adds up every point's rounding; the inf norm does not)."""
    eps = float(np.finfo(np.dtype(dtype)).eps) if np.issubdtype(np.dtype(dtype), np.floating) else 0.0
    n_c = max(1, int(n_steps) // options.cfactor_at(0)) if options.norm == "l2" else 1
    return eps * math.sqrt(n_c)


def default_tol(dtype: Any, n_steps: int, options: SolverOptions) -> float:
    """The tolerance a solve of ``n_steps`` steps in ``dtype`` takes when the user gives none.

    :data:`DEFAULT_TOL` (1e-9), or above the round-off floor where that is higher: the residual of
    a float32 solve stops decreasing at 0.87-3.4 eps sqrt(n_C) (:func:`roundoff_scale`) for N up to
    4096, and at 28 for the digits MLP with Adam at N = 16384, so float32 takes ``FLOOR_MARGIN``
    (100) eps sqrt(n_C), to two digits: 1.9e-4 at N = 1024, 3.8e-4 at 4096, 7.6e-4 at 16384 with
    cfactor 4 (the weights then differ from the serial loop's by 2e-6 to 6e-5 relative, digits MLP,
    SGD and Adam).  A first cfactor c above 4 scales that by sqrt(c / 4): each C-point's residual
    spans c steps of round-off (with 2 levels and cfactor 32 at N = 16384 the unscaled 2.7e-4 lay
    1.3 times above the floor, 2.0e-4, and the solve took 4 iterations where 2 reach the same
    weights), so the tolerance is the same for any first cfactor of 4 or more.  Float64 keeps 1e-9
    (its floor, about 1e-13, is far below)."""
    interval = math.sqrt(max(1.0, options.cfactor_at(0) / FLOOR_CFACTOR))
    return max(DEFAULT_TOL, float(f"{FLOOR_MARGIN * interval * roundoff_scale(dtype, n_steps, options):.2g}"))


def with_default_tol(options: SolverOptions, problem: Any) -> SolverOptions:
    """``options`` with the tolerance :func:`default_tol` gives ``problem`` (its states' dtype, its
    steps and ``options``' first coarsening): what ``fit`` and ``pintrain train`` take when the user
    gives no tolerance."""
    dtype = np.asarray(problem.initial()).dtype
    return replace(options, tol=default_tol(dtype, problem.n_steps, options))
