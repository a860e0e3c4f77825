"""Training as an evolution: data schedule, SGD as the fine propagator, coarse propagators, model problems."""

from .mlp import MLP
from .models import MODEL_PROBLEMS, model_problem, sine_problem, xor_problem
from .paper import TraskNetwork, paper1_problem, paper2_problem
from .problem import TrainingProblem
from .propagators import COARSE_PROPAGATORS
from .schedule import Schedule

__all__ = [
    "COARSE_PROPAGATORS",
    "MLP",
    "MODEL_PROBLEMS",
    "Schedule",
    "TrainingProblem",
    "TraskNetwork",
    "paper1_problem",
    "paper2_problem",
    "model_problem",
    "sine_problem",
    "xor_problem",
]
