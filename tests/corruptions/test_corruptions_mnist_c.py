"""MNIST-C: the battery (shape, range, dtype, determinism, change), reference checks, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab.corruptions import MNIST_C_CORRUPTIONS, corrupt_mnist_c
from robustlab.corruptions.mnist_c import canny
from robustlab.data import load_dataset
from robustlab.errors import InvalidTypeError, ShapeError, UnknownNameError


@pytest.fixture(scope="module")
def digits8() -> torch.Tensor:
    x, _ = load_dataset("digits", split="test").tensors()
    return x[:8]


@pytest.fixture(scope="module")
def digits28(digits8: torch.Tensor) -> torch.Tensor:
    return F.interpolate(digits8, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", MNIST_C_CORRUPTIONS)
@pytest.mark.parametrize("size", [8, 28])
def test_battery(name: str, size: int, digits8: torch.Tensor, digits28: torch.Tensor) -> None:
    x = digits8 if size == 8 else digits28
    before = x.clone()
    y = corrupt_mnist_c(x, name, generator=_g())
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(x, before), "input changed in place"
    assert float((y - x).abs().mean()) > 1e-3, "corruption left the images unchanged"
    assert torch.equal(y, corrupt_mnist_c(x, name, generator=_g())), "not deterministic"


@pytest.mark.parametrize("name", ["shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear",
                                  "rotate", "translate", "fog", "spatter", "dotted_line", "zigzag"])
def test_random_corruptions_use_the_generator(name: str, digits28: torch.Tensor) -> None:
    assert not torch.equal(corrupt_mnist_c(digits28, name, generator=_g(0)),
                           corrupt_mnist_c(digits28, name, generator=_g(1)))


def test_float64_and_noncontiguous(digits28: torch.Tensor) -> None:
    x = digits28.double().transpose(2, 3)
    y = corrupt_mnist_c(x, "rotate", generator=_g())
    assert y.dtype == torch.float64 and y.shape == x.shape


def test_brightness_and_stripe_are_the_reference_formulas(digits28: torch.Tensor) -> None:
    # brightness: gray -> HSV, V + 0.5, back; on grey pixels that is clip(x + 0.5).
    y = corrupt_mnist_c(digits28, "brightness", generator=_g())
    assert torch.allclose(y, (digits28 + 0.5).clamp(max=1))
    s = corrupt_mnist_c(digits28, "stripe", generator=_g())
    expected = digits28.clone()
    expected[..., :7] = 1 - digits28[..., :7]
    expected[..., 21:] = 1 - digits28[..., 21:]
    assert torch.equal(s, expected)


def test_scale_matches_skimage_warp(digits28: torch.Tensor) -> None:
    # The reference: AffineTransform(scale=1/0.7) with the translation that fixes (13.5, 13.5),
    # applied by skimage.transform.warp (order 1, constant 0). Scale draws no random numbers.
    from skimage import transform

    c = (1 / 0.7, 1 / 0.7)
    aff = transform.AffineTransform(scale=c)
    a1, a2 = aff.params[0, :2]
    b1, b2 = aff.params[1, :2]
    aff = transform.AffineTransform(scale=c, translation=[13.5 * (1 - a1 - a2), 13.5 * (1 - b1 - b2)])
    y = corrupt_mnist_c(digits28[:6], "scale", generator=_g())
    for i in range(6):
        ref = transform.warp(digits28[i, 0].double().numpy(), inverse_map=aff)
        assert np.abs(ref - y[i, 0].double().numpy()).max() < 1e-5


def test_canny_agrees_with_skimage(digits28: torch.Tensor) -> None:
    from skimage.feature import canny as sk_canny

    ours = canny(digits28, sigma=1.0, low_threshold=0.1, high_threshold=0.2).bool()
    agree = [float((torch.from_numpy(sk_canny(digits28[i, 0].double().numpy())) == ours[i, 0])
                   .double().mean()) for i in range(len(digits28))]
    assert np.mean(agree) > 0.995 and min(agree) > 0.98
    assert ours.any(), "no edges at all"


def test_shot_noise_mean_is_preserved() -> None:
    x = torch.full((64, 1, 28, 28), 0.5)
    y = corrupt_mnist_c(x, "shot_noise", generator=_g())
    # Poisson(3 x) / 3: mean x, variance x / 3 (before clipping at 1, which lowers the mean a bit).
    assert abs(float(y.mean()) - 0.5) < 0.05
    assert abs(float(y.var()) - 0.5 / 3) < 0.05


def test_impulse_noise_rate() -> None:
    x = torch.full((64, 1, 28, 28), 0.5)
    y = corrupt_mnist_c(x, "impulse_noise", generator=_g())
    changed = (y != 0.5).double().mean()
    assert abs(float(changed) - 0.17) < 0.01
    assert set(torch.unique(y).tolist()) == {0.0, 0.5, 1.0}


def test_bad_input(digits28: torch.Tensor) -> None:
    with pytest.raises(UnknownNameError, match="zigzag"):
        corrupt_mnist_c(digits28, "zig", generator=_g())
    with pytest.raises(ShapeError, match="N, C, H, W"):
        corrupt_mnist_c(digits28[:, 0], "fog", generator=_g())
    with pytest.raises(ShapeError, match="at least 8"):
        corrupt_mnist_c(torch.rand(2, 1, 4, 4), "fog", generator=_g())
    with pytest.raises(InvalidTypeError, match="generator"):
        corrupt_mnist_c(digits28, "fog", generator=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt_mnist_c(digits28 * 255, "fog", generator=_g())
