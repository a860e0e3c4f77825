"""The problem protocol: what the solver asks of an evolution, and nothing more."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

Array = np.ndarray


@runtime_checkable
class Problem(Protocol):
    """An evolution ``u_{k+1} = step(u_k, k, 1)`` over fine points ``0..n_steps``.

    ``step(u, k, m)`` propagates a state from fine point ``k`` over ``m`` fine steps as the level of
    spacing ``m`` sees it: ``m == 1`` is the exact fine step, ``m > 1`` the coarse propagator.
    A problem may also define ``step_many(U, ks, m)``: the same for the rows of a 2-D array ``U``
    started at the fine points ``ks`` (one batched call instead of a loop).
    """

    n_steps: int

    def initial(self) -> Array: ...

    def step(self, u: Array, k: int, m: int) -> Array: ...


def step_many(problem: Problem, U: Array, ks: Array, m: int) -> Array:
    """Propagate every row of ``U`` from its fine point in ``ks`` over ``m`` steps (batched if possible)."""
    fn = getattr(problem, "step_many", None)
    if fn is not None:
        return np.asarray(fn(U, ks, m), dtype=U.dtype).reshape(U.shape)
    out = np.empty_like(U)
    for i in range(U.shape[0]):
        out[i] = problem.step(U[i], int(ks[i]), m)
    return out


def serial_solve(problem: Problem, m: int = 1) -> Array:
    """Time-step the problem from point 0 to ``n_steps`` with spacing ``m``; rows are the states.

    With ``m == 1`` this is the serial reference that MGRIT converges to.
    """
    u = np.asarray(problem.initial(), dtype=float).ravel()
    n = problem.n_steps // m
    out = np.empty((n + 1, u.size), dtype=u.dtype)
    out[0] = u
    for j in range(n):
        out[j + 1] = problem.step(out[j], j * m, m)
    return out
