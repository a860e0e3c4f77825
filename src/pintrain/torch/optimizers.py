"""Optimizers as evolutions: one step of ``torch.optim.<X>`` on a batch of flat state vectors.

The evolved state of a training run is ``[w, slots..., t]`` packed in one vector: the P weights,
then the optimizer's P-sized slots (SGD: none; momentum and Nesterov: the momentum buffer; Adam and
AdamW: the first and second moments), then, for Adam/AdamW, the step count t (as torch.optim keeps
it in ``state["step"]``).  ``fine(S, G, k)`` is one step at global step k with gradient G of the
step's loss; it equals ``torch.optim``'s step (same formulas, same order of operations), which
``tests/test_torch.py`` checks against ``torch.optim`` itself.

``frozen(S, G, k, m)`` is the coarse step behind the ``union`` propagator: the m optimizer steps
from k to k + m with the gradient frozen at its value at the start, ``G`` being the mean gradient
of the m step losses there.  For plain SGD it is the ``union`` step
``w - m lr g``; for the others the optimizer's own recurrences run m times on that one gradient
(cheap: elementwise work on P-vectors, no forward or backward pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import OptionError, PintrainError


@dataclass(frozen=True)
class Optimizer:
    """An optimizer's name and hyper-parameters; see :func:`make_optimizer`."""

    name: str
    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    hyper: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def slots(self) -> int:
        """Number of P-sized state slots after the weights."""
        return {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2}[self.name]

    @property
    def adam(self) -> bool:
        return self.name in ("adam", "adamw")

    def state_size(self, n_params: int) -> int:
        return n_params * (1 + self.slots) + (1 if self.adam else 0)

    def initial_state(self, w0: torch.Tensor) -> torch.Tensor:
        """``[w0, zeros...]``: the state before the first step (torch.optim's empty state)."""
        return torch.cat([w0, w0.new_zeros(self.state_size(w0.numel()) - w0.numel())])

    def torch_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The matching ``torch.optim`` optimizer over ``params``."""
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.name in ("momentum", "nesterov"):
            return torch.optim.SGD(
                params,
                lr=self.lr,
                momentum=self.momentum,
                dampening=self.dampening,
                weight_decay=self.weight_decay,
                nesterov=self.nesterov,
            )
        cls = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        return cls(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)

    # -- the evolution -------------------------------------------------------------------------
    def split(self, S: torch.Tensor, n_params: int) -> list[torch.Tensor]:
        """Views ``[w, slot_1, ..., (t)]`` of a batch of states ``S`` (B, state_size)."""
        parts = [S[:, i * n_params : (i + 1) * n_params] for i in range(1 + self.slots)]
        if self.adam:
            parts.append(S[:, -1:])
        return parts

    def fine(self, S: torch.Tensor, G: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """One step at global steps ``k`` (B,) with gradients ``G`` (B, P); returns new states."""
        S = S.clone()
        parts = self.split(S, G.shape[1])
        self._step(parts, G, k)
        return S

    def frozen(self, S: torch.Tensor, G: torch.Tensor, k: torch.Tensor, m: int) -> torch.Tensor:
        """m steps from global steps ``k`` with the gradient frozen at ``G`` (the weight-decay term
        too is frozen at the first step's weights); returns new states."""
        S = S.clone()
        parts = self.split(S, G.shape[1])
        if self.weight_decay and self.name != "adamw":
            G = G + self.weight_decay * parts[0]
        for j in range(m):
            self._step(parts, G, k + j, decay=self.name == "adamw")
        return S

    def _step(self, parts: list[torch.Tensor], g: torch.Tensor, k: torch.Tensor, decay: bool = True) -> None:
        """One step in place on the views ``parts``; ``decay=False`` when ``g`` already holds it."""
        w = parts[0]
        lr, wd = self.lr, self.weight_decay
        if self.name in ("sgd", "momentum", "nesterov"):
            if wd and decay:
                g = g.add(w, alpha=wd)
            if self.name != "sgd":
                buf = parts[1]
                first = (k == 0).reshape(-1, 1)  # torch.optim starts the buffer at the first gradient
                new = buf.mul(self.momentum).add_(g, alpha=1 - self.dampening)
                buf.copy_(torch.where(first, g, new))
                g = g.add(buf, alpha=self.momentum) if self.nesterov else buf
            w.add_(g, alpha=-lr)
            return
        m1, m2, t = parts[1], parts[2], parts[3]
        b1, b2 = self.betas
        t.copy_((k + 1).reshape(-1, 1).to(t.dtype))
        if wd:
            if self.name == "adamw":
                if decay:
                    w.mul_(1 - lr * wd)
            elif decay:
                g = g.add(w, alpha=wd)
        m1.lerp_(g, 1 - b1)
        # a coarse-grid correction can leave a second moment slightly negative; serial training never does
        m2.clamp_(min=0.0).mul_(b2).addcmul_(g, g, value=1 - b2)
        step_size = lr / (1 - b1**t)  # (B, 1): t differs from row to row
        denom = (m2.sqrt() / torch.sqrt(1 - b2**t)).add_(self.eps)
        w.sub_(step_size * (m1 / denom))


OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw")
_ALLOWED = {
    "sgd": {"weight_decay"},
    "momentum": {"momentum", "dampening", "weight_decay"},
    "nesterov": {"momentum", "weight_decay"},
    "adam": {"betas", "eps", "weight_decay"},
    "adamw": {"betas", "eps", "weight_decay"},
}


def make_optimizer(name: str, lr: float, **hyper: Any) -> Optimizer:
    """An :class:`Optimizer` from torch.optim's names for its hyper-parameters.

    ``"sgd"`` (weight_decay), ``"momentum"`` (momentum=0.9, dampening, weight_decay),
    ``"nesterov"`` (momentum=0.9, weight_decay), ``"adam"`` (betas, eps, weight_decay),
    ``"adamw"`` (betas, eps, weight_decay=0.01, decoupled as in torch.optim.AdamW).
    """
    if name not in OPTIMIZER_NAMES:
        raise OptionError("optimizer", name, f"one of {', '.join(OPTIMIZER_NAMES)}")
    unknown = set(hyper) - _ALLOWED[name]
    if unknown:
        raise PintrainError(
            f"optimizer {name!r} takes {', '.join(sorted(_ALLOWED[name]))}, not {', '.join(sorted(unknown))}"
        )
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise OptionError("lr", lr, "a positive finite float")
    kw: dict[str, Any] = {"name": name, "lr": float(lr), "hyper": dict(hyper)}
    if name in ("momentum", "nesterov"):
        kw["momentum"] = float(hyper.get("momentum", 0.9))
        kw["dampening"] = float(hyper.get("dampening", 0.0))
        kw["nesterov"] = name == "nesterov"
        if not 0 < kw["momentum"] < 1:
            raise OptionError("momentum", kw["momentum"], "a float in (0, 1)")
        if not 0 <= kw["dampening"] < 1:
            raise OptionError("dampening", kw["dampening"], "a float in [0, 1)")
    if name in ("adam", "adamw"):
        betas = tuple(float(b) for b in hyper.get("betas", (0.9, 0.999)))
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise OptionError("betas", hyper.get("betas"), "two floats in [0, 1)")
        kw["betas"] = betas
        kw["eps"] = float(hyper.get("eps", 1e-8))
        if not kw["eps"] > 0:
            raise OptionError("eps", kw["eps"], "a positive float")
    kw["weight_decay"] = float(hyper.get("weight_decay", 0.01 if name == "adamw" else 0.0))
    if not (math.isfinite(kw["weight_decay"]) and kw["weight_decay"] >= 0):
        raise OptionError("weight_decay", kw["weight_decay"], "a float >= 0")
    return Optimizer(**kw)
