"""Wide residual networks (Zagoruyko & Komodakis, 2016), CIFAR-style.

Follows the implementation used by TRADES and RobustBench (``wide_resnet.py``) and keeps its
parameter names (``conv1``, ``block1.layer.0.bn1``, ``block1.layer.0.convShortcut``, ``bn1``,
``fc``), so their checkpoints load into :class:`WideResNet` (the unused ``sub_block1`` of the
original TRADES file is not built; drop its keys).

References
----------
.. [1] S. Zagoruyko, N. Komodakis. "Wide Residual Networks." BMVC 2016.
.. [2] H. Zhang et al. "Theoretically Principled Trade-off between Robustness and Accuracy."
   ICML 2019 (TRADES; ``models/wideresnet.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab._checks import check_int, check_number, fail
from robustlab.models._common import check_input_shape, check_num_classes, make_normalize
from robustlab.models.layers import Normalize, Stats

__all__ = ["WideBasicBlock", "WideResNet", "wide_resnet"]


class WideBasicBlock(nn.Module):
    """Pre-activation basic block ``BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3`` with shortcut.

    When input and output widths differ, the pre-activated input feeds both the residual branch
    and a 1x1 projection shortcut (as in the reference code); otherwise the raw input is added.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        # Identity when dropout is off, so traced graphs and bound propagation see no dropout op.
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        # camelCase kept from the reference implementation so checkpoint keys match.
        self.convShortcut: nn.Module | None = None  # noqa: N815
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(act)))))
        # Fixed at construction time, so torch.fx traces one straight-line graph.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class _WideGroup(nn.Module):
    """A stage of ``n`` blocks; the ``layer`` attribute keeps the reference key names."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout)
            for i in range(n)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``: 3x3 stem (16), three stages (16k, 32k, 64k), BN-ReLU, pool, fc.

    Build it with :func:`wide_resnet` (or ``build_model("wide-resnet", ...)``).
    """

    def __init__(self, normalize: Normalize, in_channels: int, num_classes: int, *, depth: int,
                 widen_factor: int, dropout: float) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = normalize
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _WideGroup(n, widths[0], widths[1], 1, dropout)
        self.block2 = _WideGroup(n, widths[1], widths[2], 2, dropout)
        self.block3 = _WideGroup(n, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        # Adaptive pooling replaces the reference's avg_pool2d(out, 8): identical on 32x32 inputs.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # The reference initialisation ([1]_, TRADES, RobustBench): He-normal (fan_out) convs,
        # BN at identity, zero linear bias (the linear weight keeps PyTorch's default).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = self.flatten(self.pool(self.relu(self.bn1(out))))
        return self.fc(out)


def wide_resnet(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    mean: Stats | None = None,
    std: Stats | None = None,
    depth: int = 28,
    widen_factor: int = 10,
    dropout: float = 0.0,
) -> WideResNet:
    """Wide ResNet (the ``"wide-resnet"`` model), CIFAR-style, as used by TRADES and RobustBench.

    The defaults give WRN-28-10: about 36.5M parameters on 3x32x32 inputs with 10 classes
    (36,479,194, the count of the reference implementation).

    Parameters
    ----------
    input_shape : tuple of int
        ``(C, H, W)`` with ``H, W >= 8``; any number of channels.
    num_classes : int
        Number of classes ``K >= 2``.
    mean, std : float or sequence of float, optional
        Per-channel statistics for the input normalisation layer; ``None`` means identity.
    depth : int, default 28
        Total depth ``6n + 4`` (``n`` blocks per stage): 10, 16, 22, 28, 34, 40, 70, ...
    widen_factor : int, default 10
        Width multiplier ``k`` of the three stages (16k, 32k, 64k channels).
    dropout : float in [0, 1), default 0.0
        Dropout rate between the two convolutions of each block ([1]_, Sec. 2.4); 0 (no dropout
        layer) in TRADES and RobustBench models.

    Returns
    -------
    WideResNet
        Maps ``(N, C, H, W)`` images in [0, 1] to logits ``(N, num_classes)``.

    References
    ----------
    Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016.
    """
    shape = check_input_shape(input_shape, model="wide-resnet")
    num_classes = check_num_classes(num_classes)
    depth = check_int("depth", depth)
    if depth < 10 or (depth - 4) % 6 != 0:
        fail("depth", "an integer of the form 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, ...)", depth)
    widen_factor = check_int("widen_factor", widen_factor, low=1)
    dropout = check_number("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
    return WideResNet(make_normalize(shape, mean, std), shape[0], num_classes, depth=depth,
                      widen_factor=widen_factor, dropout=dropout)
