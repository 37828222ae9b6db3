"""Detectors beyond confident learning: AUM, small loss, forgetting, kNN, ReCoV, multi-label, ensemble."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.data import make_synthetic
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError
from robustlab.label_noise import (
    LabelIssues,
    aum_issues,
    aum_threshold_issues,
    combine_by_rank,
    forgetting_issues,
    knn_issues,
    knn_label_distribution,
    multilabel_issues,
    multilabel_quality_scores,
    normalized_ranks,
    recov_issues,
    small_loss_issues,
    symmetric_noise,
)
from robustlab.models import ModelConfig
from robustlab.training import TrainConfig, TrainingRecords


def _records(margin: list[list[float]], correct: list[list[int]] | None = None,
             loss: list[list[float]] | None = None) -> TrainingRecords:
    m = torch.tensor(margin, dtype=torch.float32)
    c = torch.tensor(correct, dtype=torch.bool) if correct is not None else m > 0
    lo = torch.tensor(loss, dtype=torch.float32) if loss is not None else -m
    return TrainingRecords(loss=lo, margin=m, correct=c)


def _noisy_blobs(n: int = 240, rate: float = 0.15, seed: int = 0, separation: float = 8.0):
    g = torch.Generator().manual_seed(seed)
    task = make_synthetic(n, num_classes=3, dim=4, separation=separation, std=1.0, generator=g)
    ds = task.dataset
    noisy = symmetric_noise(ds.labels, 3, rate, generator=g)
    return ds.with_labels(noisy.labels), noisy.noise_mask.numpy()


def _precision_recall(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = float((mask & truth).sum())
    return tp / max(1, mask.sum()), tp / max(1, truth.sum())


# --------------------------------------------------------------------------- records-based
def test_aum_hand_made_records():
    # Epochs x examples. AUM = column means: [1.5, -0.5, 0.0, -2.0].
    rec = _records([[1.0, 1.0, -1.0, -3.0], [2.0, -2.0, 1.0, -1.0]])
    res = aum_issues(rec)
    np.testing.assert_allclose(res.scores, [1.5, -0.5, 0.0, -2.0])
    np.testing.assert_array_equal(res.mask, [False, True, False, True])
    np.testing.assert_array_equal(res.ranked_indices, [3, 1])
    assert res.method == "aum" and res.threshold == 0.0 and res.num_issues == 2
    res = aum_issues(rec, threshold=0.5, start=1)
    np.testing.assert_allclose(res.scores, [2.0, -2.0, 1.0, -1.0])
    np.testing.assert_array_equal(res.ranked_indices, [1, 3])
    with pytest.raises(InvalidTypeError, match="'records'"):
        aum_issues(np.zeros((2, 4)))
    assert not res.scores.flags.writeable and not res.mask.flags.writeable


def test_forgetting_events_known_answer():
    correct = [
        [1, 0, 1, 0, 1],
        [0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0],
        [0, 0, 1, 0, 1],
    ]  # epochs x examples
    # Column transitions 1->0: ex0: 1,0,1,0 -> 2 events; ex1 never correct; ex2: 1,1,0,1 -> 1;
    # ex3: 0,1,1,0 -> 1; ex4: 1,1,0,1 -> 1.
    rec = _records(np.zeros((4, 5)).tolist(), correct=correct,
                   loss=[[0.1, 2.0, 0.3, 0.4, 0.9]] * 4)
    res = forgetting_issues(rec)
    assert res.details["events"] == [2, 0, 1, 1, 1] and res.details["never_learned"] == 1
    np.testing.assert_array_equal(res.mask, [False, True, False, False, False])
    np.testing.assert_allclose(res.scores, [-2, -4, -1, -1, -1])
    res = forgetting_issues(rec, min_events=1)
    # All flagged; ranked by events (never-learned first), ties by higher mean loss first.
    np.testing.assert_array_equal(res.ranked_indices, [1, 0, 4, 3, 2])


def test_small_loss_num_issues_and_mixture():
    loss = [[5.0, 0.1, 4.0, 0.2, 0.1, 0.3, 0.2, 6.0, 0.15, 0.25]] * 3
    rec = _records(np.zeros((3, 10)).tolist(), loss=loss)
    res = small_loss_issues(rec, num_issues=2)
    np.testing.assert_array_equal(res.ranked_indices, [7, 0])
    res = small_loss_issues(rec)
    np.testing.assert_array_equal(np.flatnonzero(res.mask), [0, 2, 7])


def test_aum_threshold_samples_flag_injected_flips():
    ds, truth = _noisy_blobs()
    config = ModelConfig("mlp", ds.input_shape, ds.num_classes, params={"hidden_sizes": [32]})
    train = TrainConfig(epochs=12, batch_size=64, optimizer="adamw", lr=1e-2, weight_decay=0.0)
    res = aum_threshold_issues(ds, config, seed=0, train_config=train)
    assert res.method == "aum-threshold" and len(res.details["thresholds"]) == 2
    assert res.details["num_threshold_samples"] == 240 // 4
    precision, recall = _precision_recall(res.mask, truth)
    base = truth.mean()
    assert precision > 3 * base and recall > 0.6, (precision, recall, base)
    with pytest.raises(InvalidParameterError, match="'num_runs'"):
        aum_threshold_issues(ds, config, seed=0, train_config=train, num_runs=5)


# --------------------------------------------------------------------------- kNN
def test_knn_finds_flips_on_separable_data():
    ds, truth = _noisy_blobs(n=300, rate=0.1)
    x = ds.tensors()[0]
    for method in ("vote", "rank"):
        res = knn_issues(x, ds.labels, k=10, method=method)
        precision, recall = _precision_recall(res.mask, truth)
        assert precision > 0.85 and recall > 0.85, (method, precision, recall)
    # Suggested labels recover the clean label of the flipped examples.
    clean = make_synthetic(300, num_classes=3, dim=4, separation=8.0, std=1.0,
                           generator=torch.Generator().manual_seed(0)).dataset.labels.numpy()
    res = knn_issues(x.numpy(), ds.labels.numpy(), method="vote")
    assert (res.suggested_labels[truth] == clean[truth]).mean() > 0.9


def test_knn_label_distribution_known_answer():
    # Unit vectors at these angles: cosine neighbours are the nearest angles.
    angles = torch.tensor([0.0, 0.1, 0.2, 3.0, 3.1])
    x = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 1, 1, 1])
    dist = knn_label_distribution(x, labels, k=2)
    np.testing.assert_allclose(dist, [[0.5, 0.5], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    res = knn_issues(x, labels, k=2)
    np.testing.assert_array_equal(res.mask, [False, False, True, False, False])
    with pytest.raises(ShapeError, match="'features'"):
        knn_issues(x[:4], labels)


# --------------------------------------------------------------------------- ReCoV
class GaussianPosterior:
    """Bayes posterior of isotropic unit-variance Gaussian classes with equal priors (fast estimator)."""

    def get_params(self, deep: bool = True) -> dict:
        return {}

    def set_params(self, **params):
        return self

    def fit(self, x, y):
        self.classes_ = np.unique(y)
        self.means_ = np.stack([x[y == c].mean(axis=0) for c in self.classes_])
        return self

    def predict_proba(self, x):
        logits = -0.5 * ((x[:, None, :] - self.means_[None]) ** 2).sum(axis=2)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def test_recov_flags_noisy_examples_more_than_chance():
    ds, truth = _noisy_blobs(n=200, rate=0.15, separation=5.0)
    res = recov_issues(ds, GaussianPosterior(), seed=0, num_repeats=40, n_splits=5)
    counts = np.asarray(res.details["counts"])
    assert counts.sum() == 40 * 40  # each repetition adds one fold of 200 / 5 examples
    assert counts[truth].mean() > 1.4 * counts[~truth].mean()  # chance: both 40 / 5 = 8
    precision, _ = _precision_recall(res.mask, truth)
    assert res.num_issues > 0 and precision > 2 * truth.mean()
    again = recov_issues(ds, GaussianPosterior(), seed=0, num_repeats=40, n_splits=5)
    np.testing.assert_array_equal(again.details["counts"], counts)
    with pytest.raises(InvalidParameterError, match="'n_splits'"):
        recov_issues(ds, GaussianPosterior(), seed=0, n_splits=500)


# --------------------------------------------------------------------------- multi-label
def _multilabel(n: int = 120, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, k)) < 0.4).astype(int)
    p = np.clip(np.where(truth == 1, 0.85, 0.1) + rng.normal(0, 0.08, (n, k)), 0.01, 0.99)
    labels = truth.copy()
    flip = rng.random(n) < 0.1
    col = rng.integers(0, k, n)
    labels[flip, col[flip]] = 1 - labels[flip, col[flip]]
    return labels, p, flip


def test_multilabel_scores_match_cleanlab():
    from cleanlab.multilabel_classification import get_label_quality_scores

    labels, p, _ = _multilabel()
    ours = multilabel_quality_scores(labels, p)
    theirs = get_label_quality_scores([list(np.flatnonzero(r)) for r in labels], p)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_multilabel_issues_match_cleanlab_and_find_flips():
    from cleanlab.multilabel_classification.filter import find_label_issues

    labels, p, flip = _multilabel()
    res = multilabel_issues(labels, p)
    theirs = find_label_issues([list(np.flatnonzero(r)) for r in labels], p)
    np.testing.assert_array_equal(res.mask, theirs)
    precision, recall = _precision_recall(res.mask, flip)
    assert precision > 0.9 and recall > 0.4  # flips are 10% of examples
    with pytest.raises(InvalidParameterError, match="'labels'.*0/1"):
        multilabel_issues(labels * 2, p)
    with pytest.raises(ShapeError, match="'pred_probs'"):
        multilabel_issues(labels, p[:, :2])


# --------------------------------------------------------------------------- ensemble
def _member(scores, mask, name):
    from robustlab.label_noise.detectors import _issues

    return _issues(np.asarray(mask, dtype=bool), np.asarray(scores, dtype=float), name)


def test_normalized_ranks_known_answer():
    np.testing.assert_allclose(normalized_ranks([3.0, 1.0, 2.0, 2.0]), [1.0, 0.0, 0.5, 0.5])
    np.testing.assert_allclose(normalized_ranks([7.0]), [0.5])


def test_combine_by_rank_known_answer():
    a = _member([0.1, 0.9, 0.5, 0.3], [1, 0, 0, 1], "a")   # ranks 0, 1, 2/3, 1/3
    b = _member([10.0, -5.0, 0.0, 3.0], [0, 1, 1, 0], "b")  # ranks 1, 0, 1/3, 2/3
    c = _member([1.0, 2.0, 3.0, 0.0], [0, 0, 0, 1], "c")    # ranks 1/3, 2/3, 1, 0
    res = combine_by_rank({"a": a, "b": b, "c": c})
    np.testing.assert_allclose(res.scores, [4 / 9, 5 / 9, 2 / 3, 1 / 3])
    # median of 2, 2, 1 issues -> 2 lowest combined: indices 3 then 0.
    np.testing.assert_array_equal(res.ranked_indices, [3, 0])
    assert res.method == "ensemble" and res.details["members"] == ["a", "b", "c"]
    res = combine_by_rank([a, b], weights=[3.0, 1.0], num_issues=1)
    np.testing.assert_allclose(res.scores, [0.25, 0.75, 7 / 12, 5 / 12])
    np.testing.assert_array_equal(res.ranked_indices, [0])
    with pytest.raises(InvalidParameterError, match="'weights'"):
        combine_by_rank([a, b], weights=[0.0, 0.0])
    with pytest.raises(InvalidTypeError, match="'issues'"):
        combine_by_rank([a, "b"])


def test_label_issues_is_frozen():
    res = _member([0.2, 0.1], [1, 1], "x")
    assert isinstance(res, LabelIssues) and res.num_issues == 2 and len(res) == 2
    np.testing.assert_array_equal(res.ranked_indices, [1, 0])
    with pytest.raises(AttributeError):
        res.method = "y"


def test_nearest_neighbours_chunked_equals_one_block(monkeypatch):
    from robustlab.label_noise import detectors

    x = torch.randn(37, 5, generator=torch.Generator().manual_seed(0))
    whole = [detectors.nearest_neighbours(x, 4, metric=m) for m in ("cosine", "euclidean")]
    monkeypatch.setattr(detectors, "KNN_CHUNK_ELEMENTS", 37 * 3)  # 3 rows per chunk
    for (idx, val), metric in zip(whole, ("cosine", "euclidean")):
        idx2, val2 = detectors.nearest_neighbours(x, 4, metric=metric)
        torch.testing.assert_close(val2, val)
        assert torch.equal(idx2, idx)
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    torch.testing.assert_close(whole[1][1], d.topk(4, largest=False).values, atol=1e-4, rtol=1e-4)
