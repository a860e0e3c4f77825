"""Full against C-point storage on a GPU: one MGRIT iteration of the digits MLP with Adam, float32,
N = 16384, 3 levels, cfactor 16, coarse 'union' (the peak is reached in the first iteration).

    python benchmarks/gpu_storage_probe.py          # writes $OUT/gpu_storage.json (or ./gpu_storage.json)

Record of the H200 run: benchmarks/results/device/storage_h200.json (docs/performance.md).
"""

import json
import os

import torch

from pintrain.mgrit import Hierarchy, SolverOptions, solve
from pintrain.torch.digits import digits_problem


def main() -> None:
    out = []
    for storage in ("full", "c-points", "full", "c-points"):
        p = digits_problem("digits-mlp", steps=16384, optimizer="adam", dtype="float32", device="cuda", coarse="union")
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        res = solve(p, levels=3, cfactor=16, tol=1e-30, max_iter=1, storage=storage)
        torch.cuda.synchronize()
        estimate = Hierarchy(16384, SolverOptions(levels=3, cfactor=16)).memory_bytes(7230, 4, storage)
        rec = {
            "storage": storage,
            "wall_s": res.wall_s,
            "peak_gpu_bytes": torch.cuda.max_memory_allocated() - base,
            "estimate": estimate,
        }
        print(json.dumps(rec), flush=True)
        out.append(rec)
    with open(os.path.join(os.environ.get("OUT", "."), "gpu_storage.json"), "w") as f:
        f.write(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
