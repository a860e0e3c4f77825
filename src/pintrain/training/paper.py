"""The two model problems of Schroder (2017), exactly as the paper trains them.

Both are Trask's fully connected sigmoid networks without biases, trained by (full-batch or
single-example) gradient descent on 1/2 the sum of squared errors, with the update of the paper's
appendix: ``syn += alpha * l_prev.T.dot(delta)``, ``delta = (y - l) * l * (1 - l)`` at the output
and ``delta = delta_next.dot(syn_next.T) * l * (1 - l)`` below.  :class:`TraskNetwork` computes
exactly those floating-point operations, batched over many weight vectors, so that one step of
model problem 1 equals the appendix loop bit for bit (``tests/test_paper.py``).

Model problem 1 (``paper1``): 3-4-1, the four XOR samples with a constant third input, weights
from ``np.random.seed(1)`` as the appendix.  Model problem 2 (``paper2``): 24-128-64-12 learning
the sum of two 12-bit numbers, 500 examples (50 in the paper's Table 12) made with numpy's legacy
generator from a documented seed (the paper gives none), weights as Trask's tutorial draws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import OptionError, check_int, check_positive
from .mlp import MLP, layer_sizes
from .model import NumpyModel
from .optimizers import SGD
from .problem import TrainingProblem
from .propagators import ALPHA_GROWTH
from .schedule import Schedule

XOR_X = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
XOR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + np.exp(-z))`` as the appendix writes it (the same operations), in place."""
    np.negative(z, out=z)
    np.exp(z, out=z)
    z += 1.0
    return np.divide(1.0, z, out=z)


@dataclass(frozen=True)
class TraskNetwork:
    """Sigmoid layers ``sizes[0] -> ... -> sizes[-1]``, no biases, loss 1/2 sum of squared errors.

    Flat layout: each layer's matrix ``syn`` (in x out, row-major) in turn, as the appendix's
    ``syn0``, ``syn1``.  Methods take ``W`` (B, P), B weight vectors, and samples ``X`` shared
    ``(M, n_in)`` or per row ``(B, M, n_in)``; activations are ``(B, M, width)`` as the appendix's.
    """

    sizes: tuple[int, ...]
    hidden = "sigmoid"
    output = "sigmoid"
    bias = False
    loss = "sse"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", layer_sizes(self.sizes))

    @property
    def layers(self) -> list[tuple[int, int]]:
        """(in, out) of every layer."""
        return list(zip(self.sizes[:-1], self.sizes[1:], strict=True))

    @property
    def n_params(self) -> int:
        return sum(i * o for i, o in self.layers)

    def flat(self, matrices: list[np.ndarray]) -> np.ndarray:
        """One flat weight vector from the matrices ``syn0, syn1, ...`` (each in x out)."""
        return np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in matrices])

    def matrices(self, W: np.ndarray) -> list[np.ndarray]:
        """Views ``(B, in, out)`` of every layer's matrix in ``W`` (B, P)."""
        out, pos = [], 0
        for i, o in self.layers:
            out.append(W[:, pos : pos + i * o].reshape(W.shape[0], i, o))
            pos += i * o
        return out

    def forward(self, W: np.ndarray, X: np.ndarray) -> list[np.ndarray]:
        """Activations ``[X, l1, ..., lL]``: ``l = sigmoid(l_prev.dot(syn))``, each (B, M, width)."""
        acts = [X]
        for syn in self.matrices(W):
            acts.append(_sigmoid(np.matmul(acts[-1], syn)))
        return acts

    def predict(self, W: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Outputs ``(B, M, n_out)``."""
        return self.forward(W, X)[-1]

    def loss_scale(self, batch_size: int) -> float:
        return 1.0

    def gradient(self, W: np.ndarray, X: np.ndarray, Y: np.ndarray, scale: float) -> np.ndarray:
        """``scale`` times the gradient of 1/2 sum of squared errors over each row's samples (B, P).

        It is the appendix's update with the sign flipped, computed by the same operations
        (negation is exact), so ``w - alpha * gradient`` is the appendix's ``w + alpha * update``
        bit for bit."""
        acts = self.forward(W, X)
        out = acts[-1]
        delta = (out - Y) * (out * (1.0 - out))
        if scale != 1.0:
            delta *= scale
        mats = self.matrices(W)
        grads: list[np.ndarray] = []
        for n in range(len(mats) - 1, -1, -1):
            prev = acts[n]
            prev_t = prev.T if prev.ndim == 2 else prev.transpose(0, 2, 1)
            grads.append(np.matmul(prev_t, delta).reshape(W.shape[0], -1))
            if n > 0:  # delta (W^T) * (prev (1 - prev)), in place: the same products, fewer fresh arrays
                slope = 1.0 - prev
                slope *= prev
                delta = np.matmul(delta, mats[n].transpose(0, 2, 1))
                delta *= slope
        return np.concatenate(grads[::-1], axis=1)

    def loss_and_grad(self, W: np.ndarray, X: np.ndarray, Y: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        err = self.predict(W, X) - Y
        return 0.5 * scale * np.sum(err * err, axis=(1, 2)), self.gradient(W, X, Y, scale)

    # -- the linearisation (for the gauss-newton coarse propagator), through the same network as an MLP
    def _as_mlp(self) -> tuple[MLP, np.ndarray]:
        """The same network as an :class:`MLP` and the permutation from its flat layout to ours."""
        mlp = MLP(self.sizes, hidden="sigmoid", output="sigmoid", bias=False, loss="sse")
        perm, pos = [], 0
        for i, o in self.layers:  # MLP stores out x in, we store in x out
            perm.append(pos + np.arange(i * o).reshape(i, o).T.reshape(-1))
            pos += i * o
        return mlp, np.concatenate(perm)

    def gauss_newton(self, W: np.ndarray, X: np.ndarray, scale: float) -> np.ndarray:
        """``scale * J^T J`` (B, P, P), J the Jacobian of the outputs over each row's samples."""
        J = self.output_jacobian(W, X)[1]
        return scale * np.matmul(J.transpose(0, 2, 1), J)

    def output_jacobian(self, W: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outputs ``(B, M * n_out)`` and their Jacobian ``(B, M * n_out, P)`` in this layout."""
        mlp, perm = self._as_mlp()
        out, J = mlp.output_jacobian(W[:, perm], X)
        Jt = np.empty_like(J)
        Jt[:, :, perm] = J
        return out, Jt


def xor_appendix_weights(seed: int = 1, hidden: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``syn0``, ``syn1`` as the paper's appendix draws them: ``np.random.seed(1)``, then
    ``2 * random((3, 4)) - 1`` and ``2 * random((4, 1)) - 1`` (numpy's legacy generator)."""
    rs = np.random.RandomState(seed)
    syn0 = 2 * rs.random_sample((3, hidden)) - 1
    syn1 = 2 * rs.random_sample((hidden, 1)) - 1
    return syn0, syn1


def addition_data(n_examples: int = 500, bits: int = 12, seed: int = 1) -> tuple[np.ndarray, np.ndarray, Any]:
    """Binary addition as in Trask's synthetic-gradients tutorial: two random numbers below
    ``2**(bits - 1)`` (so that the sum fits in ``bits`` bits), inputs their two ``bits``-bit
    representations side by side (most significant bit first), target the bits of the sum.

    Drawn with numpy's legacy generator seeded ``seed`` (the paper gives no seed: ours is 1, as
    the tutorial's); returns ``X (n, 2 bits)``, ``Y (n, bits)`` and the generator, whose next draws
    are the initial weights."""
    rs = np.random.RandomState(seed)
    half = 2 ** (bits - 1)
    left = (rs.random_sample(n_examples) * half).astype(np.int64)
    right = (rs.random_sample(n_examples) * half).astype(np.int64)
    powers = 2 ** np.arange(bits - 1, -1, -1)

    def to_bits(v: np.ndarray) -> np.ndarray:
        return ((v[:, None] // powers[None, :]) % 2).astype(np.float64)

    return np.concatenate([to_bits(left), to_bits(right)], axis=1), to_bits(left + right), rs


def _schedule(n_samples: int, data: str) -> Schedule:
    if data == "full":
        return Schedule(n_samples, None)
    if data == "serialized":
        return Schedule(n_samples, 1, shuffle=False, offset=1)
    raise OptionError("data", data, '"full" (every step trains on all examples) or "serialized"')


def _data_for(coarse: str, data: str | None) -> str:
    return data if data is not None else ("serialized" if coarse == "solver2" else "full")


def _with_cap(coarse: str, alpha_max: float | None, options: dict[str, Any]) -> dict[str, Any]:
    """The paper's cap alpha(max) goes to its own propagators only (None: no cap)."""
    if alpha_max is not None and ALPHA_GROWTH.get(coarse) is not None:
        return {"alpha_max": alpha_max} | options
    return options


def paper1_problem(
    steps: int = 4096,
    lr: float = 1.0,
    coarse: str = "solver1",
    data: str | None = None,
    seed: int = 1,
    alpha_max: float | None = 8.0,
    **coarse_options: Any,
) -> TrainingProblem:
    """Model problem 1: Trask's 3-4-1 sigmoid XOR network, 16 weights, no biases, alpha(b) = 1.

    ``data="full"`` trains on all four samples every step (Solvers naive and 1); ``"serialized"``
    (the default for ``coarse="solver2"``) on the single sample ``(k + 1) mod 4`` at step k.
    Weights as the appendix (``seed`` 1 is the paper's).  ``alpha_max`` caps the coarse learning
    rate of ``naive``/``solver1``/``solver2`` (the paper's 8; None: no cap)."""
    check_positive("lr", lr)
    check_int("seed", seed, 0)
    data = _data_for(coarse, data)
    net = TraskNetwork((3, 4, 1))
    w0 = net.flat(list(xor_appendix_weights(seed)))
    options = _with_cap(coarse, alpha_max, coarse_options)
    model = NumpyModel(net, XOR_X, XOR_Y, w0)
    return TrainingProblem(model, _schedule(4, data), SGD(lr), steps, coarse, name="paper1", **options)


def paper2_problem(
    steps: int = 1024,
    lr: float = 0.025,
    coarse: str = "solver1",
    data: str | None = None,
    examples: int = 500,
    seed: int = 1,
    alpha_max: float | None = 0.2,
    **coarse_options: Any,
) -> TrainingProblem:
    """Model problem 2: the 24-128-64-12 sigmoid network (12,032 weights, no biases) learning
    binary addition of 12-bit numbers from ``examples`` (500; Table 12: 50) seeded examples
    (:func:`addition_data`), alpha(b) = 0.025 (0.1 in Tables 8-9); initial weights
    ``randn(in, out) * 0.2 - 0.1`` per layer from the same generator, as Trask's tutorial;
    ``alpha_max`` as for :func:`paper1_problem` (the paper's 0.2)."""
    check_int("examples", examples, 1)
    check_int("seed", seed, 0)
    data = _data_for(coarse, data)
    X, Y, rs = addition_data(examples, 12, seed)
    net = TraskNetwork((24, 128, 64, 12))
    w0 = net.flat([rs.standard_normal((i, o)) * 0.2 - 0.1 for i, o in net.layers])
    options = _with_cap(coarse, alpha_max, coarse_options)
    model = NumpyModel(net, X, Y, w0)
    return TrainingProblem(model, _schedule(examples, data), SGD(lr), steps, coarse, name="paper2", **options)
