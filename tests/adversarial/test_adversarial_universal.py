"""Universal perturbations: the battery on the "uap" attack, fooling-rate properties, DeepFool step."""

from __future__ import annotations

import attack_battery
import pytest
import torch
from adv_testkit import linear_min_norms
from attack_battery import AttackCase

from robustlab.adversarial import ATTACKS
from robustlab.adversarial._core import model_view, perturbation_norms
from robustlab.adversarial.universal import (
    UAP,
    UniversalPerturbation,
    _deepfool_point,
    apply_universal,
    universal_attack,
    universal_perturbation,
)
from robustlab.errors import InvalidParameterError, ShapeError, UnknownNameError


def _uap_class(model, x, y, *, generator, targets=None, **settings):
    """The registered thin class, called the way the evaluation suites call attacks."""
    return UAP(**settings)(model, x, y, targets=targets, generator=generator)


CASES = [
    AttackCase("uap-sgd-linf", _uap_class, {"eps": 0.2, "norm": "linf", "method": "sgd", "max_passes": 5},
               min_success=0.3),
    AttackCase("uap-deepfool-l2", _uap_class,
               {"eps": 2.0, "norm": "l2", "method": "deepfool", "max_passes": 1}, min_success=0.5),
]


@pytest.mark.parametrize("check", attack_battery.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_battery(case, check, digits_mlp, attack_batch):
    check(case, digits_mlp, *attack_batch)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _error_rate(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) != y).float().mean())


# --------------------------------------------------------------------------- properties
@pytest.mark.parametrize("method", ["sgd", "deepfool"])
def test_zero_eps_fooling_rate_is_the_clean_error(method, digits_mlp, attack_batch):
    x, y = attack_batch
    u = universal_perturbation(digits_mlp, x, y, eps=0.0, method=method, generator=_gen())
    assert isinstance(u, UniversalPerturbation)
    assert u.perturbation.shape == x.shape[1:] and not bool(u.perturbation.any())
    assert u.fooling_rate == _error_rate(digits_mlp, x, y) > 0  # digits_mlp makes 2 mistakes here
    assert u.passes == 0 and u.eps == 0.0 and u.norm == "linf" and u.method == method


@pytest.mark.parametrize("method, norm, grid", [
    ("sgd", "linf", (0.05, 0.15, 0.3)),
    ("deepfool", "linf", (0.05, 0.15, 0.3)),
    ("deepfool", "l2", (0.5, 1.0, 2.0)),
])
def test_fooling_rate_grows_with_eps_and_the_ball_is_respected(method, norm, grid, digits_mlp,
                                                              attack_batch):
    x, y = attack_batch
    rates = []
    for eps in grid:
        u = universal_perturbation(digits_mlp, x, y, eps=eps, norm=norm, method=method,
                                   max_passes=2, generator=_gen())
        assert float(perturbation_norms(u.perturbation[None], norm)[0]) <= eps * (1 + 1e-6)
        # the reported fooling rate is the error on clamp(x + v)
        assert u.fooling_rate == _error_rate(digits_mlp, apply_universal(u, x), y)
        rates.append(u.fooling_rate)
    assert rates == sorted(rates), rates
    assert rates[-1] >= rates[0] + 0.3, rates


def test_stops_once_the_target_fooling_rate_is_met(digits_mlp, attack_batch):
    x, y = attack_batch
    u = universal_perturbation(digits_mlp, x, y, eps=0.3, method="deepfool", max_passes=10,
                               target_fooling_rate=0.5, generator=_gen())
    assert u.fooling_rate >= 0.5 and u.passes < 10


@pytest.mark.parametrize("method", ["sgd", "deepfool"])
def test_deterministic_per_generator(method, digits_mlp, attack_batch):
    x, y = attack_batch
    kw = {"eps": 0.2, "method": method, "max_passes": 1 if method == "deepfool" else 2}
    a = universal_perturbation(digits_mlp, x, y, generator=_gen(5), **kw)
    b = universal_perturbation(digits_mlp, x, y, generator=_gen(5), **kw)
    c = universal_perturbation(digits_mlp, x, y, generator=_gen(6), **kw)
    assert torch.equal(a.perturbation, b.perturbation) and a.fooling_rate == b.fooling_rate
    assert not torch.equal(a.perturbation, c.perturbation)  # the data order comes from the seed


def test_attack_applies_one_perturbation_and_leaves_clean_mistakes(digits_mlp, attack_batch):
    x, y = attack_batch
    settings = {"eps": 0.2, "norm": "linf", "method": "sgd", "max_passes": 5}
    res = universal_attack(digits_mlp, x, y, generator=_gen(), **settings)
    u = universal_perturbation(digits_mlp, x, y, generator=_gen(), **settings)
    with torch.no_grad():
        correct = digits_mlp(x).argmax(1) == y
    assert int((~correct).sum()) > 0
    assert torch.equal(res.adv_inputs[~correct], x[~correct]) and bool(res.success[~correct].all())
    torch.testing.assert_close(res.adv_inputs[correct], apply_universal(u, x)[correct])
    assert res.eps == 0.2 and res.norm == "linf" and res.num_iterations == u.passes


def test_registered_as_uap():
    assert ATTACKS.get("uap") is UAP


def test_apply_universal_clamps_and_checks_the_shape(attack_batch):
    x, _ = attack_batch
    v = torch.full(x.shape[1:], 0.5)
    out = apply_universal(v, x)
    assert float(out.max()) <= 1.0 and torch.equal(out, (x + 0.5).clamp(0, 1))
    assert torch.equal(x, attack_batch[0])  # not written
    with pytest.raises(ShapeError, match="'perturbation'"):
        apply_universal(torch.zeros(8, 8), x)


# --------------------------------------------------------------------------- DeepFool step
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_step_is_exact_on_a_linear_model(norm, linear_problem):
    """On an affine classifier one DeepFool step reaches the nearest boundary (DeepFool Sec. 3.3)."""
    model, x, labels, w, b = linear_problem
    exact = linear_min_norms(w, b, x, labels, norm)
    overshoot = 0.02
    with model_view(model, x) as view:
        for i in range(x.shape[0]):
            r, converged = _deepfool_point(view, x[i], int(labels[i]), torch.zeros_like(x[i]), i,
                                           norm=norm, num_steps=10, overshoot=overshoot)
            assert converged
            size = float(perturbation_norms(r[None], norm)[0])
            # (1 + overshoot) * (exact + the 1e-4 guard's share): within 0.1% of it
            assert size == pytest.approx((1 + overshoot) * float(exact[i]), rel=1e-3)
            assert size > (1 + overshoot) * float(exact[i])
            assert int(model((x[i] + r)[None]).argmax()) != int(labels[i])


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, error, name", [
    ({"eps": -0.1}, InvalidParameterError, "eps"),
    ({"eps": 0.1, "method": "fgsm"}, UnknownNameError, "method"),
    ({"eps": 0.1, "norm": "l1"}, UnknownNameError, "norm"),
    ({"eps": 0.1, "max_passes": 0}, InvalidParameterError, "max_passes"),
    ({"eps": 0.1, "target_fooling_rate": 1.5}, InvalidParameterError, "target_fooling_rate"),
    ({"eps": 0.1, "batch_size": 0}, InvalidParameterError, "batch_size"),
    ({"eps": 0.1, "step_size": 0.0}, InvalidParameterError, "step_size"),
])
def test_bad_settings_raise_one_line_errors(kwargs, error, name, digits_mlp, attack_batch):
    x, y = attack_batch
    with pytest.raises(error, match=f"'{name}'") as info:
        universal_perturbation(digits_mlp, x, y, generator=_gen(), **kwargs)
    assert "\n" not in str(info.value)


def test_generator_is_required_and_targets_refused(digits_mlp, attack_batch):
    x, y = attack_batch
    with pytest.raises(TypeError, match="'generator'"):
        universal_perturbation(digits_mlp, x, y, eps=0.1, generator=None)
    with pytest.raises(InvalidParameterError, match="'targets'"):
        universal_attack(digits_mlp, x, y, eps=0.1, targets=(y + 1) % 10, generator=_gen())
