"""A/B timing of two source trees side by side (one BLAS/torch thread): serial and MGRIT on the
numpy and torch paths.  Usage: python benchmarks/ab_refactor.py SRC_A SRC_B [repeat]

Each case runs in a fresh process per tree, alternating A, B, A, B, ... and the best time of each
is reported with their ratio (B / A: above 1 means B is slower).  The digits cases pin the coarse
propagator to "union" (max_ratio 4), the default before the refactor, so that both trees run the
same algorithm.  Used for issue 10's "no slowdown".
"""

import json
import os
import subprocess
import sys

CASE = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, SRC)
import torch
torch.set_num_threads(1)
from pintrain.mgrit import solve, serial_solve
from pintrain.training import model_problem

def best(fn, n=3):
    t = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); t.append(time.perf_counter() - t0)
    return min(t)

out = {}
p = model_problem("xor", steps=16384, coarse="gauss-newton")
kw = dict(levels=4, cfactor=(64, 8), nested=True, tol=1e-7)
out["xor N=16384 serial"] = best(lambda: serial_solve(p))
out["xor N=16384 MGRIT"] = best(lambda: solve(p, **kw))
p = model_problem("sine", steps=4096, coarse="gauss-newton")
out["sine N=4096 MGRIT"] = best(lambda: solve(p, levels=3, cfactor=4, tol=1e-9))
from pintrain.torch.digits import digits_problem
for opt, lr in (("sgd", 0.05), ("adam", 0.002)):
    p = digits_problem("digits-mlp", steps=400, optimizer=opt, lr=lr, coarse="union", max_ratio=4)
    out[f"digits-mlp {opt} N=400 serial"] = best(lambda: p.serial_states())
    out[f"digits-mlp {opt} N=400 MGRIT"] = best(lambda: solve(p, levels=3, cfactor=4, tol=1e-9))
print(json.dumps(out))
"""


def run(src: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = f"SRC = {src!r}\n" + CASE
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    a_src, b_src = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    best_a: dict = {}
    best_b: dict = {}
    for _ in range(repeat):
        for src, best in ((a_src, best_a), (b_src, best_b)):
            for k, v in run(src).items():
                best[k] = min(v, best.get(k, v))
    print(f"{'case':34s} {'A (s)':>9s} {'B (s)':>9s} {'B/A':>6s}")
    for k in best_a:
        print(f"{k:34s} {best_a[k]:9.3f} {best_b[k]:9.3f} {best_b[k] / best_a[k]:6.2f}")


if __name__ == "__main__":
    main()
