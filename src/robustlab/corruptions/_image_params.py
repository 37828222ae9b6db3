"""Parameter tables of the ImageNet-C family of corruptions, one per named preset.

Every number here is a published fact, copied from the generation scripts of Hendrycks &
Dietterich (2019), github.com/hendrycks/robustness, folder ``ImageNet-C/create_c/``:

- ``cifar``: ``make_cifar_c.py`` (32 px; the script that produced CIFAR-10-C / CIFAR-100-C),
- ``tinyimagenet``: ``make_tinyimagenet_c.py`` (64 px; Tiny-ImageNet-C),
- ``imagenet``: ``make_imagenet_c.py`` (224 px; ImageNet-C). The same table ships in
  ``imagecorruptions/corruptions.py`` (Michaelis et al., 2019), except that package's
  ``elastic_transform`` (a different, size-relative formula) — we keep the published one,
- ``mnist``: ``corruptions.py`` of github.com/google-research/mnist-c (Mu & Gilmer, 2019), which
  applies the ImageNet table unchanged to 28 px MNIST digits (its ``elastic_transform`` uses
  28 instead of 244 as the size constant).

Each entry is the list the reference indexes with ``[severity - 1]``; names of tuple fields follow
the reference's comments. The function named in each comment is the one in those files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["PRESETS", "Preset"]


@dataclass(frozen=True)
class Preset:
    """One parameter table and the image size it was written for.

    Attributes
    ----------
    name : str
        Preset name.
    size : int
        Image side (px) the table was written for; spatial parameters scale with
        ``min(H, W) / size``.
    table : Mapping[str, tuple]
        Corruption name -> five per-severity parameter entries.
    fog_map_ratio : float
        Side of the plasma-fractal map over the image side (``fog``: 256/224 for ImageNet,
        1 for CIFAR, 256/28 for MNIST-C).
    frost_zoom : float
        Frost-photo pixels per image pixel (``frost`` resizes the photo by 1/frost_zoom before
        cropping: 0.2 for CIFAR, 0.3 for Tiny-ImageNet, 1 for ImageNet and MNIST-C).
    reference : str
        File the table comes from.
    """

    name: str
    size: int
    table: Mapping[str, tuple[Any, ...]]
    fog_map_ratio: float
    frost_zoom: float
    reference: str


# make_cifar_c.py (hendrycks/robustness, ImageNet-C/create_c/), one function per key.
_CIFAR = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    # (sigma, max_delta, iterations)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # (disk radius, alias_blur)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # (radius, sigma) of ImageMagick's MotionBlurImage
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    # np.arange(start, stop, step) of zoom factors
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    # (loc, scale, zoom, threshold, motion radius, motion sigma, blend)
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    # (image weight, frost weight)
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    # (fog strength, wibble decay)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    # (loc, scale, sigma, threshold, intensity or mud sigma, mode 0=water 1=mud)
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    # (saturation factor, saturation offset)
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    # (alpha, sigma, affine) as fractions of IMSIZE = 32
    "elastic_transform": tuple(
        tuple(32 * v for v in row)
        for row in ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
}

# make_tinyimagenet_c.py (hendrycks/robustness, ImageNet-C/create_c/).
_TINY = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.15, 0.18),
    "shot_noise": (250, 100, 50, 30, 15),
    "impulse_noise": (0.01, 0.02, 0.05, 0.08, 0.14),
    "speckle_noise": (0.15, 0.2, 0.25, 0.3, 0.35),
    "gaussian_blur": (0.5, 0.75, 1.0, 1.25, 1.5),
    "glass_blur": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
    "defocus_blur": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
    "motion_blur": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.8),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6),
    ),
    "frost": ((1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)),
    "fog": ((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.6, 0),
        (0.65, 0.1, 0.8, 0.7, 0.6, 0),
        (0.65, 0.3, 1, 0.69, 0.6, 0),
        (0.65, 0.1, 0.7, 0.68, 0.6, 1),
        (0.65, 0.1, 0.5, 0.67, 0.6, 1),
    ),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
    "elastic_transform": tuple(
        tuple(64 * v for v in row)
        for row in ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03), (0.16, 0.03, 0.02))
    ),
    "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
    "jpeg_compression": (65, 58, 50, 40, 25),
}

# make_imagenet_c.py (hendrycks/robustness, ImageNet-C/create_c/); identical to
# imagecorruptions/corruptions.py except elastic_transform (see module docstring).
_IMAGENET = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    "spatter": (
        (0.65, 0.3, 4, 0.69, 0.6, 0),
        (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    # "244 should have been 224, but ultimately nothing is incorrect" (comment in the reference)
    "elastic_transform": tuple(
        tuple(244 * v for v in row)
        for row in ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))
    ),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
}

# google-research/mnist-c corruptions.py: the ImageNet table, elastic with 28 for the size constant.
_MNIST = {
    **_IMAGENET,
    "elastic_transform": tuple(
        tuple(28 * v for v in row)
        for row in ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))
    ),
}

_REPO = "github.com/hendrycks/robustness ImageNet-C/create_c/"

PRESETS: Mapping[str, Preset] = MappingProxyType({
    "cifar": Preset("cifar", 32, MappingProxyType(_CIFAR), 1.0, 5.0, _REPO + "make_cifar_c.py"),
    "tinyimagenet": Preset("tinyimagenet", 64, MappingProxyType(_TINY), 1.0, 1 / 0.3,
                           _REPO + "make_tinyimagenet_c.py"),
    "imagenet": Preset("imagenet", 224, MappingProxyType(_IMAGENET), 256 / 224, 1.0,
                       _REPO + "make_imagenet_c.py"),
    "mnist": Preset("mnist", 28, MappingProxyType(_MNIST), 256 / 28, 1.0,
                    "github.com/google-research/mnist-c corruptions.py"),
})
