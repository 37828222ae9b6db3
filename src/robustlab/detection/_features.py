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

__all__ = ["auto_layers", "check_batch_inputs", "check_module", "forward_features", "resolve_layers"]

#: Module types whose outputs :func:`auto_layers` considers (the ends of blocks in most networks).
_ACTIVATIONS = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.PReLU, torch.nn.ELU,
                torch.nn.SELU, torch.nn.CELU, torch.nn.GELU, torch.nn.SiLU, torch.nn.Mish,
                torch.nn.Softplus, torch.nn.Tanh, torch.nn.Hardswish)


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


def auto_layers(model: torch.nn.Module, x: torch.Tensor, *, max_layers: int) -> tuple[str, ...]:
    """Feature layers for a layer ensemble: block ends (activation modules) plus ``"penultimate"``.

    Lee et al. (2018, Sec. 2.2) take the output of every dense/residual block and the penultimate
    layer. Without knowing the architecture, the end of a block is read as the output of an
    activation module (``nn.ReLU``, ``nn.GELU``, ...). Candidates are the activation modules that
    run exactly once in a forward pass of ``x`` (a module reused inside the network cannot name
    one layer) whose channel-pooled output is not identical to the penultimate features (the last
    block of a global-pooling network, or the last hidden activation of an MLP); at most
    ``max_layers`` of them are kept, evenly spaced from the first to the last, followed by
    ``"penultimate"`` when the model has an ``nn.Linear`` head.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (N, ...)
        A few inputs for one forward pass (eval mode, no gradients; the caller's mode is restored).
    max_layers : int >= 0
        Most intermediate layers kept.

    Returns
    -------
    tuple of str
        Never empty: a model with neither usable activation modules nor a linear head raises
        :class:`~robustlab.errors.InvalidParameterError` naming ``layers``.
    """
    from robustlab._model_state import eval_mode

    head = _last_linear_name(model)
    names = [n for n, m in model.named_modules() if n and isinstance(m, _ACTIVATIONS)]
    modules = dict(model.named_modules())
    calls: dict[str, list[Any]] = {n: [] for n in names}
    pen: list[Any] = []
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: calls[n].append(out))
               for n in names]
    if head is not None:
        handles.append(modules[head].register_forward_hook(lambda _m, inp, _o: pen.append(inp[0])))
    try:
        with torch.no_grad(), eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    penultimate = _pool(pen[0]).reshape(x.shape[0], -1) if len(pen) == 1 else None
    kept = []
    for n in names:
        got = calls[n]
        if len(got) != 1 or not isinstance(got[0], torch.Tensor) or got[0].ndim < 2 \
                or got[0].shape[0] != x.shape[0]:
            continue
        f = _pool(got[0]).reshape(x.shape[0], -1)
        if penultimate is not None and f.shape == penultimate.shape and torch.equal(f, penultimate):
            continue
        kept.append(n)
    if len(kept) > max_layers:
        idx = sorted({round(i * (len(kept) - 1) / max(max_layers - 1, 1)) for i in range(max_layers)})
        kept = [kept[i] for i in idx] if max_layers > 0 else []
    out = tuple(kept) + ((PENULTIMATE,) if penultimate is not None else ())
    if not out:
        fail("layers", "module names for this model ('auto' needs activation modules that run once "
             "per forward pass or an nn.Linear head)", "'auto'", describe_got=False)
    return out
