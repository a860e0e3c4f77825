"""Coarse propagators: what one step of a coarse level (spacing m) does in place of m SGD steps.

Each is a function ``(problem, W, ks, m) -> W_new`` over a batch of independent weight vectors
``W`` (B, P) starting at fine steps ``ks``.  With ``g(w) = sum_{j=k}^{k+m-1} grad L_j(w)``, the sum of
the gradients of the m step losses at the same weights (the gradient over the union of the m
batches, each sample weighted as in its own step; with the coarse option ``sample=r``, estimated
from r of the m batches spread over the interval, weighted m / r, so that a coarse step costs
about r fine steps of work instead of m):

``union``
    One explicit step, ``w - lr * g(w)``: m times the learning rate over the data of the m steps.
    Exact for m = 1; cheap; unstable once ``m * lr`` passes the stability limit of gradient
    descent (about 2 / largest Hessian eigenvalue of the mean loss).

``split``
    The same gradient-flow step split into s equal explicit sub-steps, ``w <- w - (lr / s) g(w)``,
    with ``s = ceil(m / max_ratio)`` so that each sub-step is at most ``max_ratio`` fine learning
    rates long (default 4).  Stable when ``max_ratio * lr`` is; costs s gradients of the union.

``gauss-newton``
    A linearly implicit step: ``w - (I + lr H)^{-1} lr g(w)`` with ``H = sum_j J_j^T S_j J_j`` the
    Gauss-Newton Hessian of the m step losses (J_j the Jacobian of the network outputs on step j's
    batch, S_j the loss weighting).  Like backward Euler on the gradient flow, it damps stiff
    directions instead of amplifying them, so on the linearised loss it is stable at any ``m * lr``
    (where the linearisation fails, far from the trajectory at a large lr, a row whose system is
    singular or not finite becomes NaN and the solver reports a divergence there).  Costs one
    Jacobian and one R x R solve per point, R the smaller of P and the number of outputs in the
    union (through the Woodbury identity when the union is the smaller): for small networks.

Schroder's (2017) coarse propagators are something else: ONE step of the fine kind with a
learning rate ``alpha(m)`` that depends on the level, ``alpha(m) = min(lr * growth**log2(m),
alpha_max)`` (with the paper's m = 2, level l has spacing 2**l and this is its
``min(growth**l alpha(b), alpha(max))``; coarse options ``alpha_growth`` and ``alpha_max``):

``naive``
    ``alpha(m) = lr`` on every level (growth 1), all the training data in every coarse step.
``solver1``
    The paper's eq. 14: growth 2, capped at ``alpha_max`` (default: no cap); all the training
    data in every coarse step.  Eq. 18's slow rule is ``alpha_growth=1.25``.
``solver2``
    The paper's eq. 15: the same rate rule, and "serialized" data: coarse step i of a level
    trains on the data of fine step i of the schedule (the single example ``(i + 1) mod K`` for
    the paper problems' serialized schedule), not on the data of the fine steps it stands for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .problem import TrainingProblem

Propagator = Callable[["TrainingProblem", np.ndarray, np.ndarray, int], np.ndarray]


def union(problem: TrainingProblem, W: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
    return W - problem.lr * problem.gradient_sum(W, ks, m)


def all_data_step(problem: TrainingProblem, W: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
    return W - problem.coarse_lr(m) * problem.gradient_all(W, ks, m)


def level_step(problem: TrainingProblem, W: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
    return W - problem.coarse_lr(m) * problem.gradient_level(W, ks, m)


def split(problem: TrainingProblem, W: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
    s = max(1, -(-m // int(problem.coarse_options.get("max_ratio", 4))))
    h = problem.lr / s
    for _ in range(s):
        W = W - h * problem.gradient_sum(W, ks, m)
    return W


def gauss_newton(problem: TrainingProblem, W: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
    # g = s J^T r, H = s J^T J, c = lr s:  (I + lr H)^{-1} g = s J^T (I + c J J^T)^{-1} r  (R x R system)
    J, r, s = problem.linearization(W, ks, m)
    c = problem.lr * s
    R, P = J.shape[1:]
    Jt = J.transpose(0, 2, 1)
    if R <= P:
        K = np.matmul(J, Jt)
        K *= c
        K += np.eye(R)
        d = s * np.matmul(Jt, _solve_rows(K, r[:, :, None]))[:, :, 0]
    else:
        A = np.matmul(Jt, J)
        A *= c
        A += np.eye(P)
        d = _solve_rows(A, s * np.matmul(Jt, r[:, :, None]))[:, :, 0]
    return W - problem.lr * d


def _solve_rows(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``solve(A[i], b[i])`` for every row; a row whose system is not finite or numerically singular
    (I + c J^T J is symmetric positive definite, so only weights that have blown up make it so) gets
    NaN, which the solver reports as a divergence at that level and step, instead of one bad row
    failing the whole batch with a LinAlgError."""
    ok = np.isfinite(A).all(axis=(1, 2)) & np.isfinite(b).all(axis=(1, 2))
    out = np.full(b.shape, np.nan)
    if ok.all():
        try:
            return np.linalg.solve(A, b)
        except np.linalg.LinAlgError:
            pass
    for i in np.flatnonzero(ok):
        try:
            out[i] = np.linalg.solve(A[i], b[i])
        except np.linalg.LinAlgError:
            continue
    return out


COARSE_PROPAGATORS: dict[str, Propagator] = {
    "union": union,
    "split": split,
    "gauss-newton": gauss_newton,
    "naive": all_data_step,
    "solver1": all_data_step,
    "solver2": level_step,
}
# the learning-rate growth per doubling of the spacing of the paper's propagators (None: not one of them)
ALPHA_GROWTH: dict[str, float | None] = {"naive": 1.0, "solver1": 2.0, "solver2": 2.0}
