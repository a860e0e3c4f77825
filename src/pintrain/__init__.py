"""pintrain: parallel-in-time training of neural networks with multigrid reduction in time."""

from . import mgrit
from .errors import DivergenceError, NotConvergedError, OptionError, PintrainError, ProblemError, ResourceError

__version__ = "0.1.0"

__all__ = [
    "DivergenceError",
    "NotConvergedError",
    "OptionError",
    "PintrainError",
    "ProblemError",
    "ResourceError",
    "mgrit",
    "__version__",
]
