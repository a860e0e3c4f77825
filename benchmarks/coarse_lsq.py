"""Coarse propagators for SGD and heavy-ball momentum on linear least squares, where the exact
m-step map is known: MGRIT iterations against N for every candidate (issue 13's study).

    python benchmarks/coarse_lsq.py                      # the table of docs/convergence.md
    python benchmarks/coarse_lsq.py --sizes 256,1024 --only split2,matched8

The problem: L(w) = |A w - b|^2 / (2 n) with A (n x P) random and singular values spread so that
the Hessian H = A^T A / n has condition number ``--cond``; full batch, so one step is affine:
SGD ``w <- w - lr g``, momentum (torch.optim.SGD, dampening 0) ``v <- mu v + g, w <- w - lr v``,
``g = H (w - w*)``.  The learning rate puts ``lr * lambda_max(H)`` at ``--edge`` (1 = half the
gradient-descent stability limit).  The state is (w) or (w, v); a coarse step of spacing m is a
matrix applied to the error (w - w*, v).  Candidates (m = spacing):

- ``exact``: the fine map to the power m (the ideal coarse propagator: two-level MGRIT is exact);
- ``union``: m optimizer steps with the gradient frozen at the start (pintrain's ``union``);
- ``split2``, ``split4``: sub-intervals of 2 or 4 steps, each a union step (pintrain's ``split``);
- ``implicit``: backward Euler of the linearised optimizer dynamics over the interval,
  ``z' = (Id + m (Id - M))^{-1} z`` with M the fine map (for SGD this is ``gauss-newton``:
  ``w - (Id + m lr H)^{-1} m lr g``; for momentum a Gauss-Newton solve with other scalars, see
  docs/convergence.md);
- ``overdamped`` (momentum): on spacings m >= 1/(1 - mu) the velocity relaxes to ``g / (1 - mu)``:
  one implicit SGD step of rate ``lr / (1 - mu)``, and the velocity set to its relaxed value;
- ``implicit-union`` (momentum): the union step with the implicit SGD step for the weights and the
  frozen-gradient velocity (a cheap hybrid).
- ``matched`` (momentum): ONE heavy-ball step with the m-step rates, ``v' = mu^m v + s_m g,
  w' = w - m lr v'`` (``s_m = (1 - mu^m) / (1 - mu)``): its 2x2 blocks have exactly the fine
  m-step map's determinant ``mu^m`` and, to first order, its slow eigenvalue ``1 - m lr h / (1 - mu)``;
  ``matchedR``: the interval cut into sub-intervals of at most R steps, one such step each.

Every candidate runs through pintrain's own solver (``pintrain.mgrit.solve``) on the same
problem: tolerance 1e-10 on the residual (the initial error has norm about 4.5), FCF, V-cycles,
cfactor 4, 2 and 3+ levels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pintrain.errors import DivergenceError
from pintrain.mgrit import solve


def hessian(P: int, cond: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((P, P)))
    eig = np.geomspace(1.0, 1.0 / cond, P)
    return (Q * eig) @ Q.T


def fine_map(H: np.ndarray, lr: float, mu: float | None) -> np.ndarray:
    P = H.shape[0]
    Id = np.eye(P)
    if mu is None:
        return Id - lr * H
    # e' = e - lr v', v' = mu v + H e  ->  [[Id - lr H, -lr mu], [H, mu]]
    return np.block([[Id - lr * H, -lr * mu * Id], [H, mu * Id]])


def coarse_map(name: str, H: np.ndarray, lr: float, mu: float | None, m: int) -> np.ndarray:
    P = H.shape[0]
    Id = np.eye(P)
    M = fine_map(H, lr, mu)
    if name == "exact":
        return np.linalg.matrix_power(M, m)
    if name.startswith("split"):
        r = int(name[5:])
        parts = [r] * (m // r) + ([m % r] if m % r else [])
        out = np.eye(M.shape[0])
        for q in parts:
            out = coarse_map("union", H, lr, mu, q) @ out
        return out
    if name.startswith("matched"):
        # one heavy-ball step with the m-step rates: v' = mu^m v + s_m g, w' = w - m lr v'
        r = int(name[7:] or m)
        parts = [r] * (m // r) + ([m % r] if m % r else [])
        out = np.eye(M.shape[0])
        for q in parts:
            if mu is None:
                C = Id - q * lr * H
            else:
                sq = (1 - mu**q) / (1 - mu)
                v_e, v_v = sq * H, mu**q * Id
                C = np.block([[Id - q * lr * v_e, -q * lr * v_v], [v_e, v_v]])
            out = C @ out
        return out
    if name == "union":
        if mu is None:
            return Id - m * lr * H
        # m steps with g frozen at g0 = H e0: v_j = mu^j v0 + s_j g0, s_j = (1 - mu^j) / (1 - mu)
        s = np.array([(1 - mu**j) / (1 - mu) for j in range(1, m + 1)])
        pw = np.array([mu**j for j in range(1, m + 1)])
        e_from_e = Id - lr * s.sum() * H
        e_from_v = -lr * pw.sum() * Id
        return np.block([[e_from_e, e_from_v], [s[-1] * H, mu**m * Id]])
    if name == "implicit":
        return np.linalg.inv(np.eye(M.shape[0]) + m * (np.eye(M.shape[0]) - M))
    if name == "trapezoid":
        A = np.eye(M.shape[0]) - M
        return np.linalg.solve(np.eye(M.shape[0]) + m / 2 * A, np.eye(M.shape[0]) - m / 2 * A)
    if mu is None:
        raise ValueError(name)
    if name == "overdamped":
        E = np.linalg.inv(Id + m * lr / (1 - mu) * H)
        return np.block([[E, np.zeros((P, P))], [H @ E / (1 - mu), np.zeros((P, P))]])
    s = np.array([(1 - mu**j) / (1 - mu) for j in range(1, m + 1)])
    pw = sum(mu**j for j in range(1, m + 1))
    if name == "implicit-union":
        U = coarse_map("union", H, lr, mu, m)
        E = np.linalg.inv(Id + m * lr / (1 - mu) * H)
        return np.block([[E, np.zeros((P, P))], [U[P:, :P], U[P:, P:]]])
    if name in ("stabilised-union", "stabilised-union-new"):
        # the union's map with its gradient term made implicit: w' = w - lr pw v - (Id + lr S H)^-1 lr S g(w)
        S = s.sum()
        E = np.linalg.inv(Id + lr * S * H)
        e_e = E  # e - E lr S H e = E e
        e_v = -lr * pw * Id
        if name == "stabilised-union":  # velocity from the gradient at the start, as the union
            v_e, v_v = s[-1] * H, mu**m * Id
        else:  # velocity from the gradient at the new weights
            v_e, v_v = s[-1] * H @ e_e, mu**m * Id + s[-1] * H @ e_v
        return np.block([[e_e, e_v], [v_e, v_v]])
    raise ValueError(name)


class Linear:
    """A pintrain Problem: the error (w - w*, v) under the fine map and a coarse candidate."""

    def __init__(self, n: int, H: np.ndarray, lr: float, mu: float | None, coarse: str, seed: int = 1) -> None:
        self.n_steps = n
        self.H, self.lr, self.mu, self.coarse = H, lr, mu, coarse
        self.M = fine_map(H, lr, mu)
        self.maps: dict[int, np.ndarray] = {1: self.M}
        rng = np.random.default_rng(seed)
        P = H.shape[0]
        self.u0 = np.concatenate([rng.standard_normal(P), np.zeros(P if mu is not None else 0)])

    def initial(self) -> np.ndarray:
        return self.u0.copy()

    def _map(self, m: int) -> np.ndarray:
        if m not in self.maps:
            self.maps[m] = coarse_map(self.coarse, self.H, self.lr, self.mu, m)
        return self.maps[m]

    def step_many(self, U: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        return U @ self._map(m).T

    def step(self, u: np.ndarray, k: int, m: int) -> np.ndarray:
        return self._map(m) @ u


def run(args: argparse.Namespace) -> list[dict]:
    H = hessian(args.P, args.cond)
    lam = np.linalg.eigvalsh(H).max()
    rows = []
    settings = [("sgd", None), (f"momentum {args.mu}", args.mu)]
    for opt, mu in settings:
        lr = args.edge / lam if mu is None else args.edge / lam * (1 - mu)  # the same effective rate
        names = ["exact", "union", "split2", "split4", "implicit", "trapezoid"]
        if mu is not None:
            names += ["matched", "matched4", "matched8", "matched16"]
            names += ["overdamped", "implicit-union", "stabilised-union", "stabilised-union-new"]
        for levels in args.levels:
            for name in [n for n in names if not args.only or n in args.only]:
                row = {"optimizer": opt, "lr": lr, "levels": levels, "coarse": name, "iterations": {}}
                for n in args.sizes:
                    p = Linear(n, H, lr, mu, name)
                    try:
                        res = solve(p, levels=levels, cfactor=4, tol=1e-10, max_iter=args.max_iter)
                        it = res.iterations if res.converged else f">{args.max_iter}"
                    except DivergenceError:
                        it = "div"
                    row["iterations"][n] = it
                rows.append(row)
                cells = " | ".join(str(row["iterations"][n]) for n in args.sizes)
                print(f"| {opt} | {levels} | {name} | {cells} |", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[256, 1024, 4096, 16384])
    ap.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[2, 3, 5])
    ap.add_argument("--P", type=int, default=20)
    ap.add_argument("--cond", type=float, default=100.0)
    ap.add_argument("--edge", type=float, default=0.5, help="lr * lambda_max (effective lr for momentum)")
    ap.add_argument("--mu", type=float, default=0.9)
    ap.add_argument("--max-iter", type=int, default=40)
    ap.add_argument("--only", type=lambda s: s.split(","), default=None, help="candidates to run (default: all)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    print("| optimizer | levels | coarse | " + " | ".join(f"N = {n}" for n in args.sizes) + " |")
    print("|---|---:|---|" + "---:|" * len(args.sizes))
    rows = run(args)
    if args.out is not None:
        args.out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows}))


if __name__ == "__main__":
    main()
