"""Differential tests: robustlab's confident learning gives cleanlab 2.x's answers exactly.

cleanlab is imported here only (test-only reference). Inputs come from Hypothesis and include
classes with no examples, K = 2, float32 and float64, and probabilities on a coarse grid so that
rows and margins tie (the cases where an implementation's tie-breaking shows). Masks, indices and
counts must be equal; matrices equal or allclose where only float rounding differs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robustlab.label_noise as ln

cleanlab = pytest.importorskip("cleanlab")
from cleanlab import count as cl_count
from cleanlab import filter as cl_filter
from cleanlab import rank as cl_rank

pytestmark = pytest.mark.filterwarnings("ignore:Classes .* have at most")
SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PRUNE = ("prune_by_noise_rate", "prune_by_class", "both")


def quiet(fn, *args, **kwargs):
    """Call cleanlab without its warnings (small classes, ignored arguments, division by zero)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def make_pred_probs(rng: np.random.Generator, labels: np.ndarray, k: int, *, style: str,
                    dtype: type) -> np.ndarray:
    n = labels.shape[0]
    if style == "grid":  # few distinct values: ties within rows and across rows
        weights = rng.integers(0, 4, size=(n, k)).astype(float)
        weights[np.arange(n), rng.integers(0, k, n)] += 1  # no all-zero row
    else:  # informative, continuous
        logits = rng.normal(size=(n, k)) * rng.uniform(0.3, 3.0)
        logits[np.arange(n), labels] += rng.uniform(0.0, 3.0)
        weights = np.exp(logits)
    p = (weights / weights.sum(axis=1, keepdims=True)).astype(dtype)
    return p / p.sum(axis=1, keepdims=True)


@st.composite
def datasets(draw, max_n: int = 60, max_k: int = 6):
    """``(labels, pred_probs)`` with >= 2 distinct labels (cleanlab refuses fewer)."""
    k = draw(st.integers(2, max_k))
    n = draw(st.integers(4, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    present = draw(st.integers(2, k))  # classes beyond `present` have no examples
    present_classes = rng.permutation(k)[:present]
    labels = present_classes[rng.integers(0, present, n)]
    labels[:2] = present_classes[:2]
    style = draw(st.sampled_from(["grid", "smooth"]))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    return labels.astype(np.int64), make_pred_probs(rng, labels, k, style=style, dtype=dtype)


# --- counting -----------------------------------------------------------------------------------


@SETTINGS
@given(datasets())
def test_thresholds_and_confident_joint_match_cleanlab(data):
    labels, p = data
    expected = quiet(cl_count.get_confident_thresholds, labels, p)
    got = ln.per_class_thresholds(labels, p)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    for calibrate in (True, False):
        np.testing.assert_array_equal(
            ln.compute_confident_joint(labels, p, calibrate=calibrate),
            quiet(cl_count.compute_confident_joint, labels, p, calibrate=calibrate))
    custom = np.linspace(0.2, 0.6, p.shape[1])
    np.testing.assert_array_equal(ln.compute_confident_joint(labels, p, thresholds=custom),
                                  quiet(cl_count.compute_confident_joint, labels, p, thresholds=custom))


@SETTINGS
@given(datasets())
def test_joint_latent_and_num_issues_match_cleanlab(data):
    labels, p = data
    np.testing.assert_array_equal(ln.estimate_joint(labels, p), quiet(cl_count.estimate_joint, labels, p))
    cj = quiet(cl_count.compute_confident_joint, labels, p)
    np.testing.assert_array_equal(ln.calibrate_confident_joint(cj, labels),
                                  quiet(cl_count.calibrate_confident_joint, cj, labels))
    for method in ("off_diagonal", "off_diagonal_calibrated"):
        assert ln.num_label_issues(labels, p, estimation_method=method) == \
            quiet(cl_count.num_label_issues, labels, p, estimation_method=method)
    custom = cj + np.eye(cj.shape[0], dtype=cj.dtype) * 3
    assert ln.num_label_issues(labels, p, confident_joint=custom, estimation_method="off_diagonal_custom") \
        == quiet(cl_count.num_label_issues, labels, p, confident_joint=custom,
                 estimation_method="off_diagonal_custom")
    for py_method in ("cnt", "marginal", "marginal_ps"):
        for converge in (False, True):
            got = ln.estimate_latent(cj, labels, py_method=py_method, converge_latent_estimates=converge)
            want = quiet(cl_count.estimate_latent, cj, labels, py_method=py_method,
                         converge_latent_estimates=converge)
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)


@SETTINGS
@given(datasets())
def test_estimate_noise_matches_cleanlab(data):
    labels, p = data
    est = ln.estimate_noise(labels, p)
    py, nm, inv, cj = quiet(cl_count.estimate_py_and_noise_matrices_from_probabilities, labels, p)
    np.testing.assert_array_equal(est.confident_joint, cj)
    np.testing.assert_allclose(est.prior, py, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(est.noise_matrix, nm, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(est.inverse_noise_matrix, inv, rtol=1e-12, atol=1e-15)
    joint = quiet(cl_count.estimate_joint, labels, p)
    np.testing.assert_array_equal(est.joint, joint)
    assert est.noise_rate == pytest.approx(1.0 - joint.trace(), abs=1e-15)
    assert est.num_label_issues == quiet(cl_count.num_label_issues, labels, p)


# --- filters --------------------------------------------------------------------------------------


@SETTINGS
@given(datasets(), st.sampled_from(ln.FILTER_METHODS), st.sampled_from([0, 1, 3]))
def test_find_label_issues_matches_cleanlab(data, filter_by, min_examples):
    labels, p = data
    got = ln.find_label_issues(labels, p, filter_by=filter_by, min_examples_per_class=min_examples)
    want = quiet(cl_filter.find_label_issues, labels, p, filter_by=filter_by,
                 min_examples_per_class=min_examples, n_jobs=1)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(datasets(), st.sampled_from(PRUNE), st.floats(0.0, 1.0), st.sampled_from([0, 1, 2]))
def test_frac_noise_matches_cleanlab(data, filter_by, frac_noise, min_examples):
    labels, p = data
    got = ln.find_label_issues(labels, p, filter_by=filter_by, frac_noise=frac_noise,
                               min_examples_per_class=min_examples)
    want = quiet(cl_filter.find_label_issues, labels, p, filter_by=filter_by, frac_noise=frac_noise,
                 min_examples_per_class=min_examples, n_jobs=1)
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(datasets(), st.sampled_from(PRUNE), st.data())
def test_num_to_remove_per_class_matches_cleanlab(data, filter_by, draw):
    labels, p = data
    k = p.shape[1]
    counts = np.bincount(labels, minlength=k)
    # Per class at most its size (cleanlab's arithmetic is undefined beyond, e.g. 0/0 for a class
    # with nothing to remove from).
    remove = np.array([draw.draw(st.integers(0, int(c))) for c in counts], dtype=np.int64)
    got = ln.find_label_issues(labels, p, filter_by=filter_by, num_to_remove_per_class=remove)
    want = quiet(cl_filter.find_label_issues, labels, p, filter_by=filter_by,
                 num_to_remove_per_class=list(remove), n_jobs=1)
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(datasets(), st.sampled_from(PRUNE), st.data())
def test_given_confident_joint_matches_cleanlab(data, filter_by, draw):
    labels, p = data
    k = p.shape[1]
    rng = np.random.default_rng(draw.draw(st.integers(0, 2**32 - 1)))
    cj = rng.integers(0, 6, size=(k, k))
    got = ln.find_label_issues(labels, p, filter_by=filter_by, confident_joint=cj)
    want = quiet(cl_filter.find_label_issues, labels, p, filter_by=filter_by, confident_joint=cj,
                 n_jobs=1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("style", ["grid", "smooth"])
def test_larger_inputs_with_ties_match_cleanlab(seed, style):
    """Hundreds of rows per class (several tiles, partitions with real tie runs)."""
    rng = np.random.default_rng(seed)
    k = [2, 3, 7, 12][seed]
    labels = rng.integers(0, k, 3000)
    labels[labels == k - 1] = 0 if seed % 2 else labels[labels == k - 1]
    p = make_pred_probs(rng, labels, k, style=style, dtype=np.float64)
    for filter_by in ln.FILTER_METHODS:
        np.testing.assert_array_equal(
            ln.find_label_issues(labels, p, filter_by=filter_by),
            quiet(cl_filter.find_label_issues, labels, p, filter_by=filter_by, n_jobs=1),
            err_msg=filter_by)
    for filter_by in PRUNE:
        np.testing.assert_array_equal(
            ln.find_label_issues(labels, p, filter_by=filter_by, frac_noise=0.37, min_examples_per_class=50),
            quiet(cl_filter.find_label_issues, labels, p, filter_by=filter_by, frac_noise=0.37,
                  min_examples_per_class=50, n_jobs=1), err_msg=filter_by)


def test_default_multiprocessing_cleanlab_agrees_too():
    """cleanlab's result does not depend on n_jobs; check ours against its default pool once."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 5, 2000)
    p = make_pred_probs(rng, labels, 5, style="smooth", dtype=np.float64)
    for filter_by in ("prune_by_noise_rate", "both"):
        np.testing.assert_array_equal(ln.find_label_issues(labels, p, filter_by=filter_by),
                                      quiet(cl_filter.find_label_issues, labels, p, filter_by=filter_by))


# --- scores and ranking ---------------------------------------------------------------------------


@SETTINGS
@given(datasets(), st.sampled_from(ln.SCORE_METHODS), st.booleans())
def test_label_quality_scores_match_cleanlab(data, method, adjust):
    labels, p = data
    if adjust and method == "confidence_weighted_entropy":
        adjust = False
    got = ln.get_label_quality_scores(labels, p, method=method, adjust_pred_probs=adjust)
    want = quiet(cl_rank.get_label_quality_scores, labels, p, method=method, adjust_pred_probs=adjust)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    single = {"self_confidence": ln.get_self_confidence_for_each_label,
              "normalized_margin": ln.get_normalized_margin_for_each_label,
              "confidence_weighted_entropy": ln.get_confidence_weighted_entropy_for_each_label}[method]
    reference = {"self_confidence": cl_rank.get_self_confidence_for_each_label,
                 "normalized_margin": cl_rank.get_normalized_margin_for_each_label,
                 "confidence_weighted_entropy": cl_rank.get_confidence_weighted_entropy_for_each_label}[method]
    np.testing.assert_array_equal(single(labels, p), quiet(reference, labels, p))


@SETTINGS
@given(datasets(), st.sampled_from(ln.SCORE_METHODS), st.booleans(),
       st.sampled_from(["prune_by_noise_rate", "both", "confident_learning", "low_self_confidence"]))
def test_ranked_issues_match_cleanlab(data, rank_by, adjust, filter_by):
    labels, p = data
    if adjust and rank_by == "confidence_weighted_entropy":
        adjust = False
    got = ln.find_label_issues_ranked(labels, p, rank_by=rank_by, adjust_pred_probs=adjust,
                                      filter_by=filter_by)
    want = quiet(cl_filter.find_label_issues, labels, p, filter_by=filter_by, n_jobs=1,
                 return_indices_ranked_by=rank_by, rank_by_kwargs={"adjust_pred_probs": adjust})
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(datasets(), st.sampled_from(ln.SCORE_METHODS), st.data())
def test_order_label_issues_matches_cleanlab(data, rank_by, draw):
    labels, p = data
    rng = np.random.default_rng(draw.draw(st.integers(0, 2**32 - 1)))
    mask = rng.random(labels.shape[0]) < draw.draw(st.floats(0.0, 1.0))
    np.testing.assert_array_equal(ln.order_label_issues(mask, labels, p, rank_by=rank_by),
                                  quiet(cl_rank.order_label_issues, mask, labels, p, rank_by=rank_by))
