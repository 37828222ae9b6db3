"""DeepFool and FMN: the battery, exact answers on linear models, torchattacks.DeepFool, bad input."""

from __future__ import annotations

import pytest
import torch

from robustlab.adversarial import ATTACKS
from robustlab.adversarial._core import perturbation_norms
from robustlab.adversarial.minimum_norm import (
    FMN,
    DeepFool,
    _project_ball_and_box,
    deepfool,
    fmn,
)
from robustlab.errors import InvalidParameterError

import attack_battery
from adv_testkit import linear_min_norms, linear_model
from attack_battery import AttackCase
from test_adversarial_fab import _l1_box_min_norms

CASES = [
    AttackCase("deepfool-l2", deepfool, dict(norm="l2"), min_success=0.98),
    AttackCase("deepfool-linf-top4", deepfool, dict(norm="linf", num_candidates=4), min_success=0.98),
    AttackCase("fmn-l2", fmn, dict(norm="l2", num_steps=30), min_success=0.98),
    AttackCase("fmn-linf", fmn, dict(norm="linf", num_steps=30), min_success=0.98),
    AttackCase("fmn-l1", fmn, dict(norm="l1", num_steps=30), min_success=0.98),
    AttackCase("fmn-l2-targeted", fmn, dict(norm="l2", num_steps=30), targeted=True, min_success=0.9),
]


@pytest.mark.parametrize("check", attack_battery.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_battery(case, check, digits_mlp, attack_batch):
    check(case, digits_mlp, *attack_batch)


def _centred_linear_problem():
    """Like ``linear_problem`` but with offsets centring the scores at the box centre, so every
    minimal perturbation (L1 included: one coordinate moves) stays well inside the box."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 16, generator=g, dtype=torch.float64)
    x = 0.5 + 0.05 * torch.randn(12, 1, 4, 4, generator=g, dtype=torch.float64)
    b = -0.5 * w.sum(dim=1)
    model = linear_model(w, b)
    labels = model(x).argmax(dim=1)
    return model, x, labels, w, b


# --------------------------------------------------------------------------- DeepFool
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_exact_on_linear_model(norm, linear_problem):
    """One step lands on the closest boundary; the overshoot scales it by 1.02."""
    model, x, labels, w, b = linear_problem
    res = deepfool(model, x, labels, norm=norm)
    assert bool(res.success.all()) and res.num_iterations == 1 and res.eps is None
    torch.testing.assert_close(res.norms, 1.02 * linear_min_norms(w, b, x, labels, norm), rtol=1e-9, atol=0)


def test_deepfool_candidates_restrict_the_boundary(linear_problem):
    """With 2 candidates only the runner-up class's boundary is searched."""
    model, x, labels, w, _ = linear_problem
    runner_up = model(x).argsort(dim=1, descending=True)[:, 1]
    res = deepfool(model, x, labels, norm="l2", num_candidates=2, overshoot=0.0)
    dw = w[labels] - w[runner_up]
    gap = (model(x).gather(1, labels[:, None]) - model(x).gather(1, runner_up[:, None])).squeeze(1)
    torch.testing.assert_close(res.norms, (gap / dw.norm(dim=1)).detach(), rtol=1e-9, atol=0)
    everything = deepfool(model, x, labels, norm="l2", overshoot=0.0)
    assert bool((everything.norms <= res.norms * (1 + 1e-9)).all())


def test_deepfool_norms_match_torchattacks(digits_mlp, attack_batch):
    """Median norm ratio near 1 where both succeed; ours breaks every example, torchattacks'
    (which clips its steps to the box and stalls) breaks far fewer."""
    import torchattacks

    x, y = attack_batch[0][:24], attack_batch[1][:24]  # torchattacks loops over examples in Python
    ours = deepfool(digits_mlp, x, y)
    adv = torchattacks.DeepFool(digits_mlp, steps=50, overshoot=0.02)(x, y)
    with torch.no_grad():
        theirs = digits_mlp(adv).argmax(dim=1) != y
    ref = perturbation_norms(adv - x, "l2")
    both = ours.success & theirs & (ref > 0)
    ratio = (ours.norms[both] / ref[both]).median()
    assert int(both.sum()) >= 8 and 0.95 <= float(ratio) <= 1.08, float(ratio)
    assert bool(ours.success.all()) and int(theirs.sum()) < int(ours.success.sum())


# --------------------------------------------------------------------------- FMN
@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_fmn_close_to_exact_on_linear_model(norm, linear_problem):
    """L1 here has the box active (see test_adversarial_fab): the exact answer is an LP's."""
    model, x, labels, w, b = linear_problem
    exact = linear_min_norms(w, b, x, labels, norm) if norm != "l1" else _l1_box_min_norms(w, b, x, labels)
    res = fmn(model, x, labels, norm=norm)
    assert bool(res.success.all()) and res.eps is None
    assert bool((res.norms >= exact * (1 - 1e-9)).all())  # nothing beats the exact minimum
    assert bool((res.norms <= exact * 1.001).all()), (res.norms / exact).max()


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_fmn_close_to_exact_inside_the_box(norm):
    model, x, labels, w, b = _centred_linear_problem()
    exact = linear_min_norms(w, b, x, labels, norm)
    res = fmn(model, x, labels, norm=norm)
    assert bool(res.success.all())
    assert bool((res.norms >= exact * (1 - 1e-9)).all())
    assert bool((res.norms <= exact * 1.001).all()), (res.norms / exact).max()


@pytest.mark.parametrize("norm", ["l2", "l1", "linf"])
def test_projection_onto_ball_and_box_is_the_nearest_point(norm):
    """Feasible, and the projection inequality <v - p, z - p> <= 0 holds for sampled feasible z."""
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(8, 6, generator=g, dtype=torch.float64)
    x0[:, 0] = 0.0  # on a face
    v = 2 * torch.randn(8, 6, generator=g, dtype=torch.float64)
    eps = torch.linspace(0.05, 3.0, 8, dtype=torch.float64)
    p = _project_ball_and_box(v, x0, norm, eps)
    assert bool((perturbation_norms(p, norm) <= eps * (1 + 1e-9)).all())
    assert bool(((x0 + p) >= -1e-12).all()) and bool(((x0 + p) <= 1 + 1e-12).all())
    # feasible points around p: clipped to the box, then scaled into the ball (the box holds 0).
    # (Projecting onto the ball and then clipping, the reference's order, fails this for L2 and L1.)
    z = p[:, None] + 0.3 * torch.randn(8, 4000, 6, generator=g, dtype=torch.float64)
    z = torch.maximum(torch.minimum(z, 1 - x0[:, None]), -x0[:, None])
    z = z * (eps[:, None] / perturbation_norms(z.reshape(-1, 6), norm).reshape(8, 4000)).clamp(max=1)[..., None]
    assert float((((v - p)[:, None] * (z - p[:, None])).sum(-1)).max()) <= 1e-9
    inside = torch.full((8,), 1e3, dtype=torch.float64)
    torch.testing.assert_close(_project_ball_and_box(v, x0, norm, inside), v.clamp(-x0, 1 - x0))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fmn_targeted_reaches_the_target(norm, linear_problem):
    model, x, labels, _, _ = linear_problem
    targets = (labels + 1) % 4
    res = fmn(model, x, labels, norm=norm, targets=targets)
    with torch.no_grad():
        pred = model(res.adv_inputs).argmax(dim=1)
    assert torch.equal(res.success, pred == targets) and bool(res.success.all())
    untargeted = fmn(model, x, labels, norm=norm)
    assert bool((res.norms >= untargeted.norms * (1 - 1e-3)).all())


def test_clean_mistakes_unchanged(digits_mlp, attack_batch):
    x, y = attack_batch
    wrong = (y + 1) % 10  # every example is "misclassified" w.r.t. these labels
    for res in (deepfool(digits_mlp, x, wrong), fmn(digits_mlp, x, wrong, num_steps=5)):
        assert torch.equal(res.adv_inputs, x) and bool(res.success.all())
        assert float(res.norms.max()) == 0.0


def test_thin_classes_and_registry(digits_mlp, attack_batch):
    x, y = attack_batch
    assert ATTACKS.get("deepfool") is DeepFool and ATTACKS.get("fmn") is FMN
    a = FMN(norm="linf", num_steps=5)(digits_mlp, x, y)
    assert torch.equal(a.adv_inputs, fmn(digits_mlp, x, y, norm="linf", num_steps=5).adv_inputs)
    b = DeepFool(norm="linf")(digits_mlp, x, y)
    assert torch.equal(b.adv_inputs, deepfool(digits_mlp, x, y, norm="linf").adv_inputs)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("fn, kwargs, name", [
    (deepfool, dict(norm="l1"), "norm"),
    (deepfool, dict(num_candidates=1), "num_candidates"),
    (deepfool, dict(num_candidates=11), "num_candidates"),
    (deepfool, dict(overshoot=-0.1), "overshoot"),
    (deepfool, dict(num_steps=0), "num_steps"),
    (fmn, dict(norm="l0"), "norm"),
    (fmn, dict(gamma_init=1.0), "gamma_init"),
    (fmn, dict(gamma_final=0.0), "gamma_final"),
    (fmn, dict(alpha_init=0.0), "alpha_init"),
    (fmn, dict(alpha_final=-1.0), "alpha_final"),
])
def test_bad_input(fn, kwargs, name, digits_mlp, attack_batch):
    x, y = attack_batch
    with pytest.raises((InvalidParameterError, Exception), match=f"'{name}'") as info:
        fn(digits_mlp, x, y, **kwargs)
    assert "\n" not in str(info.value)
