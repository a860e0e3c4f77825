"""The small array namespace that the solver, the optimizers and the coarse propagators are written against.

A problem keeps its states in its own arrays: numpy arrays (the default, and the numpy MLP), or
torch tensors on the problem's device (a ``torch.nn.Module``: :class:`pintrain.torch.model.TorchOps`).
Besides operators (+, -, *, /, **, ``abs``, slicing, ``.sum()``, ``.max()``), everything the
solver and the training layer do to arrays goes through an :class:`ArrayOps`; the solver's level
arrays, its arithmetic and the steps then stay in the problem's arrays end to end, and only the
results (and MPI messages) cross to numpy on the host.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Protocol, runtime_checkable

import numpy as np

CPU_PASS_BYTES = 16 << 20
"""Bytes of states per pass of a batched step on a CPU (:attr:`ArrayOps.pass_bytes`)."""


class ArrayOps(Protocol):
    """What pintrain does to a backend's arrays besides operators."""

    name: str
    pass_bytes: int
    """A batched step takes its rows in passes of at most this many bytes of states: on a CPU the
    step's temporaries then stay in cache and are reused instead of faulted in fresh (measured
    1.9-2.5x cheaper per row for the digits MLP than one pass over 4096 rows); the output is the
    same bit for bit, since a row's step does not depend on the other rows."""

    def asarray(self, U: np.ndarray) -> Any:
        """A numpy array as this backend's array (zero-copy where it can)."""
        ...

    def to_numpy(self, S: Any) -> np.ndarray:
        """This backend's array as a numpy array on the host (zero-copy where it can)."""
        ...

    def native(self, x: Any) -> bool:
        """Whether ``x`` is already this backend's array."""
        ...

    def empty(self, shape: tuple[int, ...], like: Any) -> Any: ...

    def zeros(self, shape: tuple[int, ...], like: Any) -> Any: ...

    def index(self, js: np.ndarray) -> Any:
        """Integer row indices (numpy) as an index for this backend's arrays."""
        ...

    def column(self, v: Any, like: Any) -> Any:
        """``v`` (B,), a numpy or backend array, as a (B, 1) column of ``like``'s float dtype."""
        ...

    def where(self, cond: Any, a: Any, b: Any) -> Any: ...

    def sqrt(self, x: Any) -> Any: ...

    def lerp(self, a: Any, b: Any, weight: float) -> Any:
        """``a + weight * (b - a)`` (one fused kernel where the backend has one)."""
        ...

    def addcmul(self, a: Any, b: Any, c: Any, value: float) -> Any:
        """``a + value * b * c`` (one fused kernel where the backend has one)."""
        ...

    def clamp_min(self, x: Any, low: float) -> Any: ...

    def concat(self, parts: list[Any], out: Any = None) -> Any:
        """Join (B, n_i) blocks along the columns (into ``out`` when given)."""
        ...

    def concat_rows(self, parts: list[Any]) -> Any:
        """Stack (n_i, d) blocks along the rows."""
        ...

    def add_into(self, out: Any, a: Any, b: Any) -> None:
        """``out[...] = a + b`` (``out`` a view into a level's array)."""
        ...

    def finite_rows(self, x: Any) -> np.ndarray:
        """Whether every entry of each row of ``x`` (B, d) is finite: a numpy bool array (B,)."""
        ...

    def max_abs_rows(self, x: Any) -> np.ndarray:
        """``max |x|`` of each row (NaN if the row has one): a numpy float array (B,)."""
        ...

    def no_grad(self) -> Any: ...

    def free_bytes(self) -> int:
        """Memory available to new arrays of this backend (host or device)."""
        ...


@runtime_checkable
class Native(Protocol):
    """A problem whose states live in its own arrays (``ops``): the solver keeps its levels there."""

    ops: ArrayOps


class NumpyOps:
    """:class:`ArrayOps` for numpy arrays."""

    name = "numpy"

    pass_bytes = CPU_PASS_BYTES

    def asarray(self, U: np.ndarray) -> np.ndarray:
        return U

    def to_numpy(self, S: np.ndarray) -> np.ndarray:
        return S

    def native(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def empty(self, shape: tuple[int, ...], like: np.ndarray) -> np.ndarray:
        return np.empty(shape, dtype=like.dtype)

    def zeros(self, shape: tuple[int, ...], like: np.ndarray) -> np.ndarray:
        return np.zeros(shape, dtype=like.dtype)

    def index(self, js: np.ndarray) -> np.ndarray:
        return js

    def column(self, v: Any, like: np.ndarray) -> np.ndarray:
        return np.asarray(v).astype(like.dtype).reshape(-1, 1)

    def where(self, cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(cond, a, b)

    def sqrt(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(x)

    def lerp(self, a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
        return a + weight * (b - a)

    def addcmul(self, a: np.ndarray, b: np.ndarray, c: np.ndarray, value: float) -> np.ndarray:
        return a + value * (b * c)

    def clamp_min(self, x: np.ndarray, low: float) -> np.ndarray:
        return np.maximum(x, low)

    def concat(self, parts: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        return np.concatenate(parts, axis=1, out=out)

    def concat_rows(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts, axis=0)

    def add_into(self, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        np.add(a, b, out=out)

    def finite_rows(self, x: np.ndarray) -> np.ndarray:
        return np.isfinite(x).all(axis=-1)

    def max_abs_rows(self, x: np.ndarray) -> np.ndarray:
        return np.abs(x).max(axis=1)

    def no_grad(self) -> Any:
        return _NO_CONTEXT

    def free_bytes(self) -> int:
        from .errors import available_memory

        return available_memory()


_NO_CONTEXT = nullcontext()
NUMPY = NumpyOps()
