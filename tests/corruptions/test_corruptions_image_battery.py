"""The check battery for every ImageNet-C family corruption, plus bad input and presets."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from robustlab.corruptions import (
    BENCHMARK_CORRUPTIONS,
    CORRUPTION_CATEGORIES,
    EXTRA_CORRUPTIONS,
    IMAGE_CORRUPTIONS,
    IMAGE_PRESETS,
    corrupt,
    preset_for,
)
from robustlab.corruptions._image_params import PRESETS
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    ShapeError,
    UnknownNameError,
)

RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur",
          "motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform")
DETERMINISTIC = tuple(n for n in IMAGE_CORRUPTIONS if n not in RANDOM)


def natural_images(n: int, c: int, size: int | tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Smooth, moderately saturated images (closer to photos than uniform noise)."""
    g = torch.Generator().manual_seed(seed)
    hw = (size, size) if isinstance(size, int) else size
    coarse = torch.rand(n, c, 5, 5, generator=g)
    smooth = F.interpolate(coarse, size=hw, mode="bicubic", align_corners=False)
    detail = 0.08 * torch.rand(n, c, *hw, generator=g)
    grey = smooth.mean(dim=1, keepdim=True)
    return (0.15 + 0.7 * (0.5 * smooth + 0.5 * grey) + detail).clamp(0, 1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_names_and_categories() -> None:
    assert len(IMAGE_CORRUPTIONS) == 19 == len(set(IMAGE_CORRUPTIONS))
    grouped = [n for names in CORRUPTION_CATEGORIES.values() for n in names]
    assert sorted(grouped) == sorted(IMAGE_CORRUPTIONS)
    assert len(BENCHMARK_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert set(EXTRA_CORRUPTIONS) == {"speckle_noise", "gaussian_blur", "spatter", "saturate"}
    assert CORRUPTION_CATEGORIES["weather"] == ("snow", "frost", "fog", "brightness")


@pytest.mark.parametrize("preset", IMAGE_PRESETS)
def test_every_preset_has_a_full_table(preset: str) -> None:
    table = PRESETS[preset].table
    assert set(table) == set(IMAGE_CORRUPTIONS)
    assert all(len(v) == 5 for v in table.values())


@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
@pytest.mark.parametrize("channels,size,preset", [(3, 32, "cifar"), (1, 8, "mnist"), (3, 8, "cifar"),
                                                  (1, 28, "mnist"), (3, 17, "cifar"),
                                                  (3, (20, 33), "cifar"), (1, (40, 9), "mnist")])
def test_shape_dtype_range_kept(name: str, channels: int, size: int | tuple[int, int],
                                preset: str) -> None:
    x = natural_images(3, channels, size)
    for severity in (1, 3, 5):
        y = corrupt(x, name, severity, generator=gen(1), preset=preset)
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert bool(torch.isfinite(y).all())
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert y.is_contiguous()


@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
def test_float64_and_half_kept(name: str) -> None:
    x = natural_images(2, 3, 16)
    y64 = corrupt(x.double(), name, 2, generator=gen(0))
    assert y64.dtype == torch.float64
    y16 = corrupt(x.to(torch.bfloat16), name, 2, generator=gen(0))
    assert y16.dtype == torch.bfloat16
    # same draws, same maths: the float64 result equals the float32 one up to rounding
    y32 = corrupt(x, name, 2, generator=gen(0))
    close = (y64.float() - y32).abs() <= 2e-3
    assert float(close.float().mean()) > 0.97  # thresholds (snow, spatter, glass) may flip a few


@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
def test_deterministic_per_generator(name: str) -> None:
    x = natural_images(3, 3, 24)
    a = corrupt(x, name, 3, generator=gen(7))
    b = corrupt(x, name, 3, generator=gen(7))
    assert torch.equal(a, b)
    c = corrupt(x, name, 3, generator=gen(8))
    if name in RANDOM:
        assert not torch.equal(a, c)
    else:
        assert torch.equal(a, c)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_draw_nothing(name: str) -> None:
    g = gen(3)
    state = g.get_state().clone()
    corrupt(natural_images(2, 3, 16), name, 4, generator=g)
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("name", RANDOM)
def test_images_of_a_batch_get_independent_draws(name: str) -> None:
    x = natural_images(1, 3, 24).expand(2, 3, 24, 24).contiguous()
    y = corrupt(x, name, 4, generator=gen(5))
    assert not torch.equal(y[0], y[1])


@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
def test_non_contiguous_input(name: str) -> None:
    x = natural_images(3, 3, 20)
    nc = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, other strides
    assert not nc.is_contiguous()
    # equal up to float summation order (means and matrix products see other strides)
    torch.testing.assert_close(corrupt(nc, name, 2, generator=gen(1)),
                               corrupt(x, name, 2, generator=gen(1)), atol=1e-5, rtol=0)
    sliced = torch.cat([x, x], dim=0)[::2]  # strided batch
    torch.testing.assert_close(corrupt(sliced, name, 2, generator=gen(1)),
                               corrupt(sliced.contiguous(), name, 2, generator=gen(1)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
def test_input_not_modified_and_batch_of_one(name: str) -> None:
    x = natural_images(1, 3, 16)
    before = x.clone()
    corrupt(x, name, 5, generator=gen(0))
    assert torch.equal(x, before)
    assert corrupt(x[:0], name, 5, generator=gen(0)).shape == (0, 3, 16, 16)


def _mean_distances(name: str, preset: str, x: torch.Tensor) -> list[float]:
    # the same generator seed at every severity (common random numbers): the comparison
    # measures the severity, not the luck of the draw
    out = []
    for s in range(1, 6):
        y = corrupt(x, name, s, generator=gen(0), preset=preset)
        if name == "frost":
            # frost is a x + b texture with a falling and b rising: the share of the image falls,
            # but a bright texture over a mid-grey image can *lower* the L1 distance, so measure
            # the loss of signal, 1 - correlation with the clean image
            xc = (x - x.mean(dim=(1, 2, 3), keepdim=True)).flatten(1)
            yc = (y - y.mean(dim=(1, 2, 3), keepdim=True)).flatten(1)
            corr = (xc * yc).sum(1) / (xc.norm(dim=1) * yc.norm(dim=1))
            out.append(float((1 - corr).mean()))
        else:
            out.append(float((y - x).abs().mean()))
    return out


# Corruptions whose published tables make every step stronger in pixel distance; the others
# are only stronger on average (the tables trade one parameter against another: glass blur's
# sigma vs iterations, frost's image vs texture weight, fog's strength vs its normalisation,
# spatter switching from water to mud at severity 4, saturate going from x0.1 to x1.5,
# elastic's affine vs local displacement, pixelation ratios vs the pixel grid).
MONOTONE = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
            "defocus_blur", "motion_blur", "zoom_blur", "brightness", "contrast", "jpeg_compression",
            "frost"}


@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
@pytest.mark.parametrize("preset,size", [("cifar", 32), ("mnist", 28)])
def test_distance_grows_with_severity(name: str, preset: str, size: int) -> None:
    channels = 1 if preset == "mnist" else 3
    x = natural_images(8, channels, size, seed=11)
    d = _mean_distances(name, preset, x)
    if name == "saturate" and channels == 1:  # identity on grey images
        assert d == [0.0] * 5
        return
    assert d[0] > 0
    if name == "saturate":  # x0.3, x0.1 (strong), x1.5 (mild), x2 + 0.1, x2.5 + 0.2
        assert d[1] > d[0] and d[4] > d[3] > d[2], d
        return
    if name == "elastic_transform":
        # two regimes in both tables: severities 1-2 are large smooth warps (CIFAR 1 is a pure
        # 2.6 px affine), 3-5 local displacements of growing amplitude
        if preset == "cifar":
            assert sum(d[2:]) / 3 > 0.5 * d[0], d
        else:
            assert d[2] < d[3] < d[4], d
        return
    assert d[4] > d[0], d
    assert (d[3] + d[4]) / 2 > (d[0] + d[1]) / 2, d
    if name in MONOTONE:
        # motion blur: CIFAR severities 3 and 4 differ only in a radius beyond the Gaussian's reach
        assert all(b > a or (name == "motion_blur" and b >= a - 1e-7) for a, b in itertools.pairwise(d)), d


def test_saturate_is_identity_on_grey() -> None:
    x = natural_images(2, 1, 16)
    assert torch.equal(corrupt(x, "saturate", 5, generator=gen(0)), x)


def test_scaling_rule_changes_blur_with_size() -> None:
    # the CIFAR table at 64 px blurs twice as far in pixels as at 32 px: a 64 px image made of
    # 2x2 blocks of a 32 px image, blurred, downsampled, is close to the 32 px blurred image
    x = natural_images(2, 3, 32)
    big = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    small_blur = corrupt(x, "gaussian_blur", 5, generator=gen(0))
    big_blur = corrupt(big, "gaussian_blur", 5, generator=gen(0))
    down = F.avg_pool2d(big_blur, 2)
    assert float((down - small_blur).abs().max()) < 0.02
    unscaled_like = F.avg_pool2d(corrupt(big, "gaussian_blur", 1, generator=gen(0)), 2)
    assert float((unscaled_like - small_blur).abs().max()) > 0.02


# --- bad input -------------------------------------------------------------------------------

def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="gaussian_noise.*zoom_blur|zoom_blur.*gaussian_noise") as e:
        corrupt(natural_images(1, 3, 16), "gaussian_noize", 1, generator=gen())
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("severity,error", [(0, InvalidParameterError), (6, InvalidParameterError),
                                            (-1, InvalidParameterError), (2.0, InvalidTypeError),
                                            (True, InvalidTypeError), ("3", InvalidTypeError)])
def test_bad_severity(severity: object, error: type) -> None:
    with pytest.raises(error, match="'severity'"):
        corrupt(natural_images(1, 3, 16), "fog", severity, generator=gen())  # type: ignore[arg-type]


@pytest.mark.parametrize("x,error,match", [
    (torch.full((1, 3, 16, 16), 1.5), InvalidParameterError, r"\[0, 1\]"),
    (torch.full((1, 3, 16, 16), -0.2), InvalidParameterError, r"\[0, 1\]"),
    (torch.full((1, 3, 16, 16), float("nan")), InvalidParameterError, "NaN"),
    (torch.rand(3, 16, 16), ShapeError, "N, C, H, W"),
    (torch.rand(1, 2, 16, 16), ShapeError, "channels"),
    (torch.rand(1, 16, 16, 3), ShapeError, "channels"),
    (torch.rand(1, 3, 4, 16), ShapeError, "at least 8x8"),
    ((torch.rand(1, 3, 16, 16) * 255).to(torch.uint8), InvalidTypeError, "float"),
    ("image", InvalidTypeError, "'x'"),
])
def test_bad_images(x: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as e:
        corrupt(x, "contrast", 1, generator=gen())  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


def test_bad_generator_and_preset() -> None:
    x = natural_images(1, 3, 16)
    with pytest.raises(InvalidTypeError, match="'generator'"):
        corrupt(x, "fog", 1, generator=None)  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="'preset'.*cifar"):
        corrupt(x, "fog", 1, generator=gen(), preset="svhn")


@pytest.mark.parametrize("preset,size", [("imagenet", 8), ("imagenet", 32), ("tinyimagenet", 8)])
def test_preset_that_does_not_fit(preset: str, size: int) -> None:
    with pytest.raises(InvalidParameterError, match="'preset'.*fits") as e:
        corrupt(natural_images(1, 3, size), "defocus_blur", 1, generator=gen(), preset=preset)
    assert "\n" not in str(e.value)


def test_preset_for() -> None:
    assert preset_for(8, 1) == "mnist" and preset_for(28, 1) == "mnist"
    assert preset_for(8, 3) == "cifar" and preset_for(32, 3) == "cifar" and preset_for(40, 1) == "cifar"
    assert preset_for(64, 3) == "tinyimagenet" and preset_for((224, 300), 3) == "imagenet"
    for size, ch in [(8, 1), (8, 3), (16, 3), (32, 3), (64, 1), (100, 3), (224, 3), (500, 3)]:
        preset = preset_for(size, ch)
        corrupt(torch.rand(1, ch, size, size), "brightness", 1, generator=gen(), preset=preset)
    with pytest.raises(InvalidParameterError, match="'channels'"):
        preset_for(32, 2)
    with pytest.raises(InvalidParameterError, match="'image_size'"):
        preset_for(0, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
def test_cuda_device_kept(name: str) -> None:  # pragma: no cover - runs on GPU machines
    x = natural_images(2, 3, 32).cuda()
    y = corrupt(x, name, 3, generator=torch.Generator(device="cuda").manual_seed(0))
    assert y.device == x.device and y.dtype == x.dtype
    z = corrupt(x, name, 3, generator=torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(y, z)
    cpu = corrupt(x.cpu(), name, 3, generator=torch.Generator().manual_seed(0))
    if name not in RANDOM:
        assert torch.allclose(y.cpu(), cpu, atol=1e-5)
