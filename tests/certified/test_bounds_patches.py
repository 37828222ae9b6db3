"""CROWN's fast paths give the numbers of the plain dense computation.

- Patches: intermediate bounds of convolutional layers are propagated as windows (receptive
  fields); they must equal the dense (N, S, C, H, W) coefficients on every convolution-like layer
  (stride, padding, dilation, groups, average pooling as a convolution, residual additions with
  windows of different sizes, per-channel and full-map constants).
- Convolutions as matrix products (small layers) must equal conv_transpose2d.
- Per-example rows: an example's bounds do not depend on the rest of its batch.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.certified import bounds, margin_spec

B = importlib.import_module("robustlab.certified.bounds")



class Branchy(nn.Module):
    """Two branches with different windows (3x3 and dilated 3x3 after a 1x1) added; a full-map
    constant; avg pooling with padding; grouped and strided convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.b1 = nn.Conv2d(4, 4, 1)
        self.b2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)
        self.head = nn.Conv2d(6, 3, 2, stride=2)
        self.fc = nn.Linear(3 * 2 * 2, 4)
        self.register_buffer("bump", torch.linspace(-0.2, 0.2, 64).reshape(1, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.stem(x) + self.bump)
        out = F.leaky_relu(self.a(out), 0.1) + self.b2(F.relu(self.b1(out)))
        out = F.relu(self.bn(out))
        out = F.relu(self.pool(F.relu(self.down(out))))
        out = F.relu(self.head(out))
        return self.fc(out.flatten(1))


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(2, 5, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(5, 4, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(16, 4))
    branchy = Branchy()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        branchy.bn.running_mean.copy_(torch.randn(4, generator=g) * 0.2)
        branchy.bn.running_var.copy_(torch.rand(4, generator=g) + 0.5)
        branchy.bn.weight.copy_(torch.randn(4, generator=g))
    return {"seq": seq.double().eval(), "branchy": branchy.double().eval()}


def _inputs(n: int = 5) -> torch.Tensor:
    x = torch.rand(n, 2, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x[0] = 0.0
    return x


@pytest.mark.parametrize("name", ["seq", "branchy"])
def test_patches_and_matrices_equal_dense(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _models()[name]
    x = _inputs()
    C = margin_spec(torch.arange(5) % 4, 4).double()
    calls = []
    real = B._backward_patches
    monkeypatch.setattr(B, "_backward_patches", lambda *a: calls.append(1) or real(*a))
    runs = {}
    for norm, eps in (("linf", 0.03), ("l2", 0.3)):
        runs[norm] = bounds(model, x, eps=eps, norm=norm, method="crown", C=C)
    assert calls  # the patch path is taken on these networks
    monkeypatch.setattr(B, "_patch_plan", lambda graph, idx: None)
    monkeypatch.setattr(B, "CERTIFIED_CONV_MATRIX_ELEMENTS", 0)
    for norm, eps in (("linf", 0.03), ("l2", 0.3)):
        lo, hi = bounds(model, x, eps=eps, norm=norm, method="crown", C=C)
        torch.testing.assert_close(runs[norm][0], lo, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(runs[norm][1], hi, rtol=1e-9, atol=1e-9)
        assert bool((hi - lo > 1e-3).any())  # not trivially exact


def test_pooling_that_is_not_a_convolution_falls_back_to_dense() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True), nn.ReLU(),
                          nn.AvgPool2d(2, padding=1, count_include_pad=False), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).double().eval()
    x = torch.rand(3, 1, 7, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    from robustlab.certified._graph import trace

    graph = trace(model, x)
    kinds = [op.kind for op in graph.ops]
    assert B._patch_plan(graph, kinds.index("avgpool")) is None  # ceil_mode window past the edge
    assert B._patch_plan(graph, 1) is not None
    lo, hi = bounds(model, x, eps=0.05, method="crown")
    with torch.no_grad():
        for _ in range(10):
            z = model((x + (torch.rand(x.shape, dtype=x.dtype) * 2 - 1) * 0.05).clamp(0, 1))
            assert bool((lo <= z + 1e-9).all()) and bool((z <= hi + 1e-9).all())


@pytest.mark.parametrize("method", ["crown", "crown-ibp", "ibp"])
def test_an_examples_bounds_do_not_depend_on_its_batch(method: str) -> None:
    model = _models()["branchy"]
    x = _inputs(6)
    C = margin_spec(torch.arange(6) % 4, 4).double()
    lo, hi = bounds(model, x, eps=0.03, method=method, C=C)
    for k in (0, 3):
        lo1, hi1 = bounds(model, x[k:k + 1], eps=0.03, method=method, C=C[k:k + 1])
        torch.testing.assert_close(lo1[0], lo[k], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(hi1[0], hi[k], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["seq", "branchy"])
def test_switching_from_patches_to_dense_anywhere_gives_the_same_bounds(name: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows that outgrow their layer are turned into dense maps part-way (``_patch_cut``)."""
    model = _models()[name]
    x = _inputs()
    C = margin_spec(torch.arange(5) % 4, 4).double()
    want = {norm: bounds(model, x, eps=eps, norm=norm, method="crown", C=C)
            for norm, eps in (("linf", 0.03), ("l2", 0.3))}
    real = B._patch_cut
    for fraction in (0.2, 0.5, 0.8):

        def forced(graph, plan, fraction=fraction):
            nodes = sorted(plan)
            cut = nodes[int(fraction * (len(nodes) - 1))]
            per_row = max(math.prod(graph.ops[j].shape) for j in nodes)
            assert real(graph, plan)[1] <= per_row
            return cut, per_row

        monkeypatch.setattr(B, "_patch_cut", forced)
        for norm, eps in (("linf", 0.03), ("l2", 0.3)):
            lo, hi = bounds(model, x, eps=eps, norm=norm, method="crown", C=C)
            torch.testing.assert_close(lo, want[norm][0], rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(hi, want[norm][1], rtol=1e-9, atol=1e-9)
