"""The coarse propagators on linear least squares, where the exact m-step map of the optimizer is
known: each propagator is the formula its documentation gives, and each approximates the exact
map to the order it should (the study that compares them: benchmarks/coarse_lsq.py)."""

import numpy as np
import pytest

from pintrain.mgrit import serial_solve, solve
from pintrain.training import SGD, Momentum, NumpyModel, Schedule, TrainingProblem
from pintrain.training.mlp import MLP

P, N_SAMPLES = 6, 40


def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_SAMPLES, P)) * np.linspace(0.3, 1.5, P)
    y = X @ rng.standard_normal(P) + 0.1 * rng.standard_normal(N_SAMPLES)
    return X, y


def lsq(optimizer, coarse="union", steps=256, **options):
    """Full-batch linear least squares, L(w) = |X w - y|^2 / (2 n): a linear model (no bias, no activation)."""
    X, y = data()
    model = MLP((P, 1), output="identity", bias=False, loss="mse")
    w0 = np.zeros(P)
    return TrainingProblem(
        NumpyModel(model, X, y, w0), Schedule(N_SAMPLES, None, 0), optimizer, steps, coarse, **options
    )


def hessian():
    X, y = data()
    H = X.T @ X / N_SAMPLES
    return H, np.linalg.solve(H, X.T @ y / N_SAMPLES)  # H and the minimiser w*


def fine_map(lr, mu=None):
    """The fine step as a matrix on the error (w - w*[, v]): SGD, or torch's heavy ball (dampening 0)."""
    H, _ = hessian()
    Id = np.eye(P)
    if mu is None:
        return Id - lr * H
    return np.block([[Id - lr * H, -lr * mu * Id], [H, mu * Id]])


def error_of(problem, S):
    _, w_star = hessian()
    E = np.array(S, dtype=float, copy=True)
    E[:, :P] -= w_star
    return E


def start(problem, rows=5, seed=1):
    u0 = problem.initial()
    rng = np.random.default_rng(seed)
    S = u0[None, :] + rng.standard_normal((rows, u0.size))
    return S


@pytest.mark.parametrize("mu", [None, 0.9])
def test_the_fine_step_is_the_exact_affine_map(mu):
    lr = 0.1
    p = lsq(SGD(lr) if mu is None else Momentum(lr, momentum=mu))
    S = start(p)
    # from step 1: torch.optim's first step sets the buffer to the gradient, whatever it held
    got = error_of(p, p.step_many(S, np.ones(5, dtype=np.int64), 1))
    np.testing.assert_allclose(got, error_of(p, S) @ fine_map(lr, mu).T, atol=1e-12)


def test_sgd_propagators_are_their_formulas():
    H, _ = hessian()
    lr, m, Id = 0.1, 8, np.eye(P)
    S = start(lsq(SGD(lr)))
    ks = np.zeros(5, dtype=np.int64)
    formulas = {
        "union": Id - m * lr * H,  # one step of m times the rate
        "split": np.linalg.matrix_power(Id - 2 * lr * H, m // 2),  # max_ratio 2: four union steps of 2
        "gauss-newton": np.linalg.inv(Id + m * lr * H),  # backward Euler of the gradient flow
    }
    for coarse, Psi in formulas.items():
        p = lsq(SGD(lr), coarse, max_ratio=2) if coarse == "split" else lsq(SGD(lr), coarse)
        got = error_of(p, p.step_many(S, ks, m))
        np.testing.assert_allclose(got, error_of(p, S) @ Psi.T, atol=1e-12, err_msg=coarse)
    # theta = 1/2: the trapezoidal rule (Id + m lr H / 2)^{-1} (Id - m lr H / 2)
    p = lsq(SGD(lr), "gauss-newton", theta=0.5)
    Psi = np.linalg.solve(Id + m * lr * H / 2, Id - m * lr * H / 2)
    np.testing.assert_allclose(error_of(p, p.step_many(S, ks, m)), error_of(p, S) @ Psi.T, atol=1e-12)


def test_momentum_union_is_m_steps_with_the_gradient_frozen():
    H, _ = hessian()
    lr, mu, m, Id = 0.05, 0.9, 8, np.eye(P)
    p = lsq(Momentum(lr, momentum=mu))
    s = np.array([(1 - mu**j) / (1 - mu) for j in range(1, m + 1)])  # v_j = mu^j v0 + s_j g0
    Psi = np.block(
        [
            [Id - lr * s.sum() * H, -lr * sum(mu**j for j in range(1, m + 1)) * Id],
            [s[-1] * H, mu**m * Id],
        ]
    )
    S = start(p)
    got = error_of(p, p.step_many(S, np.ones(5, dtype=np.int64), m))  # from step 1, as above
    np.testing.assert_allclose(got, error_of(p, S) @ Psi.T, atol=1e-12)


@pytest.mark.parametrize(
    "coarse,options,leading",
    [
        ("union", {}, lambda m: -m * (m - 1) / 2),
        ("split", {"max_ratio": 2}, lambda m: -m / 2),
        ("gauss-newton", {}, lambda m: m * (m + 1) / 2),
        ("gauss-newton", {"theta": 0.5}, lambda m: m / 2),
    ],
    ids=["union", "split2", "backward-euler", "trapezoid"],
)
def test_each_propagator_departs_from_the_exact_m_step_map_by_its_leading_term(coarse, options, leading):
    """Psi - Phi^m = c lr^2 H^2 + O(lr^3) against the exact map Phi^m = (Id - lr H)^m, with c from the
    expansions: union -m(m-1)/2, split (max_ratio 2) -m/2, backward Euler m(m+1)/2, trapezoidal m/2
    (why split and theta = 1/2 need fewer iterations: benchmarks/coarse_lsq.py)."""
    H, _ = hessian()
    lr, m = 0.0005, 8
    p = lsq(SGD(lr), coarse, **options)
    S = start(p)
    E = error_of(p, S)
    got = error_of(p, p.step_many(S, np.zeros(5, dtype=np.int64), m)) - E @ np.linalg.matrix_power(fine_map(lr), m).T
    predicted = leading(m) * lr**2 * E @ (H @ H).T
    np.testing.assert_allclose(got, predicted, rtol=0.05, atol=0.05 * np.abs(predicted).max())


@pytest.mark.parametrize(
    "optimizer,coarse,options",
    [
        (SGD(0.5), "gauss-newton", {}),
        (SGD(0.5), "gauss-newton", {"theta": 0.5}),
        (SGD(0.3), "split", {"max_ratio": 2}),
        (Momentum(0.05, momentum=0.9), "split", {"max_ratio": 2}),
    ],
    ids=["sgd-gn", "sgd-trapezoid", "sgd-split", "momentum-split"],
)
def test_mgrit_with_each_stable_propagator_reaches_serial_training(optimizer, coarse, options):
    p = lsq(optimizer, coarse, steps=512, **options)
    res = solve(p, levels=3, cfactor=4, tol=1e-10, max_iter=40)
    assert res.converged and np.abs(res.states - serial_solve(p)).max() < 1e-9
