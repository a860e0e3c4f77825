"""A fully connected network in numpy, float64, batched over many weight vectors at once.

Every function takes ``W`` of shape ``(B, P)``: B independent flat weight vectors (the states of B
time points) and ``X`` of shape ``(B, M, n_in)``: each weight vector's own M samples.  Forward and
backward passes are batched matrix products, so one call steps all B networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OptionError


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow warnings


# name: (activation, derivative expressed through the activation's output a)
ACTIVATIONS = {
    "sigmoid": (_sigmoid, lambda a: a * (1.0 - a)),
    "tanh": (np.tanh, lambda a: 1.0 - a * a),
    "identity": (lambda z: z, lambda a: np.ones_like(a)),
}

LOSSES = ("sse", "mse")


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
        sizes = tuple(int(s) for s in self.sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise OptionError("sizes", self.sizes, "at least two layer widths, each >= 1")
        object.__setattr__(self, "sizes", sizes)
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
        """Activations ``[X, a_1, ..., a_L]``, each ``(B, M, width)``."""
        acts = [X]
        params = self.unpack(W)
        for n, (w, b) in enumerate(params):
            z = np.matmul(acts[-1], w.transpose(0, 2, 1))
            if b is not None:
                z += b[:, None, :]
            act = ACTIVATIONS[self.output if n == len(params) - 1 else self.hidden][0]
            acts.append(act(z))
        return acts

    def predict(self, W: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self.forward(W, X)[-1]

    def loss_scale(self, batch_size: int) -> float:
        """Factor of the per-sample loss 1/2 |y_hat - y|^2 in one step's loss."""
        return 1.0 / batch_size if self.loss == "mse" else 1.0

    def backward(self, W: np.ndarray, acts: list[np.ndarray], cot: np.ndarray, per_sample: bool = False) -> np.ndarray:
        """Gradient for output cotangent ``cot`` (B, M, out): summed over samples ``(B, P)``,
        or per sample ``(B, M, P)`` with ``per_sample=True`` (Jacobian rows)."""
        params = self.unpack(W)
        B, M = cot.shape[:2]
        grads: list[np.ndarray] = []
        delta = cot * ACTIVATIONS[self.output][1](acts[-1])
        for n in range(len(params) - 1, -1, -1):
            w, b = params[n]
            a_prev = acts[n]
            if per_sample:
                gw = (delta[:, :, :, None] * a_prev[:, :, None, :]).reshape(B, M, -1)
                gb = delta
            else:
                gw = np.matmul(delta.transpose(0, 2, 1), a_prev).reshape(B, -1)
                gb = delta.sum(axis=1)
            grads.append(np.concatenate([gw, gb], axis=-1) if b is not None else gw)
            if n > 0:
                delta = np.matmul(delta, w) * ACTIVATIONS[self.hidden][1](a_prev)
        return np.concatenate(grads[::-1], axis=-1)

    def loss_and_grad(self, W: np.ndarray, X: np.ndarray, Y: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """``scale * 1/2 sum |y_hat - y|^2`` over each row's samples, and its gradient: (B,), (B, P)."""
        acts = self.forward(W, X)
        err = acts[-1] - Y
        loss = 0.5 * scale * np.sum(err * err, axis=(1, 2))
        return loss, self.backward(W, acts, scale * err)

    def gauss_newton(self, W: np.ndarray, X: np.ndarray, scale: float) -> np.ndarray:
        """``scale * J^T J`` (B, P, P), J the Jacobian of the outputs over each row's samples."""
        acts = self.forward(W, X)
        B, M, n_out = acts[-1].shape
        H = np.zeros((B, W.shape[1], W.shape[1]))
        for o in range(n_out):
            seed = np.zeros((B, M, n_out))
            seed[:, :, o] = 1.0
            J = self.backward(W, acts, seed, per_sample=True)
            H += np.matmul(J.transpose(0, 2, 1), J)
        return scale * H
