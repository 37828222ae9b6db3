"""Frequency-band noise (critical-band masking) and a model's spatial-frequency channel profile.

Subramanian et al. (2023) measure the "spatial-frequency channel" of a network the way
psychophysics measures human vision: add Gaussian noise that is band-pass filtered to one octave
around a centre frequency (cycles per image) and find which bands hurt recognition most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import (
    check_generator,
    check_images,
    check_int,
    check_number,
    fail,
)
from robustlab._constants import EVAL_BATCH_SIZE
from robustlab.errors import InvalidParameterError, InvalidTypeError

__all__ = [
    "FrequencyProfile",
    "band_noise",
    "default_center_frequencies",
    "frequency_band_noise",
    "spatial_frequency_profile",
]


def _radial_frequency(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Radial frequency in cycles per image of every ``rfft2`` coefficient, shape ``(H, W//2+1)``."""
    fy = torch.fft.fftfreq(h, d=1.0 / h, device=device, dtype=torch.float64)
    fx = torch.fft.rfftfreq(w, d=1.0 / w, device=device, dtype=torch.float64)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def _band_mask(h: int, w: int, center: float, octaves: float, device: torch.device) -> torch.Tensor:
    f = _radial_frequency(h, w, device)
    lo, hi = center * 2.0 ** (-octaves / 2), center * 2.0 ** (octaves / 2)
    return ((f >= lo) & (f < hi)).to(torch.float64)


def _check_band(center_frequency: Any, bandwidth_octaves: Any, h: int, w: int) -> tuple[float, float]:
    center = check_number("center_frequency", center_frequency, low=0.0, low_inclusive=False)
    octaves = check_number("bandwidth_octaves", bandwidth_octaves, low=0.0, low_inclusive=False)
    f = _radial_frequency(h, w, torch.device("cpu"))
    lo, hi = center * 2.0 ** (-octaves / 2), center * 2.0 ** (octaves / 2)
    if not bool(((f >= lo) & (f < hi)).any()):
        nyquist = math.hypot(h // 2, w // 2)
        raise InvalidParameterError(
            f"The 'center_frequency' parameter must give a band [{lo:.3g}, {hi:.3g}) cycles/image that "
            f"contains frequencies of a {h}x{w} image (up to {nyquist:.3g}). Got {center:g} instead.")
    return center, octaves


def band_noise(shape: Sequence[int], center_frequency: float, *, std: float, generator: torch.Generator,
               bandwidth_octaves: float = 1.0, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gaussian noise band-pass filtered to ``bandwidth_octaves`` around ``center_frequency``.

    Parameters
    ----------
    shape : (N, H, W)
        Number of independent noise images and their size.
    center_frequency : float > 0
        Geometric centre of the band, in cycles per image.
    std : float >= 0
        Standard deviation (RMS) of each returned noise image, exactly (after filtering).
    generator : torch.Generator
    bandwidth_octaves : float > 0, default 1.0
        The band keeps radial frequencies ``f`` with
        ``center * 2**(-b/2) <= f < center * 2**(b/2)``.
    device, dtype : optional
        Of the result (default CPU, float32).

    Returns
    -------
    Tensor of shape (N, H, W)

    Notes
    -----
    White Gaussian noise ``z`` is transformed with ``rfft2``, multiplied by the ideal annular
    mask of the band, transformed back, then each image is centred and scaled to RMS ``std``
    (Subramanian et al. 2023, Sec. 2 "critical-band masking"). Filtering in float64 keeps the
    band's energy exact.
    """
    if len(shape) != 3:
        fail("shape", "(N, H, W)", tuple(shape))
    n, h, w = (check_int("shape", s, low=1) for s in shape)
    std = check_number("std", std, low=0.0)
    check_generator("generator", generator)
    center, octaves = _check_band(center_frequency, bandwidth_octaves, h, w)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return _band_noise_impl(n, h, w, center, octaves, std, generator, dev, dtype)


def _band_noise_impl(n: int, h: int, w: int, center: float, octaves: float, std: float,
                     generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    z = torch.randn((n, h, w), generator=generator, device=generator.device, dtype=torch.float64).to(device)
    spectrum = torch.fft.rfft2(z) * _band_mask(h, w, center, octaves, device)
    noise = torch.fft.irfft2(spectrum, s=(h, w))
    noise = noise - noise.mean(dim=(1, 2), keepdim=True)
    rms = noise.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-12)
    return (noise * (std / rms)).to(dtype)


def frequency_band_noise(x: Any, center_frequency: float, *, std: float, generator: torch.Generator,
                         bandwidth_octaves: float = 1.0) -> torch.Tensor:
    """Add one-octave band-pass Gaussian noise to images (critical-band masking).

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), float in [0, 1]
    center_frequency : float > 0
        Band centre in cycles per image (the image's full height/width is one "image").
    std : float >= 0
        RMS contrast of the noise (its standard deviation, in [0, 1] intensity units).
    generator : torch.Generator
    bandwidth_octaves : float > 0, default 1.0

    Returns
    -------
    Tensor of shape (N, C, H, W), clipped to [0, 1], on the input's device and dtype.

    Notes
    -----
    ``x' = clip(x + n, 0, 1)`` where ``n`` comes from :func:`band_noise`, one independent noise
    image per example, *the same for every channel* (achromatic noise, as luminance noise in the
    psychophysics the method comes from). Clipping moves a little energy out of the band when
    ``x + n`` leaves [0, 1]; measure the band on :func:`band_noise` itself.

    References
    ----------
    A. Subramanian, E. Sizikova, N. J. Majaj, D. G. Pelli. Spatial-frequency channels, shape bias,
    and adversarial robustness. NeurIPS 2023.
    """
    x = check_images("x", x)
    n, _, h, w = x.shape
    std = check_number("std", std, low=0.0)
    check_generator("generator", generator)
    center, octaves = _check_band(center_frequency, bandwidth_octaves, h, w)
    noise = _band_noise_impl(n, h, w, center, octaves, std, generator, x.device, x.dtype)
    return (x + noise[:, None]).clamp_(0.0, 1.0)


def default_center_frequencies(image_size: int) -> tuple[float, ...]:
    """Octave-spaced centres from 1 cycle/image up to the Nyquist frequency ``image_size / 2``."""
    size = check_int("image_size", image_size, low=2)
    k = math.floor(math.log2(size / 2))
    return tuple(float(2 ** i) for i in range(k + 1))


@dataclass(frozen=True, eq=False)
class FrequencyProfile:
    """Accuracy of a model under band noise at each centre frequency (its "spatial-frequency channel").

    Attributes
    ----------
    center_frequencies : ndarray of shape (F,)
        Cycles per image.
    accuracy : ndarray of shape (F,)
    clean_accuracy : float
    std : float
        Noise RMS contrast used.
    bandwidth_octaves : float
    """

    center_frequencies: np.ndarray
    accuracy: np.ndarray
    clean_accuracy: float
    std: float
    bandwidth_octaves: float

    @property
    def most_harmful_frequency(self) -> float:
        """Centre frequency with the lowest accuracy (the channel's peak)."""
        return float(self.center_frequencies[int(np.argmin(self.accuracy))])


@torch.no_grad()
def spatial_frequency_profile(model: Any, data: Any, *, std: float, generator: torch.Generator,
                              center_frequencies: Sequence[float] | None = None,
                              bandwidth_octaves: float = 1.0,
                              batch_size: int = EVAL_BATCH_SIZE) -> FrequencyProfile:
    """Accuracy of ``model`` on ``data`` with band noise at each centre frequency.

    Parameters
    ----------
    model : nn.Module or callable
    data : Dataset
        Image dataset.
    std : float >= 0
        Noise RMS contrast. Subramanian et al. raise it per band until accuracy halves (a
        threshold); this function measures accuracy at a fixed contrast, which gives the same
        ordering of bands (the channel's shape) at a fraction of the cost.
    generator : torch.Generator
    center_frequencies : sequence of float, optional
        Default :func:`default_center_frequencies` of the smaller image side.
    bandwidth_octaves : float, default 1.0
    batch_size : int, default 512

    Returns
    -------
    FrequencyProfile
    """
    from robustlab.corruptions.metrics import batched_accuracy
    from robustlab.data.dataset import Dataset
    from robustlab.models.inference import predict_logits

    if not isinstance(data, Dataset) or not data.is_image:
        fail("data", "an image Dataset", data, error=InvalidTypeError)
    check_generator("generator", generator)
    std = check_number("std", std, low=0.0)
    _, h, w = data.input_shape
    freqs = default_center_frequencies(min(h, w)) if center_frequencies is None else tuple(
        _check_band(f, bandwidth_octaves, h, w)[0] for f in center_frequencies)
    labels = data.labels
    clean = predict_logits(model, data, batch_size=batch_size).argmax(1)
    acc = [batched_accuracy(model, data, lambda x, f=f: frequency_band_noise(
               x, f, std=std, generator=generator, bandwidth_octaves=bandwidth_octaves), batch_size)
           for f in freqs]
    return FrequencyProfile(np.array(freqs), np.array(acc),
                            float((clean == labels).double().mean()) if len(labels) else 0.0,
                            std, float(bandwidth_octaves))
