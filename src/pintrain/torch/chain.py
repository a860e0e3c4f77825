"""The coarsest level's lone sub-intervals in one function each, eager or compiled (``compile=True``).

The coarsest level's solve, and the ``curvature`` table's coarse trajectory, are chains of lone
sub-intervals: for ``lagged`` and ``curvature``, the r gradients of the sub-interval's batches at
its start's weights, then the optimizer's r steps (``curvature``: each with the term ``H_r (w_j -
w0)`` of :mod:`pintrain.training.curvature`).  Through the propagator's own steps that is a few
dozen small operations and the layers of calls between them; for the digits MLP with Adam in
float32 (one thread) a sub-interval of two steps took 910-920 us, more than two steps of the torch
loop (390-410 us each), so the chain, N / 2 sub-intervals an iteration, cost more than the serial
loop every iteration.  Eager, :class:`LoneSubInterval` runs the same operations bit for bit with
less between them (the module's weights set once for the r gradients, the r steps' coefficients
taken at once): 706 us.  Compiled as one graph (``fullgraph=True``: the gradients, the term and
the updates, the batch gather included): 320 us (docs/performance.md).

Compiled, the arithmetic is still the library's own (the model's step loss, the optimizer's
``fine_apply``, the table's term), so the answer equals the eager chain's to rounding, not bit for
bit, as everything ``compile=True`` runs.  The lone path is a path, not a row count (a row stepped
in a batch takes the batched gradients).  One graph per sub-interval length r and per variant
(with or without the term); the shapes are fixed, so it is compiled once.  Gradient clipping takes
the propagator's own steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.func import grad

from ..training.schedule import check_steps


class LoneSubInterval:
    """``lagged_steps`` / ``curved_steps`` of one row (a (1, state size) tensor) in one function:
    eager (``compiled=False``), the same operations as the propagator's steps, bit for bit, with the
    r gradients from one setting of the lone module's weights; compiled, one graph."""

    def __init__(self, problem: Any, compiled: bool = False) -> None:
        self.problem, self.compiled = problem, compiled
        self._fn = torch.compile(self._sub_interval, dynamic=False, fullgraph=True) if compiled else self._sub_interval

    def _gradients(
        self, w0: torch.Tensor, r: int, ix: torch.Tensor | None, X: torch.Tensor, y: torch.Tensor
    ) -> list[Any]:
        """The r step losses' gradients at ``w0``, each a (P,) tensor."""
        model = self.problem.model
        if self.compiled:
            loss_grad = grad(model._loss_one)
            return [loss_grad(w0, X, y) if ix is None else loss_grad(w0, X[ix[j]], y[ix[j]]) for j in range(r)]
        return model.lone_gradients(w0, [(X, y) if ix is None else (X[ix[j]], y[ix[j]]) for j in range(r)])

    def _sub_interval(
        self,
        u: torch.Tensor,
        r: int,
        ix: torch.Tensor | None,
        X: torch.Tensor,
        y: torch.Tensor,
        coefficients: tuple[Any, ...],
        Bt: torch.Tensor | None,
        s: torch.Tensor | None,
    ) -> torch.Tensor:
        problem = self.problem
        optimizer, P = problem.optimizer, problem.n_params
        S = u[None]
        w0 = u[:P]
        G = self._gradients(w0, r, ix, X, y)
        for j in range(r):
            g = G[j]
            if Bt is not None and s is not None and j > 0:
                g = g + ((Bt @ (S[0, :P] - w0)) * s) @ Bt
            c = tuple(x[j : j + 1] if isinstance(x, torch.Tensor) else x for x in coefficients)
            S = optimizer.fine_apply(S, g[None], c, problem.ops)
        return S

    def __call__(self, S: torch.Tensor, ks: np.ndarray, r: int, curved: bool) -> torch.Tensor:
        """The r steps from ``ks`` (one step index) of the one row ``S``."""
        k = int(np.asarray(ks).reshape(-1)[0])
        check_steps(np.array([k]), r, self.problem.n_steps)
        return self._call(S, k, r, self._term(curved, k))

    def trial(self, S: torch.Tensor, r: int, curved: bool) -> None:
        """One sub-interval of r steps from step 0, without the term and (``curved``) with a zero one:
        compiles the graphs before a solve needs them, without building the table."""
        float(self._call(S, 0, r, (None, None)).sum())  # ``curvature``'s table is built with ``lagged`` steps
        if curved:
            rank = self.problem._curvature_shape()[0]
            float(self._call(S, 0, r, (S.new_zeros((rank, self.problem.n_params)), S.new_zeros((rank,)))).sum())

    def _call(self, S: torch.Tensor, k: int, r: int, term: tuple[Any, Any]) -> torch.Tensor:
        problem = self.problem
        steps = k + np.arange(r)
        ix = None if problem.schedule.full_batch else problem.ops.index(problem.table[steps])
        coefficients = problem.optimizer.fine_coefficients(S.expand(r, -1), steps, problem.ops, problem.lrs)
        with torch.no_grad():  # one grad mode for every call (a guard of the graph); grad() ignores it
            return self._fn(S[0], r, ix, problem.model.X, problem.model.y, coefficients, *term)

    def _term(self, curved: bool, k: int) -> tuple[Any, Any]:
        if not curved:
            return None, None
        table = self.problem._curvature_table()
        b = k // table.block
        return table.Bt[b], table.s[b]
