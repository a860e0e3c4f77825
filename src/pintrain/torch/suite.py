"""The convergence suite: real ``torch.nn`` modules on data that ships with scikit-learn (or is
generated here), each with the optimizer and settings a user would pass to
:func:`pintrain.torch.fit`, and MGRIT's iterations to tolerance on each, checked against a real
serial run.

``benchmarks/convergence.py`` runs it at several N for ``docs/convergence.md``; ``pintrain bench
--suite`` prints it beside the timings.  A case is ``(data, module, loss, fit settings)``;
:func:`run_case` trains it serially and by MGRIT (3 levels, cfactor 4, tolerance 1e-9, float64,
nested iteration by default) and returns a row: iterations, converged / diverged (where) /
stalled, the largest distance of the states from the serial loop's, and both wall times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import DivergenceError
from ..mgrit import SolverOptions
from .fit import fit


def _standardise(X: np.ndarray) -> torch.Tensor:
    X = (X - X.mean(0)) / (X.std(0) + 1e-12)
    return torch.tensor(X, dtype=torch.float64)


def digits(image: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.data / 16.0, dtype=torch.float64)
    return (X.reshape(-1, 1, 8, 8) if image else X), torch.tensor(d.target)


def wine() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_wine

    d = load_wine()
    return _standardise(d.data), torch.tensor(d.target)


def cancer() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return _standardise(d.data), torch.tensor(d.target)


def diabetes() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    y = (d.target - d.target.mean()) / d.target.std()
    return _standardise(d.data), torch.tensor(y, dtype=torch.float64)[:, None]


def sequences(n: int = 512, steps: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, steps, 3, generator=g, dtype=torch.float64)
    return X, ((X[:, :, 0].cumsum(1)[:, -1] > 0).long() + (X[:, -1, 1] > 0.5).long())


def tokens(n: int = 600, length: int = 12, vocab: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, vocab, (n, length), generator=g)
    return X, ((X < vocab // 3).sum(1) > length // 3).long()


def mlp(n_in: int, n_out: int, hidden: int = 32, act: type[nn.Module] = nn.Tanh, norm: Any = None) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(n_in, hidden)]
    if norm is not None:
        layers.append(norm(hidden))
    layers += [act(), nn.Linear(hidden, n_out)]
    return nn.Sequential(*layers)


class SeqGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(3, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class CellLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(3, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state: tuple[torch.Tensor, torch.Tensor] | None = None
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
        assert state is not None, "a sequence of at least one step"
        return self.head(state[0])


class BagOfEmbeddings(nn.Module):
    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(x).mean(1))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 10))


CE, MSE = nn.CrossEntropyLoss(), nn.MSELoss()
# name: (data, module, loss, fit settings)
CASES: dict[str, tuple[Callable[[], Any], Callable[[], nn.Module], Any, dict[str, Any]]] = {
    "digits-mlp-sgd": (digits, lambda: mlp(64, 10), CE, {"optimizer": "sgd", "lr": 0.05}),
    "digits-mlp-momentum": (digits, lambda: mlp(64, 10), CE, {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9}),
    "digits-mlp-nesterov-wd": (
        digits,
        lambda: mlp(64, 10),
        CE,
        {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    ),  # fmt: skip
    "digits-mlp-adam": (digits, lambda: mlp(64, 10), CE, {"optimizer": "adam", "lr": 0.002}),
    "digits-mlp-adamw-cosine": (
        digits,
        lambda: mlp(64, 10),
        CE,
        {"optimizer": "adamw", "lr": 0.002, "lr_scheduler": "cosine"},
    ),  # fmt: skip
    "digits-cnn-sgd": (lambda: digits(image=True), cnn, CE, {"optimizer": "sgd", "lr": 0.05}),
    "wine-mlp-sgd": (wine, lambda: mlp(13, 3), CE, {"optimizer": "sgd", "lr": 0.05, "batch_size": 16}),
    "cancer-mlp-adam": (cancer, lambda: mlp(30, 2), CE, {"optimizer": "adam", "lr": 0.002}),
    "diabetes-mlp-sgd": (diabetes, lambda: mlp(10, 1), MSE, {"optimizer": "sgd", "lr": 0.02}),
    "layernorm-mlp-sgd": (digits, lambda: mlp(64, 10, norm=nn.LayerNorm), CE, {"optimizer": "sgd", "lr": 0.05}),
    "layernorm-silu-momentum": (
        digits,
        lambda: mlp(64, 10, act=nn.SiLU, norm=nn.LayerNorm),
        CE,
        {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9},
    ),  # fmt: skip
    "batchnorm-mlp-sgd": (
        digits,
        lambda: mlp(64, 10, norm=lambda h: nn.BatchNorm1d(h, track_running_stats=False)),
        CE,
        {"optimizer": "sgd", "lr": 0.05},
    ),  # fmt: skip
    "batchnorm-running-mlp-sgd": (
        digits,
        lambda: mlp(64, 10, norm=nn.BatchNorm1d),
        CE,
        {"optimizer": "sgd", "lr": 0.05},
    ),  # fmt: skip
    "gru-adam": (sequences, SeqGRU, CE, {"optimizer": "adam", "lr": 0.005}),
    "lstm-cell-adam": (sequences, CellLSTM, CE, {"optimizer": "adam", "lr": 0.005}),
    "embedding-bag-adam": (tokens, BagOfEmbeddings, CE, {"optimizer": "adam", "lr": 0.005}),
}


def settings_for(case: dict[str, Any], n: int) -> dict[str, Any]:
    out = dict(case)
    if out.get("lr_scheduler") == "cosine":
        out["lr_scheduler"] = lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n)
    out.setdefault("batch_size", 32)
    return out


LEVELS, CFACTOR, TOL = 3, 4, 1e-9  # the suite's MGRIT settings (float64)


def run_case(
    name: str,
    n: int,
    *,
    levels: int = LEVELS,
    max_iter: int = 30,
    nested: bool = True,
    coarse: str | None = None,
    max_ratio: int | None = None,
    comm: Any = None,
    cfactor: int = CFACTOR,
    relax: str = "FCF",
    coarse_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Case ``name`` trained for ``n`` steps serially and by MGRIT (``coarse``: fit's default when
    None; ``comm`` as :func:`~pintrain.torch.fit`'s; ``levels``, ``cfactor`` and ``relax`` the
    solver's; ``coarse_options`` as fit's, e.g. the curvature table's ``rank`` and ``block``); the
    row of the suite's record."""
    data, make, loss, case = CASES[name]
    X, y = data()
    torch.manual_seed(0)
    model = make().double()
    kw = settings_for(case, n) | {"steps": n, "seed": 0}
    if coarse is not None:
        kw["coarse"] = coarse
    if max_ratio is not None:
        kw["max_ratio"] = max_ratio
    t0 = time.perf_counter()
    serial = fit(model, loss, X, y, method="serial", comm=comm, **kw)
    serial_s = time.perf_counter() - t0
    label = case["optimizer"] + (f" (momentum {case['momentum']})" if case.get("momentum") else "")
    row: dict[str, Any] = {"case": name, "N": n, "serial_s": serial_s, "optimizer": label}
    try:
        opts = SolverOptions(levels=levels, cfactor=cfactor, tol=TOL, max_iter=max_iter, nested=nested, relax=relax)
        res = fit(
            model, loss, X, y, options=opts, allow_unconverged=True, comm=comm, coarse_options=coarse_options, **kw
        )
        assert res.solver is not None
        row |= {
            "iterations": res.solver.iterations,
            "converged": res.solver.converged,
            "stalled": res.solver.stalled,
            "last_residual": res.solver.residuals[-1],
            "max_abs_diff": float(np.abs(res.states - serial.states).max()),
            "mgrit_s": res.wall_s,
            "coarse": res.problem.coarse,
        }
    except DivergenceError as err:
        row |= {"iterations": err.iteration, "converged": False, "diverged": f"level {err.level}, step {err.step}"}
    return row


def cell(row: dict[str, Any] | None) -> str:
    """A row's outcome in a table: its iterations, or why it has none."""
    if row is None:
        return ""
    if row.get("diverged"):
        return f"diverged ({row['diverged']}, it. {row['iterations']})"
    if not row["converged"]:
        return f"**no** ({row['iterations']}, r = {row['last_residual']:.1e})"
    return f"{row['iterations']}"


def table(rows: list[dict[str, Any]], sizes: list[int]) -> str:
    """Iterations by case and N (Markdown), as ``docs/convergence.md`` shows them."""
    names = list(dict.fromkeys(r["case"] for r in rows))
    head = "| case | optimizer | " + " | ".join(f"N = {n}" for n in sizes) + " |"
    lines = [head, "|---|---|" + "---:|" * len(sizes)]
    for name in names:
        cells = [cell(next((r for r in rows if r["case"] == name and r["N"] == n), None)) for n in sizes]
        opt = next(r["optimizer"] for r in rows if r["case"] == name)
        lines.append(f"| {name} | {opt} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bench_table(rows: list[dict[str, Any]]) -> str:
    """The suite at one N beside the times (``pintrain bench --suite``), Markdown."""
    lines = [
        "| case | optimizer | coarse | iterations | max abs diff from serial | serial `fit` (s) | MGRIT `fit` (s) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
        mgrit = f"{r['mgrit_s']:.2f}" if "mgrit_s" in r else ""
        lines.append(
            f"| {r['case']} | {r['optimizer']} | {r.get('coarse', '')} | {cell(r)} | {diff} | "
            f"{r['serial_s']:.2f} | {mgrit} |"
        )
    return "\n".join(lines)
