"""A small MLP trained on a Gaussian-mixture task and an OOD set far from every class mean."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.data import make_synthetic


def make_det_mlp(dim: int = 8, num_classes: int = 3) -> nn.Module:
    # names: "0" Linear, "1" ReLU, "2" Linear, "3" ReLU (penultimate = output of "3"), "4" head
    return nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, num_classes))


@pytest.fixture(scope="session")
def synthetic_problem():
    """(model, x_train, y_train, x_test, x_ood): 3 classes in 8 dims, means 12 std apart.

    OOD points sit around the centroid of the class means, 6.9 std from every mean (where no class
    has mass; the Bayes classifier is maximally unsure there).
    """
    g = torch.Generator().manual_seed(0)
    task = make_synthetic(900, num_classes=3, dim=8, separation=12.0, generator=g)
    x, y = task.dataset.tensors()
    test_x, _ = task.sample(300, generator=g).tensors()
    centroid = task.means.mean(dim=0)
    x_ood = centroid + 0.5 * torch.randn(300, 8, generator=g)
    torch.manual_seed(0)
    model = make_det_mlp()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 0.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    return model, x, y, test_x, x_ood
