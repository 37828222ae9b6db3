"""Label-quality scores and ranking of label issues (same answers as ``cleanlab.rank``).

A label-quality score is in [0, 1] per example; lower means the given label is more likely wrong.
Scores are computed row by row in cache-sized chunks, so no (N, K) temporary is made (not even for
``adjust_pred_probs``). Inputs may be NumPy arrays or torch tensors; results are NumPy arrays.

References
----------
Northcutt, Jiang, Chuang. "Confident Learning: Estimating Uncertainty in Dataset Labels."
JAIR 70 (2021), Sec. 3.1 (self-confidence, normalised margin as ranking scores).
Kuan, Mueller. "Model-Agnostic Label Quality Scoring to Detect Real-World Label Errors."
ICML DataPerf workshop (2022), Sec. 2 (self-confidence, normalised margin,
confidence-weighted entropy; adjusting ``pred_probs`` by the class thresholds).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import xlogy

from robustlab._checks import check_bool, check_choice, fail
from robustlab._constants import CL_CHUNK_ELEMENTS, CL_CLIPPING_LOWER_BOUND
from robustlab.errors import InvalidParameterError, ShapeError
from robustlab.label_noise._cl_helpers import Prepared, as_numpy

__all__ = [
    "SCORE_METHODS",
    "get_confidence_weighted_entropy_for_each_label",
    "get_label_quality_scores",
    "get_normalized_margin_for_each_label",
    "get_self_confidence_for_each_label",
    "order_label_issues",
]

#: Label-quality scores, by name (``method`` / ``rank_by``).
SCORE_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


def get_label_quality_scores(
    labels: Any,
    pred_probs: Any,
    *,
    method: str = "self_confidence",
    adjust_pred_probs: bool = False,
) -> np.ndarray:
    """Label-quality score of every example (lower: label more likely wrong).

    Parameters
    ----------
    labels : array_like of int, shape (N,)
        Given labels in ``[0, K)``.
    pred_probs : array_like of float, shape (N, K)
        Out-of-sample predicted probabilities; rows sum to 1 (tolerance ``PROB_SUM_ATOL``).
    method : {"self_confidence", "normalized_margin", "confidence_weighted_entropy"}
        Score (see Notes). Default ``"self_confidence"``.
    adjust_pred_probs : bool, default False
        First subtract the per-class thresholds ``t`` and renormalise:
        ``p' = (p - t + max(t)) / sum_k (p_k - t_k + max(t))``, which accounts for class imbalance.
        Not available for ``confidence_weighted_entropy`` (as in cleanlab).

    Returns
    -------
    ndarray of float, shape (N,)

    Notes
    -----
    With ``y`` the given label and ``p`` the row of ``pred_probs``:
    ``self_confidence = p_y``; ``normalized_margin = (p_y - max_{k != y} p_k + 1) / 2``;
    ``confidence_weighted_entropy = log(1 + s) / max(s, 1e-6)`` with
    ``s = H(p) / log(K) / max(p_y, 1e-6)`` and ``H`` the entropy. Same values as
    ``cleanlab.rank.get_label_quality_scores``.

    Examples
    --------
    >>> import numpy as np
    >>> get_label_quality_scores(np.array([0, 1]), np.array([[0.9, 0.1], [0.6, 0.4]]),
    ...                          method="normalized_margin")
    array([0.9, 0.4])
    """
    method, adjust = _check_method(method, adjust_pred_probs)
    prep = Prepared.from_user(labels, pred_probs)
    thresholds = prep.thresholds if adjust else None
    return _scores(prep.labels, prep.pred_probs, method, thresholds)


def get_self_confidence_for_each_label(labels: Any, pred_probs: Any) -> np.ndarray:
    """``pred_probs[i, labels[i]]`` for every example, shape (N,); see :func:`get_label_quality_scores`."""
    return get_label_quality_scores(labels, pred_probs, method="self_confidence")


def get_normalized_margin_for_each_label(labels: Any, pred_probs: Any) -> np.ndarray:
    """``(p_y - max_{k != y} p_k + 1) / 2`` for every example, shape (N,); see
    :func:`get_label_quality_scores`."""
    return get_label_quality_scores(labels, pred_probs, method="normalized_margin")


def get_confidence_weighted_entropy_for_each_label(labels: Any, pred_probs: Any) -> np.ndarray:
    """Confidence-weighted entropy score for every example, shape (N,); see
    :func:`get_label_quality_scores`."""
    return get_label_quality_scores(labels, pred_probs, method="confidence_weighted_entropy")


def order_label_issues(
    mask: Any,
    labels: Any,
    pred_probs: Any,
    *,
    rank_by: str = "self_confidence",
    adjust_pred_probs: bool = False,
) -> np.ndarray:
    """Indices of the flagged examples, most likely wrong first.

    Parameters
    ----------
    mask : array_like of bool, shape (N,)
        Flagged examples (e.g. from :func:`robustlab.label_noise.find_label_issues`).
    labels, pred_probs
        As in :func:`get_label_quality_scores`.
    rank_by : {"self_confidence", "normalized_margin", "confidence_weighted_entropy"}
        Score to sort by, ascending.
    adjust_pred_probs : bool, default False
        See :func:`get_label_quality_scores`.

    Returns
    -------
    ndarray of int64, shape (mask.sum(),)
        Same order as ``cleanlab.rank.order_label_issues`` (NumPy's default sort; ties keep that
        sort's order). Scores are computed for the flagged rows only.
    """
    method, adjust = _check_method(rank_by, adjust_pred_probs, name="rank_by")
    prep = Prepared.from_user(labels, pred_probs)
    flagged = _check_mask(mask, prep.labels.shape[0])
    return _order_impl(prep, flagged, method, adjust)


# --- private --------------------------------------------------------------------------------------


def _check_method(method: Any, adjust: Any, *, name: str = "method") -> tuple[str, bool]:
    method = check_choice(name, method, SCORE_METHODS)
    adjust = check_bool("adjust_pred_probs", adjust)
    if adjust and method == "confidence_weighted_entropy":
        raise InvalidParameterError(
            f"The 'adjust_pred_probs' parameter must be False with {name}='confidence_weighted_entropy' "
            "(the adjustment is defined for self_confidence and normalized_margin). Got True instead."
        )
    return method, adjust


def _check_mask(mask: Any, n: int) -> np.ndarray:
    m = as_numpy(mask)
    if m.dtype != bool:
        fail("mask", "a boolean array", m)
    if m.shape != (n,):
        raise ShapeError(f"The 'mask' parameter must have shape ({n},) (one entry per example). "
                         f"Got shape {m.shape} instead.", expected=(n,), got=m.shape)
    return m


def _order_impl(prep: Prepared, flagged: np.ndarray, method: str, adjust: bool) -> np.ndarray:
    idx = np.flatnonzero(flagged)
    thresholds = prep.thresholds if adjust else None
    scores = _scores(prep.labels[idx], prep.pred_probs[idx], method, thresholds)
    # Same default-kind argsort on the same values as cleanlab.rank.order_label_issues.
    return idx[np.argsort(scores)].astype(np.int64, copy=False)


def _scores(labels: np.ndarray, pred_probs: np.ndarray, method: str,
            thresholds: np.ndarray | None) -> np.ndarray:
    """Scores of the given rows; row-wise, so any subset of rows gives the same values."""
    n, k = pred_probs.shape
    if method == "self_confidence" and thresholds is None:
        return pred_probs[np.arange(n), labels]
    out: np.ndarray | None = None
    step = max(1, CL_CHUNK_ELEMENTS // k)
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        block = pred_probs[lo:hi]
        if thresholds is not None:
            block = _adjust(block, thresholds)
        part = _block_scores(labels[lo:hi], block, method)
        if out is None:
            out = np.empty(n, dtype=part.dtype)
        out[lo:hi] = part
    return out if out is not None else np.empty(0, dtype=pred_probs.dtype)


def _adjust(block: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    # cleanlab.internal.label_quality_utils._subtract_confident_thresholds, row by row.
    adjusted = block - thresholds
    adjusted += thresholds.max()
    adjusted /= adjusted.sum(axis=1, keepdims=True)
    return adjusted


def _block_scores(labels: np.ndarray, block: np.ndarray, method: str) -> np.ndarray:
    rows = np.arange(block.shape[0])
    self_conf = block[rows, labels]
    if method == "self_confidence":
        return self_conf
    if method == "normalized_margin":
        others = block.copy()
        others[rows, labels] = -np.inf
        return (self_conf - others.max(axis=1) + 1) / 2
    entropy = -np.sum(xlogy(block, block), axis=1) / np.log(block.shape[1])
    score = entropy / np.clip(self_conf, a_min=CL_CLIPPING_LOWER_BOUND, a_max=None)
    return np.log(score + 1) / np.clip(score, a_min=CL_CLIPPING_LOWER_BOUND, a_max=None)
