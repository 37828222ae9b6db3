"""Robust losses: hand-computed values, defining properties, gradients, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab.errors import (
    DataNotFoundError,
    InvalidParameterError,
    InvalidTypeError,
    ShapeError,
    UnknownNameError,
)
from robustlab.label_noise import (
    backward_corrected_loss,
    bootstrap_hard_loss,
    bootstrap_soft_loss,
    clip_logits,
    forward_corrected_loss,
    gce_loss,
    logitclip_loss,
    mae_loss,
    nce_loss,
    rce_loss,
    sce_loss,
)

# softmax(log([1, 2, 3])) = [1/6, 1/3, 1/2]
P = np.array([1 / 6, 1 / 3, 1 / 2])
Z = torch.log(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=torch.float64))
Y = torch.tensor([2, 0])  # p_y = 1/2 and 1/6
T = np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.0, 0.3, 0.7]])
ENTROPY = -float((P * np.log(P)).sum())

ALL_LOSSES = {
    "bootstrap-soft": bootstrap_soft_loss,
    "bootstrap-hard": bootstrap_hard_loss,
    "gce": gce_loss,
    "gce-truncated": lambda z, y: gce_loss(z, y, truncation=0.5),
    "sce": sce_loss,
    "nce": nce_loss,
    "rce": rce_loss,
    "mae": mae_loss,
    "forward": lambda z, y: forward_corrected_loss(z, y, torch.tensor(T, dtype=z.dtype)),
    "backward": lambda z, y: backward_corrected_loss(z, y, torch.tensor(T, dtype=z.dtype)),
    "logitclip": logitclip_loss,
}


def _values(loss: torch.Tensor) -> list[float]:
    return [float(v) for v in loss]


# ---------------------------------------------------------------------- known values
def test_bootstrap_soft_known_values():
    beta = 0.95
    expected = [beta * math.log(2) + (1 - beta) * ENTROPY, beta * math.log(6) + (1 - beta) * ENTROPY]
    assert _values(bootstrap_soft_loss(Z, Y)) == pytest.approx(expected, rel=1e-12)


def test_bootstrap_hard_known_values():
    # argmax p = class 2: example 0 agrees with its label, example 1 does not.
    expected = [math.log(2), 0.8 * math.log(6) + 0.2 * math.log(2)]
    assert _values(bootstrap_hard_loss(Z, Y)) == pytest.approx(expected, rel=1e-12)


def test_gce_known_values_and_truncation():
    q = 0.7
    expected = [(1 - 0.5 ** q) / q, (1 - (1 / 6) ** q) / q]
    assert _values(gce_loss(Z, Y)) == pytest.approx(expected, rel=1e-12)
    # k = 0.3: example 1 (p_y = 1/6 <= k) is truncated to the constant L_q(k).
    truncated = _values(gce_loss(Z, Y, truncation=0.3))
    assert truncated == pytest.approx([expected[0], (1 - 0.3 ** q) / q], rel=1e-12)


def test_rce_sce_nce_mae_known_values():
    assert _values(rce_loss(Z, Y)) == pytest.approx([4 * 0.5, 4 * 5 / 6], rel=1e-12)
    assert _values(rce_loss(Z, Y, log_zero=math.log(1e-4))) == pytest.approx(
        [-math.log(1e-4) * 0.5, -math.log(1e-4) * 5 / 6], rel=1e-12)
    assert _values(sce_loss(Z, Y)) == pytest.approx(
        [0.1 * math.log(2) + 2.0, 0.1 * math.log(6) + 4 * 5 / 6], rel=1e-12)
    assert _values(nce_loss(Z, Y)) == pytest.approx([math.log(2) / math.log(36), math.log(6) / math.log(36)],
                                                    rel=1e-12)
    assert _values(mae_loss(Z, Y)) == pytest.approx([1.0, 5 / 3], rel=1e-12)


def test_mae_is_the_l1_distance_to_the_one_hot_label():
    onehot = np.eye(3)[Y.numpy()]
    assert _values(mae_loss(Z, Y)) == pytest.approx(np.abs(P[None] - onehot).sum(1).tolist(), rel=1e-12)


def test_forward_and_backward_known_values():
    noisy = P @ T  # (T^T p)
    assert _values(forward_corrected_loss(Z, Y, T)) == pytest.approx(
        [-math.log(noisy[2]), -math.log(noisy[0])], rel=1e-12)
    inverse = np.linalg.inv(T)
    losses = -np.log(P)
    assert _values(backward_corrected_loss(Z, Y, T)) == pytest.approx(
        [inverse[2] @ losses, inverse[0] @ losses], rel=1e-10)


def test_logitclip_known_values():
    z = Z[:1]
    norm = float(z.norm())
    delta = 2 / 3
    clipped = (z * delta / norm).numpy()[0]
    expected = -clipped[2] + math.log(np.exp(clipped).sum())
    assert _values(logitclip_loss(z, Y[:1], delta=delta)) == pytest.approx([expected], rel=1e-6)
    # Under the bound nothing is clipped: plain cross entropy.
    assert _values(logitclip_loss(z, Y[:1], delta=10.0)) == pytest.approx([math.log(2)], rel=1e-12)
    assert float(clip_logits(z, delta=delta).norm()) == pytest.approx(delta, rel=1e-6)
    assert float(clip_logits(z, delta=delta, norm="linf").abs().max()) == pytest.approx(delta, rel=1e-6)
    assert float(clip_logits(z, delta=delta, norm="l1").abs().sum()) == pytest.approx(delta, rel=1e-6)


# ---------------------------------------------------------------------- defining properties
def _random_logits(n: int = 64, k: int = 5, scale: float = 3.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])
def test_symmetric_losses_sum_to_a_constant_over_the_classes(scale):
    """Ma et al. (2020), Lemma 1 / Def. 1: sum_j L(f(x), j) = C for every f(x)."""
    z = _random_logits(scale=scale)
    n, k = z.shape

    def total(fn):
        return sum(fn(z, torch.full((n,), j)) for j in range(k))

    assert torch.allclose(total(nce_loss), torch.ones(n, dtype=z.dtype), atol=1e-12)
    assert torch.allclose(total(mae_loss), torch.full((n,), 2.0 * (k - 1), dtype=z.dtype), atol=1e-12)
    assert torch.allclose(total(rce_loss), torch.full((n,), 4.0 * (k - 1), dtype=z.dtype), atol=1e-12)
    # Cross entropy is not symmetric (the sum depends on f(x)).
    ce_total = total(lambda a, b: F.cross_entropy(a, b, reduction="none"))
    assert float(ce_total.std()) > 1e-3


def test_gce_limits():
    """L_q -> CE as q -> 0 (Zhang & Sabuncu, 2018, Sec. 3); L_1 = 1 - p_y = MAE / 2 exactly."""
    z = _random_logits()
    y = torch.arange(len(z)) % z.shape[1]
    ce = F.cross_entropy(z, y, reduction="none")
    assert torch.allclose(gce_loss(z, y, q=1e-6), ce, rtol=1e-4, atol=1e-6)
    assert torch.allclose(gce_loss(z, y, q=1.0), mae_loss(z, y) / 2, atol=1e-14)
    # Monotone in q between the two for each example (L_q decreases with q).
    assert bool((gce_loss(z, y, q=0.3) >= gce_loss(z, y, q=0.7)).all())


def test_bootstrapping_with_beta_one_is_cross_entropy():
    z = _random_logits()
    y = torch.arange(len(z)) % z.shape[1]
    ce = F.cross_entropy(z, y, reduction="none")
    assert torch.allclose(bootstrap_soft_loss(z, y, beta=1.0), ce, atol=1e-12)
    assert torch.allclose(bootstrap_hard_loss(z, y, beta=1.0), ce, atol=1e-12)


def test_sce_is_the_weighted_sum_of_ce_and_rce():
    z = _random_logits()
    y = torch.arange(len(z)) % z.shape[1]
    ce = F.cross_entropy(z, y, reduction="none")
    assert torch.allclose(sce_loss(z, y, alpha=0.3, beta=2.0), 0.3 * ce + 2.0 * rce_loss(z, y), atol=1e-12)
    assert torch.allclose(sce_loss(z, y, alpha=1.0, beta=0.0), ce, atol=1e-12)


def test_correction_with_identity_is_cross_entropy():
    z = _random_logits()
    y = torch.arange(len(z)) % z.shape[1]
    ce = F.cross_entropy(z, y, reduction="none")
    eye = torch.eye(z.shape[1], dtype=z.dtype)
    assert torch.allclose(forward_corrected_loss(z, y, eye), ce, atol=1e-12)
    assert torch.allclose(backward_corrected_loss(z, y, eye), ce, atol=1e-12)


def test_backward_correction_is_unbiased():
    """Patrini et al. (2017), Theorem 1: E_{noisy | y}[l<-(p, noisy)] = l(p, y)."""
    z = _random_logits(n=8, k=3)
    t = torch.tensor(T, dtype=z.dtype)
    for y in range(3):
        expected_noisy = sum(t[y, j] * backward_corrected_loss(z, torch.full((8,), j), t) for j in range(3))
        assert torch.allclose(expected_noisy, F.cross_entropy(z, torch.full((8,), y), reduction="none"),
                              atol=1e-10)


def test_forward_correction_is_the_noisy_class_likelihood():
    z = _random_logits(n=8, k=3)
    t = torch.tensor(T, dtype=z.dtype)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loop = [-math.log(sum(float(F.softmax(z, 1)[i, k]) * T[k, int(y[i])] for k in range(3)))
            for i in range(8)]
    assert _values(forward_corrected_loss(z, y, t)) == pytest.approx(loop, rel=1e-12)


# ---------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_gradcheck_float64(name):
    z = _random_logits(n=6, k=3, scale=1.0).requires_grad_()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    fn = ALL_LOSSES[name]
    if name == "bootstrap-hard":  # piecewise: keep the arg-max away from ties
        z = (z.detach() + torch.tensor([0.0, 0.0, 3.0], dtype=z.dtype)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: fn(a, y), (z,), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_loss_and_gradient_finite_when_p_y_goes_to_zero_or_one(name, dtype):
    z = torch.tensor([[60.0, -60.0, 0.0], [60.0, -60.0, 0.0], [1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]],
                     dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 1, 0, 0])  # p_y -> 1, p_y -> 0, p_y = 1, p_y = 0 (to float precision)
    loss = ALL_LOSSES[name](z, y)
    assert loss.dtype == dtype and loss.shape == (4,)
    assert bool(torch.isfinite(loss).all()), loss
    loss.sum().backward()
    assert bool(torch.isfinite(z.grad).all()), z.grad


def test_non_contiguous_input_gives_the_same_values():
    z = _random_logits(n=8, k=4)
    wide = torch.zeros(8, 8, dtype=z.dtype)
    wide[:, ::2] = z
    strided = wide[:, ::2]
    assert not strided.is_contiguous()
    y = torch.arange(8) % 4
    for name, fn in ALL_LOSSES.items():
        if name in ("forward", "backward"):
            continue
        assert torch.equal(fn(strided, y), fn(z, y)), name


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: gce_loss(Z, Y, q=0.0), "q"),
        (lambda: gce_loss(Z, Y, q=1.5), "q"),
        (lambda: gce_loss(Z, Y, truncation=1.0), "truncation"),
        (lambda: sce_loss(Z, Y, alpha=-1.0), "alpha"),
        (lambda: sce_loss(Z, Y, beta=-0.1), "beta"),
        (lambda: rce_loss(Z, Y, log_zero=0.0), "log_zero"),
        (lambda: bootstrap_soft_loss(Z, Y, beta=1.1), "beta"),
        (lambda: bootstrap_hard_loss(Z, Y, beta=-0.1), "beta"),
        (lambda: logitclip_loss(Z, Y, delta=0.0), "delta"),
        (lambda: forward_corrected_loss(Z, Y, np.eye(4)), "transition"),
        (lambda: forward_corrected_loss(Z, Y, np.ones((3, 2)) / 2), "transition"),
        (lambda: forward_corrected_loss(Z, Y, np.full((3, 3), 0.5)), "transition"),
        (lambda: forward_corrected_loss(Z, Y, np.array([[1.5, -0.5, 0], [0, 1, 0], [0, 0, 1]])), "transition"),
        (lambda: backward_corrected_loss(Z, Y, np.full((3, 3), 1 / 3)), "transition"),
        (lambda: nce_loss(Z, torch.tensor([3, 0])), "labels"),
        (lambda: nce_loss(Z, torch.tensor([0, 1, 2])), "labels"),
        (lambda: nce_loss(Z[0], Y), "logits"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(InvalidParameterError, match=f"'{name}'") as info:
        call()
    assert "\n" not in str(info.value)


def test_bad_types_and_names():
    with pytest.raises(InvalidTypeError, match="'logits'"):
        nce_loss([[0.0, 1.0]], torch.tensor([0]))
    with pytest.raises(UnknownNameError, match="'norm'"):
        logitclip_loss(Z, Y, norm="l3")
    with pytest.raises(ShapeError, match=r"\(3, 3\)"):
        forward_corrected_loss(Z, Y, torch.eye(2))


def test_transition_from_npy_file(tmp_path):
    path = tmp_path / "T.npy"
    np.save(path, T)
    assert torch.allclose(forward_corrected_loss(Z, Y, str(path)), forward_corrected_loss(Z, Y, T))
    with pytest.raises(DataNotFoundError, match="'transition'.*does not exist"):
        forward_corrected_loss(Z, Y, str(tmp_path / "missing.npy"))


# ---------------------------------------------------------------------- authors' code conventions
def test_matches_the_authors_code_conventions_where_documented():
    """Re-derived from the APL / SCE / LogitClip reference code (formulas, not copied code)."""
    z = _random_logits(n=32, k=10, scale=2.0).to(torch.float32)
    y = torch.arange(32) % 10
    p = F.softmax(z, 1)
    onehot = F.one_hot(y, 10).float()
    # APL code: NCE = sum(onehot * log p) / sum(log p).
    log_p = F.log_softmax(z, 1)
    assert torch.allclose(nce_loss(z, y), (onehot * log_p).sum(1) / log_p.sum(1), atol=1e-6)
    # APL/SCE code: RCE = -sum(clamp(p, 1e-7, 1) * log(clamp(onehot, 1e-4, 1))): our log_zero = ln(1e-4).
    rce_code = -(p.clamp(1e-7, 1.0) * torch.log(onehot.clamp(1e-4, 1.0))).sum(1)
    assert torch.allclose(rce_loss(z, y, log_zero=math.log(1e-4)), rce_code, atol=1e-5)
    # APL code's "reduced MAE" is 1 - p_y, half of ours.
    assert torch.allclose(mae_loss(z, y) / 2, 1 - (onehot * p).sum(1), atol=1e-6)
    # LogitClip code with --temp 1 (where its test ||z|| > temp and its bound 1/temp agree).
    norms = z.norm(dim=1, keepdim=True) + 1e-7
    clipped = torch.where(norms > 1.0, z / norms, z)
    assert torch.allclose(logitclip_loss(z, y, delta=1.0), F.cross_entropy(clipped, y, reduction="none"),
                          atol=1e-6)


def test_backward_loss_is_bounded_below_with_the_authors_clipping():
    """Patrini et al.'s code clips p to [1e-7, 1 - 1e-7]: pushing a negatively weighted class's
    probability to 0 no longer sends the loss to -inf (the divergence seen without it)."""
    t = torch.tensor([[0.6, 0.4], [0.4, 0.6]], dtype=torch.float64)
    inverse = torch.linalg.inv(t)  # [[3, -2], [-2, 3]]
    labels = torch.tensor([0])
    for scale in (10.0, 100.0, 1000.0):
        z = torch.tensor([[scale, -scale]], dtype=torch.float64)  # p_1 -> 0, weight -2 on -log p_1
        clipped = backward_corrected_loss(z, labels, t)
        raw = backward_corrected_loss(z, labels, t, prob_clip=0.0)
        bound = float(inverse[0].clamp(max=0).sum() * -math.log(1e-7))
        assert float(clipped) >= bound - 1e-9
        if scale >= 100:
            assert float(raw) < bound  # unclipped: keeps decreasing without bound
    assert float(backward_corrected_loss(torch.tensor([[1000.0, -1000.0]], dtype=torch.float64), labels, t,
                                         prob_clip=0.0)) < -3000
    with pytest.raises(ValueError, match="'prob_clip'"):
        backward_corrected_loss(torch.zeros(1, 2), labels, t, prob_clip=0.5)
