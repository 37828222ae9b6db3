"""Layers shared by the architectures.

Inputs follow the DESIGN.md contract: images are ``(N, C, H, W)`` in [0, 1], tabular data is
``(N, D)``, and *normalisation is a layer inside the model*. Attacks, corruptions and certificates
therefore work in the [0, 1] input space, and a saved model carries its own mean/std.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import nn

from robustlab._checks import check_int, fail
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError

__all__ = ["Normalize", "normalize"]

Stats = Union[float, Sequence[float], torch.Tensor]


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Standardise ``x``: ``(x - mean) / std``, with ``mean``/``std`` broadcast against ``x``.

    Parameters
    ----------
    x : Tensor, shape (N, C, H, W) or (N, D)
    mean, std : Tensor, shape (C, 1, 1) or (D,)
        Already shaped for broadcasting (as :class:`Normalize` stores them).

    Returns
    -------
    Tensor, same shape as ``x``.
    """
    return (x - mean) / std


class Normalize(nn.Module):
    r"""Per-channel (images) or per-feature (tabular) standardisation :math:`(x - \mu) / \sigma`.

    ``mean`` and ``std`` are stored as buffers, so they follow ``.to(device)`` / ``.to(dtype)``,
    are saved in the state dict and are never trained.

    Parameters
    ----------
    mean : float, sequence of float or Tensor, shape (C,) or (D,)
        Per-channel mean for images, per-feature mean for tabular data. A single value is used
        for every channel/feature only when ``std`` fixes the length (or both are scalars).
    std : float, sequence of float or Tensor, shape (C,) or (D,)
        Positive, finite standard deviations; same length rules as ``mean``.
    spatial_dims : int, default 2
        Number of trailing dimensions after the channel/feature dimension: 2 for images
        ``(N, C, H, W)`` (buffers are stored as ``(C, 1, 1)``), 0 for tabular ``(N, D)``
        (buffers ``(D,)``).

    Notes
    -----
    The buffers are pre-shaped for broadcasting so that ``forward`` is one subtraction and one
    division with no shape logic; this keeps the layer traceable by ``torch.fx`` and trivial for
    bound propagation (an affine map with a positive diagonal).

    Examples
    --------
    >>> import torch
    >>> layer = Normalize((0.5,), (0.25,))
    >>> layer(torch.full((1, 1, 2, 2), 0.75)).flatten().tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Stats, std: Stats, *, spatial_dims: int = 2) -> None:
        super().__init__()
        spatial_dims = check_int("spatial_dims", spatial_dims, low=0)
        mean_t = _as_stats("mean", mean)
        std_t = _as_stats("std", std)
        if mean_t.numel() != std_t.numel():
            if mean_t.numel() == 1:
                mean_t = mean_t.expand_as(std_t).clone()
            elif std_t.numel() == 1:
                std_t = std_t.expand_as(mean_t).clone()
            else:
                raise ShapeError(
                    f"The 'mean' and 'std' parameters must have the same length. Got {mean_t.numel()} "
                    f"and {std_t.numel()} instead.", expected=mean_t.numel(), got=std_t.numel())
        if bool((std_t <= 0).any()):
            fail("std", "strictly positive", f"minimum {float(std_t.min()):.4g}", describe_got=False)
        shape = (-1,) + (1,) * spatial_dims
        self.register_buffer("mean", mean_t.reshape(shape))
        self.register_buffer("std", std_t.reshape(shape))

    @property
    def num_channels(self) -> int:
        """Number of channels (images) or features (tabular data) this layer standardises."""
        return int(self.mean.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    def extra_repr(self) -> str:
        mean = [round(v, 4) for v in self.mean.flatten().tolist()[:4]]
        std = [round(v, 4) for v in self.std.flatten().tolist()[:4]]
        more = ", ..." if self.num_channels > 4 else ""
        return f"mean={mean}{more}, std={std}{more}"


def _as_stats(name: str, value: Stats) -> torch.Tensor:
    """1-D float tensor of finite values (default dtype, so it matches the parameters)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Sequence, torch.Tensor)) \
            or isinstance(value, str):
        fail(name, "a float, a sequence of floats or a tensor", value, error=InvalidTypeError)
    try:
        # Explicit CPU: validation below reads values, which must work even when the model is
        # being built under a ``torch.device("meta")`` context (see io.save_model).
        t = torch.as_tensor(value, dtype=torch.get_default_dtype(), device="cpu").detach().clone().flatten()
    except (TypeError, ValueError, RuntimeError):
        fail(name, "a float, a sequence of floats or a tensor", value, error=InvalidTypeError)
    if t.numel() == 0:
        fail(name, "at least one value", value)
    if not bool(torch.isfinite(t).all()):
        raise InvalidParameterError(f"The '{name}' parameter must contain only finite values. "
                                    f"Got {t.tolist()[:8]} instead.")
    return t
