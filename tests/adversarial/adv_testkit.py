"""Test models with known answers, shared by the adversarial tests (imported as ``adv_testkit``)."""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10


def make_mlp(dropout: float = 0.0) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, 64), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(64, NUM_CLASSES))
    return nn.Sequential(*layers)


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, NUM_CLASSES),
    )


def linear_model(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """``x -> W flat(x) + b`` as an ``nn.Module``."""
    lin = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), lin)


def linear_min_norms(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor,
                     labels: torch.Tensor, norm: str) -> torch.Tensor:
    """Exact minimal perturbation norm that changes a linear model's decision (box ignored).

    The class-``y`` region is the intersection of half-spaces ``(w_y - w_j) x + b_y - b_j >= 0``;
    leaving it means crossing the nearest of those hyperplanes, at distance
    ``(f_y - f_j) / ||w_y - w_j||_*`` with ``||.||_*`` the dual norm (L2 -> L2, Linf -> L1,
    L1 -> Linf).
    """
    f = x.reshape(x.shape[0], -1) @ weight.T + bias
    dual = {"l2": 2.0, "linf": 1.0, "l1": float("inf")}[norm]
    best = torch.full((x.shape[0],), float("inf"), dtype=x.dtype)
    for j in range(weight.shape[0]):
        dw = weight[labels] - weight[j]
        gap = f.gather(1, labels[:, None]).squeeze(1) - f[:, j]
        dist = gap / dw.norm(p=dual, dim=1).clamp_min(1e-30)
        dist = torch.where(labels == j, torch.full_like(dist, float("inf")), dist)
        best = torch.minimum(best, dist)
    return best


class SoftmaxOutputs(nn.Module):
    """Wraps a model so it returns probabilities (the gradient-masking case attacks must warn about)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).softmax(dim=1)


class NoisyInputs(nn.Module):
    """A randomised defense: Gaussian input noise drawn from the model's own generator."""

    def __init__(self, inner: nn.Module, sigma: float = 0.3) -> None:
        super().__init__()
        self.inner, self.sigma, self.g = inner, sigma, torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + self.sigma * torch.randn(x.shape, generator=self.g))
