"""A small convolutional network that trains in seconds on CPU (digits) and scales to 32x32."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.models._common import check_input_shape, check_num_classes, check_positive_ints, make_normalize
from robustlab.models.layers import Normalize, Stats

__all__ = ["SmallCNN", "small_cnn"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU()]


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks, 2x2 average pooling after the second, global pooling, linear.

    ``conv(c1) -> conv(c2) -> avgpool(2) -> conv(c3) -> adaptive avgpool(1) -> flatten -> linear``.

    Build it with :func:`small_cnn` (or ``build_model("small-cnn", ...)``).

    Parameters
    ----------
    normalize : Normalize
    in_channels : int
    channels : tuple of 3 ints
    num_classes : int
    """

    def __init__(self, normalize: Normalize, in_channels: int, channels: tuple[int, int, int],
                 num_classes: int) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.normalize = normalize
        # Average (not max) pooling: every layer except ReLU is then linear, which keeps
        # bound propagation (IBP/CROWN) tight and simple for this architecture.
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, c1),
            *_conv_bn_relu(c1, c2),
            nn.AvgPool2d(2),
            *_conv_bn_relu(c2, c3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


def small_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    mean: Stats | None = None,
    std: Stats | None = None,
    channels: Sequence[int] = (32, 64, 128),
) -> SmallCNN:
    """Small CNN (the ``"small-cnn"`` model): three 3x3 conv-BN-ReLU blocks, ~94k parameters.

    Sized for the built-in 8x8 digits (trains to >= 0.95 test accuracy in seconds on a CPU) and
    usable on 28x28 / 32x32 images; global average pooling makes it independent of image size.

    Parameters
    ----------
    input_shape : tuple of int
        ``(C, H, W)`` with ``H, W >= 8``; any number of channels.
    num_classes : int
        Number of classes ``K >= 2``.
    mean, std : float or sequence of float, optional
        Per-channel statistics for the input normalisation layer; ``None`` means identity.
    channels : sequence of 3 ints, default (32, 64, 128)
        Output channels of the three conv blocks (the 2x2 average pooling follows the second).

    Returns
    -------
    SmallCNN
        Maps ``(N, C, H, W)`` images in [0, 1] to logits ``(N, num_classes)``.
    """
    shape = check_input_shape(input_shape, model="small-cnn")
    num_classes = check_num_classes(num_classes)
    widths = check_positive_ints("channels", channels, length=3)
    return SmallCNN(make_normalize(shape, mean, std), shape[0], widths, num_classes)  # type: ignore[arg-type]
