"""The optimizer's update through ``torch.compile`` (``compile=True``): one fused kernel a call.

An optimizer's step is a chain of elementwise operations (Adam: lerp, clamp, multiply, addcmul,
sqrt, divide, add, multiply, subtract, then the join of the state's parts), each a pass over the
rows' states with a temporary of their size: eager, the Adam update of the digits MLP costs 14.8 us
a row in float32 against 5.7 compiled (580 rows a pass, one thread; docs/performance.md).  The
arithmetic is the optimizer's own (:meth:`~pintrain.training.Optimizer.fine_apply`,
:meth:`~pintrain.training.Optimizer.frozen_apply`), traced with the problem's torch array ops; the
per-row numbers (rates, bias corrections, step counts: :meth:`~pintrain.training.Optimizer.coefficients`)
come from the same numpy tables, outside the compiled region.  Compiled once for any row count
from :data:`COMPILED_MIN_ROWS` up (``dynamic=True``; each frozen spacing m is a graph of its own).
The answer equals the eager update to rounding (a fused kernel may contract multiply-adds), not
bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..arrays import ArrayOps
from ..training.curvature import rows_term
from ..training.optimizers import SGD, Optimizer
from ..training.propagators import lagged_updates

# fewer rows than this take the eager update: a lone row (the coarsest level's chain) or a handful
# gain little from one fused kernel and would each cost a graph of their own (dynamo specialises 1 row)
COMPILED_MIN_ROWS = 64


class CompiledUpdate:
    """``optimizer``'s fine and frozen updates on torch states, compiled (calls of at least
    :data:`COMPILED_MIN_ROWS` rows; fewer take the optimizer's eager update)."""

    def __init__(self, optimizer: Optimizer, ops: ArrayOps) -> None:
        self.optimizer, self.ops = optimizer, ops
        self._fine = torch.compile(self._fine_apply, dynamic=True)
        self._frozen = torch.compile(self._frozen_apply, dynamic=True)

    def _fine_apply(self, S: torch.Tensor, G: torch.Tensor, c: tuple[Any, ...]) -> torch.Tensor:
        return self.optimizer.fine_apply(S, G, c, self.ops)

    def _frozen_apply(self, S: torch.Tensor, G_sum: torch.Tensor, cs: list[tuple[Any, ...]]) -> torch.Tensor:
        return self.optimizer.frozen_apply(S, G_sum, cs, self.ops)

    def fine(
        self, S: torch.Tensor, G: torch.Tensor, ks: np.ndarray, lrs: np.ndarray | None, out: Any = None
    ) -> torch.Tensor:
        """:meth:`Optimizer.fine <pintrain.training.Optimizer.fine>`, compiled."""
        if S.shape[0] < COMPILED_MIN_ROWS:
            return self.optimizer.fine(S, G, ks, self.ops, lrs, out)
        new = self._fine(S, G, self.optimizer.fine_coefficients(S, ks, self.ops, lrs))
        if out is None:
            return new
        out.copy_(new)
        return out

    def frozen(
        self, S: torch.Tensor, G_sum: torch.Tensor, ks: np.ndarray, m: int, lrs: np.ndarray | None
    ) -> torch.Tensor:
        """:meth:`Optimizer.frozen <pintrain.training.Optimizer.frozen>`, compiled (plain SGD's is one
        expression already, and stays eager)."""
        if (isinstance(self.optimizer, SGD) and not self.optimizer.slots) or S.shape[0] < COMPILED_MIN_ROWS:
            return self.optimizer.frozen(S, G_sum, ks, m, self.ops, lrs)
        return self._frozen(S, G_sum, self.optimizer.frozen_coefficients(S, ks, m, self.ops, lrs))


class CompiledStep:
    """The fine step of many rows (``compile=True``, at least ``min_rows`` rows, no clipping): the
    batched gradient and the optimizer's update in one graph per call, so the gradient is never
    written out and read back, in the compiled gradients' calls
    (:meth:`~pintrain.torch.model.TorchModel.compiled_chunks`).  The answer equals the compiled
    gradient and update's to rounding (digits MLP, Adam, float32, 4096 rows into the level's rows, one
    thread: 29.1 -> 24.0 us a row; docs/performance.md)."""

    min_rows = COMPILED_MIN_ROWS  # fewer take the compiled gradient and then the update

    def __init__(self, problem: Any) -> None:
        self.problem = problem
        self._fn = torch.compile(self._step, dynamic=False)
        self._into = torch.compile(self._step_into, dynamic=False)

    def _step(
        self, S: torch.Tensor, ix: torch.Tensor | None, X: torch.Tensor, y: torch.Tensor, c: tuple[Any, ...]
    ) -> Any:
        problem = self.problem
        model = problem.model
        W = S[:, : problem.n_params]
        G = model._grad_shared(W, X, y) if ix is None else model._grad_one(W, X[ix], y[ix])
        return problem.optimizer.fine_apply(S, G, c, problem.ops)

    def _step_into(
        self,
        S: torch.Tensor,
        ix: torch.Tensor | None,
        X: torch.Tensor,
        y: torch.Tensor,
        c: tuple[Any, ...],
        out: torch.Tensor,
    ) -> None:
        """:meth:`_step` written into ``out`` (rows of the level, strided) by the graph's last kernel:
        no new array and no copy after it (512 rows of the digits MLP with Adam: 13.0 -> 11.6 ms)."""
        out.copy_(self._step(S, ix, X, y, c))

    def __call__(self, S: torch.Tensor, ks: np.ndarray, out: Any = None) -> torch.Tensor:
        problem, model = self.problem, self.problem.model
        batches = problem.batches(ks, 1)
        out = problem.ops.empty(S.shape, S) if out is None else out
        c_all = problem.optimizer.fine_coefficients(S, ks, problem.ops, problem.lrs)
        ix_all = None if batches.idx is None else problem.ops.index(batches.idx)
        for s, n, pad in model.compiled_chunks(S.shape[0], batches):
            c = tuple(pad(x) if isinstance(x, torch.Tensor) else x for x in c_all)
            ix, rows = None if ix_all is None else pad(ix_all), pad(S)
            if rows.shape[0] == n:  # a whole chunk (not padded): into its rows
                self._into(rows, ix, model.X, model.y, c, out[s : s + n])
            else:
                out[s : s + n] = self._fn(rows, ix, model.X, model.y, c)[:n]
        return out


class CompiledSubInterval:
    """A ``lagged`` / ``curvature`` sub-interval of many rows (``compile=True``, at least ``min_rows``
    rows, no clipping) in one graph per call: the r gradients of each row's steps at its start's
    weights (a vmap over the rows of a vmap over the r batches), the term ``H_r (w_j - w_0)`` with
    each row's table entry gathered inside the graph, and the r updates.  Eager, the term alone cost
    27 us a row (a pass over (rows, rank, P) products per chunk) and the sub-interval about twice the
    fine step's two steps; the answer equals the eager steps' to rounding (docs/performance.md,
    session 11)."""

    min_rows = COMPILED_MIN_ROWS  # fewer take the propagator's own steps

    def __init__(self, problem: Any) -> None:
        self.problem = problem
        self._fn = torch.compile(self._steps, dynamic=False)

    def _steps(
        self,
        S: torch.Tensor,
        ix: torch.Tensor | None,
        X: torch.Tensor,
        y: torch.Tensor,
        cs: tuple[tuple[Any, ...], ...],
        Bt: torch.Tensor | None,
        s: torch.Tensor | None,
        entries: torch.Tensor | None,
    ) -> torch.Tensor:
        problem = self.problem
        model, P = problem.model, problem.n_params
        W0 = S[:, :P]
        if ix is None:  # full batch: every step's gradient is the one over the data set
            G = model._grad_shared(W0, X, y)
        else:  # ix: (rows, r, batch)
            per_row = torch.func.vmap(torch.func.grad(model._loss_one), in_dims=(None, 0, 0))  # one row's r batches
            G = torch.func.vmap(per_row)(W0, X[ix], y[ix])
        term = None
        if Bt is not None and s is not None and entries is not None:
            Bt, s = Bt[entries], s[entries]  # (rows, rank, P), (rows, rank): indexed loads of the fused kernels
            term = lambda dW: rows_term(dW, Bt, s)  # noqa: E731
        return lagged_updates(
            S,
            P,
            len(cs),
            lambda j: G if ix is None else G[:, j],
            lambda S, g, j: problem.optimizer.fine_apply(S, g, cs[j], problem.ops),
            term,
        )

    def __call__(self, S: torch.Tensor, ks: np.ndarray, r: int, curved: bool) -> torch.Tensor:
        """The r steps from ``ks`` of every row of ``S``: ``lagged_steps`` (``curved``: with the term)."""
        return self._run(S, ks, r, self.problem._curvature_table().stacked if curved else None)

    def trial(self, S: torch.Tensor, r: int, curved: bool) -> None:
        """Compile a call of ``S``'s rows now, from step 0 (``curved``: also with a zero table), without
        building the table."""
        ks = np.zeros(S.shape[0], dtype=np.int64)
        float(self._run(S, ks, r, None).sum())
        if curved:
            float(self._run(S, ks, r, self.problem.curvature_zeros(S)).sum())

    def _run(
        self, S: torch.Tensor, ks: np.ndarray, r: int, table: tuple[torch.Tensor, torch.Tensor, int] | None
    ) -> torch.Tensor:
        problem = self.problem
        model, ops = problem.model, problem.ops
        ks = np.asarray(ks, dtype=np.int64).reshape(-1)
        batches = problem.batches(ks, r)  # the rows' r batches (their samples size the calls)
        ix_all = None if batches.idx is None else ops.index(batches.idx).reshape(ks.size, r, -1)
        cs_all = [problem.optimizer.fine_coefficients(S, ks + j, ops, problem.lrs) for j in range(r)]
        Bt = s = entries = None
        if table is not None:
            Bt, s, block = table
            entries = ops.index(ks // block)
        out = ops.empty(S.shape, S)
        for a, n, pad in model.compiled_chunks(S.shape[0], batches):
            cs = tuple(tuple(pad(x) if isinstance(x, torch.Tensor) else x for x in c) for c in cs_all)
            rows = None if ix_all is None else pad(ix_all)
            at = None if entries is None else pad(entries)
            out[a : a + n] = self._fn(pad(S), rows, model.X, model.y, cs, Bt, s, at)[:n]
        return out
