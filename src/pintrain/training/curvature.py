"""The curvature table of the ``curvature`` coarse step: the few directions in which the optimizer's
dynamics turn or stiffen fastest, and the Hessian there, one entry per block of steps.

Step j of a ``lagged`` sub-interval that starts at w0 takes its batch's gradient at w0 where the
fine step takes it at w_j: ``g_j(w0) + H (w_j - w0) + ...``.  For momentum and Adam (heavy-ball
iterations) the directions of the preconditioned Hessian ``D^1/2 H D^1/2`` with the largest
eigenvalues turn by the largest angle a step, and a lagged gradient gets their rotation wrong
(docs/convergence.md, "The rotating modes").  The ``curvature`` step adds the missing term in the
``rank`` sharpest of those directions: ``H_r (w_j - w0)`` with ``H_r = D^-1/2 U S U^T D^-1/2``
(U, S the top eigenpairs of ``D^1/2 H D^1/2``), O(P rank) a step.

The table holds one entry per block of ``block`` steps, taken at the block's first step on the
coarse trajectory from u0 (``lagged`` steps of spacing ``block``, one after the other): a pure
function of the problem, built once (on first use) and the same on every rank, so the coarse step
stays one function of its input through the solve.  The entries are made ``GROUP`` at a time, their
Hessian products in one batched call: the first group's ``ITERATIONS`` products of the Hessian with
``rank`` vectors (subspace iteration from seeded starts), every later group's ``WARM_ITERATIONS``
to ``ITERATIONS``, all started from the last entry's directions before them (the Hessian turns
slowly along the trajectory), until an iteration moves every entry's Ritz values by at most
``WARM_TOL``.  (Entry by entry, each warm-started from the one before, the suite's momentum and
Adam cases at N = 1024 took the same MGRIT iterations for a table built in 0.58-0.68 of the time
of cold entries; docs/convergence.md.  In groups: docs/performance.md, session 10.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

ITERATIONS = 10  # subspace iterations of the first entries
GROUP = 8  # entries computed together, warm-started from the last entry of the group before
WARM_ITERATIONS = 3  # at least, of every later entry, started from the one before (at most ITERATIONS),
WARM_TOL = 1e-2  # until an iteration moves its Ritz values by at most this (relative to the largest)
TERM_CHUNK_BYTES = 1 << 21  # the batched term takes its rows in chunks of about this many bytes of temporaries


class CurvatureTable:
    """``Bt`` (blocks of (rank, P)) and ``s`` (blocks of (rank,)): entry b's term for a change dw is
    ``sum_j (dw . Bt[b][j]) s[b][j] Bt[b][j]``.  The entries are held stacked ((entries, rank, P) and
    (entries, rank)); ``Bt[b]`` and ``s[b]`` are views of them.  ``trajectory``: the coarse
    trajectory's states at the blocks' first steps (entries, state size), where the entries were
    taken; a solve's nested start takes them for its coarsest level instead of a sequential pass
    (``TrainingProblem.trajectory_guess``)."""

    def __init__(self, Bt: list[Any], s: list[Any], block: int, ops: Any, trajectory: Any = None) -> None:
        self.block, self.ops = int(block), ops
        self._Bt = ops.concat_rows([b[None] for b in Bt])
        self._s = ops.concat_rows([v[None] for v in s])
        self.Bt, self.s = list(self._Bt), list(self._s)
        self.trajectory = trajectory

    def term(self, dW: Any, ks: np.ndarray) -> Any:
        """``H_r (w - w0)`` for every row of ``dW`` (the weights' change since the sub-interval's
        start), with the entry of the block of each row's step ``ks``.  Row by row in elementwise
        products and reductions within a row, not a matrix product, so that a row's value does not
        depend on how many rows a call holds (the same answer at any rank count); by runs of rows
        that share an entry (a level's steps are in order), in chunks whose temporaries ((rows, rank,
        P)) stay in cache.  The digits MLP in float32, 512 rows over 32 entries (a level's C-points):
        23 us a row entry by entry with a pass per direction, 11 so."""
        entry = np.asarray(ks, dtype=np.int64).reshape(-1) // self.block
        rows = max(1, TERM_CHUNK_BYTES // max(1, self._Bt.shape[1] * self._Bt.shape[2] * dW.dtype.itemsize))
        cuts = np.flatnonzero(np.diff(entry)) + 1
        starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [entry.size]])
        if starts.size == 1 and entry.size <= rows:
            return self._term_rows(dW, int(entry[0]))
        out = self.ops.empty(dW.shape, dW)
        for a0, b in zip(starts, ends, strict=True):
            for a in range(int(a0), int(b), rows):
                out[a : min(a + rows, b)] = self._term_rows(dW[a : min(a + rows, b)], int(entry[a]))
        return out

    def term_lone(self, dw: Any, k: int) -> Any:
        """``term`` of one row (1, P) on its own, in two matrix-vector products: for the coarsest
        level's sequential chain, which takes this path at any rank count (a row's value here may
        differ in rounding from :meth:`term`'s, so the choice is by path, never by row count)."""
        b = int(k) // self.block
        return lone_term(dw[0], self.Bt[b], self.s[b])

    @property
    def stacked(self) -> tuple[Any, Any, int]:
        """``(Bt, s, block)``: all entries stacked, as a compiled step takes them."""
        return self._Bt, self._s, self.block

    def _term_rows(self, dW: Any, b: int) -> Any:
        return rows_term(dW, self._Bt[b], self._s[b])


def lone_term(dw: Any, Bt: Any, s: Any) -> Any:
    """``H_r dw`` of one change ``dw`` (P,) with one entry's ``Bt`` (rank, P) and ``s`` (rank,): two
    matrix-vector products (the coarsest chain's path)."""
    return ((Bt @ dw) * s) @ Bt


def rows_term(dW: Any, Bt: Any, s: Any) -> Any:
    """``H_r dw`` for every row of ``dW`` (rows, P), with one entry for all rows (``Bt`` (rank, P),
    ``s`` (rank,)) or each row's own ((rows, rank, P), (rows, rank)): elementwise products and
    reductions within a row, so that a row's value does not depend on the other rows."""
    c = (dW[:, None, :] * Bt).sum(-1) * s  # (rows, rank): each direction's coefficient
    return (c[..., None] * Bt).sum(-2)


def build(problem: Any, rank: int, block: int) -> CurvatureTable:
    """The table of ``problem`` (a :class:`~pintrain.training.TrainingProblem` whose model gives
    Hessian-vector products of many rows, :class:`~pintrain.training.model.HasHessian`): the coarse trajectory,
    then the entries, :data:`GROUP` at a time (the small rank x P algebra in numpy float64)."""
    from .propagators import lagged

    ops, model, P = problem.ops, problem.model, problem.n_params
    n, r = problem.n_steps, problem.max_ratio
    u0 = np.asarray(problem.initial())

    def back(x: np.ndarray) -> Any:
        return ops.asarray(np.ascontiguousarray(x, dtype=u0.dtype))

    S, path = ops.asarray(u0[None, :]), []
    ks = np.arange(0, n, block, dtype=np.int64)
    for k in ks:  # on along the coarse trajectory, one state per entry
        path.append(S * 1)  # a copy: a step may update its input in place
        if k + block < n:
            S = lagged(problem, S, np.array([k]), block)
    trajectory = ops.concat_rows(path)
    Bs: list[Any] = []
    ss: list[Any] = []
    start = None  # the directions (of D^1/2 H D^1/2) of the last entry so far
    for g0 in range(0, ks.size, GROUP):
        group = ks[g0 : g0 + GROUP]
        q = np.minimum(r, n - group)  # the Hessian of one step's loss: the mean over the block's first q batches
        for qi in np.unique(q):  # (only a last block shorter than r steps has another q)
            sel = np.flatnonzero(q == qi)
            rows = [g0 + int(i) for i in sel]
            W, batches = trajectory[ops.index(np.array(rows))][:, :P], problem.batches(group[sel], int(qi))
            roots = np.stack(
                [
                    np.asarray(ops.to_numpy(ops.sqrt(problem.optimizer.preconditioner(path[i], P, int(ks[i]), ops)[0])))
                    for i in rows
                ]
            ).astype(np.float64)

            def hv(V: Any, W: Any = W, b: Any = batches, q: int = int(qi)) -> Any:
                return model.hessian_vectors_many(W, b, V) / q

            Bt, ev, V = _entries(hv, ops, back, roots, rank, group[sel], start)
            Bs += list(Bt)
            ss += list(ev)
            start = V[-1]
    return CurvatureTable(Bs, ss, block, ops, trajectory)


def _entries(
    hv: Any, ops: Any, back: Any, roots: np.ndarray, rank: int, seeds: np.ndarray, start: Any = None
) -> tuple[Any, Any, Any]:
    """``(Bt, s, V)`` of G entries at once ((G, rank, P), (G, rank), (G, rank, P)): subspace
    iteration for the top ``rank`` eigenpairs of each ``A_i = D_i^1/2 H_i D_i^1/2`` (``hv(V)``: H_i
    times each row of ``V[i]``, all entries in one call; ``roots``: the D_i^1/2, (G, P)), then
    Rayleigh-Ritz; the rows of ``Bt`` are ``D^-1/2`` times the Ritz vectors ``V``.  From ``start``
    (the last entry's ``V`` before these, for every one of them) ``WARM_ITERATIONS`` to
    ``ITERATIONS`` iterations, until the Ritz values of all G settle (``WARM_TOL``); else
    ``ITERATIONS`` from starts seeded by ``seeds``.  Every entry's arithmetic is its own (row-wise
    numpy, batched eigensolvers, the model's vmap over entries), so the table is one function of the
    problem for a given :data:`GROUP`."""
    G, P = roots.shape
    r = back(roots)[:, None, :]

    def product(V: Any) -> np.ndarray:  # A_i V_i^T, row by row
        return np.asarray(ops.to_numpy(hv(V * r) * r), dtype=np.float64)

    cold = start is None
    if cold:
        V = back(np.stack([np.random.default_rng(int(k)).standard_normal((rank, P)) for k in seeds]))
    else:
        V = back(np.repeat(np.asarray(ops.to_numpy(start), dtype=np.float64)[None], G, axis=0))
    before = None  # a warm start's Ritz values of the last iteration (V orthonormal: start is Ritz vectors)
    for it in range(ITERATIONS):
        AV = product(V)
        if not cold:
            ev = np.linalg.eigvalsh(_symmetric(np.asarray(ops.to_numpy(V), dtype=np.float64), AV))
            scale = np.abs(ev).max(axis=1)
            settled = before is not None and bool((np.abs(ev - before).max(axis=1) <= WARM_TOL * scale).all())
            if it >= WARM_ITERATIONS and settled:
                break  # AV is A V^T of this V: the Rayleigh-Ritz below needs no further product
            before = ev
        V = back(orthonormal_rows(AV))
    else:
        AV = product(V)
    Vn = np.asarray(ops.to_numpy(V), dtype=np.float64)
    ev, U = np.linalg.eigh(_symmetric(Vn, AV))
    ritz = np.swapaxes(U, 1, 2) @ Vn
    return back(ritz / roots[:, None, :]), back(ev), back(ritz)


def _symmetric(V: np.ndarray, AV: np.ndarray) -> np.ndarray:
    """The Rayleigh quotients ``V_i A_i V_i^T`` of G entries, symmetrised: (G, rank, rank)."""
    T = V @ np.swapaxes(AV, 1, 2)
    return (T + np.swapaxes(T, 1, 2)) / 2


def orthonormal_rows(A: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the rows of each ``A[i]`` (G, rank, P; rank small), by Cholesky QR
    twice over, all G at once (``A = L Q`` from the Cholesky factor L of the Gram matrix ``A A^T``;
    again on Q): matrix products of rank x P, where a Householder QR of the P x rank transposes, or
    Gram-Schmidt a row at a time, cost several times more.  An ``A[i]`` whose Gram matrix is not
    positive definite to the working precision (rows nearly dependent) takes that QR, which completes
    the basis."""
    Q = np.array(A, dtype=np.float64)
    bad = np.zeros(Q.shape[0], dtype=bool)
    with np.errstate(all="ignore"):
        for _ in range(2):
            gram = Q @ np.swapaxes(Q, 1, 2)
            gram[bad] = np.eye(Q.shape[1])
            try:
                L = np.linalg.cholesky(gram)
            except np.linalg.LinAlgError:  # find which: those take the QR
                for g in range(Q.shape[0]):
                    try:
                        np.linalg.cholesky(gram[g])
                    except np.linalg.LinAlgError:
                        bad[g] = True
                gram[bad] = np.eye(Q.shape[1])
                L = np.linalg.cholesky(gram)
            Q = np.linalg.inv(L) @ Q
            bad |= ~np.isfinite(Q).all(axis=(1, 2))
    for i in np.flatnonzero(bad):
        Q[i] = np.linalg.qr(np.asarray(A[i], dtype=np.float64).T)[0].T
    return Q
