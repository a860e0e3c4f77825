"""The 1-D heat equation u_t = a u_xx + b(x, t) with zero Dirichlet boundaries, backward Euler in time."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import check_int, check_positive


def _default_init(x: np.ndarray) -> np.ndarray:
    return np.sin(np.pi * x)


class Heat1D:
    """Second-order finite differences on ``nx`` interior points of ``[x_start, x_end]``.

    Fine step: ``(I + dt L) u_{k+1} = u_k + dt b(x, t_{k+1})``; the coarse propagator of spacing
    ``m`` is the same with ``m * dt``.  The default initial state is ``sin(pi x)`` with no source;
    ``forcing=Heat1D.manufactured`` gives the exact solution ``sin(pi x) cos(t)`` (for a = 1 on [0, 1]).
    """

    def __init__(
        self,
        n_steps: int,
        nx: int = 63,
        a: float = 1.0,
        t_stop: float = 1.0,
        x_start: float = 0.0,
        x_end: float = 1.0,
        init: Callable[[np.ndarray], np.ndarray] = _default_init,
        forcing: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> None:
        check_int("n_steps", n_steps, 1)
        check_int("nx", nx, 2, " (interior grid points)")
        check_positive("a", a)
        check_positive("t_stop", t_stop)
        self.n_steps = int(n_steps)
        self.nx = int(nx)
        self.a = float(a)
        self.t_stop = float(t_stop)
        self.dt = self.t_stop / self.n_steps
        self.x = np.linspace(x_start, x_end, self.nx + 2)[1:-1]
        dx = self.x[1] - self.x[0]
        fac = self.a / dx**2
        self.L = fac * (2.0 * np.eye(self.nx) - np.eye(self.nx, k=1) - np.eye(self.nx, k=-1))  # for reference
        self.u0 = np.asarray(init(self.x), dtype=float)
        self.forcing = forcing
        self._solvers: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}

    @staticmethod
    def manufactured(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Source for the exact solution sin(pi x) cos(t) with a = 1."""
        return -np.sin(np.pi * x) * (np.sin(t) - np.pi**2 * np.cos(t))

    def initial(self) -> np.ndarray:
        return self.u0.copy()

    def _factors(self, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        """LU factors of the tridiagonal ``I + m dt L`` (Thomas algorithm), cached per spacing."""
        cached = self._solvers.get(m)
        if cached is None:
            off = -m * self.dt * self.a / (self.x[1] - self.x[0]) ** 2
            diag = 1.0 - 2.0 * off
            inv_den = np.empty(self.nx)
            upper = np.empty(self.nx)  # c'_i
            inv_den[0] = 1.0 / diag
            upper[0] = off * inv_den[0]
            for i in range(1, self.nx):
                inv_den[i] = 1.0 / (diag - off * upper[i - 1])
                upper[i] = off * inv_den[i]
            cached = (inv_den, upper, off)
            self._solvers[m] = cached
        return cached

    def _advance(self, U: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        """Solve ``(I + m dt L) x = rhs`` for every row with the Thomas algorithm.

        Every row is computed with the same elementwise operations whatever the batch, so a state's
        step does not depend on which other states share the call (bitwise), as the MPI back end's
        equality with one process needs.
        """
        h = m * self.dt
        rhs = U
        if self.forcing is not None:
            t = (np.asarray(ks, dtype=float) + m) * self.dt
            rhs = U + h * self.forcing(self.x[None, :], t[:, None])
        inv_den, upper, off = self._factors(m)
        x = np.empty_like(rhs)
        x[:, 0] = rhs[:, 0] * inv_den[0]
        for i in range(1, self.nx):
            x[:, i] = (rhs[:, i] - off * x[:, i - 1]) * inv_den[i]
        for i in range(self.nx - 2, -1, -1):
            x[:, i] -= upper[i] * x[:, i + 1]
        return x

    def step_many(self, U: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        return self._advance(U, ks, m)

    def step(self, u: np.ndarray, k: int, m: int) -> np.ndarray:
        return self._advance(u[None, :], np.array([k]), m)[0]
