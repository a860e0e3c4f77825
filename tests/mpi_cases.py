"""Problems and options run both in one process and under mpiexec (tests/test_mpi.py)."""

import numpy as np

from pintrain.problems import Dahlquist, Heat1D
from pintrain.training import model_problem


class FineNaN(Dahlquist):
    """The fine step from point ``bad`` returns NaN: reported there (level 0, step bad) at any rank count."""

    bad = 400

    def step_many(self, U, ks, m):
        out = super().step_many(U, ks, m)
        out[(np.asarray(ks) == self.bad) & (m == 1)] = np.nan
        return out

    def step(self, u, k, m):
        return self.step_many(u[None], np.array([k]), m)[0]


CASES = {
    "dahlquist-uneven": (lambda: Dahlquist(517, lam=-1.0, t_stop=5.0), {"levels": 3, "cfactor": 4}),
    "heat-cflist-F-Fcycle": (
        lambda: Heat1D(300, nx=15, forcing=Heat1D.manufactured),
        {"levels": 4, "cfactor": [2, 4], "relax": "F", "cycle": "F", "tol": 1e-10},
    ),
    "heat-nested": (lambda: Heat1D(256, nx=15), {"levels": 3, "cfactor": 2, "nested": True, "tol": 1e-10}),
    "dahlquist-few-coarse-points": (lambda: Dahlquist(40, lam=-2.0), {"levels": 3, "cfactor": 4, "tol": 1e-12}),
    "dahlquist-tiny": (lambda: Dahlquist(6, lam=-2.0), {"levels": 2, "cfactor": 4, "tol": 1e-12}),
    "dahlquist-one-level": (lambda: Dahlquist(9), {"levels": 1, "cfactor": 2}),
    "xor-gn": (lambda: model_problem("xor", steps=600, coarse="gauss-newton"), {"levels": 3, "cfactor": 4}),
    "sine-gn-Fcycle": (
        lambda: model_problem("sine", steps=700, coarse="gauss-newton"),
        {"levels": 3, "cfactor": 4, "cycle": "F"},
    ),
    "sine-union-2level": (lambda: model_problem("sine", steps=512, coarse="union"), {"levels": 2, "cfactor": 4}),
    "sine-union-diverges": (lambda: model_problem("sine", steps=4096, coarse="union"), {"levels": 4, "cfactor": 4}),
    "fine-nan-at-400": (lambda: FineNaN(1024, lam=-1.0), {"levels": 3, "cfactor": 4}),
    "torch-mlp-adam": (lambda: _torch_problem("adam", 0.01), {"levels": 3, "cfactor": 4, "tol": 1e-10}),
    # the curvature step's table: built by every rank from the problem alone, the same on each
    "torch-mlp-adam-curvature": (
        lambda: _torch_problem("adam", 0.01, coarse="curvature"),
        {"levels": 3, "cfactor": 4, "tol": 1e-10},
    ),
}
# C-point storage: the same cases keeping only C-points (the answer at the kept points is full storage's)
for _name in ("dahlquist-uneven", "heat-cflist-F-Fcycle", "heat-nested", "torch-mlp-adam"):
    _make, _opts = CASES[_name]
    CASES[_name + "-cpoints"] = (_make, {**_opts, "storage": "c-points"})


def _torch_problem(optimizer, lr, coarse="split"):
    """A small torch MLP classifier on synthetic data, trained with ``optimizer``."""
    import torch
    from torch import nn

    from pintrain.torch import TorchProblem, make_optimizer

    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 8, generator=g, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 0.5).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    opt = make_optimizer(optimizer, lr)
    return TorchProblem(
        model, nn.CrossEntropyLoss(), X, y, steps=160, batch_size=16, optimizer=opt, seed=1, coarse=coarse, max_ratio=2
    )
