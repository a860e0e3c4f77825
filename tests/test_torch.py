"""pintrain.torch: optimizers equal torch.optim, MGRIT equals the usual serial loop, clear refusals."""

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pintrain.cli import main
from pintrain.errors import DivergenceError, OptionError, PintrainError
from pintrain.mgrit import serial_solve, solve
from pintrain.torch import TorchProblem, UnsupportedModel, accuracy, fit, make_optimizer
from pintrain.torch.digits import digits_problem, load
from pintrain.training import Batches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_cases import small_data, small_net  # noqa: E402

OPTIMIZERS = [
    ("sgd", {}),
    ("sgd", {"weight_decay": 1e-3}),
    ("momentum", {}),
    ("momentum", {"momentum": 0.8, "dampening": 0.1, "weight_decay": 1e-3}),
    ("nesterov", {"momentum": 0.9}),
    ("adam", {}),
    ("adam", {"betas": (0.8, 0.99), "weight_decay": 1e-2}),
    ("adamw", {}),
]


def small_problem(name="sgd", steps=100, lr=0.05, **kw):
    X, y = small_data()
    opt = make_optimizer(name, lr, **kw)
    return TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, steps=steps, batch_size=16, optimizer=opt, seed=3)


@pytest.mark.parametrize("name,hyper", OPTIMIZERS, ids=lambda v: str(v))
def test_fine_step_equals_torch_optim_over_100_steps(name, hyper):
    p = small_problem(name, steps=100, lr=0.02 if name.startswith("adam") else 0.05, **hyper)
    evolution = serial_solve(p)  # the adapter's fine step, 100 times
    # the user's loop, written out here: module, torch.optim, backward, step
    model = small_net()
    opt = p.optimizer.torch_optimizer(model.parameters())
    X, y = small_data()
    for k in range(100):
        idx = torch.from_numpy(p.schedule.batch(k))
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(X[idx]), y[idx]).backward()
        opt.step()
    weights = torch.cat([q.detach().reshape(-1) for q in model.parameters()]).numpy()
    np.testing.assert_allclose(evolution[-1, : p.n_params], weights, rtol=0, atol=1e-12)
    # the optimizer state too: momentum buffers, moments and step count, packed as in the evolution
    np.testing.assert_allclose(evolution, p.serial_torch(), rtol=0, atol=1e-12)
    if p.optimizer.adam:
        assert evolution[-1, -1] == 100.0 == float(opt.state[next(model.parameters())]["step"])


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_batched_steps_equal_single_steps(name):
    p = small_problem(name, steps=64)
    rng = np.random.default_rng(0)
    U = np.repeat(p.initial()[None], 9, axis=0)
    U[:, : p.n_params] += 0.01 * rng.standard_normal((9, p.n_params))
    ks = rng.integers(0, 60, 9)
    for m in (1, 4):
        batched = p.step_many(U, ks, m)
        single = np.stack([p.step(U[i], int(ks[i]), m) for i in range(9)])
        np.testing.assert_allclose(batched, single, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "name,coarse,levels",
    [
        ("sgd", "union", 3),
        ("momentum", "split", 3),
        ("adam", "union", 2),
        ("adamw", "split", 3),
        ("adam", "lagged", 3),
        ("adam", "curvature", 3),
        ("momentum", "curvature", 3),
    ],
)
def test_mgrit_equals_serial_torch_loop(name, coarse, levels):
    p = small_problem(name, steps=192, lr=0.01 if name.startswith("adam") else 0.05)
    p.coarse = coarse
    res = solve(p, levels=levels, cfactor=4, tol=1e-10, max_iter=60)
    assert res.converged
    assert np.abs(res.states - p.serial_torch()).max() < 1e-8


def test_fit_on_digits_mlp_same_weights_and_accuracy_as_serial():
    data = load(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()
    before = copy.deepcopy(model.state_dict())
    kw = {"steps": 300, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "seed": 0}
    serial = fit(model, nn.CrossEntropyLoss(), data.X_train, data.y_train, method="serial", **kw)
    res = fit(model, nn.CrossEntropyLoss(), data.X_train, data.y_train, levels=3, cfactor=4, tol=1e-9, **kw)
    assert res.solver is not None and res.solver.converged and serial.solver is None
    for key, value in model.state_dict().items():  # the user's module is not changed
        assert torch.equal(value, before[key])
    ws, wm = serial.final_weights.numpy(), res.final_weights.numpy()
    assert np.abs(wm - ws).max() < 1e-8 * max(1.0, np.abs(ws).max())
    assert np.abs(res.states - serial.states).max() < 1e-8
    assert res.losses.shape == (300,) and np.abs(res.losses - serial.losses).max() < 1e-8
    acc_s = accuracy(serial.model, data.X_test, data.y_test)
    acc_m = accuracy(res.model, data.X_test, data.y_test)
    assert acc_s == acc_m and acc_s > 0.8  # 300 steps of SGD learn the digits far past chance (0.1)
    assert isinstance(res.model, nn.Sequential) and res.model is not model


@pytest.mark.parametrize("norm", [False, True])
def test_one_row_gradient_equals_the_batched_one(norm):
    # the coarsest level's lone rows take plain autograd; over r step batches it must be the same
    # union loss as the batched (vmap) rows (with BatchNorm: each step's batch normalised on its own)
    X, y = small_data()
    layers = [nn.Linear(6, 8), nn.BatchNorm1d(8, track_running_stats=False)] if norm else [nn.Linear(6, 8)]
    model = nn.Sequential(*layers, nn.Tanh(), nn.Linear(8, 3)).double()
    p = TorchProblem(model, nn.CrossEntropyLoss(), X, y, steps=32, batch_size=16, optimizer=make_optimizer("sgd", 0.1))
    W = torch.stack([p.model.w0, p.model.w0 * 0.9])
    for r in (1, 2, 4, 8, 16):
        b = p.batches(np.array([4, 4]), r)
        both = p.model.gradient(W, b)
        one = p.model.gradient_lone(W[:1], Batches(b.idx[:1], b.r, b.weight))
        scale = float(both[0].abs().max())
        assert float((one[0] - both[0]).abs().max()) <= 1e-14 * scale
    # the lone path is the sequential solve's (problem.step) alone: a lone row of a batched call
    # (step_many) takes the batched path, so that the answer cannot depend on how rows are laid out
    calls = []
    lone = p.model.gradient_lone
    p.model.gradient_lone = lambda W, b: calls.append(W.shape[0]) or lone(W, b)
    u = p.initial()
    p.step_many(u[None], np.array([0]), 4)
    assert calls == []
    p.step(u, 0, 4)
    assert calls and set(calls) == {1}


class WithSpare(nn.Module):
    """A network with a parameter its forward never uses (a frozen head kept for later, say)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        self.spare = nn.Linear(3, 3)

    def forward(self, x):
        return self.body(x)


class SmallGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(2, 4, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("kind", ["spare", "gru"])
def test_the_lone_path_follows_each_row_s_weights(kind):
    # the lone path steps its own copy of the module with the row's weights set: every call takes the
    # weights it is given (none left from the call before), an unused parameter's gradient is zero,
    # and a GRU (written out for torch.func) gives the batched path's gradient
    X, y = small_data()
    model = (WithSpare() if kind == "spare" else SmallGRU()).double()
    X = X if kind == "spare" else X.reshape(-1, 3, 2)
    p = TorchProblem(model, nn.CrossEntropyLoss(), X, y, steps=32, batch_size=16, optimizer=make_optimizer("sgd", 0.1))
    W = torch.stack([p.model.w0, p.model.w0 * 0.8 + 0.01])
    for r in (1, 2):
        b = p.batches(np.array([3, 3]), r)
        both = p.model.gradient(W, b)
        for i in (0, 1, 0):
            one = p.model.gradient_lone(W[i : i + 1], Batches(b.idx[i : i + 1], b.r, b.weight))
            assert float((one[0] - both[i]).abs().max()) <= 1e-13 * float(both[i].abs().max())
    if kind == "spare":
        assert float(one[0, -12:].abs().max()) == 0.0  # spare.weight and spare.bias: last in the layout


@pytest.mark.parametrize("track", [False, True])
def test_a_union_gradient_with_batchnorm_is_the_sum_of_its_step_gradients(track):
    # a coarse step's g(w) is the sum of its m step losses' gradients; BatchNorm normalises by the
    # batch, so each step's batch is normalised on its own, as in its step (not over the union)
    X, y = small_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, track_running_stats=track), nn.Tanh(), nn.Linear(8, 3))
    p = TorchProblem(
        model.double(), nn.CrossEntropyLoss(), X, y, steps=32, batch_size=16, optimizer=make_optimizer("sgd", 0.1)
    )
    W = torch.stack([p.model.w0, p.model.w0 * 0.9])
    ks = np.array([0, 5])
    for r in (2, 4):
        union = p.model.gradient(W, p.batches(ks, r))
        steps = sum(p.model.gradient(W, p.batches(ks + j, 1)) for j in range(r))
        assert float((union - steps).abs().max()) <= 1e-13 * float(steps.abs().max())


def test_compiled_gradients_equal_eager_and_mgrit_equals_serial():
    # compile=True: the batched gradients through torch.compile, in calls padded to a power of two rows
    # (the problem of the compiled Adam tests below, whose graphs inductor's cache then holds: a cold
    # cache compiles them once)
    X, y = small_data()
    kw = {"steps": 40, "batch_size": 16, "optimizer": "adam", "lr": 0.05, "coarse_options": {"rank": 3, "block": 8}}
    res = fit(small_net(), nn.CrossEntropyLoss(), X, y, levels=2, tol=1e-10, compile=True, **kw)
    ref = fit(small_net(), nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    assert res.problem.model.compiled and res.solver.converged
    assert np.abs(res.states - ref.states).max() < 1e-8
    m = res.problem.model
    W = torch.stack([m.w0 * (1 + 0.1 * i) for i in range(3)])
    for ks, r in ((np.arange(3), 1), (np.arange(3), 2), (np.arange(1), 2)):
        b = res.problem.batches(ks, r)
        want = m._gradient_eager(W[: ks.size], b)
        got = m.gradient(W[: ks.size], b)
        assert float((got - want).abs().max()) <= 1e-12 * float(want.abs().max())


@pytest.mark.parametrize(
    "name,hyper",
    [("sgd", {"weight_decay": 1e-2}), ("nesterov", {"momentum": 0.9}), ("adam", {}), ("adamw", {"weight_decay": 0.1})],
    ids=lambda v: str(v),
)
def test_compiled_update_equals_the_optimizer_s_own(name, hyper):
    # compile=True also compiles the optimizer's update (fine step, and the frozen steps of a coarse
    # union step): the same arithmetic as the eager update, to rounding, with or without a schedule
    from pintrain.torch.model import TorchOps
    from pintrain.torch.update import COMPILED_MIN_ROWS, CompiledUpdate

    opt, ops = make_optimizer(name, 0.01, **hyper), TorchOps()
    g = torch.Generator().manual_seed(0)
    rows = COMPILED_MIN_ROWS + 3
    S = torch.randn(rows, opt.state_size(7), generator=g, dtype=torch.float64).abs()
    G = torch.randn(rows, 7, generator=g, dtype=torch.float64)
    ks, lrs = np.arange(rows) % 31, np.linspace(0.02, 0.001, 40)
    c = CompiledUpdate(opt, ops)
    ran = []  # the compiled functions' calls (a lone row takes the eager update)
    compiled_fine, compiled_frozen = c._fine, c._frozen
    c._fine = lambda *a: ran.append("fine") or compiled_fine(*a)
    c._frozen = lambda *a: ran.append("frozen") or compiled_frozen(*a)
    for table in (None, lrs):
        for got, want in (
            (c.fine(S, G, ks, table), opt.fine(S, G, ks, ops, table)),
            (c.fine(S[:1], G[:1], ks[:1], table), opt.fine(S[:1], G[:1], ks[:1], ops, table)),  # a lone row: eager
            (c.frozen(S, G, ks, 2, table), opt.frozen(S, G, ks, 2, ops, table)),
            (c.frozen(S, G, ks, 4, table), opt.frozen(S, G, ks, 4, ops, table)),
        ):
            assert got.shape == want.shape
            assert float((got - want).abs().max()) <= 1e-14 * float(want.abs().max())
    out = torch.empty_like(S)
    assert c.fine(S, G, ks, None, out) is out and torch.equal(out, c.fine(S, G, ks, None))
    # plain SGD's frozen step is one expression and stays eager; everything else of >= 64 rows ran compiled
    assert ran.count("fine") == 4 and ran.count("frozen") == (0 if name == "sgd" else 4)


def test_compiled_momentum_with_a_schedule_gives_the_loop_s_weights():
    from pintrain.mgrit import SolverOptions

    # full batch (the problem of the compiled momentum tests below, whose graphs inductor's cache then holds)
    X, y = small_data()
    kw = {"steps": 40, "batch_size": None, "optimizer": "momentum", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}
    kw |= {"lr_schedule": lambda k: 0.05 * 0.98**k, "coarse_options": {"rank": 3, "block": 8}}
    opts = SolverOptions(levels=2, cfactor=4, tol=1e-10, max_iter=60)
    res = fit(small_net(), nn.CrossEntropyLoss(), X, y, options=opts, compile=True, **kw)
    ref = fit(small_net(), nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    assert res.problem.compiled_update is not None and res.solver.converged
    assert np.abs(res.states - ref.states).max() < 1e-8


@pytest.mark.parametrize(
    "name,hyper,coarse,batch,compiled",
    [  # compiled: which schedule also runs compiled (each compiled problem costs seconds of compiling)
        ("adam", {}, "curvature", 16, "constant"),
        ("adamw", {"weight_decay": 0.1}, "lagged", 16, None),
        ("nesterov", {"momentum": 0.9, "weight_decay": 1e-3}, "curvature", 16, None),
        ("momentum", {"momentum": 0.9, "weight_decay": 1e-3}, "curvature", None, "schedule"),  # full batch
    ],
    ids=lambda v: str(v),
)
def test_lone_sub_interval_equals_the_propagator_s_steps(name, hyper, coarse, batch, compiled):
    # a lone row's lagged / curvature coarse step (the coarsest chain's unit) by the chain's function: eager,
    # the propagator's own steps bit for bit; compile=True, a graph for up to 4 sub-intervals, the same to
    # rounding; with or without a schedule; a batch of rows takes the propagator's own steps
    from pintrain.torch.chain import LoneSubInterval
    from pintrain.training.propagators import COARSE_PROPAGATORS

    X, y = small_data()
    for label, schedule in (("constant", None), ("schedule", [0.05 * 0.98**k for k in range(40)])):
        kw = {"steps": 40, "batch_size": batch, "optimizer": make_optimizer(name, 0.05, **hyper), "coarse": coarse}
        kw |= {"lr_schedule": schedule, "coarse_options": {"rank": 3, "block": 8} if coarse == "curvature" else None}
        steps = TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, **kw)
        steps.lone_chain = None  # the propagator's own steps
        problems = {"eager": TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, **kw)}
        if compiled == label:  # the compiled chain alone (compile=True sets it up: test_compiled_hessian_vectors...)
            problems["compiled"] = TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, **kw)
            problems["compiled"].lone_chain = LoneSubInterval(problems["compiled"], compiled=True)
        calls: dict[str, list[int]] = {key: [] for key in problems}
        for key, problem in problems.items():
            assert problem.lone_chain.compiled == (key == "compiled")
            chain = problem.lone_chain
            problem.lone_chain = lambda *a, seen=calls[key], chain=chain: seen.append(a[2]) or chain(*a)
        u = steps.ops.asarray(steps.u0)
        S = torch.stack([u, u * 0.9])
        fn = COARSE_PROPAGATORS[coarse].fn
        for key, problem in problems.items():
            tol = 0.0 if key == "eager" else 1e-12  # eager: bit for bit
            # m = 5: sub-intervals of 2, 1 and 2 steps; m = 24: 12 of 2 (compiled: three chunks of 4), over
            # four table entries
            for k, m in ((0, 8), (9, 2), (30, 5), (38, 2), (4, 24)):
                want = steps.step(u, k, m)
                assert float((problem.step(u, k, m) - want).abs().max()) <= tol * float(want.abs().max())
            n = len(calls[key])
            assert sorted(set(calls[key])) == [2, 5, 8, 24]
            want = fn(steps, S, np.array([0, 8]), 4)
            assert float((fn(problem, S, np.array([0, 8]), 4) - want).abs().max()) <= tol * float(want.abs().max())
            assert len(calls[key]) == n
    # gradient clipping takes the propagator's own steps
    clipped = TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, clip_grad_norm=1.0, **kw)
    assert clipped.lone_chain is None


def test_the_cuda_graph_chain_s_own_logic_on_a_cpu():
    # the chain's CUDA-graph path (graphs=True: one function for every variant, its tensors marked
    # static, each result cloned off the graph's output) run on a CPU, where torch.compile's
    # "reduce-overhead" leaves out the CUDA graphs themselves: a chain of coarse steps, lagged and
    # curved, whole chunks and single sub-intervals, gives the eager chain's states, and a result kept
    # across later calls is not overwritten (tests/test_device.py runs the same on a GPU, with graphs)
    from pintrain.torch.chain import LoneSubInterval

    X, y = small_data()
    kw = {"steps": 40, "batch_size": 16, "optimizer": make_optimizer("adam", 0.05), "coarse": "curvature"}
    p = TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, coarse_options={"rank": 3, "block": 8}, **kw)
    chain, eager = LoneSubInterval(p, compiled=True, graphs=True), LoneSubInterval(p)
    assert chain.graphs and not chain.cpp_wrapper
    S0 = p.ops.asarray(p.u0[None])
    for curved in (False, True):
        S, E, kept = S0, S0, []
        for k, m in ((0, 16), (16, 2), (18, 1), (19, 8), (27, 5), (32, 2)):  # chunks of 4 sub-intervals, and fewer
            S, E = chain(S, np.array([k]), m, curved), eager(E, np.array([k]), m, curved)
            kept.append((S, S.clone(), E))
        for got, at_the_time, want in kept:
            assert torch.equal(got, at_the_time)
            assert float((got - want).abs().max()) <= 1e-12 * float(want.abs().max())


def test_compiled_chain_without_the_cpp_wrapper_where_it_cannot_be_built():
    # on a CPU the chain's graphs call their kernels from C++; where that wrapper fails to build, the
    # trial at construction falls back to inductor's Python wrapper, with the same values to rounding
    from pintrain.torch.chain import LoneSubInterval

    X, y = small_data()
    kw = {"steps": 40, "batch_size": 16, "optimizer": make_optimizer("adam", 0.05), "coarse": "lagged"}
    p = TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, compile=True, **kw)
    assert p.lone_chain.cpp_wrapper
    chain = LoneSubInterval(p, compiled=True)

    def broken(*args):
        raise RuntimeError("the C++ wrapper did not build")

    compiled = chain._compiled
    chain._compiled = lambda: broken if chain.cpp_wrapper else compiled()
    u = p.ops.asarray(p.u0)[None]
    chain.trial(u, 8, False)
    assert not chain.cpp_wrapper
    want = p.lone_chain(u, np.array([4]), 8, False)
    assert float((chain(u, np.array([4]), 8, False) - want).abs().max()) <= 1e-12 * float(want.abs().max())
    chain._fns.clear()
    chain._compiled = lambda: broken  # a failure of the Python wrapper's graphs is the compile failure it was
    with pytest.raises(RuntimeError, match="did not build"):
        chain.trial(u, 8, False)


@pytest.mark.parametrize(
    "name,hyper,batch,schedule",
    [
        ("adamw", {"weight_decay": 0.1}, 16, 0.98),
        ("momentum", {"momentum": 0.9, "weight_decay": 1e-3}, None, 0.98),  # full batch: no batch table
    ],
    ids=lambda v: str(v),
)
def test_compiled_sub_intervals_of_many_rows_equal_the_propagator_s_steps(name, hyper, batch, schedule):
    # compile=True: a lagged / curvature sub-interval of 64 rows or more is one graph (the r gradients at
    # its start, each row's table entry gathered in the graph, the r updates), the same to rounding as the
    # propagator's own eager steps; fewer rows take those.  (The graphs on an eager problem: compile=True
    # sets them up, test_compiled_hessian_vectors_equal_eager, and would compile the rest of the step too.)
    from pintrain.torch.update import CompiledSubInterval
    from pintrain.training.propagators import curved_steps, lagged_steps

    X, y = small_data()
    rates = None if schedule is None else [0.05 * schedule**k for k in range(40)]
    kw = {"steps": 40, "batch_size": batch, "optimizer": make_optimizer(name, 0.05, **hyper), "coarse": "curvature"}
    kw |= {"coarse_options": {"rank": 3, "block": 8}}
    p = TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, lr_schedule=rates, **kw)
    fused = CompiledSubInterval(p)
    calls = []
    p.compiled_sub_interval = lambda S, ks, r, curved: calls.append((S.shape[0], r, curved)) or fused(S, ks, r, curved)
    p.compiled_sub_interval.min_rows = fused.min_rows
    g = torch.Generator().manual_seed(1)
    S = p.ops.asarray(p.u0).repeat(150, 1)
    S[:, : p.n_params] += 0.1 * torch.randn(150, p.n_params, generator=g, dtype=S.dtype)
    ks = np.arange(150) % 36  # rows over all five table entries (block 8)
    together = p.step_many(S, ks, 5)  # sub-intervals of 2, 1 and 2 steps
    few = p.step_many(S[:10], ks[:10], 5)
    plain = lagged_steps(p, S, ks, 2)  # a lagged sub-interval: no term
    assert calls == [(150, 2, True), (150, 1, True), (150, 2, True), (150, 2, False)]  # 10 rows: the propagator's
    p.compiled_sub_interval = None
    own = p.step_many(S, ks, 5)
    scale = float(own.abs().max())
    assert float((together - own).abs().max()) <= 1e-12 * scale
    assert float((few - own[:10]).abs().max()) <= 1e-12 * scale
    assert float((plain - lagged_steps(p, S, ks, 2)).abs().max()) <= 1e-12 * scale
    P = p.n_params  # and the table's term is in the curved graph: the lagged sub-interval is another step
    assert float((curved_steps(p, S, ks, 2) - plain)[:, :P].abs().max()) > 1e-6 * float(S[:, :P].abs().max())


@pytest.mark.parametrize(
    "name,hyper,batch,schedule",
    [("nesterov", {"momentum": 0.9, "weight_decay": 1e-2}, 16, None), ("adamw", {"weight_decay": 0.1}, None, 0.98)],
    ids=lambda v: str(v),
)
def test_compiled_fine_step_equals_the_separate_gradient_and_update(name, hyper, batch, schedule):
    # compile=True: a fine step of 64 rows or more is one graph (the gradient and the update), the same
    # to rounding as the eager gradient followed by the eager update; fewer rows take those.  (The graph
    # on an eager problem: compile=True sets it up, test_compiled_hessian_vectors_equal_eager.)
    from pintrain.torch.update import CompiledStep

    X, y = small_data()
    rates = None if schedule is None else [0.05 * schedule**k for k in range(300)]
    kw = {"steps": 300, "batch_size": batch, "optimizer": make_optimizer(name, 0.05, **hyper), "coarse": "split"}
    p = TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, lr_schedule=rates, **kw)
    calls = []
    step = CompiledStep(p)
    p.compiled_step = lambda S, ks, out=None: calls.append(S.shape[0]) or step(S, ks, out)
    p.compiled_step.min_rows = step.min_rows
    g = torch.Generator().manual_seed(1)
    S = p.ops.asarray(p.u0).repeat(200, 1)
    S[:, : p.n_params] += 0.1 * torch.randn(200, p.n_params, generator=g, dtype=S.dtype)
    ks = np.arange(200) + 50
    fused = p.step_many(S, ks, 1)
    out = torch.empty_like(S)
    assert p.step_many(S, ks, 1, out=out) is out and torch.equal(out, fused)
    level = torch.zeros((400, S.shape[1]), dtype=S.dtype)  # into strided rows (F-relaxation's), the rest kept
    assert p.step_many(S, ks, 1, out=level[1::2]) is not None and torch.equal(level[1::2], fused)
    assert not level[0::2].any()
    few = p.step_many(S[:10], ks[:10], 1)
    assert calls == [200, 200, 200]  # 10 rows: the separate calls
    p.compiled_step = None
    separate = p.step_many(S, ks, 1)
    assert float((fused - separate).abs().max()) <= 1e-12 * float(separate.abs().max())
    assert float((few - separate[:10]).abs().max()) <= 1e-12 * float(separate.abs().max())


def test_compiled_call_rows_by_device_within_the_samples_bound():
    # a compiled batched call's rows: a power of two, at most 128 on a CPU (cache-sized), at most
    # COMPILED_ROWS_DEVICE elsewhere (a GPU's call costs its launches), never past max_batch_samples;
    # each call's rows padded to the power of two with copies of its first row
    from pintrain.torch.model import COMPILED_ROWS, COMPILED_ROWS_DEVICE, TorchModel

    X, y = small_data()
    model = TorchModel(small_net(), nn.CrossEntropyLoss(), X, y, max_batch_samples=1 << 16)
    assert model.compiled_rows == COMPILED_ROWS == 128 and COMPILED_ROWS_DEVICE > COMPILED_ROWS
    rows = torch.arange(600.0)[:, None]
    batches = Batches(np.zeros((600, 16), dtype=np.int64))  # 16 samples a row
    calls = model.compiled_chunks(600, batches)
    assert [(s, n) for s, n, _ in calls] == [(0, 128), (128, 128), (256, 128), (384, 128), (512, 88)]
    last = calls[-1][2](rows)
    assert last.shape == (128, 1) and torch.equal(last[:88, 0], rows[512:, 0]) and (last[88:] == 512).all()
    model.compiled_rows = COMPILED_ROWS_DEVICE  # what a GPU's model takes
    (call,) = model.compiled_chunks(600, batches)
    assert call[:2] == (0, 600) and torch.equal(call[2](rows)[:600], rows) and call[2](rows).shape == (1024, 1)
    bounded = TorchModel(small_net(), nn.CrossEntropyLoss(), X, y, max_batch_samples=4096)
    bounded.compiled_rows = COMPILED_ROWS_DEVICE  # 4096 samples at 16 a row: 256 rows a call
    assert [(s, n) for s, n, _ in bounded.compiled_chunks(600, batches)] == [(0, 256), (256, 256), (512, 88)]


def test_mean_pool_is_avg_pool2d_and_compiled_cpu_problems_take_it(monkeypatch):
    # compile=True on a CPU steps a copy whose average pools (stride = kernel, no padding) are a reshape
    # and a mean (inductor's avg_pool2d under vmap is the dearer there): the same function to rounding,
    # batched and unbatched, the map floored to whole windows; other pools, and eager problems, keep theirs
    from pintrain.torch.pooling import MeanPool2d, mean_pools, poolable

    g = torch.Generator().manual_seed(0)
    for shape, k in (((5, 3, 8, 8), 2), ((3, 7, 9), (2, 3)), ((2, 1, 5, 5), 2)):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        want = nn.functional.avg_pool2d(x, k)
        got = MeanPool2d(k if isinstance(k, tuple) else (k, k))(x)
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-15, atol=1e-16)
    assert poolable(nn.AvgPool2d(2)) and poolable(nn.AvgPool2d((2, 3), stride=(2, 3)))
    for other in (nn.AvgPool2d(2, stride=1), nn.AvgPool2d(2, padding=1), nn.AvgPool2d(2, ceil_mode=True),
                  nn.AvgPool2d(2, divisor_override=3), nn.MaxPool2d(2)):  # fmt: skip
        assert not poolable(other)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Sequential(nn.AvgPool2d(2, stride=1)),
        nn.Flatten(), nn.Linear(3 * 9, 2),
    ).double()  # fmt: skip
    swapped, names = mean_pools(copy.deepcopy(net))
    assert names == ["2"] and isinstance(swapped[2], MeanPool2d) and isinstance(swapped[3][0], nn.AvgPool2d)
    X = torch.randn(40, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (40,), generator=g)
    kw = {"steps": 8, "batch_size": 8, "optimizer": make_optimizer("sgd", 0.1)}
    eager = TorchProblem(copy.deepcopy(net), nn.CrossEntropyLoss(), X, y, **kw)
    assert eager.model.mean_pooled == [] and isinstance(eager.model.module[2], nn.AvgPool2d)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # the wiring alone: no compiling
    compiled = TorchProblem(copy.deepcopy(net), nn.CrossEntropyLoss(), X, y, compile=True, **kw)
    model = compiled.model
    assert model.mean_pooled == ["2"] and isinstance(model.module[2], MeanPool2d)
    assert isinstance(model.original[2], nn.AvgPool2d)  # the module handed back keeps the user's layers
    W = eager.ops.asarray(eager.u0[None, : eager.n_params]).repeat(6, 1)
    W += 0.1 * torch.randn(W.shape, generator=g, dtype=W.dtype)
    batches = eager.batches(np.arange(6), 1)
    want = eager.model.gradient(W, batches)
    assert float((model.gradient(W, batches) - want).abs().max()) <= 1e-13 * float(want.abs().max())


def test_compiled_hessian_vectors_equal_eager():
    # compile=True compiles the curvature table's Hessian-vector products (when the problem is built)
    X, y = small_data()
    kw = {"steps": 40, "batch_size": 16, "optimizer": make_optimizer("adam", 0.05), "coarse": "curvature"}
    eager = TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, **kw)
    comp = TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, compile=True, **kw)
    assert comp.compiled_sub_interval is not None and comp.compiled_step is not None and comp.lone_chain.compiled
    w = eager.model.w0 * 1.1
    V = torch.randn(5, eager.n_params, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for k, r in ((0, 2), (7, 1), (20, 2)):
        want = eager.model.hessian_vectors(w, eager.batches(np.array([k]), r), V)
        got = comp.model.hessian_vectors(w, comp.batches(np.array([k]), r), V)
        assert float((got - want).abs().max()) <= 1e-12 * float(want.abs().max())
    # the table's entries take several rows at once (eager: one vmap; compiled: the lone graph a row),
    # each row's products its lone call's
    W = torch.stack([w, w * 0.9, w * 1.2])
    Vs = torch.stack([V, V.flip(0), V * 2])
    ks = np.array([0, 7, 20])
    for p in (eager, comp):
        many = p.model.hessian_vectors_many(W, p.batches(ks, 2), Vs)
        for i, k in enumerate(ks):
            one = eager.model.hessian_vectors(W[i], eager.batches(np.array([k]), 2), Vs[i])
            assert float((many[i] - one).abs().max()) <= 1e-12 * float(one.abs().max())
    assert float((comp._curvature_table()._Bt - eager._curvature_table()._Bt).abs().max()) < 1e-9


def test_compile_setting_is_checked_and_a_failed_compile_is_a_message(monkeypatch):
    X, y = small_data()
    with pytest.raises(OptionError, match="compile"):
        fit(small_net(), nn.CrossEntropyLoss(), X, y, steps=8, compile="yes")

    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler found")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    message = "torch.compile could not compile.*no C\\+\\+ compiler found.*compile=False"
    with pytest.raises(UnsupportedModel, match=message):
        TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, steps=8, batch_size=16,
                     optimizer=make_optimizer("sgd", 0.1), compile=True)  # fmt: skip
    monkeypatch.undo()

    from pintrain.torch.chain import LoneSubInterval
    from pintrain.torch.model import TorchModel
    from pintrain.torch.update import CompiledUpdate

    def unsupported(self, *args, **kwargs):
        raise RuntimeError("an operation inductor cannot lower")

    # each compiled part that fails when the problem is built (Adam: the update, the curvature step's
    # lone sub-interval and the table's Hessian-vector products) says which, and what to do
    for cls, name, what in (
        (CompiledUpdate, "fine", "the adam update"),
        (LoneSubInterval, "trial", "the curvature coarse step of one row"),
        (TorchModel, "_hvp", "the Hessian-vector products of the curvature table"),
    ):
        monkeypatch.setattr(cls, name, unsupported)
        with pytest.raises(UnsupportedModel, match=f"could not compile {what}.*cannot lower.*compile=False"):
            TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, steps=8, batch_size=16,
                         optimizer=make_optimizer("adam", 0.1), compile=True)  # fmt: skip
        monkeypatch.undo()


def test_digits_cnn_problem_trains_and_reports_accuracy():
    p = digits_problem("digits-cnn", steps=96, lr=0.05)
    res = solve(p, levels=2, cfactor=4, tol=1e-9)
    ref = p.serial_torch()
    assert res.converged and np.abs(res.states - ref).max() < 1e-8
    m_ser, m_mg = p.metrics(ref[-1]), p.metrics(res.states[-1])
    assert m_ser == m_mg and set(m_ser) == {"train_accuracy", "test_accuracy"}
    assert m_ser["train_accuracy"] > 0.3  # well above chance after 96 steps


def test_full_batch_coarse_steps_count_the_data_once():
    X, y = small_data()
    p = TorchProblem(
        small_net(), nn.CrossEntropyLoss(), X, y, steps=64, batch_size=None, optimizer=make_optimizer("sgd", 0.1)
    )
    W = torch.from_numpy(np.repeat(p.initial()[None], 3, axis=0))
    ks = torch.tensor([0, 8, 40])
    once = p.gradient_sum(W, ks.numpy(), 8)
    assert p.batches(ks.numpy(), 8) == Batches(None, 1, 8.0)  # one pass over the data set, weight 8
    union = Batches(np.tile(np.arange(X.shape[0]), (3, 8)), 8)  # the union: the data set 8 times over
    np.testing.assert_allclose(once, p.model.gradient(W, union), rtol=1e-12, atol=1e-14)
    res = solve(p, levels=3, cfactor=4, tol=1e-10)
    assert res.converged and np.abs(res.states - p.serial_torch()).max() < 1e-8


def test_sampled_coarse_gradient_and_mgrit():
    p = small_problem("momentum", steps=192, lr=0.05)
    p.sample = 2
    W = torch.from_numpy(np.repeat(p.initial()[None, : p.n_params], 3, axis=0))
    ks = np.array([0, 8, 100])
    expected = 4 * (p.gradient_sum(W, ks, 1) + p.gradient_sum(W, ks + 4, 1))  # steps k and k + 4 of 8
    np.testing.assert_allclose(p.gradient_sum(W, ks, 8), expected, rtol=1e-12, atol=1e-14)
    res = solve(p, levels=3, cfactor=4, tol=1e-10, max_iter=60)
    assert res.converged and np.abs(res.states - p.serial_torch()).max() < 1e-8
    with pytest.raises(OptionError, match="sample=0"):
        X, y = small_data()
        fit(small_net(), nn.CrossEntropyLoss(), X, y, sample=0)


def test_float32_reaches_its_own_tolerance():
    X, y = small_data()
    kw = {"steps": 128, "batch_size": 16, "lr": 0.05, "seed": 1, "dtype": "float32"}
    serial = fit(small_net(), nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    res = fit(small_net(), nn.CrossEntropyLoss(), X, y, levels=2, cfactor=4, tol=1e-5, **kw)
    assert res.states.dtype == np.float32 and res.solver.converged
    assert np.abs(res.states - serial.states).max() < 1e-4


def test_default_tolerance_follows_the_dtype_s_round_off_floor():
    from pintrain.mgrit import SolverOptions, default_tol

    eps = float(np.finfo(np.float32).eps)
    assert default_tol(np.float64, 16384, SolverOptions()) == 1e-9  # float64's floor is far below
    assert default_tol(np.float32, 4096, SolverOptions(cfactor=4)) == pytest.approx(100 * eps * 32, rel=0.02)
    # a first cfactor c above 4: a C-point's residual spans c steps of round-off, the margin sqrt(c / 4) more
    assert default_tol(np.float32, 4096, SolverOptions(cfactor=(16, 4))) == pytest.approx(100 * eps * 16 * 2, rel=0.02)
    assert default_tol(np.float32, 4096, SolverOptions(cfactor=2)) == pytest.approx(100 * eps * 45.25, rel=0.02)
    assert default_tol(np.float32, 4096, SolverOptions(norm="inf")) == pytest.approx(100 * eps, rel=0.02)  # inf: no sum
    # a long float32 run: 1e-9 lies below its floor (the solve stops, stalled, and says so); the
    # default converges, to the serial float32 weights within float32's round-off
    X, y = small_data()
    kw = {"steps": 1024, "batch_size": 16, "lr": 0.05, "seed": 1, "dtype": "float32"}
    serial = fit(small_net(), nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    # (a fixed hierarchy of many C-intervals: with few, say the 16 of 2 levels and cfactor 64 that the
    # cost model may pick, FCF iterations reach the float32 loop's own values exactly, residual 0)
    floor = fit(small_net(), nn.CrossEntropyLoss(), X, y, tol=1e-9, allow_unconverged=True, levels=3, **kw)
    assert not floor.solver.converged and floor.solver.stalled
    res = fit(small_net(), nn.CrossEntropyLoss(), X, y, **kw)
    assert res.solver.converged and res.solver.options.tol == default_tol(np.float32, 1024, res.solver.options)
    assert np.abs(res.states - serial.states).max() < 1e-4


def test_cli_float32_takes_a_tolerance_above_its_floor(capsys):
    argv = ["train", "--problem", "digits-mlp", "--steps", "512", "--dtype", "float32", "--levels", "2", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "converged: residual" in out and "tol 0.00013" in out  # 100 eps sqrt(512 / 4)


class UsesItem(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x):
        out = self.lin(x)
        return out * 2 if out.sum().item() > 0 else out  # data-dependent Python control flow


class WithBuffer(nn.Module):
    """A buffer other than BatchNorm's running statistics: state pintrain cannot know the updates of."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)
        self.register_buffer("scale", torch.ones(3))

    def forward(self, x):
        return self.lin(x) * self.scale


@pytest.mark.parametrize(
    "model,message",
    [
        (WithBuffer(), "buffers \\(scale\\)"),
        (nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3)), "dropout"),
        (UsesItem(), "failed under torch.func.*item"),
        ("not a module", "torch.nn.Module"),
    ],
    ids=["buffer", "dropout", "item", "not-a-module"],
)
def test_unsupported_modules_are_refused_with_the_reason(model, message):
    X, y = small_data()
    with pytest.raises(UnsupportedModel, match=message):
        fit(model, nn.CrossEntropyLoss(), X, y, steps=8, batch_size=16)


def test_dropout_in_eval_mode_and_batchnorm_without_running_stats_are_accepted():
    X, y = small_data()
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3)).double().eval()
    res = fit(model, nn.CrossEntropyLoss(), X, y, steps=32, batch_size=16, levels=2, tol=1e-10)
    assert res.solver.converged
    bn = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.Linear(8, 3))
    res = fit(bn, nn.CrossEntropyLoss(), X, y, steps=32, batch_size=16, levels=2, tol=1e-10)
    ref = fit(bn, nn.CrossEntropyLoss(), X, y, steps=32, batch_size=16, method="serial")
    assert res.solver.converged and np.abs(res.states - ref.states).max() < 1e-8


def test_bad_optimizer_settings_are_refused():
    X, y = small_data()
    with pytest.raises(OptionError, match="optimizer"):
        fit(small_net(), nn.CrossEntropyLoss(), X, y, optimizer="lbfgs")
    with pytest.raises(PintrainError, match="takes dampening, momentum"):
        fit(small_net(), nn.CrossEntropyLoss(), X, y, optimizer="momentum", betas=(0.9, 0.9))
    with pytest.raises(OptionError, match="lr"):
        fit(small_net(), nn.CrossEntropyLoss(), X, y, lr=-1.0)
    with pytest.raises(OptionError, match="data"):
        fit(small_net(), nn.CrossEntropyLoss(), X, y[:-1])
    with pytest.raises(OptionError, match="method"):
        fit(small_net(), nn.CrossEntropyLoss(), X, y, method="parallel")
    with pytest.raises(OptionError, match="X='data with NaN/inf' is not allowed"):
        fit(small_net(), nn.CrossEntropyLoss(), X.clone().fill_(float("nan")), y)
    bad = small_net()
    with torch.no_grad():
        bad[0].weight[0, 0] = float("inf")
    with pytest.raises(OptionError, match="finite initial weights"):
        fit(bad, nn.CrossEntropyLoss(), X, y)
    with pytest.raises(UnsupportedModel, match="must return a scalar"):
        fit(small_net(), nn.CrossEntropyLoss(reduction="none"), X, y, steps=8)


def test_divergence_names_the_level_and_suggests_split():
    # linear least squares: fine steps (lr * curvature ~ 0.4) are stable, 'union' steps of 16 lr are not
    g = torch.Generator().manual_seed(0)
    X = 3 * torch.randn(120, 6, generator=g, dtype=torch.float64)
    y = X.sum(1, keepdim=True)
    torch.manual_seed(1)
    kw = {"steps": 256, "batch_size": 16, "lr": 0.02, "levels": 3, "cfactor": 4}
    with pytest.raises(DivergenceError, match="on level 2.*coarse='split'"):
        fit(nn.Linear(6, 1).double(), nn.MSELoss(), X, y, coarse="union", **kw)
    res = fit(nn.Linear(6, 1).double(), nn.MSELoss(), X, y, coarse="split", max_ratio=2, **kw)
    assert res.solver.converged


def test_cli_digits_mlp_prints_accuracy_for_both(capsys, tmp_path):
    argv = [
        "train",
        "--problem",
        "digits-mlp",
        "--steps",
        "128",
        "--levels",
        "2",
        "-q",
        "--json",
        str(tmp_path / "d.json"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "train accuracy" in out
    import json

    rec = json.loads((tmp_path / "d.json").read_text())
    assert rec["serial"]["metrics"] == rec["mgrit"]["metrics"]
    assert rec["max_abs_diff"] < 1e-8


def test_cli_refuses_options_that_do_not_apply(capsys):
    assert main(["train", "--problem", "digits-mlp", "--coarse", "gauss-newton"]) == 2
    assert "'split', 'lagged' or 'curvature'" in capsys.readouterr().err
    assert main(["train", "--problem", "xor", "--optimizer", "adam"]) == 2
    assert "torch problems" in capsys.readouterr().err
    assert main(["train", "--problem", "sine", "--compile"]) == 2
    assert "--compile applies to the torch problems" in capsys.readouterr().err
    assert main(["train", "--problem", "digits-mlp", "--steps", "0"]) == 2
    assert "steps=0 is not allowed" in capsys.readouterr().err
    assert main(["train", "--problem", "digits-mlp", "--optimizer", "adam", "--momentum", "0.9"]) == 2
    assert "'adam' takes amsgrad, betas, eps, maximize, weight_decay, not momentum" in capsys.readouterr().err


def test_fit_starts_from_nested_iteration_unless_told_not_to():
    X, y = small_data()
    kw = {"steps": 128, "batch_size": 16, "optimizer": "adam", "lr": 0.01, "seed": 3, "levels": 3, "cfactor": 4}
    serial = fit(small_net(), nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    nested = fit(small_net(), nn.CrossEntropyLoss(), X, y, tol=1e-10, **kw)
    plain = fit(small_net(), nn.CrossEntropyLoss(), X, y, tol=1e-10, nested=False, **kw)
    assert nested.solver is not None and plain.solver is not None
    assert nested.solver.options.nested and not plain.solver.options.nested
    for res in (nested, plain):
        assert res.solver.converged and np.abs(res.states - serial.states).max() < 1e-8
    with pytest.raises(OptionError, match="nested"):
        fit(small_net(), nn.CrossEntropyLoss(), X, y, nested="yes", **kw)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_the_curvature_table_at_full_rank_is_the_hessian_of_a_step(name):
    # rank = P: the subspace is everything, so the term H_r dw is H dw, with H the Hessian of one step's
    # loss (the mean over the block's first max_ratio batches), whatever Adam's preconditioner D
    from pintrain.training.curvature import build

    X, y = small_data()
    model = nn.Sequential(nn.Linear(6, 3), nn.Tanh(), nn.Linear(3, 3)).double()  # 33 weights
    opt = make_optimizer(name, 0.05)
    p = TorchProblem(model, nn.CrossEntropyLoss(), X, y, steps=40, batch_size=16, optimizer=opt, seed=3)
    p.max_ratio = 2
    table = build(p, p.n_params, 16)
    assert len(table.Bt) == 3  # blocks at steps 0, 16, 32 of the coarse trajectory
    w = p.model.w0
    xb, yb = p.model.X[torch.as_tensor(p.table[0:2].reshape(-1))], p.model.y[torch.as_tensor(p.table[0:2].reshape(-1))]
    H = torch.func.hessian(lambda v: p.model._loss_union_lone(v, xb, yb, 2) / 2)(w)
    dW = torch.randn(2, p.n_params, dtype=torch.float64)
    got = table.term(dW, np.array([3, 15]))  # both rows in block 0 (trajectory state: u0)
    assert float((got - dW @ H).abs().max()) < 1e-9 * float((dW @ H).abs().max())
    # the coarsest chain's one-row path: the same term, to rounding
    lone = table.term_lone(dW[:1], 3)
    assert float((lone - got[0]).abs().max()) < 1e-12 * float(got[0].abs().max())
    # a row's term is the same bit for bit whatever rows share the call (rank-count independence)
    many = torch.randn(7, p.n_params, dtype=torch.float64)
    both = table.term(many, np.array([0, 20, 33, 1, 17, 39, 5]))
    for i, k in enumerate([0, 20, 33, 1, 17, 39, 5]):
        assert torch.equal(both[i], table.term(many[i : i + 1], np.array([k]))[0])
    # ... and whatever chunk it falls in: rows in runs of one entry, cut into chunks of 2 rows
    import pintrain.training.curvature as curvature

    ks = np.array([0, 1, 5, 9, 20, 21, 22, 33, 34])
    dW = torch.randn(9, p.n_params, dtype=torch.float64)
    whole = table.term(dW, ks)
    curvature.TERM_CHUNK_BYTES, before = 2 * p.n_params * p.n_params * 8, curvature.TERM_CHUNK_BYTES
    try:
        assert torch.equal(table.term(dW, ks), whole)
    finally:
        curvature.TERM_CHUNK_BYTES = before
    for i in range(ks.size):
        assert torch.equal(whole[i], table.term(dW[i : i + 1], ks[i : i + 1])[0])


def test_mgrit_with_the_curvature_step_equals_serial_in_no_more_iterations_than_lagged():
    # Adam at a large rate: the curvature step reaches the serial loop's weights, in no more iterations
    # than the lagged step it corrects
    p = small_problem("adam", steps=192, lr=0.05)
    its = {}
    for coarse in ("lagged", "curvature"):
        p.coarse = coarse
        res = solve(p, levels=3, cfactor=4, tol=1e-10, max_iter=60)
        assert res.converged and np.abs(res.states - p.serial_torch()).max() < 1e-8
        its[coarse] = res.iterations
    assert its["curvature"] <= its["lagged"]


def test_auto_coarse_is_curvature_for_momentum_and_adam_and_split_for_sgd():
    X, y = small_data()
    picked = {}
    for name, hyper in [("sgd", {}), ("sgd", {"momentum": 0.9}), ("nesterov", {}), ("adam", {}), ("adamw", {})]:
        p = small_problem(name, steps=64, lr=0.02, **hyper)
        picked[p.optimizer.name] = p.coarse
    assert picked == {"sgd": "split", "momentum": "curvature", "nesterov": "curvature", "adam": "curvature",
                      "adamw": "curvature"}  # fmt: skip
    # a sampled coarse gradient is split's option: auto then picks split
    p = TorchProblem(small_net(), nn.CrossEntropyLoss(), X, y, steps=64, batch_size=16,
                     optimizer=make_optimizer("adam", 0.01), sample=1)  # fmt: skip
    assert p.coarse == "split"
    # fit's default: the serial loop's weights, with the curvature step
    kw = {"steps": 96, "batch_size": 16, "optimizer": "adam", "lr": 0.02, "seed": 3}
    serial = fit(small_net(), nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    res = fit(small_net(), nn.CrossEntropyLoss(), X, y, levels=3, cfactor=4, tol=1e-10, **kw)
    assert res.problem.coarse == "curvature" and res.solver.converged
    assert np.abs(res.states - serial.states).max() < 1e-8


def test_the_curvature_options_rank_and_block():
    X, y = small_data()
    kw = {"steps": 96, "batch_size": 16, "optimizer": "adam", "lr": 0.02, "seed": 3}
    serial = fit(small_net(), nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    res = fit(small_net(), nn.CrossEntropyLoss(), X, y, levels=3, cfactor=4, tol=1e-10,
              coarse_options={"rank": 3, "block": 16}, **kw)  # fmt: skip
    table = res.problem._curvature
    assert len(table.Bt) == 6 and tuple(table.Bt[0].shape) == (3, res.problem.n_params)  # 96 / 16 entries
    assert res.solver.converged and np.abs(res.states - serial.states).max() < 1e-8
    for options, match in [
        ({"rank": 0}, "rank"),
        ({"block": 2.5}, "block"),
        ({"max_ratio": 2}, "its own argument"),
        ({"tau": 1}, "one of max_ratio"),
    ]:
        with pytest.raises(OptionError, match=match):
            fit(small_net(), nn.CrossEntropyLoss(), X, y, coarse_options=options, **kw)
    with pytest.raises(OptionError, match="only with coarse 'curvature'"):
        fit(small_net(), nn.CrossEntropyLoss(), X, y, coarse="split", coarse_options={"rank": 4}, **kw)
    with pytest.raises(OptionError, match="coarse_options"):
        fit(small_net(), nn.CrossEntropyLoss(), X, y, coarse_options=[("rank", 4)], **kw)


@pytest.mark.parametrize("cfactor", [4, 128, 48])
def test_the_nested_start_takes_the_curvature_tables_trajectory(cfactor):
    # the table's trajectory (states every block = 64 steps) is the coarsest level's start: the
    # points on it taken as they are, the ones between stepped from them in batched calls (cfactor 4:
    # spacing 4, 15 calls); spacing 128 takes every other state; spacing 48 (neither a multiple of 64
    # nor a divisor) the sequential solve.  Lone steps only past the trajectory's end.
    from pintrain.mgrit import SolverOptions
    from pintrain.mgrit.solver import _Solver

    p = small_problem("adam", steps=512, lr=0.02)
    s, X = p.trajectory_guess()
    assert s == 64 and X.shape == (8, p.u0.size)
    solver = _Solver(p, SolverOptions(levels=2, cfactor=cfactor, nested=True))
    lev, m = solver.levels[1], cfactor
    lone = []
    step = p.step
    p.step = lambda u, k, mm: lone.append(k) or step(u, k, mm)
    solver.coarsest_start(1)
    p.step = step
    U = lev.U
    if m == 48:  # the sequential solve
        assert lone == [48 * j for j in range(512 // 48)]
        return
    on = [j for j in range(U.shape[0]) if (j * m) % s == 0 and j * m // s < X.shape[0]]
    for j in on:
        assert torch.equal(U[j], X[j * m // s])
    if m == 4:
        for j in range(1, U.shape[0]):
            if j not in on and j < 128:  # the rest of the level: one coarse step from the point before
                assert torch.equal(U[j], p.step_many(U[j - 1 : j], np.array([(j - 1) * m]), m)[0])
        assert lone == [508]  # the last point, past the trajectory's last block
    else:  # X holds steps 0, 64, ..., 448: points 128, 256, 384 from it, 512 one lone step from 384
        assert lone == [384]


def test_a_curvature_table_built_before_the_solve_counts_in_its_time():
    # the cost model builds the table before it times the steps (problem.prepare); the solve's reported
    # time still holds it, and it is built once
    from pintrain.api import train
    from pintrain.mgrit import SolverOptions

    p = small_problem("adam", steps=128, lr=0.02)
    assert p.coarse == "curvature" and p.setup_s == 0.0
    p.prepare()
    built, table = p.setup_s, p._curvature
    assert built > 0 and table is not None
    run = train(p, "mgrit", SolverOptions(levels=3, cfactor=4, tol=1e-10, nested=True))
    assert p._curvature is table and p.setup_s == built  # not built again
    assert run.wall_s >= built and run.solver.converged
    assert np.abs(run.states - p.serial_torch()).max() < 1e-8


def test_cli_digits_takes_coarse_auto():
    from pintrain.cli import build_parser, problem_from_args

    for argv, want in [
        (["train", "--problem", "digits-mlp", "--optimizer", "adam", "--steps", "64"], "curvature"),
        (["train", "--problem", "digits-mlp", "--optimizer", "adam", "--coarse", "auto", "--steps", "64"], "curvature"),
        (["train", "--problem", "digits-mlp", "--steps", "64"], "split"),
        (["train", "--problem", "digits-mlp", "--optimizer", "adam", "--coarse", "lagged", "--steps", "64"], "lagged"),
    ]:
        assert problem_from_args(build_parser().parse_args(argv)).coarse == want


def test_a_curvature_table_too_large_for_memory_is_refused_before_any_work():
    from pintrain import ResourceError

    X, y = small_data()
    wide = nn.Sequential(nn.Linear(6, 1000), nn.Tanh(), nn.Linear(1000, 3))  # about 10,000 weights
    opt = make_optimizer("adam", 0.01)
    with pytest.raises(ResourceError, match="curvature table.*smaller rank or a longer block"):
        TorchProblem(wide, nn.CrossEntropyLoss(), X, y, steps=2000, batch_size=16, optimizer=opt,
                     coarse_options={"rank": 4000, "block": 1})  # fmt: skip


def test_cli_torch_problems_start_from_nested_iteration_as_fit_does(tmp_path, capsys):
    import json

    base = ["train", "--problem", "digits-mlp", "--steps", "64", "--levels", "2", "-q"]
    for extra, want in [([], True), (["--no-nested"], False), (["--nested"], True)]:
        out = tmp_path / f"r{len(extra)}{want}.json"
        assert main([*base, *extra, "--json", str(out)]) == 0
        assert json.loads(out.read_text())["options"]["nested"] is want
    # the numpy problems keep their own default (copies of u0) unless told
    out = tmp_path / "xor.json"
    assert main(["train", "--steps", "256", "--levels", "2", "-q", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["options"]["nested"] is False
    capsys.readouterr()


def test_warm_started_curvature_entries_find_the_cold_entries_directions(monkeypatch):
    # the entries come GROUP (8) at a time; every group after the first starts from the last entry
    # before it and stops once all its Ritz values settle: the top eigenvalues of D^1/2 H D^1/2 it
    # finds are those of cold entries (10 iterations from seeded starts), for Adam, whose
    # preconditioner changes most right after the first entry
    import pintrain.training.curvature as curvature

    p = small_problem("adam", steps=160, lr=0.01)
    p.max_ratio = 2
    warm = curvature.build(p, 4, 4)  # 40 entries: 5 groups
    calls = []
    entries = curvature._entries

    def cold(hv, ops, back, roots, rank, seeds, start=None):
        calls.append((len(seeds), start is not None))
        return entries(hv, ops, back, roots, rank, seeds, None)

    monkeypatch.setattr(curvature, "_entries", cold)
    reference = curvature.build(p, 4, 4)
    assert calls == [(8, False)] + [(8, True)] * 4  # every group after the first offered a warm start
    assert len(warm.s) == len(reference.s) == 40
    for s_warm, s_cold in zip(warm.s, reference.s, strict=True):
        top_w, top_c = np.asarray(s_warm)[-2:], np.asarray(s_cold)[-2:]
        assert np.abs(top_w - top_c).max() <= 1e-2 * np.abs(top_c).max()
    # the trajectory's states, one per entry, are what the nested start takes
    assert warm.trajectory.shape == (40, p.u0.size) and torch.equal(warm.trajectory[0], torch.as_tensor(p.u0))
