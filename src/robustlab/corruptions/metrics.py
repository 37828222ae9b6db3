"""Corruption metrics: corruption error, mCE (AlexNet-normalised), relative mCE, unnormalised mean CE.

The per-(corruption, severity) accuracies live in a :class:`CorruptionReport`; every metric is a
method of it, so one evaluation feeds every number a paper reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import (
    check_choice,
    check_generator,
    check_int,
    check_probability,
    fail,
)
from robustlab._constants import (
    ALEXNET_IMAGENET_C_ERRORS,
    ALEXNET_IMAGENET_CLEAN_ERROR,
    CORRUPTION_SEVERITIES,
    EVAL_BATCH_SIZE,
)
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError

__all__ = ["ALEXNET_ERRORS", "CorruptionReport", "evaluate_corruptions"]

#: AlexNet ImageNet-C errors per corruption (mean over severities); see ``_constants``.
ALEXNET_ERRORS: Mapping[str, float] = dict(ALEXNET_IMAGENET_C_ERRORS)


@dataclass(frozen=True, eq=False)
class CorruptionReport:
    """Accuracy of one model per (corruption, severity), plus its clean accuracy.

    Parameters
    ----------
    corruptions : tuple of str, length C
    severities : tuple of int, length S
    accuracy : ndarray of shape (C, S)
        ``accuracy[c, s]`` is the top-1 accuracy under ``corruptions[c]`` at ``severities[s]``.
    clean_accuracy : float
        Accuracy on the uncorrupted data (needed by the relative metrics).

    Notes
    -----
    With :math:`E_{s,c} = 1 - \\text{accuracy}[c, s]` and :math:`E_\\text{clean}` the clean error
    (Hendrycks & Dietterich, ICLR 2019, Sec. 3 "ImageNet-C Metrics"):

    * corruption error, unnormalised: :math:`\\bar E_c = \\frac{1}{S} \\sum_s E_{s,c}`
      (:meth:`corruption_errors`);
    * CE normalised by a baseline :math:`b` (AlexNet by default):
      :math:`CE_c = \\sum_s E_{s,c} / \\sum_s E^b_{s,c}`; the published baseline gives only
      :math:`\\bar E^b_c` (the mean over the five severities), so with all five severities
      :math:`CE_c = \\bar E_c / \\bar E^b_c`; mCE is the mean of :math:`CE_c` over corruptions;
    * relative CE: :math:`\\sum_s (E_{s,c} - E_\\text{clean}) / \\sum_s (E^b_{s,c} - E^b_\\text{clean})`
      = :math:`(\\bar E_c - E_\\text{clean}) / (\\bar E^b_c - E^b_\\text{clean})`; relative mCE
      is its mean;
    * unnormalised mean corruption error (CIFAR-10-C, as AugMix reports it, Hendrycks et al.
      ICLR 2020, Sec. 4.1): :math:`\\frac{1}{C}\\sum_c \\bar E_c`, the mean error over every
      (corruption, severity) cell.

    All metrics are fractions (multiply by 100 for the percentages papers print).

    References
    ----------
    D. Hendrycks and T. Dietterich. Benchmarking Neural Network Robustness to Common Corruptions
    and Perturbations. ICLR 2019.
    D. Hendrycks, N. Mu, E. D. Cubuk, B. Zoph, J. Gilmer, B. Lakshminarayanan. AugMix. ICLR 2020.

    Examples
    --------
    >>> import numpy as np
    >>> r = CorruptionReport(("fog",), (1, 2), np.array([[0.9, 0.7]]), clean_accuracy=0.95)
    >>> round(r.mean_corruption_error(), 3)
    0.2
    """

    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    accuracy: np.ndarray
    clean_accuracy: float

    def __post_init__(self) -> None:
        corruptions = tuple(self.corruptions)
        if not corruptions or any(not isinstance(c, str) for c in corruptions):
            fail("corruptions", "a non-empty sequence of str", self.corruptions, error=InvalidTypeError)
        if len(set(corruptions)) != len(corruptions):
            fail("corruptions", "distinct names", list(corruptions))
        severities = tuple(check_int("severities", s, low=1) for s in self.severities)
        if not severities or len(set(severities)) != len(severities):
            fail("severities", "a non-empty sequence of distinct integers", self.severities)
        acc = np.array(self.accuracy, dtype=np.float64)  # own copy: the report is immutable
        if acc.shape != (len(corruptions), len(severities)):
            raise ShapeError(
                f"The 'accuracy' parameter must have shape (C, S) = ({len(corruptions)}, {len(severities)}). "
                f"Got shape {acc.shape} instead.", expected=(len(corruptions), len(severities)),
                got=acc.shape)
        if not np.all(np.isfinite(acc)) or acc.min() < 0 or acc.max() > 1:
            fail("accuracy", "finite accuracies in [0, 1]", acc)
        acc.setflags(write=False)
        object.__setattr__(self, "corruptions", corruptions)
        object.__setattr__(self, "severities", severities)
        object.__setattr__(self, "accuracy", acc)
        object.__setattr__(self, "clean_accuracy", check_probability("clean_accuracy", self.clean_accuracy))

    # ------------------------------------------------------------------ errors
    @property
    def error(self) -> np.ndarray:
        """Error ``1 - accuracy``, shape ``(C, S)``."""
        return 1.0 - self.accuracy

    @property
    def clean_error(self) -> float:
        return 1.0 - self.clean_accuracy

    def corruption_errors(self) -> dict[str, float]:
        """Unnormalised corruption error per corruption: mean error over the severities."""
        return {c: float(e) for c, e in zip(self.corruptions, self.error.mean(axis=1))}

    def mean_corruption_error(self) -> float:
        """Unnormalised mean corruption error (CIFAR-10-C convention of AugMix): mean of all cells."""
        return float(self.error.mean())

    def _baseline(self, baseline: Mapping[str, float] | None, corruptions: Sequence[str] | None,
                  *, need_all_severities: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
        base = ALEXNET_ERRORS if baseline is None else _check_baseline(baseline)
        names = list(self.corruptions) if corruptions is None else [
            check_choice("corruptions", c, self.corruptions) for c in corruptions]
        missing = [c for c in names if c not in base]
        if missing:
            known = ", ".join(sorted(base))
            fail("corruptions", f"corruptions with a baseline error ({known}); pass corruptions=[...] "
                 "to choose a subset", ", ".join(missing), describe_got=False)
        if need_all_severities and baseline is None and set(self.severities) != set(CORRUPTION_SEVERITIES):
            fail("severities", "all of 1-5 for AlexNet-normalised metrics (the published AlexNet "
                 "errors average severities 1-5)", list(self.severities))
        rows = [self.corruptions.index(c) for c in names]
        return names, self.error[rows].mean(axis=1), np.array([base[c] for c in names])

    def ce(self, *, baseline: Mapping[str, float] | None = None,
           corruptions: Sequence[str] | None = None) -> dict[str, float]:
        """Baseline-normalised corruption error :math:`CE_c` per corruption (AlexNet by default).

        ``baseline`` maps corruption names to the baseline's mean error over the same severities.
        """
        names, err, base = self._baseline(baseline, corruptions, need_all_severities=True)
        return {c: float(v) for c, v in zip(names, err / base)}

    def mce(self, *, baseline: Mapping[str, float] | None = None,
            corruptions: Sequence[str] | None = None) -> float:
        """mCE: mean of :meth:`ce` over ``corruptions`` (default: all in the report)."""
        return float(np.mean(list(self.ce(baseline=baseline, corruptions=corruptions).values())))

    def relative_ce(self, *, baseline: Mapping[str, float] | None = None,
                    baseline_clean_error: float | None = None,
                    corruptions: Sequence[str] | None = None) -> dict[str, float]:
        """Relative CE per corruption: degradation over the clean error, relative to the baseline's."""
        names, err, base = self._baseline(baseline, corruptions, need_all_severities=True)
        if baseline is None and baseline_clean_error is None:
            base_clean = ALEXNET_IMAGENET_CLEAN_ERROR
        elif baseline_clean_error is None:
            fail("baseline_clean_error", "the baseline's clean error when a custom baseline is given",
                 None)
        else:
            base_clean = check_probability("baseline_clean_error", baseline_clean_error)
        gap = base - base_clean
        if np.any(gap <= 0):
            flat = ", ".join(c for c, g in zip(names, gap) if g <= 0)
            fail("corruptions", "corruptions whose baseline error exceeds the baseline clean error "
                 "(relative CE divides by that gap); pass corruptions=[...] to leave out", flat,
                 describe_got=False)
        return {c: float(v) for c, v in zip(names, (err - self.clean_error) / gap)}

    def relative_mce(self, *, baseline: Mapping[str, float] | None = None,
                     baseline_clean_error: float | None = None,
                     corruptions: Sequence[str] | None = None) -> float:
        """Relative mCE: mean of :meth:`relative_ce`."""
        values = self.relative_ce(baseline=baseline, baseline_clean_error=baseline_clean_error,
                                  corruptions=corruptions)
        return float(np.mean(list(values.values())))

    def as_baseline(self) -> dict[str, float]:
        """This report's mean error per corruption, usable as ``baseline=`` for another model
        (e.g. normalise an AugMix model by a standard model on CIFAR-10-C)."""
        return self.corruption_errors()

    def to_dict(self) -> dict[str, Any]:
        return {"corruptions": list(self.corruptions), "severities": list(self.severities),
                "accuracy": self.accuracy.tolist(), "clean_accuracy": self.clean_accuracy}


def _check_baseline(baseline: Any) -> dict[str, float]:
    if not isinstance(baseline, Mapping) or not baseline:
        fail("baseline", "a non-empty dict of corruption name -> baseline error", baseline,
             error=InvalidTypeError)
    out = {}
    for name, value in baseline.items():
        v = check_probability(f"baseline[{name!r}]", value)
        if v == 0:
            raise InvalidParameterError(
                f"The 'baseline' parameter must hold errors > 0 (they divide). Got 0 for {name!r} instead.")
        out[str(name)] = v
    return out


@torch.no_grad()
def evaluate_corruptions(
    model: Any,
    data: Any,
    *,
    corruptions: Sequence[str],
    severities: Sequence[int] = CORRUPTION_SEVERITIES,
    generator: torch.Generator,
    preset: str | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
) -> CorruptionReport:
    """Accuracy of ``model`` on ``data`` under each image corruption and severity.

    Parameters
    ----------
    model : nn.Module or callable
        Maps float images ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
    data : Dataset
        Image dataset.
    corruptions : sequence of str
        Names from :data:`robustlab.corruptions.IMAGE_CORRUPTIONS`.
    severities : sequence of int, default (1, 2, 3, 4, 5)
    generator : torch.Generator
        Source of the corruptions' randomness; the same generator state gives the same report.
    preset : {"cifar", "imagenet", "mnist"}, optional
        Parameter table; default ``preset_for(image size, channels)``.
    batch_size : int, default 512

    Returns
    -------
    CorruptionReport
    """
    from robustlab.corruptions.image import IMAGE_CORRUPTIONS, corrupt, preset_for
    from robustlab.data.dataset import Dataset
    from robustlab.models.inference import predict_logits

    if not isinstance(data, Dataset) or not data.is_image:
        fail("data", "an image Dataset", data, error=InvalidTypeError)
    check_generator("generator", generator)
    names = [check_choice("corruptions", c, IMAGE_CORRUPTIONS) for c in corruptions]
    sev = [check_int("severities", s, low=1, high=5) for s in severities]
    c, h, w = data.input_shape
    preset = preset_for(min(h, w), c) if preset is None else preset
    labels = data.labels
    clean = predict_logits(model, data, batch_size=batch_size).argmax(1)
    clean_acc = float((clean == labels).double().mean()) if len(labels) else 0.0
    acc = np.zeros((len(names), len(sev)))
    for i, name in enumerate(names):
        for j, s in enumerate(sev):
            acc[i, j] = batched_accuracy(
                model, data, lambda x, name=name, s=s: corrupt(x, name, s, generator=generator, preset=preset),
                batch_size)
    return CorruptionReport(tuple(names), tuple(sev), acc, clean_accuracy=clean_acc)


def batched_accuracy(model: Any, data: Any, corrupt_batch: Callable[[torch.Tensor], torch.Tensor],
                     batch_size: int) -> float:
    """Accuracy of ``model`` on ``data`` with each batch's inputs passed through ``corrupt_batch``
    (batches in order, so a shared generator is consumed the same way every time)."""
    from robustlab.models.inference import predict_logits

    correct = 0
    for batch in data.batches(batch_size):
        x = corrupt_batch(batch.inputs)
        pred = predict_logits(model, x, batch_size=batch_size, num_classes=data.num_classes).argmax(1)
        correct += int((pred == batch.labels).sum())
    return correct / max(len(data), 1)
