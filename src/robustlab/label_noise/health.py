"""Dataset health — a "nutrition label" for a labelled dataset.

:func:`dataset_health` collects, in one frozen :class:`DatasetHealth`:

* class balance (counts, fractions, imbalance ratio);
* exact duplicates (a hash of each example's input bytes) and conflicting duplicates (same input,
  different labels);
* near duplicates (cosine similarity of embeddings >= a threshold);
* outliers (mean distance to the ``k`` nearest neighbours above Tukey's far-out fence);
* the estimated noise rate and noise matrix (confident learning, from out-of-sample
  ``pred_probs``);
* ranked suspects with their given and suggested labels, and which detector flagged each.

Embeddings are whatever the caller passes: penultimate features of a model
(:func:`~robustlab.label_noise.oof.logits_and_features`, or the out-of-sample features of
:func:`~robustlab.label_noise.cross_val_outputs`), else the inputs flattened.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_int, check_number, check_pred_probs, fail
from robustlab._constants import (
    EVAL_BATCH_SIZE,
    NEAR_DUPLICATE_COSINE,
    OUTLIER_IQR_FACTOR,
    OUTLIER_NEIGHBOURS,
)
from robustlab._io import atomic_write_text
from robustlab.data.dataset import Dataset
from robustlab.errors import InvalidTypeError
from robustlab.label_noise.detectors import (
    LabelIssues,
    _check_features,
    combine_by_rank,
    confident_learning_issues,
    nearest_neighbours,
)

__all__ = ["DatasetHealth", "dataset_health", "exact_duplicates", "near_duplicates", "outlier_scores"]


@dataclass(frozen=True, eq=False)
class DatasetHealth:
    """The health summary of a labelled dataset (see :func:`dataset_health`).

    Attributes
    ----------
    num_examples : int
    class_names : tuple of str
    class_counts : ndarray of int64, shape (K,)
    exact_duplicate_groups : list of ndarray
        Groups (size >= 2) of indices whose inputs are byte-identical.
    conflicting_duplicate_groups : list of ndarray
        The exact-duplicate groups whose members carry different labels.
    near_duplicate_pairs : ndarray of int64, shape (P, 2), and near_duplicate_similarity (P,)
        Pairs ``i < j`` (not exact duplicates) with cosine similarity >= the threshold.
    outlier_scores : ndarray of float64, shape (N,)
        Mean Euclidean distance to the ``k`` nearest neighbours in embedding space.
    outlier_mask : ndarray of bool, shape (N,)
    outlier_threshold : float
    noise : NoiseEstimate or None
        Confident-learning estimate (:func:`robustlab.label_noise.estimate_noise`) when
        ``pred_probs`` were given.
    issues : LabelIssues or None
        The combined ranking of the detectors (or the single detector).
    detector_issues : dict name -> LabelIssues
        Every detector's own result (its flags go into the CSV).
    labels : ndarray of int64, shape (N,)
    suggested_labels : ndarray of int64, shape (N,) or None
    embedding_source : str
        ``"features"`` or ``"inputs"``.
    """

    num_examples: int
    class_names: tuple[str, ...]
    class_counts: np.ndarray
    labels: np.ndarray
    exact_duplicate_groups: list[np.ndarray]
    conflicting_duplicate_groups: list[np.ndarray]
    near_duplicate_pairs: np.ndarray
    near_duplicate_similarity: np.ndarray
    outlier_scores: np.ndarray
    outlier_mask: np.ndarray
    outlier_threshold: float
    noise: Any
    issues: LabelIssues | None
    detector_issues: dict[str, LabelIssues] = field(default_factory=dict)
    suggested_labels: np.ndarray | None = None
    embedding_source: str = "inputs"

    # ------------------------------------------------------------------ derived numbers
    @property
    def class_fractions(self) -> np.ndarray:
        return self.class_counts / max(1, self.num_examples)

    @property
    def imbalance_ratio(self) -> float:
        """Largest class count over the smallest non-empty one (1 = balanced)."""
        nz = self.class_counts[self.class_counts > 0]
        return float(nz.max() / nz.min()) if nz.size else float("nan")

    @property
    def num_exact_duplicates(self) -> int:
        """Examples that repeat an earlier example's input (group size minus one, summed)."""
        return int(sum(len(g) - 1 for g in self.exact_duplicate_groups))

    @property
    def noise_rate(self) -> float:
        """Estimated fraction of wrong labels, or NaN without ``pred_probs``."""
        return float("nan") if self.noise is None else float(self.noise.noise_rate)

    @property
    def num_label_issues(self) -> int:
        return 0 if self.issues is None else self.issues.num_issues

    def suspects(self, top: int | None = None) -> list[dict[str, Any]]:
        """Ranked suspects: flagged examples first (worst first), then by score, up to ``top``.

        Each row: ``rank, index, given_label, suggested_label, score`` (the combined score; lower
        is more suspicious), ``flagged`` (by the combination), one ``flag_<detector>`` per
        detector, ``outlier`` and ``duplicate``.
        """
        if self.issues is None:
            return []
        n = self.num_examples
        flagged = list(self.issues.ranked_indices)
        rest_mask = ~self.issues.mask
        rest = np.flatnonzero(rest_mask)
        rest = rest[np.lexsort((rest, self.issues.scores[rest]))]
        order = flagged + [int(i) for i in rest]
        if top is not None:
            order = order[:check_int("top", top, low=0)]
        dup = np.zeros(n, dtype=bool)
        for g in self.exact_duplicate_groups:
            dup[g] = True
        if self.near_duplicate_pairs.size:
            dup[self.near_duplicate_pairs.ravel()] = True
        names = self.class_names
        rows = []
        for rank, i in enumerate(order, start=1):
            given = int(self.labels[i])
            sug = None if self.suggested_labels is None else int(self.suggested_labels[i])
            row: dict[str, Any] = {
                "rank": rank, "index": int(i), "given_label": names[given],
                "suggested_label": "" if sug is None else names[sug],
                "score": float(self.issues.scores[i]), "flagged": bool(self.issues.mask[i]),
            }
            for name, det in self.detector_issues.items():
                row[f"flag_{name}"] = bool(det.mask[i])
            row["outlier"] = bool(self.outlier_mask[i])
            row["duplicate"] = bool(dup[i])
            rows.append(row)
        return rows

    def to_csv(self, path: str | os.PathLike[str] | None = None, *, top: int | None = None) -> str:
        """The ranked suspects as CSV text; also written (atomically) to ``path`` when given.

        Columns: ``rank, index, given_label, suggested_label, score, flagged, flag_<detector>...,
        outlier, duplicate``; every example appears (flagged ones first) unless ``top`` limits it.
        """
        rows = self.suspects(top)
        columns = ["rank", "index", "given_label", "suggested_label", "score", "flagged",
                   *[f"flag_{n}" for n in self.detector_issues], "outlier", "duplicate"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else
                                 int(v) if isinstance(v, bool) else v) for k, v in row.items()})
        text = buffer.getvalue()
        if path is not None:
            if not isinstance(path, (str, os.PathLike)):
                fail("path", "a file path", path, error=InvalidTypeError)
            atomic_write_text(Path(path), text)
        return text


# --------------------------------------------------------------------------- pieces
def _flat_inputs(data: Dataset) -> torch.Tensor:
    return torch.cat([b.inputs.reshape(b.inputs.shape[0], -1) for b in data.batches(EVAL_BATCH_SIZE)]) \
        if len(data) else torch.empty(0, 1)


def exact_duplicates(data: Dataset) -> list[np.ndarray]:
    """Groups (size >= 2, sorted, ordered by first index) of examples with byte-identical inputs.

    Each input is hashed with BLAKE2b over its float32 bytes (after the Dataset's conversion
    to [0, 1]), so ``-0.0`` and ``0.0`` differ but nothing else that looks equal does.
    """
    if not isinstance(data, Dataset):
        fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
    groups: dict[bytes, list[int]] = {}
    for batch in data.batches(EVAL_BATCH_SIZE):
        x = batch.inputs.reshape(batch.inputs.shape[0], -1).contiguous().numpy()
        for j, i in enumerate(batch.indices.tolist()):
            groups.setdefault(hashlib.blake2b(x[j].tobytes(), digest_size=16).digest(), []).append(i)
    return [np.asarray(sorted(g), dtype=np.int64) for g in sorted(groups.values(), key=min) if len(g) > 1]


def near_duplicates(features: Any, *, threshold: float = NEAR_DUPLICATE_COSINE,
                    k: int = OUTLIER_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i < j``, with centred cosine similarity >= ``threshold`` among each row's ``k`` neighbours.

    Returns the pairs ``(P, 2)`` int64 and their similarities ``(P,)``, sorted by similarity
    (descending), then by ``i, j``.

    Notes
    -----
    The features are centred (the mean row subtracted) before the cosine: raw pixels and
    post-ReLU embeddings are all non-negative, which pushes every cosine towards 1 (on digits the
    median nearest-neighbour cosine of raw pixels is 0.97, 0.89 after centring). Penultimate
    features of a *trained* classifier collapse within each class, so two ordinary examples of a
    class can look like near duplicates there; inputs (or a generic pretrained embedding) are the
    better space for duplicates, trained features the better space for label consistency.
    """
    x = _check_features(features)
    x = x - x.mean(dim=0, keepdim=True)
    threshold = check_number("threshold", threshold, low=-1.0, high=1.0)
    n = x.shape[0]
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    k = min(check_int("k", k, low=1), n - 1)
    idx, sim = nearest_neighbours(x, k, metric="cosine")
    rows = torch.arange(n)[:, None].expand_as(idx)
    keep = sim >= threshold - 1e-6
    i, j, s = rows[keep].numpy(), idx[keep].cpu().numpy(), sim[keep].cpu().double().numpy()
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    pairs: dict[tuple[int, int], float] = {}
    for a, b, v in zip(lo.tolist(), hi.tolist(), s.tolist()):
        pairs[(a, b)] = max(v, pairs.get((a, b), -2.0))
    items = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    if not items:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    return (np.asarray([p for p, _ in items], dtype=np.int64),
            np.asarray([v for _, v in items], dtype=np.float64))


def outlier_scores(features: Any, *, k: int = OUTLIER_NEIGHBOURS,
                   iqr_factor: float = OUTLIER_IQR_FACTOR) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean Euclidean distance to the ``k`` nearest neighbours, and outliers beyond Tukey's fence.

    Returns ``(scores (N,), mask (N,), threshold)`` with ``threshold = Q3 + iqr_factor * IQR`` of
    the scores (``iqr_factor=3``: Tukey's "far out" fence) and ``mask = scores > threshold``.

    References
    ----------
    .. [1] Ramaswamy, Rastogi & Shim, "Efficient Algorithms for Mining Outliers from Large Data
       Sets", SIGMOD 2000 (kNN-distance outliers); Tukey, "Exploratory Data Analysis", 1977.
    """
    x = _check_features(features)
    iqr_factor = check_number("iqr_factor", iqr_factor, low=0.0)
    n = x.shape[0]
    if n < 2:
        return np.zeros(n), np.zeros(n, dtype=bool), float("inf")
    k = min(check_int("k", k, low=1), n - 1)
    _, dist = nearest_neighbours(x, k, metric="euclidean")
    scores = dist.double().mean(dim=1).cpu().numpy()
    q1, q3 = np.percentile(scores, [25, 75])
    threshold = float(q3 + iqr_factor * (q3 - q1))
    return scores, scores > threshold, threshold


# --------------------------------------------------------------------------- the summary
def dataset_health(
    data: Dataset,
    *,
    pred_probs: Any = None,
    features: Any = None,
    detectors: Mapping[str, LabelIssues] | None = None,
    near_duplicate_threshold: float = NEAR_DUPLICATE_COSINE,
    outlier_neighbours: int = OUTLIER_NEIGHBOURS,
) -> DatasetHealth:
    """Health summary of a labelled dataset: balance, duplicates, outliers, noise, suspects.

    Parameters
    ----------
    data : Dataset
        ``N`` examples with their given labels.
    pred_probs : array (N, K), optional
        Out-of-sample predicted probabilities (e.g. :func:`~robustlab.label_noise.cross_val_pred_probs`).
        Enables the noise estimate and the confident-learning detector (``"confident_learning"``).
    features : array (N, F), optional
        Embeddings for near duplicates and outliers; default: the inputs flattened.
    detectors : dict name -> LabelIssues, optional
        Further detector results on the same examples (e.g. ``{"aum": ..., "knn": ...}``); with
        confident learning they are combined by :func:`~robustlab.label_noise.combine_by_rank`
        (a single detector is used as it is).
    near_duplicate_threshold : float, default 0.995
        Cosine similarity at or above which two examples are near duplicates.
    outlier_neighbours : int, default 5

    Returns
    -------
    DatasetHealth
    """
    if not isinstance(data, Dataset):
        fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
    n, k = len(data), data.num_classes
    labels = data.labels
    members: dict[str, LabelIssues] = {}
    noise = None
    suggested = None
    if pred_probs is not None:
        from robustlab.label_noise import estimate_noise

        p = check_pred_probs("pred_probs", pred_probs, n=n, num_classes=k)
        noise = estimate_noise(labels.numpy(), p.double().numpy())
        members["confident_learning"] = confident_learning_issues(labels.numpy(), p.double().numpy())
        suggested = members["confident_learning"].suggested_labels
    if detectors is not None:
        if not isinstance(detectors, Mapping):
            fail("detectors", "a dict name -> LabelIssues", detectors, error=InvalidTypeError)
        for name, det in detectors.items():
            if not isinstance(det, LabelIssues) or len(det) != n:
                fail("detectors", f"LabelIssues on the same {n} examples", det, error=InvalidTypeError)
            members[str(name)] = det
            if suggested is None and det.suggested_labels is not None:
                suggested = det.suggested_labels
    if features is None:
        emb, source = _flat_inputs(data), "inputs"
    else:
        emb, source = _check_features(features, n), "features"
    issues = None
    if len(members) == 1:
        issues = next(iter(members.values()))
    elif members:
        issues = combine_by_rank(members)
    dup_groups = exact_duplicates(data)
    y = labels.numpy()
    conflicting = [g for g in dup_groups if len(set(y[g].tolist())) > 1]
    exact_pairs = {(int(a), int(b)) for g in dup_groups for a in g for b in g if a < b}
    pairs, sims = near_duplicates(emb, threshold=near_duplicate_threshold, k=outlier_neighbours)
    keep = np.asarray([tuple(p) not in exact_pairs for p in pairs.tolist()], dtype=bool)
    pairs, sims = (pairs[keep], sims[keep]) if pairs.size else (pairs, sims)
    scores, outliers, threshold = outlier_scores(emb, k=outlier_neighbours)
    return DatasetHealth(
        num_examples=n, class_names=data.class_names, class_counts=data.class_counts().numpy(),
        labels=y, exact_duplicate_groups=dup_groups, conflicting_duplicate_groups=conflicting,
        near_duplicate_pairs=pairs, near_duplicate_similarity=sims, outlier_scores=scores,
        outlier_mask=outliers, outlier_threshold=threshold, noise=noise, issues=issues,
        detector_issues=members, suggested_labels=suggested, embedding_source=source,
    )
