"""Noise transition matrices: validation and the anchor-point estimator (Patrini et al., 2017).

A transition matrix ``T`` of shape ``(K, K)`` holds ``T[i, j] = P(noisy label = j | true label = i)``;
it is row-stochastic.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab._checks import (
    as_tensor,
    check_bool,
    check_finite,
    check_number,
    check_pred_probs,
    describe,
    fail,
)
from robustlab._constants import ANCHOR_QUANTILE, TRANSITION_ROW_ATOL
from robustlab.errors import (
    DataFormatError,
    DataNotFoundError,
    InvalidTypeError,
    ShapeError,
)

__all__ = ["check_transition", "estimate_transition_anchor"]

#: A transition matrix with a larger 2-norm condition number is refused where it must be inverted.
_MAX_CONDITION = 1e8


def check_transition(name: str, value: Any, *, num_classes: int | None = None,
                     invertible: bool = False) -> torch.Tensor:
    """Validate a transition matrix and return it as a float tensor (float64 unless given as float32).

    Parameters
    ----------
    name : str
        Parameter name for error messages.
    value : Tensor, ndarray, nested list, or path to a ``.npy`` file
        Square ``(K, K)``, finite, non-negative, rows summing to one (within 1e-4).
    num_classes : int, optional
        Required ``K``.
    invertible : bool, default False
        Also require a condition number below 1e8 (backward correction inverts ``T``).
    """
    if isinstance(value, (str, os.PathLike)):
        value = _load_npy(name, Path(value))
    t = as_tensor(name, value)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ShapeError(f"The '{name}' parameter must be a square (K, K) transition matrix. "
                         f"Got {describe(t)} instead.", expected="(K, K)", got=tuple(t.shape))
    if num_classes is not None and t.shape[0] != num_classes:
        raise ShapeError(f"The '{name}' parameter must be a ({num_classes}, {num_classes}) transition "
                         f"matrix (one row and column per class). Got {describe(t)} instead.",
                         expected=(num_classes, num_classes), got=tuple(t.shape))
    if t.is_complex() or t.dtype == torch.bool:
        fail(name, "a real-valued transition matrix", t, error=InvalidTypeError)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    check_finite(name, t)
    if t.numel() and float(t.min()) < 0:
        fail(name, "a transition matrix with non-negative entries", f"minimum {float(t.min()):.4g}",
             describe_got=False)
    off = t.sum(dim=1, dtype=torch.float64) - 1
    deviation = float(off[off.abs().argmax()]) if off.numel() else 0.0
    if abs(deviation) > TRANSITION_ROW_ATOL:
        fail(name, "row-stochastic (each row T[i] = P(noisy | true = i) sums to 1)",
             f"a row summing to 1 {deviation:+.3g}", describe_got=False)
    if invertible:
        cond = float(torch.linalg.cond(t.to(torch.float64)))
        if not math.isfinite(cond) or cond > _MAX_CONDITION:
            fail(name, f"an invertible transition matrix (condition number below {_MAX_CONDITION:g}); "
                 "backward correction needs T^-1", f"condition number {cond:.3g}", describe_got=False)
    return t


def _load_npy(name: str, path: Path) -> np.ndarray:
    if path.suffix.lower() != ".npy":
        fail(name, "a tensor, an array or the path of a .npy file", str(path))
    if not path.is_file():
        raise DataNotFoundError(f"The '{name}' parameter names {str(path)!r}, which does not exist.")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataFormatError(f"The '{name}' file {str(path)!r} is not a readable .npy array: {exc}") from None


def estimate_transition_anchor(pred_probs: Any, *, quantile: float = ANCHOR_QUANTILE,
                               filter_outlier: bool = True) -> torch.Tensor:
    """Estimate the noise transition matrix from anchor points (Patrini et al., 2017).

    Parameters
    ----------
    pred_probs : Tensor or ndarray of shape (N, K)
        Predicted probabilities of the *noisy* label, ``P(noisy = j | x_n)``, from a model trained
        on the noisy labels (the paper uses the training set; out-of-sample predictions, e.g.
        cross-validated, are better).
    quantile : float in (0, 1], default 0.97
        With ``filter_outlier``, the anchor of class ``i`` is the example with the highest
        ``pred_probs[:, i]`` *below* this quantile of that column (the 97th percentile of the
        authors' code), which discards overconfident outliers.
    filter_outlier : bool, default True
        False: the anchor is the plain arg-max of the column (the paper's estimator).

    Returns
    -------
    Tensor of shape (K, K)
        Row-stochastic ``T_hat``, same dtype and device as ``pred_probs`` (float64 for arrays).

    Notes
    -----
    If ``x_i`` is an anchor point of class ``i`` (``P(true = i | x_i) = 1``), then
    ``P(noisy = j | x_i) = T[i, j]`` (Patrini et al., noise estimation with anchor points), so

    .. math:: \\bar x_i = \\arg\\max_{x} \\hat p(\\tilde y = i | x),\\qquad
              \\hat T_{ij} = \\hat p(\\tilde y = j | \\bar x_i)

    With ``filter_outlier`` the arg-max is taken over the examples whose ``p(i | x)`` is below
    the ``quantile`` of the column, computed as in ``numpy.percentile(..., interpolation="higher")``
    (the value at sorted position ``ceil(quantile * (N - 1))``); values at or above it are
    excluded. Rows are then renormalised to sum to one, as the authors' ``row_normalize=True``.

    **Deviation from the authors' code.** ``robust_eta = eta_corr[:, i]`` there is a NumPy *view*,
    so zeroing the filtered entries also overwrites the predictions used for the following
    classes' rows. Here every class reads the unmodified ``pred_probs``.

    References
    ----------
    Patrini, Rozza, Menon, Nock, Qu. "Making deep neural networks robust to label noise: a loss
    correction approach." CVPR 2017 (noise estimation from anchor points); code: github.com/giorgiop/loss-correction
    (``NoiseEstimator.fit``/``predict``).

    Examples
    --------
    >>> import torch
    >>> p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    >>> estimate_transition_anchor(p, filter_outlier=False)
    tensor([[0.9000, 0.1000],
            [0.1000, 0.9000]])
    """
    from_numpy = not isinstance(pred_probs, torch.Tensor)
    p = check_pred_probs("pred_probs", pred_probs)
    if from_numpy and not p.is_floating_point():
        p = p.to(torch.float64)
    if p.shape[0] == 0:
        fail("pred_probs", "at least one example", p)
    quantile = check_number("quantile", quantile, low=0.0, high=1.0, low_inclusive=False)
    filter_outlier = check_bool("filter_outlier", filter_outlier)
    return _anchor_impl(p, quantile, filter_outlier)


def _anchor_impl(p: torch.Tensor, quantile: float, filter_outlier: bool) -> torch.Tensor:
    if filter_outlier:
        n = p.shape[0]
        position = math.ceil(quantile * (n - 1))  # numpy "higher" interpolation
        thresholds = p.kthvalue(position + 1, dim=0).values  # (K,)
        scores = torch.where(p >= thresholds, torch.zeros_like(p), p)
    else:
        scores = p
    anchors = scores.argmax(dim=0)  # (K,): first maximum, as numpy.argmax
    t = p[anchors]
    return t / t.sum(dim=1, keepdim=True)
