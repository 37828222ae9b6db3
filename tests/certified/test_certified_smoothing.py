"""Randomized smoothing (robustlab.certified.smoothing): statistics, guarantee, contract.

The guarantee test uses a linear binary classifier f(x) = [w.x + b > 0], whose smoothed classifier
is known exactly: g = f, p_A = Phi(|w.x + b| / (sigma ||w||)) and the true robust L2 radius of g
is |w.x + b| / ||w||.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from robustlab.certified import (
    ABSTAIN,
    Certificate,
    Smooth,
    average_certified_radius,
    certified_accuracy_curve,
    certify,
    checkerboard_split,
    clopper_pearson_lower,
    dual_certify,
    predict,
    sample_counts,
)
from robustlab.errors import RobustlabError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class LinearBinary(nn.Module):
    """f(x) = 1 if w.x + b > 0 else 0, as two logits."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.reshape(x.shape[0], -1) @ self.w + self.b
        return torch.stack([-s, s], dim=1)


def linear_problem(m: int, d: int = 10, seed: int = 0, sigma: float = 0.25):
    g = gen(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    b = 0.3
    model = LinearBinary(w, b)
    # margins spread over [-3 sigma, 3 sigma] (p_A from 0.5 to 0.9987)
    dist = (torch.rand(m, generator=g, dtype=torch.float64) * 6 - 3) * sigma
    base = torch.randn(m, d, generator=g, dtype=torch.float64)
    unit = w / w.norm()
    base = base - (base @ unit + b / w.norm())[:, None] * unit  # on the boundary
    x = base + dist[:, None] * unit
    score = x @ w + b
    true_radius = score.abs() / w.norm()
    true_class = (score > 0).long()
    p_a = torch.as_tensor(stats.norm.cdf(true_radius.numpy() / sigma))
    return model, x, true_class, true_radius, p_a


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("k,n,alpha", [(0, 100, 0.001), (1, 100, 0.001), (50, 100, 0.05),
                                       (1990, 2000, 0.001), (2000, 2000, 0.001), (7, 7, 0.2),
                                       (99_000, 100_000, 0.001)])
def test_clopper_pearson_matches_scipy_exact_interval(k, n, alpha):
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(ci.low, rel=1e-9, abs=1e-12)


def test_certificate_bound_is_clopper_pearson_of_its_counts():
    model, x, *_ = linear_problem(20)
    cert = certify(model, x, sigma=0.25, n0=50, n=2000, alpha=0.01, generator=gen(1))
    assert cert.counts.shape == (20, 2) and bool((cert.counts.sum(1) == 2000).all())
    n_a = cert.counts.max(dim=1).values
    for i in range(20):
        if cert.predictions[i] != ABSTAIN:
            k = int(cert.counts[i, cert.predictions[i]])
            low = stats.binomtest(k, 2000).proportion_ci(confidence_level=0.98, method="exact").low
            assert float(cert.pA_lower[i]) == pytest.approx(low, rel=1e-9)
            assert float(cert.radius[i]) == pytest.approx(0.25 * stats.norm.ppf(low), rel=1e-9)
        else:
            assert float(cert.radius[i]) == 0.0 and float(cert.pA_lower[i]) < 0.5
    assert int(n_a.min()) >= 1000


def test_constant_model_radius_closed_form():
    """All n votes for one class: pA_lower = alpha ** (1/n), the largest certifiable radius."""
    model = lambda z: torch.stack([torch.zeros(len(z)), torch.ones(len(z))], 1)
    cert = certify(model, torch.zeros(3, 4), sigma=0.5, n0=10, n=1000, alpha=0.001, generator=gen())
    assert cert.predictions.tolist() == [1, 1, 1]
    assert np.allclose(cert.pA_lower.numpy(), 0.001 ** (1 / 1000), rtol=1e-9)
    assert np.allclose(cert.radius.numpy(), 0.5 * stats.norm.ppf(0.001 ** (1 / 1000)), rtol=1e-9)


def test_radius_monotone_in_pa():
    model, x, _, true_radius, _ = linear_problem(60)
    cert = certify(model, x, sigma=0.25, n0=50, n=2000, alpha=0.001, generator=gen(2))
    order = torch.argsort(cert.pA_lower)
    r = cert.radius[order]
    assert bool((r[1:] >= r[:-1]).all())
    assert float(cert.radius.max()) > 0
    # and the certified radii track the true ones (rank correlation)
    assert stats.spearmanr(cert.radius.numpy(), true_radius.numpy()).statistic > 0.9


# --------------------------------------------------------------------------- abstention
def test_fifty_fifty_model_abstains():
    """On the decision boundary p_A = 1/2: CERTIFY and PREDICT abstain."""
    w = torch.tensor([1.0, 0.0])
    model = LinearBinary(w, 0.0)
    x = torch.zeros(8, 2)
    cert = certify(model, x, sigma=0.5, n0=100, n=2000, alpha=0.001, generator=gen(3))
    assert bool((cert.predictions == ABSTAIN).all())
    assert bool((cert.radius == 0).all())
    assert cert.abstention_rate == 1.0
    assert (cert.counts[:, 0] - 1000).abs().max() < 150  # really 50/50
    pred = predict(model, x, sigma=0.5, n=2000, alpha=0.001, generator=gen(4))
    assert bool((pred == ABSTAIN).all())


def test_predict_confident_input():
    model, x, true_class, true_radius, _ = linear_problem(40)
    far = true_radius > 0.25  # p_A > 0.84: the test rejects 1/2 with n = 2000
    pred = predict(model, x[far], sigma=0.25, n=2000, alpha=0.001, generator=gen(5))
    assert torch.equal(pred, true_class[far])


# --------------------------------------------------------------------------- guarantee
def test_certified_radius_guarantee_linear_classifier():
    """P(certified radius > true radius, or wrong certified class) <= alpha, per input.

    Over M independent inputs the number of violations is Binomial(M, q) with q <= alpha; the
    test fails if it exceeds the 1 - 1e-6 quantile of Binomial(M, alpha).
    """
    m, alpha, sigma = 400, 0.05, 0.25
    model, x, true_class, true_radius, p_a = linear_problem(m, sigma=sigma, seed=7)
    cert = certify(model, x, sigma=sigma, n0=50, n=2000, alpha=alpha, generator=gen(8))
    issued = cert.predictions != ABSTAIN
    wrong = issued & (cert.predictions != true_class)
    too_big = issued & (cert.radius > true_radius)
    violations = int((wrong | too_big).sum())
    assert violations <= stats.binom.ppf(1 - 1e-6, m, alpha)
    # the same event seen through p_A: pA_lower > p_A
    assert int((issued & (cert.pA_lower > p_a)).sum()) == int(too_big.sum())
    # not vacuous: most inputs away from the boundary are certified
    assert float(issued[true_radius > 0.2].float().mean()) > 0.95


def test_radius_close_to_true_radius_for_large_n():
    sigma = 0.25
    model, x, true_class, true_radius, p_a = linear_problem(30, sigma=sigma, seed=9)
    keep = (p_a > 0.6) & (p_a < 0.99)
    cert = certify(model, x[keep], sigma=sigma, n0=50, n=40_000, alpha=0.001, batch_size=20_000,
                   generator=gen(10))
    assert torch.equal(cert.predictions, true_class[keep])
    err = (cert.radius - true_radius[keep]).abs()
    assert float(err.max()) < 0.03  # radius units (sigma = 0.25)
    assert bool((cert.radius <= true_radius[keep] + 1e-9).all())


# --------------------------------------------------------------------------- contract
def test_deterministic_per_generator():
    model, x, *_ = linear_problem(10)
    a = certify(model, x, sigma=0.25, n0=20, n=500, generator=gen(11))
    b = certify(model, x, sigma=0.25, n0=20, n=500, generator=gen(11))
    c = certify(model, x, sigma=0.25, n0=20, n=500, generator=gen(12))
    assert torch.equal(a.counts, b.counts) and torch.equal(a.radius, b.radius)
    assert not torch.equal(a.counts, c.counts)


def test_batches_mix_inputs_without_leaking():
    """Copies of several inputs share a forward pass; each count row belongs to its own input."""
    x = torch.arange(7, dtype=torch.float32)[:, None] * 10.0

    def model(z):
        return -((z - torch.arange(7, dtype=z.dtype) * 10.0) ** 2)  # nearest centre wins

    counts = sample_counts(model, x, sigma=0.1, num_samples=30, batch_size=47, generator=gen())
    assert torch.equal(counts, 30 * torch.eye(7, dtype=torch.int64))


class Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.drop = nn.Dropout(0.5)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.drop(self.lin(x))


def test_model_state_unchanged_and_eval_mode_used():
    model = Recorder().train()
    model.lin.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 3, generator=gen())
    x_before = x.clone()
    certify(model, x, sigma=0.3, n0=10, n=100, batch_size=64, generator=gen())
    predict(model, x, sigma=0.3, n=100, generator=gen())
    assert model.training and model.drop.training
    assert not model.lin.weight.requires_grad and model.lin.bias.requires_grad
    assert model.modes and not any(model.modes)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(x, x_before)


def test_score_callable_and_class_match_function():
    model, x, *_ = linear_problem(6)
    probs = lambda z: torch.softmax(model(z), dim=1)
    a = certify(probs, x, sigma=0.25, n0=20, n=400, generator=gen(13))
    s = Smooth(model, num_classes=2, sigma=0.25)
    b = s.certify(x, n0=20, n=400, generator=gen(13))
    assert torch.equal(a.counts, b.counts) and torch.equal(a.predictions, b.predictions)
    assert torch.equal(s.predict(x, n=400, generator=gen(14)),
                       predict(model, x, sigma=0.25, n=400, generator=gen(14)))
    with pytest.raises(RobustlabError, match="model output"):
        Smooth(model, num_classes=3, sigma=0.25).certify(x, n0=5, n=5, generator=gen())


def test_dtype_and_noncontiguous_input():
    model, x, *_ = linear_problem(8)
    xt = torch.stack([x, x], dim=2).reshape(x.shape[0], -1)[:, ::2]  # non-contiguous view of x
    assert not xt.is_contiguous() and torch.equal(xt, x)
    a = certify(model, xt, sigma=0.25, n0=20, n=300, generator=gen(15))
    b = certify(model, x, sigma=0.25, n0=20, n=300, generator=gen(15))
    assert torch.equal(a.counts, b.counts)
    assert a.radius.dtype == torch.float64 and a.predictions.dtype == torch.int64


def test_certified_accuracy_curve_known_answer():
    cert = Certificate(
        predictions=torch.tensor([0, 1, -1, 2, 1]),
        radius=torch.tensor([0.5, 0.2, 0.0, 1.0, 0.3], dtype=torch.float64),
        pA_lower=torch.tensor([0.9, 0.8, 0.4, 0.99, 0.85], dtype=torch.float64),
        counts=torch.zeros(5, 3, dtype=torch.int64), sigma=0.5, alpha=0.001, n0=1, n=1,
    )
    labels = torch.tensor([0, 1, 0, 2, 0])  # last one certified but wrong
    radii, acc = certified_accuracy_curve(cert, labels, [0.0, 0.2, 0.25, 0.5, 1.0, 1.5])
    assert np.allclose(radii, [0.0, 0.2, 0.25, 0.5, 1.0, 1.5])
    assert np.allclose(acc, [0.6, 0.6, 0.4, 0.4, 0.2, 0.0])
    assert cert.abstention_rate == pytest.approx(0.2)
    assert average_certified_radius(cert, labels) == pytest.approx((0.5 + 0.2 + 1.0) / 5)


@pytest.mark.parametrize("kwargs,name", [
    ({"sigma": 0.0}, "sigma"), ({"sigma": -1.0}, "sigma"), ({"sigma": math.inf}, "sigma"),
    ({"n0": 0}, "n0"), ({"n": 0}, "n"), ({"n": 1.5}, "n"),
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"alpha": 1.5}, "alpha"),
    ({"batch_size": 0}, "batch_size"), ({"generator": None}, "generator"),
])
def test_bad_input_one_line_error(kwargs, name):
    model, x, *_ = linear_problem(2)
    settings = {"sigma": 0.25, "n0": 10, "n": 10, "alpha": 0.01, "generator": gen()}
    settings.update(kwargs)
    with pytest.raises(RobustlabError) as info:
        certify(model, x, **settings)
    msg = str(info.value)
    assert f"'{name}'" in msg and "\n" not in msg
    if name != "n0":
        p = {k: v for k, v in settings.items() if k != "n0"}
        with pytest.raises(RobustlabError, match=f"'{name}'"):
            predict(model, x, **p)


def test_bad_model_and_labels():
    with pytest.raises(RobustlabError, match="'model'"):
        certify("not a model", torch.zeros(2, 2), sigma=0.1, generator=gen())
    cert = certify(lambda z: z, torch.zeros(2, 2), sigma=0.1, n0=5, n=5, generator=gen())
    with pytest.raises(RobustlabError, match="'labels'"):
        certified_accuracy_curve(cert, torch.zeros(3, dtype=torch.int64), [0.0])
    with pytest.raises(RobustlabError, match="'radii'"):
        certified_accuracy_curve(cert, torch.zeros(2, dtype=torch.int64), [-0.1])


# --------------------------------------------------------------------------- dual smoothing
def test_checkerboard_split_known_answer():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    x1, x2 = checkerboard_split(x)
    assert x1.tolist() == [[[[0, 2], [5, 7], [8, 10], [13, 15]]]]
    assert x2.tolist() == [[[[1, 3], [4, 6], [9, 11], [12, 14]]]]
    y = torch.randn(3, 2, 6, 8, generator=gen())
    y1, y2 = checkerboard_split(y)
    assert torch.allclose(y1.square().sum() + y2.square().sum(), y.square().sum())
    with pytest.raises(RobustlabError, match="'x'"):
        checkerboard_split(torch.zeros(1, 1, 4, 5))


def dual_problem(m: int, sigma: float, seed: int):
    """Two linear binary sub-classifiers on the checkerboard halves of 1x4x4 images.

    G(x) = argmax_c p1_c + p2_c is class 1 iff u1 + u2 > 0 with u_i = s_i / (sigma ||w_i||), and
    its exact L2 robust radius is sigma |u1 + u2| / sqrt(2).
    """
    g = gen(seed)
    w1 = torch.randn(8, generator=g, dtype=torch.float64)
    w2 = torch.randn(8, generator=g, dtype=torch.float64)
    f1, f2 = LinearBinary(w1, 0.2), LinearBinary(w2, -0.4)
    x = torch.randn(m, 1, 4, 4, generator=g, dtype=torch.float64) * 0.4
    x1, x2 = checkerboard_split(x)
    u1 = (x1.reshape(m, -1) @ w1 + 0.2) / (sigma * w1.norm())
    u2 = (x2.reshape(m, -1) @ w2 - 0.4) / (sigma * w2.norm())
    true_class = (u1 + u2 > 0).long()
    true_radius = sigma * (u1 + u2).abs() / math.sqrt(2)
    return (f1, f2), x, true_class, true_radius, u1, u2


def test_dual_certificate_guarantee_and_tightness():
    m, alpha, sigma = 300, 0.05, 0.25
    models, x, true_class, true_radius, u1, u2 = dual_problem(m, sigma, seed=21)
    assert float((u1 - u2).abs().median()) > 0.5  # the two halves often disagree in strength
    cert = dual_certify(models, x, sigma=sigma, n0=50, n=2000, alpha=alpha, generator=gen(22))
    issued = cert.predictions != ABSTAIN
    violations = int((issued & ((cert.predictions != true_class) | (cert.radius > true_radius))).sum())
    assert violations <= stats.binom.ppf(1 - 1e-6, m, alpha)
    assert float(issued[true_radius > 0.3].float().mean()) > 0.9
    assert torch.allclose(cert.radius, math.sqrt(2) * sigma
                          * torch.as_tensor(stats.norm.ppf(cert.pA_lower.numpy())).clamp(min=0))
    big = dual_certify(models, x[:40], sigma=sigma, n0=50, n=40_000, alpha=0.001, batch_size=20_000,
                       generator=gen(23))
    ok = (true_radius[:40] > 0.1) & (u1[:40].abs() < 2.3) & (u2[:40].abs() < 2.3)
    assert torch.equal(big.predictions[ok], true_class[:40][ok])
    assert float((big.radius - true_radius[:40])[ok].abs().max()) < 0.04


def test_dual_certify_bad_input():
    models, x, *_ = dual_problem(2, 0.25, seed=0)
    with pytest.raises(RobustlabError, match="'models'"):
        dual_certify(models[0], x, sigma=0.25, generator=gen())
    with pytest.raises(RobustlabError, match="'split'"):
        dual_certify(models, x, sigma=0.25, n=10, generator=gen(),
                     split=lambda z: (z[..., :1], z[..., :1]))
    with pytest.raises(RobustlabError, match="'sigma'"):
        dual_certify(models, x, sigma=0.0, generator=gen())


def test_empty_input():
    model = nn.Linear(2, 3)
    cert = certify(model, torch.zeros(0, 2), sigma=0.2, n0=5, n=10, generator=gen())
    assert cert.predictions.shape == (0,) and cert.radius.shape == (0,)
    assert math.isnan(cert.abstention_rate)
    assert predict(model, torch.zeros(0, 2), sigma=0.2, n=10, generator=gen()).shape == (0,)
