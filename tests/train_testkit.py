"""The one training loop the tests use for their small digits models (Adam, shuffled batches of 64)."""

from __future__ import annotations

import torch
from torch import nn


def fit_adam(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
             generator: torch.Generator, batch_size: int = 64) -> nn.Module:
    """Train ``model`` with Adam on cross entropy, a fresh permutation from ``generator`` per epoch;
    return it in eval mode. Deterministic for a given generator state."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


class Interrupted(Exception):
    """Raised by an objective wrapped with :func:`interrupt_at_epoch` (a simulated kill)."""


def interrupt_at_epoch(objective, epoch: int):
    """``objective`` with its ``on_epoch_start`` raising :class:`Interrupted` when ``epoch`` starts
    (the run directory then holds the checkpoints of the epochs before); returns it."""
    original = objective.on_epoch_start

    def on_epoch_start(e: int) -> None:
        if e == epoch:
            raise Interrupted
        original(e)

    objective.on_epoch_start = on_epoch_start
    return objective
