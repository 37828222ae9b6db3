"""Dataset health: class balance, exact/near duplicates, outliers, noise estimate, suspects CSV."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from robustlab.data import Dataset
from robustlab.errors import InvalidTypeError
from robustlab.label_noise import DatasetHealth, dataset_health
from robustlab.label_noise.detectors import _issues
from robustlab.label_noise.health import (
    exact_duplicates,
    near_duplicates,
    outlier_scores,
)


def _blobs(n_per_class: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.2, 0.2, 0.2, 0.2], [0.8, 0.8, 0.2, 0.2], [0.2, 0.8, 0.8, 0.5]])
    x = torch.cat([c + 0.03 * torch.randn(n_per_class, 4, generator=g) for c in centres]).clamp(0, 1)
    y = torch.arange(3).repeat_interleave(n_per_class)
    return x, y


def _pred_probs(labels: torch.Tensor, flipped: list[int], k: int = 3) -> np.ndarray:
    """Confident, correct predictions of the *clean* class; flipped examples keep their clean class."""
    p = np.full((len(labels), k), 0.05)
    p[np.arange(len(labels)), labels.numpy()] = 0.9
    return p / p.sum(axis=1, keepdims=True)


def test_exact_and_conflicting_duplicates_found():
    x, y = _blobs()
    x[10] = x[3]            # same class copy
    x[50] = x[3]            # and a copy labelled as another class
    x[70] = x[65]
    ds = Dataset(x, y)
    groups = exact_duplicates(ds)
    assert [g.tolist() for g in groups] == [[3, 10, 50], [65, 70]]
    health = dataset_health(ds)
    assert health.num_exact_duplicates == 3
    assert [g.tolist() for g in health.conflicting_duplicate_groups] == [[3, 10, 50]]
    assert not any({3, 10} <= set(p) for p in health.near_duplicate_pairs.tolist())  # exact, not near


def test_near_duplicates_and_outliers_found():
    x, y = _blobs()
    x[20] = (x[5] + 1e-4).clamp(0, 1)   # a near copy
    x[40] = torch.tensor([1.0, 0.0, 1.0, 0.0])  # far from every blob
    ds = Dataset(x, y)
    pairs, sims = near_duplicates(ds.tensors()[0], threshold=0.999)
    assert [5, 20] in pairs.tolist() and sims[0] >= 0.999
    scores, mask, threshold = outlier_scores(ds.tensors()[0])
    assert mask[40] and int(scores.argmax()) == 40 and scores[40] > 3 * threshold
    health = dataset_health(ds, near_duplicate_threshold=0.999)
    assert health.outlier_mask[40] and health.outlier_mask.sum() <= 3
    assert [5, 20] in health.near_duplicate_pairs.tolist()
    assert health.embedding_source == "inputs"


def test_class_balance_noise_and_suspects_csv(tmp_path):
    x, y = _blobs()
    clean = y.clone()
    noisy = y.clone()
    flipped = [2, 31, 77]
    noisy[2], noisy[31], noisy[77] = 1, 2, 1  # a->b, b->c, c->b
    ds = Dataset(x, noisy, class_names=["a", "b", "c"])
    p = _pred_probs(clean, flipped)
    knn_scores = np.ones(90)
    knn_scores[[31, 5]] = [0.0, 0.1]
    knn = _issues(np.isin(np.arange(90), [31, 5]), knn_scores, "knn-vote")
    health = dataset_health(ds, pred_probs=p, detectors={"knn": knn})
    assert isinstance(health, DatasetHealth)
    assert health.class_counts.tolist() == [29, 31, 30]  # labels as given (two flips into "b")
    assert health.imbalance_ratio == pytest.approx(31 / 29)
    assert health.noise_rate == pytest.approx(3 / 90, abs=0.02)
    assert set(health.detector_issues) == {"confident_learning", "knn"}
    assert set(np.flatnonzero(health.detector_issues["confident_learning"].mask)) == set(flipped)
    text = health.to_csv(tmp_path / "suspects.csv")
    assert (tmp_path / "suspects.csv").read_text() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["rank", "index", "given_label", "suggested_label", "score", "flagged",
                             "flag_confident_learning", "flag_knn", "outlier", "duplicate"]
    assert len(rows) == 90 and [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    flagged = [r for r in rows if r["flagged"] == "1"]
    assert rows[:len(flagged)] == flagged  # flagged examples come first
    by_index = {int(r["index"]): r for r in rows}
    assert by_index[31]["given_label"] == "c" and by_index[31]["suggested_label"] == "b"
    assert by_index[31]["flag_confident_learning"] == "1" and by_index[31]["flag_knn"] == "1"
    assert by_index[5]["flag_confident_learning"] == "0" and by_index[5]["flag_knn"] == "1"
    assert int(flagged[0]["index"]) == 31  # lowest rank in both detectors
    top = list(csv.DictReader(io.StringIO(health.to_csv(top=2))))
    assert len(top) == 2


def test_bad_input():
    x, y = _blobs()
    ds = Dataset(x, y)
    with pytest.raises(InvalidTypeError, match="'data'"):
        dataset_health(x)
    with pytest.raises(ValueError, match="'pred_probs'"):
        dataset_health(ds, pred_probs=np.ones((90, 3)))
    with pytest.raises(InvalidTypeError, match="'detectors'"):
        dataset_health(ds, detectors={"x": "not issues"})
    with pytest.raises(ValueError, match="'features'"):
        dataset_health(ds, features=np.ones((10, 2)))
