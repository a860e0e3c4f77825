"""A user's ``torch.nn.Module``, loss and data as a :class:`pintrain.mgrit.Problem`.

The fine step k is one optimizer step on the mini-batch ``schedule.batch(k)``: the gradient of
``loss_fn(model(X[batch]), y[batch])`` with respect to the trainable parameters, then the
optimizer's update (:mod:`pintrain.torch.optimizers`), exactly as a loop of ``loss.backward();
opt.step()`` would do.  Many independent states are stepped at once with ``torch.func.vmap`` over
``torch.func.grad`` of ``torch.func.functional_call``: one batched forward and backward pass.

Coarse steps (spacing m > 1), chosen by ``coarse``:

``union``
    The gradient of the m step losses at the start (one pass over the union of their batches),
    frozen, and m optimizer steps with it (:meth:`Optimizer.frozen`).  For plain SGD this is
    ``w - m lr g``, the numpy backend's ``union`` step.  Cheap; like explicit Euler with m times the
    learning rate, it fails when ``m * lr`` is past the loss's stability limit.
``split``
    The same over sub-intervals of at most ``max_ratio`` fine steps, each with the gradient of its
    own batches at the weights reached so far: ``ceil(m / max_ratio)`` passes, the same data in all.
    Stable wherever ``max_ratio * lr`` is, at the cost of sequential passes.

With ``sample=r``, a coarse gradient over m > r steps is estimated from r of their m batches,
spread evenly over the interval and weighted m / r: a coarse step then costs about r fine steps of
work instead of m.  MGRIT still converges to the serial answer (the coarse levels only have to
approximate); the iterations may grow as r shrinks.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..errors import OptionError, PintrainError, check_int, check_memory
from ..training.schedule import Schedule, check_steps, coarse_steps
from .optimizers import Optimizer

COARSE = ("union", "split")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


class UnsupportedModel(PintrainError):
    """The module cannot be trained as a deterministic evolution (the message says why)."""


def check_module(model: Any) -> None:
    """Refuse, with the reason, a module whose training step is not a pure function of the weights."""
    if not isinstance(model, nn.Module):
        raise UnsupportedModel(f"model must be a torch.nn.Module, not {type(model).__name__}")
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        raise UnsupportedModel(
            f"the module has buffers ({', '.join(buffers[:4])}{', ...' if len(buffers) > 4 else ''}), state that "
            "its forward pass updates (BatchNorm running statistics and the like); MGRIT evolves the weights and "
            "the optimizer state only. Use a normalisation without running statistics (LayerNorm, GroupNorm, or "
            "BatchNorm with track_running_stats=False)"
        )
    if model.training:
        random = [name or type(model).__name__ for name, mod in model.named_modules() if _is_random(mod)]
        if random:
            raise UnsupportedModel(
                f"the module has dropout ({', '.join(random[:4])}) and is in training mode: it draws new random "
                "numbers at every call, so a training step is not a function of the weights and the step index. "
                "Remove the dropout, or call model.eval() to turn it off"
            )
    if not any(p.requires_grad for p in model.parameters()):
        raise UnsupportedModel("the module has no trainable parameters (requires_grad=True)")


def _is_random(mod: nn.Module) -> bool:
    return isinstance(mod, nn.modules.dropout._DropoutNd | nn.RReLU)


class TorchProblem:
    """Training ``model`` on ``(X, y)`` with ``optimizer`` for ``steps`` steps, as an evolution.

    The state is ``[weights, optimizer slots, (t)]`` (:class:`Optimizer`); the model given is
    copied (converted to ``dtype``), never changed.  ``max_batch_samples`` bounds the samples one
    vectorised pass takes (rows are processed in chunks), to bound memory on coarse levels.
    """

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
        coarse: str = "union",
        max_ratio: int = 4,
        sample: int | None = None,
        max_batch_samples: int = 1 << 16,
        name: str = "torch",
        test_data: tuple[Any, Any] | None = None,
    ) -> None:
        check_module(model)
        check_int("steps", steps, 1)
        check_int("max_ratio", max_ratio, 1)
        check_int("max_batch_samples", max_batch_samples, 1)
        if sample is not None:
            check_int("sample", sample, 1, ", or None for all m batches")
        if coarse not in COARSE:
            raise OptionError("coarse", coarse, f"one of {', '.join(COARSE)}")
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise OptionError("dtype", dtype, '"float64" or "float32"')
            dtype = DTYPES[dtype]
        if dtype not in DTYPES.values():
            raise OptionError("dtype", dtype, "torch.float64 or torch.float32")
        if not callable(loss_fn):
            raise OptionError("loss_fn", loss_fn, "a callable loss_fn(output, target) -> scalar tensor")
        X, y = torch.as_tensor(X).cpu(), torch.as_tensor(y).cpu()
        if X.ndim < 1 or y.ndim < 1 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise OptionError(
                "data", f"X {tuple(X.shape)}, y {tuple(y.shape)}", "X and y with the same number (>0) of rows"
            )
        self.X = X.to(dtype) if X.is_floating_point() else X
        self.y = y.to(dtype) if y.is_floating_point() else y
        for label, data in (("X", self.X), ("y", self.y)):
            if data.is_floating_point() and not torch.isfinite(data).all():
                raise OptionError(label, "data with NaN/inf", "finite values")
        self.dtype = dtype
        self.model = copy.deepcopy(model).to(device="cpu", dtype=dtype)  # the adapter steps on the CPU
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.coarse = coarse
        self.max_ratio = int(max_ratio)
        self.sample = None if sample is None else int(sample)
        self.max_batch_samples = int(max_batch_samples)
        self.n_steps = int(steps)
        self.name = name
        self.test_data = test_data
        self.schedule = Schedule(X.shape[0], batch_size, seed)
        check_memory(
            self.n_steps * self.schedule.batch_size * 8, f"the batch table of {self.n_steps} steps", "use fewer steps"
        )
        self.table = torch.from_numpy(self.schedule.table(self.n_steps))
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.n_params = sum(self.sizes)
        with torch.no_grad():
            w0 = torch.cat([p.detach().reshape(-1) for _, p in named])
        if not torch.isfinite(w0).all():
            raise OptionError("model", "parameters with NaN/inf", "finite initial weights")
        self.u0 = optimizer.initial_state(w0).numpy().copy()
        self._grad_one = vmap(grad(self._loss_one))
        self._grad_union = vmap(grad(self._loss_union), in_dims=(0, 0, 0, None))
        self._loss_many = vmap(self._loss_one)
        try:
            self.step_many(np.stack([self.u0, self.u0]), np.zeros(2, dtype=np.int64), 1)
        except PintrainError:
            raise
        except Exception as err:
            raise UnsupportedModel(
                f"a training step of this module and loss failed under torch.func (functional_call, grad, "
                f"vmap): {type(err).__name__}: {err}. The loss must return a scalar, and the module must not "
                "use .item(), data-dependent Python control flow or in-place updates of its inputs"
            ) from err

    # -- pure functions of the flat weights ---------------------------------------------------
    def unflatten(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` views of a flat weight vector (or, under vmap, of one row)."""
        out, pos = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes, strict=True):
            out[name] = w[pos : pos + size].reshape(shape)
            pos += size
        return out

    def _loss_one(self, w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(functional_call(self.model, self.unflatten(w), (xb,)), yb)

    def _loss_union(self, w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, r: int) -> torch.Tensor:
        """Sum of r step losses: one forward pass over their batches, the loss on each step's part."""
        out = functional_call(self.model, self.unflatten(w), (xb,))
        b = out.shape[0] // r
        return vmap(self.loss_fn)(out.reshape(r, b, *out.shape[1:]), yb.reshape(r, b, *yb.shape[1:])).sum()

    def _batches(self, ks: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        """Inputs and targets of the batches standing for steps ``k .. k + m - 1`` (all, or
        ``sample`` of them: :func:`pintrain.training.schedule.coarse_steps`), their number r
        and the weight m / r of each."""
        check_steps(ks.numpy(), m, self.n_steps)
        steps, weight = coarse_steps(ks.numpy(), m, self.sample)
        idx = self.table[torch.from_numpy(steps)].reshape(ks.shape[0], -1)
        return self.X[idx], self.y[idx], steps.shape[1], weight

    def gradient_sum(self, W: torch.Tensor, ks: torch.Tensor, m: int) -> torch.Tensor:
        """``sum_{j<m} grad L_{k+j}(w)`` for every row of W (B, P), in chunks of rows (estimated
        from ``sample`` of the m batches, weighted m / sample, when ``sample`` is set)."""
        if self.schedule.full_batch and m > 1:  # m identical batches: one pass, times m
            check_steps(ks.numpy(), m, self.n_steps)
            return m * self.gradient_sum(W, ks, 1)
        per_row = min(m, self.sample or m) * self.schedule.batch_size
        chunk = max(1, self.max_batch_samples // per_row)
        parts = []
        for start in range(0, W.shape[0], chunk):
            xb, yb, r, weight = self._batches(ks[start : start + chunk], m)
            w = W[start : start + chunk]
            parts.append(self._grad_one(w, xb, yb) if m == 1 else weight * self._grad_union(w, xb, yb, r))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    # -- the Problem protocol -----------------------------------------------------------------
    def initial(self) -> np.ndarray:
        return self.u0.copy()

    def step_many(self, U: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        S = torch.from_numpy(np.ascontiguousarray(U, dtype=self.u0.dtype))
        k = torch.from_numpy(np.asarray(ks, dtype=np.int64).reshape(-1))
        P, opt = self.n_params, self.optimizer
        with torch.no_grad():
            if m == 1:
                return opt.fine(S, self.gradient_sum(S[:, :P], k, 1), k).numpy()
            if self.coarse == "union":
                return opt.frozen(S, self.gradient_sum(S[:, :P], k, m) / m, k, m).numpy()
            s = -(-m // self.max_ratio)
            offset = 0
            for r in np.diff(np.linspace(0, m, s + 1).round().astype(int)):
                r = int(r)
                S = opt.frozen(S, self.gradient_sum(S[:, :P], k + offset, r) / r, k + offset, r)
                offset += r
            return S.numpy()

    def step(self, u: np.ndarray, k: int, m: int) -> np.ndarray:
        return self.step_many(u[None, :], np.array([k]), m)[0]

    @property
    def divergence_hint(self) -> str:
        return (
            f"coarse propagator {self.coarse!r} takes steps of about m * lr on a level of spacing m "
            f"(lr = {self.optimizer.lr:g}); use coarse='split' (max_ratio={self.max_ratio}), fewer levels, "
            "a smaller cfactor or a smaller lr"
        )

    # -- the reference: the user's own loop -------------------------------------------------------
    def serial_torch(self) -> np.ndarray:
        """Serial training the usual way: a copy of the module, ``torch.optim``, ``loss.backward()``,
        ``opt.step()`` for every step; returns the state after every step as rows (weights and
        optimizer state packed as in the evolution), row 0 the initial state."""
        model = copy.deepcopy(self.model)
        params = [model.get_parameter(name) for name in self.names]
        opt = self.optimizer.torch_optimizer(params)
        out = np.empty((self.n_steps + 1, self.u0.size), dtype=self.u0.dtype)
        out[0] = self.u0
        for k in range(self.n_steps):
            idx = self.table[k]
            opt.zero_grad(set_to_none=True)
            self.loss_fn(model(self.X[idx]), self.y[idx]).backward()
            opt.step()
            out[k + 1] = self._pack(params, opt, k + 1)
        return out

    def _pack(self, params: list[nn.Parameter], opt: torch.optim.Optimizer, t: int) -> np.ndarray:
        with torch.no_grad():
            parts = [torch.cat([p.reshape(-1) for p in params])]
            names = {"momentum": ["momentum_buffer"], "nesterov": ["momentum_buffer"]}
            for slot in names.get(self.optimizer.name, ["exp_avg", "exp_avg_sq"] if self.optimizer.adam else []):
                parts.append(torch.cat([opt.state[p][slot].reshape(-1) for p in params]))
            if self.optimizer.adam:
                parts.append(torch.tensor([float(t)], dtype=self.dtype))
            return torch.cat(parts).numpy()

    # -- results -------------------------------------------------------------------------------
    def weights(self, state: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(state[: self.n_params]))

    def model_at(self, state: np.ndarray) -> nn.Module:
        """A copy of the module with the weights of ``state``."""
        out = copy.deepcopy(self.model)
        with torch.no_grad():
            for name, value in self.unflatten(self.weights(state)).items():
                out.get_parameter(name).copy_(value)
        return out

    def serial_states(self) -> np.ndarray:
        """The reference for :func:`pintrain.api.train`: :meth:`serial_torch`."""
        return self.serial_torch()

    def losses(self, states: np.ndarray) -> np.ndarray:
        """The training-loss curve reported for these states: :meth:`step_losses`."""
        return self.step_losses(states)

    def metrics(self, state: np.ndarray) -> dict[str, float]:
        """Accuracy on the training data (and on ``test_data``) of the weights in ``state``, for
        classifiers (integer labels); empty otherwise."""
        from .fit import accuracy

        if self.y.is_floating_point() or self.y.ndim != 1:
            return {}
        model = self.model_at(state)
        out = {"train_accuracy": accuracy(model, self.X, self.y)}
        if self.test_data is not None:
            out["test_accuracy"] = accuracy(model, *self.test_data)
        return out

    def step_losses(self, states: np.ndarray, chunk: int = 256) -> np.ndarray:
        """``L_k(w_k)``: the loss of step k's batch at the weights before step k, k = 0 .. len-2
        (what a training loop logs)."""
        n = min(states.shape[0] - 1, self.n_steps)
        out = np.empty(n)
        with torch.no_grad():
            for start in range(0, n, chunk):
                ks = torch.arange(start, min(n, start + chunk))
                W = torch.from_numpy(np.ascontiguousarray(states[start : start + len(ks), : self.n_params]))
                xb, yb = self._batches(ks, 1)[:2]
                out[start : start + len(ks)] = self._loss_many(W, xb, yb).numpy()
        return out

    def describe(self) -> dict[str, Any]:
        opt = self.optimizer
        return {
            "name": self.name,
            "module": type(self.model).__name__,
            "n_params": self.n_params,
            "state_size": int(self.u0.size),
            "dtype": str(self.dtype).replace("torch.", ""),
            "optimizer": {"name": opt.name, "lr": opt.lr, **opt.hyper},
            "schedule": self.schedule.describe(),
            "steps": self.n_steps,
            "coarse": self.coarse,
            "max_ratio": self.max_ratio,
            "sample": self.sample,
        }
