"""Confident learning: bad input gives one-line errors; torch input; known answers; properties."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import robustlab.label_noise as ln
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    RobustlabError,
    ShapeError,
    UnknownNameError,
)

pytestmark = pytest.mark.filterwarnings("ignore:Classes .* have at most")


def dataset(n: int = 200, k: int = 4, seed: int = 0, noise: float = 0.2):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    labels = true.copy()
    flip = rng.random(n) < noise
    labels[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), true] += 3.0
    p = np.exp(logits)
    return labels, p / p.sum(axis=1, keepdims=True), flip


LABELS, PROBS, _ = dataset()

# Every public function that takes (labels, pred_probs) first.
ENTRY_POINTS = {
    "per_class_thresholds": ln.per_class_thresholds,
    "compute_confident_joint": ln.compute_confident_joint,
    "estimate_joint": ln.estimate_joint,
    "estimate_noise": ln.estimate_noise,
    "num_label_issues": ln.num_label_issues,
    "find_label_issues": ln.find_label_issues,
    "find_label_issues_ranked": ln.find_label_issues_ranked,
    "get_label_quality_scores": ln.get_label_quality_scores,
}


def with_row(p: np.ndarray, row: list[float]) -> np.ndarray:
    q = p.copy()
    q[3] = row
    return q


BAD_INPUTS = [
    # (labels, pred_probs, error type, words the message must contain)
    (LABELS, PROBS[:, 0], ShapeError, "'pred_probs'"),
    (LABELS, PROBS[None], ShapeError, "'pred_probs'"),
    (LABELS, with_row(PROBS, [0.5, 0.5, 0.5, 0.5]), InvalidParameterError, "rows summing to 1"),
    (LABELS, with_row(PROBS, [np.nan, 0.5, 0.25, 0.25]), InvalidParameterError, "finite"),
    (LABELS, with_row(PROBS, [np.inf, 0.5, 0.25, 0.25]), InvalidParameterError, "finite"),
    (LABELS, with_row(PROBS, [-0.5, 1.0, 0.25, 0.25]), InvalidParameterError, "non-negative"),
    (LABELS, (PROBS * 100).astype(np.int64), InvalidTypeError, "'pred_probs'"),
    (np.where(LABELS == 0, 4, LABELS), PROBS, InvalidParameterError, "'labels'"),
    (np.where(LABELS == 0, -1, LABELS), PROBS, InvalidParameterError, "'labels'"),
    (LABELS[:-1], PROBS, ShapeError, "'labels'"),
    (LABELS.astype(float), PROBS, InvalidTypeError, "'labels'"),
    (LABELS, PROBS[:, :1] / PROBS[:, :1], ShapeError, "K >= 2"),
    (LABELS[:0], PROBS[:0], ShapeError, "non-empty"),
    (LABELS, "not an array", InvalidTypeError, "'pred_probs'"),
]


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("case", range(len(BAD_INPUTS)))
def test_bad_input_is_a_one_line_error(name, case):
    labels, p, error, words = BAD_INPUTS[case]
    with pytest.raises(error) as info:
        ENTRY_POINTS[name](labels, p)
    message = str(info.value)
    assert isinstance(info.value, RobustlabError) and isinstance(info.value, (ValueError, TypeError))
    assert "\n" not in message and words in message, message


def test_row_sum_tolerance_is_the_stated_one():
    from robustlab._constants import PROB_SUM_ATOL

    within = PROBS.copy()
    within[0] *= 1 + PROB_SUM_ATOL / 2
    ln.find_label_issues(LABELS, within)  # accepted
    beyond = PROBS.copy()
    beyond[0] *= 1 + PROB_SUM_ATOL * 3
    with pytest.raises(InvalidParameterError, match="rows summing to 1"):
        ln.find_label_issues(LABELS, beyond)


BAD_OPTIONS = [
    ({"filter_by": "prune_by_margin"}, UnknownNameError, "'filter_by'"),
    ({"frac_noise": 1.5}, InvalidParameterError, "'frac_noise'"),
    ({"frac_noise": 0.5, "filter_by": "confident_learning"}, InvalidParameterError, "'frac_noise'"),
    ({"num_to_remove_per_class": [1, 1, 1, 1], "filter_by": "low_self_confidence"}, InvalidParameterError,
     "'num_to_remove_per_class'"),
    ({"num_to_remove_per_class": [1, 1]}, ShapeError, "'num_to_remove_per_class'"),
    ({"num_to_remove_per_class": [1, -1, 0, 0]}, InvalidParameterError, "non-negative"),
    ({"min_examples_per_class": -1}, InvalidParameterError, "'min_examples_per_class'"),
    ({"min_examples_per_class": 1.5}, InvalidTypeError, "'min_examples_per_class'"),
    ({"confident_joint": np.ones((3, 3))}, ShapeError, "'confident_joint'"),
    ({"confident_joint": -np.ones((4, 4))}, InvalidParameterError, "'confident_joint'"),
    ({"confident_joint": np.full((4, 4), np.nan)}, InvalidParameterError, "'confident_joint'"),
    ({"confident_joint": np.ones((4, 4)), "filter_by": "confident_learning"}, InvalidParameterError,
     "'confident_joint'"),
]


@pytest.mark.parametrize("case", range(len(BAD_OPTIONS)))
def test_bad_options_are_one_line_errors(case):
    options, error, words = BAD_OPTIONS[case]
    with pytest.raises(error) as info:
        ln.find_label_issues(LABELS, PROBS, **options)
    assert "\n" not in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("call, error, words", [
    (lambda: ln.find_label_issues_ranked(LABELS, PROBS, rank_by="entropy"), UnknownNameError, "'rank_by'"),
    (lambda: ln.get_label_quality_scores(LABELS, PROBS, method="confidence_weighted_entropy",
                                         adjust_pred_probs=True), InvalidParameterError, "'adjust_pred_probs'"),
    (lambda: ln.order_label_issues(np.ones(5, bool), LABELS, PROBS), ShapeError, "'mask'"),
    (lambda: ln.order_label_issues(np.ones(len(LABELS)), LABELS, PROBS), InvalidParameterError, "'mask'"),
    (lambda: ln.num_label_issues(LABELS, PROBS, estimation_method="off_diagonal_custom"),
     InvalidParameterError, "'confident_joint'"),
    (lambda: ln.num_label_issues(LABELS, PROBS, confident_joint=np.ones((4, 4))), InvalidParameterError,
     "'confident_joint'"),
    (lambda: ln.num_label_issues(LABELS, PROBS, estimation_method="exact"), UnknownNameError,
     "'estimation_method'"),
    (lambda: ln.estimate_latent(np.ones((4, 4)), LABELS, py_method="bayes"), UnknownNameError, "'py_method'"),
    (lambda: ln.estimate_latent(np.ones((4, 3)), LABELS), ShapeError, "'confident_joint'"),
    (lambda: ln.estimate_latent(np.ones((3, 3)), LABELS), InvalidParameterError, "'labels'"),
    (lambda: ln.calibrate_confident_joint(np.ones((4, 4)), LABELS[:, None]), ShapeError, "'labels'"),
    (lambda: ln.compute_confident_joint(LABELS, PROBS, thresholds=[0.5, 0.5]), ShapeError, "'thresholds'"),
    (lambda: ln.compute_confident_joint(LABELS, PROBS, calibrate="yes"), InvalidTypeError, "'calibrate'"),
])
def test_other_bad_arguments(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert "\n" not in str(info.value) and words in str(info.value)


# --- torch input, dtype, return types -------------------------------------------------------------


def test_torch_tensors_give_the_numpy_answers():
    labels_t, probs_t = torch.from_numpy(LABELS), torch.from_numpy(PROBS)
    for filter_by in ln.FILTER_METHODS:
        got = ln.find_label_issues(labels_t, probs_t, filter_by=filter_by)
        assert isinstance(got, np.ndarray) and got.dtype == bool
        np.testing.assert_array_equal(got, ln.find_label_issues(LABELS, PROBS, filter_by=filter_by))
    ranked = ln.find_label_issues_ranked(labels_t, probs_t, rank_by="normalized_margin")
    assert isinstance(ranked, np.ndarray) and ranked.dtype == np.int64
    np.testing.assert_array_equal(ranked, ln.find_label_issues_ranked(LABELS, PROBS, rank_by="normalized_margin"))
    est_t, est = ln.estimate_noise(labels_t, probs_t), ln.estimate_noise(LABELS, PROBS)
    for field in dataclasses.fields(est):
        np.testing.assert_array_equal(getattr(est_t, field.name), getattr(est, field.name))
    # Non-contiguous and float32 tensors are fine too.
    fortran = probs_t.T.contiguous().T.float()
    assert not fortran.is_contiguous()
    scores = ln.get_label_quality_scores(labels_t, fortran)
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, ln.get_label_quality_scores(LABELS, PROBS.astype(np.float32)))


def test_half_precision_is_widened_to_float32():
    exact = np.array([[0.5, 0.25, 0.125, 0.125], [0.125, 0.625, 0.25, 0.0]] * 10)  # binary fractions
    labels = np.array([0, 2] * 10)
    scores = ln.get_label_quality_scores(labels, torch.from_numpy(exact).half())
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, [0.5, 0.25] * 10)


def test_inputs_are_not_modified():
    labels, p = LABELS.copy(), PROBS.copy()
    ln.find_label_issues_ranked(labels, p, filter_by="both", rank_by="normalized_margin", adjust_pred_probs=True)
    ln.estimate_noise(labels, p)
    np.testing.assert_array_equal(labels, LABELS)
    np.testing.assert_array_equal(p, PROBS)


def test_noise_estimate_is_frozen():
    est = ln.estimate_noise(LABELS, PROBS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.noise_rate = 0.0  # type: ignore[misc]


# --- known answers and properties -----------------------------------------------------------------


def test_hand_computed_example():
    labels = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([[.9, .1], [.8, .2], [.2, .8], [.1, .9], [.3, .7], [.2, .8]])
    # Thresholds: mean p0 over class 0 = (0.9 + 0.8 + 0.2) / 3, mean p1 over class 1 = 0.8.
    np.testing.assert_allclose(ln.per_class_thresholds(labels, p), [1.9 / 3, 0.8])
    # Row 2 (label 0) passes only class 1's threshold -> counted at (given 0, true 1).
    # Row 4 (label 1, p1 = 0.7 < 0.8) passes neither threshold -> not counted.
    np.testing.assert_array_equal(ln.compute_confident_joint(labels, p, calibrate=False), [[2, 1], [0, 2]])
    np.testing.assert_array_equal(ln.find_label_issues(labels, p, filter_by="confident_learning"),
                                  [False, False, True, False, False, False])
    assert ln.num_label_issues(labels, p) == 1
    np.testing.assert_array_equal(ln.find_label_issues_ranked(labels, p, filter_by="predicted_neq_given"), [2])


def test_clean_confident_data_has_no_issues():
    labels = np.repeat(np.arange(5), 40)
    p = np.full((200, 5), 0.05)
    p[np.arange(200), labels] = 0.8
    est = ln.estimate_noise(labels, p)
    assert est.noise_rate == 0.0 and est.num_label_issues == 0
    np.testing.assert_allclose(est.noise_matrix, np.eye(5))
    np.testing.assert_allclose(est.prior, np.full(5, 0.2))
    for filter_by in ln.FILTER_METHODS:
        assert not ln.find_label_issues(labels, p, filter_by=filter_by).any()


def test_detects_injected_flips():
    labels, p, flipped = dataset(n=3000, k=5, seed=3, noise=0.15)
    found = ln.find_label_issues(labels, p)
    precision = (found & flipped).sum() / found.sum()
    recall = (found & flipped).sum() / flipped.sum()
    assert precision > 0.9 and recall > 0.7, (precision, recall)
    est = ln.estimate_noise(labels, p)
    assert abs(est.noise_rate - flipped.mean()) < 0.05
    # Matrix invariants: noise matrices are column-stochastic, the joint sums to 1 with the given
    # label marginal as row sums, the calibrated joint's rows are the label counts.
    np.testing.assert_allclose(est.noise_matrix.sum(axis=0), 1)
    np.testing.assert_allclose(est.inverse_noise_matrix.sum(axis=0), 1)
    np.testing.assert_allclose(est.joint.sum(axis=1), np.bincount(labels) / len(labels))
    np.testing.assert_array_equal(est.confident_joint.sum(axis=1), np.bincount(labels))
    assert est.prior.sum() == pytest.approx(1)


def test_ranked_is_the_mask_sorted_by_score():
    for rank_by in ln.SCORE_METHODS:
        mask = ln.find_label_issues(LABELS, PROBS, filter_by="both")
        ranked = ln.find_label_issues_ranked(LABELS, PROBS, filter_by="both", rank_by=rank_by)
        assert set(ranked) == set(np.flatnonzero(mask))
        scores = ln.get_label_quality_scores(LABELS, PROBS, method=rank_by)
        assert (np.diff(scores[ranked]) >= 0).all()


def test_frac_noise_and_num_to_remove_shrink_the_selection():
    full = ln.find_label_issues(LABELS, PROBS, filter_by="prune_by_class")
    half = ln.find_label_issues(LABELS, PROBS, filter_by="prune_by_class", frac_noise=0.5)
    assert half.sum() < full.sum() and not (half & ~full).any()
    remove = np.array([3, 0, 2, 1])
    chosen = ln.find_label_issues(LABELS, PROBS, filter_by="prune_by_class", num_to_remove_per_class=remove)
    # Exact per class with prune_by_class, except rows whose label is the argmax (never flagged).
    assert (np.bincount(LABELS[chosen], minlength=4) <= remove).all()


def test_small_classes_are_not_pruned_and_warned_about():
    labels = LABELS.copy()
    labels[:3] = 3
    labels[labels == 3] = 0
    labels[:3] = 3  # class 3 now has 3 examples
    p = PROBS.copy()
    p[:3] = [0.7, 0.1, 0.1, 0.1]  # all three look like class 0
    with pytest.warns(UserWarning, match=r"Classes \[3\]"):
        mask = ln.find_label_issues(labels, p, filter_by="prune_by_class", min_examples_per_class=3)
    assert not mask[:3].any()
    # Without the minimum they are pruned (all but the one the confident joint's diagonal keeps).
    assert ln.find_label_issues(labels, p, filter_by="prune_by_class", min_examples_per_class=0)[:3].sum() == 2


def test_library_never_imports_cleanlab():
    root = Path(ln.__file__).parent
    for name in ("confident.py", "filter.py", "rank.py", "_cl_helpers.py"):
        assert not re.search(r"^\s*(import|from)\s+cleanlab", (root / name).read_text(), re.MULTILINE), name
