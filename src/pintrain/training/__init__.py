"""Training as an evolution: one training problem (model x schedule x optimizer x coarse propagator)
for every model backend, the numpy backend, and the model problems."""

from .mlp import MLP
from .model import Batches, Model, NumpyModel
from .models import MODEL_PROBLEMS, model_problem, sine_problem, xor_problem
from .optimizers import OPTIMIZER_NAMES, SGD, Adam, Momentum, Optimizer, make_optimizer
from .paper import TraskNetwork, paper1_problem, paper2_problem
from .problem import TrainingProblem
from .propagators import COARSE_PROPAGATORS
from .schedule import Schedule

__all__ = [
    "COARSE_PROPAGATORS",
    "MLP",
    "MODEL_PROBLEMS",
    "OPTIMIZER_NAMES",
    "SGD",
    "Adam",
    "Batches",
    "Model",
    "Momentum",
    "NumpyModel",
    "Optimizer",
    "Schedule",
    "TrainingProblem",
    "TraskNetwork",
    "make_optimizer",
    "paper1_problem",
    "paper2_problem",
    "model_problem",
    "sine_problem",
    "xor_problem",
]
