"""`pintrain reproduce` regenerates the tables in the paper's shape, as Markdown and JSON."""

import json

from pintrain.cli import main
from pintrain.reproduce import tables


def test_table_definitions_have_the_papers_shape():
    defs = tables()
    titles = [t["title"] for t in defs]
    for name in ("xor", "sine"):
        assert any(t.startswith(f"{name}: iterations against the number of training steps") for t in titles)
        assert any(t.startswith(f"{name}: F against FCF") for t in titles)
        assert sum(t.startswith(f"{name}, coarse propagator") for t in titles) == 2
    for t in defs:
        assert len(t["cases"]) == len(t["rows"]) and all(len(r) == len(t["cols"]) for r in t["cases"])


def test_quick_reproduce_writes_markdown_and_json(tmp_path, capsys):
    assert main(["reproduce", "--quick", "-q", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "tables.md").read_text()
    rec = json.loads((tmp_path / "tables.json").read_text())
    assert "paper's figure" in md and md.count("### ") == len(rec["tables"]) == 8
    statuses = {r["status"] for t in rec["tables"] for row in t["results"] for r in row}
    assert statuses <= {"converged", "not converged", "diverged"}
    # the stable coarse propagator converges in every cell of the quick tables
    for t in rec["tables"]:
        for row in t["results"]:
            for r in row:
                if r["coarse"] == "gauss-newton":
                    assert r["status"] == "converged", r
    assert "nan" not in md.lower()
    assert md.strip() in capsys.readouterr().out
