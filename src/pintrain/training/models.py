"""Model problems by name: the paper's two (``paper1``, ``paper2``, :mod:`.paper`) and two of our own.

``xor`` and ``sine`` are pintrain's own small problems (they stood in for the paper's before its
numerical section could be read): ``xor`` is a 3-4-1 XOR network like the paper's problem 1 but
with other initial weights and the MLP's arithmetic; ``sine`` fits sin(x) by mini-batch SGD.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import OptionError, check_int
from .mlp import MLP
from .model import NumpyModel
from .optimizers import SGD
from .paper import paper1_problem, paper2_problem
from .problem import TrainingProblem
from .schedule import Schedule


def xor_problem(
    steps: int = 4096,
    lr: float = 1.0,
    hidden: int = 4,
    seed: int = 0,
    coarse: str = "gauss-newton",
    **coarse_options: Any,
) -> TrainingProblem:
    """A 3-4-1 sigmoid network (no biases; the third input is a constant 1) learns
    XOR of the first two inputs from its four samples by full-batch gradient descent on
    1/2 sum of squared errors, lr = 1, weights uniform in [-1, 1]."""
    X = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    Y = np.array([0.0, 1.0, 1.0, 0.0])
    check_int("seed", seed, 0)
    check_int("hidden", hidden, 1)
    model = MLP((3, hidden, 1), hidden="sigmoid", output="sigmoid", bias=False, loss="sse")
    w0 = model.init(np.random.default_rng(seed), "uniform")
    return TrainingProblem(
        NumpyModel(model, X, Y, w0), Schedule(4, None, seed), SGD(lr), steps, coarse, name="xor", **coarse_options
    )


def sine_problem(
    steps: int = 4096,
    lr: float = 0.05,
    hidden: int = 8,
    batch_size: int = 4,
    n_samples: int = 256,
    seed: int = 0,
    coarse: str = "gauss-newton",
    **coarse_options: Any,
) -> TrainingProblem:
    """A 1-8-1 tanh network (linear output, biases) fits y = sin(x) from
    ``n_samples`` points drawn uniformly from [-pi, pi] by mini-batch SGD (batch 4, reshuffled each
    epoch) on the mean squared error, lr = 0.05, Glorot-uniform weights."""
    check_int("seed", seed, 0)
    check_int("hidden", hidden, 1)
    check_int("n_samples", n_samples, 1)
    rng = np.random.default_rng(seed)
    X = rng.uniform(-np.pi, np.pi, (n_samples, 1))
    Y = np.sin(X)
    model = MLP((1, hidden, 1), hidden="tanh", output="identity", bias=True, loss="mse")
    w0 = model.init(rng, "glorot")
    return TrainingProblem(
        NumpyModel(model, X, Y, w0),
        Schedule(n_samples, batch_size, seed),
        SGD(lr),
        steps,
        coarse,
        name="sine",
        **coarse_options,
    )


MODEL_PROBLEMS: dict[str, Callable[..., TrainingProblem]] = {
    "paper1": paper1_problem,
    "paper2": paper2_problem,
    "xor": xor_problem,
    "sine": sine_problem,
}


def model_problem(name: str, **kwargs: Any) -> TrainingProblem:
    """Build a model problem by name; keyword arguments override its defaults."""
    if name not in MODEL_PROBLEMS:
        raise OptionError("problem", name, f"one of {', '.join(MODEL_PROBLEMS)}")
    return MODEL_PROBLEMS[name](**kwargs)
