"""Small models and data for the training tests; built from explicit generators, never the global RNG."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from robustlab.data import Dataset

NUM_FEATURES = 4
NUM_CLASSES = 3


def _separable(n: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, NUM_FEATURES, generator=g)
    w = torch.tensor([[3.0, 0.0, -3.0], [0.0, 3.0, -3.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.5]])
    labels = (x @ w).argmax(dim=1)
    return Dataset(x, labels, name=f"toy{seed}")


def _model(seed: int, *, dropout: float = 0.0, hidden: int = 16) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(NUM_FEATURES, hidden), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, NUM_CLASSES))
    model = nn.Sequential(*layers)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@pytest.fixture
def toy_data() -> Dataset:
    """96 linearly separable examples, 4 features, 3 classes."""
    return _separable(96, seed=0)


@pytest.fixture
def toy_val() -> Dataset:
    return _separable(48, seed=1)


@pytest.fixture
def make_model() -> Callable[..., nn.Module]:
    """``make_model(seed, dropout=0.0, hidden=16)`` -> a small MLP with weights from ``seed``."""
    return _model

