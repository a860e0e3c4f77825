"""The 1-D heat equation u_t = a u_xx + b(x, t) with zero Dirichlet boundaries, backward Euler in time."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import check_int, check_memory, check_positive


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
        # a few dense nx x nx matrices (L, and the inverse of each spacing's system)
        check_memory(4 * 8 * int(nx) ** 2, f"Heat1D with nx = {nx}", "use a smaller nx")
        self.n_steps = int(n_steps)
        self.nx = int(nx)
        self.a = float(a)
        self.t_stop = float(t_stop)
        self.dt = self.t_stop / self.n_steps
        self.x = np.linspace(x_start, x_end, self.nx + 2)[1:-1]
        dx = self.x[1] - self.x[0]
        fac = self.a / dx**2
        self.L = fac * (2.0 * np.eye(self.nx) - np.eye(self.nx, k=1) - np.eye(self.nx, k=-1))
        self.u0 = np.asarray(init(self.x), dtype=float)
        self.forcing = forcing
        self._solvers: dict[int, np.ndarray] = {}

    @staticmethod
    def manufactured(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Source for the exact solution sin(pi x) cos(t) with a = 1."""
        return -np.sin(np.pi * x) * (np.sin(t) - np.pi**2 * np.cos(t))

    def initial(self) -> np.ndarray:
        return self.u0.copy()

    def _inverse_t(self, m: int) -> np.ndarray:
        """Transpose of ``(I + m dt L)^-1``, cached per spacing (the states are rows)."""
        inv_t = self._solvers.get(m)
        if inv_t is None:
            inv_t = np.linalg.inv(np.eye(self.nx) + m * self.dt * self.L).T.copy()
            self._solvers[m] = inv_t
        return inv_t

    def _advance(self, U: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        """Solve ``(I + m dt L) x = rhs`` for every row by the cached inverse.

        The product is taken as a stack of one-row products (``(B, 1, nx) @ (nx, nx)``), so each
        row goes through the same kernel whatever the batch: a state's step does not depend on
        which other states share the call (bitwise), as the MPI back end's equality with one
        process needs.  A plain ``(B, nx) @ (nx, nx)`` GEMM blocks differently for different B.
        """
        h = m * self.dt
        rhs = U
        if self.forcing is not None:
            t = (np.asarray(ks, dtype=float) + m) * self.dt
            rhs = U + h * self.forcing(self.x[None, :], t[:, None])
        return np.matmul(rhs[:, None, :], self._inverse_t(m))[:, 0, :]

    def step_many(self, U: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        return self._advance(U, ks, m)

    def step(self, u: np.ndarray, k: int, m: int) -> np.ndarray:
        return self._advance(u[None, :], np.array([k]), m)[0]
