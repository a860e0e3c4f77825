"""Swapping layers of the stepped copy of a user's module (:func:`swap_layers`): the walk that
:func:`~pintrain.torch.recurrent.unroll` (recurrent layers vmap can batch) and
:func:`~pintrain.torch.pooling.mean_pools` (average pools a compiled CPU step takes cheaper) share."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def swap_layers(module: nn.Module, swap: Callable[[str, nn.Module], nn.Module | None]) -> tuple[nn.Module, list[str]]:
    """``module`` with every layer for which ``swap(name, layer)`` gives a replacement replaced (in
    place; the module itself too, named "model", which is then returned in its place), and the
    names of those replaced."""
    if (root := swap("model", module)) is not None:
        return root, ["(the module itself)"]
    swapped: list[str] = []
    for name, child in list(module.named_modules()):
        for sub_name, sub in list(child.named_children()):
            full = f"{name}.{sub_name}" if name else sub_name
            new = swap(full, sub)
            if new is not None:
                setattr(child, sub_name, new)
                swapped.append(full)
    return module, swapped
