"""pintrain: parallel-in-time training of neural networks with multigrid reduction in time."""

from . import mgrit
from .errors import DivergenceError, OptionError, PintrainError

__version__ = "0.1.0"

__all__ = ["DivergenceError", "OptionError", "PintrainError", "mgrit", "__version__"]
