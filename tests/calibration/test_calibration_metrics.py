"""Calibration metrics against direct loop implementations, synthetic known answers, bad input."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from robustlab.calibration import (
    ReliabilityDiagram,
    brier_score,
    classwise_calibration_error,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    optimal_aurc,
    plot_reliability,
    reliability_diagram,
    risk_coverage_curve,
)
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    ShapeError,
    UnknownNameError,
)


# --- oracles: plain loops, written from the papers' definitions -------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _bin_members(conf: list[float], n_bins: int, binning: str) -> list[list[int]]:
    n = len(conf)
    bins: list[list[int]] = [[] for _ in range(n_bins)]
    if binning == "width":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        for i, c in enumerate(conf):
            for m in range(n_bins):
                if (m == 0 and c <= edges[1]) or (edges[m] < c <= edges[m + 1]):
                    bins[m].append(i)
                    break
    else:
        order = sorted(range(n), key=lambda i: conf[i])  # Python's sort is stable
        base, extra = divmod(n, n_bins)
        start = 0
        for m in range(n_bins):
            size = base + (1 if m < extra else 0)
            bins[m] = order[start:start + size]
            start += size
    return bins


def _gaps(conf: list[float], hit: list[float], n_bins: int, binning: str) -> list[tuple[int, float]]:
    out = []
    for members in _bin_members(conf, n_bins, binning):
        if members:
            acc = sum(hit[i] for i in members) / len(members)
            mean_conf = sum(conf[i] for i in members) / len(members)
            out.append((len(members), abs(acc - mean_conf)))
    return out


def _combine(gaps: list[tuple[int, float]], n: int, norm: str) -> float:
    if norm == "max":
        return max(g for _, g in gaps)
    if norm == "l2":
        return math.sqrt(sum(c / n * g * g for c, g in gaps))
    return sum(c / n * g for c, g in gaps)


def ece_loop(p: np.ndarray, y: np.ndarray, n_bins: int, binning: str, norm: str = "l1") -> float:
    conf, hit = [], []
    for row, label in zip(p, y):
        pred = int(np.argmax(row))
        conf.append(float(row[pred]))
        hit.append(1.0 if pred == label else 0.0)
    return _combine(_gaps(conf, hit, n_bins, binning), len(y), norm)


def classwise_loop(p: np.ndarray, y: np.ndarray, n_bins: int, binning: str) -> float:
    total = 0.0
    for k in range(p.shape[1]):
        conf = [float(v) for v in p[:, k]]
        hit = [1.0 if label == k else 0.0 for label in y]
        total += _combine(_gaps(conf, hit, n_bins, binning), len(y), "l1")
    return total / p.shape[1]


def brier_loop(p: np.ndarray, y: np.ndarray) -> float:
    total = 0.0
    for row, label in zip(p, y):
        total += sum((row[k] - (1.0 if k == label else 0.0)) ** 2 for k in range(len(row)))
    return total / len(y)


def nll_loop(p: np.ndarray, y: np.ndarray) -> float:
    return -sum(math.log(row[label]) for row, label in zip(p, y)) / len(y)


@pytest.fixture(scope="module")
def probs_labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=(403, 6))
    p = _softmax(z)
    y = np.array([rng.choice(6, p=_softmax(z[i:i + 1] / 0.7)[0]) for i in range(403)])
    return p, y


# --- against the loops ------------------------------------------------------------------------------
@pytest.mark.parametrize("binning", ["width", "mass"])
@pytest.mark.parametrize("n_bins", [1, 7, 15])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_ece_matches_loop(probs_labels, binning, n_bins, norm):
    p, y = probs_labels
    got = expected_calibration_error(p, y, n_bins=n_bins, binning=binning, norm=norm)
    assert got == pytest.approx(ece_loop(p, y, n_bins, binning, norm), abs=1e-12)


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_mce_matches_loop(probs_labels, binning):
    p, y = probs_labels
    got = maximum_calibration_error(p, y, n_bins=10, binning=binning)
    assert got == pytest.approx(ece_loop(p, y, 10, binning, "max"), abs=1e-12)
    assert got >= expected_calibration_error(p, y, n_bins=10, binning=binning)


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_classwise_matches_loop(probs_labels, binning):
    p, y = probs_labels
    got = classwise_calibration_error(p, y, n_bins=10, binning=binning)
    assert got == pytest.approx(classwise_loop(p, y, 10, binning), abs=1e-12)


def test_brier_and_nll_match_loops(probs_labels):
    p, y = probs_labels
    assert brier_score(p, y) == pytest.approx(brier_loop(p, y), abs=1e-12)
    assert negative_log_likelihood(p, y) == pytest.approx(nll_loop(p, y), abs=1e-12)
    # Same answer from a float32 tensor (float64 arithmetic inside).
    pt = torch.from_numpy(p).float()
    pt = pt / pt.sum(1, keepdim=True)
    assert negative_log_likelihood(pt, torch.from_numpy(y)) == pytest.approx(
        float(torch.nn.functional.nll_loss(pt.double().log(), torch.from_numpy(y))), abs=1e-9)


def test_brier_binary_is_twice_positive_class_brier():
    # scikit-learn's brier_score_loss(y, q) scores only the positive class, mean((q - y)^2);
    # summed over both classes the multi-class score is exactly twice that.
    rng = np.random.default_rng(3)
    q = rng.uniform(size=200)
    p = np.stack([1 - q, q], axis=1)
    y = (rng.uniform(size=200) < q).astype(np.int64)
    assert brier_score(p, y) == pytest.approx(2 * np.mean((q - y) ** 2), abs=1e-12)


def test_width_bin_boundaries_are_right_closed():
    # conf 0.5 belongs to (0.25, 0.5], conf 0 to the first bin, conf 1 to the last.
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]])
    d = reliability_diagram(p, np.array([0, 0, 1]), n_bins=4)
    assert d.counts.tolist() == [0, 1, 1, 1]


def test_mass_bins_have_equal_counts(probs_labels):
    p, y = probs_labels
    d = reliability_diagram(p, y, n_bins=10, binning="mass")
    assert d.counts.sum() == len(y)
    assert d.counts.max() - d.counts.min() <= 1
    assert np.all(np.diff(d.bin_edges) >= 0)


# --- synthetic known answers ------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _synthetic(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the predictor reports softmax(z / temperature)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, 5))
    true = _softmax(z)
    u = rng.uniform(size=(n, 1))
    y = np.minimum((u > np.cumsum(true, axis=1)).sum(axis=1), 4)
    return _softmax(z / temperature), y


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_calibrated_predictor_small_ece_overconfident_large(binning):
    p_cal, y = _synthetic(20000, 1.0, seed=1)
    p_over, y2 = _synthetic(20000, 0.2, seed=1)
    ece_cal = expected_calibration_error(p_cal, y, binning=binning)
    ece_over = expected_calibration_error(p_over, y2, binning=binning)
    assert ece_cal < 0.015
    assert ece_over > 0.15
    assert classwise_calibration_error(p_cal, y, binning=binning) < 0.01
    assert classwise_calibration_error(p_over, y2, binning=binning) > 0.03
    # Proper scores prefer the calibrated predictor.
    assert brier_score(p_cal, y) < brier_score(p_over, y2)
    assert negative_log_likelihood(p_cal, y) < negative_log_likelihood(p_over, y2)


def test_reliability_diagram_consistent(probs_labels):
    p, y = probs_labels
    d = reliability_diagram(p, y, n_bins=8)
    assert isinstance(d, ReliabilityDiagram) and d.n_bins == 8
    assert d.counts.sum() == len(y)
    assert d.ece == pytest.approx(expected_calibration_error(p, y, n_bins=8), abs=1e-12)
    assert d.mce == pytest.approx(maximum_calibration_error(p, y, n_bins=8), abs=1e-12)
    full = d.counts > 0
    weighted = np.sum(d.counts[full] / len(y) * np.abs(d.accuracy[full] - d.confidence[full]))
    assert weighted == pytest.approx(d.ece, abs=1e-12)
    assert np.all(np.isnan(d.accuracy[~full]))


def test_plot_reliability_returns_figure(probs_labels):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, y = probs_labels
    fig = plot_reliability(reliability_diagram(p, y, n_bins=10, binning="mass"))
    assert len(fig.axes) == 1 and "ECE" in fig.axes[0].get_title()
    plt.close(fig)
    with pytest.raises(InvalidTypeError, match="'diagram'"):
        plot_reliability(p)


# --- selective classification -----------------------------------------------------------------------
def aurc_loop(conf: np.ndarray, error: np.ndarray) -> float:
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    total, errors = 0.0, 0
    for k, i in enumerate(order, start=1):
        errors += int(error[i])
        total += errors / k
    return total / len(conf)


def test_aurc_matches_loop_without_ties(probs_labels):
    p, y = probs_labels
    curve = risk_coverage_curve(p, y)
    conf = p.max(axis=1)
    error = p.argmax(axis=1) != y
    assert len(set(conf.tolist())) == len(conf)
    assert curve.aurc == pytest.approx(aurc_loop(conf, error), abs=1e-12)
    assert curve.risk[-1] == pytest.approx(error.mean())
    assert curve.coverage[-1] == 1.0 and np.all(np.diff(curve.threshold) <= 0)


def test_aurc_perfect_ranking_is_closed_form_minimum():
    rng = np.random.default_rng(5)
    n, e = 500, 137
    labels = np.zeros(n, dtype=np.int64)
    wrong = rng.permutation(n)[:e]
    labels[wrong] = 1
    p = np.tile([0.9, 0.1], (n, 1))
    # Confidence: every correct example above every error, random within each group.
    confidence = np.where(labels == 0, 2.0, 1.0) + rng.uniform(size=n)
    curve = risk_coverage_curve(p, labels, confidence=confidence)
    c = n - e
    harmonic = lambda m: sum(1.0 / i for i in range(1, m + 1))
    closed_form = (e - c * (harmonic(n) - harmonic(c))) / n
    assert curve.aurc == pytest.approx(closed_form, abs=1e-12)
    assert optimal_aurc(e, n) == pytest.approx(closed_form, abs=1e-12)
    assert curve.e_aurc == pytest.approx(0.0, abs=1e-12)
    r = e / n  # Geifman et al. 2019's continuous approximation
    assert closed_form == pytest.approx(r + (1 - r) * math.log(1 - r), abs=2e-3)
    # The worst ranking is strictly larger.
    worst = risk_coverage_curve(p, labels, confidence=-confidence)
    assert worst.aurc > curve.aurc + 0.3


def test_aurc_ties_are_order_free_expectations():
    rng = np.random.default_rng(2)
    n = 60
    p = np.tile([0.6, 0.4], (n, 1))
    labels = (rng.uniform(size=n) < 0.3).astype(np.int64)
    curve = risk_coverage_curve(p, labels)  # all confidences tied
    np.testing.assert_allclose(curve.risk, np.full(n, labels.mean()), atol=1e-12)
    # Coarse confidence with ties: invariant to permuting the input, and equal to the mean AURC
    # over random tie-breakings (Monte Carlo, loose tolerance).
    conf = rng.integers(0, 4, size=n).astype(np.float64)
    base = risk_coverage_curve(p, labels, confidence=conf).aurc
    perm = rng.permutation(n)
    assert risk_coverage_curve(p[perm], labels[perm], confidence=conf[perm]).aurc == pytest.approx(base, abs=1e-12)
    draws = [aurc_loop(conf + 1e-6 * rng.uniform(size=n), labels == 1) for _ in range(2000)]
    assert base == pytest.approx(np.mean(draws), abs=3e-3)


# --- bad input: one table, one-line errors naming the argument ---------------------------------------
_P = np.array([[0.7, 0.3], [0.2, 0.8]])
_Y = np.array([0, 1])
_NAN = np.array([[np.nan, 0.5], [0.2, 0.8]])

BAD_INPUT = [
    (expected_calibration_error, (_P, _Y), {"n_bins": 0}, InvalidParameterError, "n_bins"),
    (expected_calibration_error, (_P, _Y), {"n_bins": 2.5}, InvalidTypeError, "n_bins"),
    (expected_calibration_error, (_P, _Y), {"binning": "quantile"}, UnknownNameError, "binning"),
    (expected_calibration_error, (_P, _Y), {"norm": "l3"}, UnknownNameError, "norm"),
    (expected_calibration_error, (np.array([[0.7, 0.4], [0.2, 0.8]]), _Y), {}, InvalidParameterError,
     "pred_probs"),
    (expected_calibration_error, (_NAN, _Y), {}, InvalidParameterError, "pred_probs"),
    (expected_calibration_error, (_P, np.array([0, 2])), {}, InvalidParameterError, "labels"),
    (expected_calibration_error, (_P, np.array([0, 1, 1])), {}, ShapeError, "labels"),
    (maximum_calibration_error, (_P, _Y), {"n_bins": -1}, InvalidParameterError, "n_bins"),
    (classwise_calibration_error, (_P, _Y), {"binning": "equal"}, UnknownNameError, "binning"),
    (reliability_diagram, (_P, _Y), {"n_bins": 0}, InvalidParameterError, "n_bins"),
    (brier_score, (_NAN, _Y), {}, InvalidParameterError, "pred_probs"),
    (negative_log_likelihood, (np.array([0.5, 0.5]), _Y), {}, ShapeError, "pred_probs"),
    (risk_coverage_curve, (_P, _Y), {"confidence": np.array([1.0])}, ShapeError, "confidence"),
    (risk_coverage_curve, (_P, _Y), {"confidence": np.array([1.0, np.nan])}, InvalidParameterError,
     "confidence"),
    (optimal_aurc, (5, 3), {}, InvalidParameterError, "num_errors"),
]


@pytest.mark.parametrize("func, args, kwargs, error, name", BAD_INPUT)
def test_bad_input_one_line_error_naming_argument(func, args, kwargs, error, name):
    with pytest.raises(error) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert f"'{name}'" in message and "\n" not in message


def test_docstring_examples_run():
    import doctest

    from robustlab.calibration import metrics, plotting, scaling, selective

    for module in (metrics, plotting, scaling, selective):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__


def test_import_is_lazy():
    import subprocess
    import sys

    code = ("import sys, robustlab.calibration; "
            "print('matplotlib' in sys.modules, 'scipy.optimize' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
