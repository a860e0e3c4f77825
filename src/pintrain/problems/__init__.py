"""Linear test problems for the solver: the Dahlquist equation and the 1-D heat equation."""

from .dahlquist import Dahlquist
from .heat import Heat1D

__all__ = ["Dahlquist", "Heat1D"]
