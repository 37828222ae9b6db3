"""Simulated annotators, majority vote and Dawid-Skene EM."""

from __future__ import annotations

import itertools

import pytest
import torch

from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    RobustlabError,
    ShapeError,
)
from robustlab.label_noise import (
    annotator_transitions,
    dawid_skene,
    majority_vote,
    pair_flip_transition,
    simulate_annotators,
    symmetric_transition,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


K = 5


@pytest.fixture(scope="module")
def truth() -> torch.Tensor:
    return torch.randint(0, K, (4000,), generator=gen(1))


def test_simulated_annotators_follow_their_transition(truth):
    ts = [symmetric_transition(K, 0.2), pair_flip_transition(K, 0.7)]
    a = simulate_annotators(truth, ts, generator=gen(2))
    assert a.shape == (4000, 2) and a.dtype == torch.int64
    for r, t in enumerate(ts):
        counts = torch.bincount(truth * K + a[:, r], minlength=K * K).reshape(K, K).double()
        emp = counts / counts.sum(1, keepdim=True)
        assert torch.allclose(emp, t, atol=0.05)
    b = simulate_annotators(truth, ts, generator=gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, simulate_annotators(truth, ts, generator=gen(3)))


def test_count_of_annotators_and_missing(truth):
    a = simulate_annotators(truth, 4, num_classes=K, generator=gen(), missing_rate=0.25,
                            accuracy=(0.7, 0.7))
    assert a.shape == (4000, 4)
    missing = float((a == -1).double().mean())
    assert missing == pytest.approx(0.25, abs=0.02)
    present = a >= 0
    acc = float((a == truth.unsqueeze(1))[present].double().mean())
    assert acc == pytest.approx(0.7, abs=0.02)
    ts = annotator_transitions(3, K, generator=gen(), accuracy=(0.5, 0.9))
    assert ts.shape == (3, K, K) and bool(((ts.diagonal(dim1=1, dim2=2) >= 0.5) &
                                           (ts.diagonal(dim1=1, dim2=2) <= 0.9)).all())


def test_majority_vote_and_ties():
    a = torch.tensor([[0, 0, 1], [2, 1, -1], [-1, -1, -1], [3, 3, 3]])
    assert majority_vote(a, 4, tie_break="lowest").tolist() == [0, 1, 0, 3]
    assert majority_vote(a, 4, tie_break="abstain").tolist() == [0, -1, -1, 3]
    draws = torch.stack([majority_vote(a, 4, generator=gen(s)) for s in range(200)])
    assert bool((draws[:, 0] == 0).all()) and bool((draws[:, 3] == 3).all())
    row1 = draws[:, 1]
    assert set(row1.tolist()) == {1, 2}  # only the tied classes
    assert 0.35 < float((row1 == 1).double().mean()) < 0.65  # uniformly
    assert set(draws[:, 2].tolist()) == {0, 1, 2, 3}  # no annotation: tie among all classes
    assert torch.equal(majority_vote(a, 4, generator=gen(5)), majority_vote(a, 4, generator=gen(5)))


def test_dawid_skene_beats_majority_vote_with_adversarial_annotators(truth):
    """Two good annotators, two systematic (pair-flip 80%) and one near-random: majority vote is
    dragged by the adversaries, Dawid-Skene learns their confusions and inverts them."""
    ts = [symmetric_transition(K, 0.3)] * 2 + [pair_flip_transition(K, 0.8)] * 2 + \
        [symmetric_transition(K, 0.7)]
    a = simulate_annotators(truth, ts, generator=gen(4))
    mv = majority_vote(a, K, generator=gen(5))
    ds = dawid_skene(a, K)
    acc_mv = float((mv == truth).double().mean())
    acc_ds = float((ds.labels == truth).double().mean())
    assert acc_ds > acc_mv + 0.2, (acc_ds, acc_mv)
    assert acc_ds > 0.9
    assert ds.converged
    assert torch.allclose(ds.confusions, torch.stack(ts), atol=0.05)
    assert torch.allclose(ds.priors, torch.bincount(truth, minlength=K).double() / len(truth), atol=0.02)
    assert torch.allclose(ds.posteriors.sum(1), torch.ones(len(truth), dtype=torch.float64))


def test_dawid_skene_with_missing_annotations(truth):
    ts = [symmetric_transition(K, r) for r in (0.1, 0.3, 0.5, 0.6, 0.6, 0.65)]
    a = simulate_annotators(truth, ts, generator=gen(6), missing_rate=0.5)
    ds = dawid_skene(a, K)
    mv = majority_vote(a, K, generator=gen(7))
    assert float((ds.labels == truth).double().mean()) > float((mv == truth).double().mean()) + 0.02
    diag = ds.confusions.diagonal(dim1=1, dim2=2).mean(1)
    assert torch.allclose(diag, torch.tensor([0.9, 0.7, 0.5, 0.4, 0.4, 0.35], dtype=torch.float64),
                          atol=0.06)
    none = (a == -1).all(1)  # examples nobody labelled get the prior
    if none.any():
        assert torch.allclose(ds.posteriors[none][0], ds.priors)


def test_dawid_skene_log_likelihood_increases(truth):
    a = simulate_annotators(truth[:500], 4, num_classes=K, generator=gen(8))
    lls = [dawid_skene(a, K, max_iter=i, tol=0.0, smoothing=0.0).log_likelihood for i in (1, 2, 4, 8, 16)]
    assert all(b >= a_ - 1e-9 for a_, b in itertools.pairwise(lls)), lls


BAD = [
    ("float annotations", lambda: majority_vote(torch.rand(3, 2), 3, tie_break="lowest"), InvalidTypeError, "'annotations'"),
    ("annotation out of range", lambda: dawid_skene(torch.tensor([[0, 3]]), 3), InvalidParameterError, "'annotations'"),
    ("annotation below -1", lambda: dawid_skene(torch.tensor([[0, -2]]), 3), InvalidParameterError, "'annotations'"),
    ("1-D annotations", lambda: dawid_skene(torch.tensor([0, 1]), 3), ShapeError, "'annotations'"),
    ("random tie needs generator", lambda: majority_vote(torch.tensor([[0, 1]]), 2), InvalidTypeError, "'generator'"),
    ("bad tie break", lambda: majority_vote(torch.tensor([[0, 1]]), 2, tie_break="first"), InvalidParameterError, "'tie_break'"),
    ("max_iter", lambda: dawid_skene(torch.tensor([[0, 1]]), 2, max_iter=0), InvalidParameterError, "'max_iter'"),
    ("T wrong size", lambda: simulate_annotators(torch.tensor([0, 1]), [torch.eye(2), torch.eye(3)], generator=gen()), ShapeError, "transitions\\[1\\]"),
    ("T not stochastic", lambda: simulate_annotators(torch.tensor([0, 1]), [torch.eye(2) * 0.5], generator=gen()), InvalidParameterError, "transitions\\[0\\]"),
    ("labels out of range", lambda: simulate_annotators(torch.tensor([0, 4]), [torch.eye(2)], generator=gen()), InvalidParameterError, "'labels'"),
    ("count without K", lambda: simulate_annotators(torch.tensor([0, 1]), 3, generator=gen()), InvalidParameterError, "'num_classes'"),
    ("missing rate 1", lambda: simulate_annotators(torch.tensor([0, 1]), 3, num_classes=2, generator=gen(), missing_rate=1.0), InvalidParameterError, "'missing_rate'"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input(case):
    _, call, error, text = case
    with pytest.raises(error, match=text) as info:
        call()
    assert isinstance(info.value, RobustlabError) and "\n" not in str(info.value)
