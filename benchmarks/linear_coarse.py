"""A linear coarse correction, tried against FAS with ``curvature`` (docs/performance.md, session 11).

    python benchmarks/linear_coarse.py --steps 1024 --cfactor 32 --variants exact,table,zero

Two levels, the digits MLP with Adam in float64, one thread.  With every fine point stored, a
two-level FAS cycle's coarse problem for the error ``e = v - u`` at the C-points is
``e_i = Phi_c(u_{i-1} + e_{i-1}) - Phi_c(u_{i-1}) + r_i`` (``r_i`` the fine residual after FCF
relaxation).  This prototype solves its linearisation ``e_i = J_i e_{i-1} + r_i`` instead, ``J_i``
the tangent-linear model of interval i's fine Adam steps along the current iterate, with the
gradient's change ``H dw`` in one of three versions: ``exact`` (each step's own batch Hessian, a
Hessian-vector product a fine step: Newton's method on the C-point system), ``table`` (the
``curvature`` table's rank-r Hessian of the step's block; ``--rank``), ``zero``.  The cycle is the
library's: the nested start from the table's trajectory, FCF relaxation, the correction, an
F-relaxation, the residual at the C-points.  Prints each variant's residuals by iteration and its
weights' distance from the serial states, beside ``solve``'s FAS run.  A study, not a solver: the
library keeps its coarse levels nonlinear (the table's Hessian does not make a cheap ``J_i``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pintrain.mgrit import SolverOptions, solve
from pintrain.torch.digits import digits_problem


class TwoLevel:
    """The two-level cycle with the linear coarse correction, on the problem's own batched steps."""

    def __init__(self, problem, cfactor: int) -> None:
        self.p, self.cf, self.n = problem, cfactor, problem.n_steps
        self.P = problem.n_params

    def step(self, U, ks, m: int = 1):
        return self.p.step_many(U, np.asarray(ks, dtype=np.int64), m)

    def residual(self, U):
        cs = np.arange(self.cf, self.n + 1, self.cf)
        r = self.step(U[cs - 1], cs - 1) - U[cs]
        return r, float(torch.linalg.norm(r))

    def f_relax(self, U) -> None:
        starts = np.arange(0, self.n, self.cf)
        for q in range(1, self.cf):
            js = starts + q
            js = js[js <= self.n]
            U[js] = self.step(U[js - 1], js - 1)

    def c_relax(self, U) -> None:
        cs = np.arange(self.cf, self.n + 1, self.cf)
        U[cs] = self.step(U[cs - 1], cs - 1)

    def nested(self, U) -> None:
        s, X = self.p.trajectory_guess()
        U[0] = torch.as_tensor(self.p.initial())
        for j in range(1, self.n // self.cf + 1):
            k = j * self.cf
            if k % s == 0 and k // s < X.shape[0]:
                U[k] = X[k // s]
            else:
                U[k] = self.step(U[k - self.cf][None], [k - self.cf], self.cf)[0]

    def dgrad(self, kind: str, w, k: int, dw):
        if kind == "zero":
            return torch.zeros_like(dw)
        if kind == "table":
            return self.p._curvature_table().term(dw[None], np.array([k]))[0]
        batches = self.p.batches(np.array([k]), 1)
        return self.p.model.hessian_vectors_many(w[None], batches, dw[None, None])[0, 0]

    def tangent(self, U, G, c0: int, e, kind: str):
        """``e`` through the fine Adam steps c0 .. c0 + cf - 1, linearised at ``U``'s states."""
        P, opt = self.P, self.p.optimizer
        b1, b2 = opt.betas
        dw, dm, dv = e[:P].clone(), e[P : 2 * P].clone(), e[2 * P : 3 * P].clone()
        for k in range(c0, c0 + self.cf):
            m, v, g = U[k, P : 2 * P], U[k, 2 * P : 3 * P], G[k]
            ss, bc2, _, _ = opt.coefficients(np.array([k]), self.p.ops, U[:1], None)
            ss, bc2 = float(ss[0]), float(bc2[0])
            dg = self.dgrad(kind, U[k, :P], k, dw)
            m1 = b1 * m + (1 - b1) * g
            root = (b2 * v.clamp_min(0) + (1 - b2) * g * g).sqrt()
            den = root / bc2 + opt.eps
            dm = b1 * dm + (1 - b1) * dg
            dv = b2 * dv + 2 * (1 - b2) * g * dg
            dden = dv / (2 * root.clamp_min(1e-300) * bc2)
            dw = dw - ss * (dm / den - m1 * dden / den**2)
        out = torch.zeros_like(e)
        out[:P], out[P : 2 * P], out[2 * P : 3 * P] = dw, dm, dv
        return out

    def run(self, kind: str, iterations: int) -> tuple[list[float], torch.Tensor]:
        U = torch.zeros((self.n + 1, self.p.initial().shape[0]), dtype=torch.float64)
        self.nested(U)
        self.f_relax(U)
        residuals = []
        for _ in range(iterations):
            self.c_relax(U)
            self.f_relax(U)
            r, _ = self.residual(U)
            G = self.p.gradient_sum(U[:-1, : self.P], np.arange(self.n), 1)
            e = torch.zeros(U.shape[1], dtype=U.dtype)
            for i, c in enumerate(range(self.cf, self.n + 1, self.cf)):
                e = self.tangent(U, G, c - self.cf, e, kind) + r[i]
                U[c] += e
            self.f_relax(U)
            residuals.append(self.residual(U)[1])
            if residuals[-1] < 1e-13:
                break
        return residuals, U


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1024)
    ap.add_argument("--cfactor", type=int, default=32)
    ap.add_argument("--variants", default="exact,table,zero")
    ap.add_argument("--rank", type=int, default=None, help="the table's rank (default: the library's)")
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    p = digits_problem("digits-mlp", steps=args.steps, optimizer="adam", lr=0.002, coarse="curvature")
    if args.rank:
        p.coarse_options = {**p.coarse_options, "rank": args.rank}
    ref = torch.as_tensor(p.serial_states())
    t0 = time.perf_counter()
    opts = SolverOptions(levels=2, cfactor=args.cfactor, tol=1e-12, max_iter=args.iterations, nested=True)
    res = solve(p, options=opts)
    rows = [
        {
            "variant": "FAS curvature",
            "residuals": res.residuals,
            "max_abs_diff": float(np.abs(res.states - ref.numpy()).max()),
            "s": time.perf_counter() - t0,
        }
    ]
    cycle = TwoLevel(p, args.cfactor)
    for kind in args.variants.split(","):
        t0 = time.perf_counter()
        residuals, U = cycle.run(kind, args.iterations)
        rows.append({"variant": f"linear, H {kind}", "residuals": residuals,
                     "max_abs_diff": float((U - ref).abs().max()), "s": time.perf_counter() - t0})  # fmt: skip
    for row in rows:
        print(f"{row['variant']:16s} {' '.join(f'{x:.1e}' for x in row['residuals'])}  "
              f"max abs diff {row['max_abs_diff']:.1e}  {row['s']:.1f} s")  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
