"""Bad input gets a clear error naming the field, before any work."""

import numpy as np
import pytest

from pintrain import DivergenceError, OptionError
from pintrain.mgrit import SolverOptions, solve
from pintrain.mgrit.options import parse_relax
from pintrain.problems import Dahlquist, Heat1D


class CountingDahlquist(Dahlquist):
    calls = 0

    def step(self, u, k, m):
        CountingDahlquist.calls += 1
        return super().step(u, k, m)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"levels": 0}, "levels"),
        ({"levels": 2.5}, "levels"),
        ({"cfactor": 1}, "cfactor"),
        ({"cfactor": [4, 1]}, "cfactor"),
        ({"cfactor": []}, "cfactor"),
        ({"tol": 0.0}, "tol"),
        ({"tol": -1e-9}, "tol"),
        ({"tol": float("nan")}, "tol"),
        ({"relax": "CF"}, "relax"),
        ({"relax": "FF"}, "relax"),
        ({"cycle": "W"}, "cycle"),
        ({"max_iter": 0}, "max_iter"),
        ({"norm": "l1"}, "norm"),
        ({"rtol": 2.0}, "rtol"),
        ({"guess": "random"}, "guess"),
        ({"nested": "yes"}, "nested"),
    ],
)
def test_bad_option_names_field_before_work(kwargs, field):
    CountingDahlquist.calls = 0
    with pytest.raises(OptionError) as err:
        solve(CountingDahlquist(16), **kwargs)
    assert err.value.field == field
    assert field in str(err.value) and "must be" in str(err.value)
    assert isinstance(err.value, ValueError)
    assert CountingDahlquist.calls == 0


@pytest.mark.parametrize("n", [0, -3, 2.0, True])
def test_bad_number_of_steps(n):
    with pytest.raises(OptionError, match="n_steps"):
        Dahlquist(n)


def test_problem_with_bad_n_steps_or_state():
    class P:
        n_steps = 0

        def initial(self):
            return np.ones(2)

        def step(self, u, k, m):
            return u

    with pytest.raises(OptionError, match="problem.n_steps"):
        solve(P())
    P.n_steps = 8
    P.initial = lambda self: np.ones((2, 2))
    with pytest.raises(OptionError, match="1-D"):
        solve(P())
    P.initial = lambda self: np.array([1.0, np.nan])
    with pytest.raises(OptionError, match="finite"):
        solve(P())


def test_heat_bad_input():
    with pytest.raises(OptionError, match="nx"):
        Heat1D(8, nx=1)
    with pytest.raises(OptionError, match="a="):
        Heat1D(8, a=-1.0)


def test_relax_names():
    assert parse_relax("F") == 0
    assert parse_relax("FCF") == 1
    assert parse_relax("fcfcf") == 2
    assert parse_relax("F(CF)^3") == 3
    assert SolverOptions(relax="F(CF)^2").nu == 2


def test_cfactor_list_repeats_last():
    opt = SolverOptions(cfactor=[2, 4])
    assert [opt.cfactor_at(i) for i in range(4)] == [2, 4, 4, 4]


def test_nan_state_raises_where_it_arose(nan_problem):
    # the coarse steps return NaN from fine step 40 on: the first one evaluated is level 1's from 40
    with pytest.raises(DivergenceError) as err:
        solve(nan_problem, levels=3, cfactor=2)
    e = err.value
    assert e.iteration == 1
    assert e.level == 1 and e.step == nan_problem.bad
    assert "non-finite" in str(e) and "coarse step of level 1" in str(e) and "Suggestion" in str(e)


def test_growing_state_raises_at_its_level():
    # forward-Euler-like coarse step that is unstable: |1 + lam*m*dt| > 1 for m >= 4
    class Unstable(Dahlquist):
        def step(self, u, k, m):
            if m == 1:
                return super().step(u, k, m)
            return u * (1.0 + self.lam * m * self.dt)

        step_many = None  # the solver then loops over step()

    with pytest.raises(DivergenceError) as err:
        solve(
            Unstable(4096, lam=-1.0, t_stop=4096 * 0.6),
            levels=3,
            cfactor=4,
            max_iter=50,
            divergence_factor=1e6,
        )
    # caught where it happens: on the coarsest level (spacing 16), in the first iteration
    assert err.value.iteration == 1 and err.value.level == 2
    assert "level 2" in str(err.value) and "grew to" in str(err.value) and "Suggestion" in str(err.value)
