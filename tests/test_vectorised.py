"""The vectorised path (one ``step_many`` call for many independent starts) gives the same states as
a loop of single steps, for every built-in problem, and MGRIT gives the same answer either way."""

import numpy as np
import pytest

from pintrain.errors import OptionError
from pintrain.mgrit import serial_solve, solve
from pintrain.problems import Dahlquist, Heat1D
from pintrain.training import model_problem
from pintrain.training.schedule import coarse_steps


def builtin_problems():
    yield "dahlquist", Dahlquist(256)
    yield "heat", Heat1D(256, nx=15, forcing=Heat1D.manufactured)
    for coarse in ("union", "split", "gauss-newton"):
        yield f"xor-{coarse}", model_problem("xor", steps=256, coarse=coarse)
        yield f"sine-{coarse}", model_problem("sine", steps=256, coarse=coarse)
    for coarse in ("naive", "solver1", "solver2", "gauss-newton"):
        yield f"paper1-{coarse}", model_problem("paper1", steps=256, coarse=coarse)
    for coarse in ("solver1", "solver2"):
        yield f"paper2-{coarse}", model_problem("paper2", steps=256, coarse=coarse, examples=50)


PROBLEMS = dict(builtin_problems())


class Loop:
    """The same problem without ``step_many``: the solver falls back to a loop of ``step``."""

    def __init__(self, problem):
        self.problem = problem
        self.n_steps = problem.n_steps

    def initial(self):
        return self.problem.initial()

    def step(self, u, k, m):
        return self.problem.step(u, k, m)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("m", [1, 4, 16])
def test_step_many_equals_loop_of_steps_bitwise(name, m):
    problem = PROBLEMS[name]
    u0 = problem.initial()
    rng = np.random.default_rng(3)
    U = u0[None, :] + 0.1 * rng.standard_normal((37, u0.size))
    ks = rng.integers(0, problem.n_steps - m + 1, size=37)
    batched = problem.step_many(U, ks, m)
    looped = np.stack([problem.step(U[i], int(ks[i]), m) for i in range(len(ks))])
    np.testing.assert_array_equal(batched, looped)
    # a strided view of a bigger array (how the solver passes F-points) gives the same rows
    big = np.repeat(U, 3, axis=0)
    np.testing.assert_array_equal(problem.step_many(big[::3], ks, m), batched)


@pytest.mark.parametrize("name", ["heat", "xor-gauss-newton", "sine-gauss-newton", "xor-union", "paper1-solver2"])
def test_mgrit_same_states_vectorised_and_looped(name):
    problem = PROBLEMS[name]
    kw = {"levels": 3, "cfactor": (8, 4), "nested": True}
    if name == "xor-union":
        kw = {"levels": 2, "cfactor": 4}
    if name.startswith("paper1"):  # the paper's settings
        kw = {"levels": 10, "cfactor": 2, "max_coarse": 10, "guess": "zero"}
    fast = solve(problem, tol=1e-10, **kw)
    slow = solve(Loop(problem), tol=1e-10, **kw)
    assert fast.converged and fast.iterations == slow.iterations
    np.testing.assert_array_equal(fast.states, slow.states)
    assert np.abs(fast.states - serial_solve(problem)).max() < 1e-8


def test_full_batch_union_counts_the_data_once_with_weight_m():
    p = model_problem("xor", steps=64)
    W = p.initial()[None, :] + np.random.default_rng(0).normal(size=(5, p.model.n_params))
    ks = np.array([0, 3, 8, 20, 40])
    once = p.gradient_sum(W, ks, 8)
    m_times = sum(p.gradient_sum(W, ks + j, 1) for j in range(8))
    np.testing.assert_allclose(once, m_times, rtol=1e-13, atol=1e-15)
    with pytest.raises(IndexError, match="past the last training step"):
        p.gradient_sum(W, np.array([60]), 8)


@pytest.mark.parametrize("name,m", [("xor", 4), ("sine", 2), ("sine", 16)])
def test_gauss_newton_step_equals_the_dense_formula(name, m):
    # R x R (Woodbury) when the union has fewer outputs than weights, P x P otherwise; both must be
    # w - (I + lr H)^{-1} lr g with H = scale J^T J the Gauss-Newton Hessian of the m step losses.
    p = model_problem(name, steps=128, coarse="gauss-newton", lr=0.3)
    W = p.initial()[None, :] + 0.2 * np.random.default_rng(1).normal(size=(6, p.model.n_params))
    ks = np.arange(6) * 5
    g = p.gradient_sum(W, ks, m)
    J, _, scale = p.linearization(W, ks, m)
    H = scale * np.matmul(J.transpose(0, 2, 1), J)  # the Gauss-Newton Hessian of the m step losses
    A = np.eye(W.shape[1])[None] + p.lr * H
    dense = W - np.linalg.solve(A, p.lr * g[:, :, None])[:, :, 0]
    np.testing.assert_allclose(p.step_many(W, ks, m), dense, rtol=1e-11, atol=1e-13)


def test_coarse_steps_spread_a_sample_evenly():
    steps, weight = coarse_steps(np.array([0, 16]), 8, 3)
    np.testing.assert_array_equal(steps, [[0, 2, 5], [16, 18, 21]])
    assert weight == 8 / 3
    steps, weight = coarse_steps(np.array([4]), 4, None)
    np.testing.assert_array_equal(steps, [[4, 5, 6, 7]])
    assert weight == 1.0
    assert coarse_steps(np.array([4]), 4, 9)[1] == 1.0  # a sample larger than m takes all m


@pytest.mark.parametrize("sample", [1, 3, 8])
def test_sampled_coarse_gradient_is_the_weighted_sum_of_its_batches(sample):
    p = model_problem("sine", steps=256, coarse="union", sample=sample)
    W = p.initial()[None, :] + 0.1 * np.random.default_rng(2).normal(size=(4, p.model.n_params))
    ks = np.array([0, 16, 100, 200])
    m = 16
    expected = sum((m / sample) * p.gradient_sum(W, ks + (i * m) // sample, 1) for i in range(sample))
    np.testing.assert_allclose(p.gradient_sum(W, ks, m), expected, rtol=1e-12, atol=1e-14)


def test_mgrit_with_sampled_coarse_steps_still_reaches_serial():
    p = model_problem("sine", steps=2048, coarse="gauss-newton", sample=4)
    res = solve(p, levels=4, cfactor=(16, 4), tol=1e-10, nested=True, max_iter=60)
    assert res.converged
    assert np.abs(res.states - serial_solve(p)).max() < 1e-8


@pytest.mark.parametrize("options,text", [({"sample": 0}, "sample=0"), ({"subsample": 2}, "subsample")])
def test_bad_coarse_options_are_refused(options, text):
    with pytest.raises(OptionError, match=text):
        model_problem("sine", steps=64, **options)


@pytest.mark.parametrize("name", ["sine-union", "sine-split", "paper2-solver1", "xor-gauss-newton"])
@pytest.mark.parametrize("m", [1, 4])
def test_a_step_in_passes_equals_one_pass_bitwise(name, m, monkeypatch):
    """Batched steps take their rows in cache-sized passes (``ops.pass_bytes``): the same rows either way."""
    problem = PROBLEMS[name]
    u0 = problem.initial()
    rng = np.random.default_rng(5)
    U = u0[None, :] + 0.1 * rng.standard_normal((37, u0.size))
    ks = rng.integers(0, problem.n_steps - m + 1, size=37)
    whole = problem.step_many(U, ks, m)
    monkeypatch.setattr(type(problem.ops), "pass_bytes", 5 * u0.size * u0.itemsize)  # passes of 5 rows
    np.testing.assert_array_equal(problem.step_many(U, ks, m), whole)


def test_a_torch_step_in_passes_equals_one_pass_bitwise(monkeypatch):
    pytest.importorskip("torch")
    from pintrain.torch.digits import digits_problem

    for optimizer in ("adam", "nesterov"):
        p = digits_problem("digits-mlp", steps=500, optimizer=optimizer, coarse="split")
        u0 = np.asarray(p.initial())
        U = u0[None, :] + 0.01 * np.random.default_rng(0).standard_normal((50, u0.size))
        for m in (1, 8):
            ks = np.arange(50) * m
            whole = p.step_many(p.ops.asarray(U), ks, m)
            monkeypatch.setattr(p.ops, "pass_bytes", 7 * u0.size * 8)  # passes of 7 rows
            np.testing.assert_array_equal(p.ops.to_numpy(p.step_many(p.ops.asarray(U), ks, m)), p.ops.to_numpy(whole))
            monkeypatch.undo()
