"""The traced graph is reused between calls but never goes stale: new weights (in place or
reassigned), replaced layers, changed modes, changed Python attributes that steer ``forward``,
and new input shapes all give the bounds of a freshly built copy of the model."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.certified import bounds, differentiable_bounds


class Switchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.extra = nn.Conv2d(3, 3, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(12, 3)
        self.use_extra = True
        self.shift = torch.tensor(0.1, dtype=torch.float64)
        self.slopes = [0.1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv(x)) + self.shift
        if self.use_extra:
            out = F.leaky_relu(self.extra(out), self.slopes[0])
        return self.fc(self.pool(out).flatten(1))


def _same_as_fresh(model: nn.Module, x: torch.Tensor) -> None:
    fresh = copy.deepcopy(model)
    for m in ("ibp", "crown"):
        got = bounds(model, x, eps=0.05, method=m)
        want = bounds(fresh, x, eps=0.05, method=m)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_cached_trace_follows_every_change() -> None:
    torch.manual_seed(0)
    model = Switchy().double().eval()
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    first = bounds(model, x, eps=0.05)
    _same_as_fresh(model, x)
    with torch.no_grad():  # in-place weight update (an optimizer step)
        model.fc.weight.mul_(2.0)
    assert not torch.equal(bounds(model, x, eps=0.05)[0], first[0])
    _same_as_fresh(model, x)
    model.fc.weight = nn.Parameter(model.fc.weight.detach() * 0.5)  # reassigned parameter
    _same_as_fresh(model, x)
    model.extra = nn.Conv2d(3, 3, 1).double()  # replaced layer
    _same_as_fresh(model, x)
    model.slopes[0] = 0.3  # contents of a list attribute (read while tracing)
    _same_as_fresh(model, x)
    model.use_extra = False  # forward's control flow
    _same_as_fresh(model, x)
    model.shift = torch.tensor(-0.2, dtype=torch.float64)  # a plain tensor attribute
    _same_as_fresh(model, x)
    _same_as_fresh(model, torch.rand(2, 1, 8, 8, dtype=torch.float64))  # another input shape
    # float32 bounds of a float64 model read the current weights too
    lo32, _ = bounds(model, x.float(), eps=0.05, method="crown")
    torch.testing.assert_close(lo32.double(), bounds(model, x, eps=0.05, method="crown")[0], rtol=1e-4, atol=1e-5)


def test_cached_trace_follows_modes() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(8, 3)).double()
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model.eval()
    eval_bounds = differentiable_bounds(model, x, eps=0.02)["ibp"]
    model.train()
    model[4].eval()
    train_bounds = differentiable_bounds(model, x, eps=0.02)["ibp"]
    assert not torch.equal(eval_bounds[0], train_bounds[0])  # batch vs running statistics
    model[4].train()
    try:
        differentiable_bounds(model, x, eps=0.02)
    except ValueError as err:
        assert "Dropout" in str(err)
    else:  # pragma: no cover - the check is the point of the test
        raise AssertionError("training-mode Dropout was not refused")
    model.eval()
    torch.testing.assert_close(differentiable_bounds(model, x, eps=0.02)["ibp"], eval_bounds, rtol=0, atol=0)
