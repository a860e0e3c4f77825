"""The few array operations that optimizers and coarse propagators need, for each backend.

A model backend keeps its weights in its own arrays (numpy arrays for the numpy MLP, torch tensors
for a ``torch.nn.Module``); the optimizer updates and coarse propagators are written once, against
this small namespace, and run on either.  The solver still holds numpy arrays: ``asarray`` and
``to_numpy`` are the boundary (zero-copy on the CPU).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Protocol

import numpy as np


class ArrayOps(Protocol):
    """What the training layer does to arrays besides operators (+, -, *, /, **, slicing)."""

    name: str

    def asarray(self, U: np.ndarray) -> Any: ...

    def to_numpy(self, S: Any) -> np.ndarray: ...

    def column(self, v: Any, like: Any) -> Any:
        """``v`` (B,), a numpy or backend array, as a (B, 1) column of ``like``'s float dtype."""
        ...

    def where(self, cond: Any, a: Any, b: Any) -> Any: ...

    def sqrt(self, x: Any) -> Any: ...

    def clamp_min(self, x: Any, low: float) -> Any: ...

    def concat(self, parts: list[Any]) -> Any:
        """Join (B, n_i) blocks along the columns."""
        ...

    def zeros(self, shape: tuple[int, ...], like: Any) -> Any: ...

    def no_grad(self) -> Any: ...


class NumpyOps:
    """:class:`ArrayOps` for numpy arrays."""

    name = "numpy"

    def asarray(self, U: np.ndarray) -> np.ndarray:
        return U

    def to_numpy(self, S: np.ndarray) -> np.ndarray:
        return S

    def column(self, v: np.ndarray, like: np.ndarray) -> np.ndarray:
        return np.asarray(v).astype(like.dtype).reshape(-1, 1)

    def where(self, cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(cond, a, b)

    def sqrt(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(x)

    def clamp_min(self, x: np.ndarray, low: float) -> np.ndarray:
        return np.maximum(x, low)

    def concat(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts, axis=1)

    def zeros(self, shape: tuple[int, ...], like: np.ndarray) -> np.ndarray:
        return np.zeros(shape, dtype=like.dtype)

    def no_grad(self) -> Any:
        return _NO_CONTEXT


_NO_CONTEXT = nullcontext()
NUMPY = NumpyOps()
