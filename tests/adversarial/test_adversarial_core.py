"""The shared attack helpers: projections, norms, random starts, losses, model view."""

from __future__ import annotations

import warnings

import pytest
import torch

from robustlab.adversarial._core import (
    NORMS,
    check_attack_args,
    dlr_loss,
    margin,
    model_view,
    normalize_direction,
    perturbation_norms,
    project,
    project_l1,
    random_in_ball,
)
from robustlab.errors import InvalidParameterError

from adv_testkit import linear_min_norms, linear_model


def _l1_projection_oracle(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Bisection on the soft-threshold ``theta`` (slow, obviously right)."""
    if float(v.abs().sum()) <= eps:
        return v
    lo, hi = 0.0, float(v.abs().max())
    for _ in range(200):
        mid = (lo + hi) / 2
        if float((v.abs() - mid).clamp_min(0).sum()) > eps:
            lo = mid
        else:
            hi = mid
    return v.sign() * (v.abs() - hi).clamp_min(0)


@pytest.mark.parametrize("eps", [0.1, 1.0, 5.0, 1e3])
def test_project_l1_matches_bisection(eps):
    g = torch.Generator().manual_seed(0)
    d = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64)
    out = project_l1(d, eps)
    for i in range(d.shape[0]):
        torch.testing.assert_close(out[i].flatten(), _l1_projection_oracle(d[i].flatten(), eps))


@pytest.mark.parametrize("norm", NORMS)
def test_project_lands_in_ball_and_is_idempotent(norm):
    g = torch.Generator().manual_seed(1)
    d = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.tensor([0.01, 0.1, 0.5, 2.0, 100.0], dtype=torch.float64)
    p = project(d, norm, eps)
    assert bool((perturbation_norms(p, norm) <= eps * (1 + 1e-9)).all())
    torch.testing.assert_close(project(p, norm, eps), p)
    # inside points are unchanged
    torch.testing.assert_close(p[-1], d[-1] if norm != "linf" else d[-1].clamp(-100, 100))


@pytest.mark.parametrize("norm", NORMS)
def test_random_start_in_ball_and_seeded(norm):
    x = torch.rand(16, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    a = random_in_ball(x, norm, 0.3, torch.Generator().manual_seed(5))
    b = random_in_ball(x, norm, 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert bool((perturbation_norms(a, norm) <= 0.3 + 1e-6).all())


@pytest.mark.parametrize("norm", NORMS)
def test_direction_is_steepest_ascent(norm):
    """<g, d> equals the dual norm of g for the unit-norm steepest direction d."""
    g = torch.randn(4, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    d = normalize_direction(g, norm)
    torch.testing.assert_close(perturbation_norms(d, norm), torch.ones(4, dtype=torch.float64))
    dual = {"linf": 1.0, "l2": 2.0, "l1": float("inf")}[norm]
    torch.testing.assert_close((g * d).sum(1), g.norm(p=dual, dim=1))


def test_dlr_and_margin_known_values():
    z = torch.tensor([[5.0, 3.0, 1.0, 0.0], [1.0, 4.0, 2.0, 0.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(margin(z, y), torch.tensor([2.0, -3.0]))
    # untargeted: -(z_y - max_other) / (z_pi1 - z_pi3)
    torch.testing.assert_close(dlr_loss(z, y), torch.tensor([-2.0 / 4.0, 3.0 / 3.0]))
    t = torch.tensor([1, 2])
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    torch.testing.assert_close(dlr_loss(z, y, t), torch.tensor([-2.0 / 4.5, 1.0 / 3.5]))


def test_linear_closed_form_helper_matches_bruteforce_line_search(linear_problem):
    model, x, labels, w, b = linear_problem
    d = linear_min_norms(w, b, x, labels, "l2")
    # moving along the optimal direction by (1 + 1e-6) d flips the decision, by (1 - 1e-6) d not
    with torch.no_grad():
        f = model(x)
    for i in range(x.shape[0]):
        gaps = [(f[i, labels[i]] - f[i, j]) / (w[labels[i]] - w[j]).norm() if j != labels[i] else float("inf")
                for j in range(4)]
        j = int(torch.tensor(gaps).argmin())
        direction = -(w[labels[i]] - w[j]) / (w[labels[i]] - w[j]).norm()
        for scale, flips in [(1 + 1e-6, True), (1 - 1e-6, False)]:
            xi = x[i].flatten() + scale * d[i] * direction
            pred = int((xi @ w.T + b).argmax())
            assert (pred != int(labels[i])) == flips


def test_check_attack_args_messages():
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    with pytest.raises(InvalidParameterError, match="'inputs'.*\\[0, 1\\]"):
        check_attack_args(x + 1, y)
    with pytest.raises(InvalidParameterError, match="'targets'"):
        check_attack_args(x, y, targets=y)
    with pytest.raises(TypeError, match="'generator'"):
        check_attack_args(x, y, needs_generator=True)


def test_model_view_counts_queries_restores_state_and_warns_on_probabilities():
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    model = linear_model(w, torch.zeros(3))
    model.train()
    x = torch.rand(5, 4)
    with model_view(model, x) as view:
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        view(x)
        view(x[:2], torch.tensor([0, 3]))
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert view.queries.tolist() == [2, 1, 1, 2, 1]
    probs = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="probabilities"), model_view(probs, x) as view:
        view(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with model_view(model, x) as view:
            view(x)
