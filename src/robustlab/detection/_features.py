"""Feature extraction with forward hooks on named modules (shared by the feature-based detectors).

A layer is named as in ``model.named_modules()``; its feature is the module's *output*. The special
name ``"penultimate"`` is the *input* of the model's last ``nn.Linear`` in registration order (the
classifier head of every robustlab architecture; the same convention as
``robustlab.label_noise.oof.logits_and_features``). Feature maps with more than two dimensions
``(N, C, ...)`` are average-pooled per channel to ``(N, C)``, as Lee et al. (2018, Sec. 2) do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from robustlab._checks import check_choice, check_inputs, fail
from robustlab._constants import PENULTIMATE
from robustlab.errors import InvalidParameterError, InvalidTypeError, ModelOutputError

__all__ = ["check_batch_inputs", "check_module", "forward_features", "resolve_layers"]


def check_module(name: str, model: Any) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        fail(name, "a torch.nn.Module (features are read with forward hooks)", model,
             error=InvalidTypeError)
    return model


def check_batch_inputs(name: str, x: Any) -> torch.Tensor:
    """Inputs with a batch dimension, float, finite, at least one example."""
    x = check_inputs(name, x)
    if x.shape[0] == 0:
        fail(name, "a tensor with at least one example", x)
    return x


def _last_linear_name(model: torch.nn.Module) -> str | None:
    name = None
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            name = n
    return name


def resolve_layers(model: torch.nn.Module, layers: Sequence[str]) -> tuple[tuple[str, str, bool], ...]:
    """``(layer, module_name, take_input)`` per requested layer; unknown names list the valid ones."""
    modules = {n for n, _ in model.named_modules() if n}
    head = _last_linear_name(model)
    valid = modules | ({PENULTIMATE} if head is not None else set())
    out = []
    for layer in layers:
        if layer == PENULTIMATE and head is None:
            fail("layers", f"module names of the model ('{PENULTIMATE}' needs an nn.Linear head)",
                 layer)
        check_choice("layers", layer, valid)
        out.append((layer, head, True) if layer == PENULTIMATE else (layer, layer, False))
    return tuple(out)


def _pool(f: torch.Tensor) -> torch.Tensor:
    if f.ndim > 2:
        return f.flatten(2).mean(dim=2)
    if f.ndim == 1:
        return f.unsqueeze(1)
    return f


def forward_features(
    model: torch.nn.Module, x: torch.Tensor, resolved: tuple[tuple[str, str, bool], ...],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward pass: logits ``(N, K)`` and one pooled ``(N, F_l)`` feature per layer.

    Features keep their autograd graph (the caller decides on ``no_grad``).
    """
    modules = dict(model.named_modules())
    captured: dict[str, list[torch.Tensor]] = {layer: [] for layer, _, _ in resolved}
    handles = []

    def make_hook(layer: str, take_input: bool):
        def hook(_m, inp, out):
            value = inp[0] if take_input else out
            if not isinstance(value, torch.Tensor):
                raise ModelOutputError(
                    f"The layer '{layer}' must output a tensor to be used as a feature. "
                    f"Got a {type(value).__name__} instead.")
            captured[layer].append(value)
        return hook

    try:
        for layer, module_name, take_input in resolved:
            handles.append(modules[module_name].register_forward_hook(make_hook(layer, take_input)))
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    feats = []
    for layer, _, _ in resolved:
        got = captured[layer]
        if len(got) != 1:
            raise InvalidParameterError(
                f"The 'layers' parameter must name modules that run once per forward pass. "
                f"Got '{layer}', which ran {len(got)} times instead.")
        f = _pool(got[0])
        if f.shape[0] != x.shape[0]:
            raise ModelOutputError(
                f"The layer '{layer}' must keep the batch dimension ({x.shape[0]}). "
                f"Got a feature of shape {tuple(got[0].shape)} instead.")
        feats.append(f.reshape(f.shape[0], -1))
    return logits, feats
