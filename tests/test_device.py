"""Torch-native states: the solver's level arrays are the problem's tensors, on its device.

The CPU tests run everywhere; the device tests run where a CUDA device is present (skipped
otherwise: pintrain never needs one) and compare with the CPU result."""

import numpy as np
import pytest
import torch
from torch import nn

from pintrain import OptionError
from pintrain.mgrit import serial_solve, solve
from pintrain.torch import TorchProblem, fit, make_optimizer
from pintrain.training import Batches

CUDA = torch.cuda.is_available()


def data(n=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()
    return X, y


def net(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def problem(optimizer="adam", lr=0.01, device=None, steps=192):
    X, y = data()
    opt = make_optimizer(optimizer, lr)
    return TorchProblem(
        net(), nn.CrossEntropyLoss(), X, y, steps=steps, batch_size=16, optimizer=opt, seed=2, device=device
    )


class NumpyBoundary:
    """The same problem seen through numpy: no ``ops``, so the solver keeps numpy levels and every
    step converts (the path before torch-native states)."""

    def __init__(self, p):
        self.p, self.n_steps = p, p.n_steps

    def initial(self):
        return self.p.initial()

    def step(self, u, k, m):
        return self.p.step(u, k, m)

    def step_many(self, U, ks, m):
        return self.p.step_many(U, ks, m)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("momentum", 0.05), ("adam", 0.01)])
def test_torch_native_levels_give_the_numpy_path_s_states(optimizer, lr):
    p = problem(optimizer, lr)
    kw = {"levels": 3, "cfactor": 4, "tol": 1e-10, "max_iter": 60}
    native, boundary = solve(p, **kw), solve(NumpyBoundary(p), **kw)
    assert native.converged and native.iterations == boundary.iterations
    np.testing.assert_array_equal(native.states, boundary.states)
    assert isinstance(native.states, np.ndarray) and np.abs(native.states - p.serial_states()).max() < 1e-8


def test_the_solver_keeps_torch_levels():
    from pintrain.mgrit import SolverOptions
    from pintrain.mgrit.solver import _Solver

    p = problem()
    s = _Solver(p, SolverOptions(levels=3, cfactor=4))
    assert all(isinstance(lev.U, torch.Tensor) and lev.U.device == p.device for lev in s.levels)
    assert s.ops is p.ops


def test_cuda_graphs_only_on_a_gpu_and_only_compiled():
    # the coarsest chain's sub-interval is replayed as a CUDA graph only when compiled on a CUDA device
    from pintrain.torch.chain import LoneSubInterval

    p = problem()  # on the CPU
    assert not p.lone_chain.graphs and not LoneSubInterval(p, compiled=True).graphs
    with pytest.raises(ValueError, match="needs compiled=True"):
        LoneSubInterval(p, graphs=True)


def test_unknown_or_absent_devices_are_refused():
    X, y = data()
    with pytest.raises(OptionError, match="device"):
        fit(net(), nn.CrossEntropyLoss(), X, y, device="warp-drive")
    if not CUDA:
        with pytest.raises(OptionError, match="not available"):
            fit(net(), nn.CrossEntropyLoss(), X, y, device="cuda")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adam", 0.01)])
def test_cuda_gives_the_cpu_weights(optimizer, lr):
    X, y = data()
    kw = {"steps": 192, "batch_size": 16, "optimizer": optimizer, "lr": lr, "seed": 2, "levels": 3, "tol": 1e-10}
    cpu = fit(net(), nn.CrossEntropyLoss(), X, y, **kw)
    gpu = fit(net(), nn.CrossEntropyLoss(), X, y, device="cuda", **kw)
    serial = fit(net(), nn.CrossEntropyLoss(), X, y, device="cuda", method="serial", **kw)
    assert gpu.solver.converged and next(gpu.model.parameters()).device.type == "cuda"
    # float64 on the device: the same arithmetic up to the order of reductions
    assert np.abs(gpu.states - cpu.states).max() < 1e-8
    assert np.abs(gpu.states - serial.states).max() < 1e-8
    assert np.abs(serial_solve(gpu.problem) - serial.states).max() < 1e-8


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_float32_digits_cli(capsys, tmp_path):
    import json

    from pintrain.cli import main

    argv = ["train", "--problem", "digits-mlp", "--steps", "128", "--levels", "2", "--dtype", "float32"]
    assert main([*argv, "--tol", "1e-5", "--device", "cuda", "--json", str(tmp_path / "r.json")]) == 0
    assert "on cuda" in capsys.readouterr().out
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["problem"]["model"]["device"].startswith("cuda") and record["max_abs_diff"] < 1e-4


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_c_point_storage_gives_full_storage_bit_for_bit():
    from pintrain.torch.digits import digits_problem

    p = digits_problem("digits-mlp", steps=512, optimizer="adam", device="cuda")
    full = solve(p, levels=3, cfactor=4, tol=1e-9)
    cpts = solve(p, levels=3, cfactor=4, tol=1e-9, storage="c-points")
    assert full.converged and cpts.residuals == full.residuals
    np.testing.assert_array_equal(cpts.states, full.states[cpts.points])
    assert p.ops.pass_bytes > 1 << 30  # a GPU takes its batches whole


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_compiled_gradients_give_the_serial_weights():
    # on a GPU a compiled call takes up to COMPILED_ROWS_DEVICE rows: the F-relaxation's 160 rows are
    # one call (padded to 256), where a CPU takes 128 and 32 (padded to 64)
    from pintrain.torch.model import COMPILED_ROWS_DEVICE

    X, y = data()
    kw = {"steps": 320, "batch_size": 16, "optimizer": "adam", "lr": 0.01, "seed": 2, "device": "cuda"}
    serial = fit(net(), nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    res = fit(net(), nn.CrossEntropyLoss(), X, y, levels=2, cfactor=2, tol=1e-10, compile=True, **kw)  # few shapes
    model = res.problem.model
    assert model.compiled_rows == COMPILED_ROWS_DEVICE
    assert [n for _, n, _ in model.compiled_chunks(160, Batches(np.zeros((160, 16), dtype=np.int64)))] == [160]
    assert res.solver.converged and np.abs(res.states - serial.states).max() < 1e-8


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_float32_default_tolerance_converges():
    X, y = data()
    kw = {"steps": 1024, "batch_size": 16, "optimizer": "sgd", "lr": 0.05, "seed": 2, "device": "cuda"}
    serial = fit(net(), nn.CrossEntropyLoss(), X, y, method="serial", dtype="float32", **kw)
    res = fit(net(), nn.CrossEntropyLoss(), X, y, dtype="float32", **kw)  # tol by default above float32's floor
    assert res.solver.converged and np.abs(res.states - serial.states).max() < 1e-4


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("optimizer", ["nesterov", "adamw"])
def test_cuda_compiled_update_equals_the_eager_update(optimizer):
    from pintrain.torch.model import TorchOps
    from pintrain.torch.update import CompiledUpdate

    opt, ops = make_optimizer(optimizer, 0.01, weight_decay=0.01), TorchOps("cuda")
    g = torch.Generator().manual_seed(0)
    S = torch.randn(300, opt.state_size(40), generator=g, dtype=torch.float64).abs().cuda()
    G = torch.randn(300, 40, generator=g, dtype=torch.float64).cuda()
    ks, c = np.arange(300) % 7, CompiledUpdate(opt, ops)
    for got, want in (
        (c.fine(S, G, ks, None), opt.fine(S, G, ks, ops)),
        (c.frozen(S, G, ks, 2, None), opt.frozen(S, G, ks, 2, ops)),
    ):
        assert got.device.type == "cuda" and float((got - want).abs().max()) <= 1e-14 * float(want.abs().max())


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_graph_chain_equals_the_eager_chain():
    # compile=True on a GPU replays the coarsest chain's graphs as CUDA graphs: a chain of coarse steps
    # (each from the last one's state, lagged and curved, whole chunks and single sub-intervals) gives
    # the eager chain's states to rounding, and a result kept across later replays is not overwritten
    from pintrain.torch.chain import LoneSubInterval

    X, y = data()
    kw = {"steps": 64, "batch_size": 16, "optimizer": make_optimizer("adam", 0.01), "seed": 2, "device": "cuda"}
    p = TorchProblem(net(), nn.CrossEntropyLoss(), X, y, coarse="curvature", compile=True, **kw)
    assert p.lone_chain.compiled and p.lone_chain.graphs
    p.prepare()
    eager = LoneSubInterval(p)
    S0 = p.ops.asarray(p.u0[None])
    for curved in (False, True):
        S, E, kept = S0, S0, []
        for k, m in ((0, 16), (16, 2), (18, 1), (19, 8), (27, 5), (32, 2)):  # chunks of 4 sub-intervals, and fewer
            S, E = p.lone_chain(S, np.array([k]), m, curved), eager(E, np.array([k]), m, curved)
            kept.append((S, S.clone(), E))
        for got, copy, want in kept:
            assert got.device.type == "cuda" and torch.equal(got, copy)  # not overwritten by later replays
            assert float((got - want).abs().max()) <= 1e-12 * float(want.abs().max())


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_compiled_chain_without_graphs_and_batched_sub_intervals_equal_eager():
    # compile=True on a GPU without CUDA graphs (a compiled function per variant, its tensors' guards
    # alone) gives the eager chain's states; a sub-interval of many rows in one compiled graph gives the
    # propagator's own steps (session 11's compiled paths, first built on a CPU)
    from pintrain.torch.chain import LoneSubInterval

    X, y = data()
    kw = {"steps": 300, "batch_size": 16, "optimizer": make_optimizer("adam", 0.01), "seed": 2, "device": "cuda"}
    p = TorchProblem(net(), nn.CrossEntropyLoss(), X, y, coarse="curvature", compile=True, **kw)
    p.prepare()
    chain, eager = LoneSubInterval(p, compiled=True, graphs=False), LoneSubInterval(p)
    S0 = p.ops.asarray(p.u0[None])
    for curved in (False, True):
        S, E = S0, S0
        for k, m in ((0, 16), (16, 2), (18, 1), (19, 8), (27, 5)):
            S, E = chain(S, np.array([k]), m, curved), eager(E, np.array([k]), m, curved)
            assert S.device.type == "cuda" and float((S - E).abs().max()) <= 1e-12 * float(E.abs().max())
    assert p.compiled_sub_interval is not None
    g = torch.Generator().manual_seed(1)
    U = p.ops.asarray(p.u0).repeat(150, 1)
    U[:, : p.n_params] += 0.1 * torch.randn(150, p.n_params, generator=g, dtype=U.dtype).cuda()
    ks = np.arange(150) + 50
    fused = p.step_many(U, ks, 5)
    p.compiled_sub_interval = None
    own = p.step_many(U, ks, 5)
    assert fused.device.type == "cuda" and float((fused - own).abs().max()) <= 1e-12 * float(own.abs().max())
