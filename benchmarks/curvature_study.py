"""Why MGRIT stalls on the LSTM cell, the GRU and LayerNorm + SiLU with momentum, and what a coarse
step needs to fix it: the rotation of the optimizer's sharpest modes (issue 13's study, session 5).

    python benchmarks/curvature_study.py spectrum --sizes 1024           # the rotation table
    python benchmarks/curvature_study.py correct --cases lstm-cell-adam --sizes 256 --rank 4

``spectrum``: along serial training (steps N/8, N/2, N-1) the dense Hessian H of the step's batch
loss and the optimizer's preconditioner D (Adam: ``1 / (sqrt(v_hat) + eps)``; SGD and momentum:
the identity); the eigenvalues h of ``D^1/2 H D^1/2``.  Momentum (``torch.optim.SGD``, mu) and Adam
(beta1) are heavy-ball iterations; on one eigen-direction their linearised step is the 2x2 map
with ``z^2 - (1 + beta - a) z + beta = 0``, ``a = lr h`` (momentum) or ``(1 - beta1) lr h`` (Adam,
bias corrections near 1).  For ``(1 - sqrt(beta))^2 < a < (1 + sqrt(beta))^2`` its eigenvalues
are complex, of modulus ``sqrt(beta)``, and turn by ``theta = arccos((1 + beta - a) / (2
sqrt(beta)))`` per step.  The table gives the largest a and how many directions turn by more than
0.1, 0.2, 0.3 rad a step.

``correct``: a prototype coarse step, ``lagged`` (sub-intervals of ``--max-ratio`` steps, each
step on its own batch's gradient taken at the sub-interval's start) plus a curvature term: step j
of a sub-interval that starts at w0 takes ``g_j(w0) + H_r (w_j - w0)``, where H_r is H restricted
to the ``--rank`` sharpest directions of ``D^1/2 H D^1/2`` (``H_r = D^-1/2 U S U^T D^-1/2``; rank
0: none, the plain ``lagged``; ``--rank full``: all of H), H and D taken ONCE per ``--block`` steps
on the serial run (an oracle table: the study asks whether a few directions held for many steps
are enough, not how to get them cheaply; ``--table-from first``: taken instead on MGRIT's iterate
after its nested start and one V-cycle of plain ``lagged``, states a library would have;
``--table-from coarse``: on the coarsest level's trajectory from u0 alone, the coarse steps of
spacing 16 one after the other, which a problem can make before any solve).  MGRIT
(3 levels, cfactor 4, FCF, V-cycles, nested, tol 1e-9, float64) runs through pintrain's own
solver with that coarse step; the row records the iterations and the residuals.  One torch thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from convergence import CASES, settings_for

from pintrain.mgrit import solve
from pintrain.torch.problem import TorchProblem
from pintrain.training import propagators
from pintrain.training.optimizers import make_optimizer

SETTINGS: dict[str, Any] = {"levels": 3, "cfactor": 4, "tol": 1e-9, "nested": True}


def problem(name: str, n: int, max_ratio: int = 2) -> TorchProblem:
    data, make, loss, case = CASES[name]
    X, y = data()
    torch.manual_seed(0)
    model = make().double()
    kw = settings_for(case, n)
    hyper = {k: v for k, v in kw.items() if k not in ("optimizer", "lr", "batch_size", "lr_scheduler")}
    opt = make_optimizer(kw["optimizer"], kw["lr"], **hyper)
    return TorchProblem(
        model, loss, X, y, steps=n, batch_size=kw["batch_size"], optimizer=opt, seed=0, coarse="lagged",
        max_ratio=max_ratio,
    )  # fmt: skip


def curvature(p: TorchProblem, S: torch.Tensor, k: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """H (the mean Hessian of steps k .. k + r - 1's batch losses at the serial weights of k) and the
    diagonal of D (the optimizer's preconditioner there)."""
    P, M = p.n_params, p.model
    w = S[k, :P].clone()
    r = min(r, p.n_steps - k)
    ix = torch.as_tensor(p.batch_table[k : k + r].reshape(-1))
    xb, yb = M.X[ix], M.y[ix]
    H = torch.func.hessian(lambda ww: M._loss_union_lone(ww, xb, yb, r) / r)(w)
    opt = p.optimizer
    if opt.adam:
        b2 = opt.betas[1]  # type: ignore[attr-defined]
        v = S[k, 2 * P : 3 * P]
        d = 1.0 / (torch.sqrt(v.clamp_min(0) / (1 - b2 ** max(k, 1))) + opt.eps)  # type: ignore[attr-defined]
    else:
        d = torch.ones(P, dtype=w.dtype)
    return H, d


def heavy_ball(p: TorchProblem) -> tuple[float, float]:
    """(beta, factor): the heavy-ball momentum and the factor that makes a = factor * lr * h."""
    opt = p.optimizer
    if opt.adam:
        b1 = opt.betas[0]  # type: ignore[attr-defined]
        return b1, 1 - b1
    return float(getattr(opt, "momentum", 0.0)), 1.0


def spectrum(name: str, n: int) -> dict[str, Any]:
    p = problem(name, n)
    S = torch.as_tensor(p.serial_states())
    beta, factor = heavy_ball(p)
    points = []
    for k in (n // 8, n // 2, n - 1):
        H, d = curvature(p, S, k, 1)
        ev = torch.linalg.eigvalsh(d.sqrt()[:, None] * H * d.sqrt()[None, :]).flip(0).numpy()
        a = factor * p.optimizer.lr * ev
        if beta:
            theta = np.arccos(np.clip((1 + beta - a) / (2 * math.sqrt(beta)), -1, 1))
        else:
            theta = np.zeros_like(a)
        points.append(
            {
                "step": k,
                "a_top": [float(x) for x in a[:3]],
                "turning": {str(t): int((theta > t).sum()) for t in (0.1, 0.2, 0.3)},
                "theta_max": float(theta.max()),
            }
        )
    return {"case": name, "N": n, "P": p.n_params, "beta": beta, "points": points}


def corrected_lagged(table: dict[int, Any], block: int) -> Any:
    """The ``lagged`` coarse step with the curvature term ``table[k // block * block](w_j - w0)``."""

    def steps(problem: Any, S: Any, ks: np.ndarray, r: int) -> Any:
        P = problem.n_params
        W0 = S[:, :P].clone()
        rows = np.repeat(np.arange(W0.shape[0]), r)
        at = (ks[:, None] + np.arange(r)[None, :]).reshape(-1)
        G = problem.gradient_sum(W0[problem.ops.index(rows)], at, 1).reshape(W0.shape[0], r, -1)
        for j in range(r):
            g = G[:, j]
            if table and j > 0:
                dW = S[:, :P] - W0
                g = g + torch.stack([table[int(k) // block * block](dW[i]) for i, k in enumerate(ks)])
            S = problem.fine_update(S, g, ks + j)
        return S

    return lambda problem, S, ks, m: propagators.sub_intervals(steps, problem, S, ks, m)


def low_rank(B: torch.Tensor, s: torch.Tensor) -> Any:
    return lambda dw: ((dw @ B) * s) @ B.T


def whole(H: torch.Tensor) -> Any:
    return lambda dw: dw @ H


def correct(name: str, n: int, rank: str, block: int, max_ratio: int, max_iter: int, source: str) -> dict[str, Any]:
    p = problem(name, n, max_ratio)
    S = torch.as_tensor(p.serial_states())
    table: dict[int, Any] = {}
    t0 = time.perf_counter()
    if rank != "0":
        # the states the table is taken at: the serial run (an oracle), or MGRIT's iterate after its
        # nested start and one V-cycle of plain lagged (what a library could have)
        if source == "serial":
            at = S
        elif source == "first":
            at = torch.as_tensor(np.asarray(solve(p, **SETTINGS, max_iter=1).states))
        else:  # the coarsest level's trajectory from u0 (3 levels, cfactor 4: spacing 16), before any solve
            at = torch.zeros_like(S)
            at[0] = torch.as_tensor(np.asarray(p.initial()))
            for k in range(0, n - 16 + 1, 16):
                at[k + 16] = torch.as_tensor(np.asarray(p.step(at[k].numpy(), k, 16)))
            assert block % 16 == 0, "the coarse trajectory holds every 16th state"

        for k in range(0, n, block):
            H, d = curvature(p, at, k, max_ratio)
            if rank == "full":
                table[k] = whole(H)
                continue
            ev, U = torch.linalg.eigh(d.sqrt()[:, None] * H * d.sqrt()[None, :])
            top = torch.arange(p.n_params - int(rank), p.n_params)  # the largest (eigh sorts ascending)
            table[k] = low_rank(U[:, top] / d.sqrt()[:, None], ev[top])
    setup_s = time.perf_counter() - t0
    fn = corrected_lagged(table, block)
    saved = propagators.COARSE_PROPAGATORS["lagged"]
    propagators.COARSE_PROPAGATORS["lagged"] = dataclasses.replace(saved, fn=fn)
    try:
        res = solve(p, **SETTINGS, max_iter=max_iter)
    finally:
        propagators.COARSE_PROPAGATORS["lagged"] = saved
    return {
        "case": name,
        "N": n,
        "rank": rank,
        "block": block,
        "table_from": source,
        "max_ratio": max_ratio,
        "iterations": res.iterations,
        "converged": res.converged,
        "residuals": [float(x) for x in res.residuals],
        "max_abs_diff": float(np.abs(np.asarray(res.states) - S.numpy()).max()),
        "table_s": setup_s,
        "mgrit_s": res.wall_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("spectrum", "correct"))
    ap.add_argument("--sizes", default="1024")
    ap.add_argument(
        "--cases",
        default="digits-mlp-adam,cancer-mlp-adam,embedding-bag-adam,digits-mlp-momentum,lstm-cell-adam,gru-adam,"
        "layernorm-silu-momentum",
    )
    ap.add_argument("--rank", default="4", help="directions held (0: plain lagged; 'full': all of H)")
    ap.add_argument("--block", type=int, default=64, help="steps one table entry serves")
    ap.add_argument("--max-ratio", type=int, default=2)
    ap.add_argument("--max-iter", type=int, default=30)
    ap.add_argument(
        "--table-from",
        default="serial",
        choices=("serial", "first", "coarse"),
        help="serial (oracle), MGRIT's first iterate, or the coarsest level's trajectory from u0",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for name in args.cases.split(","):
            if args.what == "spectrum":
                row = spectrum(name, n)
            else:
                row = correct(name, n, args.rank, args.block, args.max_ratio, args.max_iter, args.table_from)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(
                    json.dumps({"command": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1)
                )


if __name__ == "__main__":
    main()
