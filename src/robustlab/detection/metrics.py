"""Detection metrics: AUROC, AUPR-in, AUPR-out and FPR at 95% TPR, with the in-distribution as
the positive class and scores where higher = more in-distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import as_tensor, check_finite, check_tensor, fail
from robustlab._constants import DETECTION_TPR
from robustlab.errors import InvalidTypeError

__all__ = ["DetectionMetrics", "detection_metrics", "evaluate_detector"]


@dataclass(frozen=True)
class DetectionMetrics:
    """Threshold-free and fixed-TPR detection metrics (fractions in [0, 1]).

    Attributes
    ----------
    auroc : float
        Area under the ROC curve: P(score_in > score_out) + 0.5 P(tie).
    aupr_in : float
        Average precision with the in-distribution as positives (score as is).
    aupr_out : float
        Average precision with the out-distribution as positives (score negated).
    fpr_at_95_tpr : float
        Fraction of out inputs accepted as "in" at the largest threshold that accepts at least 95%
        of the in inputs (see :func:`detection_metrics`).
    num_in, num_out : int
    """

    auroc: float
    aupr_in: float
    aupr_out: float
    fpr_at_95_tpr: float
    num_in: int
    num_out: int


def _scores(name: str, s: Any) -> np.ndarray:
    t = check_tensor(name, as_tensor(name, s), ndim=1, dims="N")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        fail(name, "a float tensor of scores", t, error=InvalidTypeError)
    if t.numel() == 0:
        fail(name, "a tensor with at least one score", t)
    check_finite(name, t.to(torch.float64) if not t.is_floating_point() else t)
    return t.detach().cpu().to(torch.float64).numpy()


def detection_metrics(scores_in: Any, scores_out: Any) -> DetectionMetrics:
    """AUROC, AUPR-in, AUPR-out and FPR@95%TPR of a detector's scores.

    Parameters
    ----------
    scores_in : Tensor or ndarray, shape (N_in,)
        Scores of in-distribution inputs (positives). Higher = more in-distribution.
    scores_out : Tensor or ndarray, shape (N_out,)
        Scores of out-of-distribution (or adversarial) inputs (negatives).

    Returns
    -------
    DetectionMetrics

    Notes
    -----
    AUROC is ``sklearn.metrics.roc_auc_score`` (ties count one half), AUPR-in / AUPR-out are
    ``average_precision_score`` with in (score) / out (negated score) as positives.

    FPR at 95% TPR is exact, with no interpolation between ROC points: an input is accepted as
    "in" when its score is ``>= t``; with the in-scores sorted in decreasing order
    :math:`s_{(1)} \\ge \\dots \\ge s_{(n)}` the threshold is :math:`t = s_{(q)}`,
    :math:`q = \\lceil 0.95\\, n \\rceil`, the largest threshold whose TPR is at least 95%
    (ties at ``t`` can push the TPR above 95%), and the metric is the fraction of out-scores
    ``>= t``, the smallest FPR any threshold with TPR >= 95% achieves. (Linear interpolation of the
    ROC curve at TPR = 0.95 would describe a randomised detector; Hendrycks et al.'s
    ``fpr_and_fdr_at_recall`` likewise takes the first ROC point with recall >= 0.95.)

    Examples
    --------
    >>> m = detection_metrics([3.0, 2.0, 1.0], [0.0, 1.5])
    >>> round(m.auroc, 4), m.fpr_at_95_tpr
    (0.8333, 0.5)
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    s_in, s_out = _scores("scores_in", scores_in), _scores("scores_out", scores_out)
    y = np.concatenate([np.ones(len(s_in)), np.zeros(len(s_out))])
    s = np.concatenate([s_in, s_out])
    q = math.ceil(DETECTION_TPR * len(s_in) - 1e-9)  # guard 0.95 * 100 = 95.00000000000001
    t = np.sort(s_in)[::-1][max(q, 1) - 1]
    return DetectionMetrics(
        auroc=float(roc_auc_score(y, s)),
        aupr_in=float(average_precision_score(y, s)),
        aupr_out=float(average_precision_score(1 - y, -s)),
        fpr_at_95_tpr=float(np.mean(s_out >= t)),
        num_in=len(s_in),
        num_out=len(s_out),
    )


def evaluate_detector(detector: Any, model: Any, x_in: Any, x_out: Any) -> DetectionMetrics:
    """Score in and out inputs with a (fitted) detector and return :func:`detection_metrics`.

    ``x_out`` is any tensor of inputs: an OOD set, corrupted inputs, or adversarial examples
    (e.g. ``robustlab.adversarial.pgd(...).adv_inputs``).
    """
    if not callable(getattr(detector, "score", None)):
        fail("detector", "an object with a score(model, inputs) method (a robustlab.detection "
             "detector)", detector, error=InvalidTypeError)
    return detection_metrics(detector.score(model, x_in), detector.score(model, x_out))
