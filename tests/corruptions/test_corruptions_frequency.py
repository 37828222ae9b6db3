"""Frequency-band noise: energy in the requested band (FFT), exact RMS, determinism, profile."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustlab.corruptions import (
    band_noise,
    default_center_frequencies,
    frequency_band_noise,
    spatial_frequency_profile,
)
from robustlab.data import Dataset
from robustlab.errors import InvalidParameterError, InvalidTypeError


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _band_energy_fraction(noise: np.ndarray, lo: float, hi: float) -> float:
    """Fraction of the (full, two-sided) FFT energy at radial frequencies in [lo, hi) cycles/image."""
    _n, h, w = noise.shape
    spec = np.abs(np.fft.fft2(noise)) ** 2
    fy = np.fft.fftfreq(h) * h
    fx = np.fft.fftfreq(w) * w
    f = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    inside = (f >= lo) & (f < hi)
    return float(spec[:, inside].sum() / spec.sum())


@pytest.mark.parametrize("center", [2.0, 4.0, 8.0])
@pytest.mark.parametrize("octaves", [1.0, 0.5])
def test_energy_concentrated_in_band(center: float, octaves: float) -> None:
    noise = band_noise((16, 32, 40), center, std=0.1, bandwidth_octaves=octaves, generator=_g()).double().numpy()
    lo, hi = center * 2 ** (-octaves / 2), center * 2 ** (octaves / 2)
    assert _band_energy_fraction(noise, lo, hi) > 0.999
    # and essentially none one octave away on either side
    assert _band_energy_fraction(noise, lo / 2, lo) < 1e-3
    assert _band_energy_fraction(noise, hi, hi * 2) < 1e-3


def test_rms_contrast_is_exact() -> None:
    noise = band_noise((8, 32, 32), 4.0, std=0.07, generator=_g())
    rms = noise.double().pow(2).mean(dim=(1, 2)).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, 0.07), atol=1e-6)
    assert torch.allclose(noise.double().mean(dim=(1, 2)), torch.zeros(8, dtype=torch.float64), atol=1e-7)


def test_images_get_the_same_noise_in_every_channel_and_stay_in_range() -> None:
    x = torch.full((4, 3, 32, 32), 0.5)
    y = frequency_band_noise(x, 4.0, std=0.05, generator=_g())
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    assert torch.equal(y, frequency_band_noise(x, 4.0, std=0.05, generator=_g()))
    assert not torch.equal(y, frequency_band_noise(x, 4.0, std=0.05, generator=_g(1)))
    # no clipping at this contrast: the added noise is the band noise itself
    assert _band_energy_fraction((y - x)[:, 0].double().numpy(), 4 / math.sqrt(2), 4 * math.sqrt(2)) > 0.999
    big = frequency_band_noise(torch.rand(2, 1, 16, 16), 2.0, std=5.0, generator=_g())
    assert float(big.min()) >= 0 and float(big.max()) <= 1


def test_default_centres() -> None:
    assert default_center_frequencies(8) == (1.0, 2.0, 4.0)
    assert default_center_frequencies(32) == (1.0, 2.0, 4.0, 8.0, 16.0)


def test_profile_on_a_tiny_model() -> None:
    torch.manual_seed(0)
    x = torch.rand(40, 1, 8, 8)
    labels = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    data = Dataset(x, labels)

    def model(inputs: torch.Tensor) -> torch.Tensor:  # thresholds the mean brightness
        m = inputs.mean(dim=(1, 2, 3))
        return torch.stack([0.5 - m, m - 0.5], 1) * 100

    prof = spatial_frequency_profile(model, data, std=0.2, generator=_g())
    assert prof.center_frequencies.tolist() == [1.0, 2.0, 4.0]
    assert prof.accuracy.shape == (3,) and prof.clean_accuracy == 1.0
    assert np.all((prof.accuracy >= 0) & (prof.accuracy <= 1))
    # zero-mean band noise barely moves the mean; clipping does a little
    assert prof.accuracy.min() > 0.5
    assert prof.most_harmful_frequency in prof.center_frequencies


def test_bad_input() -> None:
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(InvalidParameterError, match="center_frequency"):
        frequency_band_noise(x, 50.0, std=0.1, generator=_g())
    with pytest.raises(InvalidParameterError, match="center_frequency"):
        frequency_band_noise(x, 0.0, std=0.1, generator=_g())
    with pytest.raises(InvalidParameterError, match="std"):
        frequency_band_noise(x, 2.0, std=-1.0, generator=_g())
    with pytest.raises(InvalidTypeError, match="generator"):
        frequency_band_noise(x, 2.0, std=0.1, generator=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="N, C, H, W"):
        frequency_band_noise(x[0], 2.0, std=0.1, generator=_g())
