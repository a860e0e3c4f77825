"""Distributed MGRIT gives the single-process answer at P = 1..4 ranks (mpiexec subprocesses)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pintrain import DivergenceError
from pintrain.mgrit import solve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mpi_cases import CASES  # noqa: E402

pytest.importorskip("mpi4py")
HERE = Path(__file__).resolve().parent
MPIEXEC = (
    str(Path(sys.executable).with_name("mpiexec"))
    if Path(sys.executable).with_name("mpiexec").exists()
    else shutil.which("mpiexec")
)
RANKS = (1, 2, 3, 4)
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "HYDRA_"))}


def mpirun(n, *args, timeout=120):
    assert MPIEXEC, "mpiexec not found: install the mpi extra (make test does)"
    return subprocess.run(
        [MPIEXEC, "-n", str(n), sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for n in RANKS:
        path = tmp_path_factory.mktemp(f"p{n}") / "out.json"
        proc = mpirun(n, HERE / "mpi_driver.py", path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[n] = json.loads(path.read_text())
    return out


@pytest.fixture(scope="module")
def single():
    out = {}
    for name, (make, opts) in CASES.items():
        try:
            out[name] = solve(make(), comm="serial", **opts)
        except DivergenceError as err:
            out[name] = err
    return out


@pytest.mark.parametrize("n", RANKS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_same_history_and_states_as_one_process(runs, single, n, name):
    ref, got = single[name], runs[n][name]
    if isinstance(ref, DivergenceError):
        # every rank stops with the same message, at the same level and step as one process
        assert len(got["error"]) == n and len(set(got["error"])) == 1
        assert (got["level"], got["step"]) == (ref.level, ref.step)
        assert f"level {ref.level}" in got["error"][0]
        return
    assert got["iterations"] == ref.iterations and got["converged"] == ref.converged
    a, b = np.array(got["residuals"]), np.array(ref.residuals)
    assert np.all(np.abs(a - b) <= 1e-12 * np.abs(b) + 1e-300), (a, b)
    states = np.array(got["states"])
    assert got["first_index"] == 0 and states.shape == ref.states.shape
    if ref.points is not None:  # C-point storage: the same kept points at any rank count
        np.testing.assert_array_equal(np.array(got["points"]), ref.points)
    np.testing.assert_allclose(states, ref.states, rtol=1e-13, atol=1e-15)
    for final in got["final_on_every_rank"]:  # final state on every rank
        np.testing.assert_array_equal(np.array(final), states[-1])


def test_a_rank_that_raises_ends_the_job_with_its_message():
    t0 = time.monotonic()
    proc = mpirun(3, HERE / "mpi_driver.py", "--fail-rank", 1, timeout=60)
    assert time.monotonic() - t0 < 60
    assert proc.returncode != 0
    assert "rank 1 of 3 failed" in proc.stderr and "a step failed on purpose" in proc.stderr


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_rank_that_fails_at_a_random_iteration_ends_the_job_in_seconds(n, how):
    rng = np.random.default_rng(n + (how == "kill"))
    rank, at = int(rng.integers(0, n)), int(rng.integers(2, 12))  # a random rank, at a random fine sweep
    t0 = time.monotonic()
    proc = mpirun(n, HERE / "mpi_driver.py", "--fail-rank", rank, at, how, timeout=60)
    assert time.monotonic() - t0 < 30, "the other ranks must not wait for the failed one"
    assert proc.returncode != 0
    if how == "raise":
        assert f"rank {rank} of {n} failed" in proc.stderr and "a step failed on purpose" in proc.stderr
    else:  # a killed process says nothing; mpiexec names it and ends the others
        assert "BAD TERMINATION" in proc.stdout + proc.stderr and "signal 9" in proc.stdout + proc.stderr


def test_cli_train_under_mpiexec_prints_once_and_writes_json(tmp_path):
    out = tmp_path / "run.json"
    pintrain = Path(sys.executable).with_name("pintrain")
    proc = subprocess.run(
        [MPIEXEC, "-n", "3", str(pintrain), "train", "--problem", "sine", "--steps", "700", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("pintrain train:") == 1 and proc.stdout.count("converged") == 1
    rec = json.loads(out.read_text())
    assert rec["ranks"] == 3 and rec["max_abs_diff"] < 1e-8 and len(rec["mgrit"]["losses"]) == 701


def test_cli_bench_under_mpiexec_runs_the_one_process_parts_once(tmp_path):
    # part 1 is timed over the ranks; the convergence suite (like part 4) is a one-process benchmark,
    # which rank 0 runs alone (every rank running it would only compete for the cores)
    pytest.importorskip("sklearn")
    pintrain = Path(sys.executable).with_name("pintrain")
    args = ["bench", "--sizes", "64", "--repeat", "1", "--no-pymgrit", "--no-torch", "--out", str(tmp_path)]
    proc = subprocess.run(
        [MPIEXEC, "-n", "2", str(pintrain), *args, "--suite", "wine-mlp-sgd", "--suite-steps", "64"],
        capture_output=True,
        text=True,
        timeout=180,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("running: suite wine-mlp-sgd") == 1
    assert proc.stdout.count("Convergence suite, N = 64") == 1
    rows = json.loads((tmp_path / "bench.json").read_text())["suite"]["rows"]
    assert [r["case"] for r in rows] == ["wine-mlp-sgd"] and rows[0]["converged"]


def test_cli_divergence_under_mpiexec_exits_3_once(tmp_path):
    pintrain = Path(sys.executable).with_name("pintrain")
    proc = subprocess.run(
        [MPIEXEC, "-n", "2", str(pintrain), "train", "--problem", "sine", "--coarse", "union", "--levels", "4", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert proc.returncode == 3
    assert proc.stderr.count("pintrain: diverged") == 1 and "level 3" in proc.stderr


def test_everything_works_without_mpi4py(tmp_path):
    code = (
        "import sys; sys.modules['mpi4py'] = None\n"
        "from pintrain.mgrit import solve\n"
        "from pintrain.problems import Dahlquist\n"
        "r = solve(Dahlquist(64), levels=2, cfactor=4)\n"
        "assert r.converged and r.ranks == 1\n"
        "from pintrain.cli import main\n"
        "assert main(['solve', '--steps', '64', '-q']) == 0\n"
        "print('ok')\n"
    )
    for extra in ({}, {"PMI_SIZE": "1"}):  # also when it looks as if started by mpiexec
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**ENV, **extra}, timeout=60
        )
        assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr


def test_cli_solve_under_mpiexec_matches_serial_once():
    pintrain = Path(sys.executable).with_name("pintrain")
    proc = subprocess.run(
        [MPIEXEC, "-n", "3", str(pintrain), "solve", "--steps", "1000", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("converged")]
    assert len(lines) == 1
    assert float(lines[0].rsplit("=", 1)[1]) < 1e-8


def test_a_fine_step_nan_is_reported_where_it_arose_at_every_rank_count(runs, single):
    ref = single["fine-nan-at-400"]
    assert isinstance(ref, DivergenceError) and (ref.level, ref.step) == (0, 400)
    for n in RANKS:
        got = runs[n]["fine-nan-at-400"]
        assert (got["level"], got["step"]) == (0, 400) and "fine step (level 0) from fine point 400" in got["error"][0]


def test_ctrl_c_under_mpiexec_ends_every_rank_with_one_line_each(tmp_path):
    import signal

    pintrain = Path(sys.executable).with_name("pintrain")
    argv = [MPIEXEC, "-n", "2", str(pintrain), "train", "--problem", "sine", "--steps", "60000", "--coarse", "union"]
    proc = subprocess.Popen([*argv, "--levels", "2", "-q"], cwd=tmp_path, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(3)  # in the middle of the solve
    assert proc.poll() is None
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 20
    assert proc.returncode != 0 and "interrupted" in err and "Traceback" not in err, err
