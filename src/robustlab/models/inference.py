"""Batched inference with output validation."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from robustlab._checks import check_inputs, check_int, check_logits, fail
from robustlab._constants import EVAL_BATCH_SIZE
from robustlab._model_state import eval_mode
from robustlab.data.dataset import Dataset
from robustlab.errors import InvalidTypeError, ModelOutputError

__all__ = ["predict_logits", "Scorer"]

Scorer = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module | Scorer,
    data: Dataset | torch.Tensor,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Logits ``(N, K)`` of ``model`` on ``data``, computed in batches, on CPU.

    Parameters
    ----------
    model : nn.Module or callable
        Maps a float batch to scores ``(B, K)``. A module is run in eval mode and its caller's
        mode is restored afterwards.
    data : Dataset or Tensor
        Examples to score.
    batch_size : int, default 512
    num_classes : int, optional
        Expected ``K``; defaults to ``data.num_classes`` for a Dataset. A mismatch raises
        :class:`~robustlab.errors.ModelOutputError`.
    device : device, optional
        Where batches are sent; defaults to the device of the model's first parameter or
        buffer, else the data's device.

    Returns
    -------
    Tensor of shape (N, K), float32, on CPU.
    """
    check_int("batch_size", batch_size, low=1)
    if not callable(model):
        fail("model", "a torch.nn.Module or a callable returning scores", model, error=InvalidTypeError)
    if isinstance(data, Dataset):
        n = len(data)
        if num_classes is None:
            num_classes = data.num_classes
        batches = (b.inputs for b in data.batches(batch_size))
    else:
        x = check_inputs("data", data)
        n = x.shape[0]
        batches = (x[i:i + batch_size] for i in range(0, n, batch_size))
    target = torch.device(device) if device is not None else _model_device(model)
    outs = []
    ctx = eval_mode(model) if isinstance(model, torch.nn.Module) else nullcontext()
    with ctx:
        for xb in batches:
            if target is not None:
                xb = xb.to(target)
            try:
                out = model(xb)
            except RuntimeError as exc:  # shape mismatch inside the model: say so in one line
                msg = str(exc).splitlines()[0]
                raise ModelOutputError(
                    f"The 'model' failed on a batch of shape {tuple(xb.shape)}: {msg}") from None
            check_logits("model output", out, n=xb.shape[0], num_classes=num_classes)
            outs.append(out.detach().float().cpu())
    if not outs:
        return torch.empty(0, num_classes or 0)
    return torch.cat(outs)


def _model_device(model: Any) -> torch.device | None:
    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return None
