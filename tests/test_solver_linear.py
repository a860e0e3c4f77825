"""MGRIT converges to the serial time-stepping solution on the linear test problems."""

import itertools

import numpy as np
import pytest

from pintrain.mgrit import Hierarchy, SolverOptions, serial_solve, solve
from pintrain.problems import Dahlquist, Heat1D

PROBLEMS = {
    "dahlquist": lambda n: Dahlquist(n, lam=-1.0, t_stop=5.0),
    "heat": lambda n: Heat1D(n, nx=15, t_stop=1.0, forcing=Heat1D.manufactured),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("n_steps", [512, 517])
def test_converges_to_serial(name, n_steps):
    problem = PROBLEMS[name](n_steps)
    ref = serial_solve(problem)
    tol = 1e-10
    grid = itertools.product([2, 3, 4, 5], [2, 4, 8, 16], ["F", "FCF"], ["V", "F"])
    for levels, cf, relax, cycle in grid:
        res = solve(problem, levels=levels, cfactor=cf, relax=relax, cycle=cycle, tol=tol, max_iter=100)
        assert res.converged, (levels, cf, relax, cycle, res.residuals)
        assert res.residuals[-1] < tol
        scale = np.abs(ref).max()
        err = np.abs(res.states - ref).max()
        # the error at converged residual tol is bounded by tol times the (stable) solution operator
        assert err <= 50 * tol * max(scale, 1.0), (levels, cf, relax, cycle, err)
        np.testing.assert_array_equal(res.state(0), ref[0])
        np.testing.assert_allclose(res.final_state, ref[-1], atol=50 * tol)


def test_states_match_serial_at_every_point_and_result_api():
    problem = PROBLEMS["heat"](300)
    ref = serial_solve(problem)
    res = solve(problem, levels=3, cfactor=4, tol=1e-11)
    for k in (0, 1, 3, 4, 150, 299, 300):
        np.testing.assert_allclose(res.state(k), ref[k], atol=1e-9)
    with pytest.raises(IndexError):
        res.state(301)
    d = res.to_dict()
    assert d["iterations"] == res.iterations == len(res.residuals)
    assert d["options"]["levels"] == 3 and d["options"]["cfactor"] == 4
    assert len(d["convergence_factors"]) == res.iterations - 1
    assert res.wall_s > 0
    import json

    assert json.loads(res.to_json())["converged"] is True


@pytest.mark.parametrize("cf", [2, 4, 8])
@pytest.mark.parametrize("n_steps", [64, 70])
def test_finite_termination_two_level_f_relaxation(cf, n_steps):
    """Two-level F-relaxation is exact after at most ceil(N/m) iterations (one C-interval per iteration)."""
    problem = Dahlquist(n_steps, lam=-2.0, t_stop=3.0)
    ref = serial_solve(problem)
    n_c = -(-n_steps // cf)
    res = solve(problem, levels=2, cfactor=cf, relax="F", tol=1e-300, max_iter=n_c)
    np.testing.assert_allclose(res.states, ref, rtol=1e-13, atol=1e-15)
    # and after k iterations the first k C-intervals are already exact
    for k in (1, 2, 3):
        part = solve(problem, levels=2, cfactor=cf, relax="F", tol=1e-300, max_iter=k)
        np.testing.assert_allclose(part.states[: k * cf + 1], ref[: k * cf + 1], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dt", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("m", [2, 4, 8, 16])
@pytest.mark.parametrize("relax", ["F", "FCF"])
def test_dahlquist_convergence_factor_within_two_level_bound(dt, m, relax):
    """Dobrev, Kolev, Petersson, Schroder (2017): for the scalar problem the two-level error
    propagators are lower-triangular Toeplitz, with
        ||E_F||   <= |mu^m - nu| (1 - |nu|^Nc) / (1 - |nu|),
        ||E_FCF|| <= |mu|^m |mu^m - nu| (1 - |nu|^(Nc-1)) / (1 - |nu|),
    mu, nu the fine and coarse amplification factors; residuals contract by the same operator.
    The bound is close to sharp for many coarse intervals, so the observed factor lies just below it.
    """
    n = m * 512
    problem = Dahlquist(n, lam=-1.0, t_stop=dt * n)
    mu, nu, n_c = problem.factor(1), problem.factor(m), n // m
    if relax == "F":
        bound = abs(mu**m - nu) * (1 - abs(nu) ** n_c) / (1 - abs(nu))
    else:
        bound = abs(mu) ** m * abs(mu**m - nu) * (1 - abs(nu) ** (n_c - 1)) / (1 - abs(nu))
    res = solve(problem, levels=2, cfactor=m, relax=relax, tol=1e-14, max_iter=40)
    r = res.residuals
    factors = [r[i + 1] / r[i] for i in range(len(r) - 1) if r[i + 1] > 1e-12]
    assert factors, r
    observed = max(factors)
    assert observed <= bound * (1 + 1e-9)
    assert observed >= 0.9 * bound


def test_step_many_and_loop_paths_agree():
    class LoopHeat(Heat1D):
        step_many = None  # hide the batched method: the solver falls back to a loop of step()

    fast = Heat1D(200, nx=15, forcing=Heat1D.manufactured)
    slow = LoopHeat(200, nx=15, forcing=Heat1D.manufactured)
    for kw in ({"levels": 3, "cfactor": 4}, {"levels": 2, "cfactor": 8, "relax": "F", "cycle": "F"}):
        a = solve(fast, tol=1e-11, **kw)
        b = solve(slow, tol=1e-11, **kw)
        assert a.iterations == b.iterations
        np.testing.assert_allclose(a.states, b.states, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(a.residuals, b.residuals, rtol=1e-9, atol=1e-14)


def test_nested_iteration_rtol_inf_norm_and_cfactor_list():
    problem = PROBLEMS["dahlquist"](1024)
    ref = serial_solve(problem)
    plain = solve(problem, levels=4, cfactor=4, tol=1e-10)
    nested = solve(problem, levels=4, cfactor=4, tol=1e-10, nested=True)
    assert nested.iterations <= plain.iterations
    assert nested.residuals[0] < plain.residuals[0]
    rel = solve(problem, levels=4, cfactor=4, tol=1e-30, rtol=1e-6, max_iter=50)
    assert rel.converged and rel.residuals[-1] < 1e-6 * rel.residuals[0]
    inf = solve(problem, levels=3, cfactor=4, tol=1e-10, norm="inf")
    assert inf.converged and np.abs(inf.states - ref).max() < 1e-8
    mixed = solve(problem, levels=4, cfactor=[2, 8], tol=1e-10)
    assert [h["spacing"] for h in mixed.hierarchy] == [1, 2, 16, 128]
    assert mixed.converged and np.abs(mixed.states - ref).max() < 1e-8
    zero = solve(problem, levels=3, cfactor=4, tol=1e-10, guess="zero")
    assert zero.converged and np.abs(zero.states - ref).max() < 1e-8


def test_degenerate_hierarchies():
    problem = PROBLEMS["dahlquist"](3)
    ref = serial_solve(problem)
    res = solve(problem, levels=4, cfactor=4)  # N < cfactor: one level, i.e. serial stepping
    assert len(res.hierarchy) == 1 and res.converged and res.iterations == 1
    np.testing.assert_allclose(res.states, ref, rtol=1e-15)
    res = solve(PROBLEMS["dahlquist"](1), levels=1, cfactor=2)
    assert res.converged
    hier = Hierarchy(1000, SolverOptions(levels=10, cfactor=4, min_coarse=3))
    assert [lev.n_steps for lev in hier.levels] == [1000, 250, 62, 15, 3]
    text = str(hier)
    assert "critical path" in text and "1001" in text


def test_max_iter_reached_reports_not_converged():
    res = solve(PROBLEMS["heat"](256), levels=3, cfactor=8, relax="F", tol=1e-14, max_iter=2)
    assert res.iterations == 2 and not res.converged
