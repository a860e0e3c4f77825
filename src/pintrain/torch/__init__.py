"""PyTorch models trained by MGRIT: ``fit`` and the torch model backend (needs ``pintrain[torch]``)."""

from ..training.optimizers import OPTIMIZER_NAMES, Optimizer, make_optimizer
from .fit import FitResult, fit
from .model import TorchModel, UnsupportedModel, accuracy, check_module
from .problem import TorchProblem

__all__ = [
    "OPTIMIZER_NAMES",
    "FitResult",
    "Optimizer",
    "TorchModel",
    "TorchProblem",
    "UnsupportedModel",
    "accuracy",
    "check_module",
    "fit",
    "make_optimizer",
]
