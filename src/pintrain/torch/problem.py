"""A user's ``torch.nn.Module``, loss, data and optimizer as a training problem.

:class:`TorchProblem` is :class:`pintrain.training.TrainingProblem` with a
:class:`~pintrain.torch.model.TorchModel` backend and the torch user's words for its settings:
the fine step k is one optimizer step on the mini-batch ``schedule.batch(k)``, exactly as a loop of
``loss.backward(); opt.step()`` would do, and the coarse propagators are the registry's
(:mod:`pintrain.training.propagators`); by default (``coarse="auto"``) ``curvature`` for the
optimizers with momentum (momentum, Nesterov, Adam, AdamW) and ``split`` for plain SGD.  With
``sample=r``, a coarse gradient over m > r steps is estimated from r of their m batches, spread
evenly and weighted m / r (``split``; ``auto`` then picks it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import OptionError, check_int
from ..training.optimizers import Optimizer
from ..training.problem import TrainingProblem
from ..training.schedule import GivenBatches, Schedule
from .chain import CHUNK, LoneSubInterval
from .model import DTYPES, TorchModel, UnsupportedModel, check_module, compile_failure, lr_table
from .update import COMPILED_MIN_ROWS, CompiledStep, CompiledSubInterval, CompiledUpdate

__all__ = ["DTYPES", "TorchProblem", "UnsupportedModel", "check_module"]


def _coarse_options(max_ratio: int, sample: int | None, more: dict[str, Any] | None) -> dict[str, Any]:
    """``max_ratio`` and ``sample`` with the other coarse options (``rank``, ``block``, ...) given as a dict."""
    if more is not None and not isinstance(more, dict):
        raise OptionError("coarse_options", more, "a dict of coarse options, e.g. {'rank': 4}")
    twice = sorted({"max_ratio", "sample"} & set(more or {}))
    if twice:
        raise OptionError("coarse_options", twice[0], "given as its own argument, not in coarse_options")
    return {"max_ratio": max_ratio, "sample": sample, **(more or {})}


class TorchProblem(TrainingProblem):
    """Training ``model`` on ``(X, y)`` with ``optimizer`` for ``steps`` steps, as an evolution.

    The state is ``[weights, optimizer slots, (t)]`` (:class:`~pintrain.training.Optimizer`); the
    model given is copied (converted to ``dtype``, moved to ``device``), never changed.  The solver
    keeps its level arrays as torch tensors on ``device``; results come back as numpy arrays.
    ``compile=True`` runs the batched gradients (:class:`TorchModel`) and the optimizer's update
    (:class:`~pintrain.torch.update.CompiledUpdate`) through ``torch.compile``.  ``coarse="auto"``
    (the default) is ``curvature`` for momentum, Nesterov, Adam and AdamW and ``split`` for plain SGD
    (:func:`~pintrain.training.propagators.default_coarse`); ``coarse_options`` the propagator's
    other options (``curvature``: ``rank``, ``block``).
    """

    model: TorchModel

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Any,
        X: Any,
        y: Any,
        *,
        steps: int,
        batch_size: int | None,
        optimizer: Optimizer,
        seed: int = 0,
        dtype: str | torch.dtype = "float64",
        coarse: str = "auto",
        max_ratio: int = 2,
        sample: int | None = None,
        coarse_options: dict[str, Any] | None = None,
        max_batch_samples: int = 1 << 16,
        name: str = "torch",
        test_data: tuple[Any, Any] | None = None,
        device: str | torch.device | None = None,
        batches: Any = None,
        lr_scheduler: Any = None,
        lr_schedule: Any = None,
        clip_grad_norm: float | None = None,
        compile: bool = False,
    ) -> None:
        backend = TorchModel(
            model,
            loss_fn,
            X,
            y,
            dtype=dtype,
            max_batch_samples=max_batch_samples,
            test_data=test_data,
            device=device,
            compile=compile,
        )
        if batches is not None:
            if isinstance(batches, torch.Tensor):
                batches = batches.cpu().numpy()
            schedule: Schedule = GivenBatches(backend.n_samples, [np.asarray(b) for b in batches])
            if batch_size is not None and batch_size != schedule.batch_size:
                raise OptionError(
                    "batch_size", batch_size, f"None or {schedule.batch_size}, the size of the batches given"
                )
        else:
            schedule = Schedule(backend.n_samples, batch_size, seed)
        if lr_scheduler is not None:
            if lr_schedule is not None:
                raise OptionError("lr_schedule", "given with lr_scheduler", "one of the two")
            check_int("steps", steps, 1)
            lr_schedule = lr_table(optimizer, lr_scheduler, steps)
        super().__init__(
            backend,
            schedule,
            optimizer,
            steps,
            coarse,
            name=name,
            lr_schedule=lr_schedule,
            clip_grad_norm=clip_grad_norm,
            **_coarse_options(max_ratio, sample, coarse_options),
        )
        if self.coarse in ("lagged", "curvature") and self.clip_grad_norm is None:  # the coarsest chain's unit
            self.lone_chain = LoneSubInterval(self)
        if compile:  # the update too: one fused kernel a call instead of a pass per operation
            self.compiled_update = CompiledUpdate(self.optimizer, self.ops)
            rows = COMPILED_MIN_ROWS  # a trial call the compiled path takes
            trial = self.ops.asarray(np.repeat(self.u0[None], rows, axis=0))
            try:
                grads = trial[:, : self.n_params]
                ks = np.arange(rows) % self.n_steps
                float(self.compiled_update.fine(trial, grads, ks, self.lrs).sum())
            except Exception as err:
                raise compile_failure(f"the {self.optimizer.name} update", err) from None
            if self.clip_grad_norm is None:  # the fine step of many rows: gradient and update in one graph
                self.compiled_step = CompiledStep(self)
                try:
                    with self.ops.no_grad():
                        float(self.compiled_step(trial, ks).sum())
                except Exception as err:
                    raise compile_failure(f"the fine step (gradient and {self.optimizer.name} update)", err) from None
                if self.coarse in ("lagged", "curvature"):  # their sub-intervals of many rows: one graph
                    self.compiled_sub_interval = CompiledSubInterval(self)
            if self.lone_chain is not None:
                self.lone_chain = LoneSubInterval(self, compiled=True)
                self._trial_lone_chain()

    def _trial_lone_chain(self) -> None:
        """Compile the coarsest chain's unit now (``CHUNK`` sub-intervals of ``max_ratio`` steps from
        u0, with a zero curvature table for ``curvature``), the same sub-intervals of many rows in one
        graph, and the curvature table's Hessian-vector products: refuse what cannot be compiled here,
        not in the middle of a solve, and compile before a solve is timed."""
        assert self.lone_chain is not None
        S = self.ops.asarray(self.u0[None])
        try:  # a whole chunk of sub-intervals (what a coarsest level's step of 16 or more steps takes)
            self.lone_chain.trial(S, min(CHUNK * self.max_ratio, self.n_steps), self.coarse == "curvature")
        except Exception as err:
            raise compile_failure(f"the {self.coarse} coarse step of one row", err) from None
        fused = self.compiled_sub_interval
        if fused is not None:  # the same sub-intervals of many rows
            rows = self.ops.asarray(np.repeat(self.u0[None], fused.min_rows, axis=0))
            try:
                with self.ops.no_grad():
                    fused.trial(rows, min(self.max_ratio, self.n_steps), self.coarse == "curvature")
            except Exception as err:
                raise compile_failure(f"the {self.coarse} coarse step of many rows", err) from None
        if self.coarse == "curvature":  # the table's products: one step's loss over the block's first r batches
            r = min(self.max_ratio, self.n_steps)
            V = S.new_zeros((self._curvature_shape()[0], self.n_params))
            try:
                float(self.model.hessian_vectors(S[0, : self.n_params], self.batches(np.array([0]), r), V).sum())
            except Exception as err:
                raise compile_failure("the Hessian-vector products of the curvature table", err) from None

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    def serial_torch(self) -> np.ndarray:
        """The usual torch.optim loop's states after every step (:meth:`TorchModel.serial_states`)."""
        return self.serial_states()

    def model_at(self, state: np.ndarray, stats: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """A copy of the module with the weights of ``state`` (and BatchNorm buffers ``stats``)."""
        return self.model.module_at(self._weights_on_device(state), stats)

    def running_stats(self, states: np.ndarray) -> dict[str, torch.Tensor]:
        """The BatchNorm running statistics after the steps that start from the rows of ``states``
        (steps 0, 1, ...): :meth:`TorchModel.running_stats` on this problem's batches."""
        return self.model.running_stats(self._weights_on_device(states), self.batch_table)

    def _weights_on_device(self, states: np.ndarray) -> torch.Tensor:
        return self.ops.asarray(np.ascontiguousarray(self.weights(states)))
