"""Part 4 of ``pintrain bench``: torch models trained by MGRIT against the plain ``torch.optim`` loop.

The cases are issue 14's table: the digits MLP (64-32-10, tanh, batch 32) with SGD in float32 and
float64, with batch 100, with Nesterov momentum and weight decay, with Adam, and a regression MLP
on scikit-learn's diabetes data.  "serial" is the loop a torch user writes (``zero_grad();
loss.backward(); opt.step()``, the same batches in the same order, nothing stored); MGRIT runs with
``fit``'s defaults (the cost model's hierarchy from ``AUTO_MIN_STEPS`` steps on, its time to
measure counted in MGRIT's, else 3 levels and cfactor 4; nested iteration; coarse ``auto``:
``split`` steps of at most 2 batches for SGD, ``curvature`` for momentum and Adam; FCF, V-cycles),
tolerance 1e-9 in float64 and 1e-5 in float32, its level arrays torch tensors.  Both
run with the same number of torch threads (``threads``, default 1: on a small machine the default
intra-op threads collapse when anything else runs), timed side by side in one process (best of
``repeat``); the final weights are compared with the loop's.  One more MGRIT run, timed step by
step, gives each level's share of the time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .mgrit import SolverOptions, solve
from .mgrit.autotune import AUTO_MIN_STEPS, auto_layout
from .training.propagators import COARSE_PROPAGATORS

# name, problem, optimizer and its keywords, dtype, batch size
TORCH_CASES: list[dict[str, Any]] = [
    {"case": "digits MLP, SGD, float32", "problem": "digits-mlp", "optimizer": "sgd", "dtype": "float32"},
    {"case": "digits MLP, SGD", "problem": "digits-mlp", "optimizer": "sgd"},
    {"case": "digits MLP, SGD, batch 100", "problem": "digits-mlp", "optimizer": "sgd", "batch_size": 100},
    {"case": "diabetes MLP, SGD", "problem": "diabetes-mlp", "optimizer": "sgd", "lr": 0.02},
    {
        "case": "digits MLP, Nesterov 0.9 + wd 1e-4",
        "problem": "digits-mlp",
        "optimizer": "sgd",
        "lr": 0.02,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
    },
    {"case": "digits MLP, Adam, float32", "problem": "digits-mlp", "optimizer": "adam", "dtype": "float32"},
]


def diabetes_problem(steps: int, optimizer: Any, dtype: str = "float64", batch_size: int = 32) -> Any:
    """Regression MLP (10-32-1, tanh, mean squared error) on scikit-learn's diabetes data, inputs and
    target standardised."""
    import torch
    from sklearn.datasets import load_diabetes
    from torch import nn

    from .torch.problem import TorchProblem

    d = load_diabetes()
    X = (d.data - d.data.mean(0)) / d.data.std(0)
    y = ((d.target - d.target.mean()) / d.target.std())[:, None]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    return TorchProblem(
        model, nn.MSELoss(), X, y, steps=steps, batch_size=batch_size, optimizer=optimizer, dtype=dtype,
        name="diabetes-mlp",
    )  # fmt: skip


def case_problem(case: dict[str, Any], steps: int) -> Any:
    """The TorchProblem of one case (``fit``'s default coarse propagator)."""
    from .torch.digits import digits_problem
    from .training.optimizers import make_optimizer

    hyper = {k: v for k, v in case.items() if k not in ("case", "problem", "optimizer", "lr", "dtype", "batch_size")}
    dtype = case.get("dtype", "float64")
    batch = case.get("batch_size", 32)
    if case["problem"] == "diabetes-mlp":
        opt = make_optimizer(case["optimizer"], case.get("lr", 0.02), **hyper)
        return diabetes_problem(steps, opt, dtype, batch)
    return digits_problem(
        case["problem"], steps=steps, batch_size=batch, optimizer=case["optimizer"], lr=case.get("lr"),
        dtype=dtype, **hyper,
    )  # fmt: skip


def plain_loop(problem: Any, steps: int | None = None) -> tuple[float, Any]:
    """The loop a torch user writes, on the problem's device and batches: ``(seconds, final flat
    weights)`` (a torch tensor)."""
    import torch

    m = problem.model
    model = m.module_at(m.w0)
    opt = problem.optimizer.torch_optimizer(model.parameters())
    rows = None if problem.batch_table is None else m.ops.index(problem.batch_table)
    loss_fn = m.loss_fn

    def sync() -> None:
        if m.device.type == "cuda":
            torch.cuda.synchronize(m.device)

    sync()
    t0 = time.perf_counter()
    for k in range(problem.n_steps if steps is None else steps):
        xb, yb = (m.X, m.y) if rows is None else (m.X[rows[k]], m.y[rows[k]])
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()
    sync()
    seconds = time.perf_counter() - t0
    return seconds, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def bench_torch(
    steps: int = 1000,
    cases: Sequence[dict[str, Any]] = tuple(TORCH_CASES),
    repeat: int = 3,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every case: the plain loop and MGRIT side by side, the weights' distance, each level's share."""
    import torch

    from .bench import TimedProblem, best_of

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for case in cases:
            if progress:
                progress(f"torch: {case['case']}, N = {steps}")
            p = case_problem(case, steps)
            tol = 1e-5 if case.get("dtype") == "float32" else 1e-9
            plain_loop(p, min(50, steps))  # warm-up: allocator, autograd
            serial_s = np.inf
            for _ in range(max(1, repeat)):
                s, w_serial = plain_loop(p)
                serial_s = min(serial_s, s)
            p.prepare()  # a table the coarse step builds once (curvature): timed apart, added once
            options = SolverOptions(levels=3, cfactor=4, tol=tol, nested=True)  # fit's defaults
            chosen = auto_layout(p, options, comm="serial")
            measure_s = 0.0 if chosen is None else chosen.costs.seconds
            options = options if chosen is None else chosen.options
            mgrit_s, res = best_of(functools.partial(solve, p, options=options, comm="serial"), repeat)
            mgrit_s += p.setup_s + measure_s
            timed = TimedProblem(p)
            t0 = time.perf_counter()
            solve(timed, options=options, comm="serial")
            profiled_s = time.perf_counter() - t0
            w = np.asarray(p.weights(res.states[-1]), dtype=np.float64)
            ref = w_serial.double().cpu().numpy()
            fine = timed.seconds.get(1, 0.0)
            rows.append(
                {
                    "case": case["case"],
                    "settings": {k: v for k, v in case.items() if k != "case"},
                    "N": steps,
                    "coarse": f"{p.coarse}/{p.max_ratio}" if COARSE_PROPAGATORS[p.coarse].sub_intervals else p.coarse,
                    "tol": tol,
                    "serial_s": serial_s,
                    "mgrit_s": mgrit_s,
                    "setup_s": p.setup_s,
                    "measure_s": measure_s,
                    "levels": options.levels,
                    "cfactor": options.cfactor,
                    "mgrit_over_serial": mgrit_s / serial_s,
                    "iterations": res.iterations,
                    "converged": res.converged,
                    "final_weights_max_rel_diff": float(np.abs(w - ref).max() / np.abs(ref).max()),
                    "share_fine": fine / profiled_s,
                    "share_coarse": (sum(timed.seconds.values()) - fine) / profiled_s,
                    "share_solver": (profiled_s - sum(timed.seconds.values())) / profiled_s,
                }
            )
    finally:
        torch.set_num_threads(before)
    return {"steps": steps, "threads": threads, "repeat": repeat, "rows": rows}


def torch_table(record: dict[str, Any]) -> str:
    """Part 4 as text."""
    out = [
        "4. Torch models: the plain torch.optim loop against MGRIT (fit's defaults: the cost model's hierarchy from "
        f"{AUTO_MIN_STEPS} steps on, its time to measure included, else 3 levels and cfactor 4; nested; coarse "
        "auto: split/2 for SGD, curvature/2 for momentum and Adam, its table's time included), "
        f"N = {record['steps']}, {record['threads']} torch thread(s) for both; best of {record['repeat']}",
    ]
    if record.get("unavailable"):
        return "\n".join([*out, f"   not run: {record['unavailable']}"])
    out.append(
        f"{'case':36s} {'serial (s)':>10s} {'MGRIT (s)':>10s} {'MGRIT/serial':>13s} {'iters':>6s} "
        f"{'tol':>6s} {'levels, cfactor':>16s} {'weights rel diff':>17s} {'fine/coarse/solver share':>25s}"
    )
    for r in record["rows"]:
        it = f"{r['iterations']}" + ("" if r["converged"] else "!")
        shares = f"{r['share_fine']:.0%}/{r['share_coarse']:.0%}/{r['share_solver']:.0%}"
        cf = r.get("cfactor", 4)
        layout = f"{r.get('levels', 3)}, " + (",".join(map(str, cf)) if isinstance(cf, list | tuple) else str(cf))
        out.append(
            f"{r['case']:36s} {r['serial_s']:10.3f} {r['mgrit_s']:10.3f} {r['mgrit_over_serial']:13.1f} {it:>6s} "
            f"{r['tol']:6.0e} {layout:>16s} {r['final_weights_max_rel_diff']:17.1e} {shares:>25s}"
        )
    out.append("   (! = not converged in max_iter; shares: time in fine steps / coarse steps / the solver's own work)")
    return "\n".join(out)
