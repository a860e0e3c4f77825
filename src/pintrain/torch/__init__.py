"""PyTorch models trained by MGRIT: ``fit`` and the pieces behind it (needs ``pintrain[torch]``)."""

from .fit import FitResult, accuracy, fit
from .optimizers import OPTIMIZER_NAMES, Optimizer, make_optimizer
from .problem import TorchProblem, UnsupportedModel, check_module

__all__ = [
    "OPTIMIZER_NAMES",
    "FitResult",
    "Optimizer",
    "TorchProblem",
    "UnsupportedModel",
    "accuracy",
    "check_module",
    "fit",
    "make_optimizer",
]
