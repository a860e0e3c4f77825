"""The problem protocol: what the solver asks of an evolution, and nothing more."""

from __future__ import annotations

from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

from ..arrays import ArrayOps
from ..errors import ProblemError, check_memory

Array = np.ndarray


@runtime_checkable
class Problem(Protocol):
    """An evolution ``u_{k+1} = step(u_k, k, 1)`` over fine points ``0..n_steps``.

    ``step(u, k, m)`` propagates a state from fine point ``k`` over ``m`` fine steps as the level of
    spacing ``m`` sees it: ``m == 1`` is the exact fine step, ``m > 1`` the coarse propagator.
    The optional members are protocols of their own, checked with ``isinstance``: ``step_many``
    (:class:`Batched`: the same for the rows of a 2-D array ``U`` started at the fine points ``ks``,
    one batched call instead of a loop), ``divergence_hint`` (:class:`Hinted`), ``describe``
    (:class:`Described`), ``trajectory_guess`` (:class:`Guessed`).  Training problems add more
    (:class:`pintrain.training.TrainingProblem`: ``serial_states``, ``losses``, ``step_losses``,
    ``metrics``).
    """

    n_steps: int

    def initial(self) -> Array: ...

    def step(self, u: Array, k: int, m: int) -> Array: ...


@runtime_checkable
class Batched(Protocol):
    """Optional: many independent propagations in one call (rows of ``U`` from the fine points ``ks``).

    A problem whose ``step_many`` also takes ``out=`` (an array of ``U``'s shape and dtype, possibly
    a strided view of a level's array, never overlapping ``U``) and writes the new states there says
    so with a true class attribute ``steps_into``: the solver then hands it the rows of its level
    array to write, and no array of the new states is allocated and copied per call."""

    def step_many(self, U: Array, ks: Array, m: int) -> Array: ...


@runtime_checkable
class Hinted(Protocol):
    """Optional: what to change when MGRIT diverges on this problem (quoted in the DivergenceError)."""

    @property
    def divergence_hint(self) -> str | None: ...


@runtime_checkable
class Guessed(Protocol):
    """Optional: an approximate trajectory the problem computed already, ``(s, X)`` with ``X[i]``
    near the state at fine point ``i s`` (``X[0]`` the initial state), or None.  The nested start
    takes it for the coarsest level instead of a sequential pass over that level (only an initial
    guess: the answer is the evolution's all the same); the ``curvature`` coarse step's table is
    built along such a trajectory."""

    def trajectory_guess(self) -> tuple[int, Array] | None: ...


@runtime_checkable
class Described(Protocol):
    """Optional: what the problem is, for JSON records (``{"name": ..., ...}``)."""

    name: str

    def describe(self) -> dict: ...


def step_many(
    problem: Problem,
    U: Array,
    ks: Array,
    m: int,
    batched: bool | None = None,
    native: ArrayOps | None = None,
    out: Any = None,
) -> Array:
    """Propagate every row of ``U`` from its fine point in ``ks`` over ``m`` steps (batched if possible).

    The problem's answer is checked (:func:`checked`): an array of exactly ``U``'s shape and a
    real dtype, or :class:`~pintrain.errors.ProblemError` naming the problem and the step.
    ``batched``: whether the problem is :class:`Batched`, if the caller knows (an ``isinstance``
    check against a runtime protocol costs microseconds, too much for every call); ``native``: the
    array namespace of ``U`` when it is not numpy (a :class:`~pintrain.arrays.Native` problem's).
    ``out``: where the new states go (returned): the problem writes there itself when it
    ``steps_into`` (:class:`Batched`), else its answer is copied in."""
    if batched if batched is not None else isinstance(problem, Batched):
        k0 = int(ks[0]) if len(ks) else 0
        if out is not None and getattr(problem, "steps_into", False):
            new = cast(Any, problem).step_many(U, ks, m, out=out)
            if new is not out:
                raise ProblemError(f"{type(problem).__name__}.step_many(..., out=) did not return out")
            return out
        new = checked(problem, cast(Batched, problem).step_many(U, ks, m), U.shape, U.dtype, k0, m, "step_many", native)
        if out is None:
            return new
        out[...] = new
        return out
    if out is None:
        out = np.empty_like(U) if native is None else native.empty(tuple(U.shape), U)
    for i in range(U.shape[0]):
        k = int(ks[i])
        out[i] = checked(problem, problem.step(U[i], k, m), U.shape[1:], U.dtype, k, m, native=native)
    return out


def checked(problem: Problem, value: object, shape: Any, dtype: Any, k: int, m: int,
            method: str = "step", native: ArrayOps | None = None) -> Array:  # fmt: skip
    """``value`` as a real array of ``shape``, or a :class:`ProblemError` that says what is wrong.

    Nothing is broadcast or cast silently: a scalar for a vector state, a complex, object or
    string result, ``None`` and a wrong shape are refused (an integer result is converted).  For a
    problem with its own arrays (``native``), ``value`` must be one of them, of the state's dtype."""
    what = f"{type(problem).__name__}.{method}(..., k={k}, m={m})"
    shape = tuple(shape)
    if value is None:
        raise ProblemError(f"{what} returned None; it must return the new state(s) as an array of shape {shape}")
    if native is not None and native.name != "numpy":
        if not native.native(value) or tuple(value.shape) != shape or value.dtype != dtype:  # type: ignore[attr-defined]
            got = f"{type(value).__name__} of shape {tuple(getattr(value, 'shape', ()))}"
            raise ProblemError(f"{what} returned {got}; expected a {native.name} array {shape} of dtype {dtype}")
        return value  # type: ignore[return-value]
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise ProblemError(
            f"{what} returned an array of dtype {arr.dtype}; the state must be real (float)"
            + (": a complex state would lose its imaginary part" if arr.dtype.kind == "c" else "")
        )
    if arr.shape != shape:
        raise ProblemError(f"{what} returned shape {arr.shape}; expected {shape}, the shape of its input")
    return arr if arr.dtype == dtype else arr.astype(dtype)


def serial_solve(problem: Problem, m: int = 1) -> Array:
    """Time-step the problem from point 0 to ``n_steps`` with spacing ``m``; rows are the states.

    With ``m == 1`` this is the serial reference that MGRIT converges to.
    """
    u = np.asarray(problem.initial(), dtype=float).ravel()
    n = problem.n_steps // m
    what = f"the serial run's {n + 1} states of {u.size} values"
    check_memory((n + 1) * u.size * u.itemsize, what, "use fewer steps")
    out = np.empty((n + 1, u.size), dtype=u.dtype)
    out[0] = u
    for j in range(n):
        out[j + 1] = checked(problem, problem.step(out[j], j * m, m), u.shape, u.dtype, j * m, m)
    return out
