"""Context managers that let a function use a model without changing its caller's state.

DESIGN.md: a function never changes its caller's model state (train/eval mode, requires_grad)
without restoring it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["preserve_state", "eval_mode", "frozen_params"]


@contextmanager
def preserve_state(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Restore every submodule's ``training`` flag and every parameter's ``requires_grad`` on exit."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, req in grads:
            p.requires_grad_(req)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode for the block; restore the caller's modes afterwards."""
    with preserve_state(model):
        model.eval()
        yield model


@contextmanager
def frozen_params(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode and ``requires_grad=False`` on all parameters (gradients w.r.t. inputs only)."""
    with preserve_state(model):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        yield model
