"""C&W-L2 and EAD: the attack battery, known answers on a linear model, differential tests."""

from __future__ import annotations

import copy

import attack_battery
import pytest
import torch
from adv_testkit import linear_min_norms
from attack_battery import AttackCase

from robustlab.adversarial import ATTACKS
from robustlab.adversarial._core import margin, perturbation_norms
from robustlab.adversarial.optimization import CWL2, EAD, _BinarySearch, cw_l2, ead
from robustlab.errors import InvalidParameterError, InvalidTypeError, UnknownNameError

# Few steps with a large first c: the battery checks contracts, not minimality.
FAST = {"c_init": 1.0, "binary_search_steps": 3, "num_steps": 30, "learning_rate": 0.1}

# The linear problem needs c of about 0.2: start near it instead of at the reference's 1e-3.
LIN = {"c_init": 0.1, "binary_search_steps": 5, "num_steps": 100, "learning_rate": 0.02}

CASES = [
    AttackCase("cw-l2", cw_l2, dict(FAST), norm="l2", randomized=False, min_success=0.8),
    AttackCase("cw-l2-targeted", cw_l2, dict(FAST), norm="l2", randomized=False, targeted=True,
               min_success=0.8),
    AttackCase("ead", ead, dict(FAST), norm="l1", randomized=False, min_success=0.8),
    # eps mode: the battery's ball check applies (median L2 of FAST's points is about 0.65)
    AttackCase("cw-l2-eps", cw_l2, {**FAST, "eps": 0.7}, norm="l2", randomized=False,
               min_success=0.4),
]


@pytest.mark.parametrize("check", attack_battery.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_battery(case, check, digits_mlp, attack_batch):
    check(case, digits_mlp, *attack_batch)


# --------------------------------------------------------------------------- known answers
def test_cw_l2_finds_the_exact_minimal_l2_norm_of_a_linear_model(linear_problem):
    model, x, labels, w, b = linear_problem
    exact = linear_min_norms(w, b, x, labels, "l2")
    res = cw_l2(model, x, labels, **LIN)
    assert bool(res.success.all())
    ratio = res.norms / exact
    # never below the true minimum (that would be a wrong "success"), at most a few % above
    assert float(ratio.min()) >= 1 - 1e-6, ratio
    assert float(ratio.max()) <= 1.02, ratio
    assert res.norm == "l2" and res.eps is None


def test_cw_l2_confidence_buys_a_margin_at_a_larger_norm(linear_problem):
    model, x, labels, _, _ = linear_problem
    plain = cw_l2(model, x, labels, **LIN)
    kappa = 0.5
    strong = cw_l2(model, x, labels, confidence=kappa, **LIN)
    assert bool(strong.success.all())
    with torch.no_grad():
        m = margin(model(strong.adv_inputs), labels)
    assert float(m.max()) <= -kappa + 1e-6  # z_y is at least kappa below the best other class
    assert bool((strong.norms > plain.norms).all())


@pytest.mark.parametrize("fn, eps", [(cw_l2, 0.6), (ead, 2.3)])
def test_eps_mode_keeps_exactly_the_points_inside_the_ball(fn, eps, digits_mlp, attack_batch):
    x, y = attack_batch
    free = fn(digits_mlp, x, y, **FAST)
    bounded = fn(digits_mlp, x, y, eps=eps, **FAST)
    inside = free.success & (free.norms <= eps)
    assert 0 < int(inside.sum()) < int(free.success.sum())  # the radius splits the successes
    assert torch.equal(bounded.success, inside)
    assert torch.equal(bounded.adv_inputs[inside], free.adv_inputs[inside])
    assert torch.equal(bounded.adv_inputs[~inside & free.success], x[~inside & free.success])
    assert bounded.eps == eps and free.eps is None


def test_ead_with_beta_zero_is_an_l2_attack(linear_problem):
    model, x, labels, w, b = linear_problem
    exact = linear_min_norms(w, b, x, labels, "l2")
    res = ead(model, x, labels, beta=0.0, **LIN)
    assert bool(res.success.all()) and res.norm == "l1"
    l2 = perturbation_norms(res.adv_inputs - x, "l2")
    ratio = l2 / exact
    assert float(ratio.min()) >= 1 - 1e-6, ratio
    assert float(ratio.max()) <= 1.02, ratio


def test_ead_larger_beta_gives_sparser_perturbations(linear_problem):
    model, x, labels, w, b = linear_problem
    dense = ead(model, x, labels, beta=0.0, **LIN)
    sparse = ead(model, x, labels, beta=0.1, **LIN)
    assert bool(dense.success.all()) and bool(sparse.success.all())
    nonzero = lambda r: (r.adv_inputs - x).reshape(x.shape[0], -1).abs().gt(1e-12).sum(1)
    assert float(nonzero(sparse).float().mean()) < 0.5 * float(nonzero(dense).float().mean())
    # the L1 term buys a smaller L1 distortion (paid for in L2)
    assert float(sparse.norms.median()) < float(dense.norms.median())
    l1_exact = linear_min_norms(w, b, x, labels, "l1")
    assert bool((sparse.norms >= l1_exact * (1 - 1e-6)).all())


def test_ead_l1_rule_never_picks_a_larger_l1_than_the_en_rule(digits_mlp, attack_batch):
    x, y = attack_batch
    en = ead(digits_mlp, x, y, decision_rule="en", **FAST)
    l1 = ead(digits_mlp, x, y, decision_rule="l1", **FAST)
    both = en.success & l1.success
    assert int(both.sum()) >= 40
    # same iterates, different selection: the L1 rule picks the smallest L1 among them
    assert bool((l1.norms[both] <= en.norms[both] * (1 + 1e-5)).all())


def test_clean_mistakes_and_unbroken_examples_are_returned_unchanged(digits_mlp, attack_batch):
    x, y = attack_batch
    with torch.no_grad():
        pred = digits_mlp(x).argmax(1)
    wrong_labels = torch.where(torch.arange(y.numel()) < 8, (pred + 1) % 10, y)  # 8 "mistakes"
    res = cw_l2(digits_mlp, x, wrong_labels, c_init=1e-4, binary_search_steps=1, num_steps=5)
    assert torch.equal(res.adv_inputs[:8], x[:8]) and bool(res.success[:8].all())
    # c = 1e-4 for 5 steps cannot break the others: returned unchanged, not half-way points
    failed = ~res.success
    assert int(failed.sum()) > 0
    assert torch.equal(res.adv_inputs[failed], x[failed])
    assert bool((res.norms[failed] == 0).all())


def test_binary_search_grows_c_until_success_then_bisects():
    s = _BinarySearch.start(1e-3, torch.zeros(2, 3))
    s.update(torch.tensor([False, True]))
    torch.testing.assert_close(s.c, torch.tensor([1e-2, 5e-4]))
    s.update(torch.tensor([True, False]))
    # example 0: upper = 1e-2, c = (1e-3 + 1e-2) / 2; example 1: lower = 5e-4, c = (5e-4 + 1e-3) / 2
    torch.testing.assert_close(s.c, torch.tensor([5.5e-3, 7.5e-4]))


def test_registered_names():
    assert ATTACKS.get("cw-l2") is CWL2 and ATTACKS.get("ead") is EAD


def test_thin_classes_match_the_functions(digits_mlp, attack_batch):
    x, y = attack_batch
    a = CWL2(**FAST)(digits_mlp, x, y)
    b = cw_l2(digits_mlp, x, y, **FAST)
    assert torch.equal(a.adv_inputs, b.adv_inputs)
    c = EAD(**FAST)(digits_mlp, x[:8], y[:8])
    d = ead(digits_mlp, x[:8], y[:8], **FAST)
    assert torch.equal(c.adv_inputs, d.adv_inputs)


@pytest.mark.parametrize("fn, kwargs, error, name", [
    (cw_l2, {"binary_search_steps": 0}, InvalidParameterError, "binary_search_steps"),
    (cw_l2, {"num_steps": 0}, InvalidParameterError, "num_steps"),
    (cw_l2, {"c_init": 0.0}, InvalidParameterError, "c_init"),
    (cw_l2, {"confidence": -1.0}, InvalidParameterError, "confidence"),
    (cw_l2, {"learning_rate": "fast"}, InvalidTypeError, "learning_rate"),
    (ead, {"beta": -1e-3}, InvalidParameterError, "beta"),
    (ead, {"decision_rule": "l2"}, UnknownNameError, "decision_rule"),
    (ead, {"binary_search_steps": 0}, InvalidParameterError, "binary_search_steps"),
    (cw_l2, {"eps": -1.0}, InvalidParameterError, "eps"),
])
def test_bad_settings_raise_one_line_errors(fn, kwargs, error, name, digits_mlp, attack_batch):
    x, y = attack_batch
    with pytest.raises(error, match=f"'{name}'") as info:
        fn(digits_mlp, x, y, **kwargs)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- differential
def test_cw_l2_matches_torchattacks_cw(digits_mlp, attack_batch):
    """One binary-search step at c = 1, 100 Adam steps, lr 0.01: torchattacks.CW's setting.

    torchattacks has no binary search and a slightly different early stop and max-other-logit
    rule; median L2 norms over the examples both break agree within 10%.
    """
    import torchattacks
    x, y = attack_batch
    ref_model = copy.deepcopy(digits_mlp).eval()
    adv = torchattacks.CW(ref_model, c=1.0, kappa=0, steps=100, lr=0.01)(x, y)
    with torch.no_grad():
        ref_success = ref_model(adv).argmax(1) != y
    ref_norms = perturbation_norms(adv - x, "l2")
    ours = cw_l2(digits_mlp, x, y, c_init=1.0, binary_search_steps=1, num_steps=100,
                 learning_rate=0.01)
    both = ours.success & ref_success
    assert int(both.sum()) >= 40
    assert abs(ours.success_rate - float(ref_success.float().mean())) <= 0.1
    ratio = float(ours.norms[both].median() / ref_norms[both].median())
    assert 0.9 <= ratio <= 1.1, ratio


def test_ead_matches_art_elastic_net(digits_mlp, attack_batch):
    """ART's ElasticNet with the same beta, c, steps and rule; median L1 within 10%."""
    from art.attacks.evasion import ElasticNet
    from art.estimators.classification import PyTorchClassifier

    x, y = attack_batch
    ref_model = copy.deepcopy(digits_mlp).eval()
    clf = PyTorchClassifier(model=ref_model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    art_attack = ElasticNet(clf, confidence=0.0, targeted=False, learning_rate=1e-2,
                            binary_search_steps=3, max_iter=30, beta=1e-3, initial_const=1.0,
                            batch_size=64, decision_rule="EN", verbose=False)
    adv = torch.from_numpy(art_attack.generate(x.numpy(), y.numpy()))
    with torch.no_grad():
        ref_success = ref_model(adv).argmax(1) != y
    ref_norms = perturbation_norms(adv - x, "l1")
    ours = ead(digits_mlp, x, y, beta=1e-3, c_init=1.0, binary_search_steps=3, num_steps=30,
               abort_early=False)
    both = ours.success & ref_success
    assert int(both.sum()) >= 40
    assert abs(ours.success_rate - float(ref_success.float().mean())) <= 0.1
    ratio = float(ours.norms[both].median() / ref_norms[both].median())
    assert 0.9 <= ratio <= 1.1, ratio
