"""Coarse propagators: what one step of a coarse level (spacing m) does in place of m optimizer steps.

One registry, one meaning per name, for every model backend and optimizer.  Each propagator is a
function ``(problem, S, ks, m) -> S_new`` over a batch of independent states ``S`` (B, state size:
the weights, then the optimizer's slots) starting at fine steps ``ks``, in the model backend's
arrays; one that needs a capability the model or the optimizer lacks is refused when the problem
is built, with the reason.  With ``g(w) = sum_{j=k}^{k+m-1} grad L_j(w)``, the sum of
the gradients of the m step losses at the same weights (the gradient over the union of the m
batches, each sample weighted as in its own step; with the coarse option ``sample=r``, estimated
from r of the m batches spread over the interval, weighted m / r, so that a coarse step costs
about r fine steps of work instead of m):

``union``
    The gradient of the m step losses at the start, frozen, and the optimizer's m steps with it
    (:meth:`~pintrain.training.optimizers.Optimizer.frozen`).  For plain SGD one explicit step
    ``w - lr * g(w)``: m times the learning rate over the data of the m steps.  Exact for m = 1;
    cheap; unstable once ``m * lr`` passes the stability limit of gradient descent (about
    2 / largest Hessian eigenvalue of the mean loss).

``split``
    The interval cut into ``s = ceil(m / max_ratio)`` near-equal sub-intervals of at most
    ``max_ratio`` fine steps (default 4), each a ``union`` step over its own batches at the weights
    reached so far.  Stable where ``max_ratio * lr`` is; the same data as ``union`` (one pass over
    the m batches in all), in s sequential passes.

``lagged``
    The sub-intervals of ``split``, but inside each the optimizer's own steps, each on its own
    batch: step j of a sub-interval starting at k applies ``grad L_{k+j}`` at the weights of k (the
    gradients lagged to the sub-interval's start; all of them from one batched call).  Where
    ``split`` feeds the optimizer the mean of the batches' gradients r times, this keeps each
    batch's own gradient in its own step, so Adam's second moment sees every ``g_j^2`` (not the
    square of their mean) and the momentum the gradients in their order; only the weights the
    gradients are taken at lag.  For plain SGD without clipping the sub-interval's steps sum to
    ``split``'s one step.  The same samples and gradient work as ``split`` in r times the rows
    (r = ``max_ratio``).  Along serial training its step over 4 fine steps was 5-7x closer to the
    4 fine steps than ``split``'s (max_ratio 2; digits MLP and LSTM cell with Adam); with nested
    iteration, N = 1024: Adam 8 iterations (``split`` 9), Adam on breast cancer 5 (8), AdamW 7 (8),
    the bag of embeddings 9 (10), momentum and Nesterov the same; but each iteration costs more (r
    gradient rows where ``split`` has one), so it is an option, not the default (docs/convergence.md).
    The sample option is refused: every step takes its own batch.

``curvature``
    ``lagged`` plus the curvature the lag leaves out: step j of a sub-interval that starts at w0
    takes ``g_j(w0) + H_r (w_j - w0)``, H_r the Hessian of a step's loss restricted to the 8
    sharpest directions of ``D^1/2 H D^1/2`` (D the optimizer's preconditioner: Adam's ``1 /
    (sqrt(v_hat) + eps)``, else the identity), O(P * 8) a step.  Those are the directions in which
    momentum's and Adam's heavy-ball dynamics turn fastest, which a lagged gradient gets wrong
    (docs/convergence.md, "The rotating modes").  H_r comes from a table, one entry per block of 64
    steps, built on first use from the coarse trajectory from u0 (:mod:`pintrain.training.curvature`:
    subspace iteration on Hessian-vector products), the same on every rank and fixed through the
    solve.  Needs a model with Hessian-vector products (the torch backend).  N = 1024, nested: the
    LSTM cell with Adam converges in 18 iterations (`split` and `lagged`: not in 30), the GRU in 14
    (38-40), the digits MLP with Adam in 5 (9).  Refuses ``sample``.  Coarse options ``rank``
    (default 8) and ``block`` (default 64).  What ``coarse="auto"`` picks for momentum and Adam
    (:func:`default_coarse`).

``gauss-newton``
    A linearly implicit step: ``w - (I + lr H)^{-1} lr g(w)`` with ``H = sum_j J_j^T S_j J_j`` the
    Gauss-Newton Hessian of the m step losses (J_j the Jacobian of the network outputs on step j's
    batch, S_j the loss weighting).  Like backward Euler on the gradient flow, it damps stiff
    directions instead of amplifying them, so on the linearised loss it is stable at any ``m * lr``
    (where the linearisation fails, far from the trajectory at a large lr, a row whose system is
    singular or not finite becomes NaN and the solver reports a divergence there).  Costs one
    Jacobian and one R x R solve per point, R the smaller of P and the number of outputs in the
    union (through the Woodbury identity when the union is the smaller): for small networks.
    Needs a model that gives its output Jacobian (the numpy backend) and plain SGD.  Coarse option
    ``theta`` (default 1): ``w - (I + theta lr H)^{-1} lr g(w)``, the theta method of the
    linearised flow; 0.5 (trapezoidal) is second order and took 8 iterations where 1 took 12 on
    ``sine`` (N = 4096, 3 and 5 levels), 6-7 where 1 took 13-15 on linear least squares, but 8
    where 1 took 6 on xor with spacings of 64 and more, whose stiff modes it damps less
    (docs/convergence.md).

Schroder's (2017) coarse propagators are something else: ONE step of the fine kind (the
optimizer's fine update) with a learning rate that depends on the level,
``alpha(m) = min(lr * growth**log2(m), alpha_max)`` (with the paper's m = 2, level l has spacing 2**l and this is its
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

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..arrays import ArrayOps
from .optimizers import SGD, Optimizer


class CoarseContext(Protocol):
    """What a propagator asks of the training problem (:class:`~pintrain.training.TrainingProblem`)."""

    optimizer: Optimizer
    max_ratio: int
    n_params: int
    ops: ArrayOps

    def gradient_sum(self, W: Any, ks: np.ndarray, m: int) -> Any: ...

    def gradient_steps(self, W: Any, ks: np.ndarray, r: int) -> Any: ...

    def gradient_all(self, W: Any, ks: np.ndarray, m: int) -> Any: ...

    def gradient_level(self, W: Any, ks: np.ndarray, m: int) -> Any: ...

    def linearization(self, W: Any, ks: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, float]: ...

    def coarse_lr(self, m: int) -> float: ...

    theta: float

    @property
    def lrs(self) -> np.ndarray | None: ...

    def clip(self, G: Any) -> Any: ...

    def frozen_update(self, S: Any, G_sum: Any, ks: np.ndarray, m: int) -> Any: ...

    def fine_update(self, S: Any, G: Any, ks: np.ndarray, out: Any = None) -> Any: ...

    def curvature_term(self, dW: Any, ks: np.ndarray) -> Any: ...

    def lone_steps(self, S: Any, ks: np.ndarray, m: int, curved: bool) -> Any | None: ...

    def fused_sub_interval(self, S: Any, ks: np.ndarray, r: int, curved: bool) -> Any | None: ...


def union(problem: CoarseContext, S: Any, ks: np.ndarray, m: int) -> Any:
    G = problem.gradient_sum(S[:, : problem.n_params], ks, m)
    G = problem.clip(G / m) * m  # gradient clipping (if any) of the frozen mean gradient
    return problem.frozen_update(S, G, ks, m)


def sub_intervals(
    step: Callable[[CoarseContext, Any, np.ndarray, int], Any], problem: CoarseContext, S: Any, ks: np.ndarray, m: int
) -> Any:
    """``step`` over ``ceil(m / max_ratio)`` near-equal sub-intervals of the m steps, one after the other."""
    offset = 0
    for r in _lengths(m, problem.max_ratio):
        S = step(problem, S, ks + offset, r)
        offset += r
    return S


@functools.lru_cache(maxsize=256)
def _lengths(m: int, max_ratio: int) -> tuple[int, ...]:
    """The lengths of ``ceil(m / max_ratio)`` near-equal sub-intervals of m steps."""
    s = -(-m // max_ratio)
    return tuple(int(r) for r in np.diff(np.linspace(0, m, s + 1).round().astype(np.int64)))


def split(problem: CoarseContext, S: Any, ks: np.ndarray, m: int) -> Any:
    return sub_intervals(union, problem, S, ks, m)


def lagged(problem: CoarseContext, S: Any, ks: np.ndarray, m: int) -> Any:
    fused = problem.lone_steps(S, ks, m, False)  # a lone row (the coarsest chain): the problem's own function
    return sub_intervals(lagged_steps, problem, S, ks, m) if fused is None else fused


def lagged_steps(problem: CoarseContext, S: Any, ks: np.ndarray, r: int, curved: bool = False) -> Any:
    """The r optimizer steps from ``ks``, step j with the gradient of batch ``ks + j`` at the start's
    weights; ``curved``: plus the curvature term ``H_r (w_j - w_start)`` (the ``curvature`` step).
    A lone row (the coarsest chain) takes the problem's own function for the whole coarse step
    where it has one (:meth:`~pintrain.training.TrainingProblem.lone_steps`, asked by ``lagged``
    and ``curvature``); many rows with ``compile=True``, one compiled graph
    (:meth:`~pintrain.training.TrainingProblem.fused_sub_interval`)."""
    fused = problem.fused_sub_interval(S, ks, r, curved)
    if fused is not None:
        return fused
    G = problem.gradient_steps(S[:, : problem.n_params], ks, r)
    return lagged_updates(
        S,
        problem.n_params,
        r,
        lambda j: G[:, j],
        lambda S, g, j: problem.fine_update(S, problem.clip(g), ks + j),
        (lambda dW: problem.curvature_term(dW, ks)) if curved else None,
        copy=True,  # S's rows may be updated in place
    )


def lagged_updates(
    S: Any,
    P: int,
    r: int,
    gradient: Callable[[int], Any],
    update: Callable[[Any, Any, int], Any],
    term: Callable[[Any], Any] | None,
    copy: bool = False,
) -> Any:
    """The r optimizer steps of a ``lagged`` / ``curvature`` sub-interval from the rows ``S``, written
    once for the propagator's steps and the compiled graphs (the coarsest chain's lone sub-intervals,
    :mod:`pintrain.torch.chain`; many rows, :class:`pintrain.torch.update.CompiledSubInterval`): step
    j applies ``update(S, g, j)`` with ``g = gradient(j)``, the gradient of its batch at the start's
    weights, plus from the second step on ``term(w_j - w_0)`` (the ``curvature`` term; None: none).
    ``copy``: keep the start's weights as a copy (an update that writes into its rows)."""
    W0 = S[:, :P] * 1 if copy and term is not None else S[:, :P]
    for j in range(r):
        g = gradient(j)
        if term is not None and j > 0:
            g = g + term(S[:, :P] - W0)
        S = update(S, g, j)
    return S


def curvature(problem: CoarseContext, S: Any, ks: np.ndarray, m: int) -> Any:
    fused = problem.lone_steps(S, ks, m, True)
    return sub_intervals(curved_steps, problem, S, ks, m) if fused is None else fused


def curved_steps(problem: CoarseContext, S: Any, ks: np.ndarray, r: int) -> Any:
    return lagged_steps(problem, S, ks, r, curved=True)


def all_data_step(problem: CoarseContext, S: Any, ks: np.ndarray, m: int) -> Any:
    G = problem.gradient_all(S[:, : problem.n_params], ks, m)
    return problem.optimizer.with_lr(problem.coarse_lr(m)).fine(S, G, ks, problem.ops)


def level_step(problem: CoarseContext, S: Any, ks: np.ndarray, m: int) -> Any:
    G = problem.gradient_level(S[:, : problem.n_params], ks, m)
    return problem.optimizer.with_lr(problem.coarse_lr(m)).fine(S, G, ks, problem.ops)


def gauss_newton(problem: CoarseContext, W: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
    # plain SGD (checked when the problem is built): the state is the weights
    # g = s J^T r, H = s J^T J, c = lr s:  (I + lr H)^{-1} g = s J^T (I + c J J^T)^{-1} r  (R x R system)
    # theta < 1: the theta method, w - (I + theta lr H)^{-1} lr g (0.5: trapezoidal, second order)
    J, r, s = problem.linearization(W, ks, m)
    lr = problem.optimizer.lr
    c = problem.theta * lr * s
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
    return W - lr * d


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


@dataclass(frozen=True)
class Propagator:
    """A coarse propagator: its function and the capabilities it needs."""

    name: str
    fn: Callable[[Any, Any, np.ndarray, int], Any]
    needs_linearization: bool = False  # the model's output Jacobian (Linearizable)
    plain_sgd: bool = False  # SGD without weight decay: the state is the weights alone
    alpha_growth: float | None = None  # the paper's learning-rate growth per doubling (None: not one of them)
    schedules: bool = True  # takes a learning-rate schedule and gradient clipping
    any_spacing: bool = False  # stable at any spacing (iterations about flat in the hierarchy): autotuned
    sub_intervals: bool = False  # steps in sub-intervals of at most max_ratio fine steps (takes max_ratio)
    sampled: bool = True  # may estimate its gradient from r of its m batches (takes sample)
    needs_hessian: bool = False  # the model's Hessian-vector products (HasHessian)

    def refusal(
        self,
        linearizable: bool,
        optimizer: Optimizer,
        scheduled: bool = False,
        clipped: bool = False,
        hessian: bool = True,
    ) -> str | None:
        """Why this propagator cannot run with this model and optimizer (None: it can)."""
        if self.needs_hessian and not hessian:
            return (
                f"coarse propagator {self.name!r} needs Hessian-vector products of the model's loss, which this "
                "model backend does not provide (torch models do); use 'lagged' or 'split'"
            )
        if not self.schedules and (scheduled or clipped):
            what = "a learning-rate schedule" if scheduled else "gradient clipping"
            return (
                f"coarse propagator {self.name!r} takes one constant learning rate and an unclipped gradient, "
                f"not {what}; use 'union' or 'split'"
            )
        if self.needs_linearization and not linearizable:
            return (
                f"coarse propagator {self.name!r} needs the model's output Jacobian (a linearization), which this "
                "model backend does not provide; use 'union' or 'split'"
            )
        if self.plain_sgd and not (type(optimizer) is SGD and not optimizer.hyper.get("weight_decay")):
            return (
                f"coarse propagator {self.name!r} is the linearly implicit step of plain SGD; optimizer "
                f"{optimizer.name!r} carries other state: use 'union' or 'split'"
            )
        return None


COARSE_PROPAGATORS: dict[str, Propagator] = {
    p.name: p
    for p in (
        Propagator("union", union),
        Propagator("split", split, any_spacing=True, sub_intervals=True),
        Propagator("lagged", lagged, any_spacing=True, sub_intervals=True, sampled=False),
        Propagator("curvature", curvature, any_spacing=True, sub_intervals=True, sampled=False, needs_hessian=True),
        Propagator(
            "gauss-newton", gauss_newton, needs_linearization=True, plain_sgd=True, schedules=False, any_spacing=True
        ),
        Propagator("naive", all_data_step, alpha_growth=1.0, schedules=False),
        Propagator("solver1", all_data_step, alpha_growth=2.0, schedules=False),
        Propagator("solver2", level_step, alpha_growth=2.0, schedules=False),
    )
}


def default_coarse(optimizer: Optimizer, hessian: bool, sample: int | None = None) -> str:
    """The propagator ``coarse="auto"`` stands for: ``curvature`` for an optimizer with a momentum
    slot (momentum, Nesterov, Adam, AdamW: heavy-ball dynamics, whose rotating modes a lagged
    gradient gets wrong) on a model with Hessian-vector products, unless the coarse gradient is
    sampled; ``split`` otherwise (plain SGD, the numpy backend, ``sample=r``).  On the convergence
    suite (docs/convergence.md; N = 1024, nested, 3 levels) ``curvature`` took 5-6 iterations where
    ``split`` took 8-11 on the MLPs with momentum and Adam, 14 for the GRU (40) and 18 for the LSTM
    cell (not in 30); on plain SGD it has no rotation to fix and did not help the LayerNorm MLP."""
    if optimizer.slots and hessian and sample is None:
        return "curvature"
    return "split"


# the learning-rate growth per doubling of the spacing of the paper's propagators (None: not one of them)
ALPHA_GROWTH: dict[str, float | None] = {name: p.alpha_growth for name, p in COARSE_PROPAGATORS.items()}
