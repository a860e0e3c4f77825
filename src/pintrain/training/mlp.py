"""A fully connected network in numpy, float64, batched over many weight vectors at once.

Every function takes ``W`` of shape ``(B, P)``: B independent flat weight vectors (the states of B
time points) and ``X`` of shape ``(B, M, n_in)``: each weight vector's own M samples.  Forward and
backward passes are batched matrix products, so one call steps all B networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import OptionError, check_int


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) as (1 + tanh(z / 2)) / 2, without overflow warnings; overwrites ``z``."""
    z *= 0.5
    np.tanh(z, out=z)
    z += 1.0
    z *= 0.5
    return z


def _tanh(z: np.ndarray) -> np.ndarray:
    return np.tanh(z, out=z)


# name: (activation, which may overwrite its argument; derivative expressed through the output a)
ACTIVATIONS = {
    "sigmoid": (_sigmoid, lambda a: a * (1.0 - a)),
    "tanh": (_tanh, lambda a: 1.0 - a * a),
    "identity": (lambda z: z, lambda a: np.ones_like(a)),
}

LOSSES = ("sse", "mse")


def layer_sizes(sizes: Any) -> tuple[int, ...]:
    """Layer widths as a tuple of ints, or :class:`OptionError`: at least two, each an int >= 1."""
    try:
        widths: tuple[Any, ...] = () if isinstance(sizes, str) else tuple(sizes)
    except TypeError:
        widths = ()
    if len(widths) < 2:
        raise OptionError("sizes", sizes, "at least two layer widths, each an int >= 1")
    for s in widths:
        check_int("sizes", s, 1, " (layer widths)")
    return tuple(int(s) for s in widths)


@dataclass(frozen=True)
class MLP:
    """Layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``; ``hidden`` activation between, ``output`` last.

    Flat layout, per layer: the weight matrix (out x in, row-major), then the bias (if ``bias``).
    Loss per step: ``"sse"`` = 1/2 sum over the batch of squared errors, ``"mse"`` = the same divided
    by the batch size.
    """

    sizes: tuple[int, ...]
    hidden: str = "tanh"
    output: str = "identity"
    bias: bool = True
    loss: str = "mse"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", layer_sizes(self.sizes))
        for name in ("hidden", "output"):
            if getattr(self, name) not in ACTIVATIONS:
                raise OptionError(name, getattr(self, name), f"one of {', '.join(ACTIVATIONS)}")
        if self.loss not in LOSSES:
            raise OptionError("loss", self.loss, f"one of {', '.join(LOSSES)}")

    @property
    def layers(self) -> list[tuple[int, int]]:
        return list(zip(self.sizes[1:], self.sizes[:-1], strict=True))

    @property
    def n_params(self) -> int:
        return sum(o * i + (o if self.bias else 0) for o, i in self.layers)

    def init(self, rng: np.random.Generator, scheme: str = "glorot") -> np.ndarray:
        """A flat weight vector: ``"glorot"`` (uniform, biases zero) or ``"uniform"`` (all in [-1, 1])."""
        if scheme == "uniform":
            return rng.uniform(-1.0, 1.0, self.n_params)
        if scheme != "glorot":
            raise OptionError("init", scheme, '"glorot" or "uniform"')
        parts = []
        for o, i in self.layers:
            a = np.sqrt(6.0 / (o + i))
            parts.append(rng.uniform(-a, a, o * i))
            if self.bias:
                parts.append(np.zeros(o))
        return np.concatenate(parts)

    def unpack(self, W: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Views of the layers of ``W`` (B, P): [(weights (B, out, in), bias (B, out) or None), ...]."""
        out, pos = [], 0
        B = W.shape[0]
        for o, i in self.layers:
            w = W[:, pos : pos + o * i].reshape(B, o, i)
            pos += o * i
            b = None
            if self.bias:
                b = W[:, pos : pos + o]
                pos += o
            out.append((w, b))
        return out

    def forward(self, W: np.ndarray, X: np.ndarray) -> list[np.ndarray]:
        """Activations ``[a_0, a_1, ..., a_L]`` in the internal layout ``(B, width, M)`` (samples last).

        ``X`` is ``(B, M, n_in)`` (each row its own samples) or ``(M, n_in)``: samples shared by all
        rows (full-batch training).  Then ``a_0`` is ``(n_in, M)`` and the first layer is one 2-D
        matrix product for all B rows.
        """
        a = X.T if X.ndim == 2 else X.transpose(0, 2, 1)
        acts = [a]
        params = self.unpack(W)
        B = W.shape[0]
        for n, (w, b) in enumerate(params):
            o, i = w.shape[1:]
            if a.ndim == 2:  # shared samples: (B*out, in) @ (in, M)
                z = np.matmul(w.reshape(B * o, i), a).reshape(B, o, -1)
            else:
                z = np.matmul(w, a)
            if b is not None:
                z += b[:, :, None]
            a = ACTIVATIONS[self.output if n == len(params) - 1 else self.hidden][0](z)
            acts.append(a)
        return acts

    def predict(self, W: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Outputs ``(B, M, n_out)``."""
        return self.forward(W, X)[-1].transpose(0, 2, 1)

    def loss_scale(self, batch_size: int) -> float:
        """Factor of the per-sample loss 1/2 |y_hat - y|^2 in one step's loss."""
        return 1.0 / batch_size if self.loss == "mse" else 1.0

    def backward(self, W: np.ndarray, acts: list[np.ndarray], cot: np.ndarray, per_sample: bool = False) -> np.ndarray:
        """Gradient for output cotangent ``cot`` (B, n_out, M) (internal layout): summed over samples
        ``(B, P)``, or per sample ``(B, M, P)`` with ``per_sample=True`` (Jacobian rows)."""
        params = self.unpack(W)
        B, _, M = cot.shape
        grads: list[np.ndarray] = []
        delta = cot * ACTIVATIONS[self.output][1](acts[-1])
        for n in range(len(params) - 1, -1, -1):
            w, b = params[n]
            a_prev = acts[n]
            o, i = w.shape[1:]
            if per_sample:  # (B, out*in + out, M)
                a3 = a_prev if a_prev.ndim == 3 else a_prev[None]
                gw = (delta[:, :, None, :] * a3[:, None, :, :]).reshape(B, o * i, M)
                gb = delta
                axis = 1
            else:
                if a_prev.ndim == 2:  # shared samples: (B*out, M) @ (M, in)
                    gw = np.matmul(delta.reshape(B * o, M), a_prev.T).reshape(B, -1)
                else:
                    gw = np.matmul(delta, a_prev.transpose(0, 2, 1)).reshape(B, -1)
                gb = delta.sum(axis=2) if b is not None else None  # (a network without biases: none)
                axis = -1
            grads.append(np.concatenate([gw, gb], axis=axis) if b is not None else gw)
            if n > 0:
                delta = np.matmul(w.transpose(0, 2, 1), delta)
                delta *= ACTIVATIONS[self.hidden][1](a_prev)
        if per_sample:
            return np.concatenate(grads[::-1], axis=1).transpose(0, 2, 1)
        return np.concatenate(grads[::-1], axis=-1)

    def loss_and_grad(self, W: np.ndarray, X: np.ndarray, Y: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """``scale * 1/2 sum |y_hat - y|^2`` over each row's samples, and its gradient: (B,), (B, P).

        ``X`` is ``(B, M, n_in)`` or shared ``(M, n_in)``; ``Y`` is ``(B, M, n_out)`` or ``(M, n_out)``."""
        loss, grad = self._loss_grad(W, X, Y, scale, with_loss=True)
        assert loss is not None
        return loss, grad

    def gradient(self, W: np.ndarray, X: np.ndarray, Y: np.ndarray, scale: float) -> np.ndarray:
        """The gradient of :meth:`loss_and_grad` alone (B, P)."""
        return self._loss_grad(W, X, Y, scale, with_loss=False)[1]

    def _loss_grad(
        self, W: np.ndarray, X: np.ndarray, Y: np.ndarray, scale: float, with_loss: bool
    ) -> tuple[np.ndarray | None, np.ndarray]:
        acts = self.forward(W, X)
        err = acts[-1] - (Y.T if Y.ndim == 2 else Y.transpose(0, 2, 1))
        loss = 0.5 * scale * np.sum(err * err, axis=(1, 2)) if with_loss else None
        err *= scale
        return loss, self.backward(W, acts, err)

    def output_jacobian(self, W: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outputs on each row's samples ``(B, M * n_out)`` and their Jacobian ``(B, M * n_out, P)``,
        sample-major (output o of sample s is entry ``s * n_out + o``)."""
        acts = self.forward(W, X)
        B, n_out, M = acts[-1].shape
        J = np.empty((B, M, n_out, W.shape[1]))
        for o in range(n_out):
            seed = np.zeros((B, n_out, M))
            seed[:, o, :] = 1.0
            J[:, :, o, :] = self.backward(W, acts, seed, per_sample=True)
        return acts[-1].transpose(0, 2, 1).reshape(B, -1), J.reshape(B, M * n_out, W.shape[1])

    def gauss_newton(self, W: np.ndarray, X: np.ndarray, scale: float) -> np.ndarray:
        """``scale * J^T J`` (B, P, P), J the Jacobian of the outputs over each row's samples."""
        J = self.output_jacobian(W, X)[1]
        return scale * np.matmul(J.transpose(0, 2, 1), J)
