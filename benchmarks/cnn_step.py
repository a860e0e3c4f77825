"""Cost of one batched step of the digits CNN per row, its arithmetic bound, and what was tried.

    python benchmarks/cnn_step.py                    # 1024 rows; variants at 128 rows (a compiled call)
    python benchmarks/cnn_step.py --rows 256 --out benchmarks/results/cnn_step.json

One torch thread.  The network (`pintrain.torch.digits.cnn`): Conv2d(1, 8, 3, padding=1), Tanh,
AvgPool2d(2), Flatten, Linear(128, 10), 1370 weights, 8x8 images, batches of 32.

Part 1, pintrain's batched fine step (``problem.step_many``, SGD) of ``--rows`` rows: eager in float64
(the CLI's default), eager in float32 and ``compile=True`` in float32; compiled, with the average pool
as given and with the library's rewrite (``pintrain.torch.pooling``, what a compiled problem on a
CPU takes), built side by side; beside a step of the plain ``torch.optim`` loop on the module as given
(``pintrain.bench_torch.plain_loop``, 500 steps).

Part 2, the batched gradient (``vmap(grad(loss))``, float32, 128 rows, the size of a compiled call)
in four formulations of the same network, eager and compiled, each against the module as given:
the module as given; AvgPool2d as the library's ``MeanPool2d`` (a reshape and a mean); AvgPool2d as
sums over the windows' rows, then columns (tried); and with the library's pool the convolution as
``unfold`` and a matrix product (tried, not adopted: slower on larger CNNs, docs/performance.md).
The arithmetic bound: the matrix products of the step alone
(the convolution's forward and weight gradient, the linear layer's forward and both gradients) as
bare batched matrix products (``bmm``) at the unfolded shapes, the measure the MLP's bound was
taken by (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from pintrain.bench import best_of
from pintrain.bench_torch import plain_loop
from pintrain.torch.digits import cnn, digits_problem
from pintrain.torch.pooling import MeanPool2d


@contextmanager
def pools_rewritten(rewrite: bool) -> Iterator[None]:
    """Problems built inside take the library's pool rewrite (a compiled CPU problem's) or the pools as given."""
    import pintrain.torch.model as model

    swap = model.mean_pools
    if not rewrite:
        model.mean_pools = lambda module: (module, [])
    try:
        yield
    finally:
        model.mean_pools = swap


class SumPool(nn.Module):
    """AvgPool2d(2) on 8x8 maps as sums over the windows' rows, then columns (tried: as cheap as the
    library's reshape and mean compiled here, dearer on a 28x28 CNN, docs/performance.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        rows = x.reshape(n, c, h // 2, 2, w).sum(-2)
        return rows.reshape(n, c, h // 2, w // 2, 2).sum(-1) / 4


def formulations() -> dict[str, Any]:
    """name -> loss(w, x, y) of one row (flat weights w, a batch x (32, 1, 8, 8), labels y)."""
    net = cnn(0).float()
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    sizes = [p.numel() for _, p in net.named_parameters()]

    def unpack(w: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(names, [t.reshape(s) for t, s in zip(torch.split(w, sizes), shapes, strict=True)], strict=True))

    summed = cnn(0).float()
    summed[2] = SumPool()
    library = cnn(0).float()
    library[2] = MeanPool2d((2, 2))

    def given(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(net, unpack(w), (x,)), y)

    def mean_pool(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(library, unpack(w), (x,)), y)

    def two_sums(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(summed, unpack(w), (x,)), y)

    def unfolded(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = unpack(w)
        n = x.shape[0]
        h = p["0.weight"].reshape(8, 9) @ F.unfold(x, 3, padding=1) + p["0.bias"][:, None]  # (n, 8, 64)
        h = MeanPool2d((2, 2))(torch.tanh(h).reshape(n, 8, 8, 8)).reshape(n, 128)
        return F.cross_entropy(h @ p["4.weight"].T + p["4.bias"], y)

    w0 = torch.cat([q.detach().reshape(-1) for q in net.parameters()])
    return {
        "w0": w0,
        "as given": given,
        "pool as MeanPool2d (the library's: a reshape and a mean)": mean_pool,
        "pool as sums over rows, then columns (tried)": two_sums,
        "and the convolution as unfold": unfolded,
    }


def bound_s(rows: int, repeat: int) -> float:
    """The step's matrix products alone, as bare bmm at the unfolded shapes (float32, one call each)."""
    b, n = rows, 32
    cols = torch.randn(b, 9, n * 64)  # the unfolded input of a row's 32 samples
    w = torch.randn(b, 8, 9)
    g_out = torch.randn(b, 8, n * 64)
    h = torch.randn(b, n, 128)
    w2 = torch.randn(b, 128, 10)
    g2 = torch.randn(b, n, 10)

    def products() -> None:
        torch.bmm(w, cols)  # the convolution's forward
        torch.bmm(g_out, cols.transpose(1, 2))  # its weight gradient
        torch.bmm(h, w2)  # the linear layer's forward
        torch.bmm(h.transpose(1, 2), g2)  # its weight gradient
        torch.bmm(g2, w2.transpose(1, 2))  # its input gradient

    products()
    return best_of(products, repeat)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    record: dict[str, Any] = {"torch": torch.__version__, "threads": 1, "rows": args.rows, "steps": []}
    print(f"Part 1: pintrain's batched fine step of the digits CNN (SGD), {args.rows} rows, one thread")
    print("| dtype | path | pool as given (us a row) | pool rewritten (us a row) | loop step (us) | loop step / row |")
    print("|---|---|---:|---:|---:|---:|")
    for dtype, compiled in (("float64", False), ("float32", False), ("float32", True)):
        times = {}
        for rewrite in (False, True) if compiled else (False,):  # eager problems keep the pool
            with pools_rewritten(rewrite):
                p = digits_problem("digits-cnn", steps=max(2 * args.rows, 1000), dtype=dtype, compile=compiled)
            assert bool(p.model.mean_pooled) == rewrite
            U = p.ops.asarray(np.repeat(np.asarray(p.initial())[None], args.rows, 0))
            ks = np.arange(args.rows)
            out = torch.empty_like(U)
            p.step_many(U, ks, 1, out=out)  # compiles the shapes it meets
            step = lambda p=p, U=U, ks=ks, out=out: p.step_many(U, ks, 1, out=out)  # noqa: E731
            times[rewrite] = best_of(step, args.repeat)[0] / args.rows
        plain_loop(p, 50)  # warm-up
        loop_s = min(plain_loop(p, 500)[0] for _ in range(args.repeat)) / 500
        path = "compiled" if compiled else "eager"
        given, now = times[False], times.get(True, times[False])
        shown = f"{now * 1e6:.0f}" if compiled else "-"
        print(f"| {dtype} | {path} | {given * 1e6:.0f} | {shown} | {loop_s * 1e6:.0f} | {loop_s / now:.2f} |")
        row = {"dtype": dtype, "path": path, "given_us": given * 1e6, "us_per_row": now * 1e6}
        record["steps"].append(row | {"loop_step_us": loop_s * 1e6})
    rows = 128
    print(f"\nPart 2: the batched gradient, float32, {rows} rows; max rel diff against the module as given")
    print("| formulation | eager (us a row) | compiled (us a row) | max rel diff (compiled) |")
    print("|---|---:|---:|---:|")
    forms = formulations()
    g = torch.Generator().manual_seed(0)
    X = torch.rand(rows, 32, 1, 8, 8, generator=g)
    Y = torch.randint(0, 10, (rows, 32), generator=g)
    W = forms["w0"].repeat(rows, 1) + 0.01 * torch.randn(rows, forms["w0"].numel(), generator=g)
    ref = vmap(grad(forms["as given"]))(W, X, Y)
    record["gradients"] = []
    for name in [k for k in forms if k != "w0"]:
        eager = vmap(grad(forms[name]))
        comp = torch.compile(vmap(grad(forms[name])), dynamic=False)
        got = comp(W, X, Y)
        t_e = best_of(lambda eager=eager: eager(W, X, Y), args.repeat)[0] / rows
        t_c = best_of(lambda comp=comp: comp(W, X, Y), args.repeat)[0] / rows
        rel = float((got - ref).abs().max() / ref.abs().max())
        print(f"| {name} | {t_e * 1e6:.0f} | {t_c * 1e6:.0f} | {rel:.1e} |")
        record["gradients"].append({"formulation": name, "eager_us": t_e * 1e6, "compiled_us": t_c * 1e6, "rel": rel})
    t_b = bound_s(rows, args.repeat) / rows
    flops = 32 * 2 * (2 * 8 * 9 * 64 + 3 * 128 * 10)
    print(f"\narithmetic: {flops / 1e3:.0f} kFLOP a row; its matrix products as bare bmm: {t_b * 1e6:.0f} us a row")
    record["bound_us_per_row"], record["kflop_per_row"] = t_b * 1e6, flops / 1e3
    record["command"] = f"python benchmarks/cnn_step.py --rows {args.rows} --repeat {args.repeat}"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
