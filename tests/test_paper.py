"""Schroder (2017)'s model problems and solvers: the appendix's trajectory bit for bit, the learning
rate and data rules per level, MGRIT = serial training for every solver, the paper's cost model."""

import math

import numpy as np
import pytest

from pintrain.errors import OptionError
from pintrain.mgrit import Hierarchy, SolverOptions, serial_solve, solve
from pintrain.reproduce import PAPER_TABLES, paper_sigma
from pintrain.training import model_problem
from pintrain.training.paper import XOR_X, addition_data
from pintrain.training.schedule import Schedule


def appendix_loop(n_steps, alpha=1.0):
    """A plain transcription of the paper's Appendix A (Trask's 11 lines, with alpha)."""

    def nonlin(x, deriv=False):
        if deriv:
            return x * (1 - x)
        return 1 / (1 + np.exp(-x))

    X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
    y = np.array([[0, 1, 1, 0]]).T
    np.random.seed(1)  # noqa: NPY002 -- the appendix, verbatim
    syn0 = 2 * np.random.random((3, 4)) - 1  # noqa: NPY002
    syn1 = 2 * np.random.random((4, 1)) - 1  # noqa: NPY002
    out = [np.concatenate([syn0.ravel(), syn1.ravel()])]
    for _ in range(n_steps):
        l0 = X
        l1 = nonlin(np.dot(l0, syn0))
        l2 = nonlin(np.dot(l1, syn1))
        l2_error = y - l2
        l2_delta = l2_error * nonlin(l2, deriv=True)
        l1_error = l2_delta.dot(syn1.T)
        l1_delta = l1_error * nonlin(l1, deriv=True)
        syn1 += alpha * l1.T.dot(l2_delta)
        syn0 += alpha * l0.T.dot(l1_delta)
        out.append(np.concatenate([syn0.ravel(), syn1.ravel()]))
    return np.array(out)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_problem1_serial_trajectory_is_the_appendix_bit_for_bit(alpha):
    problem = model_problem("paper1", steps=1000, lr=alpha)
    states = serial_solve(problem)
    np.testing.assert_array_equal(states, appendix_loop(1000, alpha))
    losses = problem.losses(states)
    assert losses[-1] < 0.5 * losses[0]  # it learns XOR


def test_problem2_network_and_data():
    p = model_problem("paper2", steps=10)
    assert p.model.net.sizes == (24, 128, 64, 12) and p.model.n_params == 12032 and p.initial().size == 12032
    X, Y, _ = addition_data(500, 12, 1)
    assert X.shape == (500, 24) and Y.shape == (500, 12)
    powers = 2 ** np.arange(11, -1, -1)
    left, right, total = X[:, :12] @ powers, X[:, 12:] @ powers, Y @ powers
    np.testing.assert_array_equal(left + right, total)  # the target is the sum, in 12 bits
    assert left.max() < 2**11 and right.max() < 2**11
    assert model_problem("paper2", steps=10, examples=50).model.X.shape == (50, 24)


def test_serialized_schedule_trains_on_example_k_plus_1_mod_K():
    s = Schedule(4, 1, shuffle=False, offset=1)
    np.testing.assert_array_equal(s.table(9).ravel(), [1, 2, 3, 0, 1, 2, 3, 0, 1])
    for k in range(9):
        np.testing.assert_array_equal(s.batch(k), [(k + 1) % 4])
    np.testing.assert_array_equal(s.batches(np.array([2, 5]), 3), [[3, 0, 1], [2, 3, 0]])
    p = model_problem("paper1", steps=64, coarse="solver2")
    assert p.schedule.batch_size == 1 and p.schedule.offset == 1


def test_learning_rate_rules_per_level():
    def lr(coarse, m, **kw):
        return model_problem("paper1", steps=64, coarse=coarse, **kw).coarse_lr(m)

    # naive: alpha(b) everywhere; solver1/2: min(2^l alpha(b), alpha(max)) with spacing 2^l
    assert [lr("naive", m) for m in (2, 4, 64)] == [1.0, 1.0, 1.0]
    assert [lr("solver1", m) for m in (1, 2, 4, 8, 16, 64)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [lr("solver2", m, alpha_max=30.0) for m in (2, 16, 32)] == [2.0, 16.0, 30.0]
    assert [lr("solver1", m, alpha_max=None) for m in (64,)] == [64.0]
    slow = [lr("solver1", m, alpha_growth=1.25, alpha_max=100.0) for m in (2, 4, 8)]
    np.testing.assert_allclose(slow, [1.25, 1.25**2, 1.25**3], rtol=1e-15)
    p2 = model_problem("paper2", steps=64, lr=0.025)
    assert [p2.coarse_lr(m) for m in (2, 4, 8, 16)] == [0.05, 0.1, 0.2, 0.2]


def test_coarse_steps_use_the_data_rule_of_their_solver():
    rng = np.random.default_rng(0)
    W = model_problem("paper1", steps=64).initial()[None] + 0.3 * rng.standard_normal((3, 16))
    full = model_problem("paper1", steps=64, coarse="solver1", data="full")
    fine_all = model_problem("paper1", steps=64, lr=4.0, coarse="solver1", data="full")
    ks = np.array([0, 8, 16])  # level of spacing 4: alpha = 4, one step on all four samples
    np.testing.assert_array_equal(full.step_many(W, ks, 4), fine_all.step_many(W, ks, 1))
    # solver2: coarse step i (fine point 4i) trains on the single example (i + 1) mod 4
    ser = model_problem("paper1", steps=64, coarse="solver2")
    got = ser.step_many(W, ks, 4)
    for row, k in enumerate(ks):
        i = k // 4
        g = ser.model.net.gradient(W[row : row + 1], XOR_X[[(i + 1) % 4]], ser.model.Y[[(i + 1) % 4]], 1.0)
        np.testing.assert_array_equal(got[row], W[row] - 4.0 * g[0])
    # the naive solver keeps alpha(b) and all the data
    naive = model_problem("paper1", steps=64, coarse="naive", data="serialized")
    assert naive.schedule.batch_size == 1
    np.testing.assert_array_equal(naive.step_many(W, ks, 4), full.step_many(W, ks, 1))


def test_bad_coarse_options_are_refused():
    with pytest.raises(OptionError, match="alpha_growth"):
        model_problem("xor", steps=64, coarse="union", alpha_growth=2.0)
    with pytest.raises(OptionError, match="alpha_growth"):
        model_problem("paper1", steps=64, coarse="naive", alpha_growth=2.0)
    with pytest.raises(OptionError, match="alpha_max"):
        model_problem("paper1", steps=64, lr=1.0, coarse="solver1", alpha_max=0.5)
    with pytest.raises(OptionError, match="alpha_growth"):
        model_problem("paper1", steps=64, coarse="solver1", alpha_growth=0.5)
    with pytest.raises(OptionError, match="sample"):
        model_problem("paper1", steps=64, coarse="solver2", sample=2)
    with pytest.raises(OptionError, match="data"):
        model_problem("paper1", steps=64, data="minibatch")


def test_levels_coarsen_until_at_most_ten_steps():
    opts = SolverOptions(levels=64, cfactor=2, max_coarse=10)
    assert [lev.n_steps for lev in Hierarchy(100, opts)] == [100, 50, 25, 12, 6]
    assert len(Hierarchy(25600, opts)) == 13 and Hierarchy(25600, opts)[-1].n_steps == 6
    assert len(Hierarchy(8, opts)) == 1  # nothing to coarsen
    with pytest.raises(OptionError, match="max_coarse"):
        SolverOptions(max_coarse=0)


CASES = [
    ("paper1", {}, "naive", "two-level", 1.0, 256),
    ("paper1", {}, "solver1", "two-level", 1.0, 256),
    ("paper1", {}, "solver1", "F", 0.5, 512),
    ("paper1", {}, "solver1", "V", 1.0, 256),
    ("paper1", {}, "solver2", "two-level", 1.0, 256),
    ("paper1", {"alpha_max": 30.0}, "solver2", "F", 0.1, 512),
    ("paper1", {"alpha_growth": 1.25}, "solver2", "F", 1.0, 256),
    ("paper2", {}, "naive", "two-level", 0.1, 24),
    ("paper2", {"examples": 50}, "naive", "two-level", 0.025, 48),
    ("paper2", {"examples": 50}, "solver1", "two-level", 0.025, 64),
    ("paper2", {}, "solver2", "F", 0.025, 128),
    ("paper2", {}, "solver2", "V", 0.025, 128),
]


@pytest.mark.parametrize("name,extra,coarse,cycle,lr,n", CASES)
def test_mgrit_equals_serial_training_for_every_solver(name, extra, coarse, cycle, lr, n):
    problem = model_problem(name, steps=n, lr=lr, coarse=coarse, **extra)
    two = cycle == "two-level"
    tol = 1e-9 * math.sqrt(n)
    opts = SolverOptions(
        levels=2 if two else 64,
        cfactor=2,
        cycle="V" if two else cycle,
        tol=tol,
        max_iter=50,
        guess="zero",
        max_coarse=None if two else 10,
    )
    res = solve(problem, options=opts)
    assert res.converged, res.residuals
    ref = serial_solve(problem)
    # the residual bounds the error through the propagators' Lipschitz constants; 100 tol is ample
    assert np.abs(res.states - ref).max() < 100 * tol
    np.testing.assert_allclose(problem.losses(res.states), problem.losses(ref), rtol=1e-9)


def test_papers_cost_model_gives_its_figures():
    # Figure 6 (problem 1, F-cycles, N = 25600, 13 levels) and Figure 7 (problem 2, Solver 2, 12 800 steps,
    # 12 levels) from the paper's own iteration counts: the speedups the paper plots
    t3, t4, t7, t14, t15 = (PAPER_TABLES[i - 1] for i in (3, 4, 7, 14, 15))
    assert 25600 / paper_sigma(t3.paper_iterations[-1], 13, "F") == pytest.approx(1.65, abs=0.05)
    assert 25600 / paper_sigma(t4.paper_iterations[-1], 13, "F") == pytest.approx(2.9, abs=0.05)
    assert 25600 / paper_sigma(t7.paper_iterations[-1], 13, "F") == pytest.approx(2.5, abs=0.05)
    assert 12800 / paper_sigma(t15.paper_iterations[-1], 12, "V") == pytest.approx(6.6, abs=0.1)
    assert 12800 / paper_sigma(t14.paper_iterations[-1], 12, "F") == pytest.approx(1.6, abs=0.05)
    assert paper_sigma(1, 2, "V") == 17 and paper_sigma(2, 4, "V") == 2 * (17 + 16)


def test_cli_trains_the_paper_problems_with_the_papers_settings(tmp_path, capsys):
    from pintrain.cli import main

    out = tmp_path / "p1.json"
    args = ["train", "--problem", "paper1", "--coarse", "solver2", "--steps", "400", "--cfactor", "2"]
    args += ["--levels", "64", "--max-coarse", "10", "--guess", "zero", "--cycle", "F", "--tol", "2e-8"]
    assert main([*args, "--json", str(out)]) == 0
    rec = __import__("json").loads(out.read_text())
    assert rec["problem"]["name"] == "paper1" and rec["problem"]["coarse"] == "solver2"
    assert rec["problem"]["schedule"]["batch_size"] == 1 and rec["max_abs_diff"] < 1e-6
    assert len(rec["hierarchy"]) == 7  # 400 -> 200 -> 100 -> 50 -> 25 -> 12 -> 6
    assert "paper1 (3-4-1 sigmoid network, 16 weights)" in capsys.readouterr().out
    for bad, word in (
        (["--problem", "paper1", "--examples", "50"], "--examples"),
        (["--problem", "paper1", "--seed", "3"], "--seed"),
        (["--problem", "xor", "--data", "full"], "--data"),
        (["--problem", "xor", "--coarse", "union", "--alpha-max", "2"], "alpha_max"),
        (["--problem", "digits-mlp", "--alpha-growth", "2"], "--alpha-growth"),
        (["--problem", "digits-mlp", "--coarse", "solver1"], "'split', 'lagged' or 'curvature'"),
    ):
        assert main(["train", *bad, "--steps", "64"]) == 2, bad
        assert word in capsys.readouterr().err, bad
