"""Calibration metrics on predicted probabilities: ECE, MCE, classwise ECE, Brier score, NLL.

Every metric takes ``pred_probs`` of shape ``(N, K)`` (rows summing to one, checked by
:func:`robustlab._checks.check_pred_probs`) and integer ``labels`` of shape ``(N,)``, as a
``torch.Tensor`` or a NumPy array, and returns a Python ``float``. The arithmetic is float64 NumPy
whatever the input dtype, so the numbers do not depend on the device.

Binning (shared by ECE, MCE, classwise ECE and :func:`reliability_diagram`):

* ``binning="width"``: ``n_bins`` equal-width bins :math:`I_m = ((m-1)/M, m/M]`, as in Guo et al.
  (2017), Sec. 2; a confidence of exactly 0 goes into the first bin.
* ``binning="mass"``: equal-mass ("adaptive") bins, Nixon et al. (2019), Sec. 4 (ACE): the
  examples sorted by confidence (stable sort) are split into ``n_bins`` consecutive groups whose
  sizes differ by at most one (:func:`numpy.array_split`). Examples with tied confidences can fall
  into two neighbouring bins. With fewer examples than bins, some bins are empty.

Empty bins contribute nothing (their weight :math:`|B_m|/n` is zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_choice, check_int, check_labels, check_pred_probs
from robustlab._constants import CALIBRATION_N_BINS, NLL_PROB_FLOOR

__all__ = [
    "BINNINGS",
    "CALIBRATION_NORMS",
    "ReliabilityDiagram",
    "brier_score",
    "classwise_calibration_error",
    "expected_calibration_error",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "reliability_diagram",
]

#: Valid values of ``binning``.
BINNINGS = ("width", "mass")
#: Valid values of ``norm``: L1 is the usual ECE, L2 the RMS calibration error, "max" the MCE.
CALIBRATION_NORMS = ("l1", "l2", "max")


# --- validation -------------------------------------------------------------------------------------
def _check_probs_labels(pred_probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = check_pred_probs("pred_probs", pred_probs)
    y = check_labels("labels", labels, num_classes=p.shape[1], n=p.shape[0])
    return p.detach().cpu().to(dtype=torch.float64).numpy(), y.detach().cpu().numpy()


def _check_binning(n_bins: Any, binning: Any) -> tuple[int, str]:
    return check_int("n_bins", n_bins, low=1), check_choice("binning", binning, BINNINGS)


# --- binning core -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Bins:
    edges: np.ndarray  # (M + 1,)
    counts: np.ndarray  # (M,) int64
    sum_conf: np.ndarray  # (M,)
    sum_hit: np.ndarray  # (M,)


def _bin(confidence: np.ndarray, hit: np.ndarray, n_bins: int, binning: str) -> _Bins:
    """Per-bin counts and sums of ``confidence`` and ``hit`` (trusts its inputs)."""
    n = confidence.shape[0]
    if binning == "width":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        # Bin m holds ((m-1)/M, m/M]: searchsorted with side="left" on the inner edges.
        index = np.searchsorted(edges[1:-1], confidence, side="left")
    else:
        order = np.argsort(confidence, kind="stable")
        index = np.empty(n, dtype=np.int64)
        groups = np.array_split(np.arange(n), n_bins)
        sorted_conf = confidence[order]
        edges = np.empty(n_bins + 1)
        edges[0], edges[-1] = 0.0, 1.0
        for m, group in enumerate(groups):
            index[order[group]] = m
            if m > 0:
                # Lower edge of a bin: its smallest confidence (the previous edge when empty).
                edges[m] = sorted_conf[group[0]] if group.size else edges[m - 1]
    counts = np.bincount(index, minlength=n_bins).astype(np.int64)
    sum_conf = np.bincount(index, weights=confidence, minlength=n_bins)
    sum_hit = np.bincount(index, weights=hit.astype(np.float64), minlength=n_bins)
    return _Bins(edges, counts, sum_conf, sum_hit)


def _calibration_error(bins: _Bins, n: int, norm: str) -> float:
    nonempty = bins.counts > 0
    if not nonempty.any():
        return 0.0
    counts = bins.counts[nonempty]
    gap = np.abs(bins.sum_hit[nonempty] / counts - bins.sum_conf[nonempty] / counts)
    if norm == "max":
        return float(gap.max())
    weight = counts / n
    if norm == "l2":
        return float(np.sqrt(np.sum(weight * gap**2)))
    return float(np.sum(weight * gap))


def _top_label(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # np.argmax takes the first of tied maxima (the same rule as torch.argmax on CPU).
    pred = np.argmax(p, axis=1)
    return p[np.arange(p.shape[0]), pred], pred == y


# --- public metrics ---------------------------------------------------------------------------------
def expected_calibration_error(
    pred_probs: Any,
    labels: Any,
    *,
    n_bins: int = CALIBRATION_N_BINS,
    binning: str = "width",
    norm: str = "l1",
) -> float:
    """Expected calibration error of the top-label confidence.

    Parameters
    ----------
    pred_probs : Tensor or ndarray of shape (N, K)
        Predicted probabilities, rows summing to one.
    labels : Tensor or ndarray of int, shape (N,)
        True class indices in ``[0, K)``.
    n_bins : int >= 1, default 15
        Number of bins ``M`` (Guo et al. 2017 use 15).
    binning : {"width", "mass"}, default "width"
        Equal-width bins (ECE, Guo et al. 2017) or equal-mass bins (ACE, Nixon et al. 2019).
    norm : {"l1", "l2", "max"}, default "l1"
        How the per-bin gaps are combined: weighted mean ("l1", the ECE), root of the weighted
        mean square ("l2", the RMS calibration error) or maximum over non-empty bins ("max", the
        MCE, see :func:`maximum_calibration_error`).

    Returns
    -------
    float
        In [0, 1].

    Notes
    -----
    Guo et al. (2017), Eq. 3, with confidence :math:`\\hat p_i = \\max_k p_{ik}` and prediction
    :math:`\\hat y_i = \\arg\\max_k p_{ik}` (first index on ties):

    .. math:: \\mathrm{ECE} = \\sum_{m=1}^{M} \\frac{|B_m|}{n}
              \\left|\\mathrm{acc}(B_m) - \\mathrm{conf}(B_m)\\right|,

    :math:`\\mathrm{acc}(B_m)` the fraction of :math:`\\hat y_i = y_i` in bin :math:`B_m` and
    :math:`\\mathrm{conf}(B_m)` the mean confidence there. The slow version, the test oracle::

        for m in range(M):
            in_bin = [i for i in range(n) if bin_of(conf[i]) == m]
            if in_bin:
                ece += len(in_bin) / n * abs(mean(hit[in_bin]) - mean(conf[in_bin]))

    References
    ----------
    C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger. On Calibration of Modern Neural Networks.
    ICML 2017.
    J. Nixon, M. Dusenberry, L. Zhang, G. Jerfel, D. Tran. Measuring Calibration in Deep
    Learning. CVPR Workshops 2019.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    >>> round(expected_calibration_error(p, np.array([0, 1, 1]), n_bins=10), 4)
    0.4
    """
    p, y = _check_probs_labels(pred_probs, labels)
    n_bins, binning = _check_binning(n_bins, binning)
    norm = check_choice("norm", norm, CALIBRATION_NORMS)
    return _ece_impl(p, y, n_bins, binning, norm)


def _ece_impl(p: np.ndarray, y: np.ndarray, n_bins: int, binning: str, norm: str) -> float:
    confidence, hit = _top_label(p, y)
    return _calibration_error(_bin(confidence, hit, n_bins, binning), p.shape[0], norm)


def maximum_calibration_error(
    pred_probs: Any,
    labels: Any,
    *,
    n_bins: int = CALIBRATION_N_BINS,
    binning: str = "width",
) -> float:
    """Maximum calibration error: the largest gap over non-empty bins.

    Guo et al. (2017), Sec. 2: :math:`\\mathrm{MCE} = \\max_{m: |B_m| > 0}
    |\\mathrm{acc}(B_m) - \\mathrm{conf}(B_m)|`. Same arguments and binning as
    :func:`expected_calibration_error` (this is its ``norm="max"``). Returns 0 for ``N = 0``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    >>> round(maximum_calibration_error(p, np.array([0, 1, 1]), n_bins=10), 4)
    0.8
    """
    p, y = _check_probs_labels(pred_probs, labels)
    n_bins, binning = _check_binning(n_bins, binning)
    return _ece_impl(p, y, n_bins, binning, "max")


def classwise_calibration_error(
    pred_probs: Any,
    labels: Any,
    *,
    n_bins: int = CALIBRATION_N_BINS,
    binning: str = "width",
    norm: str = "l1",
) -> float:
    """Classwise ECE (static calibration error, SCE): the per-class ECE averaged over classes.

    Same arguments as :func:`expected_calibration_error`. With ``binning="mass"`` this is the
    adaptive calibration error (ACE) of Nixon et al. (2019) without its probability threshold.

    Notes
    -----
    Nixon et al. (2019), Sec. 4 (SCE), also Kull et al. (2019), classwise-ECE. For each class
    :math:`k` all :math:`N` examples are binned by :math:`p_{ik}`; in bin :math:`b`,
    :math:`\\mathrm{acc}(b,k)` is the fraction with :math:`y_i = k` and :math:`\\mathrm{conf}(b,k)`
    the mean :math:`p_{ik}`:

    .. math:: \\mathrm{SCE} = \\frac{1}{K} \\sum_{k=1}^{K} \\sum_{b=1}^{M} \\frac{n_{bk}}{N}
              \\left|\\mathrm{acc}(b,k) - \\mathrm{conf}(b,k)\\right|.

    ``norm="l2"`` / ``"max"`` replace the inner sum by the RMS / maximum gap of each class, still
    averaged over classes.

    References
    ----------
    J. Nixon et al. Measuring Calibration in Deep Learning. CVPR Workshops 2019.
    M. Kull et al. Beyond temperature scaling: Obtaining well-calibrated multiclass probabilities
    with Dirichlet calibration. NeurIPS 2019.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    >>> round(classwise_calibration_error(p, np.array([0, 1, 1]), n_bins=10), 4)
    0.4
    """
    p, y = _check_probs_labels(pred_probs, labels)
    n_bins, binning = _check_binning(n_bins, binning)
    norm = check_choice("norm", norm, CALIBRATION_NORMS)
    num_classes = p.shape[1]
    errors = [
        _calibration_error(_bin(p[:, k], y == k, n_bins, binning), p.shape[0], norm)
        for k in range(num_classes)
    ]
    return float(np.mean(errors))


def brier_score(pred_probs: Any, labels: Any) -> float:
    """Multi-class Brier score: squared error to the one-hot label, summed over classes.

    Notes
    -----
    Brier (1950)'s original multi-class definition,
    :math:`\\frac{1}{N} \\sum_i \\sum_k (p_{ik} - \\mathbb 1[y_i = k])^2`, in [0, 2]. Some libraries
    divide by :math:`K` as well (a mean over classes) or score only the positive class for binary
    problems (scikit-learn's ``brier_score_loss``, equal to this value divided by 2 when
    :math:`K = 2`); this one does not.

    References
    ----------
    G. W. Brier. Verification of forecasts expressed in terms of probability. Monthly Weather
    Review 78(1), 1950.

    Examples
    --------
    >>> import numpy as np
    >>> round(brier_score(np.array([[0.75, 0.25], [0.5, 0.5]]), np.array([0, 1])), 4)
    0.3125
    """
    p, y = _check_probs_labels(pred_probs, labels)
    if p.shape[0] == 0:
        return 0.0
    diff = p.copy()
    diff[np.arange(p.shape[0]), y] -= 1.0
    return float(np.mean(np.sum(diff**2, axis=1)))


def negative_log_likelihood(pred_probs: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the true labels, :math:`-\\frac1N\\sum_i \\log p_{i y_i}`.

    Natural logarithm. Probabilities are clipped to at least the float64 machine epsilon
    (``NLL_PROB_FLOOR``, as scikit-learn's ``log_loss``) so a zero probability gives a large
    finite loss (about 36) instead of inf. To score logits exactly, use
    ``torch.nn.functional.cross_entropy`` on them.

    Examples
    --------
    >>> import numpy as np
    >>> round(negative_log_likelihood(np.array([[0.5, 0.5], [0.25, 0.75]]), np.array([0, 1])), 4)
    0.4904
    """
    p, y = _check_probs_labels(pred_probs, labels)
    if p.shape[0] == 0:
        return 0.0
    return float(-np.mean(np.log(np.maximum(p[np.arange(p.shape[0]), y], NLL_PROB_FLOOR))))


# --- reliability diagram ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ReliabilityDiagram:
    """Data of a reliability diagram (Guo et al. 2017, Fig. 1, bottom row).

    Parameters
    ----------
    bin_edges : ndarray of shape (M + 1,)
        Bin boundaries. Equal-width: ``linspace(0, 1, M + 1)``. Equal-mass: 0, the smallest
        confidence of bins 2..M, then 1 (an empty bin repeats the previous edge).
    accuracy : ndarray of shape (M,)
        Fraction of correct predictions per bin; NaN in empty bins.
    confidence : ndarray of shape (M,)
        Mean top-label confidence per bin; NaN in empty bins.
    counts : ndarray of int64, shape (M,)
        Examples per bin.
    ece : float
        L1 expected calibration error of these bins (:func:`expected_calibration_error`).
    mce : float
        Maximum calibration error of these bins.
    binning : str
        "width" or "mass".
    """

    bin_edges: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    counts: np.ndarray
    ece: float
    mce: float
    binning: str

    @property
    def n_bins(self) -> int:
        return int(self.counts.shape[0])


def reliability_diagram(
    pred_probs: Any,
    labels: Any,
    *,
    n_bins: int = CALIBRATION_N_BINS,
    binning: str = "width",
) -> ReliabilityDiagram:
    """Per-bin accuracy, confidence and counts of the top-label confidence.

    Same arguments and binning as :func:`expected_calibration_error`; draw it with
    :func:`robustlab.calibration.plot_reliability`.

    Examples
    --------
    >>> import numpy as np
    >>> d = reliability_diagram(np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([0, 0]), n_bins=2)
    >>> d.counts.tolist(), d.accuracy.tolist()
    ([0, 2], [nan, 0.5])
    """
    p, y = _check_probs_labels(pred_probs, labels)
    n_bins, binning = _check_binning(n_bins, binning)
    confidence, hit = _top_label(p, y)
    bins = _bin(confidence, hit, n_bins, binning)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(bins.counts > 0, bins.sum_hit / bins.counts, np.nan)
        mean_conf = np.where(bins.counts > 0, bins.sum_conf / bins.counts, np.nan)
    n = p.shape[0]
    return ReliabilityDiagram(
        bin_edges=bins.edges,
        accuracy=accuracy,
        confidence=mean_conf,
        counts=bins.counts,
        ece=_calibration_error(bins, n, "l1"),
        mce=_calibration_error(bins, n, "max"),
        binning=binning,
    )
