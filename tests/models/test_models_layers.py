"""Normalize: the input normalisation layer inside every model."""

from __future__ import annotations

import pytest
import torch

from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError
from robustlab.models import Normalize
from robustlab.models.layers import normalize


def _images(shape=(4, 3, 5, 5), seed=0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_normalize_equals_manual_formula_for_images():
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    x = _images()
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(Normalize(mean, std)(x), manual, rtol=0, atol=0)


def test_normalize_equals_manual_formula_for_tabular_features():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=g)
    mean, std = torch.randn(5, generator=g), torch.rand(5, generator=g) + 0.5
    layer = Normalize(mean, std, spatial_dims=0)
    assert layer.mean.shape == (5,)
    torch.testing.assert_close(layer(x), (x - mean) / std, rtol=0, atol=0)


def test_module_equals_function_and_handles_non_contiguous_input():
    layer = Normalize((0.2, 0.4, 0.6), (0.5, 0.25, 2.0))
    x = _images((3, 5, 5, 4)).permute(0, 3, 1, 2)[:, :3]  # non-contiguous view
    assert not x.is_contiguous()
    torch.testing.assert_close(layer(x), normalize(x, layer.mean, layer.std))
    torch.testing.assert_close(layer(x), layer(x.contiguous()))


def test_scalar_statistics_broadcast_to_the_other_length():
    layer = Normalize(0.5, (0.1, 0.2))
    assert layer.mean.flatten().tolist() == [0.5, 0.5]
    assert layer.num_channels == 2


def test_buffers_follow_dtype_and_are_in_the_state_dict():
    layer = Normalize((0.1,), (0.3,))
    assert set(layer.state_dict()) == {"mean", "std"}
    assert not list(layer.parameters())  # statistics are never trained
    double = layer.to(torch.float64)
    assert double.mean.dtype == torch.float64 and double.std.dtype == torch.float64
    x = _images((2, 1, 3, 3)).double()
    assert double(x).dtype == torch.float64


def test_gradcheck_float64():
    layer = Normalize((0.3, 0.6), (0.2, 0.7)).to(torch.float64)
    x = _images((2, 2, 3, 3)).double().requires_grad_(True)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize(
    ("mean", "std", "error", "needle"),
    [
        ((0.1, 0.2), (0.1, 0.2, 0.3), ShapeError, "same length"),
        ((0.1,), (0.0,), InvalidParameterError, "'std'"),
        ((0.1,), (-1.0,), InvalidParameterError, "'std'"),
        ((float("nan"),), (1.0,), InvalidParameterError, "'mean'"),
        ("abc", (1.0,), InvalidTypeError, "'mean'"),
        ((), (1.0,), InvalidParameterError, "'mean'"),
    ],
)
def test_bad_statistics_are_refused(mean, std, error, needle):
    with pytest.raises(error, match=needle):
        Normalize(mean, std)
