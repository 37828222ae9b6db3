"""Anchor-point estimator of the transition matrix and transition-matrix validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.errors import InvalidParameterError, ShapeError
from robustlab.label_noise import check_transition, estimate_transition_anchor

T_TRUE = np.array([[0.6, 0.3, 0.1, 0.0],
                   [0.1, 0.7, 0.1, 0.1],
                   [0.0, 0.2, 0.8, 0.0],
                   [0.2, 0.0, 0.2, 0.6]])


def _reference_anchor(eta: np.ndarray, quantile: float, filter_outlier: bool) -> np.ndarray:
    """Loop oracle after Patrini et al.'s NoiseEstimator (with a copy where their code has a view)."""
    k = eta.shape[1]
    t = np.empty((k, k))
    for i in range(k):
        column = eta[:, i].copy()
        if filter_outlier:
            threshold = np.percentile(column, quantile * 100, method="higher")
            column[column >= threshold] = 0.0
        t[i] = eta[int(np.argmax(column))]
    return t / t.sum(axis=1, keepdims=True)


def _clean_posteriors(n: int, k: int, rng: np.random.Generator, anchor_fraction: float) -> np.ndarray:
    """Dirichlet posteriors, plus near-anchors (1 - eps) e_i + eps u with eps <= 0.02."""
    eta = rng.dirichlet(np.ones(k), size=n)
    m = int(n * anchor_fraction)
    classes = np.arange(m) % k
    eps = rng.uniform(0.0, 0.02, size=(m, 1))
    eta[:m] = (1 - eps) * np.eye(k)[classes] + eps * rng.dirichlet(np.ones(k), size=m)
    return eta


def test_recovers_a_known_transition_from_noisy_posteriors():
    rng = np.random.default_rng(0)
    eta = _clean_posteriors(4000, 4, rng, anchor_fraction=0.2)
    noisy = eta @ T_TRUE  # P(noisy = j | x) = sum_i P(true = i | x) T[i, j]
    estimate = estimate_transition_anchor(noisy)
    assert estimate.shape == (4, 4) and estimate.dtype == torch.float64
    assert np.abs(estimate.numpy() - T_TRUE).max() < 0.03
    # Without filtering, an exact anchor per class gives T exactly.
    exact = np.vstack([np.eye(4), eta]) @ T_TRUE
    assert np.allclose(estimate_transition_anchor(exact, filter_outlier=False).numpy(), T_TRUE, atol=1e-12)


def test_rows_are_stochastic_and_dtype_device_follow_the_input():
    rng = np.random.default_rng(1)
    p = torch.tensor(rng.dirichlet(np.ones(5), size=300), dtype=torch.float32)
    t = estimate_transition_anchor(p)
    assert t.dtype == torch.float32 and t.device == p.device
    assert torch.allclose(t.sum(1), torch.ones(5), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("quantile", "filter_outlier"), [(0.97, True), (0.9, True), (1.0, True), (0.97, False)])
def test_matches_the_numpy_percentile_oracle(seed, quantile, filter_outlier):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    eta = rng.dirichlet(np.ones(6) * 0.5, size=n)
    ours = estimate_transition_anchor(eta, quantile=quantile, filter_outlier=filter_outlier).numpy()
    # Same anchors: equal up to the rounding of the row normalisation.
    assert np.allclose(ours, _reference_anchor(eta, quantile, filter_outlier), rtol=0, atol=1e-14)


def test_does_not_change_its_input():
    rng = np.random.default_rng(0)
    p = torch.tensor(rng.dirichlet(np.ones(3), size=50))
    before = p.clone()
    estimate_transition_anchor(p)
    assert torch.equal(p, before)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"pred_probs": np.full((4, 2), 0.7)}, "pred_probs"),
        ({"pred_probs": np.full((4, 2), 0.5), "quantile": 0.0}, "quantile"),
        ({"pred_probs": np.full((4, 2), 0.5), "quantile": 1.2}, "quantile"),
        ({"pred_probs": np.full((4,), 0.5)}, "pred_probs"),
    ],
)
def test_estimator_bad_input(kwargs, name):
    with pytest.raises(InvalidParameterError, match=f"'{name}'"):
        estimate_transition_anchor(**kwargs)


def test_check_transition():
    assert torch.equal(check_transition("T", T_TRUE), torch.tensor(T_TRUE))
    with pytest.raises(ShapeError, match="'T'.*square"):
        check_transition("T", np.ones((2, 3)) / 3)
    with pytest.raises(ShapeError, match=r"'T'.*\(3, 3\)"):
        check_transition("T", T_TRUE, num_classes=3)
    with pytest.raises(InvalidParameterError, match="'T'.*row-stochastic"):
        check_transition("T", T_TRUE * 0.9)
    with pytest.raises(InvalidParameterError, match="'T'.*non-negative"):
        check_transition("T", np.array([[1.2, -0.2], [0.0, 1.0]]))
    with pytest.raises(InvalidParameterError, match="'T'.*finite"):
        check_transition("T", np.array([[np.nan, 1.0], [0.0, 1.0]]))
    with pytest.raises(InvalidParameterError, match="'T'.*invertible"):
        check_transition("T", np.full((2, 2), 0.5), invertible=True)


def test_docstring_examples_run():
    import doctest

    from robustlab.label_noise import losses, transition

    for module in (losses, transition):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
