"""Find label issues with confident learning (same answers as ``cleanlab.filter.find_label_issues``).

:func:`find_label_issues` returns a boolean mask; :func:`find_label_issues_ranked` returns the
flagged indices ordered by a label-quality score. Both give exactly cleanlab 2.x's result for the
same inputs and options (including which of several tied examples is flagged), without a process
pool: rows are grouped by given label once (an O(N) radix sort), and the per-(given, true) class
counts are taken with ``np.partition`` on the class's margins instead of full sorts.

Inputs may be NumPy arrays or torch tensors (any device); results are NumPy arrays.

References
----------
Northcutt, Jiang, Chuang. "Confident Learning: Estimating Uncertainty in Dataset Labels."
JAIR 70 (2021), Sec. 3.3 (rank and prune: "prune by class", "prune by noise rate", "both",
"C_confusion", "C_{y~, y*}").
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from robustlab._checks import check_choice, check_int, check_probability, fail
from robustlab._constants import CL_TRANSPOSE_TILE_ROWS
from robustlab.errors import InvalidParameterError, ShapeError
from robustlab.label_noise._cl_helpers import (
    Prepared,
    argsort_prefix_mask,
    as_numpy,
    round_preserving_row_totals,
    validate_confident_joint,
)
from robustlab.label_noise.confident import (
    _confident_joint_impl,
    _num_issues_off_diagonal,
    _off_diagonal_mask,
)
from robustlab.label_noise.rank import _check_method, _order_impl, _scores

__all__ = ["FILTER_METHODS", "find_label_issues", "find_label_issues_ranked"]

#: ``filter_by`` options (cleanlab.filter.find_label_issues).
FILTER_METHODS = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_self_confidence",
    "low_normalized_margin",
)

# Filters built on the prune-count matrix: the only ones frac_noise / num_to_remove_per_class /
# confident_joint act on (cleanlab warns and ignores them elsewhere; here that is an error).
_PRUNE_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both")


def find_label_issues(
    labels: Any,
    pred_probs: Any,
    *,
    filter_by: str = "prune_by_noise_rate",
    frac_noise: float = 1.0,
    num_to_remove_per_class: Any = None,
    min_examples_per_class: int = 1,
    confident_joint: Any = None,
) -> np.ndarray:
    """Flag the examples whose given label is likely wrong.

    Parameters
    ----------
    labels : array_like of int, shape (N,)
        Given labels in ``[0, K)``.
    pred_probs : array_like of float, shape (N, K)
        Out-of-sample predicted probabilities (K-fold cross-validation); rows sum to 1
        (tolerance ``PROB_SUM_ATOL``).
    filter_by : str, default "prune_by_noise_rate"
        ``prune_by_noise_rate``: for every off-diagonal cell (given i, true j) of the calibrated
        confident joint, flag that many examples labelled ``i`` with the largest margin
        ``p_j - p_i``. ``prune_by_class``: for every class ``i``, flag its ``n_i - C[i, i]``
        examples with the smallest ``p_i``. ``both``: flagged by both. ``confident_learning``:
        the examples counted off the diagonal of the confident joint. ``predicted_neq_given``:
        ``argmax p != label``. ``low_self_confidence`` / ``low_normalized_margin``: the
        :func:`robustlab.label_noise.num_label_issues` examples with the lowest score.
        Except for the two ``low_*`` filters, an example whose given label is the argmax
        (within 1e-6) is never flagged.
    frac_noise : float in [0, 1], default 1.0
        Flag only this fraction of each off-diagonal count (prune filters only).
    num_to_remove_per_class : array_like of int, shape (K,), optional
        Number of examples to flag per given class (prune filters only; exact with
        ``prune_by_class``, +-1 by rounding with ``prune_by_noise_rate``).
    min_examples_per_class : int >= 0, default 1
        Classes with at most this many examples are not pruned (prune filters only).
    confident_joint : array_like, shape (K, K), optional
        Precomputed confident joint (rows given, columns true); prune filters only.

    Returns
    -------
    ndarray of bool, shape (N,)
        ``True`` where the label is flagged.

    Notes
    -----
    Identical to ``cleanlab.filter.find_label_issues`` (2.x) with ``return_indices_ranked_by=None``
    for every ``filter_by`` and option value it accepts, including the number taken from each
    off-diagonal cell (the prune-count matrix: diagonal raised to ``min_examples_per_class``
    with the raise taken evenly from the column's non-zero off-diagonals, off-diagonals scaled by
    ``frac_noise``, truncated and rounded preserving row totals) and the choice among tied
    examples. Differences: options a filter would ignore (``frac_noise``,
    ``num_to_remove_per_class``, ``confident_joint`` outside the prune filters) are errors
    instead of warnings, and one warning names all classes too small to prune.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([0, 0, 0, 1, 1, 1])
    >>> pred_probs = np.array([[.9, .1], [.8, .2], [.2, .8], [.1, .9], [.3, .7], [.2, .8]])
    >>> find_label_issues(labels, pred_probs)
    array([False, False,  True, False, False, False])
    """
    options = _check_options(filter_by, frac_noise, num_to_remove_per_class, min_examples_per_class,
                             confident_joint)
    prep = Prepared.from_user(labels, pred_probs)
    return _find_impl(prep, *_finish_options(prep, *options))


def find_label_issues_ranked(
    labels: Any,
    pred_probs: Any,
    *,
    rank_by: str = "self_confidence",
    adjust_pred_probs: bool = False,
    filter_by: str = "prune_by_noise_rate",
    frac_noise: float = 1.0,
    num_to_remove_per_class: Any = None,
    min_examples_per_class: int = 1,
    confident_joint: Any = None,
) -> np.ndarray:
    """Indices of the flagged examples, most likely wrong first.

    Parameters
    ----------
    labels, pred_probs, filter_by, frac_noise, num_to_remove_per_class, min_examples_per_class, confident_joint
        As in :func:`find_label_issues`.
    rank_by : {"self_confidence", "normalized_margin", "confidence_weighted_entropy"}
        Label-quality score to sort by (ascending); see
        :func:`robustlab.label_noise.get_label_quality_scores`.
    adjust_pred_probs : bool, default False
        Score on class-threshold-adjusted probabilities (not with ``confidence_weighted_entropy``).

    Returns
    -------
    ndarray of int64, shape (num_flagged,)
        Same as ``cleanlab.filter.find_label_issues(..., return_indices_ranked_by=rank_by,
        rank_by_kwargs={"adjust_pred_probs": adjust_pred_probs})``.
    """
    method, adjust = _check_method(rank_by, adjust_pred_probs, name="rank_by")
    options = _check_options(filter_by, frac_noise, num_to_remove_per_class, min_examples_per_class,
                             confident_joint)
    prep = Prepared.from_user(labels, pred_probs)
    mask = _find_impl(prep, *_finish_options(prep, *options))
    return _order_impl(prep, mask, method, adjust)


# --- validation ---------------------------------------------------------------------------------


def _check_options(filter_by: Any, frac_noise: Any, num_to_remove_per_class: Any,
                   min_examples_per_class: Any, confident_joint: Any) -> tuple[Any, ...]:
    filter_by = check_choice("filter_by", filter_by, FILTER_METHODS)
    frac_noise = check_probability("frac_noise", frac_noise)
    min_examples = check_int("min_examples_per_class", min_examples_per_class, low=0)
    if filter_by not in _PRUNE_FILTERS:
        why = f"only used by filter_by in {_PRUNE_FILTERS}; filter_by={filter_by!r} ignores it"
        if frac_noise != 1.0:
            raise InvalidParameterError(f"The 'frac_noise' parameter must be 1.0 ({why}). "
                                        f"Got {frac_noise} instead.")
        if num_to_remove_per_class is not None:
            raise InvalidParameterError(f"The 'num_to_remove_per_class' parameter must be None "
                                        f"({why}). Got a value instead.")
        if confident_joint is not None:
            raise InvalidParameterError(f"The 'confident_joint' parameter must be None ({why}). "
                                        f"Got an array instead.")
    return filter_by, frac_noise, num_to_remove_per_class, min_examples, confident_joint


def _finish_options(prep: Prepared, filter_by: str, frac_noise: float, num_to_remove: Any,
                    min_examples: int, confident_joint: Any) -> tuple[Any, ...]:
    k = prep.num_classes
    if num_to_remove is not None:
        r = as_numpy(num_to_remove)
        if r.shape != (k,) or r.dtype.kind not in "iu":
            raise ShapeError(f"The 'num_to_remove_per_class' parameter must be {k} integers (one per "
                             f"class). Got {r.shape} values of dtype {r.dtype} instead.",
                             expected=(k,), got=r.shape)
        if (r < 0).any():
            fail("num_to_remove_per_class", "non-negative counts", f"minimum {r.min()}",
                 describe_got=False)
        num_to_remove = r.astype(np.int64)
    if confident_joint is not None:
        confident_joint = validate_confident_joint(confident_joint, k)
    return filter_by, frac_noise, num_to_remove, min_examples, confident_joint


# --- implementation -------------------------------------------------------------------------------


def _find_impl(prep: Prepared, filter_by: str, frac_noise: float, num_to_remove: np.ndarray | None,
               min_examples: int, confident_joint: np.ndarray | None) -> np.ndarray:
    if filter_by in ("low_self_confidence", "low_normalized_margin"):
        scores = _scores(prep.labels, prep.pred_probs, filter_by[len("low_"):], None)
        # cleanlab: np.argsort(scores)[:num_label_issues]; the same set, without the full sort.
        return argsort_prefix_mask(scores, _num_issues_off_diagonal(prep))
    if filter_by == "confident_learning":
        mask = _off_diagonal_mask(prep)
    elif filter_by == "predicted_neq_given":
        mask = prep.argmax_stats.argmax != prep.labels
    else:
        cj = confident_joint
        if cj is None:
            cj = _confident_joint_impl(prep, thresholds=None, calibrate=True)
        prune = _prune_count_matrix(cj, prep.label_counts, min_examples, frac_noise, num_to_remove)
        prunable = _prunable_classes(prep.label_counts, min_examples)
        if filter_by == "prune_by_class":
            mask = _prune_by_class(prep, prune, prunable)
        elif filter_by == "prune_by_noise_rate":
            mask = _prune_by_noise_rate(prep, prune, prunable)
        else:
            mask = _prune_by_class(prep, prune, prunable) & _prune_by_noise_rate(prep, prune, prunable)
    mask &= ~prep.reduce_mask()
    return mask


def _prunable_classes(label_counts: np.ndarray, min_examples: int) -> np.ndarray:
    """Classes that are pruned: more than ``min_examples_per_class`` examples, and more than one
    (cleanlab drops a one-example class's mask when assembling, whatever the minimum)."""
    too_small = np.flatnonzero((label_counts > 0) & (label_counts <= min_examples))
    if too_small.size:
        warnings.warn(
            f"Classes {too_small.tolist()} have at most min_examples_per_class={min_examples} "
            "examples; their labels are not pruned.", UserWarning, stacklevel=4)
    return label_counts > max(min_examples, 1)


def _prune_count_matrix(cj: np.ndarray, label_counts: np.ndarray, min_examples: int,
                        frac_noise: float, num_to_remove: np.ndarray | None) -> np.ndarray:
    """Number of examples to flag per (true j, given i) cell: ``prune[j, i]`` (transposed joint).

    Follows cleanlab.filter._keep_at_least_n_per_class, _reduce_prune_counts and the
    ``num_to_remove_per_class`` branch of find_label_issues operation for operation (on the same
    transposed view, so sums run in the same order): counts are truncated with ``astype(int)``, so
    a last-bit difference would change them.
    """
    pcm = cj.T
    diagonal = np.diagonal(pcm)
    raised = np.maximum(diagonal, min_examples)
    increase = raised - diagonal
    nonzero_off = np.maximum(np.count_nonzero(pcm, axis=0) - 1.0, 1.0)
    kept = pcm - increase / nonzero_off
    kept[kept < 0] = 0
    np.fill_diagonal(kept, raised)
    # Scale off-diagonals by frac_noise; the diagonal takes up what they lose (column totals kept).
    scaled = kept * frac_noise
    np.fill_diagonal(scaled, kept.diagonal())
    np.fill_diagonal(scaled, kept.diagonal() + np.sum(kept - scaled, axis=0))
    prune = round_preserving_row_totals(scaled.astype(int)).astype(int)
    if num_to_remove is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            # cleanlab divides column j by row j's sum here (broadcasting), kept for identical output.
            psy = prune / np.sum(prune, axis=1)
            noise_per_given = psy.sum(axis=1) - psy.diagonal()
            target = (psy.T * num_to_remove / noise_per_given).T
            np.fill_diagonal(target, label_counts - num_to_remove)
            prune = round_preserving_row_totals(target)
    return prune


def _prune_by_class(prep: Prepared, prune: np.ndarray, prunable: np.ndarray) -> np.ndarray:
    """Per class i, its ``n_i - prune[i, i]`` examples with the lowest ``p_i``
    (cleanlab.filter._prune_by_class)."""
    mask = np.zeros(prep.labels.shape[0], dtype=bool)
    grouped_conf = prep.self_conf[prep.groups.order]
    for k in np.flatnonzero(prunable):
        lo, hi = prep.groups.starts[k], prep.groups.starts[k + 1]
        num_issues = int(hi - lo - prune[k, k])
        if num_issues >= 1:
            rows = prep.groups.order[lo:hi]
            mask[rows[argsort_prefix_mask(grouped_conf[lo:hi], num_issues)]] = True
    return mask


def _prune_by_noise_rate(prep: Prepared, prune: np.ndarray, prunable: np.ndarray) -> np.ndarray:
    """Per off-diagonal cell (given k, true j), the ``prune[j, k]`` examples labelled k with the
    largest margin ``p_j - p_k`` (cleanlab.filter._prune_by_count).

    Per class, the margins of all its rows against every class are one (K, n_k) array; each cell's
    cut value comes from ``np.partition`` (O(n_k)) instead of a full sort. Only a cell whose cut
    falls inside a run of tied margins is settled by the same ``np.argsort(-margin)`` cleanlab
    runs, on the same array, so tied examples are chosen identically.
    """
    mask = np.zeros(prep.labels.shape[0], dtype=bool)
    p = prep.pred_probs
    largest = int(prep.label_counts.max())
    # One reused buffer: a fresh multi-megabyte array per class costs more in page faults than
    # the arithmetic.
    margin_buf = np.empty((prep.num_classes, largest), dtype=p.dtype)
    for k in np.flatnonzero(prunable):
        take = prune[:, k].copy()
        take[k] = 0
        cells = np.flatnonzero(take > 0)
        if cells.size == 0:
            continue
        rows = prep.groups.rows(k)
        size = rows.shape[0]
        if take.max() >= size:
            mask[rows] = True
            continue
        neg_margin = margin_buf[:, :size]
        _transposed_margins(p, rows, k, neg_margin)
        flagged = np.zeros(size, dtype=bool)
        for j in cells:
            values, n_take = neg_margin[j], int(take[j])
            cut = np.partition(values, n_take - 1)[n_take - 1]
            chosen = values <= cut
            if np.count_nonzero(chosen) == n_take:
                flagged |= chosen
            else:
                exact = np.negative(p[rows, j] - p[rows, k])
                flagged[np.argsort(exact)[:n_take]] = True
        mask[rows[flagged]] = True
    return mask


def _transposed_margins(pred_probs: np.ndarray, rows: np.ndarray, k: int, out: np.ndarray) -> None:
    """``out[j, r] = p[rows[r], k] - p[rows[r], j]``, gathered and transposed in row tiles that stay
    in cache (several times faster than gathering, then transposing, the whole (n_k, K) block).

    ``p_k - p_j`` equals ``-(p_j - p_k)`` exactly (IEEE subtraction is symmetric) up to the sign of
    zero, which no comparison sees.
    """
    for lo in range(0, rows.shape[0], CL_TRANSPOSE_TILE_ROWS):
        tile = pred_probs[rows[lo:lo + CL_TRANSPOSE_TILE_ROWS]]
        out[:, lo:lo + CL_TRANSPOSE_TILE_ROWS] = (tile[:, k:k + 1] - tile).T
