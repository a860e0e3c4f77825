"""The scalar Dahlquist test equation u' = lambda u, u(0) = u0, with backward Euler."""

from __future__ import annotations

import numpy as np

from ..errors import OptionError, check_int, check_positive


class Dahlquist:
    """``u' = lam * u`` on ``[0, t_stop]`` in ``n_steps`` backward-Euler steps.

    The coarse propagator for spacing ``m`` is one backward-Euler step of size ``m * dt``
    (rediscretisation), the standard choice in the MGRIT literature.
    """

    def __init__(self, n_steps: int, lam: float = -1.0, t_stop: float = 5.0, u0: float = 1.0) -> None:
        check_int("n_steps", n_steps, 1)
        if not np.isfinite(lam):
            raise OptionError("lam", lam, "a finite real number")
        check_positive("t_stop", t_stop)
        self.n_steps = int(n_steps)
        self.lam = float(lam)
        self.t_stop = float(t_stop)
        self.dt = self.t_stop / self.n_steps
        self.u0 = float(u0)

    def initial(self) -> np.ndarray:
        return np.array([self.u0])

    def factor(self, m: int) -> float:
        """Amplification factor of one step of spacing ``m``: 1 / (1 - lam * m * dt)."""
        return 1.0 / (1.0 - self.lam * m * self.dt)

    def step(self, u: np.ndarray, k: int, m: int) -> np.ndarray:
        return u * self.factor(m)

    def step_many(self, U: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        return U * self.factor(m)
