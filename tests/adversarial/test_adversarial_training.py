"""Adversarial-training objectives: pgd-at, trades, mart, fast-at, vat (+ AWP, GAIRAT, eps ramp),
the catastrophic-overfitting watchdog and the Trainer hooks they use."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.adversarial.training import (
    MART,
    TRADES,
    FastAdversarialTraining,
    PGDAdversarialTraining,
    VirtualAdversarialTraining,
    detect_catastrophic_overfitting,
    gair_weights,
    robust_accuracy_metric,
)
from robustlab.adversarial.training_core import (
    awp_perturbation,
    eps_at,
    perturbed_model,
)
from robustlab.data import Dataset
from robustlab.data.dataset import Batch
from robustlab.errors import RobustlabError
from robustlab.training import TrainConfig, Trainer, build_objective
from robustlab.training.optim import lr_factor

EPS = 0.1
TOL = 1e-6


def _mlp(seed: int = 0, *, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, 32)]
    if bn:
        layers.append(nn.BatchNorm1d(32))
    layers += [nn.ReLU(), nn.Linear(32, 10)]
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def digits_small(digits_split) -> tuple[Dataset, Dataset]:
    xtr, ytr, xte, yte = digits_split
    return Dataset(xtr[:512], ytr[:512], name="digits-512"), Dataset(xte[:200], yte[:200], name="digits-test")


@pytest.fixture
def batch(digits_split) -> Batch:
    xtr, ytr, _, _ = digits_split
    return Batch(xtr[:64].clone(), ytr[:64].clone(), torch.arange(64))


OBJECTIVE_CASES = {
    "pgd-at": lambda: PGDAdversarialTraining(eps=EPS, num_steps=3),
    "pgd-at-l2": lambda: PGDAdversarialTraining(eps=0.5, norm="l2", num_steps=3),
    "pgd-at-awp-gair": lambda: PGDAdversarialTraining(eps=EPS, num_steps=3, awp_gamma=5e-3, reweight="gair",
                                                      reweight_start_epoch=0),
    "trades": lambda: TRADES(eps=EPS, num_steps=3),
    "trades-awp": lambda: TRADES(eps=EPS, num_steps=3, awp_gamma=5e-3),
    "mart": lambda: MART(eps=EPS, num_steps=3),
    "fast-at": lambda: FastAdversarialTraining(eps=EPS),
    "fast-at-gradalign": lambda: FastAdversarialTraining(eps=EPS, grad_align_lambda=0.5),
    "vat": lambda: VirtualAdversarialTraining(eps=0.5),
}


def _setup(objective, model: nn.Module, batch: Batch, seed: int = 0) -> torch.Generator:
    g = torch.Generator().manual_seed(seed)
    data = Dataset(batch.inputs, batch.labels)
    objective.setup(model=model, train=data, config=TrainConfig(epochs=4, batch_size=64), device=torch.device("cpu"),
                    generator=g)
    return g


@pytest.mark.parametrize("bn", [False, True], ids=["mlp", "mlp-bn"])
@pytest.mark.parametrize("case", sorted(OBJECTIVE_CASES))
def test_one_step_reduces_the_objectives_own_loss(case, bn, batch):
    model, objective = _mlp(bn=bn), OBJECTIVE_CASES[case]()
    g = _setup(objective, model, batch)
    state = g.get_state()
    model.train()
    out = objective.compute(model, batch, epoch=3, step=100)
    out.loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.05 * p.grad
    g.set_state(state)
    after = objective.compute(model, batch, epoch=3, step=100).loss
    assert float(after.detach()) < float(out.loss.detach())


@pytest.mark.parametrize("case", sorted(OBJECTIVE_CASES))
def test_inputs_seen_during_training_respect_the_threat_model(case, batch):
    model, objective = _mlp(), OBJECTIVE_CASES[case]()
    _setup(objective, model, batch)
    norm, eps = ("l2", 0.5) if case in ("pgd-at-l2", "vat") else ("linf", EPS)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    model.train()
    objective.compute(model, batch, epoch=3, step=100)
    assert seen
    x = batch.inputs
    for z in seen:
        assert z.shape == x.shape
        d = (z - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= eps + 1e-5
        if case != "vat":  # VAT's power-iteration probe x + xi*d (xi = 1e-6) is not an adversarial input
            assert float(z.min()) >= 0 and float(z.max()) <= 1
    if case == "vat":
        assert float(seen[-1].min()) >= 0 and float(seen[-1].max()) <= 1


def test_trades_with_beta_zero_is_cross_entropy(batch, digits_small):
    model = _mlp()
    objective = TRADES(eps=EPS, beta=0.0)
    _setup(objective, model, batch)
    out = objective.compute(model, batch, epoch=0, step=0)
    assert torch.equal(out.loss, F.cross_entropy(model(batch.inputs), batch.labels))
    train, _ = digits_small
    config = TrainConfig(epochs=1, batch_size=128, seed=3)
    a = Trainer(_mlp(), TRADES(eps=EPS, beta=0.0), config).fit(train).model
    b = Trainer(_mlp(), "ce", config).fit(train).model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("method", ["pgd-at", "trades", "fast-at"])
def test_same_seed_same_weights_other_seed_other_weights(method, digits_small):
    train, _ = digits_small
    train = train.subset(torch.arange(192))

    def run(seed: int) -> list[torch.Tensor]:
        config = TrainConfig(epochs=1, batch_size=64, seed=seed)
        objective = build_objective(method, eps=EPS, **({} if method == "fast-at" else {"num_steps": 2}))
        return list(Trainer(_mlp(), objective, config).fit(train).model.parameters())

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


# --------------------------------------------------------------------------- AWP
def test_awp_never_moves_the_weights_and_uses_the_gradient_at_the_perturbed_point(batch):
    model = _mlp(bn=True)
    model.train()
    x, y = batch.inputs, batch.labels
    before = copy.deepcopy(model.state_dict())
    v = awp_perturbation(model, lambda f: F.cross_entropy(f(x), y), 5e-3)
    assert set(v) == {"1.weight", "4.weight"}  # weight matrices only; biases and BN untouched
    for name, p in model.named_parameters():
        if name in v:
            assert float(v[name].norm()) == pytest.approx(5e-3 * float(p.detach().norm()), rel=1e-4)
    assert all(torch.equal(before[k], t) for k, t in model.state_dict().items())  # BN stats too
    loss = F.cross_entropy(perturbed_model(model, v)(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert all(torch.equal(before[k], p) for k, p in model.named_parameters())
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            if name in v:
                p += v[name]
    expected = torch.autograd.grad(F.cross_entropy(moved(x), y), list(moved.parameters()))
    for g1, g2 in zip(grads, expected):
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-7)


def test_awp_leaves_weights_unperturbed_after_a_step_and_after_an_exception(batch):
    model = _mlp()
    objective = PGDAdversarialTraining(eps=EPS, num_steps=2, awp_gamma=5e-3)
    _setup(objective, model, batch)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    out = objective.compute(model, batch, epoch=0, step=0)
    out.loss.backward()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    with_awp = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    plain = PGDAdversarialTraining(eps=EPS, num_steps=2)
    _setup(plain, model, batch)
    plain.compute(model, batch, epoch=0, step=0).loss.backward()
    assert not all(torch.allclose(a, p.grad) for a, p in zip(with_awp, model.parameters()))

    calls = {"n": 0}

    def explode(module, args):
        calls["n"] += 1
        if calls["n"] == 4:  # inside the AWP pass
            raise RuntimeError("boom")

    handle = model.register_forward_pre_hook(explode)
    with pytest.raises(RuntimeError, match="boom"):
        objective.compute(model, batch, epoch=0, step=0)
    handle.remove()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


# --------------------------------------------------------------------------- catastrophic overfitting
def test_catastrophic_overfitting_detection_on_crafted_histories():
    assert detect_catastrophic_overfitting([0.30, 0.38, 0.41, 0.02, 0.00]) == 3
    assert detect_catastrophic_overfitting([0.30, 0.38, 0.41, 0.35, 0.36]) is None
    assert detect_catastrophic_overfitting([0.5, 0.25], drop=0.2) == 1
    rows = [{"epoch": 0, "metrics": {"co_check_pgd_acc": 0.4}}, {"epoch": 1, "metrics": {}},
            {"epoch": 2, "metrics": {"co_check_pgd_acc": 0.1}}]
    assert detect_catastrophic_overfitting(rows) == 2
    assert detect_catastrophic_overfitting([{"val_robust_acc": 0.6}, {"val_robust_acc": 0.3}],
                                           key="val_robust_acc") == 1
    with pytest.raises(RobustlabError):
        detect_catastrophic_overfitting([0.1, "x"])


@pytest.mark.parametrize("action", ["warn", "stop", "rollback"])
def test_fast_at_watchdog_warns_records_and_stops_or_rolls_back(action, digits_small, monkeypatch):
    train, _ = digits_small
    train = train.subset(torch.arange(128))
    accuracies = iter([0.40, 0.55, 0.05, 0.05, 0.05])
    monkeypatch.setattr(FastAdversarialTraining, "_check_accuracy", lambda self, m, x, y: next(accuracies))
    snapshots: list[list[torch.Tensor]] = []
    objective = FastAdversarialTraining(eps=EPS, on_overfitting=action)
    original_end = FastAdversarialTraining.on_epoch_end

    def end(self, epoch):
        snapshots.append([p.detach().clone() for p in self._model.parameters()])
        original_end(self, epoch)

    monkeypatch.setattr(FastAdversarialTraining, "on_epoch_end", end)
    model = _mlp()
    with pytest.warns(UserWarning, match="Catastrophic overfitting in epoch 3"):
        result = Trainer(model, objective, TrainConfig(epochs=5, batch_size=64)).fit(train)
    flags = [row["metrics"]["catastrophic_overfitting"] for row in result.history]
    assert flags[:3] == [0.0, 0.0, 1.0]
    assert [row["metrics"]["co_check_pgd_acc"] for row in result.history][:3] == [0.40, 0.55, 0.05]
    assert detect_catastrophic_overfitting(result.history) == 2
    if action == "warn":
        assert len(result.history) == 5
    else:
        assert len(result.history) == 3
    if action == "rollback":
        assert result.history[2]["metrics"]["rolled_back_to"] == 1.0
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), snapshots[1]))


# --------------------------------------------------------------------------- pieces
def test_eps_ramp_and_gair_weights():
    assert eps_at(0.3, warmup_epochs=0, step=0, steps_per_epoch=10) == 0.3
    assert eps_at(0.3, warmup_epochs=2, step=9, steps_per_epoch=10) == pytest.approx(0.15)
    assert eps_at(0.3, warmup_epochs=2, step=50, steps_per_epoch=10) == 0.3
    kappa = torch.tensor([0.0, 5.0, 10.0, 10.0])
    w = gair_weights(kappa, 10, -1.0)
    assert float(w.sum()) == pytest.approx(4.0)
    assert bool((w[:-1] >= w[1:]).all()) and float(w[0]) > float(w[-1])
    expected = (torch.tanh(-1.0 + (5 - kappa) * 5 / 5) + 1) / 2
    torch.testing.assert_close(w, expected * 4 / expected.sum())


def test_eps_warmup_shrinks_the_perturbation(batch):
    model = _mlp()
    objective = PGDAdversarialTraining(eps=EPS, num_steps=3, eps_warmup_epochs=4)
    _setup(objective, model, batch)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    out = objective.compute(model, batch, epoch=0, step=0)  # eps = 0.1 * 1 / (4 * 1 step per epoch)
    assert out.metrics["eps"] == pytest.approx(EPS / 4)
    assert float((seen[-1] - batch.inputs).abs().max()) <= EPS / 4 + TOL


def test_linear_schedule_for_adversarial_fine_tuning():
    config = TrainConfig(epochs=10, schedule="linear-decay", warmup_epochs=7)
    factors = [lr_factor(config, t, steps_per_epoch=1) for t in range(10)]
    assert factors[:7] == pytest.approx([(t + 1) / 7 for t in range(7)])
    assert factors[7:] == pytest.approx([1.0, 2 / 3, 1 / 3])


def test_vat_unlabeled_examples_contribute_only_the_lds_term(batch):
    objective = VirtualAdversarialTraining(eps=0.5, unlabeled=list(range(64)))
    model = _mlp()
    g = _setup(objective, model, batch)
    state = g.get_state()
    out = objective.compute(model, batch, epoch=0, step=0)
    g.set_state(state)
    other = Batch(batch.inputs, (batch.labels + 3) % 10, batch.indices)
    assert torch.equal(objective.compute(model, other, epoch=0, step=0).loss, out.loss)
    assert float(out.metrics["ce"]) == 0.0 and float(out.loss.detach()) == pytest.approx(float(out.metrics["lds"]))
    half = VirtualAdversarialTraining(eps=0.5, unlabeled=torch.arange(64) >= 32)
    g = _setup(half, model, batch)
    out = half.compute(model, batch, epoch=0, step=0)
    expected_ce = F.cross_entropy(model(batch.inputs[:32]), batch.labels[:32]).detach()
    assert float(out.metrics["ce"]) == pytest.approx(float(expected_ce), rel=1e-5)


def test_pgd_at_beats_ce_on_robust_accuracy_and_records_the_curve(digits_small):
    train, test = digits_small
    config = TrainConfig(epochs=8, batch_size=64, optimizer="adamw", lr=3e-2, weight_decay=0.0)
    metric = robust_accuracy_metric(eps=EPS, num_steps=10, max_examples=200)
    ce = Trainer(_mlp(), "ce", config).fit(train, val=test, val_metrics=metric)
    at = Trainer(_mlp(), PGDAdversarialTraining(eps=EPS, num_steps=3), config).fit(train, val=test,
                                                                                  val_metrics=metric)
    assert {"val_acc", "val_robust_acc"} <= set(at.history[-1])
    assert all(0 <= row["val_robust_acc"] <= row["val_acc"] for row in at.history)
    assert at.history[-1]["val_robust_acc"] > ce.history[-1]["val_robust_acc"] + 0.1


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("method, params, argument", [
    ("pgd-at", {"eps": -0.1}, "eps"),
    ("pgd-at", {"eps": 1.5}, "eps"),
    ("pgd-at", {"eps": 0.1, "step_size": 0.0}, "step_size"),
    ("pgd-at", {"eps": 0.1, "norm": "l3"}, "norm"),
    ("pgd-at", {"eps": 0.1, "reweight": "kl-dro"}, "reweight"),
    ("trades", {"eps": 0.1, "beta": -1.0}, "beta"),
    ("mart", {"eps": 0.1, "lam": -1.0}, "lam"),
    ("fast-at", {"eps": 0.1, "norm": "l1"}, "norm"),
    ("fast-at", {"eps": 0.1, "on_overfitting": "explode"}, "on_overfitting"),
    ("vat", {"eps": 0.0}, "eps"),
    ("pgd-at", {"eps": 0.1, "gamma": 1.0}, "params"),
])
def test_bad_settings_give_one_line_errors(method, params, argument):
    with pytest.raises(RobustlabError) as info:
        build_objective(method, **params)
    message = str(info.value)
    assert "\n" not in message and f"'{argument}'" in message


def test_models_the_method_cannot_train_give_one_line_errors(batch):
    class NoParams(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10]

    data = Dataset(batch.inputs, batch.labels)
    with pytest.raises(RobustlabError, match="trainable parameters"):
        Trainer(NoParams(), PGDAdversarialTraining(eps=EPS), TrainConfig(epochs=1)).fit(data)

    class OnlyBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(10))

        def forward(self, x):
            return x.flatten(1)[:, :10] + self.bias

    with pytest.raises(RobustlabError, match="awp_gamma"):
        Trainer(OnlyBias(), PGDAdversarialTraining(eps=EPS, awp_gamma=5e-3), TrainConfig(epochs=1)).fit(data)
    outside = Dataset(batch.inputs.flatten(1) * 3, batch.labels)  # tabular, not scaled to [0, 1]
    with pytest.raises(RobustlabError, match=r"\[0, 1\]"):
        Trainer(_mlp(), TRADES(eps=EPS), TrainConfig(epochs=1)).fit(outside)


# --------------------------------------------------------------------------- Trainer hooks
def test_a_stopped_run_stays_stopped_on_resume(digits_small, monkeypatch, tmp_path):
    train, _ = digits_small
    train = train.subset(torch.arange(128))
    accuracies = iter([0.50, 0.10])
    monkeypatch.setattr(FastAdversarialTraining, "_check_accuracy", lambda self, m, x, y: next(accuracies))
    config = TrainConfig(epochs=4, batch_size=64)
    with pytest.warns(UserWarning, match="Catastrophic"):
        first = Trainer(_mlp(), FastAdversarialTraining(eps=EPS, on_overfitting="stop"), config).fit(
            train, run_dir=tmp_path)
    assert len(first.history) == 2
    resumed = Trainer(_mlp(), FastAdversarialTraining(eps=EPS, on_overfitting="stop"), config).fit(
        train, run_dir=tmp_path, resume=True)
    assert len(resumed.history) == 2


def test_val_metrics_must_be_callable(digits_small):
    train, test = digits_small
    with pytest.raises(RobustlabError, match="'val_metrics'"):
        Trainer(_mlp(), "ce", TrainConfig(epochs=1)).fit(train, val=test, val_metrics="robust")


def test_vat_perturbed_passes_leave_batch_norm_statistics_alone(batch):
    model = _mlp(bn=True)
    reference = copy.deepcopy(model)
    objective = VirtualAdversarialTraining(eps=0.5)
    _setup(objective, model, batch)
    model.train()
    reference.train()
    out = objective.compute(model, batch, epoch=0, step=0)
    out.loss.backward()  # no in-place modification of a tensor saved for backward
    reference(batch.inputs)  # the clean pass alone
    for (name, b), (_, r) in zip(model.named_buffers(), reference.named_buffers()):
        assert torch.equal(b, r), name


def test_gradalign_cosine_stays_finite_for_vanishing_gradients():
    from robustlab.adversarial.training_fast import _cosine

    g = torch.Generator().manual_seed(0)
    a = (torch.randn(4, 30, generator=g) * torch.tensor([1e-20, 1e-3, 1.0, 0.0])[:, None]).requires_grad_(True)
    b = (torch.randn(4, 30, generator=g) * torch.tensor([1e-20, 1e-3, 1.0, 1.0])[:, None]).requires_grad_(True)
    cos = _cosine(a, b)
    cos.backward()
    assert torch.isfinite(cos) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    # rows 0 (norms ~1e-19, subnormal squares) and 3 (zero gradient) are left out
    expected = F.cosine_similarity(a[1:3].detach(), b[1:3].detach(), dim=1).mean()
    torch.testing.assert_close(cos.detach(), expected)
