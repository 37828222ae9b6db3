"""Selective classification: the risk-coverage curve and the area under it (AURC, E-AURC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import (
    check_finite,
    check_int,
    check_labels,
    check_pred_probs,
    check_tensor,
)
from robustlab.errors import ShapeError

__all__ = ["RiskCoverageCurve", "optimal_aurc", "risk_coverage_curve"]


@dataclass(frozen=True, eq=False)
class RiskCoverageCurve:
    """Selective risk at every coverage ``k / N``, ``k = 1..N``.

    Parameters
    ----------
    coverage : ndarray of shape (N,)
        ``k / N``: the fraction of examples accepted (the ``k`` most confident).
    risk : ndarray of shape (N,)
        Error rate among the accepted examples (expected over random orderings of tied
        confidences, see :func:`risk_coverage_curve`).
    threshold : ndarray of shape (N,)
        Confidence of the ``k``-th accepted example: accepting every example with confidence
        ``>= threshold[k-1]`` gives coverage ``coverage[k-1]`` when it is not inside a tie.
    aurc : float
        Area under the curve, the mean of ``risk`` (Geifman et al. 2019, Sec. 3).
    e_aurc : float
        Excess AURC, ``aurc - optimal_aurc`` (0 for a perfect ranking).
    error_rate : float
        Risk at full coverage.
    """

    coverage: np.ndarray
    risk: np.ndarray
    threshold: np.ndarray
    aurc: float
    e_aurc: float
    error_rate: float


def risk_coverage_curve(pred_probs: Any, labels: Any, *, confidence: Any = None) -> RiskCoverageCurve:
    """Risk-coverage curve of the selective classifier "predict argmax, abstain when unsure".

    Parameters
    ----------
    pred_probs : Tensor or ndarray of shape (N, K)
        Predicted probabilities, rows summing to one; the prediction is their argmax (first index
        on ties).
    labels : Tensor or ndarray of int, shape (N,)
    confidence : Tensor or ndarray of shape (N,), optional
        Confidence score, higher = more confident (e.g. a negated OOD score). Default: the
        top-label probability :math:`\\max_k p_{ik}` (softmax response, Geifman & El-Yaniv 2017).

    Returns
    -------
    RiskCoverageCurve

    Notes
    -----
    Examples are sorted by decreasing confidence; the selective risk at coverage :math:`k/N`
    is :math:`r_k = \\frac1k \\sum_{j \\le k} \\mathbb 1[\\hat y_{(j)} \\ne y_{(j)}]` and
    :math:`\\mathrm{AURC} = \\frac1N \\sum_{k=1}^{N} r_k` (Geifman et al. 2019, Sec. 3).

    *Ties.* A sort would break ties in confidence arbitrarily and make AURC depend on the input
    order. Here, inside a group of :math:`g` tied examples with :math:`e` errors that starts after
    position :math:`s`, the error count at :math:`k = s + j` is its expectation over uniformly
    random orders of the group, :math:`E_s + j e / g`. AURC is then the expectation of AURC over
    random tie-breaking, and it does not depend on the order of the input.

    References
    ----------
    Y. Geifman and R. El-Yaniv. Selective Classification for Deep Neural Networks. NeurIPS 2017.
    Y. Geifman, G. Uziel, R. El-Yaniv. Bias-Reduced Uncertainty Estimation for Deep Neural
    Classifiers. ICLR 2019.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    >>> c = risk_coverage_curve(p, np.array([0, 1, 1]))
    >>> c.risk.round(4).tolist(), round(c.aurc, 4)
    ([0.0, 0.0, 0.3333], 0.1111)
    """
    p = check_pred_probs("pred_probs", pred_probs)
    y = check_labels("labels", labels, num_classes=p.shape[1], n=p.shape[0])
    p_np = p.detach().cpu().to(torch.float64).numpy()
    pred = np.argmax(p_np, axis=1)
    if confidence is None:
        score = p_np[np.arange(p_np.shape[0]), pred]
    else:
        c = check_finite("confidence", check_tensor("confidence", confidence, ndim=1, dims="N"))
        if c.shape[0] != p.shape[0]:
            raise ShapeError(
                f"The 'confidence' parameter must have {p.shape[0]} entries (one per example). "
                f"Got {c.shape[0]} instead.", expected=(p.shape[0],), got=tuple(c.shape),
            )
        score = c.detach().cpu().to(torch.float64).numpy()
    return _risk_coverage_impl(score, pred != y.cpu().numpy())


def _risk_coverage_impl(score: np.ndarray, error: np.ndarray) -> RiskCoverageCurve:
    n = score.shape[0]
    if n == 0:
        empty = np.zeros(0)
        return RiskCoverageCurve(empty, empty, empty, 0.0, 0.0, 0.0)
    order = np.argsort(-score, kind="stable")
    s, e = score[order], error[order].astype(np.float64)
    # Tie groups: runs of equal scores in the sorted order.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    sizes = np.diff(np.r_[starts, n])
    group_errors = np.add.reduceat(e, starts)
    errors_before = np.r_[0.0, np.cumsum(group_errors)[:-1]]
    group = np.repeat(np.arange(starts.size), sizes)
    position_in_group = np.arange(n) - starts[group] + 1  # j = 1..g
    expected_errors = errors_before[group] + position_in_group * group_errors[group] / sizes[group]
    k = np.arange(1, n + 1, dtype=np.float64)
    risk = expected_errors / k
    aurc = float(risk.mean())
    num_errors = int(error.sum())
    return RiskCoverageCurve(
        coverage=k / n,
        risk=risk,
        threshold=s,
        aurc=aurc,
        e_aurc=aurc - _optimal_aurc_impl(num_errors, n),
        error_rate=num_errors / n,
    )


def optimal_aurc(num_errors: int, num_examples: int) -> float:
    """AURC of a perfect ranking (every correct example more confident than every error).

    With :math:`c = N - e` correct examples, :math:`r_k = \\max(0, k - c)/k`, so

    .. math:: \\mathrm{AURC}^* = \\frac1N \\sum_{k=c+1}^{N} \\frac{k - c}{k}
              = \\frac{1}{N}\\left[e - c\\,(H_N - H_c)\\right],

    :math:`H_n` the harmonic numbers. For large :math:`N` it tends to
    :math:`r + (1 - r)\\ln(1 - r)`, :math:`r = e/N` (Geifman et al. 2019, Sec. 3).

    Examples
    --------
    >>> round(optimal_aurc(1, 4), 4)
    0.0625
    """
    n = check_int("num_examples", num_examples, low=0)
    e = check_int("num_errors", num_errors, low=0, high=n)
    return _optimal_aurc_impl(e, n)


def _optimal_aurc_impl(num_errors: int, n: int) -> float:
    if n == 0 or num_errors == 0:
        return 0.0
    c = n - num_errors
    k = np.arange(c + 1, n + 1, dtype=np.float64)
    return float(np.sum((k - c) / k) / n)
