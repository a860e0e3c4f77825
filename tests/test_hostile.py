"""Hostile input, table-driven: every case gets its documented exit code or error type, a message
that says what to change, no traceback, no hang, and no damage to files written before.

Exit codes (README): 0 converged, 1 not converged, 2 bad input, 3 diverged. Grow the tables with
every bug found.
"""

import json
import math

import numpy as np
import pytest

from pintrain import DivergenceError, NotConvergedError, OptionError, ProblemError, ResourceError
from pintrain.api import train
from pintrain.cli import main
from pintrain.mgrit import SolverOptions, solve
from pintrain.problems import Dahlquist, Heat1D
from pintrain.training import model_problem

# (argv, exit code, text that the error message must contain)
CLI_CASES = [
    (["train", "--relax", "F(CF)^1000000000"], 2, "nu <= 100"),
    (["train", "--steps", "1000000000"], 2, "needs about"),
    (["solve", "--nx", "100000"], 2, "needs about"),
    (["train", "--seed", "-1"], 2, "seed=-1"),
    (["train", "--problem", "sine", "--seed", "-1"], 2, "seed=-1"),
    (["train", "--steps", "0"], 2, "steps=0"),
    (["train", "--levels", "0"], 2, "levels=0"),
    (["train", "--cfactor", "1"], 2, "cfactor=1"),
    (["train", "--cfactor", "two"], 2, "--cfactor"),
    (["train", "--tol", "-1"], 2, "tol=-1"),
    (["train", "--max-coarse", "0"], 2, "max_coarse=0"),
    (["train", "--hidden", "0"], 2, "hidden=0"),
    (["train", "--problem", "paper1", "--alpha-max", "0.5"], 2, "alpha_max"),
    (["train", "--problem", "paper2", "--examples", "0"], 2, "examples=0"),
    (["reproduce", "--tables", "0"], 2, "tables"),
    (["reproduce", "--jobs", "0"], 2, "--jobs"),
    (["bench", "--sizes", "1"], 2, "--sizes"),
    (["bench", "--repeat", "0"], 2, "--repeat"),
]


@pytest.mark.parametrize("argv,code,text", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_refuses_bad_input_with_a_message(argv, code, text, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err


PINNED = ("--levels", "3", "--cfactor", "4")  # a fixed hierarchy: these tests are not about the cost model


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [
        (["train", "--json", str(blocker / "x.json")], "cannot write"),
        (["train", "--plot", str(blocker / "x.png")], "cannot write"),
        (["train", "--json", str(tmp_path / "same.png"), "--plot", str(tmp_path / "same.png")], "same file"),
        (["train", "--plot", str(tmp_path / "x.xyz")], "cannot write .xyz"),
        (["train", "--json", str(tmp_path)], "is a folder"),
        (["solve", "--json", str(blocker / "x.json")], "cannot write"),
        (["reproduce", "--out", str(blocker / "sub")], "cannot write"),
        (["bench", "--out", str(blocker / "sub"), "--no-pymgrit"], "cannot write"),
    ]
    for argv, text in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err, (argv, err)
    assert blocker.read_text() == "x"


def test_a_plot_path_without_extension_is_written_exactly_there(tmp_path, capsys):
    plot = tmp_path / "curves"
    assert main(["train", *PINNED, "--steps", "256", "-q", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "curves.png").exists()
    assert f"wrote {plot}" in capsys.readouterr().out


def test_an_earlier_good_file_survives_a_failed_write(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run.json"
    assert main(["train", *PINNED, "--steps", "256", "-q", "--json", str(out)]) == 0
    good = out.read_text()

    import pintrain.outputs as outputs

    def disk_full(tmp):  # writes half, then the disk is full
        tmp.write_text(good[: len(good) // 2])
        raise OSError(28, "No space left on device")

    real = outputs.write_atomic
    monkeypatch.setattr(outputs, "write_atomic", lambda path, write: real(path, disk_full))
    assert main(["train", *PINNED, "--steps", "256", "-q", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "earlier file" in err and "Traceback" not in err
    assert out.read_text() == good and json.loads(out.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary left behind


def test_a_singular_gauss_newton_solve_is_a_divergence_with_the_serial_run_written(tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["train", *PINNED, "--problem", "sine", "--steps", "2048", "--lr", "1", "-q", "--json", str(out)]) == 3
    err = capsys.readouterr().err
    assert "diverged" in err and "Traceback" not in err and "LinAlgError" not in err
    rec = json.loads(out.read_text())
    assert rec["mgrit"]["diverged"] and math.isfinite(rec["serial"]["final_loss"])
    assert "use the stable coarse propagator 'gauss-newton'" not in rec["mgrit"]["error"]  # it is in use


def test_an_absurd_learning_rate_gives_valid_json(tmp_path, capsys):
    out = tmp_path / "inf.json"
    assert main(["train", *PINNED, "--steps", "256", "--lr", "1e300", "-q", "--json", str(out)]) == 3

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    rec = json.loads(out.read_text(), parse_constant=refuse)
    assert rec["mgrit"]["diverged"]
    assert "Traceback" not in capsys.readouterr().err


def test_serial_training_that_itself_diverges_is_said_so(capsys):
    pytest.importorskip("torch")
    argv = ["train", "--problem", "digits-mlp", "--lr", "1e4", "--steps", "64", "--levels", "2", "--max-iter", "8"]
    assert main([*argv, "-q"]) == 3
    assert "serial training itself diverges" in capsys.readouterr().out


# -- the Python API ------------------------------------------------------------------------------
class Returns:
    """A problem whose fine step returns ``value(u)``."""

    n_steps = 16

    def __init__(self, value, u0=(1.0, 2.0)):
        self.value, self.u0 = value, np.array(u0)

    def initial(self):
        return self.u0.copy()

    def step(self, u, k, m):
        return self.value(u)


class FineNaN(Dahlquist):
    """The fine step from point 37 returns NaN (in its batched and its single form)."""

    def step_many(self, U, ks, m):
        out = super().step_many(U, ks, m)
        out[(np.asarray(ks) == 37) & (m == 1)] = np.nan
        return out

    def step(self, u, k, m):
        return self.step_many(u[None], np.array([k]), m)[0]


API_CASES = [
    ("problem=None", lambda: solve(None), OptionError, "Problem protocol"),
    ("options as a dict", lambda: solve(Dahlquist(16), options={"levels": 2}), OptionError, "SolverOptions"),
    ("options and keywords", lambda: solve(Dahlquist(16), levels=5, options=SolverOptions(levels=2)), OptionError,
     "given with levels"),
    ('comm="bogus"', lambda: solve(Dahlquist(16), comm="bogus"), OptionError, "mpi4py communicator"),
    ("complex state", lambda: solve(Returns(lambda u: u * (1 + 1j)), levels=2, cfactor=2), ProblemError, "complex"),
    ("complex initial", lambda: solve(Returns(lambda u: u, u0=(1j, 2.0)), levels=2, cfactor=2), OptionError, "real"),
    ("scalar step", lambda: solve(Returns(lambda u: 0.5), levels=2, cfactor=2), ProblemError, "shape ()"),
    ("None step", lambda: solve(Returns(lambda u: None), levels=2, cfactor=2), ProblemError, "returned None"),
    ("string step", lambda: solve(Returns(lambda u: "abc"), levels=2, cfactor=2), ProblemError, "dtype"),
    ("wrong shape", lambda: solve(Returns(lambda u: np.ones(3)), levels=2, cfactor=2), ProblemError, "(3,)"),
    ("hidden=4.5", lambda: model_problem("xor", hidden=4.5), OptionError, "hidden=4.5"),
    ("seed=1.5", lambda: model_problem("xor", seed=1.5), OptionError, "seed=1.5"),
    ("paper seed=-1", lambda: model_problem("paper1", seed=-1), OptionError, "seed=-1"),
    ("nu too large", lambda: SolverOptions(relax="F(CF)^101"), OptionError, "nu <= 100"),
    ("huge heat", lambda: Heat1D(16, nx=10**6), ResourceError, "needs about"),
    ("huge N", lambda: solve(Dahlquist(10**10), levels=2), ResourceError, "needs about"),
    ("fine NaN at 37", lambda: solve(FineNaN(64), levels=3, cfactor=4), DivergenceError,
     "fine step (level 0) from fine point 37"),
]  # fmt: skip


@pytest.mark.parametrize("name,call,error,text", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_refuses_bad_input_with_a_message(name, call, error, text):
    with pytest.raises(error) as info:
        call()
    assert text in str(info.value)


def test_fine_nan_is_reported_at_its_level_and_step():
    with pytest.raises(DivergenceError) as info:
        solve(FineNaN(64), levels=3, cfactor=4)
    assert (info.value.level, info.value.step) == (0, 37)


def test_an_unconverged_solve_never_passes_for_an_answer():
    problem = model_problem("sine", steps=512, coarse="union")
    opts = SolverOptions(levels=2, cfactor=4, max_iter=2)
    with pytest.raises(NotConvergedError) as info:
        train(problem, "mgrit", opts)
    partial = info.value.result
    assert partial.solver.iterations == 2 and not partial.solver.converged
    assert "allow_unconverged=True" in str(info.value)
    taken = train(problem, "mgrit", opts, allow_unconverged=True)
    np.testing.assert_array_equal(taken.states, partial.states)


def test_fit_raises_when_mgrit_does_not_converge():
    torch = pytest.importorskip("torch")
    from torch import nn

    from pintrain.torch import fit

    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 4, generator=g, dtype=torch.float64)
    y = X.sum(dim=1, keepdim=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    kw = dict(steps=128, batch_size=8, lr=0.05, levels=2, cfactor=4, options=None)
    with pytest.raises(NotConvergedError) as info:
        fit(model, nn.MSELoss(), X, y, options=SolverOptions(levels=2, cfactor=4, max_iter=1))
    assert info.value.result.solver.iterations == 1
    res = fit(model, nn.MSELoss(), X, y, allow_unconverged=True, **kw)
    assert res.solver.converged


def test_a_wobbling_floor_is_a_stall_and_a_transient_or_slow_decrease_is_not():
    from pintrain.mgrit.solver import STALL_WINDOW, _stalled

    # float32's floor wobbles by about 1% (digits MLP with Adam, N = 4096, tol 1e-5)
    floor = [18.1, 0.279, 0.0365, 2.07e-3, 1.10e-4, 4.71e-5, 2.05e-5, 1.44e-5, 1.30e-5, 1.28e-5]
    floor += [1.29e-5, 1.29e-5, 1.28e-5, 1.28e-5, 1.27e-5, 1.27e-5, 1.28e-5, 1.27e-5]
    first = next(i + 1 for i in range(len(floor)) if _stalled(floor[: i + 1]))
    assert first == len(floor)  # eight iterations on the plateau after 1.28e-5
    # a rise that is coming back down, and a slow steady decrease (2% an iteration), are not stalls;
    # nor is the hump of heavy ball on least squares (tests/test_coarse_lsq.py, momentum-split: 35 iterations)
    transient = [1.0, 10.0, 100.0, 60.0, 30.0, 15.0, 8.0, 4.0, 2.0, 1.5, 1.2]
    slow = [0.98**i for i in range(3 * STALL_WINDOW)]
    hump = [11.9, 2.08, 1.67, 1.78, 1.96, 2.17, 2.40, 2.61, 2.74, 2.72, 2.52, 2.16, 1.71, 1.25, 0.838, 0.519]
    for history in (transient, slow, hump):
        assert not any(_stalled(history[: i + 1]) for i in range(len(history)))
        assert not any(_stalled(history[: i + 1], roundoff=1e-8) for i in range(len(history)))
    # a noisier float32 floor (a small MLP, N = 1024: eps sqrt(256) = 1.9e-6): a stall within a
    # thousand round-off units of it, not far above it
    noisy = [2.69e-2, 6.48e-4, 7.55e-6, 3.58e-6, 2.30e-6, 2.04e-6, 2.14e-6, 2.01e-6, 1.87e-6, 2.22e-6]
    noisy += [2.35e-6, 2.08e-6, 1.88e-6, 1.89e-6, 1.98e-6, 1.93e-6, 1.91e-6, 1.91e-6, 1.98e-6, 1.95e-6]
    unit = float(np.finfo(np.float32).eps) * 16
    first = next(i + 1 for i in range(len(noisy)) if _stalled(noisy[: i + 1], roundoff=unit))
    assert first == 14
    assert not any(_stalled(noisy[: i + 1]) for i in range(len(noisy)))  # without the unit: never
    assert not any(_stalled([r * 1e4 for r in noisy[: i + 1]], roundoff=unit) for i in range(len(noisy)))


def test_a_stalled_solve_stops_early_and_says_so():
    # a tolerance below round-off: the residual settles at its floating-point floor and stays there
    problem = model_problem("paper2", steps=40, lr=0.1, examples=50)
    opts = SolverOptions(levels=2, cfactor=2, guess="zero", tol=1e-300, max_iter=50)
    res = solve(problem, options=opts)
    assert not res.converged and res.stalled and res.iterations < 50
    assert res.residuals[-1] == pytest.approx(res.residuals[-2], rel=1e-10)
    with pytest.raises(NotConvergedError, match="stalled"):
        train(problem, "mgrit", opts)
