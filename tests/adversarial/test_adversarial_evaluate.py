"""robustlab.adversarial.evaluate: AutoAttack suites as a per-example worst case.

Differential test against torchattacks' AutoAttack (a port of fra31/auto-attack, which CI cannot
install), bookkeeping invariants, determinism and input validation.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adv_testkit import NoisyInputs, SoftmaxOutputs
from robustlab.adversarial import Attack, AttackResult, perturbation_norms
from robustlab.adversarial.evaluate import (
    SUITES,
    RobustnessResult,
    evaluate,
    suite_attacks,
)
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    RobustlabError,
    ShapeError,
)

EPS = 0.1


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fgsm_like(eps: float):
    """A one-step attack from robustlab's gradient module (cheap, for bookkeeping tests)."""
    from robustlab.adversarial.gradient import pgd

    def attack(model, inputs, labels, *, generator=None):
        return pgd(model, inputs, labels, eps=eps, num_steps=5, generator=generator)
    return attack


class _Recorder:
    """Wraps an attack and records the inputs it was run on."""

    def __init__(self, attack) -> None:
        self.attack = attack
        self.seen: list[torch.Tensor] = []

    def __call__(self, model, inputs, labels, *, generator=None):
        self.seen.append(inputs.clone())
        return self.attack(model, inputs, labels, generator=generator)


def _identity(model, inputs, labels, *, generator=None):
    """An 'attack' that changes nothing (breaks nothing)."""
    return AttackResult(adv_inputs=inputs.clone(), success=torch.zeros(len(labels), dtype=torch.bool),
                        norms=torch.zeros(len(labels)), queries=torch.zeros(len(labels), dtype=torch.int64),
                        num_iterations=0, norm="linf", eps=0.0)


def _check_invariants(res: RobustnessResult, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    n = x.shape[0]
    assert res.num_examples == n and res.robust.shape == (n,) and len(res.broken_by) == n
    assert not bool((res.robust & ~res.clean_correct).any()), "robust must imply clean-correct"
    with torch.no_grad():
        clean_pred = model(x).argmax(1)
        adv_pred = model(res.adv_inputs).argmax(1)
    assert torch.equal(res.clean_correct, clean_pred == y)
    for i, b in enumerate(res.broken_by):
        assert (b is None) == bool(res.robust[i])
        assert (b == "clean") == (not bool(res.clean_correct[i]))
    broken = ~res.robust & res.clean_correct
    # the adversarial input kept for every broken example really is misclassified ...
    assert bool((adv_pred[broken] != y[broken]).all())
    # ... and robust examples keep their original input
    assert torch.equal(res.adv_inputs[res.robust], x[res.robust])
    norms = perturbation_norms(res.adv_inputs - x, res.norm)
    assert float(norms.max()) <= res.eps + 1e-5
    assert float(res.adv_inputs.min()) >= 0 and float(res.adv_inputs.max()) <= 1
    assert res.robust_accuracy == pytest.approx(float(res.robust.float().mean()))
    assert res.clean_accuracy == pytest.approx(float(res.clean_correct.float().mean()))
    # each attack saw exactly the examples still robust after the previous ones
    remaining = int(res.clean_correct.sum())
    for stat in res.attack_stats:
        assert stat.num_attacked == remaining
        remaining -= stat.num_broken
        assert stat.robust_accuracy == pytest.approx(remaining / n)
        assert sum(b == stat.name for b in res.broken_by) == stat.num_broken
    assert remaining == res.num_robust


# --------------------------------------------------------------------------- differential
def test_standard_matches_torchattacks_autoattack(digits_cnn, attack_batch):
    """Same suite as AutoAttack: robust accuracy within 0.5 pp or one example of torchattacks'.

    torchattacks' port runs APGD, APGD-T and FAB with its own default of 10 iterations (fra31 uses
    100, as robustlab does), so robustlab is at least as strong; on this model both reach the same
    per-example worst case up to one example.
    """
    import torchattacks  # test-only dependency (a port of fra31/auto-attack, which CI lacks)

    x, y = attack_batch
    ours = evaluate(digits_cnn, x, y, eps=EPS, norm="linf", suite="standard", generator=_gen(0))
    _check_invariants(ours, digits_cnn, x, y)
    aa = torchattacks.AutoAttack(digits_cnn, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0)
    adv = aa(x, y)
    with torch.no_grad():
        theirs = float((digits_cnn(adv).argmax(1) == y).float().mean())
    assert abs(ours.robust_accuracy - theirs) <= max(0.005, 1.0 / x.shape[0]) + 1e-9, (
        ours.robust_accuracy, theirs, ours.attack_stats)
    assert 0.0 < ours.robust_accuracy < ours.clean_accuracy  # the comparison is not vacuous
    assert [s.name for s in ours.attack_stats] == ["apgd-ce", "apgd-t", "fab-t", "square"]


# --------------------------------------------------------------------------- suites
def test_suites_follow_autoattack_set_version():
    names = {s: [n for n, _ in suite_attacks(s, eps=EPS, norm="linf", num_classes=10)] for s in SUITES}
    assert names["standard"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert names["plus"] == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert names["rand"] == ["apgd-ce", "apgd-dlr"]
    assert names["fast"] == ["apgd-ce", "apgd-t"]
    plus = dict(suite_attacks("plus", eps=EPS, norm="l2", num_classes=10))
    assert plus["apgd-ce"].settings["restarts"] == 5 and plus["apgd-dlr"].settings["loss"] == "dlr"
    assert plus["fab"].settings["restarts"] == 5 and plus["fab-t"].settings["restarts"] == 1
    assert plus["square"].settings["max_queries"] == 5000
    rand = dict(suite_attacks("rand", eps=EPS, num_classes=10))
    assert rand["apgd-ce"].settings["eot_iter"] == 20 and rand["apgd-dlr"].settings["eot_iter"] == 20
    std_l1 = dict(suite_attacks("standard", eps=EPS, norm="l1", num_classes=10))
    assert std_l1["apgd-ce"].settings["restarts"] == 5
    assert std_l1["apgd-t"].settings["num_target_classes"] == 5
    # robustlab's Square offers linf/l2 only: the L1 suite runs without it (documented deviation)
    assert "square" not in std_l1 and list(std_l1) == ["apgd-ce", "apgd-t", "fab-t"]
    # never more target classes than the model has other classes
    three = dict(suite_attacks("standard", eps=EPS, num_classes=3))
    assert three["apgd-t"].settings["num_target_classes"] == 2
    assert three["fab-t"].settings["num_target_classes"] == 2


# --------------------------------------------------------------------------- bookkeeping
def test_custom_attacks_only_see_unbroken_examples(digits_cnn, attack_batch):
    x, y = attack_batch
    first, second = _Recorder(_fgsm_like(EPS)), _Recorder(_fgsm_like(EPS))
    res = evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(1), batch_size=20,
                   attacks=[("a", first), ("b", second)])
    _check_invariants(res, digits_cnn, x, y)
    assert res.suite == "custom"
    seen_first = torch.cat(first.seen)
    assert seen_first.shape[0] == int(res.clean_correct.sum())  # clean-wrong ones never attacked
    assert all(s.shape[0] <= 20 for s in first.seen)  # batched
    # the second attack saw exactly the examples the first left unbroken
    seen_second = torch.cat(second.seen) if second.seen else x[:0]
    unbroken_after_first = res.clean_correct & torch.tensor([b != "a" for b in res.broken_by])
    assert seen_second.shape[0] == int(unbroken_after_first.sum())
    assert torch.equal(seen_second, x[unbroken_after_first])
    assert res.attack_stats[0].num_broken > 0


def test_same_generator_same_result(digits_cnn, attack_batch):
    from robustlab.adversarial.gradient import PGD

    x, y = attack_batch
    attacks = [("pgd", PGD(eps=EPS, num_steps=5))]  # an Attack instance works as a custom attack
    assert isinstance(attacks[0][1], Attack)
    a = evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(3), attacks=attacks, batch_size=16)
    b = evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(3), attacks=attacks, batch_size=16)
    assert torch.equal(a.robust, b.robust) and torch.equal(a.adv_inputs, b.adv_inputs)
    assert a.broken_by == b.broken_by


def test_deterministic_attacks_do_not_depend_on_batch_size(digits_cnn, attack_batch):
    """With deterministic attacks (FGSM) chunking changes nothing: the per-example worst case is
    the same for any batch_size (randomised attacks differ, see evaluate's Notes)."""
    from robustlab.adversarial.gradient import FGSM, PGD

    x, y = attack_batch
    attacks = [("fgsm", FGSM(eps=EPS)), ("pgd", PGD(eps=EPS, num_steps=5, random_start=False))]
    whole = evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(0), attacks=attacks, batch_size=64)
    chunked = evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(1), attacks=attacks, batch_size=7)
    assert torch.equal(whole.robust, chunked.robust) and whole.broken_by == chunked.broken_by
    assert torch.allclose(whole.adv_inputs, chunked.adv_inputs, atol=1e-6)


def test_eps_zero_runs_no_attack(digits_cnn, attack_batch):
    x, y = attack_batch
    rec = _Recorder(_fgsm_like(0.0))
    res = evaluate(digits_cnn, x, y, eps=0.0, generator=_gen(), attacks=[("rec", rec)])
    assert rec.seen == [] and torch.equal(res.robust, res.clean_correct)
    assert res.attack_stats[0].num_attacked == 0


def test_attack_outside_the_ball_is_refused(digits_cnn, attack_batch):
    x, y = attack_batch
    with pytest.raises(RobustlabError, match="outside the threat model"):
        evaluate(digits_cnn, x, y, eps=0.01, generator=_gen(), attacks=[("big", _fgsm_like(0.3))])


def test_model_state_restored_and_inputs_untouched(digits_mlp, attack_batch):
    x, y = attack_batch
    x0 = x.clone()
    digits_mlp.train()
    try:
        evaluate(digits_mlp, x, y, eps=EPS, generator=_gen(), attacks=[("pgd", _fgsm_like(EPS))])
        assert digits_mlp.training
        assert all(p.requires_grad for p in digits_mlp.parameters())
    finally:
        digits_mlp.eval()
    assert torch.equal(x, x0)


def test_probability_outputs_warn(digits_cnn, attack_batch):
    x, y = attack_batch
    with pytest.warns(UserWarning, match="probabilities"):
        evaluate(SoftmaxOutputs(digits_cnn), x, y, eps=EPS, generator=_gen(), attacks=[("id", _identity)])


def test_randomised_model_warns_instead_of_failing_the_final_check(digits_cnn, attack_batch):
    x, y = attack_batch
    with pytest.warns(UserWarning, match="randomised"):
        res = evaluate(NoisyInputs(digits_cnn), x, y, eps=EPS, generator=_gen(),
                       attacks=[("pgd", _fgsm_like(EPS))])
    assert not bool((res.robust & ~res.clean_correct).any())


def test_rand_suite_on_a_randomised_model(digits_cnn, attack_batch):
    """AutoAttack's 'rand' (APGD-CE, APGD-DLR with 20 EoT passes): no 'use rand' hint, and the
    final check on a randomised model warns (robust accuracy holds per draw) instead of failing."""
    x, y = attack_batch[0][:8], attack_batch[1][:8]
    with pytest.warns(UserWarning) as record:
        res = evaluate(NoisyInputs(digits_cnn), x, y, eps=EPS, suite="rand", generator=_gen())
    messages = [str(w.message) for w in record]
    assert not any("suite='rand' (APGD with Expectation" in m for m in messages)
    assert [s.name for s in res.attack_stats] == ["apgd-ce", "apgd-dlr"]
    assert not bool((res.robust & ~res.clean_correct).any())


def test_non_rand_suite_hints_at_rand_for_a_randomised_model(digits_cnn, attack_batch):
    x, y = attack_batch
    with pytest.warns(UserWarning, match="suite='rand'"):
        evaluate(NoisyInputs(digits_cnn), x, y, eps=EPS, generator=_gen(), attacks=[("id", _identity)])


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": -0.1}, InvalidParameterError, "'eps'"),
        ({"eps": "big"}, InvalidTypeError, "'eps'"),
        ({"norm": "l3"}, InvalidParameterError, "'norm'.*'l1', 'l2', 'linf'"),
        ({"suite": "bogus"}, InvalidParameterError, "'suite'.*'fast', 'plus', 'rand', 'standard'"),
        ({"batch_size": 0}, InvalidParameterError, "'batch_size'"),
        ({"generator": None}, InvalidTypeError, "'generator'"),
        ({"attacks": []}, InvalidTypeError, "'attacks'"),
        ({"attacks": [("x", 3)]}, InvalidTypeError, "'attacks'"),
        ({"attacks": [("a", _identity), ("a", _identity)]}, InvalidParameterError, "unique"),
        ({"progress": "yes"}, InvalidTypeError, "'progress'"),
    ],
)
def test_bad_arguments_one_line_errors(digits_cnn, attack_batch, kwargs, error, match):
    x, y = attack_batch
    args = {"eps": EPS, "generator": _gen()} | kwargs
    with pytest.raises(error, match=match) as info:
        evaluate(digits_cnn, x, y, **args)
    assert "\n" not in str(info.value)


def test_bad_data_one_line_errors(digits_cnn, attack_batch):
    x, y = attack_batch
    with pytest.raises(ShapeError, match="'labels'") as info:
        evaluate(digits_cnn, x, y[:-1], eps=EPS, generator=_gen())
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidParameterError, match=r"'inputs'.*\[0, 1\]"):
        evaluate(digits_cnn, x * 255, y, eps=EPS, generator=_gen())
    with pytest.raises(InvalidParameterError, match="'inputs'"):
        evaluate(digits_cnn, x[:0], y[:0], eps=EPS, generator=_gen())


def test_standard_suite_on_tabular_inputs_runs_without_square():
    """Square needs images; on (N, D) inputs the suite warns and runs the other attacks."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 6, generator=g)
    model = torch.nn.Linear(6, 3)
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.zero_()
    x = torch.rand(20, 6, generator=g)
    y = model(x).argmax(1).detach()
    with pytest.warns(UserWarning, match="without Square"):
        res = evaluate(model, x, y, eps=0.05, norm="linf", suite="standard", generator=torch.Generator().manual_seed(1))
    assert [s.name for s in res.attack_stats] == ["apgd-ce", "apgd-t", "fab-t"]
    assert 0.0 <= res.robust_accuracy <= res.clean_accuracy
