"""Procedural frost textures for the ``frost`` corruption (private).

The reference overlays random crops of six frost *photographs* shipped with ImageNet-C (we do not
bundle third-party images). Instead each image gets a synthetic ice texture:

- a style drawn uniformly from five, one per photograph the reference draws from
  (``np.random.randint(5)`` picks frost1..frost5), carrying that photograph's per-channel mean and
  standard deviation (measured once on the photographs, RGB in [0, 1]);
- a structure field: a smooth Gaussian random field (correlation ~40 photo pixels) plus two
  layers of *ridged* band-limited noise (``(1 - |n|)^3``: thin bright vein networks, ~6 and ~16
  photo pixels), standardised, shared by the three channels;
- scaled to the image so one image pixel covers as many photograph pixels as in the reference
  (CIFAR resizes the photo by 0.2, Tiny-ImageNet by 0.3, ImageNet and MNIST-C use it as is).

What matches the reference: the blend formula, the parameter table, the per-channel brightness,
tint and contrast of the overlay. What differs: the crystal shapes (random veins, not
photographed ice), and the overlay is periodic-noise based rather than a crop of a fixed image.
"""

from __future__ import annotations

import math

import torch

from robustlab.corruptions._ops import randint

# Per-channel (mean, std) of frost1.png .. frost5.jpg in RGB, [0, 1] (frost2 and frost3 are
# the same photograph in the reference's folder).
FROST_STYLES = (
    ((0.305, 0.585, 0.650), (0.106, 0.065, 0.060)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.540, 0.599, 0.648), (0.112, 0.112, 0.117)),
    ((0.441, 0.484, 0.528), (0.174, 0.170, 0.163)),
)
# Length scales in photograph pixels: smooth shading, fine veins, coarse veins.
_SCALES_PHOTO_PX = (40.0, 6.0, 16.0)
_WEIGHTS = (0.6, 1.0, 0.7)


def _field(n: int, h: int, w: int, length: float, generator: torch.Generator,
           dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zero-mean, unit-std Gaussian random field with Gaussian correlation of std ``length`` px."""
    white = torch.randn((n, h, w), generator=generator, device=generator.device, dtype=torch.float32)
    spec = torch.fft.rfft2(white.to(device))
    fy = torch.fft.fftfreq(h, device=device, dtype=torch.float32)[:, None]
    fx = torch.fft.rfftfreq(w, device=device, dtype=torch.float32)[None, :]
    gain = torch.exp(-2 * math.pi ** 2 * (fx ** 2 + fy ** 2) * length ** 2)
    field = torch.fft.irfft2(spec.mul_(gain), s=(h, w))
    return _standardise_(field).to(dtype)


def _standardise_(t: torch.Tensor) -> torch.Tensor:
    """Subtract the per-map mean and divide by the per-map (Bessel) std, in place, (N, H, W).

    ``Tensor.std`` over two dims is a slow reduction on CPU; the mean and the sum of squares
    are two fast ones.
    """
    flat = t.reshape(t.shape[0], -1)
    flat.sub_(flat.mean(dim=1, keepdim=True))
    var = torch.linalg.vector_norm(flat, dim=1, keepdim=True).square_() / max(flat.shape[1] - 1, 1)
    flat.div_(var.sqrt_().clamp_min_(1e-12))
    return t


def frost_texture(n: int, h: int, w: int, photo_px_per_image_px: float, generator: torch.Generator,
                  dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``n`` RGB frost overlays (N, 3, H, W) in [0, 1]."""
    style = randint(0, len(FROST_STYLES), (n,), generator, device)
    lengths = [s / photo_px_per_image_px for s in _SCALES_PHOTO_PX]
    t = _field(n, h, w, lengths[0], generator, dtype, device).mul_(_WEIGHTS[0])
    for length, weight in zip(lengths[1:], _WEIGHTS[1:]):
        t.add_(_ridged_(_field(n, h, w, length, generator, dtype, device)), alpha=weight)
    t = _standardise_(t)
    means = torch.tensor([m for m, _ in FROST_STYLES], dtype=dtype, device=device)[style]
    stds = torch.tensor([s for _, s in FROST_STYLES], dtype=dtype, device=device)[style]
    tex = torch.addcmul(means[:, :, None, None], stds[:, :, None, None], t[:, None])
    return tex.clamp_(0, 1)


def _ridged_(field: torch.Tensor) -> torch.Tensor:
    """``(1 - min(|field|, 1))^3`` in place: thin bright ridges along the field's zero lines."""
    ridge = field.abs_().clamp_(max=1).neg_().add_(1)
    return ridge.mul_(ridge.square())
