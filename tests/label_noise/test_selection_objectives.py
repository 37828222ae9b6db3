"""ELR, Co-teaching(+), Adaptive-k and DivideMix as Trainer objectives: steps, determinism, resume, bad input."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

from robustlab.data import Batch, Dataset, make_synthetic
from robustlab.errors import InvalidParameterError, RobustlabError
from robustlab.label_noise.selection import (
    ELR,
    AdaptiveK,
    CoTeaching,
    CoTeachingPlus,
    coteaching_forget_rate,
    num_remembered,
    peer_network,
)
from robustlab.models import build_model
from robustlab.training import OBJECTIVES, TrainConfig, Trainer, build_objective
from train_testkit import Interrupted, interrupt_at_epoch

CPU = torch.device("cpu")

# Settings that make every method's own machinery active from the first epoch.
METHODS = {
    "elr": {},
    "coteaching": {"forget_rate": 0.3, "num_gradual": 1},
    "coteaching+": {"forget_rate": 0.3, "num_gradual": 1},
    "adaptive-k": {"warmup_epochs": 0},
    "dividemix": {"warmup_epochs": 1},
}


def _data(n: int = 96, seed: int = 0) -> Dataset:
    return make_synthetic(n, num_classes=3, dim=4, separation=3.0, generator=torch.Generator().manual_seed(seed)).dataset


def _model(seed: int = 0) -> torch.nn.Module:
    return build_model("mlp", (4,), 3, hidden_sizes=(16,), seed=seed)


def _params(model: torch.nn.Module, objective) -> list[torch.Tensor]:
    return [p.detach().clone() for p in [*model.parameters(), *objective.extra_parameters()]]


def test_every_method_is_registered():
    for name in METHODS:
        assert name in OBJECTIVES
        assert build_objective(name).name == name


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_step_reduces_the_objectives_own_loss(name):
    data = _data()
    model = _model()
    objective = build_objective(name, **{**METHODS[name], **({"warmup_epochs": 0} if name == "dividemix" else {})})
    generator = torch.Generator().manual_seed(1)
    objective.setup(model=model, train=data, config=TrainConfig(epochs=3, batch_size=len(data)), device=CPU,
                    generator=generator)
    objective.on_epoch_start(0)
    x, y = data.tensors()
    batch = Batch(x, y, torch.arange(len(data)))
    params = [*model.parameters(), *objective.extra_parameters()]
    state = copy.deepcopy({k: v for k, v in objective.state_dict().items() if k != "peer"})
    g_state, rng_state = generator.get_state(), torch.get_rng_state()
    model.train()
    before = objective.compute(model, batch, epoch=0, step=0).loss
    optimizer = torch.optim.SGD(params, lr=0.05)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    # Same randomness and the same per-example state as the first evaluation.
    generator.set_state(g_state)
    torch.set_rng_state(rng_state)
    if state:
        objective.load_state_dict({**objective.state_dict(), **state})
    after = objective.compute(model, batch, epoch=0, step=0).loss
    assert after.item() < before.item()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_same_seed_same_weights(name):
    data = _data()
    runs = []
    for _ in range(2):
        model, objective = _model(), build_objective(name, **METHODS[name])
        Trainer(model, objective, TrainConfig(epochs=2, batch_size=32, lr=0.05)).fit(data)
        runs.append(_params(model, objective))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_resume_is_exact(name, tmp_path):
    data = _data()
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05)
    straight_model, straight = _model(), build_objective(name, **METHODS[name])
    Trainer(straight_model, straight, config).fit(data)

    interrupted = interrupt_at_epoch(build_objective(name, **METHODS[name]), 2)
    with pytest.raises(Interrupted):
        Trainer(_model(), interrupted, config).fit(data, run_dir=tmp_path)
    resumed_model, resumed = _model(seed=5), build_objective(name, **METHODS[name])
    Trainer(resumed_model, resumed, config).fit(data, run_dir=tmp_path, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(_params(straight_model, straight), _params(resumed_model, resumed)))


# ---------------------------------------------------------------------- ELR
def test_elr_targets_follow_the_temporal_ensemble_formula():
    data = Dataset(torch.zeros(3, 2), torch.tensor([0, 1, 0]))
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([0.0, torch.log(torch.tensor(3.0))]))  # softmax = (0.25, 0.75)
    elr = ELR(lam=3.0, beta=0.7)
    elr.setup(model=model, train=data, config=TrainConfig(epochs=1), device=CPU, generator=torch.Generator())
    batch = Batch(torch.zeros(2, 2), torch.tensor([1, 0]), torch.tensor([2, 0]))
    out = elr.compute(model, batch, epoch=0, step=0)
    p = torch.tensor([0.25, 0.75])
    t = 0.3 * p  # t starts at 0: 0.7 * 0 + 0.3 * p
    assert torch.allclose(elr.targets[2], t) and torch.allclose(elr.targets[0], t)
    assert torch.equal(elr.targets[1], torch.zeros(2))  # not in the batch
    ce = -(torch.log(p[1]) + torch.log(p[0])) / 2
    expected = ce + 3.0 * torch.log(1 - (t * p).sum())
    assert torch.allclose(out.loss, expected, atol=1e-6)
    elr.compute(model, batch, epoch=0, step=1)
    assert torch.allclose(elr.targets[2], 0.7 * t + 0.3 * p)


def test_elr_regulariser_pulls_towards_the_target_not_the_label():
    # With a confident target on class 0 and label 1, ELR's gradient on the logit of class 0 is
    # smaller (pushes towards class 0 more) than cross entropy's alone.
    data = Dataset(torch.zeros(1, 2), torch.tensor([1]))
    logits = torch.zeros(1, 2, requires_grad=True)
    model = lambda x: logits
    elr = ELR(lam=3.0, beta=0.0)
    elr.setup(model=torch.nn.Linear(2, 2), train=data, config=TrainConfig(epochs=1), device=CPU,
              generator=torch.Generator())
    elr.targets[0] = torch.tensor([0.99, 0.01])
    elr.beta = 0.999999  # keep the target
    loss = elr.compute(model, Batch(torch.zeros(1, 2), torch.tensor([1]), torch.tensor([0])), epoch=0, step=0).loss
    (grad,) = torch.autograd.grad(loss, logits)
    (ce_grad,) = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([1])), logits)
    assert grad[0, 0] < ce_grad[0, 0]


# ---------------------------------------------------------------------- Co-teaching
def test_forget_rate_schedule_matches_r_of_t():
    rates = [coteaching_forget_rate(e, forget_rate=0.4, num_gradual=10) for e in range(15)]
    assert rates[0] == pytest.approx(0.04) and rates[9] == pytest.approx(0.4) and rates[14] == pytest.approx(0.4)
    assert all(b >= a for a, b in itertools.pairwise(rates))
    assert num_remembered(10, 0.3) == 7 and num_remembered(100, 0.29) == 71 and num_remembered(3, 0.9) == 1


def test_coteaching_selects_exactly_r_of_t_and_exchanges():
    data = _data(40)
    model = _model()
    ct = CoTeaching(forget_rate=0.5, num_gradual=2)
    ct.setup(model=model, train=data, config=TrainConfig(epochs=3), device=CPU, generator=torch.Generator().manual_seed(0))
    x, y = data.tensors()
    batch = Batch(x, y, torch.arange(40))
    for epoch, forget in [(0, 0.25), (1, 0.5), (2, 0.5)]:
        out = ct.compute(model, batch, epoch=epoch, step=0)
        keep = round((1 - forget) * 40)
        assert out.metrics["kept_fraction"] == keep / 40
        l1 = F.cross_entropy(model(x), y, reduction="none")
        l2 = F.cross_entropy(ct.peer(x), y, reduction="none")
        by1, by2 = torch.argsort(l1, stable=True)[:keep], torch.argsort(l2, stable=True)[:keep]
        assert torch.allclose(out.loss, l1[by2].mean() + l2[by1].mean())  # each net learns from the other's pick


def test_coteaching_networks_start_and_stay_different():
    data = _data()
    model, ct = _model(), CoTeaching(forget_rate=0.3)
    Trainer(model, ct, TrainConfig(epochs=3, batch_size=32, lr=0.05)).fit(data)
    diff = sum(float((p - q).abs().sum().detach()) for p, q in zip(model.parameters(), ct.peer.parameters()))
    assert diff > 1.0
    # the peer really is trained: it changed from its initialisation
    fresh = peer_network(_model(), generator=torch.Generator().manual_seed(0))
    assert not all(torch.equal(p, q) for p, q in zip(fresh.parameters(), ct.peer.parameters()))


def test_peer_network_is_seeded_and_leaves_global_rng_alone():
    model = _model()
    before = torch.get_rng_state()
    a = peer_network(model, generator=torch.Generator().manual_seed(3))
    b = peer_network(model, generator=torch.Generator().manual_seed(3))
    c = peer_network(model, generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), model.parameters()))


def test_coteaching_plus_trains_only_on_disagreement():
    data = _data(60)
    model = _model()
    ctp = CoTeachingPlus(forget_rate=0.0)
    ctp.setup(model=model, train=data, config=TrainConfig(epochs=1), device=CPU, generator=torch.Generator().manual_seed(0))
    x, y = data.tensors()
    out = ctp.compute(model, Batch(x, y, torch.arange(60)), epoch=0, step=0)
    d = model(x).argmax(1) != ctp.peer(x).argmax(1)
    assert 0 < int(d.sum()) < 60
    expected = F.cross_entropy(model(x)[d], y[d]) + F.cross_entropy(ctp.peer(x)[d], y[d])
    assert torch.allclose(out.loss, expected)
    assert out.metrics["disagree_fraction"] == pytest.approx(float(d.float().mean()))
    # full agreement: no update at all
    ctp.peer.load_state_dict(model.state_dict())
    out = ctp.compute(model, Batch(x, y, torch.arange(60)), epoch=0, step=0)
    assert out.loss.item() == 0.0 and out.loss.requires_grad


# ---------------------------------------------------------------------- Adaptive-k
def test_adaptive_k_threshold_follows_the_moment_rule():
    data = _data(30)
    model = _model()
    ak = AdaptiveK(warmup_epochs=0)
    ak.setup(model=model, train=data, config=TrainConfig(epochs=2), device=CPU, generator=torch.Generator())
    x, y = data.tensors()
    m = v = 0.0
    for step in range(3):
        out = ak.compute(model, Batch(x, y, torch.arange(30)), epoch=0, step=step)
        losses = F.cross_entropy(model(x), y, reduction="none").detach()
        mu = float(losses.mean())
        m, v = 0.9 * m + 0.1 * mu, 0.999 * v + 0.001 * mu * mu
        theta = m / (v ** 0.5 + 1e-8)
        assert out.metrics["threshold"] == pytest.approx(theta)
        keep = losses <= theta
        assert out.metrics["kept_fraction"] == pytest.approx(float(keep.float().mean()))
        if keep.any():
            assert torch.allclose(out.loss, F.cross_entropy(model(x)[keep], y[keep]))


def test_adaptive_k_warmup_is_plain_cross_entropy():
    data = _data(30)
    model = _model()
    ak = AdaptiveK()
    ak.setup(model=model, train=data, config=TrainConfig(epochs=8), device=CPU, generator=torch.Generator())
    x, y = data.tensors()
    out = ak.compute(model, Batch(x, y, torch.arange(30)), epoch=2, step=0)  # default warm-up: 3 of 8
    assert torch.allclose(out.loss, F.cross_entropy(model(x), y))
    out = ak.compute(model, Batch(x, y, torch.arange(30)), epoch=3, step=0)
    assert "threshold" in out.metrics


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name, params, flag", [
    ("coteaching", {"forget_rate": 1.0}, "forget_rate"),
    ("coteaching", {"forget_rate": -0.1}, "forget_rate"),
    ("coteaching", {"num_gradual": 0}, "num_gradual"),
    ("coteaching+", {"forget_rate": 1.5}, "forget_rate"),
    ("coteaching+", {"init_epochs": -1}, "init_epochs"),
    ("coteaching+", {"fallback_steps": -1}, "fallback_steps"),
    ("elr", {"beta": 1.0}, "beta"),
    ("elr", {"beta": -0.1}, "beta"),
    ("elr", {"lam": -1.0}, "lam"),
    ("adaptive-k", {"beta1": 1.0}, "beta1"),
    ("adaptive-k", {"eps": 0.0}, "eps"),
    ("adaptive-k", {"warmup_epochs": -2}, "warmup_epochs"),
    ("dividemix", {"p_threshold": 1.0}, "p_threshold"),
    ("dividemix", {"temperature": 0.0}, "temperature"),
    ("dividemix", {"alpha": -1.0}, "alpha"),
    ("dividemix", {"lambda_u": -1.0}, "lambda_u"),
    ("dividemix", {"num_augmentations": 0}, "num_augmentations"),
    ("dividemix", {"rampup_epochs": 0}, "rampup_epochs"),
    ("dividemix", {"shift_fraction": 0.5}, "shift_fraction"),
    ("elr", {"lam": "big"}, "lam"),
])
def test_bad_parameters_are_one_line_errors(name, params, flag):
    with pytest.raises(RobustlabError) as info:
        build_objective(name, **params)
    message = str(info.value)
    assert f"'{flag}'" in message and "\n" not in message


@pytest.mark.parametrize("name", ["adaptive-k", "dividemix"])
def test_warmup_not_shorter_than_the_run_is_refused(name):
    with pytest.raises(InvalidParameterError, match="'warmup_epochs'.*\\[0, 2\\]"):
        Trainer(_model(), build_objective(name, warmup_epochs=3), TrainConfig(epochs=3)).fit(_data())


def test_elr_target_update_renormalises_the_clamped_prediction():
    data = Dataset(torch.zeros(1, 2), torch.tensor([0]), class_names=("a", "b", "c"))
    model = torch.nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([50.0, 0.0, 0.0]))  # softmax ~ (1, 0, 0), clamped to (1 - 1e-4, 1e-4, 1e-4)
    elr = ELR(beta=0.0)
    elr.setup(model=model, train=data, config=TrainConfig(epochs=1), device=CPU, generator=torch.Generator())
    elr.compute(model, Batch(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([0])), epoch=0, step=0)
    clamped = torch.tensor([1 - 1e-4, 1e-4, 1e-4])
    assert torch.allclose(elr.targets[0], clamped / clamped.sum(), atol=1e-7)
    assert float(elr.targets[0].sum()) == pytest.approx(1.0, abs=1e-6)


def test_coteaching_plus_fallback_trains_on_the_whole_batch_when_the_networks_agree():
    data = _data(30)
    model = _model()
    ctp = CoTeachingPlus(fallback_steps=10)
    ctp.setup(model=model, train=data, config=TrainConfig(epochs=1), device=CPU, generator=torch.Generator().manual_seed(0))
    ctp.peer.load_state_dict(model.state_dict())  # identical networks: no disagreement
    x, y = data.tensors()
    batch = Batch(x, y, torch.arange(30))
    out = ctp.compute(model, batch, epoch=0, step=9)
    assert torch.allclose(out.loss, 2 * F.cross_entropy(model(x), y))
    assert ctp.compute(model, batch, epoch=0, step=10).loss.item() == 0.0
