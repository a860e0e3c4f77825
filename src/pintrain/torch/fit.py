"""``fit``: a user's module, loss and data, trained serially or by MGRIT to the same weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..api import not_converged, train
from ..errors import NotConvergedError, OptionError
from ..mgrit import Result, SolverOptions, with_default_tol
from ..mgrit.autotune import auto_layout, choose
from ..mgrit.options import DEFAULT_TOL
from ..training.optimizers import make_optimizer
from .problem import TorchProblem


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``model``: a trained copy of the module (in the dtype trained, float64 by default);
    ``losses``: the loss of every step's mini-batch at the weights before that step (what a
    training loop logs), ``losses[k] = L_k(w_k)``; ``states``: every step's state vector (weights,
    then optimizer slots) as rows, ``states[k]`` before step k; ``solver``: the MGRIT
    :class:`~pintrain.mgrit.Result` (None for ``method="serial"``); ``problem``: the
    :class:`TorchProblem` (for ``problem.model_at(state)`` and ``problem.describe()``).
    Under MPI only rank 0 holds all states and the losses; every rank has ``model``.
    """

    model: nn.Module
    losses: np.ndarray
    states: np.ndarray
    solver: Result | None
    wall_s: float
    method: str
    problem: TorchProblem
    points: np.ndarray | None = None  # the steps whose states ``states`` holds (None: all)

    @property
    def final_weights(self) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.problem.weights(self.states[-1])))

    @property
    def converged(self) -> bool:
        return self.solver is None or self.solver.converged


def fit(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    X: Any,
    y: Any,
    steps: int = 1000,
    batch_size: int | None = 32,
    optimizer: Any = "sgd",
    lr: float = 0.01,
    seed: int = 0,
    method: str = "mgrit",
    levels: int | str | None = None,
    cfactor: int | tuple[int, ...] | None = None,
    tol: float | None = None,
    *,
    nested: bool = True,
    coarse: str = "auto",
    max_ratio: int = 2,
    sample: int | None = None,
    coarse_options: dict[str, Any] | None = None,
    dtype: str | torch.dtype = "float64",
    device: str | torch.device | None = None,
    compile: bool = False,
    batches: Any = None,
    lr_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    lr_schedule: Any = None,
    clip_grad_norm: float | None = None,
    keep: Any = "all",
    options: SolverOptions | None = None,
    callback: Callable[[int, float], None] | None = None,
    comm: Any = None,
    allow_unconverged: bool = False,
    **optimizer_kwargs: Any,
) -> FitResult:
    """Train ``model`` on ``(X, y)`` for ``steps`` optimizer steps, by MGRIT or serially.

    Step k takes the mini-batch of ``batch_size`` samples that the seeded schedule gives it
    (reshuffled each epoch; ``None``: full batch), computes ``loss_fn(model(X[batch]), y[batch])``
    and applies ``optimizer`` ("sgd", "momentum", "nesterov", "adam", "adamw", with torch.optim's
    keyword hyper-parameters in ``optimizer_kwargs``, e.g. ``momentum=0.9``, ``betas=(0.9, 0.99)``,
    ``weight_decay=1e-4``).  ``method="serial"`` is the usual loop (``loss.backward()``, then the
    ``torch.optim`` optimizer's ``step()``) on a copy of the module;
    ``method="mgrit"`` solves for all of them at once with ``levels``, ``cfactor`` and ``tol`` (or
    ``options``, a full :class:`~pintrain.mgrit.SolverOptions`) and gives the same weights to the
    tolerance (default 1e-9 in float64; :func:`~pintrain.mgrit.default_tol`).  Given none of
    ``levels``, ``cfactor``, ``options`` (and ``nested`` left on), the cost model picks levels and
    cfactors from the problem's measured step costs for 512 steps or more
    (:func:`pintrain.mgrit.autotune.auto_layout`; on the digits MLP with Adam at 16384 steps it takes
    about 1-2 s to measure and picks 2 levels and a cfactor of 16 to 64, whose modelled times lie
    within a few percent; 2 levels and cfactor 32 were 2.4 times faster than 3 levels and cfactor
    4) when the coarse propagator is stable at any spacing (all but "union"), else 3 levels and
    cfactor 4; ``levels="auto"`` asks for it at any number of steps
    (:func:`pintrain.mgrit.autotune.choose`).  The choice follows measured times, so two runs whose
    candidates time alike may take different hierarchies, and their weights then differ in the last
    digits (each within the tolerance of the loop's); the hierarchy a run took is in
    ``result.solver.options`` (``levels``, ``cfactor``), and giving those repeats the run bit for bit.
    ``nested=True`` (the default) starts from nested
    iteration (the coarsest level solved first, its trajectory carried up), not from copies of the
    initial state: a copy of the initial state at step k has empty optimizer slots under step k's
    bias corrections, so Adam's first steps from it are about 3 lr in every weight, and the
    bag-of-embeddings classifier of ``docs/convergence.md`` diverged from it at 4096 steps where it
    converges in 10 iterations from the nested start.
    ``coarse`` picks the coarse propagator (:mod:`pintrain.training.propagators`), with sub-intervals
    of at most ``max_ratio`` fine steps.  The default "auto" is "curvature" for the optimizers with
    momentum (momentum, Nesterov, Adam, AdamW; its table of the sharpest Hessian directions costs
    about one more pass over the steps, made once, whose trajectory is also the nested start's coarsest
    level) and "split" for plain SGD: on the suite of
    ``docs/convergence.md`` (N = 1024) "curvature" took 5-6 iterations where "split" took 8-11 on
    the MLPs with momentum and Adam, and converged on the GRU (14, "split" 40) and the LSTM cell
    (18, "split" not in 30).  ``coarse_options`` takes the propagator's other options ("curvature":
    ``rank``, the directions held, default 8; ``block``, the steps a table entry serves, default 64).
    ``sample=r`` makes coarse steps estimate their gradient from r of their m batches (then "auto"
    is "split").  Float64 by default; ``dtype="float32"`` is faster but its
    round-off (about 1e-7 relative per step) bounds the tolerance MGRIT can reach: the residual is an
    l2 norm over the C-points, so its floor grows with sqrt(steps) (the digits MLP with Adam stalls at
    1.3e-5 for 4096 steps, 2.1e-4 for 16384), and the default tolerance follows it (100 eps
    sqrt(steps / cfactor): 3.8e-4 at 4096 steps, 7.6e-4 at 16384, with cfactor 4); a solve given a
    tolerance below its floor stops and says so.
    What a training loop has, in its own words, inside the evolution (so MGRIT still gives the
    loop's weights): ``optimizer`` may be ``torch.optim.SGD``/``Adam``/``AdamW`` itself, and "sgd"
    takes ``momentum``, ``dampening``, ``nesterov`` as torch.optim.SGD does; ``lr_scheduler`` is
    what you would wrap the optimizer in (``lambda opt: torch.optim.lr_scheduler.StepLR(opt, 100)``:
    the rates are the scheduler's own, stepped once per step) or ``lr_schedule`` the rates
    themselves (a sequence, or a function of the step); ``clip_grad_norm`` clips every step's
    gradient as ``torch.nn.utils.clip_grad_norm_``; ``batches`` is your own batch order, one index
    batch per step (e.g. ``list(torch.utils.data.BatchSampler(sampler, 32, drop_last=True))`` over
    the epochs), instead of pintrain's seeded shuffle, which drops each epoch's remainder as
    ``drop_last=True`` does.  A ``batch_size`` above the number of samples is refused.
    ``keep="final"`` (or an int K: every K-th state, checkpoints) returns only those states, and makes
    ``method="serial"`` the plain loop with memory independent of ``steps`` (the losses are the
    loop's own, no second pass); ``FitResult.points`` names the steps kept.
    ``device`` ("cuda", "mps", ...; default the CPU) holds the data, the steps and the solver's
    level arrays (serial training runs there too); the states come back as numpy arrays, the model
    on that device.
    ``compile=True`` runs the batched gradients and the optimizer's update through ``torch.compile``
    (on a CPU it needs a C++ compiler): each row count it meets (rounded up to a power of two, at
    most 128 rows a call) costs seconds to compile once, after which a batched gradient costs about
    half and a lone row's a quarter of the eager one, and Adam's update is one fused kernel; with
    ``coarse`` "curvature" or "lagged" the coarsest level's chain is compiled too, up to 4
    sub-intervals a graph (about a fifth of the eager one's time; digits MLP, one thread), replayed
    as CUDA graphs on a CUDA device; it pays on long runs.
    The answer is the same to rounding, not bit for bit (compiled kernels round differently from eager ones).
    The module given is not changed: ``FitResult.model`` is a trained copy.  An MGRIT solve that
    stops above ``tol`` raises :class:`~pintrain.errors.NotConvergedError` (its ``result`` is the
    FitResult reached) unless ``allow_unconverged=True``.
    """
    if method not in ("serial", "mgrit"):
        raise OptionError("method", method, '"serial" or "mgrit"')
    opt = make_optimizer(optimizer, lr, **optimizer_kwargs)
    problem = TorchProblem(
        model,
        loss_fn,
        X,
        y,
        steps=steps,
        batch_size=batch_size,
        optimizer=opt,
        seed=seed,
        dtype=dtype,
        coarse=coarse,
        max_ratio=max_ratio,
        sample=sample,
        coarse_options=coarse_options,
        device=device,
        compile=compile,
        batches=batches,
        lr_scheduler=lr_scheduler,
        lr_schedule=lr_schedule,
        clip_grad_norm=clip_grad_norm,
    )
    if problem.model.batchnorms:  # their running statistics follow from every step's weights
        c_points = options is not None and options.storage == "c-points"
        if keep != "all" or c_points:
            raise OptionError(
                "keep" if keep != "all" else "storage",
                keep if keep != "all" else "c-points",
                f"every step's state (keep='all', storage='full'): the running statistics of "
                f"{', '.join(problem.model.batchnorms)} are computed from the weights of every step",
            )
    if method == "mgrit" and options is None:
        if isinstance(levels, str) and levels != "auto":
            raise OptionError("levels", levels, 'an int >= 1, or "auto" (the cost model chooses)')
        given_tol = DEFAULT_TOL if tol is None else tol
        chosen = None
        if levels == "auto":  # the cost model's hierarchy from this problem's measured step costs
            chosen = choose(problem, SolverOptions(tol=given_tol), comm=comm)
        elif levels is None and cfactor is None and nested:  # no layout given: the cost model's from 512 steps
            chosen = auto_layout(problem, SolverOptions(tol=given_tol), comm=comm)
        if chosen is not None:
            options = chosen.options
        else:
            options = SolverOptions(
                levels=3 if levels is None else cast(int, levels),
                cfactor=4 if cfactor is None else cfactor,
                tol=given_tol,
                nested=nested,
            )
        if tol is None:  # the default: above the round-off floor of the dtype
            options = with_default_tol(options, problem)
    run = train(problem, method, options, callback, comm=comm, allow_unconverged=True, keep=keep)
    final = run.states[-1] if run.solver is None else run.solver.final_state
    stats = problem.running_stats(run.states[:-1]) if problem.model.batchnorms and run.whole else None
    out = FitResult(
        problem.model_at(final, stats),
        run.step_losses(),
        run.states,
        run.solver,
        run.wall_s,
        method,
        problem,
        run.points,
    )
    if run.solver is not None and not run.solver.converged and not allow_unconverged:
        err: NotConvergedError = not_converged(run.solver, out)
        raise err
    return out
