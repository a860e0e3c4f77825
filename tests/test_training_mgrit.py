"""MGRIT training converges to the weights of serial training, at every step, for both model problems."""

import json

import numpy as np
import pytest

from pintrain import DivergenceError
from pintrain.api import Comparison, compare, train
from pintrain.cli import main
from pintrain.mgrit import SolverOptions, serial_solve, solve
from pintrain.training import model_problem

TOL = 1e-9


def check_matches_serial(problem, ref, res):
    assert res.converged, res.residuals
    diff = np.abs(res.states - ref).max(axis=1)
    # C-points of the fine level and every other point: the weights equal serial training's
    cf = res.hierarchy[0]["cfactor"] or 1
    assert diff[::cf].max() <= 10 * TOL
    assert diff.max() <= 10 * TOL
    np.testing.assert_allclose(problem.losses(res.states), problem.losses(ref), atol=10 * TOL, rtol=0)


@pytest.mark.parametrize("name", ["xor", "sine"])
@pytest.mark.parametrize("n_steps", [512, 1000, 2048])
def test_stable_coarse_propagator_2_to_4_levels(name, n_steps):
    problem = model_problem(name, steps=n_steps, coarse="gauss-newton")
    ref = serial_solve(problem)
    for levels in (2, 3, 4):
        res = solve(problem, levels=levels, cfactor=4, tol=TOL, max_iter=40)
        check_matches_serial(problem, ref, res)


@pytest.mark.parametrize("name", ["xor", "sine"])
def test_papers_coarse_propagator_two_levels_and_split(name):
    problem = model_problem(name, steps=1024, coarse="union")
    ref = serial_solve(problem)
    check_matches_serial(problem, ref, solve(problem, levels=2, cfactor=4, tol=TOL, max_iter=60))
    split = model_problem(name, steps=1024, coarse="split", max_ratio=4)
    check_matches_serial(split, ref, solve(split, levels=3, cfactor=8, tol=TOL, max_iter=60))


def test_fcf_and_f_cycles_and_nested():
    problem = model_problem("sine", steps=1500, coarse="gauss-newton")
    ref = serial_solve(problem)
    for kw in ({"relax": "F"}, {"cycle": "F"}, {"nested": True}, {"cfactor": [2, 8]}):
        check_matches_serial(problem, ref, solve(problem, levels=3, tol=TOL, max_iter=60, **kw))


def test_api_train_and_compare():
    problem = model_problem("xor", steps=600, coarse="gauss-newton")
    serial = train(problem, "serial")
    mgrit = train(problem, "mgrit", SolverOptions(levels=3, cfactor=4, tol=TOL))
    assert mgrit.solver.converged
    assert abs(serial.final_loss - mgrit.final_loss) < 1e-8
    assert serial.final_loss < 0.5 * serial.losses[0]  # it does learn
    rec = compare(problem, SolverOptions(levels=3, cfactor=4, tol=TOL))
    assert rec.max_abs_diff <= 10 * TOL
    assert rec.mgrit.iterations == mgrit.solver.iterations
    # the record --json writes, and back
    again = Comparison.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert again == rec and again.to_dict() == rec.to_dict()


def test_divergence_names_level_and_step_and_suggests_a_fix():
    problem = model_problem("sine", steps=4096, coarse="union")
    with pytest.raises(DivergenceError) as err:
        solve(problem, levels=4, cfactor=4, tol=TOL)
    e = err.value
    assert e.level is not None and e.level >= 1 and e.step is not None
    msg = str(e)
    assert f"level {e.level}" in msg and f"fine step {e.step}" in msg and "gauss-newton" in msg


def test_cli_train_writes_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "run.json", tmp_path / "run.png"
    rc = main(["train", "--problem", "sine", "--steps", "800", "--levels", "3", "--json", str(out), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "serial" in text and "MGRIT" in text and "max |w_mgrit - w_serial|" in text
    rec = json.loads(out.read_text())
    for key in ("problem", "options", "serial", "mgrit", "max_abs_diff"):
        assert key in rec
    for key in ("losses", "final_loss", "wall_s"):
        assert key in rec["serial"] and key in rec["mgrit"]
    for key in ("iterations", "residuals", "converged"):
        assert key in rec["mgrit"]
    assert len(rec["serial"]["losses"]) == 801 and rec["max_abs_diff"] <= 10 * TOL
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_divergence_exits_3_with_message_and_no_nan_table(tmp_path, capsys):
    out = tmp_path / "div.json"
    rc = main(["train", "--problem", "sine", "--coarse", "union", "--levels", "4", "--json", str(out)])
    cap = capsys.readouterr()
    assert rc == 3
    assert "diverged" in cap.err and "level" in cap.err and "Suggestion" in cap.err
    assert "nan" not in cap.out.lower()
    rec = json.loads(out.read_text())
    assert rec["mgrit"]["diverged"] is True and rec["serial"]["final_loss"] > 0


@pytest.mark.parametrize(
    "argv, text",
    [
        (["train", "--steps", "0"], "steps"),
        (["train", "--lr", "-1"], "lr"),
        (["train", "--levels", "0"], "levels"),
        (["train", "--problem", "xor", "--batch-size", "2"], "batch-size"),
        (["train", "--problem", "sine", "--batch-size", "0"], "batch_size"),
    ],
)
def test_cli_bad_input_is_a_message_not_a_traceback(argv, text, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pintrain: error:" in err and text in err and "Traceback" not in err


@pytest.mark.parametrize("storage", ["full", "c-points"])
def test_steps_written_into_the_level_rows_give_the_same_bits(storage):
    # a training problem steps_into: the F-relaxation hands step_many the level's rows (out=) to
    # write, instead of taking a new array and copying it; the answer is the same, bit for bit
    problem = model_problem("sine", steps=256, lr=0.05)
    calls = {"out": 0}
    own = problem.step_many

    def counted(U, ks, m, out=None):
        calls["out"] += out is not None
        return own(U, ks, m, out=out)

    opts = SolverOptions(levels=3, cfactor=4, tol=1e-12, max_iter=6, storage=storage)
    problem.step_many = counted
    into = solve(problem, options=opts)
    assert (calls["out"] > 0) == (storage == "full")  # C-point sweeps step into buffers of their own
    problem.steps_into = False  # the copy path
    copied = solve(problem, options=opts)
    np.testing.assert_array_equal(into.states, copied.states)
    assert into.residuals == copied.residuals


def test_a_problem_that_steps_into_must_return_out():
    from pintrain.errors import ProblemError

    class Careless:
        n_steps, steps_into = 16, True

        def initial(self):
            return np.ones(3)

        def step(self, u, k, m):
            return 0.9 * u

        def step_many(self, U, ks, m, out=None):
            return 0.9 * U  # ignores out

    with pytest.raises(ProblemError, match="did not return out"):
        solve(Careless(), levels=2, cfactor=4)
