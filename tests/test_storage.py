"""C-point storage (storage="c-points"): the same arithmetic as full storage, bit for bit, with about
N / cfactor states on the fine level; what the result and the training API hand back."""

import json

import numpy as np
import pytest

from pintrain.api import compare, train
from pintrain.cli import main
from pintrain.errors import DivergenceError, OptionError
from pintrain.mgrit import Hierarchy, SolverOptions, solve
from pintrain.problems import Dahlquist, Heat1D
from pintrain.training import Adam, TrainingProblem, model_problem

SETTINGS = [
    {"levels": 2, "cfactor": 4},
    {"levels": 3, "cfactor": 4},
    {"levels": 4, "cfactor": (2, 3), "cycle": "F"},
    {"levels": 3, "cfactor": 4, "nested": True},
    {"levels": 3, "cfactor": 3, "relax": "F"},
    {"levels": 4, "cfactor": 2, "relax": "FCFCF", "nested": True, "cycle": "F"},
]


def same_run(problem_factory, **settings):
    full = solve(problem_factory(), storage="full", **settings)
    cpts = solve(problem_factory(), storage="c-points", **settings)
    assert cpts.points is not None and full.points is None
    np.testing.assert_array_equal(cpts.states, full.states[cpts.points])
    assert cpts.residuals == full.residuals and cpts.iterations == full.iterations
    assert cpts.step_counts == full.step_counts  # no extra work: F-points made only where full storage makes them
    np.testing.assert_array_equal(cpts.final_state, full.final_state)
    return full, cpts


@pytest.mark.parametrize("n", [64, 67, 257])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_linear_problems_bit_for_bit(n, settings):
    same_run(lambda: Heat1D(n, nx=12), **settings)
    same_run(lambda: Dahlquist(n, lam=-1.0), **settings)


def test_result_keeps_the_c_points_and_the_last_point():
    _, res = same_run(lambda: Dahlquist(67), levels=3, cfactor=4)
    assert res.points.tolist() == list(range(0, 68, 4)) + [67]
    np.testing.assert_array_equal(res.state(8), res.states[2])
    np.testing.assert_array_equal(res.state(67), res.final_state)
    with pytest.raises(IndexError, match="not kept"):
        res.state(9)
    assert json.loads(res.to_json(include_states=True))["points"] == res.points.tolist()


def adam_sine():
    p = model_problem("sine", steps=256)
    return TrainingProblem(p.model, p.schedule, Adam(0.01), 256, "split", max_ratio=2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: model_problem("xor", steps=300, coarse="gauss-newton"),
        lambda: model_problem("sine", steps=256, coarse="union"),
        adam_sine,
    ],
    ids=["xor-gauss-newton", "sine-union", "sine-split-adam"],
)
def test_training_problems_bit_for_bit(make):
    same_run(make, levels=3, cfactor=4, tol=1e-10)


def test_torch_native_states_bit_for_bit():
    torch = pytest.importorskip("torch")
    from torch import nn

    from pintrain.torch import TorchProblem, make_optimizer

    def make():
        g = torch.Generator().manual_seed(0)
        X = torch.randn(100, 5, generator=g, dtype=torch.float64)
        y = (X[:, 0] > 0).long()
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)).double()
        opt = make_optimizer("adam", 0.01)
        return TorchProblem(model, nn.CrossEntropyLoss(), X, y, steps=130, batch_size=10, optimizer=opt)

    same_run(make, levels=3, cfactor=4, tol=1e-10)


def test_divergence_is_reported_where_full_storage_reports_it():
    errors = []
    for storage in ("full", "c-points"):
        with pytest.raises(DivergenceError) as info:
            solve(model_problem("sine", steps=4096, coarse="union"), levels=4, cfactor=4, storage=storage)
        errors.append((info.value.level, info.value.step, info.value.iteration, str(info.value)))
    assert errors[0] == errors[1]


def test_memory_estimate_is_about_n_over_cfactor():
    opts = SolverOptions(levels=3, cfactor=16)
    full = Hierarchy(65536, opts).memory_bytes(1000, 4, "full")
    cpts = Hierarchy(65536, opts).memory_bytes(1000, 4, "c-points")
    assert cpts < full / 3.5
    # fine level: C-points and three sweep arrays (4 N/m rows); level 1: its right-hand side (N/m) and its own
    # 5 N/m^2 rows; the coarsest (full): its points, right-hand side and two step buffers
    fine, coarse = 65536 // 16, 65536 // 256
    assert cpts / 4000 == pytest.approx(4 * fine + fine + 5 * coarse + 4 * coarse, rel=0.01)


def test_storage_option_is_checked():
    with pytest.raises(OptionError, match="storage"):
        SolverOptions(storage="f-points")
    assert SolverOptions.from_dict(SolverOptions(storage="c-points").to_dict()).storage == "c-points"


def test_train_and_compare_with_c_points():
    p = model_problem("xor", steps=256)
    opts = SolverOptions(levels=3, cfactor=4, storage="c-points")
    run = train(p, "mgrit", opts)
    assert run.points.tolist() == list(range(0, 257, 4))
    serial = train(p, "serial")
    np.testing.assert_allclose(run.states, serial.states[run.points], atol=1e-8)
    np.testing.assert_allclose(run.losses, serial.losses[run.points], atol=1e-8)
    final = train(p, "mgrit", opts, keep="final")
    assert final.points.tolist() == [0, 256]
    np.testing.assert_array_equal(final.states[1], run.states[-1])
    every8 = train(p, "mgrit", opts, keep=8)
    np.testing.assert_array_equal(every8.states, run.states[::2])
    with pytest.raises(OptionError, match="multiple of the fine cfactor"):
        train(p, "mgrit", opts, keep=6)
    rec = compare(p, opts)
    assert rec.converged and rec.max_abs_diff < 1e-8 and rec.mgrit.points == run.points.tolist()
    assert len(rec.mgrit.losses) == run.points.size


def test_cli_storage_and_memory(tmp_path, capsys):
    out = tmp_path / "rec.json"
    plot = tmp_path / "p.png"
    args = ["train", "--steps", "256", "--cfactor", "4", "--storage", "c-points", "-q", "--json", str(out)]
    assert main([*args, "--plot", str(plot)]) == 0  # cfactor given: no cost-model choice, C-points every 4
    text = capsys.readouterr().out
    assert "C-points and N kept" in text and "converged" in text
    assert json.loads(out.read_text())["mgrit"]["points"][:3] == [0, 4, 8]
    # --memory prints the estimate for either storage and stops before any training
    assert main(["train", "--steps", "65536", "--storage", "c-points", "--memory", "-q"]) == 0
    text = capsys.readouterr().out
    assert "c-points storage" in text and "MGRIT" not in text.split("memory:")[1].split("\n", 1)[1]
    assert main(["solve", "--steps", "1000", "--memory"]) == 0
    assert "full storage" in capsys.readouterr().out
