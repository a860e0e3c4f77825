"""`pintrain bench`: the record it writes is complete and its numbers are consistent (no timing asserted)."""

import json

import numpy as np
import pytest

from pintrain import bench
from pintrain.bench_torch import TORCH_CASES, torch_table
from pintrain.cli import main
from pintrain.mgrit import SolverOptions, serial_solve, solve
from pintrain.peer import PeerUnavailable
from pintrain.training import model_problem


def test_cli_bench_writes_tables_json_and_plot(tmp_path, capsys):
    argv = ["bench", "--sizes", "256,512", "--repeat", "1", "--no-pymgrit", "--no-torch", "--out", str(tmp_path), "-q"]
    assert main([*argv, "--levels", "3", "--cfactor", "8,4", "--tol", "1e-9"]) == 0
    out = capsys.readouterr().out
    assert "serial/MGRIT" in out and "Where MGRIT's time goes" in out
    record = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").stat().st_size > 1000
    assert record["training"]["options"]["cfactor"] == [8, 4]
    assert record["command"].startswith("pintrain bench --sizes 256,512")
    rows = record["training"]["rows"]
    assert [r["N"] for r in rows] == [256, 512]
    for r in rows:
        assert r["converged"] and r["max_rel_diff"] < 1e-8
        w = r["work"]
        assert w["serial_fine_steps"] == r["N"]
        assert w["fine_steps_total"] == w["steps_by_level"][0]
        assert w["fine_steps_per_iteration"] * r["iterations"] == w["fine_steps_total"]
        # the profiled run saw the same fine-step work as the counted one
        assert r["time_by_spacing"]["1"]["rows"] == w["fine_steps_total"]
        assert r["ratio_serial_over_mgrit"] == r["serial_s"] / r["mgrit_s"]
        # beside it, the cost model's own hierarchy for the same problem and tolerance, to the same answer
        a = r["auto"]
        assert (
            a["converged"] and a["max_rel_diff"] < 1e-8 and a["ratio_serial_over_mgrit"] == r["serial_s"] / a["mgrit_s"]
        )
    assert "1b. The same with the hierarchy the cost model chooses" in out


def test_timed_problem_is_transparent():
    p = model_problem("sine", steps=256, coarse="gauss-newton")
    opts = SolverOptions(levels=3, cfactor=4, tol=1e-10)
    timed = bench.TimedProblem(p)
    a, b = solve(p, options=opts), solve(timed, options=opts)
    np.testing.assert_array_equal(a.states, b.states)
    assert sum(timed.rows.values()) == sum(a.step_counts)
    assert np.abs(a.states - serial_solve(p)).max() < 1e-8


def test_bench_records_an_unavailable_peer_instead_of_failing(monkeypatch):
    def unavailable(*args, **kwargs):
        raise PeerUnavailable("no network for pip")

    monkeypatch.setattr(bench, "run_pymgrit", unavailable)
    record = bench.run("xor", [128], SolverOptions(levels=2, cfactor=4, tol=1e-9), repeat=1)
    assert record["pymgrit"] == {"rows": [], "unavailable": "no network for pip"}
    assert "not run: no network for pip" in bench.tables(record)
    # the record names the coarse propagator that ran, not a fixed one
    assert record["training"]["coarse"] == "gauss-newton" == record["training"]["rows"][0]["coarse"]
    other = bench.run("xor", [128], SolverOptions(levels=2, cfactor=4, tol=1e-9), 1, pymgrit=False, coarse="union")
    assert other["training"]["coarse"] == "union" == other["training"]["rows"][0]["coarse"]


def test_cli_bench_bad_sizes_is_a_message(capsys):
    assert main(["bench", "--sizes", "1k", "--no-pymgrit"]) == 2
    assert "--sizes" in capsys.readouterr().err


def test_cli_bench_torch_models_against_the_torch_loop(tmp_path, capsys):
    pytest.importorskip("torch")
    argv = ["bench", "--sizes", "64", "--repeat", "1", "--no-pymgrit", "--torch-steps", "64", "--out", str(tmp_path)]
    assert main([*argv, "-q", "--levels", "2", "--cfactor", "4"]) == 0
    out = capsys.readouterr().out
    assert "4. Torch models: the plain torch.optim loop against MGRIT" in out
    record = json.loads((tmp_path / "bench.json").read_text())["torch"]
    assert record["steps"] == 64 and record["threads"] == 1
    assert [r["case"] for r in record["rows"]] == [c["case"] for c in TORCH_CASES]
    for r in record["rows"]:
        assert r["case"] in out and r["converged"]
        # the final weights are the plain loop's, to the tolerance (1e-9 in float64, 1e-5 in float32, on the
        # residual): Adam in float32 from fit's nested start stops at a residual of 2.6e-6 with its weights
        # 1.2e-4 (relative) from the loop's, the error ~15 times the residual (components whose second moment
        # v is tiny: an update divides by sqrt(v)), not round-off (the float32 loop is 2.8e-7 from float64's)
        assert r["final_weights_max_rel_diff"] < (1e-3 if r["settings"].get("dtype") == "float32" else 1e-8)
        assert r["mgrit_over_serial"] == r["mgrit_s"] / r["serial_s"]
        assert abs(r["share_fine"] + r["share_coarse"] + r["share_solver"] - 1) < 1e-12
        assert 0 < r["share_fine"] < 1 and 0 < r["share_coarse"] < 1


def test_bench_torch_table_says_why_it_did_not_run():
    text = torch_table({"steps": 1000, "threads": 1, "repeat": 3, "unavailable": "torch is not installed"})
    assert "not run: torch is not installed" in text


def test_cli_bench_bad_torch_settings_are_messages(capsys):
    assert main(["bench", "--torch-steps", "1", "--no-pymgrit"]) == 2
    assert "--torch-steps" in capsys.readouterr().err
    assert main(["bench", "--threads", "0", "--no-pymgrit"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_cli_bench_runs_the_convergence_suite(tmp_path, capsys):
    pytest.importorskip("sklearn")
    argv = ["bench", "--sizes", "64", "--repeat", "1", "--no-pymgrit", "--no-torch", "--out", str(tmp_path), "-q"]
    assert main([*argv, "--suite", "digits-mlp-sgd,cancer-mlp-adam", "--suite-steps", "128"]) == 0
    out = capsys.readouterr().out
    assert "Convergence suite, N = 128" in out
    suite = json.loads((tmp_path / "bench.json").read_text())["suite"]
    assert suite["N"] == 128 and [r["case"] for r in suite["rows"]] == ["digits-mlp-sgd", "cancer-mlp-adam"]
    # fit's defaults: split for plain SGD, curvature for Adam; each row against its own serial run
    assert [r["coarse"] for r in suite["rows"]] == ["split", "curvature"]
    for r in suite["rows"]:
        assert r["converged"] and r["max_abs_diff"] < 1e-8 and f"| {r['case']} |" in out


def test_suite_rows_say_when_a_case_did_not_converge():
    pytest.importorskip("sklearn")
    from pintrain.torch.suite import bench_table, run_case

    row = run_case("digits-mlp-momentum", 256, max_iter=1)
    assert not row["converged"] and row["iterations"] == 1 and row["max_abs_diff"] > 1e-6
    assert "**no** (1, r = " in bench_table([row])


def test_cli_bench_bad_suite_is_a_message(capsys):
    assert main(["bench", "--suite", "digits-mlp-sgd,mnist-resnet", "--no-pymgrit"]) == 2
    err = capsys.readouterr().err
    assert "--suite" in err and "digits-mlp-adam" in err
    assert main(["bench", "--suite", "all", "--suite-steps", "1", "--no-pymgrit"]) == 2
    assert "--suite-steps" in capsys.readouterr().err
