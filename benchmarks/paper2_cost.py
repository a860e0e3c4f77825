"""The paper's four-layer problem (paper2: 24-128-64-12 sigmoid network, 12,032 weights, 500
examples): where MGRIT's time goes, and the cost model's speedup at P ranks.

    python benchmarks/paper2_cost.py                  # the speedup table from the reproduction record
    python benchmarks/paper2_cost.py --profile        # and the BLAS share of a solve (needs py-spy)

Speedup: for every converged cell of the reproduced paper2 tables (docs/reproduction/tables.json:
iterations, levels; cfactor 2 as the paper), ``N / (iterations x critical path per iteration)``
with the critical path of ``Hierarchy.iteration_cost(1, cycle, ranks=P)``: each of P ranks steps
its share of a level's points (at least one C-interval) in every sweep, the coarsest level one
sequential sweep; a coarse step counts as one fine step (the paper's coarse steps are one step of
the fine kind on the same data); communication is not counted.

Profile: ``py-spy record --native`` of one MGRIT solve (N = 1024, 3 levels, cfactor 4, the CLI's
solver1, 15 iterations, one BLAS thread); the share of samples whose innermost frame is a GEMM
kernel (``*gemm*``), and of the network's other arithmetic (the sigmoid's exp and divide).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pintrain.mgrit import Hierarchy, SolverOptions

ROOT = Path(__file__).resolve().parent.parent
RANKS = (64, 256, 1024, None)
SOLVE = """
from pintrain.mgrit import solve
from pintrain.training import model_problem
solve(model_problem("paper2", steps=1024), levels=3, cfactor=4, tol=1e-30, max_iter=15)
"""


def speedups(record: dict) -> list[dict]:
    rows = []
    for tab in record["tables"]:
        if tab.get("problem") != "paper2":
            continue
        cycle = "F" if tab["cycle"] == "F" else "V"
        for cell in tab["cells"]:
            if cell.get("iterations") is None:
                continue
            hier = Hierarchy(cell["N"], SolverOptions(levels=cell["levels"], cfactor=2, cycle=cycle))
            sp = {}
            for p in RANKS:
                path = hier.iteration_cost(1, cycle, ranks=p)["critical_path"]
                sp["limit" if p is None else str(p)] = cell["N"] / (cell["iterations"] * path)
            rows.append(
                {"table": tab["table"], "title": tab["title"], "N": cell["N"], "iterations": cell["iterations"]} | sp
            )
    return rows


def profile() -> dict[str, float]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.txt"
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        subprocess.run(
            [
                spy,
                "record",
                "--native",
                "--format",
                "raw",
                "-r",
                "200",
                "-o",
                str(out),
                "--",
                sys.executable,
                "-c",
                SOLVE,
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        return shares(out.read_text().splitlines())


def shares(lines: list[str]) -> dict[str, float]:
    """Shares of py-spy raw samples by their innermost native frame: ``blas`` (OpenBLAS's GEMM
    kernels, its operand packing ``*copy*``, and the unnamed frames it calls, such as the zeroing
    of a fresh output under ``dgemm_beta``), ``gemm`` (the kernels alone, the earlier measure),
    ``numpy_arithmetic`` (numpy's elementwise loops ``DOUBLE_*`` and the vector math ``__svml_*``:
    the sigmoid, its derivative, the solver's sums), ``activation`` (their exp and divide)."""
    total, kinds = 0, collections.Counter()
    for line in lines:
        stack, n = line.rsplit(" ", 1)
        frames = [f.lower() for f in stack.split(";")]
        leaf, parent = frames[-1], frames[-2] if len(frames) > 1 else ""
        total += int(n)
        if "gemm" in leaf or (leaf.startswith("0x") and "gemm" in parent):
            kinds["blas"] += int(n)
            if "kernel" in leaf:
                kinds["gemm"] += int(n)
        elif leaf.startswith(("double_", "__svml")):
            kinds["numpy_arithmetic"] += int(n)
            if re.search(r"exp|divide", leaf):
                kinds["activation"] += int(n)
    return {k: v / total for k, v in kinds.items()} | {"samples": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", type=Path, default=ROOT / "docs" / "reproduction" / "tables.json")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = speedups(json.loads(args.record.read_text()))
    print("| table | N | iterations | P = 64 | P = 256 | P = 1024 | limit (P = N/2) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['table']} | {r['N']} | {r['iterations']} | {r['64']:.2f} | {r['256']:.2f} | {r['1024']:.2f} | "
            f"{r['limit']:.2f} |"
        )
    result: dict = {"speedups": rows}
    if args.profile:
        result["profile"] = profile()
        prof = result["profile"]
        blas, arith = prof.get("blas", 0.0), prof.get("numpy_arithmetic", 0.0)
        print(
            f"\nprofile ({prof['samples']} samples): BLAS {blas:.1%} (GEMM kernels alone "
            f"{prof.get('gemm', 0.0):.1%}), numpy's elementwise arithmetic {arith:.1%} (of it the "
            f"sigmoid's exp and divide {prof.get('activation', 0.0):.1%}), the rest {1 - blas - arith:.1%}"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
