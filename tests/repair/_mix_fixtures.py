"""Small digits models shared by the REPAIR-MIX tests (interpolation, adaptive smoothing, CLI).

A standard (cross-entropy) and a robust (PGD-trained, Linf eps 0.1, 3 steps) copy of one tiny
architecture, trained in about a second each from explicit generators. Cached per process so the
three test files share them.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from robustlab.data import load_dataset

EPS = 0.1


@cache
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): images (N, 1, 8, 8) in [0, 1]."""
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    (xtr, ytr), (xte, yte) = train.tensors(), test.tensors()
    return xtr, ytr, xte, yte


def tiny_bn_net(seed: int, hidden: int = 32) -> nn.Module:
    """Flatten -> Linear -> BatchNorm1d -> ReLU -> Linear, weights drawn from ``seed``."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                        nn.Linear(hidden, 10))
    return init_weights(net, seed)


def init_weights(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p.shape[1]) ** 0.5)
            elif "weight" in name and p.ndim == 1:  # BatchNorm scale
                p.fill_(1.0)
            else:
                p.zero_()
    return net


def train(net: nn.Module, *, epochs: int, seed: int, adversarial: bool) -> nn.Module:
    """Adam on digits; ``adversarial``: PGD-AT (Madry et al.) at ``EPS`` with 3 steps."""
    from robustlab.adversarial import pgd

    x, y, _, _ = digits()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], 128):
            idx = perm[i:i + 128]
            xb, yb = x[idx], y[idx]
            if adversarial:
                net.eval()
                xb = pgd(net, xb, yb, eps=EPS, num_steps=3, step_size=EPS / 2, generator=g).adv_inputs
            net.train()
            opt.zero_grad()
            nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
    return net.eval()


@cache
def standard_and_robust() -> tuple[nn.Module, nn.Module]:
    """Two tiny BatchNorm nets from the same initialisation: CE-trained and PGD-trained."""
    standard = train(tiny_bn_net(0), epochs=8, seed=1, adversarial=False)
    robust = train(tiny_bn_net(0), epochs=8, seed=2, adversarial=True)
    return standard, robust


def snapshot(model: nn.Module) -> dict:
    """Everything of a model's state a function must not change."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "grads": [p.requires_grad for p in model.parameters()],
    }


def assert_unchanged(model: nn.Module, snap: dict) -> None:
    now = snapshot(model)
    assert now["modes"] == snap["modes"] and now["grads"] == snap["grads"]
    for k, v in snap["state"].items():
        assert torch.equal(now["state"][k], v), k
