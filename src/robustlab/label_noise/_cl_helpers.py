"""Private helpers of the confident-learning modules (``confident``, ``filter``, ``rank``).

Everything here trusts its inputs: the public functions validate first (``_checks``) and then call
these. The helpers exist to make the O(N K) work one pass over ``pred_probs`` and to reproduce
cleanlab 2.x bit for bit where its results depend on floating-point order or on how NumPy's default
(unstable) ``argsort`` breaks ties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_labels, check_pred_probs, fail
from robustlab._constants import (
    CL_ABSENT_CLASS_THRESHOLD,
    CL_CHUNK_ELEMENTS,
    CL_FLOAT_COMPARISON,
    CL_THRESHOLD_LOWER_BOUND,
    PROB_SUM_ATOL,
)
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError

__all__: list[str] = []


# --- input conversion ---------------------------------------------------------------------------


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """A validated tensor as a NumPy array (no copy for CPU tensors)."""
    return x.detach().cpu().numpy()


def as_numpy(x: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a NumPy array, before validation."""
    return to_numpy(x) if hasattr(x, "detach") else np.asarray(x)


def validate_inputs(labels: Any, pred_probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(labels, pred_probs)`` once and return them as NumPy arrays.

    ``pred_probs`` keeps float32/float64 (the dtype decides every comparison, as in cleanlab);
    half precision is widened to float32. ``labels`` becomes int64.

    The value checks of :func:`robustlab._checks.check_pred_probs` (finite, non-negative, rows
    summing to 1 within ``PROB_SUM_ATOL``) are first run here in two NumPy passes (row sums by a
    matrix-vector product: NaN/inf make a row sum non-finite); only when one fails is
    ``check_pred_probs`` called, to raise its one-line message. On a 1e6 x 100 array this takes
    about a tenth of the time of the torch checks.
    """
    if isinstance(pred_probs, torch.Tensor):
        p = to_numpy(pred_probs)
    elif isinstance(pred_probs, np.ndarray):
        p = pred_probs
    else:
        p = to_numpy(check_pred_probs("pred_probs", pred_probs))
    if p.ndim != 2 or p.dtype.kind != "f" or p.dtype.itemsize < 4:
        p = to_numpy(check_pred_probs("pred_probs", p)).astype(np.float32)
    n, k = p.shape
    if n == 0:
        fail("pred_probs", "non-empty, with one row per example", p, error=ShapeError)
    if k < 2:
        fail("pred_probs", "of shape (N, K) with K >= 2 classes", p, error=ShapeError)
    p = np.ascontiguousarray(p)
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    row_sums = p @ np.ones(k, dtype=p.dtype)
    if not (np.isfinite(row_sums).all() and p.min() >= 0
            and np.abs(row_sums - 1).max() <= PROB_SUM_ATOL):
        check_pred_probs("pred_probs", p)
    return _labels_array(labels, k, n), p


def _labels_array(labels: Any, num_classes: int, n: int) -> np.ndarray:
    """Labels as int64 NumPy; checked in NumPy, with ``check_labels`` writing any error message."""
    y = to_numpy(labels) if isinstance(labels, torch.Tensor) else labels
    if not (isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype.kind in "iu" and y.shape[0] == n
            and y.min() >= 0 and y.max() < num_classes):
        y = to_numpy(check_labels("labels", labels, num_classes=num_classes, n=n))
    return y.astype(np.int64, copy=False)


def validate_confident_joint(confident_joint: Any, num_classes: int) -> np.ndarray:
    """A user-supplied ``(K, K)`` count matrix: finite and non-negative, dtype kept."""
    if isinstance(confident_joint, torch.Tensor):
        confident_joint = to_numpy(confident_joint)
    if not isinstance(confident_joint, np.ndarray):
        try:
            confident_joint = np.asarray(confident_joint)
        except (TypeError, ValueError):
            fail("confident_joint", "a (K, K) array of counts", confident_joint, error=InvalidTypeError)
    if confident_joint.dtype.kind not in "iuf":
        fail("confident_joint", "a numeric (K, K) array of counts", confident_joint, error=InvalidTypeError)
    if confident_joint.shape != (num_classes, num_classes):
        raise ShapeError(
            f"The 'confident_joint' parameter must have shape ({num_classes}, {num_classes}) (one row and "
            f"column per class). Got shape {confident_joint.shape} instead.",
            expected=(num_classes, num_classes), got=confident_joint.shape,
        )
    if confident_joint.dtype.kind == "f" and not np.isfinite(confident_joint).all():
        fail("confident_joint", "finite counts", "NaN/inf entries", describe_got=False)
    if (confident_joint < 0).any():
        fail("confident_joint", "non-negative counts", f"minimum {confident_joint.min()}", describe_got=False)
    return confident_joint


def check_filter_labels(labels: Any, num_classes: int) -> np.ndarray:
    """Labels for the matrix-only functions (no ``pred_probs``): int64 in ``[0, K)``."""
    y = check_labels("labels", labels, num_classes=num_classes)
    if y.numel() == 0:
        raise InvalidParameterError("The 'labels' parameter must be non-empty. Got 0 labels instead.")
    return to_numpy(y).astype(np.int64, copy=False)


# --- grouping rows by given label ---------------------------------------------------------------


@dataclass(frozen=True)
class Groups:
    """Row indices grouped by given label, each group in ascending row order.

    ``order[starts[k]:starts[k + 1]]`` are the rows labelled ``k`` in their original order, which is
    the order ``pred_probs[labels == k]`` has in cleanlab; keeping it makes per-class means and
    argsort tie-breaking identical.
    """

    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    def rows(self, k: int) -> np.ndarray:
        return self.order[self.starts[k]:self.starts[k + 1]]


def group_by_label(labels: np.ndarray, num_classes: int) -> Groups:
    counts = np.bincount(labels, minlength=num_classes)
    # A stable sort on a 16-bit key is a radix sort in NumPy: O(N), about 4x faster than int64.
    key = labels.astype(np.uint16) if num_classes <= np.iinfo(np.uint16).max else labels
    order = np.argsort(key, kind="stable")
    starts = np.zeros(num_classes + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return Groups(order=order, starts=starts, counts=counts)


def self_confidence(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``pred_probs[i, labels[i]]`` for every row (cleanlab.rank.get_self_confidence_for_each_label)."""
    return pred_probs[np.arange(labels.shape[0]), labels]


def class_thresholds(labels: np.ndarray, pred_probs: np.ndarray, groups: Groups,
                     self_conf: np.ndarray) -> np.ndarray:
    """Per-class mean self-confidence, 2 for absent classes, clipped below at 2e-6.

    Matches cleanlab.count.get_confident_thresholds bit for bit: each mean is ``np.mean`` over the
    class's self-confidences in original row order (same pairwise summation), and the result array
    is built from the same Python list so its dtype follows the same promotion (float32 when every
    class is present in float32 ``pred_probs``, float64 otherwise).
    """
    grouped = self_conf[groups.order]
    values: list[Any] = []
    for k in range(pred_probs.shape[1]):
        lo, hi = groups.starts[k], groups.starts[k + 1]
        values.append(np.mean(grouped[lo:hi]) if hi > lo else CL_ABSENT_CLASS_THRESHOLD)
    return np.clip(values, a_min=CL_THRESHOLD_LOWER_BOUND, a_max=None)


# --- one pass over pred_probs -------------------------------------------------------------------


@dataclass(frozen=True)
class RowStats:
    """Per-row quantities every confident-learning result is built from.

    ``argmax`` / ``max``: first index and value of the row maximum. ``guess``: the confident-joint
    column the row is counted in (``-1`` when no class reaches its threshold).
    """

    argmax: np.ndarray
    max: np.ndarray
    guess: np.ndarray


def row_stats(pred_probs: np.ndarray, thresholds: np.ndarray | None) -> RowStats:
    """Row argmax/max and, given thresholds, the confident-joint column of every row.

    The confident column (Northcutt et al. 2021, Sec. 3.1, Eq. 1-2, as in
    cleanlab.count.compute_confident_joint): classes with ``p_j >= t_j - 1e-6`` are "confident";
    with exactly one, the row goes to it; with several, to the row argmax; with none, nowhere.
    Shortcut: when the row argmax is itself confident the answer is the argmax whatever the count,
    so the (N, K) comparison is only made for the rows whose argmax is not confident.
    """
    n, k = pred_probs.shape
    argmax = pred_probs.argmax(axis=1)
    row_max = pred_probs[np.arange(n), argmax]
    if thresholds is None:
        return RowStats(argmax=argmax, max=row_max, guess=np.empty(0, dtype=np.int64))
    cut = thresholds - CL_FLOAT_COMPARISON
    guess = argmax.copy()
    unsure = ~(row_max >= cut[argmax])
    step = max(1, CL_CHUNK_ELEMENTS // k)
    if np.count_nonzero(unsure) * 2 > n:
        # Most rows need the comparison: contiguous chunks beat gathering the rows first.
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            _resolve(pred_probs[lo:hi], cut, argmax[lo:hi], unsure[lo:hi], guess[lo:hi])
    else:
        rows = np.flatnonzero(unsure)
        for lo in range(0, rows.shape[0], step):
            part = rows[lo:lo + step]
            sub = guess[part]
            _resolve(pred_probs[part], cut, argmax[part], np.ones(part.shape[0], dtype=bool), sub)
            guess[part] = sub
    return RowStats(argmax=argmax, max=row_max, guess=guess)


def _resolve(block: np.ndarray, cut: np.ndarray, argmax: np.ndarray, unsure: np.ndarray,
             guess: np.ndarray) -> None:
    """Write the confident column of the ``unsure`` rows of ``block`` into ``guess`` (in place):
    the single confident class, the argmax when several are confident, -1 when none is."""
    confident = block >= cut
    count = np.count_nonzero(confident, axis=1)
    resolved = np.where(count == 1, confident.argmax(axis=1), np.where(count == 0, -1, argmax))
    guess[unsure] = resolved[unsure]


def reduce_issues_mask(labels: np.ndarray, pred_probs: np.ndarray, self_conf: np.ndarray,
                       stats: RowStats) -> np.ndarray:
    """Rows whose given label would be the argmax after adding 1e-6 to its probability.

    cleanlab.count._reduce_issues copies ``pred_probs``, adds 1e-6 at the given label and compares
    the argmax with the label. With ``q = p[label] + 1e-6`` (rounded in the array's dtype), ``m`` the
    row max and ``a`` its first index, the modified row's first argmax is the label exactly when
    ``q > m``, or ``q == m`` and no index before the label holds ``m`` (``a >= label``; ``a == label``
    when the addition does not change ``p[label]``). No copy of ``pred_probs`` is needed.
    """
    bumped = self_conf.copy()
    bumped += CL_FLOAT_COMPARISON
    return (bumped > stats.max) | ((bumped == stats.max) & (stats.argmax >= labels))


def confident_counts(labels: np.ndarray, guess: np.ndarray, num_classes: int) -> np.ndarray:
    """Unclipped, uncalibrated confident joint: rows given label, columns confident (true) label.

    Counted as (true, given) and returned transposed, i.e. Fortran-ordered like cleanlab's
    ``confusion_matrix(true, given).T``: the calibration sums the matrix in memory order, and a
    different summation order can move a rounded count by one.
    """
    counted = guess >= 0
    flat = guess[counted] * num_classes + labels[counted]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).T


# --- exact "first n of np.argsort" --------------------------------------------------------------


def argsort_prefix_mask(values: np.ndarray, n: int) -> np.ndarray:
    """Boolean mask of the set ``np.argsort(values)[:n]`` (NumPy's default sort), in O(len) time.

    The n smallest values are found with ``np.partition``; only when the n-th smallest value is
    tied across the cut does the set depend on how the default (unstable) sort orders equal
    values, and then the same ``np.argsort`` call cleanlab makes is run on the same array.
    """
    size = values.shape[0]
    mask = np.zeros(size, dtype=bool)
    if n <= 0:
        return mask
    if n >= size:
        mask[:] = True
        return mask
    pivot = np.partition(values, n - 1)[n - 1]
    below = values < pivot
    at = values == pivot
    if int(np.count_nonzero(below)) + int(np.count_nonzero(at)) == n:
        return below | at
    mask[np.argsort(values)[:n]] = True
    return mask


# --- cleanlab's rounding of count matrices ------------------------------------------------------


def round_preserving_row_totals(matrix: np.ndarray) -> np.ndarray:
    """Round each row to integers keeping its (rounded) total.

    Same rule as cleanlab.internal.util.round_preserving_sum applied row by row: round every entry,
    then move the rounding deficit onto the entries with the largest (or smallest, for a surplus)
    rounding residual, ordered by NumPy's default argsort of the residuals.
    """
    out = np.empty(matrix.shape, dtype=int)
    for i in range(matrix.shape[0]):
        floats = np.asarray(matrix[i], dtype=float)
        ints = floats.round()
        target = np.sum(floats).round()
        total = np.sum(ints).round()
        while abs(total - target) > CL_FLOAT_COMPARISON:
            gap = np.round(target - total)
            step = -1 if gap < 0 else 1
            n_changes = min(int(abs(gap)), floats.shape[0])
            ranked = np.argsort(floats - ints)
            chosen = (ranked[::-1] if step == 1 else ranked)[:n_changes]
            ints[chosen] += step
            total = np.sum(ints).round()
        out[i] = ints.astype(int)
    return out


# --- everything derived from (labels, pred_probs), computed at most once -------------------------


class Prepared:
    """Validated ``(labels, pred_probs)`` and the per-row/per-class quantities derived from them,
    each computed on first use and then shared by thresholds, joint, filters and scores."""

    def __init__(self, labels: np.ndarray, pred_probs: np.ndarray) -> None:
        self.labels = labels
        self.pred_probs = pred_probs
        self.num_classes = pred_probs.shape[1]
        self._groups: Groups | None = None
        self._self_conf: np.ndarray | None = None
        self._thresholds: np.ndarray | None = None
        self._stats: RowStats | None = None

    @classmethod
    def from_user(cls, labels: Any, pred_probs: Any) -> Prepared:
        return cls(*validate_inputs(labels, pred_probs))

    @property
    def groups(self) -> Groups:
        if self._groups is None:
            self._groups = group_by_label(self.labels, self.num_classes)
        return self._groups

    @property
    def self_conf(self) -> np.ndarray:
        if self._self_conf is None:
            self._self_conf = self_confidence(self.labels, self.pred_probs)
        return self._self_conf

    @property
    def label_counts(self) -> np.ndarray:
        return self.groups.counts

    @property
    def thresholds(self) -> np.ndarray:
        if self._thresholds is None:
            self._thresholds = class_thresholds(self.labels, self.pred_probs, self.groups, self.self_conf)
        return self._thresholds

    @property
    def stats(self) -> RowStats:
        """Row statistics with the default (per-class mean) thresholds."""
        if self._stats is None or self._stats.guess.shape[0] != self.labels.shape[0]:
            self._stats = row_stats(self.pred_probs, self.thresholds)
        return self._stats

    @property
    def argmax_stats(self) -> RowStats:
        """Row argmax and max only (``guess`` empty unless the full stats were computed)."""
        if self._stats is None:
            self._stats = row_stats(self.pred_probs, None)
        return self._stats

    def reduce_mask(self) -> np.ndarray:
        return reduce_issues_mask(self.labels, self.pred_probs, self.self_conf, self.argmax_stats)
