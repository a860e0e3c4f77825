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
stays one function of its input through the solve.  The first entry costs ``ITERATIONS`` products
of the Hessian with ``rank`` vectors (subspace iteration from a seeded start), every later one
``WARM_ITERATIONS`` to ``ITERATIONS``, started from the previous entry's directions (the Hessian
turns slowly along the trajectory), until an iteration moves its Ritz values by at most ``WARM_TOL``: on the suite's
momentum and Adam cases at N = 1024 the same MGRIT iterations, for a table built in 0.58-0.68 of
the time (the entries in 0.39-0.50; docs/convergence.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ITERATIONS = 10  # subspace iterations of the first entry
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
        Bt = self.Bt[b]
        return ((Bt @ dw[0]) * self.s[b]) @ Bt

    def _term_rows(self, dW: Any, b: int) -> Any:
        Bt = self._Bt[b]
        c = (dW[:, None, :] * Bt).sum(2) * self._s[b]  # (rows, rank): each direction's coefficient
        return (c[:, :, None] * Bt).sum(1)


def build(problem: Any, rank: int, block: int) -> CurvatureTable:
    """The table of ``problem`` (a :class:`~pintrain.training.TrainingProblem` whose model gives
    Hessian-vector products, :class:`~pintrain.training.model.HasHessian`): the coarse trajectory,
    then one entry per block (the small rank x P algebra in numpy float64)."""
    from .propagators import lagged

    ops, model, P = problem.ops, problem.model, problem.n_params
    n, r = problem.n_steps, problem.max_ratio
    u0 = np.asarray(problem.initial())

    def back(x: np.ndarray) -> Any:
        return ops.asarray(np.ascontiguousarray(x, dtype=u0.dtype))

    S = ops.asarray(u0[None, :])
    Bs, ss, path = [], [], []
    start = None  # the previous entry's directions (of D^1/2 H D^1/2)
    for k in range(0, n, block):
        path.append(S * 1)  # a copy: a step may update its input in place
        root = np.asarray(ops.to_numpy(ops.sqrt(problem.optimizer.preconditioner(S, P, k, ops)[0])), dtype=np.float64)
        q = min(r, n - k)  # the Hessian of one step's loss: the mean over the first q batches of the block
        batches = problem.batches(np.array([k]), q)
        Bt, ev, start = _entry(
            lambda V, w=S[0, :P], b=batches, q=q: model.hessian_vectors(w, b, V) / q, ops, back, root, rank, k, start
        )
        Bs.append(Bt)
        ss.append(ev)
        if k + block < n:  # on along the coarse trajectory
            S = lagged(problem, S, np.array([k]), block)
    return CurvatureTable(Bs, ss, block, ops, ops.concat_rows(path))


def _entry(
    hv: Any, ops: Any, back: Any, root: np.ndarray, rank: int, seed: int, start: Any = None
) -> tuple[Any, Any, Any]:
    """``(Bt, s, V)`` of one entry: subspace iteration for the top ``rank`` eigenpairs of ``A = D^1/2
    H D^1/2`` (``hv(V)``: H times each row of V; ``root``: D^1/2), then Rayleigh-Ritz; the rows of
    ``Bt`` are ``D^-1/2`` times the Ritz vectors ``V``.  From ``start`` (the previous entry's ``V``)
    ``WARM_ITERATIONS`` to ``ITERATIONS`` iterations, until the Ritz values settle (``WARM_TOL``);
    else ``ITERATIONS`` from a start seeded by ``seed``."""
    r = back(root)

    def product(V: Any) -> np.ndarray:  # A V^T, row by row
        return np.asarray(ops.to_numpy(hv(V * r) * r), dtype=np.float64)

    cold = start is None
    V = back(np.random.default_rng(seed).standard_normal((rank, root.size))) if cold else start
    before = None  # a warm start's Ritz values of the last iteration (V orthonormal: start is Ritz vectors)
    for it in range(ITERATIONS):
        AV = product(V)
        if not cold:
            T = np.asarray(ops.to_numpy(V), dtype=np.float64) @ AV.T
            ev = np.linalg.eigvalsh((T + T.T) / 2)
            settled = before is not None and np.abs(ev - before).max() <= WARM_TOL * np.abs(ev).max()
            if it >= WARM_ITERATIONS and settled:
                break  # AV is A V^T of this V: the Rayleigh-Ritz below needs no further product
            before = ev
        V = back(orthonormal_rows(AV))
    else:
        AV = product(V)
    Vn = np.asarray(ops.to_numpy(V), dtype=np.float64)
    T = Vn @ AV.T
    ev, U = np.linalg.eigh((T + T.T) / 2)
    ritz = U.T @ Vn
    return back(ritz / root[None, :]), back(ev), back(ritz)


def orthonormal_rows(A: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the rows of ``A`` (rank x P, rank small), by modified Gram-Schmidt
    twice over: level-1 arithmetic on the rows, where ``np.linalg.qr`` of the P x rank transpose
    went through a multithreaded LAPACK that took 1.2 ms a call with two threads on a busy 2-core
    machine (0.19 ms with one) against about 0.05 ms here.  Rows that are (nearly) dependent fall
    back to that QR, which completes the basis."""
    Q = np.array(A, dtype=np.float64)
    scale = float(np.abs(Q).max()) if Q.size else 0.0
    for _ in range(2):
        for i in range(Q.shape[0]):
            for j in range(i):
                Q[i] -= (Q[i] @ Q[j]) * Q[j]
            n = float(np.sqrt(Q[i] @ Q[i]))
            if not n > 1e-10 * scale:
                return np.linalg.qr(np.asarray(A, dtype=np.float64).T)[0].T
            Q[i] /= n
    return Q
