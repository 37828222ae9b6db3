"""robustlab.repair.adaptive: the mixed classifier's closed form (endpoints exact, probabilities sum
to one, input gradients), the mixing network's fit (loss goes down, deterministic per generator,
base models untouched) and the mixed model through the adversarial suite."""

from __future__ import annotations

import math

import pytest
import torch
from _mix_fixtures import (
    EPS,
    assert_unchanged,
    digits,
    init_weights,
    snapshot,
    standard_and_robust,
    tiny_bn_net,
)
from torch import nn

from robustlab.adversarial import evaluate, pgd
from robustlab.errors import InvalidParameterError, InvalidTypeError, RobustlabError
from robustlab.repair import (
    MixedClassifier,
    MixingFit,
    MixingNetwork,
    fit_mixing_network,
    mixed_log_probs,
)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x, y = digits()
    return x[:40].clone(), y[:40].clone()


def test_fixed_alpha_endpoints_are_each_models_log_softmax(batch):
    standard, robust = standard_and_robust()
    x, _ = batch
    with torch.no_grad():
        s, r = standard(x), robust(x)
        assert torch.equal(MixedClassifier(standard, robust, alpha=0.0)(x), torch.log_softmax(s, dim=1))
        assert torch.equal(MixedClassifier(standard, robust, alpha=1.0)(x), torch.log_softmax(r, dim=1))
        assert torch.equal(mixed_log_probs(s, r, 0.0), torch.log_softmax(s, dim=1))
        assert torch.equal(mixed_log_probs(s, r, 1.0), torch.log_softmax(r, dim=1))


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.93])
def test_fixed_alpha_is_the_probability_mixture(alpha, batch):
    standard, robust = standard_and_robust()
    x, _ = batch
    mixed = MixedClassifier(standard, robust, alpha=alpha)
    with torch.no_grad():
        out = mixed(x).double()
        want = (1 - alpha) * torch.softmax(standard(x).double(), 1) + alpha * torch.softmax(robust(x).double(), 1)
    torch.testing.assert_close(out.exp(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(x.shape[0], dtype=torch.float64), rtol=0, atol=1e-6)
    assert torch.equal(mixed.mixing_weights(x), torch.full((x.shape[0],), alpha))


def test_stable_where_a_softmax_underflows():
    s = torch.tensor([[0.0, -2000.0], [1000.0, 0.0]])
    r = torch.tensor([[-2000.0, 0.0], [0.0, 0.0]])
    out = mixed_log_probs(s, r, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], torch.full((2,), math.log(0.5)))


def test_gradients_reach_inputs_and_attacks_work(batch):
    standard, robust = standard_and_robust()
    x, y = batch
    mixed = MixedClassifier(standard, robust, alpha=0.5)
    xg = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(mixed(xg), y).backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    for p in (*standard.parameters(), *robust.parameters()):  # the cached models are shared
        p.grad = None
    res = pgd(mixed, x, y, eps=EPS, num_steps=5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (mixed(res.adv_inputs).argmax(1) == y).float().mean() < (mixed(x).argmax(1) == y).float().mean()


def test_gradcheck_float64():
    s_net, r_net = init_weights(nn.Linear(5, 3), 7).double(), init_weights(nn.Linear(5, 3), 8).double()
    x = torch.rand(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9)).requires_grad_(True)
    assert torch.autograd.gradcheck(MixedClassifier(s_net, r_net, alpha=0.3), (x,))
    net = MixingNetwork(5, 4, generator=torch.Generator().manual_seed(1)).double()  # reads x itself
    ada = MixedClassifier(s_net, r_net, mixing_network=net, alpha_range=(0.1, 0.9))
    assert torch.autograd.gradcheck(ada, (x,))


def test_mixing_network_alpha_range_and_formula(batch):
    standard, robust = standard_and_robust()
    x, _ = batch
    net = MixingNetwork(32, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.out.bias.fill_(3.0)
    mixed = MixedClassifier(standard, robust, mixing_network=net, alpha_range=(0.2, 0.7))
    with torch.no_grad():
        alpha = mixed.mixing_weights(x)
        assert alpha.shape == (40,) and bool(((alpha >= 0.2) & (alpha <= 0.7)).all())
        want = mixed_log_probs(standard(x), robust(x), alpha)
        torch.testing.assert_close(mixed(x), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mixed(x).exp().sum(1), torch.ones(40), rtol=0, atol=1e-5)
    # A saturated network still gives finite log-probabilities and gradients (no log(0) * 0).
    with torch.no_grad():
        net.out.bias.fill_(-1e4)
    wide = MixedClassifier(standard, robust, mixing_network=net)
    with pytest.raises(InvalidParameterError, match="^The 'mixing_network' parameter must be a network that reads 64 features"):
        MixedClassifier(standard, robust, mixing_network=net, layers=["0"])(x)  # (N, 64) features
    xg = x.clone().requires_grad_(True)
    out = wide(xg)
    assert torch.isfinite(out).all()
    out[:, 0].sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_base_models_state_untouched_by_forward_and_train(batch):
    standard, robust = tiny_bn_net(5).train(), tiny_bn_net(6).eval()
    snaps = snapshot(standard), snapshot(robust)
    net = MixingNetwork(32, 4, generator=torch.Generator().manual_seed(0))
    mixed = MixedClassifier(standard, robust, mixing_network=net)
    mixed.train()
    assert net.training and standard.training and not robust.training
    mixed(batch[0])  # standard runs in eval mode: its BatchNorm statistics do not move
    mixed.eval()
    assert not net.training and standard.training
    assert_unchanged(standard, snaps[0])
    assert_unchanged(robust, snaps[1])


@pytest.mark.parametrize("kwargs, name, error", [
    ({}, "alpha", InvalidParameterError),
    ({"alpha": 0.5, "mixing_network": nn.Identity()}, "alpha", InvalidParameterError),
    ({"alpha": 1.5}, "alpha", InvalidParameterError),
    ({"alpha": math.nan}, "alpha", InvalidParameterError),
    ({"mixing_network": "net"}, "mixing_network", InvalidTypeError),
    ({"mixing_network": nn.Identity(), "layers": ["nope"]}, "layers", InvalidParameterError),
    ({"mixing_network": nn.Identity(), "alpha_range": (0.8, 0.2)}, "alpha_range", InvalidParameterError),
    ({"mixing_network": nn.Identity(), "alpha_range": 0.5}, "alpha_range", InvalidTypeError),
])
def test_mixed_classifier_bad_input(kwargs, name, error):
    with pytest.raises(error, match=rf"^The '{name}' parameter"):
        MixedClassifier(tiny_bn_net(0), tiny_bn_net(1), **kwargs)
    with pytest.raises(InvalidTypeError, match="^The 'robust' parameter"):
        MixedClassifier(tiny_bn_net(0), lambda x: x, alpha=0.5)


# ----------------------------------------------------------------------------- fitting
def _fit(seed: int) -> MixingFit:
    standard, robust = standard_and_robust()
    x, y, _, _ = digits()
    return fit_mixing_network(standard, robust, (x[:192], y[:192]), eps=EPS, epochs=4, batch_size=64,
                              attack_steps=3, hidden_size=16, lr=1e-2,
                              generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fitted() -> MixingFit:
    return _fit(0)


def test_fit_reduces_loss_and_learns_to_detect(fitted):
    assert isinstance(fitted, MixingFit) and len(fitted.losses) == 4
    assert all(math.isfinite(v) for v in fitted.losses)
    assert fitted.losses[-1] < fitted.losses[0]
    # Trained as a detector: more weight on the robust model under attack than on clean inputs.
    assert fitted.adversarial_alpha > fitted.clean_alpha
    assert not fitted.classifier.training and fitted.classifier.mixing_network is fitted.mixing_network


def test_fit_deterministic_per_generator_and_leaves_base_models(fitted):
    standard, robust = standard_and_robust()
    snaps = snapshot(standard), snapshot(robust)
    again = _fit(0)
    assert again.losses == fitted.losses
    for p, q in zip(again.mixing_network.state_dict().values(), fitted.mixing_network.state_dict().values()):
        assert torch.equal(p, q)
    other = _fit(1)
    assert other.losses != fitted.losses
    assert_unchanged(standard, snaps[0])
    assert_unchanged(robust, snaps[1])


def test_fitted_mixed_model_through_the_adversarial_suite(fitted, batch):
    standard, robust = standard_and_robust()
    x, y = batch
    snaps = snapshot(standard), snapshot(robust)
    res = evaluate(fitted.classifier, x, y, eps=EPS, suite="fast", generator=torch.Generator().manual_seed(0))
    assert 0.0 <= res.robust_accuracy <= res.clean_accuracy <= 1.0
    with torch.no_grad():
        assert res.clean_accuracy == pytest.approx(float((fitted.classifier(x).argmax(1) == y).float().mean()))
        # The suite's adversarial inputs break the mixed model itself (checked by evaluate too).
        broken = ~res.robust & res.clean_correct
        assert (fitted.classifier(res.adv_inputs[broken]).argmax(1) != y[broken]).all()
    assert_unchanged(standard, snaps[0])
    assert_unchanged(robust, snaps[1])


@pytest.mark.parametrize("kwargs, name", [
    ({"eps": 0.0}, "eps"), ({"eps": math.inf}, "eps"), ({"epochs": 0}, "epochs"), ({"norm": "l5"}, "norm"),
    ({"loss_weights": (0, 0, 0)}, "loss_weights"), ({"loss_weights": (1, -1, 0)}, "loss_weights"),
    ({"generator": None}, "generator"), ({"train_data": [1, 2, 3]}, "train_data"),
    ({"alpha_range": (0.2, 1.2)}, "alpha_range"),
])
def test_fit_bad_input(kwargs, name):
    x, y, _, _ = digits()
    args = {"train_data": (x[:8], y[:8]), "eps": EPS, "generator": torch.Generator().manual_seed(0), **kwargs}
    with pytest.raises(RobustlabError, match=rf"^The '{name}' parameter"):
        fit_mixing_network(tiny_bn_net(0).eval(), tiny_bn_net(1).eval(), **args)
