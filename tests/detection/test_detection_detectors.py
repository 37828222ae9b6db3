"""MSP, energy, kNN and Mahalanobis detectors: known answers, invariances, state, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_det_mlp
from torch import nn

from robustlab.detection import (
    KNN,
    Energy,
    Mahalanobis,
    MaxSoftmax,
    detection_metrics,
    evaluate_detector,
)
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    NotFittedError,
    UnknownNameError,
)


def _penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model[:4](x)  # output of the last ReLU = input of the head


def _detectors():
    return {
        "msp": MaxSoftmax(), "energy": Energy(), "knn": KNN(), "mahalanobis": Mahalanobis(),
        "mahalanobis-layers": Mahalanobis(layers=("1", "3", "penultimate")),
    }


@pytest.mark.parametrize("name", list(_detectors()))
def test_every_detector_beats_chance_on_separable_ood(synthetic_problem, name):
    model, x, y, x_test, x_ood = synthetic_problem
    det = _detectors()[name].fit(model, x, y)
    m = evaluate_detector(det, model, x_test, x_ood)
    assert m.auroc > 0.9, m


def test_msp_unchanged_by_a_constant_added_to_all_logits():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 7, generator=g, dtype=torch.float64)
    shift = nn.Sequential()  # identity model on the logits themselves
    base = MaxSoftmax().score(shift, z)
    for c in (-30.0, 0.5, 100.0):
        torch.testing.assert_close(MaxSoftmax().score(shift, z + c), base, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(base, z.softmax(1).max(1).values)


def test_energy_properties():
    g = torch.Generator().manual_seed(1)
    z = 3 * torch.randn(60, 5, generator=g, dtype=torch.float64)
    ident = nn.Sequential()
    zmax = z.max(1).values
    # T = 1: logsumexp; adding c to the logits adds c to the score
    torch.testing.assert_close(Energy().score(ident, z), torch.logsumexp(z, 1))
    torch.testing.assert_close(Energy().score(ident, z + 2.5), torch.logsumexp(z, 1) + 2.5)
    for t in (0.01, 0.5, 1.0, 4.0):
        s = Energy(temperature=t).score(ident, z)
        assert bool((s >= zmax - 1e-12).all()) and bool((s <= zmax + t * np.log(5) + 1e-12).all())
        # scaling logits and T together scales the score: T lse(a z / (a T)) = a * (T lse(z / T))
        torch.testing.assert_close(Energy(temperature=2 * t).score(ident, 2 * z), 2 * s)
    # T -> 0 tends to the max logit; the score grows with T (lse(z/T) * T is increasing in T)
    torch.testing.assert_close(Energy(temperature=1e-4).score(ident, z), zmax, atol=1e-3, rtol=0)
    s1, s2 = Energy(temperature=0.5).score(ident, z), Energy(temperature=2.0).score(ident, z)
    assert bool((s2 >= s1).all())


def test_knn_equals_brute_force(synthetic_problem):
    model, x, _, x_test, _ = synthetic_problem
    det = KNN(k=7, batch_size=64).fit(model, x[:200])
    got = det.score(model, x_test[:40]).double().numpy()
    bank = _penultimate(model, x[:200]).double().numpy()
    q = _penultimate(model, x_test[:40]).double().numpy()
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d = np.sqrt(((q[:, None, :] - bank[None]) ** 2).sum(-1))
    np.testing.assert_allclose(got, -np.sort(d, axis=1)[:, 6], atol=1e-5)


def _pooled_covariance(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(0) for c in classes])
    centred = f - means[np.searchsorted(classes, y)]
    return means, centred.T @ centred / len(f)


def test_mahalanobis_tied_covariance_is_the_pooled_covariance(synthetic_problem):
    model, x, y, _, _ = synthetic_problem
    det = Mahalanobis(layers=("1", "penultimate"), batch_size=100).fit(model, x, y)
    with torch.no_grad():
        f1 = model[:2](x).double().numpy()
    f_pen = _penultimate(model, x).double().numpy()
    for j, f in enumerate((f1, f_pen)):
        means, cov = _pooled_covariance(f, y.numpy())
        np.testing.assert_allclose(det.means_[j].numpy(), means, atol=1e-10)
        np.testing.assert_allclose(det.covariance_[j].numpy(), cov, atol=1e-9)
    assert det.layers_ == ("1", "penultimate") and det.classes_.tolist() == [0, 1, 2]


def test_mahalanobis_eps0_is_the_plain_distance_and_preprocessing_raises_confidence(synthetic_problem):
    model, x, y, x_test, _ = synthetic_problem
    det0 = Mahalanobis(eps=0.0).fit(model, x, y)
    f = _penultimate(model, x_test[:50]).double().numpy()
    means, cov = _pooled_covariance(_penultimate(model, x).double().numpy(), y.numpy())
    prec = np.linalg.pinv(cov, hermitian=True)
    diff = f[:, None, :] - means[None]
    expected = -np.einsum("nkf,fg,nkg->nk", diff, prec, diff).min(1)
    s0 = det0.score(model, x_test[:50])
    np.testing.assert_allclose(s0.double().numpy(), expected, rtol=1e-5, atol=1e-4)
    # a tiny step changes nothing measurable; a small step against the distance's gradient
    # raises the confidence score of (almost) every input (first order: + eps * ||grad||_1)
    tiny = Mahalanobis(eps=1e-9).fit(model, x, y).score(model, x_test[:50])
    torch.testing.assert_close(tiny, s0, rtol=1e-4, atol=1e-4)
    s = Mahalanobis(eps=0.01).fit(model, x, y).score(model, x_test[:50])
    assert float((s > s0).float().mean()) >= 0.9


def test_mahalanobis_conv_features_are_channel_means():
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    x = torch.rand(30, 1, 6, 6, generator=g)
    y = torch.arange(30) % 3
    det = Mahalanobis(layers=("1",), eps=0.0).fit(model, x, y)
    with torch.no_grad():
        pooled = model[:2](x).mean(dim=(2, 3)).double().numpy()
    means, cov = _pooled_covariance(pooled, y.numpy())
    np.testing.assert_allclose(det.means_[0].numpy(), means, atol=1e-10)
    np.testing.assert_allclose(det.covariance_[0].numpy(), cov, atol=1e-10)
    assert det.score(model, x).shape == (30,)


def test_mahalanobis_logistic_ensemble(synthetic_problem):
    model, x, y, x_test, x_ood = synthetic_problem
    det = Mahalanobis(layers=("1", "3"), eps=0.0)
    det.fit(model, x, y, val_in=x_test[:100], val_out=x_ood[:100])
    assert det.combiner_ is not None
    layer = det.layer_scores(model, x_test[100:])
    assert layer.shape == (200, 2)
    m = evaluate_detector(det, model, x_test[100:], x_ood[100:])
    assert m.auroc > 0.9
    plain = Mahalanobis(layers=("1", "3"), eps=0.0).fit(model, x, y)
    assert plain.combiner_ is None
    torch.testing.assert_close(plain.score(model, x_test[:10]), plain.layer_scores(model, x_test[:10]).mean(1))


@pytest.mark.parametrize("name", list(_detectors()))
def test_model_state_inputs_and_batching(synthetic_problem, name):
    model, x, y, x_test, _ = synthetic_problem
    model = make_det_mlp()
    model.load_state_dict(synthetic_problem[0].state_dict())
    model.train()
    model[2].weight.requires_grad_(False)
    before = [p.detach().clone() for p in model.parameters()]
    xs, xt = x[:120].clone(), x_test[:33].clone()
    det = _detectors()[name]
    det.fit(model, xs, y[:120])
    s = det.score(model, xt)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [True, True, False, True, True, True]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert torch.equal(xs, x[:120]) and torch.equal(xt, x_test[:33])
    assert all(p.grad is None for p in model.parameters())
    det.batch_size = 5
    torch.testing.assert_close(det.score(model, xt), s, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(_detectors()))
def test_dtype_follows_inputs(synthetic_problem, name):
    model, x, y, x_test, _ = synthetic_problem
    model64 = make_det_mlp().double()
    model64.load_state_dict(model.state_dict())
    det = _detectors()[name].fit(model64, x[:150].double(), y[:150])
    s = det.score(model64, x_test[:10].double())
    assert s.dtype == torch.float64 and s.shape == (10,) and s.device == x_test.device


def _one_line(info) -> str:
    text = str(info.value)
    assert "\n" not in text
    return text


def test_bad_input(synthetic_problem):
    model, x, y, x_test, _ = synthetic_problem
    with pytest.raises(InvalidParameterError) as info:
        KNN(k=0).fit(model, x)
    assert "'k'" in _one_line(info)
    with pytest.raises(InvalidParameterError) as info:
        KNN(k=10).fit(model, x[:5])
    assert "'k'" in _one_line(info)
    with pytest.raises(InvalidTypeError):
        KNN(k=2.5).fit(model, x)
    with pytest.raises(UnknownNameError) as info:
        Mahalanobis(layers=("fc7",)).fit(model, x, y)
    text = _one_line(info)
    assert "'layers'" in text and "'penultimate'" in text and "'3'" in text and "'fc7'" in text
    with pytest.raises(UnknownNameError):
        KNN(layer="nope").fit(model, x)
    for det in (KNN(), Mahalanobis()):
        with pytest.raises(NotFittedError) as info:
            det.score(model, x_test)
        assert "fit" in _one_line(info)
    bad = x_test[:10].clone()
    bad[3, 2] = float("nan")
    for det in _detectors().values():
        det.fit(model, x[:100], y[:100])
        with pytest.raises(InvalidParameterError) as info:
            det.score(model, bad)
        assert "'inputs'" in _one_line(info)
    with pytest.raises(InvalidParameterError) as info:
        Energy(temperature=0.0).score(model, x_test)
    assert "'temperature'" in _one_line(info)
    with pytest.raises(InvalidParameterError) as info:
        Mahalanobis(eps=-0.1).fit(model, x, y)
    assert "'eps'" in _one_line(info)
    with pytest.raises(InvalidParameterError) as info:
        Mahalanobis().fit(model, x, y, val_in=x_test)
    assert "'val_out'" in _one_line(info)
    with pytest.raises(InvalidTypeError) as info:
        Mahalanobis(layers="penultimate").fit(model, x, y)
    assert "'layers'" in _one_line(info)
    with pytest.raises(InvalidTypeError) as info:
        KNN().fit(lambda t: t, x)
    assert "'model'" in _one_line(info)
    with pytest.raises(InvalidParameterError) as info:
        Mahalanobis().fit(model, x, y[:-1])
    assert "'labels'" in _one_line(info)


def test_scores_in_metrics_are_consistent(synthetic_problem):
    # the metrics of the energy score do not change when every logit is shifted (ranking invariant)
    model, _, _, x_test, x_ood = synthetic_problem
    shifted = nn.Sequential(model, _AddConstant(7.0))
    a = evaluate_detector(Energy(), model, x_test, x_ood)
    b = evaluate_detector(Energy(), shifted, x_test, x_ood)
    assert a.auroc == pytest.approx(b.auroc, abs=1e-12) and a.fpr_at_95_tpr == b.fpr_at_95_tpr
    assert detection_metrics(MaxSoftmax().score(shifted, x_test), MaxSoftmax().score(shifted, x_ood)) \
        == evaluate_detector(MaxSoftmax(), model, x_test, x_ood)


class _AddConstant(nn.Module):
    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.c


class _TwiceReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.lin(self.act(x))))


def test_layer_that_runs_twice_and_nan_fit_inputs_are_refused():
    model = _TwiceReLU()
    x, y = torch.randn(20, 4), torch.arange(20) % 2
    with pytest.raises(InvalidParameterError) as info:
        Mahalanobis(layers=("act",), eps=0.0).fit(model, x, y)
    assert "ran 2 times" in _one_line(info)
    Mahalanobis(layers=("lin", "penultimate"), eps=0.0).fit(model, x, y)  # each runs once
    bad = x.clone()
    bad[0, 0] = float("inf")
    for det in (KNN(k=3), Mahalanobis()):
        with pytest.raises(InvalidParameterError) as info:
            det.fit(model, bad, y)
        assert "'inputs'" in _one_line(info)
