"""One training concept, two backends: the numpy MLP and a torch module are two implementations of
the same model protocol, stepped by the same optimizers and coarse propagators."""

import numpy as np
import pytest
import torch
from torch import nn

from pintrain import OptionError
from pintrain.mgrit import SolverOptions, serial_solve, solve
from pintrain.torch import TorchProblem
from pintrain.training import (
    MLP,
    SGD,
    Adam,
    Momentum,
    NumpyModel,
    Schedule,
    TrainingProblem,
    make_optimizer,
    model_problem,
)

OPTIMIZERS = [
    SGD(0.05),
    SGD(0.05, weight_decay=1e-3),
    Momentum(0.05, momentum=0.8, dampening=0.1),
    Momentum(0.05, nesterov=True),
    Adam(0.01),
    Adam(0.01, weight_decay=0.01, decoupled=True),
]


def sine_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-np.pi, np.pi, (n, 1))
    return X, np.sin(X)


def both_backends(optimizer, coarse="union", steps=64, batch_size=8):
    """The same 1-8-1 tanh network, data, schedule and optimizer as a numpy and a torch problem."""
    X, Y = sine_data()
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    # the numpy MLP's flat layout is torch's: each layer's (out x in) weight, then its bias
    w0 = torch.cat([p.detach().reshape(-1) for p in module.parameters()]).numpy()
    net = MLP((1, 8, 1), hidden="tanh", output="identity", bias=True, loss="mse")
    schedule = Schedule(X.shape[0], batch_size, seed=3)
    numpy_problem = TrainingProblem(NumpyModel(net, X, Y, w0), schedule, optimizer, steps, coarse, max_ratio=4)

    def half_mse(out, y):  # the numpy MLP's "mse": 1/2 the mean squared error
        return 0.5 * ((out - y) ** 2).mean()

    torch_problem = TorchProblem(
        module,
        half_mse,
        X,
        Y,
        steps=steps,
        batch_size=batch_size,
        optimizer=optimizer,
        seed=3,
        coarse=coarse,
        max_ratio=4,
    )
    return numpy_problem, torch_problem


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: f"{o.name}-{o.hyper}")
def test_numpy_and_torch_backends_give_the_same_evolution(optimizer):
    a, b = both_backends(optimizer)
    np.testing.assert_array_equal(a.initial(), b.initial())
    ref = b.serial_states()  # the torch.optim loop
    np.testing.assert_allclose(serial_solve(a), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(serial_solve(b), ref, rtol=0, atol=1e-12)
    # the same coarse steps: one name, one algorithm, whatever the backend
    ks = np.array([0, 8, 24, 40])
    for coarse in ("union", "split", "lagged"):
        a.coarse = b.coarse = coarse
        np.testing.assert_allclose(a.step_many(ref[ks], ks, 8), b.step_many(ref[ks], ks, 8), rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.losses(ref), b.losses(ref), rtol=1e-12)
    np.testing.assert_allclose(a.step_losses(ref), b.step_losses(ref), rtol=1e-12)


@pytest.mark.parametrize("optimizer", [Momentum(0.5), Adam(0.05)], ids=["momentum", "adam"])
def test_the_numpy_backend_trains_with_any_optimizer_by_mgrit(optimizer):
    p = model_problem("xor", steps=256)  # full-batch XOR, here with a stateful optimizer
    p = TrainingProblem(p.model, p.schedule, optimizer, 256, "split", max_ratio=2)
    res = solve(p, levels=3, cfactor=4, tol=1e-10, max_iter=60)
    assert res.converged and np.abs(res.states - serial_solve(p)).max() < 1e-8


def test_split_means_sub_intervals_on_their_own_batches():
    p, _ = both_backends(SGD(0.05), coarse="split", steps=64)
    p.max_ratio = 4
    W = p.initial()[None].repeat(2, axis=0)
    ks = np.array([0, 16])
    # m = 8 with max_ratio 4: two union steps, over steps k..k+3 and then k+4..k+7
    first = W - p.lr * p.gradient_sum(W, ks, 4)
    expected = first - p.lr * p.gradient_sum(first, ks + 4, 4)
    np.testing.assert_array_equal(p.step_many(W, ks, 8), expected)


@pytest.mark.parametrize("optimizer", [Momentum(0.05, nesterov=True), Adam(0.01)], ids=["nesterov", "adam"])
def test_lagged_takes_each_step_on_its_own_batch_with_the_gradient_at_the_sub_interval_start(optimizer):
    p, _ = both_backends(optimizer, coarse="lagged", steps=64)  # max_ratio 4
    S = p.serial_states()[[3, 20]]
    ks = np.array([3, 20])
    expected = S.copy()
    for start in (0, 4):  # m = 8: two sub-intervals of 4 steps
        W = expected[:, : p.n_params].copy()
        for j in range(4):
            G = p.gradient_sum(W, ks + start + j, 1)  # batch k + j's gradient at the sub-interval's start
            expected = p.optimizer.fine(expected, G, ks + start + j)
    np.testing.assert_allclose(p.step_many(S, ks, 8), expected, rtol=0, atol=1e-14)
    p.max_ratio = 1  # sub-intervals of one step: the fine steps themselves
    ref = p.serial_states()
    np.testing.assert_allclose(p.step_many(ref[ks], ks, 8), ref[ks + 8], rtol=0, atol=1e-13)


def test_lagged_is_split_for_plain_sgd():
    p, _ = both_backends(SGD(0.05), coarse="lagged", steps=64)
    S = p.serial_states()[[0, 8, 40]]
    ks = np.array([0, 8, 40])
    lagged = p.step_many(S, ks, 8)
    p.coarse = "split"
    np.testing.assert_allclose(lagged, p.step_many(S, ks, 8), rtol=0, atol=1e-14)


def test_lagged_refuses_sampled_batches():
    p = model_problem("sine", steps=64)
    with pytest.raises(OptionError, match="sample.*every step on its own batch"):
        TrainingProblem(p.model, p.schedule, Adam(0.01), 64, "lagged", sample=2)


def test_a_propagator_the_backend_cannot_run_is_refused_with_the_reason():
    with pytest.raises(OptionError, match="output Jacobian.*'union' or 'split'"):
        both_backends(SGD(0.05), coarse="gauss-newton")
    p = model_problem("sine", steps=64)
    with pytest.raises(OptionError, match="plain SGD.*'adam'"):
        TrainingProblem(p.model, p.schedule, Adam(0.01), 64, "gauss-newton")
    with pytest.raises(OptionError, match="coarse"):
        TrainingProblem(p.model, p.schedule, SGD(0.1), 64, "newton")


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: SGD(-1.0), "lr"),
        (lambda: SGD(float("nan")), "lr"),
        (lambda: SGD(0.1, weight_decay=-1), "weight_decay"),
        (lambda: Momentum(0.1, momentum=1.5), "momentum"),
        (lambda: Momentum(0.1, dampening=1.0), "dampening"),
        (lambda: Momentum(0.1, dampening=0.5, nesterov=True), "dampening"),
        (lambda: Adam(0.1, betas=(0.9,)), "betas"),
        (lambda: Adam(0.1, betas=(0.9, 1.0)), "betas"),
        (lambda: Adam(0.1, eps=0), "eps"),
        (lambda: make_optimizer("rmsprop", 0.1), "optimizer"),
    ],
)
def test_every_optimizer_validates_its_own_hyper_parameters(make, field):
    with pytest.raises(OptionError, match=f"{field}="):
        make()


def test_optimizers_are_small_records():
    opt = make_optimizer("adamw", 1e-3)
    assert isinstance(opt, Adam) and opt.decoupled and opt.weight_decay == 0.01 and opt.name == "adamw"
    assert opt.slots == 2 and opt.counts_steps and opt.state_size(10) == 31
    assert opt.with_lr(0.5).lr == 0.5 and opt.lr == 1e-3
    assert make_optimizer("nesterov", 0.1).name == "nesterov" and make_optimizer("sgd", 0.1) == SGD(0.1)


def test_solve_takes_options_or_keywords_not_both():
    p = model_problem("xor", steps=64)
    with pytest.raises(OptionError, match="given with levels"):
        solve(p, SolverOptions(levels=2), levels=3)  # even a keyword equal to its default
    with pytest.raises(OptionError, match="solve\\(\\) keyword='level'"):
        solve(p, level=2)
    a, b = solve(p, levels=2, cfactor=4), solve(p, SolverOptions(levels=2, cfactor=4))
    assert a.iterations == b.iterations and np.array_equal(a.states, b.states)
    opts = SolverOptions(levels=4, cfactor=(8, 2), max_coarse=10, rtol=1e-3)
    assert SolverOptions.from_dict(opts.to_dict()) == opts


def test_the_curvature_step_needs_hessian_vector_products():
    p = model_problem("sine", steps=64)  # the numpy backend gives gradients and Jacobians, not Hessians
    with pytest.raises(OptionError, match="curvature.*Hessian-vector products"):
        TrainingProblem(p.model, p.schedule, Adam(0.01), 64, "curvature")


def test_auto_coarse_is_split_on_a_model_without_hessians():
    p = model_problem("sine", steps=64)
    assert TrainingProblem(p.model, p.schedule, Adam(0.01), 64, "auto").coarse == "split"


def test_orthonormal_rows_spans_the_rows_and_completes_a_dependent_set():
    from pintrain.training.curvature import orthonormal_rows

    rng = np.random.default_rng(0)
    A = rng.standard_normal((3, 6, 40))  # three sets of 6 rows, each on its own
    Q = orthonormal_rows(A)
    for a, q in zip(A, Q, strict=True):
        np.testing.assert_allclose(q @ q.T, np.eye(6), atol=1e-13)
        np.testing.assert_allclose(a @ q.T @ q, a, atol=1e-12)  # the same row space
        np.testing.assert_array_equal(orthonormal_rows(a[None])[0], q)  # whatever the sets beside it
    A[1, 3] = A[1, 0] + 2 * A[1, 1]  # dependent rows in one set: still an orthonormal set of 6
    Q = orthonormal_rows(A)
    for a, q in zip(A, Q, strict=True):
        np.testing.assert_allclose(q @ q.T, np.eye(6), atol=1e-12)
        np.testing.assert_allclose(a @ q.T @ q, a, atol=1e-10)  # a basis that holds the rows
