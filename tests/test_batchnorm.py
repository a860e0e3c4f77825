"""BatchNorm with running statistics: the steps normalise by each batch's own statistics (a pure
function of the weights), and the running statistics follow from the converged trajectory; the
trained copy has the buffers torch's own loop gives, to the tolerance."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pintrain.errors import OptionError
from pintrain.mgrit import SolverOptions
from pintrain.torch import fit

STEPS = 160


def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(96, 6, generator=g, dtype=torch.float64)
    return X, (X[:, 0] + X[:, 1] > 0).long()


def net(momentum=0.1):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.BatchNorm1d(10, momentum=momentum), nn.Tanh(), nn.Linear(10, 2)).double()


def torch_loop(model, X, y, table, lr, momentum):
    """The loop written out with torch: the module's own BatchNorm updates its buffers."""
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=momentum)
    for k in range(STEPS):
        opt.zero_grad()
        nn.CrossEntropyLoss()(ref(X[table[k]]), y[table[k]]).backward()
        opt.step()
    return ref


@pytest.mark.parametrize("bn_momentum", [0.1, None], ids=["momentum", "cumulative"])
def test_running_statistics_equal_the_torch_loop(bn_momentum):
    X, y = data()
    model = net(bn_momentum)
    kw = {"steps": STEPS, "batch_size": 12, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9}
    mgrit = fit(model, nn.CrossEntropyLoss(), X, y, tol=1e-10, **kw)
    serial = fit(model, nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    ref = torch_loop(model, X, y, mgrit.problem.table, 0.05, 0.9)
    assert mgrit.solver.converged
    for name in ("1.running_mean", "1.running_var"):
        assert (mgrit.model.get_buffer(name) - ref.get_buffer(name)).abs().max() < 1e-9
        assert (serial.model.get_buffer(name) - ref.get_buffer(name)).abs().max() < 1e-12
    assert int(mgrit.model.get_buffer("1.num_batches_tracked")) == STEPS
    ref.eval()
    mgrit.model.eval()
    with torch.no_grad():
        assert (mgrit.model(X) - ref(X)).abs().max() < 1e-8  # inference uses the running statistics
    assert next(model.parameters()).grad is None and int(model[1].num_batches_tracked) == 0  # untouched


def test_running_statistics_need_every_step():
    X, y = data()
    kw = {"steps": 64, "batch_size": 12}
    with pytest.raises(OptionError, match="keep.*every step's state"):
        fit(net(), nn.CrossEntropyLoss(), X, y, keep="final", **kw)
    with pytest.raises(OptionError, match="storage.*running statistics of 1"):
        fit(net(), nn.CrossEntropyLoss(), X, y, options=SolverOptions(storage="c-points"), **kw)


def test_batchnorm2d_in_a_cnn():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(64, 1, 6, 6, generator=g, dtype=torch.float64)
    y = (X.mean(dim=(1, 2, 3)) > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 16, 2)).double()
    kw = {"steps": 96, "batch_size": 8, "optimizer": "adam", "lr": 0.01}
    res = fit(model, nn.CrossEntropyLoss(), X, y, tol=1e-8, **kw)  # its round-off floor is near 1e-9
    ref = copy.deepcopy(model)
    opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    for k in range(96):
        opt.zero_grad()
        nn.CrossEntropyLoss()(ref(X[res.problem.table[k]]), y[res.problem.table[k]]).backward()
        opt.step()
    assert res.solver.converged
    np.testing.assert_allclose(res.model[1].running_var.numpy(), ref[1].running_var.numpy(), rtol=1e-7)
    np.testing.assert_allclose(res.model[1].running_mean.numpy(), ref[1].running_mean.numpy(), atol=1e-8)
