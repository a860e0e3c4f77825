"""``nn.AvgPool2d`` written as a reshape and a mean, for the compiled batched steps on a CPU.

Under ``vmap`` over the rows' weights, inductor's code for ``avg_pool2d`` and its backward on a CPU
cost more than the rest of a small CNN's step: the digits CNN's batched gradient (float32, 128 rows,
one thread) took 255 us a row as given and 132 with its pool as a reshape and a mean, and a
two-layer CNN on 28x28 images 6.7 and 5.4 ms a row (``benchmarks/cnn_step.py``,
docs/performance.md).  Eager it is the other way round (241 against 361 us a row), so only a
compiled problem on a CPU takes it (:class:`~pintrain.torch.model.TorchModel`), in its stepped copy
of the module; the module handed back keeps the user's layers.  The same function: a pool whose
stride is its kernel, without padding, floors the map to whole windows and averages each, which is
what the mean over the reshaped windows computes (to rounding: the order of the window's sum).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import swap_layers


class MeanPool2d(nn.Module):
    """Average pooling over whole ``kernel`` windows (stride = kernel, no padding, the map floored
    to whole windows, as ``nn.AvgPool2d``), as a reshape and a mean; batched or unbatched input."""

    def __init__(self, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel
        h, w = x.shape[-2] // kh, x.shape[-1] // kw
        x = x[..., : h * kh, : w * kw]
        return x.reshape(*x.shape[:-2], h, kh, w, kw).mean((-3, -1))

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}"


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def poolable(mod: nn.Module) -> bool:
    """Whether ``mod`` is an ``nn.AvgPool2d`` that :class:`MeanPool2d` computes: stride equal to
    the kernel, no padding, no ceil mode, no divisor override."""
    if not isinstance(mod, nn.AvgPool2d):
        return False
    kernel = _pair(mod.kernel_size)
    stride = kernel if mod.stride is None else _pair(mod.stride)
    return stride == kernel and _pair(mod.padding) == (0, 0) and not mod.ceil_mode and mod.divisor_override is None


def mean_pools(module: nn.Module) -> tuple[nn.Module, list[str]]:
    """``module`` with its :func:`poolable` ``nn.AvgPool2d`` layers replaced (in place) by
    :class:`MeanPool2d`, and the names of those replaced (no parameters or buffers change)."""

    def swap(_: str, mod: nn.Module) -> nn.Module | None:
        return MeanPool2d(_pair(mod.kernel_size)) if poolable(mod) else None  # type: ignore[arg-type]

    return swap_layers(module, swap)
