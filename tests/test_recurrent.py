"""Recurrent modules (nn.GRU, nn.LSTM, nn.LSTMCell, GRUCell unrolled by hand) train by MGRIT to the
weights of the usual loop: the fused layers are swapped for written-out ones that torch.func can batch."""

import numpy as np
import pytest
import torch
from torch import nn

from pintrain.mgrit import serial_solve
from pintrain.torch import UnsupportedModel, fit
from pintrain.torch.recurrent import unroll


class SeqClassifier(nn.Module):
    def __init__(self, kind="gru", **kw):
        super().__init__()
        layer = {"gru": nn.GRU, "lstm": nn.LSTM}[kind]
        self.rnn = layer(3, 8, batch_first=True, **kw)
        self.head = nn.Linear(8 * (2 if kw.get("bidirectional") else 1), 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class CellLoop(nn.Module):
    """A hand-unrolled cell, the way people write sequence models with nn.LSTMCell / nn.GRUCell."""

    def __init__(self, kind="lstm"):
        super().__init__()
        self.kind = kind
        self.cell = nn.LSTMCell(3, 8) if kind == "lstm" else nn.GRUCell(3, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        state = None
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
        h = state[0] if self.kind == "lstm" else state
        return self.head(h)


def sequences(n=96, steps=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, steps, 3, generator=g, dtype=torch.float64)
    return X, (X[:, :, 0].sum(1) > 0).long()


MODELS = {
    "gru": lambda: SeqClassifier("gru"),
    "lstm-2-layers": lambda: SeqClassifier("lstm", num_layers=2),
    "gru-bidirectional": lambda: SeqClassifier("gru", bidirectional=True),
    "lstm-cell": lambda: CellLoop("lstm"),
    "gru-cell": lambda: CellLoop("gru"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_written_out_layers_compute_what_the_fused_ones_do(name):
    torch.manual_seed(0)
    model = MODELS[name]().double()
    X, _ = sequences()
    written, _ = unroll(__import__("copy").deepcopy(model))
    assert [n for n, _ in written.named_parameters()] == [n for n, _ in model.named_parameters()]
    torch.testing.assert_close(written(X), model(X), rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recurrent_modules_train_by_mgrit_to_the_loops_weights(name):
    X, y = sequences()
    kw = {"steps": 128, "batch_size": 16, "optimizer": "adam", "lr": 0.01, "seed": 1}
    torch.manual_seed(0)
    model = MODELS[name]().double()
    serial = fit(model, nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    res = fit(model, nn.CrossEntropyLoss(), X, y, levels=2, cfactor=4, tol=1e-10, max_ratio=2, coarse="split", **kw)
    assert res.solver.converged and np.abs(res.states - serial.states).max() < 1e-8
    assert type(res.model) is type(model)  # the user's own module comes back, trained
    # the evolution's fine steps are the loop's with the user's fused layers, to round-off
    loop = torch.optim.Adam((m := __import__("copy").deepcopy(model)).parameters(), lr=0.01)
    for k in range(128):
        idx = torch.from_numpy(res.problem.schedule.batch(k))
        loop.zero_grad()
        nn.CrossEntropyLoss()(m(X[idx]), y[idx]).backward()
        loop.step()
    w = torch.cat([p.detach().reshape(-1) for p in m.parameters()]).numpy()
    np.testing.assert_allclose(serial_solve(res.problem)[-1, : res.problem.n_params], w, rtol=0, atol=1e-10)


def test_what_cannot_be_written_out_is_refused():
    X, y = sequences()
    with pytest.raises(UnsupportedModel, match="dropout between recurrent layers"):
        fit(SeqClassifier("gru", num_layers=2, dropout=0.5).double(), nn.CrossEntropyLoss(), X, y, steps=8)
    with pytest.raises(UnsupportedModel, match="proj_size"):
        fit(nn.LSTM(3, 8, proj_size=4, batch_first=True).double(), lambda o, t: o[0].sum(), X, y, steps=8)
