"""Multi-layer perceptron for tabular data and (flattened) images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.models._common import check_input_shape, check_num_classes, check_positive_ints, make_normalize
from robustlab.models.layers import Normalize, Stats

__all__ = ["MLP", "mlp"]


class MLP(nn.Module):
    """Normalise, flatten, then ``Linear -> ReLU`` per hidden layer and a final ``Linear``.

    Build it with :func:`mlp` (or ``build_model("mlp", ...)``), which validates the arguments.

    Parameters
    ----------
    normalize : Normalize
        Input layer (see :func:`robustlab.models.layers.Normalize`).
    in_features : int
        Number of input values per example (``D``, or ``C * H * W`` for images).
    hidden_sizes : tuple of int
        Widths of the hidden layers; empty gives multinomial logistic regression.
    num_classes : int
    """

    def __init__(self, normalize: Normalize, in_features: int, hidden_sizes: tuple[int, ...],
                 num_classes: int) -> None:
        super().__init__()
        self.normalize = normalize
        self.flatten = nn.Flatten()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.hidden = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(self.flatten(self.normalize(x))))


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    mean: Stats | None = None,
    std: Stats | None = None,
    hidden_sizes: Sequence[int] = (256, 256),
) -> MLP:
    """Fully connected ReLU network (the ``"mlp"`` model).

    Parameters
    ----------
    input_shape : tuple of int
        ``(D,)`` for tabular data or ``(C, H, W)`` for images (flattened after normalisation).
    num_classes : int
        Number of classes ``K >= 2``.
    mean, std : float or sequence of float, optional
        Per-feature (tabular) or per-channel (images) statistics of the training inputs for the
        input :class:`~robustlab.models.layers.Normalize` layer; ``None`` means identity.
    hidden_sizes : sequence of int, default (256, 256)
        Widths of the hidden layers; ``()`` gives a linear model.

    Returns
    -------
    MLP
        Maps ``(N, *input_shape)`` inputs to logits ``(N, num_classes)``.
    """
    shape = check_input_shape(input_shape)
    num_classes = check_num_classes(num_classes)
    sizes = check_positive_ints("hidden_sizes", hidden_sizes, allow_empty=True)
    in_features = 1
    for d in shape:
        in_features *= d
    return MLP(make_normalize(shape, mean, std), in_features, sizes, num_classes)
