"""``nn.GRU``, ``nn.LSTM``, ``nn.LSTMCell`` and ``nn.GRUCell`` written out in plain tensor operations,
which ``torch.func.vmap`` can batch (the fused ``aten::gru``/``aten::lstm`` kernels have no batching
rule, and ``aten::gru_cell`` only a slow fallback).

:func:`unroll` swaps them into a copy of a user's module: the same parameters under the same names,
the same arithmetic up to round-off (``tests/test_recurrent.py``), so a module with recurrent layers
trains by MGRIT to the weights of the usual loop.  What the written-out layers cannot do the same
way is refused: ``proj_size`` (LSTM projections) and dropout between layers in training mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .layers import swap_layers


class _Unrolled(nn.Module):
    """Holds the parameters of the fused layer ``layer`` under its own names."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        for name, param in layer.named_parameters(recurse=False):
            self.register_parameter(name, param)

    def p(self, name: str) -> torch.Tensor:
        value: torch.Tensor = getattr(self, name)
        return value


class UnrolledRNN(_Unrolled):
    """A multi-layer GRU or LSTM (``mode``), batch-first or not, one or two directions."""

    def __init__(self, layer: nn.GRU | nn.LSTM) -> None:
        super().__init__(layer)
        self.mode = "GRU" if isinstance(layer, nn.GRU) else "LSTM"
        self.num_layers, self.hidden_size = layer.num_layers, layer.hidden_size
        self.batch_first, self.bias = layer.batch_first, layer.bias
        self.directions = 2 if layer.bidirectional else 1

    def _cell(self, x: torch.Tensor, state: Any, suffix: str) -> Any:
        h = state if self.mode == "GRU" else state[0]
        gi = x @ getattr(self, f"weight_ih{suffix}").T
        gh = h @ getattr(self, f"weight_hh{suffix}").T
        if self.bias:
            gi = gi + getattr(self, f"bias_ih{suffix}")
            gh = gh + getattr(self, f"bias_hh{suffix}")
        if self.mode == "GRU":
            return _gru(gi, gh, state)
        return _lstm(gi + gh, state)

    def forward(self, x: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, Any]:
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1 if not self.batch_first else 0)
        if self.batch_first:
            x = x.transpose(0, 1)  # (time, batch, features)
        steps, batch = x.shape[0], x.shape[1]
        n = self.num_layers * self.directions
        if hx is None:
            zeros = x.new_zeros(n, batch, self.hidden_size)
            hx = zeros if self.mode == "GRU" else (zeros, zeros)
        elif unbatched:
            hx = hx.unsqueeze(1) if self.mode == "GRU" else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        finals_h: list[Any] = []
        finals_c: list[Any] = []
        layer_in = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.directions):
                i = layer * self.directions + direction
                state = hx[i] if self.mode == "GRU" else (hx[0][i], hx[1][i])
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                order = range(steps - 1, -1, -1) if direction else range(steps)
                out: list[Any] = [None] * steps
                for t in order:
                    state = self._cell(layer_in[t], state, suffix)
                    out[t] = state if self.mode == "GRU" else state[0]
                outputs.append(torch.stack(out))
                finals_h.append(state if self.mode == "GRU" else state[0])
                if self.mode == "LSTM":
                    finals_c.append(state[1])
            layer_in = outputs[0] if self.directions == 1 else torch.cat(outputs, dim=-1)
        output = layer_in.transpose(0, 1) if self.batch_first else layer_in
        h_n = torch.stack(finals_h)
        final: Any = h_n if self.mode == "GRU" else (h_n, torch.stack(finals_c))
        if unbatched:
            output = output.squeeze(0 if self.batch_first else 1)
            final = final.squeeze(1) if self.mode == "GRU" else (final[0].squeeze(1), final[1].squeeze(1))
        return output, final


class UnrolledLSTMCell(_Unrolled):
    """``nn.LSTMCell`` in plain operations."""

    def __init__(self, cell: nn.LSTMCell) -> None:
        super().__init__(cell)
        self.hidden_size, self.bias = cell.hidden_size, cell.bias

    def forward(self, x: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        unbatched = x.dim() == 1
        if unbatched:
            x = x.unsqueeze(0)
        if hx is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            hx = (zeros, zeros)
        elif unbatched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        gates = x @ self.p("weight_ih").T + hx[0] @ self.p("weight_hh").T
        if self.bias:
            gates = gates + self.p("bias_ih") + self.p("bias_hh")
        h, c = _lstm(gates, hx)
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)


class UnrolledGRUCell(_Unrolled):
    """``nn.GRUCell`` in plain operations (vmap has only a slow fallback for ``aten::gru_cell``)."""

    def __init__(self, cell: nn.GRUCell) -> None:
        super().__init__(cell)
        self.hidden_size, self.bias = cell.hidden_size, cell.bias

    def forward(self, x: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        unbatched = x.dim() == 1
        if unbatched:
            x = x.unsqueeze(0)
        if hx is None:
            hx = x.new_zeros(x.shape[0], self.hidden_size)
        elif unbatched:
            hx = hx.unsqueeze(0)
        gi, gh = x @ self.p("weight_ih").T, hx @ self.p("weight_hh").T
        if self.bias:
            gi, gh = gi + self.p("bias_ih"), gh + self.p("bias_hh")
        h = _gru(gi, gh, hx)
        return h.squeeze(0) if unbatched else h


def _gru(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def _lstm(gates: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor]:
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def unroll(module: nn.Module) -> tuple[nn.Module, list[str]]:
    """``module`` with its GRU/LSTM layers and LSTM cells replaced (in place) by written-out ones,
    and the names of those replaced; a layer that cannot be written out the same way raises
    ``ValueError`` with the reason."""

    def swap(name: str, mod: nn.Module) -> nn.Module | None:
        if isinstance(mod, nn.GRU | nn.LSTM):
            if getattr(mod, "proj_size", 0):
                raise ValueError(f"{name}: nn.LSTM with proj_size is not supported")
            if mod.dropout and mod.training and mod.num_layers > 1:
                raise ValueError(
                    f"{name}: dropout between recurrent layers draws random numbers at every call; set dropout=0 "
                    "or call model.eval()"
                )
            return UnrolledRNN(mod)
        if isinstance(mod, nn.LSTMCell):
            return UnrolledLSTMCell(mod)
        if isinstance(mod, nn.GRUCell):
            return UnrolledGRUCell(mod)
        return None

    return swap_layers(module, swap)
