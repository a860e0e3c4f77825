"""pintrain reproduces PyMGRIT 1.0.6's recorded runs (benchmarks/vs_pymgrit.py writes the record)."""

import json
from pathlib import Path

import numpy as np
import pytest

from pintrain.peer import run_pintrain

RECORD = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "vs_pymgrit.json"


def load_cases():
    return json.loads(RECORD.read_text())["cases"]


def test_record_exists_and_is_complete():
    cases = load_cases()
    assert len(cases) >= 80
    assert {c["case"]["problem"] for c in cases} == {"dahlquist", "heat"}


@pytest.mark.parametrize(
    "row",
    load_cases(),
    ids=lambda r: "{problem}-N{n_steps}-L{levels}-cf{cfactor}-nu{nu}-{cycle}{nested}".format(**r["case"]),
)
def test_same_iterations_and_residuals_as_pymgrit(row):
    ours = run_pintrain(row["case"])
    theirs = row["pymgrit"]
    assert ours["iterations"] == theirs["iterations"]
    # residual histories agree to round-off relative to the states (|u| <= 1 here)
    np.testing.assert_allclose(ours["residuals"], theirs["residuals"], rtol=1e-4, atol=1e-13)
    np.testing.assert_allclose(ours["final_state"], theirs["final_state"], rtol=1e-9, atol=1e-12)
