"""The small torch network and data several test modules train (tests/test_torch.py, tests/test_loop_features.py)."""

import torch
from torch import nn


def small_net(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).double()


def small_data(n=120):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()
    return X, y
