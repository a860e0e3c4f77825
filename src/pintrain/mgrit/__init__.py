"""The time-parallel solver: nonlinear (FAS) MGRIT for any evolution ``u_{k+1} = step(u_k, k, 1)``."""

from .hierarchy import Hierarchy, Level
from .options import SolverOptions, default_tol, with_default_tol
from .problem import Problem, serial_solve, step_many
from .result import Result
from .solver import describe, solve

__all__ = [
    "Hierarchy",
    "Level",
    "Problem",
    "Result",
    "SolverOptions",
    "default_tol",
    "describe",
    "serial_solve",
    "solve",
    "step_many",
    "with_default_tol",
]
