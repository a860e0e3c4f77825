"""Optimizers as evolutions: one step of SGD, momentum, Nesterov, Adam or AdamW on a batch of flat states.

The evolved state of a training run is ``[w, slots..., (t)]`` packed in one vector: the P weights,
then the optimizer's P-sized slots (SGD: none; momentum and Nesterov: the momentum buffer; Adam and
AdamW: the first and second moments), then, for Adam/AdamW, the step count t (as torch.optim keeps
it in ``state["step"]``).  Each optimizer is a small frozen record of validated hyper-parameters
with a pure update (in the spirit of optax's ``(init, update)`` pairs), written once against the
array namespace :mod:`.arrays`, so it runs on numpy arrays and on torch tensors alike:

- ``init(w0)``: the state before the first step (torch.optim's empty state);
- ``fine(S, G, k)``: one step at global steps ``k`` with the gradients ``G`` of the step losses;
  it equals ``torch.optim``'s step (same formulas, same order of operations), which
  ``tests/test_torch.py`` checks against ``torch.optim`` itself;
- ``frozen(S, G_sum, k, m)``: the m steps from k to k + m with the gradient frozen at its value at
  the start (``G_sum`` is the sum of the m step-loss gradients there): the coarse step behind the
  ``union`` propagator.  For plain SGD this is ``w - lr * G_sum``; for the others the optimizer's
  own recurrence runs m times on the mean gradient (elementwise work, no forward or backward pass).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..arrays import NUMPY, ArrayOps
from ..errors import OptionError


def _check_lr(lr: object) -> None:
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise OptionError("lr", lr, "a positive finite float")


def _check_unit(name: str, value: object, low_open: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value < 1
    ok = ok and (value > 0 if low_open else value >= 0)  # type: ignore[operator]
    if not ok:
        raise OptionError(name, value, f"a float in {'(0' if low_open else '[0'}, 1)")


def _check_decay(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value >= 0):
        raise OptionError("weight_decay", value, "a float >= 0")


@dataclass(frozen=True)
class Optimizer(ABC):
    """An optimizer as an evolution of ``[w, slots..., (t)]``; subclasses validate their own fields."""

    lr: float

    name: ClassVar[str]
    slots: ClassVar[int] = 0  # P-sized state slots after the weights
    counts_steps: ClassVar[bool] = False  # a step count t at the end of the state
    torch_slots: ClassVar[tuple[str, ...]] = ()  # torch.optim's names of the slots, in order

    def __post_init__(self) -> None:
        _check_lr(self.lr)
        object.__setattr__(self, "lr", float(self.lr))

    @property
    def adam(self) -> bool:
        return self.counts_steps

    @property
    def hyper(self) -> dict[str, Any]:
        """The hyper-parameters besides the learning rate (for descriptions and JSON)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "lr"}

    def with_lr(self, lr: float) -> Optimizer:
        return dataclasses.replace(self, lr=lr)

    def state_size(self, n_params: int) -> int:
        return n_params * (1 + self.slots) + (1 if self.counts_steps else 0)

    def init(self, w0: Any, ops: ArrayOps = NUMPY) -> Any:
        """``[w0, zeros...]`` for one flat weight vector (1-D, of the backend of ``ops``)."""
        extra = self.state_size(w0.shape[0]) - w0.shape[0]
        row = w0.reshape(1, -1)
        return ops.concat([row, ops.zeros((1, extra), row)]).reshape(-1)

    def split(self, S: Any, n_params: int) -> list[Any]:
        """Views ``[w, slot_1, ..., (t)]`` of a batch of states ``S`` (B, state_size)."""
        parts = [S[:, i * n_params : (i + 1) * n_params] for i in range(1 + self.slots)]
        if self.counts_steps:
            parts.append(S[:, -1:])
        return parts

    def fine(
        self, S: Any, G: Any, k: Any, ops: ArrayOps = NUMPY, lrs: np.ndarray | None = None, out: Any = None
    ) -> Any:
        """One step at global steps ``k`` (B,) (a numpy int array) with gradients ``G`` (B, P); returns
        the new states (written into ``out`` when given).  ``lrs``: the learning rate of every step
        (a schedule's table, indexed by the step), or None for the constant ``lr``."""
        parts = self.apply(self.split(S, G.shape[1]), G, self.fine_coefficients(S, k, ops, lrs), ops)
        if len(parts) > 1:
            return ops.concat(parts, out)
        if out is None:
            return parts[0]
        out[...] = parts[0]
        return out

    def fine_coefficients(self, S: Any, k: Any, ops: ArrayOps, lrs: np.ndarray | None) -> tuple[Any, ...]:
        """The per-row numbers of the steps at ``k`` (:meth:`coefficients`) for states ``S``."""
        return self.coefficients(k, ops, S, None if lrs is None else lrs[k])

    def frozen(self, S: Any, G_sum: Any, k: Any, m: int, ops: ArrayOps = NUMPY, lrs: np.ndarray | None = None) -> Any:
        """m steps from global steps ``k`` with the gradient frozen at ``G_sum / m`` (and the weight
        decay frozen at the first step's weights, except AdamW's decoupled decay); new states.
        ``lrs`` as for :meth:`fine`: each of the m steps takes its own step's learning rate."""
        return self.frozen_apply(S, G_sum, self.frozen_coefficients(S, k, m, ops, lrs), ops)

    def frozen_coefficients(
        self, S: Any, k: Any, m: int, ops: ArrayOps, lrs: np.ndarray | None
    ) -> list[tuple[Any, ...]]:
        """The coefficients of each of the m frozen steps from ``k``."""
        return [self.coefficients(k + j, ops, S, None if lrs is None else lrs[k + j]) for j in range(m)]

    def frozen_apply(self, S: Any, G_sum: Any, coefficients: list[tuple[Any, ...]], ops: ArrayOps) -> Any:
        """:meth:`frozen` from the steps' coefficients: array arithmetic only (what a compiled update traces)."""
        parts = self.split(S, G_sum.shape[1])
        G = G_sum / len(coefficients)
        if self.coupled_decay:
            G = G + self.weight_decay * parts[0]  # type: ignore[attr-defined]
        for c in coefficients:
            parts = self.apply(parts, G, c, ops, decay=False)
        return parts[0] if len(parts) == 1 else ops.concat(parts)

    def fine_apply(self, S: Any, G: Any, coefficients: tuple[Any, ...], ops: ArrayOps) -> Any:
        """:meth:`fine` from its coefficients, as one new array: array arithmetic only."""
        parts = self.apply(self.split(S, G.shape[1]), G, coefficients, ops)
        return parts[0] if len(parts) == 1 else ops.concat(parts)

    def rate(self, lr: np.ndarray | None, like: Any, ops: ArrayOps) -> Any:
        """The learning rate of a step: ``self.lr``, or a (B, 1) column of the rows' own rates."""
        return self.lr if lr is None else ops.column(lr, like)

    @property
    def coupled_decay(self) -> bool:
        """Whether weight decay enters through the gradient (``g + wd * w``), as torch.optim's SGD and Adam."""
        return bool(getattr(self, "weight_decay", 0.0))

    def update(
        self, parts: list[Any], g: Any, k: Any, ops: ArrayOps, decay: bool = True, lr: np.ndarray | None = None
    ) -> list[Any]:
        """The new ``[w, slots..., (t)]`` after one step (pure); ``decay=False`` when ``g`` already holds
        the coupled weight decay; ``lr``: each row's learning rate (numpy, (B,)), or None for ``lr``."""
        return self.apply(parts, g, self.coefficients(k, ops, parts[0], lr), ops, decay)

    def preconditioner(self, S: Any, n_params: int, k: int, ops: ArrayOps) -> Any:
        """The diagonal D by which the step scales the gradient, per row of states ``S`` before step k
        (B, n_params: ones; Adam: ``1 / (sqrt(v_hat) + eps)``), for the ``curvature`` coarse step."""
        return S[:, :n_params] * 0 + 1

    @abstractmethod
    def coefficients(self, k: Any, ops: ArrayOps, like: Any, lr: np.ndarray | None) -> tuple[Any, ...]:
        """The numbers of the steps at global steps ``k`` (B,) that are not arrays of the state: the
        rate and, by optimizer, bias corrections, the step count, a first-step mask: Python floats or
        (B, 1) columns of ``like``'s backend, from numpy tables (so a row's value never depends on
        the other rows)."""

    @abstractmethod
    def apply(self, parts: list[Any], g: Any, c: tuple[Any, ...], ops: ArrayOps, decay: bool = True) -> list[Any]:
        """The new ``[w, slots..., (t)]`` from ``parts``, gradient ``g`` and :meth:`coefficients` ``c``:
        array arithmetic only, the same operations in the same order as torch.optim's step."""

    def torch_optimizer(self, params: Any) -> Any:
        """The matching ``torch.optim`` optimizer over ``params``."""
        import torch

        return self._torch(torch.optim, params)

    @abstractmethod
    def _torch(self, optim: Any, params: Any) -> Any: ...


@dataclass(frozen=True)
class SGD(Optimizer):
    """``torch.optim.SGD(lr, weight_decay)``: ``w - lr * (g + wd * w)``."""

    weight_decay: float = 0.0
    name: ClassVar[str] = "sgd"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_decay(self.weight_decay)

    def coefficients(self, k: Any, ops: ArrayOps, like: Any, lr: np.ndarray | None) -> tuple[Any, ...]:
        return (self.rate(lr, like, ops),)

    def apply(self, parts: list[Any], g: Any, c: tuple[Any, ...], ops: ArrayOps, decay: bool = True) -> list[Any]:
        w = parts[0]
        if self.weight_decay and decay:
            g = g + self.weight_decay * w
        return [w - c[0] * g]

    def fine(
        self, S: Any, G: Any, k: Any, ops: ArrayOps = NUMPY, lrs: np.ndarray | None = None, out: Any = None
    ) -> Any:
        # the state is the weights: no split and join (a lone step of a small network is all overhead)
        new = self.fine_apply(S, G, self.fine_coefficients(S, k, ops, lrs), ops)
        if out is None:
            return new
        out[...] = new
        return out

    def fine_apply(self, S: Any, G: Any, coefficients: tuple[Any, ...], ops: ArrayOps) -> Any:
        return S - coefficients[0] * (G + self.weight_decay * S if self.weight_decay else G)

    def frozen(self, S: Any, G_sum: Any, k: Any, m: int, ops: ArrayOps = NUMPY, lrs: np.ndarray | None = None) -> Any:
        # m steps with one frozen gradient are one step of the summed rate: w - lr * (G_sum + m wd w)
        if lrs is not None:  # w - (sum_j lr_j) (G_sum / m + wd w)
            total = lrs[np.asarray(k)[:, None] + np.arange(m)].sum(axis=1)
            G = G_sum / m + self.weight_decay * S if self.weight_decay else G_sum / m
            return S - ops.column(total, S) * G
        if self.weight_decay:
            G_sum = G_sum + (m * self.weight_decay) * S
        return S - self.lr * G_sum

    def _torch(self, optim: Any, params: Any) -> Any:
        return optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay)


@dataclass(frozen=True)
class Momentum(SGD):
    """``torch.optim.SGD(lr, momentum, dampening, weight_decay, nesterov)`` (heavy ball or Nesterov)."""

    momentum: float = 0.9
    dampening: float = 0.0
    nesterov: bool = False
    slots: ClassVar[int] = 1
    torch_slots: ClassVar[tuple[str, ...]] = ("momentum_buffer",)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "nesterov" if self.nesterov else "momentum"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_unit("momentum", self.momentum, low_open=True)
        _check_unit("dampening", self.dampening, low_open=False)
        if self.nesterov and self.dampening:
            raise OptionError("dampening", self.dampening, "0 with nesterov (as torch.optim.SGD requires)")

    def coefficients(self, k: Any, ops: ArrayOps, like: Any, lr: np.ndarray | None) -> tuple[Any, ...]:
        first = ops.column(np.asarray(k) == 0, like) > 0  # torch.optim starts the buffer at the first gradient
        return (self.rate(lr, like, ops), first)

    def apply(self, parts: list[Any], g: Any, c: tuple[Any, ...], ops: ArrayOps, decay: bool = True) -> list[Any]:
        w, buf = parts
        rate, first = c
        if self.weight_decay and decay:
            g = g + self.weight_decay * w
        buf = ops.where(first, g, buf * self.momentum + (1 - self.dampening) * g)
        step = g + self.momentum * buf if self.nesterov else buf
        return [w - rate * step, buf]

    fine = Optimizer.fine
    fine_apply = Optimizer.fine_apply
    frozen = Optimizer.frozen

    def _torch(self, optim: Any, params: Any) -> Any:
        return optim.SGD(
            params,
            lr=self.lr,
            momentum=self.momentum,
            dampening=self.dampening,
            weight_decay=self.weight_decay,
            nesterov=self.nesterov,
        )


@dataclass(frozen=True)
class Adam(Optimizer):
    """``torch.optim.Adam`` (or ``AdamW`` with ``decoupled=True``: ``w * (1 - lr wd)`` before the step)."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    slots: ClassVar[int] = 2
    counts_steps: ClassVar[bool] = True
    torch_slots: ClassVar[tuple[str, ...]] = ("exp_avg", "exp_avg_sq")

    @property
    def name(self) -> str:  # type: ignore[override]
        return "adamw" if self.decoupled else "adam"

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            betas = tuple(float(b) for b in self.betas)
        except (TypeError, ValueError):
            betas = ()
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise OptionError("betas", self.betas, "two floats in [0, 1)")
        object.__setattr__(self, "betas", betas)
        if not (isinstance(self.eps, int | float) and math.isfinite(self.eps) and self.eps > 0):
            raise OptionError("eps", self.eps, "a positive float")
        _check_decay(self.weight_decay)

    @property
    def coupled_decay(self) -> bool:
        return bool(self.weight_decay) and not self.decoupled

    def coefficients(self, k: Any, ops: ArrayOps, like: Any, lr: np.ndarray | None) -> tuple[Any, ...]:
        # t and the bias corrections per row from a table of Python floats, as torch.optim computes
        # them (and so that a row's result cannot depend on the other rows: a vectorised pow over a
        # contiguous batch rounds its tail differently from its body)
        b1, b2 = self.betas
        steps = np.asarray(k, dtype=np.int64) + 1
        bc1, roots = _adam_tables(b1, b2, 1 << int(steps.max(initial=1)).bit_length())
        rate = self.lr if lr is None else lr
        t = ops.column(steps.astype(np.float64), like)
        step_size = ops.column(rate / bc1[steps], like)  # torch.optim: lr / bias_correction1, Python floats
        bc2_sqrt = ops.column(roots[steps], like)
        keep = None  # AdamW's decoupled decay: w * (1 - lr wd)
        if self.weight_decay and self.decoupled:
            keep = 1 - rate * self.weight_decay if lr is None else ops.column(1 - rate * self.weight_decay, like)
        return (step_size, bc2_sqrt, t, keep)

    def preconditioner(self, S: Any, n_params: int, k: int, ops: ArrayOps) -> Any:
        v = self.split(S, n_params)[2]
        b2 = self.betas[1]
        return 1.0 / (ops.sqrt(ops.clamp_min(v, 0.0) / (1 - b2 ** max(k, 1))) + self.eps)

    def apply(self, parts: list[Any], g: Any, c: tuple[Any, ...], ops: ArrayOps, decay: bool = True) -> list[Any]:
        w, m1, m2, _ = parts
        step_size, bc2_sqrt, t, keep = c
        b1, b2 = self.betas
        if self.weight_decay:
            if self.decoupled:  # AdamW decays in every step, frozen gradient or not
                w = w * keep
            elif decay:
                g = g + self.weight_decay * w
        m1 = ops.lerp(m1, g, 1 - b1)  # torch.optim's exp_avg.lerp_(grad, 1 - beta1)
        # a coarse-grid correction can leave a second moment slightly negative; serial training never does
        m2 = ops.addcmul(ops.clamp_min(m2, 0.0) * b2, g, g, 1 - b2)  # exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
        denom = ops.sqrt(m2) / bc2_sqrt + self.eps
        return [w - step_size * (m1 / denom), m1, m2, t]

    def _torch(self, optim: Any, params: Any) -> Any:
        cls = optim.AdamW if self.decoupled else optim.Adam
        return cls(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)


@functools.lru_cache(maxsize=16)
def _adam_tables(b1: float, b2: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``1 - b1**t`` and ``sqrt(1 - b2**t)`` for t = 0 .. n - 1 (t = 0 unused), each a Python float
    computation as in torch.optim's Adam."""
    t = range(1, n)
    bc1 = np.array([np.nan] + [1 - b1**j for j in t])
    roots = np.array([np.nan] + [(1 - b2**j) ** 0.5 for j in t])
    return bc1, roots


OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw")
_MATH_FREE = {"foreach", "fused", "capturable", "differentiable"}  # torch.optim's implementation choices
_ALLOWED = {
    "sgd": {"weight_decay", "momentum", "dampening", "nesterov"},
    "momentum": {"momentum", "dampening", "weight_decay"},
    "nesterov": {"momentum", "weight_decay"},
    "adam": {"betas", "eps", "weight_decay", "amsgrad", "maximize"},
    "adamw": {"betas", "eps", "weight_decay", "amsgrad", "maximize"},
}
_TORCH_CLASSES = {"SGD": "sgd", "Adam": "adam", "AdamW": "adamw"}


def make_optimizer(name: Any, lr: float, **hyper: Any) -> Optimizer:
    """An optimizer from torch.optim's names for it and its hyper-parameters.

    ``name`` is ``"sgd"`` (weight_decay; with ``momentum > 0`` heavy ball, ``dampening``,
    ``nesterov=True``, exactly as ``torch.optim.SGD``), ``"momentum"`` (momentum=0.9, dampening,
    weight_decay), ``"nesterov"`` (momentum=0.9, weight_decay), ``"adam"`` (betas, eps,
    weight_decay), ``"adamw"`` (betas, eps, weight_decay=0.01, decoupled as in torch.optim.AdamW),
    or the class itself: ``torch.optim.SGD``, ``torch.optim.Adam``, ``torch.optim.AdamW``.
    torch.optim's implementation switches (foreach, fused, capturable, differentiable) are
    accepted and change nothing; amsgrad and maximize are refused (not built).
    """
    if isinstance(name, Optimizer):
        if hyper:
            raise OptionError("optimizer", name, "a name or class when hyper-parameters are given")
        return name
    if isinstance(name, type):
        cls = name
        if not cls.__module__.startswith("torch.optim") or cls.__name__ not in _TORCH_CLASSES:
            raise OptionError(
                "optimizer", cls.__name__, "torch.optim.SGD, torch.optim.Adam or torch.optim.AdamW (or their names)"
            )
        name = _TORCH_CLASSES[cls.__name__]
    if name not in OPTIMIZER_NAMES:
        raise OptionError("optimizer", name, f"one of {', '.join(OPTIMIZER_NAMES)}, or torch.optim.SGD/Adam/AdamW")
    unknown = set(hyper) - _ALLOWED[name] - _MATH_FREE
    if unknown:
        from ..errors import PintrainError

        raise PintrainError(
            f"optimizer {name!r} takes {', '.join(sorted(_ALLOWED[name]))}, not {', '.join(sorted(unknown))}"
        )
    hyper = {k: v for k, v in hyper.items() if k not in _MATH_FREE}
    for flag in ("amsgrad", "maximize"):
        if hyper.pop(flag, False):
            raise OptionError(flag, True, "False: pintrain's Adam evolves the plain torch.optim update")
    _check_lr(lr)
    if name == "sgd":
        momentum = hyper.pop("momentum", 0.0)
        if momentum:
            return Momentum(lr, momentum=momentum, **hyper)
        if hyper.pop("nesterov", False) or hyper.get("dampening"):
            raise OptionError("nesterov" if "dampening" not in hyper else "dampening", True,
                              "used with momentum > 0 (as torch.optim.SGD requires)")  # fmt: skip
        hyper.pop("dampening", None)
        return SGD(lr, **hyper)
    if name in ("momentum", "nesterov"):
        return Momentum(lr, nesterov=name == "nesterov", **hyper)
    if name == "adamw":
        hyper.setdefault("weight_decay", 0.01)
    return Adam(lr, decoupled=name == "adamw", **hyper)
