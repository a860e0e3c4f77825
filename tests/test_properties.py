"""Property tests (hypothesis): any valid solver settings converge to the serial answer on the linear
problems; any invalid setting raises OptionError (never another exception)."""

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pintrain.errors import OptionError
from pintrain.mgrit import SolverOptions, serial_solve, solve
from pintrain.mgrit.options import MAX_NU, parse_relax
from pintrain.problems import Dahlquist, Heat1D

valid_options = st.fixed_dictionaries(
    {
        "levels": st.integers(1, 6),
        "cfactor": st.one_of(st.integers(2, 8), st.lists(st.integers(2, 8), min_size=1, max_size=4)),
        "relax": st.sampled_from(["F", "FCF", "FCFCF", "F(CF)^3", " fcf "]),
        "cycle": st.sampled_from(["V", "F"]),
        "nested": st.booleans(),
        "norm": st.sampled_from(["l2", "inf"]),
        "guess": st.sampled_from(["initial", "zero"]),
        "min_coarse": st.integers(2, 6),
        "max_coarse": st.one_of(st.none(), st.integers(1, 40)),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(opts=valid_options, n=st.integers(1, 300), heat=st.booleans(), lam=st.floats(-4.0, -0.1))
def test_valid_options_converge_to_the_serial_answer(opts, n, heat, lam):
    problem = Heat1D(n, nx=7) if heat else Dahlquist(n, lam=lam)
    options = SolverOptions(tol=1e-11, max_iter=200, **opts)
    res = solve(problem, options=options)
    assert res.converged, (options, res.residuals[-3:])
    ref = serial_solve(problem)
    assert res.states.shape == ref.shape
    # backward Euler is a contraction: the error is bounded by the residual's size, times N at worst
    assert np.abs(res.states - ref).max() <= 1e-11 * max(n, 1) * 10


scalar_junk = st.one_of(st.none(), st.text(max_size=5), st.floats(allow_nan=True), st.booleans())
junk = st.one_of(scalar_junk, st.lists(st.integers(), max_size=3))
invalid_fields = st.one_of(
    st.tuples(st.just("levels"), st.one_of(st.integers(max_value=0), junk)),
    st.tuples(st.just("cfactor"), st.one_of(st.integers(max_value=1), st.just([]), st.just([2, 1]), scalar_junk)),
    st.tuples(st.just("relax"), st.one_of(st.text(max_size=8).filter(lambda t: not _is_relax(t)),
                                          st.just(f"F(CF)^{MAX_NU + 1}"), st.integers())),
    st.tuples(st.just("cycle"), st.text(max_size=3).filter(lambda t: t not in ("V", "F"))),
    st.tuples(st.just("tol"), st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan), st.text())),
    st.tuples(st.just("rtol"), st.one_of(st.floats(min_value=1.0), st.floats(max_value=0.0))),
    st.tuples(st.just("max_iter"), st.one_of(st.integers(max_value=0), st.floats())),
    st.tuples(st.just("nested"), st.one_of(st.integers(), st.text(max_size=3))),
    st.tuples(st.just("norm"), st.text(max_size=4).filter(lambda t: t not in ("l2", "inf"))),
    st.tuples(st.just("min_coarse"), st.integers(max_value=1)),
    st.tuples(st.just("max_coarse"), st.one_of(st.integers(max_value=0), st.floats(), st.text(max_size=2))),
    st.tuples(st.just("guess"), st.text(max_size=6).filter(lambda t: t not in ("zero", "initial"))),
    st.tuples(st.just("divergence_factor"), st.one_of(st.floats(max_value=1.0), st.just(math.nan))),
)  # fmt: skip


def _is_relax(text):
    try:
        parse_relax(text)
    except OptionError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(field=invalid_fields)
def test_invalid_options_raise_option_error_naming_the_field(field):
    name, value = field
    try:
        SolverOptions(**{name: value})
    except OptionError as err:
        assert err.field == name or err.field == "relax"
    else:
        raise AssertionError(f"{name}={value!r} was accepted")


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=12))
def test_the_relax_parser_returns_nu_or_refuses(text):
    try:
        nu = parse_relax(text)
    except OptionError:
        return
    assert 0 <= nu <= MAX_NU
    canon = text.strip().upper()
    assert canon == "F" + "CF" * nu or canon == f"F(CF)^{nu}" or canon.startswith("F(CF)^")
