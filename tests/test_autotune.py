"""Settings chosen by the cost model (pintrain.mgrit.autotune, `pintrain train` without a layout)."""

import numpy as np
import pytest

from pintrain.cli import main
from pintrain.mgrit import Hierarchy, SolverOptions, serial_solve, solve
from pintrain.mgrit.autotune import StepCosts, candidates, choose, iteration_seconds
from pintrain.training import model_problem


def flat(a=50e-6, b=1e-6):
    """A coarse step that costs the same at any spacing (Gauss-Newton on full-batch data)."""
    return StepCosts([1, 4, 16, 64], [a] * 4, [b] * 4)


def linear(a=50e-6, b=1e-6):
    """A coarse step whose per-row cost grows with the spacing (a union over m mini-batches)."""
    return StepCosts([1, 4, 16, 64], [a] * 4, [b * m for m in (1, 4, 16, 64)])


def test_step_costs_interpolate_and_extrapolate_in_log_log():
    c = StepCosts([1, 4, 16], [1.0, 2.0, 4.0], [1.0, 4.0, 16.0])
    assert c.at(4) == pytest.approx((2.0, 4.0))
    assert c.at(2) == pytest.approx((np.sqrt(2.0), 2.0))
    assert c.at(64) == pytest.approx((8.0, 64.0))  # the last trend, continued
    falling = StepCosts([1, 4], [2.0, 1.0], [1.0, 1.0])
    assert falling.at(64) == pytest.approx((1.0, 1.0))  # never extrapolated downwards


def test_the_model_counts_one_v_cycle():
    # two levels, N = 16, cfactor 4, a = 1, b = 0: 3 x 4 calls on the fine level, one restriction
    # call at spacing 4, and a coarsest chain of 4 lone calls
    hier = Hierarchy(16, SolverOptions(levels=2, cfactor=4))
    assert iteration_seconds(hier, StepCosts([1], [1.0], [0.0])) == pytest.approx(12 + 1 + 4)


def test_the_coarsest_chain_costs_its_lone_steps():
    # the coarsest level's sequential steps take their own path (problem.step), measured apart: the
    # compiled curvature chain's lone step costs a fraction of a batched call of one row
    hier = Hierarchy(16, SolverOptions(levels=2, cfactor=4))
    costs = StepCosts([1, 4], [1.0, 1.0], [0.0, 0.0], lone=[0.5, 0.25])
    assert iteration_seconds(hier, costs) == pytest.approx(12 + 1 + 4 * 0.25)
    assert costs.lone_at(2) == pytest.approx(0.5**1.5)  # interpolated in log-log as at()
    assert StepCosts([1, 4], [1.0, 1.0], [0.5, 0.5]).lone_at(4) == 1.5  # not measured: a + b


def test_cheap_coarse_steps_get_a_long_first_coarsening():
    p = model_problem("xor", steps=16384)
    choice = choose(p, SolverOptions(), costs=flat())
    first = choice.options.cfactor[0]
    assert first >= 16 and choice.options.nested and choice.seconds < choice.base_seconds / 1.8
    # costs growing with the spacing make every level cost as much as the fine one: few levels
    choice = choose(p, SolverOptions(), costs=linear())
    assert len(Hierarchy(16384, choice.options)) < 4


def test_the_choice_is_never_worse_than_the_defaults_in_the_model():
    p = model_problem("sine", steps=4096)
    for costs in (flat(), linear(), linear(a=1e-3)):
        choice = choose(p, SolverOptions(tol=1e-7, relax="F"), costs=costs)
        assert choice.seconds <= choice.base_seconds
        assert choice.options.tol == 1e-7 and choice.options.relax == "F"  # the rest is the base's


def test_candidates_are_distinct_and_valid():
    opts = candidates(4096, SolverOptions())
    grids = {tuple((lev.n_steps, lev.spacing) for lev in Hierarchy(4096, o).levels) for o in opts}
    assert len(grids) == len(opts) and all(len(Hierarchy(4096, o)) == o.levels for o in opts)


def test_measured_choice_trains_xor_to_serial():
    p = model_problem("xor", steps=4096)
    choice = choose(p, SolverOptions())
    assert choice.costs.seconds < 2.0 and choice.options.cfactor[0] >= 8
    res = solve(p, options=choice.options)
    assert res.converged and np.abs(res.states - serial_solve(p)).max() < 1e-7


def test_measuring_stops_before_a_probe_that_would_overrun_its_budget(monkeypatch):
    # a step whose cost grows with the spacing m (the chain propagators: m / r calls a step), timed
    # as given here: the probe of spacing 256 would take about 2 s of a 1 s budget, so it is not run,
    # and the costs there are extrapolated from 16 and 64
    from pintrain.mgrit import autotune

    real_step_many, real_lone_step, spacings, kinds = autotune.step_many, autotune.lone_step, [], []

    def step_many(problem, U, ks, m, *args):
        spacings.append(m)
        kinds.append("one" if U.shape[0] == 1 else "many")
        return real_step_many(problem, U, ks, m, *args)

    def lone_step(problem, u, k, m):
        kinds.append("lone")
        return real_lone_step(problem, u, k, m)

    def best(fn, repeat):
        fn()
        return {"one": 1e-3, "many": 1.5e-3, "lone": 0.5e-3}[kinds[-1]] * spacings[-1]

    monkeypatch.setattr(autotune, "step_many", step_many)
    monkeypatch.setattr(autotune, "lone_step", lone_step)
    monkeypatch.setattr(autotune, "_best", best)
    costs = autotune.measure(model_problem("xor", steps=4096), max_spacing=1024, budget_s=1.0)
    assert costs.spacings == [1, 4, 16, 64] and 256 not in spacings
    a64, _ = costs.at(64)
    assert costs.at(256)[0] > 3 * a64  # the trend of the last two (here about 4 times), not flat
    assert costs.lone == pytest.approx([0.5e-3 * m for m in (1, 4, 16, 64)])  # each spacing's lone step

    # a first probe that alone overruns the budget (a slow step) still gets a second spacing: a trend
    # to extrapolate, not one cost for every spacing
    def slow(fn, repeat):
        fn()
        return 0.5 * spacings[-1]

    monkeypatch.setattr(autotune, "_best", slow)
    spacings.clear()
    costs = autotune.measure(model_problem("xor", steps=4096), max_spacing=1024, budget_s=1.0)
    assert costs.spacings == [1, 4] and costs.at(16)[0] > costs.at(4)[0]


def test_cli_chooses_only_without_a_layout_and_for_stable_propagators(capsys):
    assert main(["train", "--steps", "2048"]) == 0
    out = capsys.readouterr().out
    assert "settings chosen by the cost model" in out and "table" not in out  # gauss-newton builds none
    assert main(["train", "--steps", "2048", "--levels", "3"]) == 0
    assert "cost model" not in capsys.readouterr().out
    assert main(["train", "--steps", "2048", "--coarse", "union", "--lr", "0.2"]) == 0
    assert "cost model" not in capsys.readouterr().out  # union has a stability limit in m * lr
    assert main(["train", "--problem", "paper1", "--steps", "512"]) == 0
    assert "cost model" not in capsys.readouterr().out  # the paper's rate rule: its own hierarchy


def test_critical_path_with_p_ranks_runs_from_the_work_to_the_one_per_interval_limit():
    hier = Hierarchy(4096, SolverOptions(levels=3, cfactor=4))
    cost = hier.iteration_cost(1)
    assert hier.iteration_cost(1, ranks=1)["critical_path"] == cost["work"]  # one rank does everything
    assert hier.iteration_cost(1, ranks=10**6)["critical_path"] == cost["critical_path"]
    paths = [hier.iteration_cost(1, ranks=p)["critical_path"] for p in (1, 4, 64, 1024, 4096)]
    assert paths == sorted(paths, reverse=True)
    # 64 ranks: level 0 steps 4096 / 64 = 64 points a sweep, level 1 16, three sweeps each; 256 coarsest
    assert hier.iteration_cost(1, ranks=64)["critical_path"] == 3 * 64 + 3 * 16 + 256


def test_fit_takes_levels_auto():
    torch = pytest.importorskip("torch")
    from torch import nn

    from pintrain.torch import fit

    g = torch.Generator().manual_seed(0)
    X = torch.randn(120, 6, generator=g, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    kw = {"steps": 256, "batch_size": 12, "optimizer": "adam", "lr": 0.01}
    auto = fit(net, nn.CrossEntropyLoss(), X, y, levels="auto", **kw)
    serial = fit(net, nn.CrossEntropyLoss(), X, y, method="serial", **kw)
    assert auto.solver.converged and auto.solver.options.nested
    assert np.abs(auto.states - serial.states).max() < 1e-8
    # Adam: the curvature step, whose table the cost model built before timing the steps; its time
    # is counted in the solve's
    assert auto.problem.coarse == "curvature" and 0 < auto.problem.setup_s <= auto.wall_s


def test_fit_without_a_layout_takes_the_cost_models_choice_from_auto_min_steps(monkeypatch):
    torch = pytest.importorskip("torch")
    from torch import nn

    from pintrain.mgrit import autotune
    from pintrain.torch import fit

    calls = []
    real = autotune.choose

    def counted(*args, **kwargs):
        calls.append(args[0].n_steps)
        return real(*args, **kwargs)

    monkeypatch.setattr(autotune, "choose", counted)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(96, 4, generator=g, dtype=torch.float64)
    y = (X[:, 0] * X[:, 1] > 0).long()
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    kw = {"batch_size": 16, "lr": 0.05, "seed": 2}
    n = autotune.AUTO_MIN_STEPS
    res = fit(net, nn.CrossEntropyLoss(), X, y, steps=n, **kw)  # no layout: the cost model's
    serial = fit(net, nn.CrossEntropyLoss(), X, y, steps=n, method="serial", **kw)
    assert calls == [n] and res.solver.converged and res.solver.options.nested
    chosen = res.solver.options
    assert isinstance(chosen.cfactor, tuple) and chosen.cfactor[0] in autotune.FIRST  # a candidate's
    assert np.abs(res.states - serial.states).max() < 1e-8
    # the hierarchy it took, given, repeats the run bit for bit (no measuring)
    again = fit(net, nn.CrossEntropyLoss(), X, y, steps=n, levels=chosen.levels, cfactor=chosen.cfactor, **kw)
    assert calls == [n] and np.array_equal(again.states, res.states)
    # a layout given, fewer steps, or union (iterations depend on the hierarchy): the fixed default
    for steps, extra in [(n, {"levels": 3}), (n, {"cfactor": 8}), (n - 1, {}), (n, {"coarse": "union"})]:
        res = fit(net, nn.CrossEntropyLoss(), X, y, steps=steps, tol=1e-3, allow_unconverged=True, **kw, **extra)
        want = (extra.get("levels", 3), extra.get("cfactor", 4))
        assert (res.solver.options.levels, res.solver.options.cfactor) == want
    assert calls == [n]


def test_too_few_steps_leave_the_settings_as_given(capsys):
    choice = choose(model_problem("xor", steps=3), SolverOptions())
    assert not choice.measured and choice.options == SolverOptions()
    assert main(["train", "--steps", "3"]) == 0
    assert "cost model" not in capsys.readouterr().out
