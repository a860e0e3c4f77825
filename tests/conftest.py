import numpy as np
import pytest


class NaNAfter:
    """A Dahlquist-like problem whose coarse propagator returns NaN from fine step ``bad`` on."""

    def __init__(self, n_steps: int = 64, bad: int = 40):
        self.n_steps = n_steps
        self.bad = bad

    def initial(self):
        return np.array([1.0, 2.0])

    def step(self, u, k, m):
        if m > 1 and k >= self.bad:
            return u * np.nan
        return u / (1.0 + 0.01 * m)


@pytest.fixture
def nan_problem():
    return NaNAfter()
