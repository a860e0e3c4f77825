"""The model protocol: what a training problem asks of a network backend, for many weight vectors at once.

A backend (the numpy MLP, :class:`NumpyModel`; a ``torch.nn.Module`` through ``torch.func``,
:class:`pintrain.torch.TorchModel`) holds the data and answers few questions about a batch of B
flat weight vectors ``W`` (B, P), each with its own samples (:class:`Batches`):

- ``gradient(W, batches)``: the gradient of the sum of the step losses of each row's batches;
- ``loss(W, batches)``: those losses;
- optional capabilities, each a protocol of its own: ``linearization`` (the output Jacobian, for
  implicit coarse steps: :class:`Linearizable`), ``serial_states`` (the framework's own training
  loop as the reference: :class:`HasSerialLoop`), ``metrics`` (accuracy and the like: :class:`HasMetrics`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..arrays import NUMPY, ArrayOps
from ..errors import OptionError


class Batches(NamedTuple):
    """The samples of a batch of losses: ``idx`` (B, r * b), row i the batches of its r steps one
    after the other, each step's loss weighted by ``weight``; ``idx=None``: for every row one step
    whose batch is the whole data set (full-batch training, or the paper's all-data coarse steps).
    (A named tuple: one is made for every step call, so it must be cheap.)"""

    idx: np.ndarray | None
    r: int = 1
    weight: float = 1.0


@runtime_checkable
class Model(Protocol):
    """A network backend: its data, its flat weights, gradients and losses for many weight vectors."""

    ops: ArrayOps
    n_params: int
    n_samples: int

    def initial_weights(self) -> Any:
        """The flat initial weights (P,), a backend array."""
        ...

    def gradient(self, W: Any, batches: Batches) -> Any:
        """``weight * sum_j grad L_j(w)`` over each row's r step batches (B, P)."""
        ...

    def loss(self, W: Any, batches: Batches) -> Any:
        """``weight * sum_j L_j(w)`` over each row's r step batches (B,)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the network is (for JSON), with a one-line ``summary``."""
        ...


@runtime_checkable
class HasLoneGradient(Protocol):
    """A model with a cheaper path for one weight vector stepped on its own (the coarsest level's
    sequential solve, :meth:`~pintrain.training.TrainingProblem.step`).  It may round differently
    from :meth:`Model.gradient`; the solver takes it only where every layout of ranks takes it
    (the coarsest solve, on rank 0), so that the answer stays the same at any rank count."""

    def gradient_lone(self, W: Any, batches: Batches) -> Any:
        """:meth:`Model.gradient` of a single row (W of shape (1, P))."""
        ...


@runtime_checkable
class HasHessian(Protocol):
    """A model that gives Hessian-vector products of its step losses (the ``curvature`` coarse step)."""

    def hessian_vectors_many(self, W: Any, batches: Batches, V: Any) -> Any:
        """``H_i V_i^T`` for every row i: H_i the Hessian of row i's loss over its ``batches`` (row i
        of the indices) at the weights ``W[i]`` (rows, P), times each row of ``V[i]`` (rows, k, P);
        returns (rows, k, P), each row's value independent of the others."""
        ...


@runtime_checkable
class Linearizable(Protocol):
    """A model that gives its output Jacobian (numpy arrays), for linearly implicit coarse steps."""

    def linearization(self, W: Any, batches: Batches) -> tuple[np.ndarray, np.ndarray, float]:
        """``(J, r, scale)``: output residuals ``r`` (B, R) over the batches, their Jacobian ``J``
        (B, R, P); the gradient is ``scale * J^T r``, the Gauss-Newton Hessian ``scale * J^T J``."""
        ...


@runtime_checkable
class HasSerialLoop(Protocol):
    """A model whose framework has its own training loop, the reference that MGRIT must match."""

    def serial_run(
        self,
        optimizer: Any,
        table: np.ndarray | None,
        n_steps: int,
        lrs: np.ndarray | None = None,
        clip_grad_norm: float | None = None,
        keep: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The states (weights and optimizer slots, packed as the evolution's) after the steps in
        ``keep`` (all if None), and every step's batch loss: step k on the batch ``table[k]`` (all
        samples if None) with learning rate ``lrs[k]`` (the optimizer's if None), its gradient
        clipped to ``clip_grad_norm``."""
        ...


@runtime_checkable
class HasMetrics(Protocol):
    def metrics(self, w: Any) -> dict[str, float]:
        """Figures of merit of the weights ``w`` (P,) besides the loss, e.g. accuracy."""
        ...


class NumpyModel:
    """A numpy network (:class:`~pintrain.training.MLP` or :class:`~pintrain.training.TraskNetwork`)
    with its data ``X`` (n, n_in), ``Y`` (n, n_out) and initial weights ``w0``, as a :class:`Model`.

    A step's loss is ``scale * 1/2 sum |y_hat - y|^2`` over its batch, ``scale`` the network's
    ``loss_scale(batch size)``; the union of r batches is one pass over their samples."""

    ops: ArrayOps = NUMPY

    def __init__(self, net: Any, X: Any, Y: Any, w0: Any) -> None:
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        if X.ndim != 2 or X.shape[1] != net.sizes[0] or Y.shape != (X.shape[0], net.sizes[-1]):
            raise OptionError(
                "data",
                f"X {X.shape}, Y {Y.shape}",
                f"X of shape (n, {net.sizes[0]}) and Y of shape (n, {net.sizes[-1]})",
            )
        w0 = np.asarray(w0, dtype=np.float64).reshape(-1)
        if w0.size != net.n_params or not np.isfinite(w0).all():
            raise OptionError("w0", f"{w0.size} values", f"{net.n_params} finite values")
        self.net = net
        self.X, self.Y = X, Y
        self.w0 = w0
        self.n_params = int(net.n_params)
        self.n_samples = int(X.shape[0])
        self._scale_all = net.loss_scale(self.n_samples)

    def initial_weights(self) -> np.ndarray:
        return self.w0.copy()

    def activation_bytes(self, samples: int) -> int:
        """Bytes of the activations one row's step over ``samples`` samples makes (each layer's
        outputs, twice: the forward values and the backward deltas): what a pass must fit in cache."""
        return 2 * 8 * samples * int(sum(self.net.sizes))

    def _data(self, b: Batches) -> tuple[np.ndarray, np.ndarray, float]:
        if b.idx is None:
            return self.X, self.Y, b.weight * self._scale_all
        return self.X[b.idx], self.Y[b.idx], b.weight * self.net.loss_scale(b.idx.shape[1] // b.r)

    def gradient(self, W: np.ndarray, batches: Batches) -> np.ndarray:
        if batches.idx is None:  # inline: a lone full-batch step of a small network is all overhead
            return self.net.gradient(W, self.X, self.Y, batches.weight * self._scale_all)
        X, Y, scale = self._data(batches)
        return self.net.gradient(W, X, Y, scale)

    def loss(self, W: np.ndarray, batches: Batches) -> np.ndarray:
        X, Y, scale = self._data(batches)
        err = self.net.predict(W, X) - (Y[None] if Y.ndim == 2 else Y)
        return 0.5 * scale * np.sum(err * err, axis=(1, 2))

    def linearization(self, W: np.ndarray, batches: Batches) -> tuple[np.ndarray, np.ndarray, float]:
        X, Y, scale = self._data(batches)
        out, J = self.net.output_jacobian(W, X)
        return J, out - Y.reshape(-1 if Y.ndim == 2 else (Y.shape[0], -1)), scale

    def describe(self) -> dict[str, Any]:
        n = self.net
        return {
            "kind": type(n).__name__,
            "sizes": list(n.sizes),
            "hidden": n.hidden,
            "output": n.output,
            "bias": n.bias,
            "loss": n.loss,
            "n_params": n.n_params,
            "summary": f"{'-'.join(map(str, n.sizes))} {n.hidden} network, {n.n_params} weights",
        }
