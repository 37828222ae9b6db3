"""Models and data shared by the adversarial tests, built from explicit generators.

``digits_cnn``/``digits_mlp`` are trained for a few seconds on the built-in digits (about 95%
test accuracy), enough for attacks to have something to break. ``linear`` is a multiclass linear
model whose exact minimal perturbations are known in closed form (see :func:`linear_min_norms`).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.data import load_dataset

from adv_testkit import NUM_CLASSES, linear_min_norms, linear_model, make_cnn, make_mlp  # noqa: F401
from train_testkit import fit_adam


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int) -> nn.Module:
    return fit_adam(model, x, y, epochs=epochs, lr=3e-3, generator=torch.Generator().manual_seed(seed))


def _init(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            else:
                p.zero_()
    return model


@pytest.fixture(scope="session")
def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) of the built-in digits, images (N, 1, 8, 8) in [0, 1]."""
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    (xtr, ytr), (xte, yte) = train.tensors(), test.tensors()
    return xtr, ytr, xte, yte


@pytest.fixture(scope="session")
def digits_mlp(digits_split) -> nn.Module:
    """A small MLP (with dropout, so train/eval mode matters) trained on digits."""
    x, y, _, _ = digits_split
    torch.manual_seed(0)  # only nn.Dropout inside the test-model's training reads the global RNG
    return _train(_init(make_mlp(dropout=0.1), 0), x, y, epochs=15, seed=0)


@pytest.fixture(scope="session")
def digits_cnn(digits_split) -> nn.Module:
    x, y, _, _ = digits_split
    return _train(_init(make_cnn(), 1), x, y, epochs=10, seed=1)


@pytest.fixture
def attack_batch(digits_split) -> tuple[torch.Tensor, torch.Tensor]:
    """64 test digits and their labels."""
    _, _, x, y = digits_split
    return x[:64].clone(), y[:64].clone()


@pytest.fixture
def linear_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(model, x, labels, W, b): 4 classes on 16 features, points near the box centre, float64.

    Points sit near the box centre so every minimal L2 and Linf perturbation stays inside [0, 1]
    and the closed form (which ignores the box) is the true answer. NOT for L1: the closed-form L1
    move puts 0.7-0.8 on one coordinate, which has only about 0.5 of room, so the box binds — use
    an LP oracle that respects the box (tests/adversarial/test_adversarial_fab.py) instead.
    """
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 16, generator=g, dtype=torch.float64)
    b = torch.zeros(4, dtype=torch.float64)
    x = 0.5 + 0.02 * torch.randn(12, 1, 4, 4, generator=g, dtype=torch.float64)
    model = linear_model(w, b)
    labels = model(x).argmax(dim=1)
    return model, x, labels, w, b

