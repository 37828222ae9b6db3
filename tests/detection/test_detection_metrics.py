"""detection_metrics against direct NumPy computations; evaluate_detector; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.detection import (
    DetectionMetrics,
    MaxSoftmax,
    detection_metrics,
    evaluate_detector,
)
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError


def _auroc_pairs(s_in: np.ndarray, s_out: np.ndarray) -> float:
    diff = s_in[:, None] - s_out[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _fpr_at_tpr_by_thresholding(s_in: np.ndarray, s_out: np.ndarray, tpr: float = 0.95) -> float:
    best = 1.0
    for t in np.unique(np.concatenate([s_in, s_out])):
        if np.mean(s_in >= t) >= tpr:
            best = min(best, float(np.mean(s_out >= t)))
    return best


def _average_precision(s_pos: np.ndarray, s_neg: np.ndarray) -> float:
    """AP without ties: mean over positives of the precision at that positive's rank."""
    s = np.concatenate([s_pos, s_neg])
    y = np.concatenate([np.ones(len(s_pos)), np.zeros(len(s_neg))])
    order = np.argsort(-s, kind="stable")
    y = y[order]
    precision = np.cumsum(y) / np.arange(1, len(y) + 1)
    return float(precision[y == 1].mean())


@pytest.mark.parametrize("n_in,n_out,ties", [(20, 30, False), (100, 57, True), (37, 5, True), (1, 1, False),
                                             (200, 200, False)])
def test_metrics_match_numpy(n_in, n_out, ties):
    rng = np.random.default_rng(n_in + n_out)
    s_in = rng.normal(1.0, 1.0, n_in)
    s_out = rng.normal(0.0, 1.0, n_out)
    if ties:
        s_in, s_out = np.round(s_in * 2) / 2, np.round(s_out * 2) / 2
    m = detection_metrics(torch.from_numpy(s_in), torch.from_numpy(s_out))
    assert isinstance(m, DetectionMetrics) and (m.num_in, m.num_out) == (n_in, n_out)
    assert m.auroc == pytest.approx(_auroc_pairs(s_in, s_out), abs=1e-12)
    assert m.fpr_at_95_tpr == pytest.approx(_fpr_at_tpr_by_thresholding(s_in, s_out), abs=1e-12)
    if not ties:
        assert m.aupr_in == pytest.approx(_average_precision(s_in, s_out), abs=1e-12)
        assert m.aupr_out == pytest.approx(_average_precision(-s_out, -s_in), abs=1e-12)


def test_fpr_threshold_is_exact_not_interpolated():
    # 20 in-scores 1..20: TPR >= 95% needs the threshold at 2 (19 of 20 accepted)
    s_in = np.arange(1.0, 21.0)
    s_out = np.array([1.5, 2.0, 2.5, 0.0])
    m = detection_metrics(s_in, s_out)
    assert m.fpr_at_95_tpr == pytest.approx(2 / 4)
    # perfect separation: AUROC 1, FPR 0; reversed: AUROC 0, FPR 1
    assert detection_metrics([2.0, 3.0], [0.0, 1.0]).fpr_at_95_tpr == 0.0
    rev = detection_metrics([0.0, 1.0], [2.0, 3.0])
    assert (rev.auroc, rev.fpr_at_95_tpr) == (0.0, 1.0)


def test_higher_score_means_in_distribution():
    m = detection_metrics([5.0, 6.0, 7.0], [0.0, 1.0])
    assert m.auroc == 1.0 and m.aupr_in == 1.0 and m.aupr_out == 1.0


def test_evaluate_detector_equals_metrics_of_scores():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x_in, x_out = torch.randn(40, 5, generator=g), 3 * torch.randn(30, 5, generator=g)
    det = MaxSoftmax()
    got = evaluate_detector(det, model, x_in, x_out)
    assert got == detection_metrics(det.score(model, x_in), det.score(model, x_out))


@pytest.mark.parametrize("s_in,s_out,error,word", [
    ([1.0, float("nan")], [0.0], InvalidParameterError, "'scores_in'"),
    ([1.0], [float("inf")], InvalidParameterError, "'scores_out'"),
    ([], [0.0], InvalidParameterError, "'scores_in'"),
    ([[1.0, 2.0]], [0.0], ShapeError, "'scores_in'"),
    ("abc", [0.0], InvalidTypeError, "'scores_in'"),
])
def test_metrics_bad_input(s_in, s_out, error, word):
    with pytest.raises(error) as info:
        detection_metrics(s_in, s_out)
    assert word in str(info.value) and "\n" not in str(info.value)


def test_evaluate_detector_rejects_non_detector():
    with pytest.raises(InvalidTypeError, match="'detector'"):
        evaluate_detector(object(), torch.nn.Identity(), torch.zeros(2, 2), torch.zeros(2, 2))
