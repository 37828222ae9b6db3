"""Corruption metrics: known answers on hand-made error tables, AlexNet constants, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab._constants import ALEXNET_IMAGENET_C_ERRORS, ALEXNET_IMAGENET_CLEAN_ERROR
from robustlab.corruptions import ALEXNET_ERRORS, CorruptionReport, evaluate_corruptions
from robustlab.data import Dataset
from robustlab.errors import InvalidParameterError, ShapeError, UnknownNameError

NAMES = tuple(ALEXNET_IMAGENET_C_ERRORS)


def test_alexnet_constants_are_the_published_ones() -> None:
    # Hendrycks & Dietterich 2019 / github.com/hendrycks/robustness (as reused by AugMix).
    assert len(ALEXNET_ERRORS) == 15
    assert ALEXNET_ERRORS["gaussian_noise"] == 0.886428
    assert ALEXNET_ERRORS["impulse_noise"] == 0.922640
    assert ALEXNET_ERRORS["brightness"] == 0.564592
    assert ALEXNET_ERRORS["jpeg_compression"] == 0.606500
    # the list in AugMix's imagenet.py, in its corruption order
    order = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
             "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
             "jpeg_compression")
    published = [0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816, 0.826572,
                 0.819324, 0.564592, 0.853204, 0.646056, 0.717840, 0.606500]
    assert dict(zip(order, published)) == dict(ALEXNET_ERRORS)
    assert ALEXNET_IMAGENET_CLEAN_ERROR == pytest.approx(0.4345)


def test_alexnet_itself_scores_100() -> None:
    acc = np.array([[1 - ALEXNET_ERRORS[c]] * 5 for c in NAMES])
    r = CorruptionReport(NAMES, (1, 2, 3, 4, 5), acc, clean_accuracy=1 - ALEXNET_IMAGENET_CLEAN_ERROR)
    assert r.mce() == pytest.approx(1.0)
    assert r.relative_mce() == pytest.approx(1.0)


def test_hand_computed_table() -> None:
    # two corruptions, five severities; errors chosen by hand
    err = np.array([[0.1, 0.2, 0.3, 0.4, 0.5],    # mean 0.3
                    [0.05, 0.05, 0.1, 0.1, 0.2]])  # mean 0.1
    r = CorruptionReport(("fog", "contrast"), (1, 2, 3, 4, 5), 1 - err, clean_accuracy=0.95)
    assert r.corruption_errors() == pytest.approx({"fog": 0.3, "contrast": 0.1})
    assert r.mean_corruption_error() == pytest.approx(0.2)
    ce = r.ce()
    assert ce["fog"] == pytest.approx(0.3 / 0.819324)
    assert ce["contrast"] == pytest.approx(0.1 / 0.853204)
    assert r.mce() == pytest.approx((0.3 / 0.819324 + 0.1 / 0.853204) / 2)
    rel = r.relative_ce()
    assert rel["fog"] == pytest.approx((0.3 - 0.05) / (0.819324 - 0.4345))
    assert r.relative_mce() == pytest.approx(((0.3 - 0.05) / (0.819324 - 0.4345)
                                              + (0.1 - 0.05) / (0.853204 - 0.4345)) / 2)
    # a custom baseline (e.g. a standard model normalising an AugMix model on CIFAR-10-C)
    base = CorruptionReport(("fog", "contrast"), (1, 2, 3, 4, 5), 1 - 2 * err, clean_accuracy=0.9)
    assert r.mce(baseline=base.as_baseline()) == pytest.approx(0.5)
    assert r.relative_mce(baseline=base.as_baseline(), baseline_clean_error=0.1) == pytest.approx(
        ((0.3 - 0.05) / (0.6 - 0.1) + (0.1 - 0.05) / (0.2 - 0.1)) / 2)
    assert r.mce(corruptions=["fog"]) == pytest.approx(0.3 / 0.819324)


def test_report_is_immutable_and_copies() -> None:
    acc = np.full((1, 2), 0.5)
    r = CorruptionReport(("fog",), (1, 2), acc, clean_accuracy=0.9)
    acc[0, 0] = 0.0
    assert r.accuracy[0, 0] == 0.5
    with pytest.raises(ValueError):
        r.accuracy[0, 0] = 0.1


def test_bad_input() -> None:
    with pytest.raises(ShapeError, match="accuracy"):
        CorruptionReport(("fog",), (1, 2), np.zeros((2, 2)), clean_accuracy=0.9)
    with pytest.raises(InvalidParameterError, match="accuracy"):
        CorruptionReport(("fog",), (1,), np.array([[1.5]]), clean_accuracy=0.9)
    r = CorruptionReport(("speckle_noise",), (1, 2, 3, 4, 5), np.full((1, 5), 0.5), clean_accuracy=0.9)
    with pytest.raises(InvalidParameterError, match="baseline error"):
        r.mce()
    assert r.mean_corruption_error() == pytest.approx(0.5)
    partial = CorruptionReport(("fog",), (1, 2), np.full((1, 2), 0.5), clean_accuracy=0.9)
    with pytest.raises(InvalidParameterError, match="severities"):
        partial.mce()
    with pytest.raises(UnknownNameError, match="fog"):
        partial.mce(corruptions=["snow"])
    with pytest.raises(InvalidParameterError, match="baseline_clean_error"):
        partial.relative_mce(baseline={"fog": 0.5})
    # relative CE divides by the baseline's degradation: none means undefined, named in the error
    with pytest.raises(InvalidParameterError, match="Got fog instead"):
        partial.relative_mce(baseline={"fog": 0.2}, baseline_clean_error=0.2)


def test_evaluate_corruptions_on_a_tiny_model() -> None:
    torch.manual_seed(0)
    x = torch.rand(30, 1, 8, 8)
    labels = (x.mean(dim=(1, 2, 3)) > 0.5).long()

    def model(inputs: torch.Tensor) -> torch.Tensor:
        m = inputs.mean(dim=(1, 2, 3))
        return torch.stack([0.5 - m, m - 0.5], 1)

    data = Dataset(x, labels)
    r = evaluate_corruptions(model, data, corruptions=["brightness", "contrast"], severities=[1, 5],
                             generator=torch.Generator().manual_seed(0))
    assert r.corruptions == ("brightness", "contrast") and r.severities == (1, 5)
    assert r.clean_accuracy == 1.0
    # brightness makes every image brighter: accuracy falls toward the share of class 1
    assert r.accuracy[0, 1] <= r.accuracy[0, 0]
    assert r.accuracy[0, 1] == pytest.approx(float(labels.double().mean()), abs=0.2)
