"""Real data: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes; loads offline).

``load(seed)`` splits them into a fixed training set (1347) and test set (450), pixels scaled to
[0, 1].  Two networks: ``mlp()`` (64-32-10, tanh) and ``cnn()`` (a 3x3 convolution with 8 channels,
tanh, 2x2 average pooling, a linear layer to 10 classes); both smooth, buffer-free and
dropout-free, trained with cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import OptionError, PintrainError
from ..training.optimizers import make_optimizer
from .problem import TorchProblem

N_TEST = 450


@dataclass
class Digits:
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor


def load(seed: int = 0, image: bool = False) -> Digits:
    """The digits, shuffled by ``seed`` and split; ``image=True`` gives (n, 1, 8, 8) inputs for the CNN."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise PintrainError(
            "the digits problems need scikit-learn (its bundled data set): pip install 'pintrain[torch]'"
        ) from err
    data = load_digits()
    X = torch.tensor(data.data / 16.0, dtype=torch.float64)
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    X, y = X[perm], y[perm]
    if image:
        X = X.reshape(-1, 1, 8, 8)
    return Digits(X[N_TEST:], y[N_TEST:], X[:N_TEST], y[:N_TEST])


def mlp(seed: int = 0, hidden: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10)).double()


def cnn(seed: int = 0, channels: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(channels * 16, 10),
    ).double()


MODELS = {"digits-mlp": (mlp, False), "digits-cnn": (cnn, True)}


def digits_problem(
    name: str = "digits-mlp",
    steps: int = 1000,
    batch_size: int = 32,
    optimizer: str = "sgd",
    lr: float | None = None,
    seed: int = 0,
    coarse: str = "auto",
    max_ratio: int = 2,
    sample: int | None = None,
    dtype: str = "float64",
    device: str | None = None,
    compile: bool = False,
    coarse_options: dict[str, Any] | None = None,
    **optimizer_kwargs: Any,
) -> TorchProblem:
    """A digits model problem: the network ``name`` ("digits-mlp" or "digits-cnn"), initialised from
    ``seed``, trained with cross-entropy on the training split; test accuracy via ``metrics``.
    These defaults are the problem's (the CLI passes on only what the user sets); ``lr`` defaults
    to 0.002 for Adam/AdamW and 0.05 otherwise; ``coarse_options`` as :class:`TorchProblem`'s (the
    curvature table's ``rank`` and ``block``)."""
    if lr is None:
        lr = 0.002 if optimizer.startswith("adam") else 0.05
    if name not in MODELS:
        raise OptionError("problem", name, f"one of {', '.join(MODELS)}")
    make, image = MODELS[name]
    data = load(seed, image=image)
    return TorchProblem(
        make(seed),
        nn.CrossEntropyLoss(),
        data.X_train,
        data.y_train,
        steps=steps,
        batch_size=batch_size,
        optimizer=make_optimizer(optimizer, lr, **optimizer_kwargs),
        seed=seed,
        dtype=dtype,
        coarse=coarse,
        max_ratio=max_ratio,
        sample=sample,
        name=name,
        test_data=(data.X_test, data.y_test),
        device=device,
        compile=compile,
        coarse_options=coarse_options,
    )
