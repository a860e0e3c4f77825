"""The README's Python examples run as written (the docs match the code)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_examples():
    assert len(BLOCKS) >= 3
    assert any("from pintrain.torch import fit" in b for b in BLOCKS)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, capsys):
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    if "from pintrain.torch import fit" in code:
        out = capsys.readouterr().out
        match = re.search(r"(\d+) MGRIT iterations, last batch loss ([\d.]+), accuracy ([\d.]+)", out)
        assert match, out
        # the numbers the README quotes for this example
        assert f"{match.group(1)} MGRIT iterations, last batch loss {match.group(2)}, accuracy {match.group(3)}" in (
            README.read_text()
        )
