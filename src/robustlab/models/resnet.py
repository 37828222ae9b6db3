"""Pre-activation ResNet-18 (He et al., 2016) with the CIFAR-style 3x3 stem.

Follows the implementation used by the fast adversarial training code (Wong et al., 2020) and
RobustBench, and keeps its parameter names (``conv1``, ``layer1.0.bn1``, ``layer2.0.shortcut.0``,
``bn``, ``linear``), so their CIFAR checkpoints load into :class:`PreActResNet` once the
``normalize.*`` buffers are accounted for (see :func:`robustlab.models.load_any`).

References
----------
.. [1] K. He, X. Zhang, S. Ren, J. Sun. "Identity Mappings in Deep Residual Networks." ECCV 2016.
.. [2] E. Wong, L. Rice, J. Z. Kolter. "Fast is better than free: Revisiting adversarial
   training." ICLR 2020 (``preact_resnet.py`` in locuslab/fast_adversarial).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab._checks import check_int
from robustlab.models._common import check_input_shape, check_num_classes, make_normalize
from robustlab.models.layers import Normalize, Stats

__all__ = ["PreActBlock", "PreActResNet", "preact_resnet18"]


class PreActBlock(nn.Module):
    """``BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3``, plus the (projected) input.

    When the block changes resolution or width, the shortcut is a 1x1 convolution applied to the
    pre-activated input (as in [1]_, Fig. 4(e)); otherwise it is the identity.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            # Sequential wrapper only to keep the reference key name ``shortcut.0.weight``.
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        # Fixed at construction time, so torch.fx traces one straight-line graph.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet: 3x3 stem, four stages of :class:`PreActBlock`, BN-ReLU, global pool, linear.

    Build it with :func:`preact_resnet18` (or ``build_model("preact-resnet18", ...)``).
    """

    def __init__(self, normalize: Normalize, in_channels: int, num_classes: int, *,
                 num_blocks: Sequence[int] = (2, 2, 2, 2), width: int = 64) -> None:
        super().__init__()
        self.normalize = normalize
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        planes = width
        stages = []
        for i, n in enumerate(num_blocks):
            out_planes = width * 2**i
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            blocks = []
            for stride in strides:
                blocks.append(PreActBlock(planes, out_planes, stride))
                planes = out_planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        # Adaptive pooling replaces the reference's avg_pool2d(out, 4): identical on 32x32 inputs,
        # and it makes the network accept any image size >= 8.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.flatten(self.pool(self.relu(self.bn(out))))
        return self.linear(out)


def preact_resnet18(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    mean: Stats | None = None,
    std: Stats | None = None,
    width: int = 64,
) -> PreActResNet:
    """PreAct ResNet-18 (the ``"preact-resnet18"`` model), CIFAR-style.

    About 11.2M parameters with the default ``width=64`` on 3x32x32 inputs and 10 classes
    (11,172,170, as in the fast-AT and RobustBench code, whose final BN layer adds 1,024 to the
    11,171,146 of the variant without it). PyTorch's default initialisation,
    as in the reference code.

    Parameters
    ----------
    input_shape : tuple of int
        ``(C, H, W)`` with ``H, W >= 8``; any number of channels.
    num_classes : int
        Number of classes ``K >= 2``.
    mean, std : float or sequence of float, optional
        Per-channel statistics for the input normalisation layer; ``None`` means identity.
    width : int, default 64
        Channels of the stem and first stage (then doubled per stage: 64-128-256-512). Smaller
        values give cheap variants for experiments; the default is the standard network.

    Returns
    -------
    PreActResNet
        Maps ``(N, C, H, W)`` images in [0, 1] to logits ``(N, num_classes)``.

    References
    ----------
    He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016.
    """
    shape = check_input_shape(input_shape, model="preact-resnet18")
    num_classes = check_num_classes(num_classes)
    width = check_int("width", width, low=1)
    return PreActResNet(make_normalize(shape, mean, std), shape[0], num_classes,
                        num_blocks=(2, 2, 2, 2), width=width)
