"""Certified training objectives 'ibp' and 'crown-ibp': schedules (known answers), the loss against
the public bounds, a tiny IBP-trained model verifies where a CE-trained one does not, one-line
errors, determinism and exact resume, history metrics, the verified-accuracy validation hook."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.certified import bounds, margin_spec, verified_accuracy
from robustlab.certified.training import (  # importing registers "ibp" and "crown-ibp"
    CROWNIBPTraining,
    IBPTraining,
    eps_schedule,
    robust_cross_entropy,
    verified_accuracy_metric,
)
from robustlab.data import Dataset
from robustlab.data.dataset import Batch
from robustlab.errors import RobustlabError
from robustlab.training import (
    OBJECTIVES,
    CrossEntropy,
    TrainConfig,
    Trainer,
    build_objective,
)
from train_testkit import Interrupted, interrupt_at_epoch

CPU = torch.device("cpu")
DIM = 16


def _separable(n: int, seed: int) -> Dataset:
    """Two classes told apart by the first coordinate (0.25 vs 0.75); the other DIM - 1 are noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, DIM, generator=g)
    x[:, 0] = torch.where(y == 1, 0.75, 0.25) + 0.08 * (torch.rand(n, generator=g) - 0.5)
    return Dataset(x, y)


def _mlp(seed: int = 0, *, classes: int = 2, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(DIM, 32)]
    if bn:
        layers.append(nn.BatchNorm1d(32))
    layers += [nn.ReLU(), nn.Linear(32, classes)]
    return nn.Sequential(*layers)


def _setup(objective, model: nn.Module, data: Dataset, *, epochs: int = 4, batch_size: int = 16) -> None:
    objective.setup(model=model, train=data, config=TrainConfig(epochs=epochs, batch_size=batch_size),
                    device=CPU, generator=torch.Generator().manual_seed(0))


def _batch(data: Dataset, n: int = 16) -> Batch:
    return next(iter(data.batches(n)))


def _tensors(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _batch(data, len(data))
    return batch.inputs, batch.labels


# ---------------------------------------------------------------------------------- registry
def test_objectives_are_registered_and_built_by_name():
    assert OBJECTIVES.get("ibp") is IBPTraining
    assert OBJECTIVES.get("crown-ibp") is CROWNIBPTraining
    obj = build_objective("crown-ibp", eps=0.1, warmup_epochs=2)
    assert isinstance(obj, CROWNIBPTraining) and obj.warmup_epochs == 2 and obj.kappa_end == 0.0
    assert build_objective("ibp", eps=0.1).kappa_start == 1.0 and build_objective("ibp", eps=0.1).kappa_end == 0.5


# ---------------------------------------------------------------------------------- schedules
def test_linear_schedule_known_values():
    values = [eps_schedule(t, eps=0.4, warmup_steps=10, ramp_steps=10) for t in range(25)]
    assert values[:10] == [0.0] * 10  # warm-up
    assert values[10] == pytest.approx(0.04)  # the ramp's first step: one tenth of the way
    assert values[14] == pytest.approx(0.2)
    assert values[18] == pytest.approx(0.36)
    assert values[19:] == [0.4] * 6  # the ramp's last step is at eps
    assert eps_schedule(3, eps=0.4, warmup_steps=3, ramp_steps=0) == 0.4  # no ramp: jump after warm-up
    assert eps_schedule(2, eps=0.4, warmup_steps=3, ramp_steps=0) == 0.0


def test_smoothed_schedule_known_values_and_continuity():
    # t0 = 0, t1 = 100, mid 0.25 -> tm = 25; alpha = 1 / (75 * 4 * 25**3 + 25**4) = 1 / 5078125;
    # step t is the reference schedule at u = t + 1.
    value = [eps_schedule(t, eps=1.0, warmup_steps=0, ramp_steps=100, kind="smoothed") for t in range(100)]
    assert value[0] == pytest.approx(1 / 5078125)
    assert value[9] == pytest.approx(10**4 / 5078125)
    assert value[24] == pytest.approx(1 / 13)  # the polynomial's end, where the line starts
    assert value[49] == pytest.approx(5 / 13)  # a third of the way along the line to 1
    assert value[99] == 1.0
    diffs = [b - a for a, b in itertools.pairwise(value)]
    assert all(d > 0 for d in diffs)  # increasing
    assert diffs[22] < diffs[24] and diffs[22] == pytest.approx(diffs[24], rel=0.2)  # slope continuous at tm
    assert diffs[24] == pytest.approx(diffs[60])  # linear after tm
    # mid = 0: no polynomial part, the linear schedule.
    assert eps_schedule(39, eps=1.0, warmup_steps=0, ramp_steps=100, kind="smoothed", mid=0.0) == pytest.approx(0.4)


def test_objective_schedules_per_step():
    data = _separable(10, 0)  # batch 5 -> 2 steps per epoch; warm-up steps 0-3, ramp steps 4-11
    obj = CROWNIBPTraining(eps=0.3, warmup_epochs=2, ramp_epochs=4, kappa_start=1.0, kappa_end=0.5)
    _setup(obj, _mlp(), data, epochs=8, batch_size=5)
    assert obj.current_eps(3) == 0.0 and obj.current_eps(4) == pytest.approx(0.3 / 8)
    assert obj.current_eps(7) == pytest.approx(0.15)
    assert obj.current_kappa(7) == pytest.approx(0.75)
    assert obj.current_beta(7) == pytest.approx(0.5)
    assert obj.current_eps(11) == pytest.approx(0.3) and obj.current_eps(15) == pytest.approx(0.3)
    assert obj.current_kappa(11) == pytest.approx(0.5) and obj.current_beta(11) == 0.0
    assert obj.current_kappa(0) == 1.0 and obj.current_beta(0) == 1.0


def test_eps_train_sets_the_ramp_target_and_default_ramp_length():
    data = _separable(10, 0)
    obj = IBPTraining(eps=0.1, eps_train=0.2, warmup_epochs=1)
    _setup(obj, _mlp(), data, epochs=11, batch_size=10)
    assert obj.resolved_ramp_epochs(11) == 6  # 60% of the 10 epochs after warm-up
    assert obj.current_eps(6) == pytest.approx(0.2) and obj.current_eps(3) == pytest.approx(0.1)
    assert obj.current_kappa(6) == pytest.approx(0.5) and obj.current_kappa(3) == pytest.approx(0.75)


# ---------------------------------------------------------------------------------- loss
def test_robust_cross_entropy_of_exact_margins_is_the_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (8,), generator=g)
    margins = (margin_spec(y, 5).to(logits.dtype) @ logits[:, :, None]).squeeze(2)
    assert torch.allclose(robust_cross_entropy(margins), F.cross_entropy(logits, y))
    assert torch.allclose(robust_cross_entropy(margins, reduction="none"), F.cross_entropy(logits, y, reduction="none"))
    assert robust_cross_entropy(margins - 1).item() > robust_cross_entropy(margins).item()  # looser bound, larger loss


@pytest.mark.parametrize("cls", [IBPTraining, CROWNIBPTraining])
def test_loss_is_cross_entropy_during_warmup_and_with_kappa_one(cls):
    data = _separable(32, 0)
    model = _mlp()
    batch = _batch(data)
    warm = cls(eps=0.2, warmup_epochs=1, ramp_epochs=1, kappa_start=0.0, kappa_end=0.0)
    _setup(warm, model, data, epochs=3)
    out = warm.compute(model, batch, epoch=0, step=0)  # eps_t = 0
    assert torch.equal(out.loss, F.cross_entropy(model(batch.inputs), batch.labels))
    clean = cls(eps=0.2, warmup_epochs=0, ramp_epochs=0, kappa_start=1.0, kappa_end=1.0)
    _setup(clean, model, data, epochs=3)
    out = clean.compute(model, batch, epoch=0, step=0)  # eps_t = 0.2, kappa 1
    assert clean.current_eps(0) == 0.2
    assert torch.allclose(out.loss, F.cross_entropy(model(batch.inputs), batch.labels))
    assert out.metrics["robust_ce"] > out.loss  # the bound's CE at eps > 0 is above the clean CE


def test_ibp_loss_matches_the_public_bounds():
    data = _separable(32, 0)
    model, batch = _mlp(), _batch(data)
    obj = IBPTraining(eps=0.2, warmup_epochs=0, ramp_epochs=2, kappa_start=1.0, kappa_end=0.5)
    _setup(obj, model, data, epochs=3)  # 2 steps per epoch: step 1 is halfway, eps 0.1, kappa 0.75
    out = obj.compute(model, batch, epoch=0, step=1)
    C = margin_spec(batch.labels, 2)
    lower, _ = bounds(model, batch.inputs, eps=0.1, method="ibp", C=C)
    expected = 0.75 * F.cross_entropy(model(batch.inputs), batch.labels) + 0.25 * robust_cross_entropy(lower)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_crown_ibp_loss_mixes_the_two_bounds_by_beta():
    data = _separable(32, 0)
    model, batch = _mlp(classes=3), _batch(data)  # 3 outputs: 2 margins per example
    obj = CROWNIBPTraining(eps=0.2, warmup_epochs=0, ramp_epochs=2, beta_start=1.0, beta_end=0.0)
    _setup(obj, model, data, epochs=3)
    out = obj.compute(model, batch, epoch=0, step=1)  # eps 0.1, beta 0.5, kappa 0
    C = margin_spec(batch.labels, 3)
    ibp, _ = bounds(model, batch.inputs, eps=0.1, method="ibp", C=C)
    crown_ibp, _ = bounds(model, batch.inputs, eps=0.1, method="crown-ibp", C=C)
    assert torch.allclose(out.loss, robust_cross_entropy(0.5 * ibp + 0.5 * crown_ibp), atol=1e-6)
    end = obj.compute(model, batch, epoch=1, step=3)  # beta 0: pure IBP
    ibp_full, _ = bounds(model, batch.inputs, eps=0.2, method="ibp", C=C)
    assert torch.allclose(end.loss, robust_cross_entropy(ibp_full), atol=1e-6)


# ---------------------------------------------------------------------------------- training works
def test_ibp_training_verifies_where_cross_entropy_does_not():
    train, test = _separable(256, 0), _separable(256, 1)
    config = TrainConfig(epochs=8, batch_size=32, optimizer="adamw", lr=2e-2, weight_decay=0.0, seed=0)
    x, y = _tensors(test)
    accs = {}
    for name, obj in [("ce", CrossEntropy()), ("ibp", IBPTraining(eps=0.1, warmup_epochs=1, ramp_epochs=3)),
                      ("crown-ibp", CROWNIBPTraining(eps=0.1, warmup_epochs=1, ramp_epochs=3))]:
        model = _mlp()
        Trainer(model, obj, config).fit(train)
        assert (model(x).argmax(1) == y).float().mean() > 0.95  # all three learn the clean task
        accs[name] = verified_accuracy(model, x, y, eps=0.1, method="ibp")
    assert accs["ce"] < 0.2
    assert accs["ibp"] > accs["ce"] + 0.4
    assert accs["crown-ibp"] > accs["ce"] + 0.4


def test_history_holds_schedule_values_and_verified_error_estimates():
    data = _separable(64, 0)
    obj = CROWNIBPTraining(eps=0.1, eps_train=0.2, warmup_epochs=1, ramp_epochs=2, kappa_start=1.0,
                           kappa_end=0.5, verify_examples=32)
    result = Trainer(_mlp(bn=True), obj, TrainConfig(epochs=4, batch_size=32, seed=0)).fit(
        data, val=data, val_metrics=verified_accuracy_metric(eps=0.1, methods=("ibp", "crown-ibp")))
    metrics = [row["metrics"] for row in result.history]
    # 2 steps per epoch; the values are those of each epoch's last step (1, 3, 5, 7).
    assert [m["eps"] for m in metrics] == pytest.approx([0.0, 0.1, 0.2, 0.2])
    assert [m["kappa"] for m in metrics] == pytest.approx([1.0, 0.75, 0.5, 0.5])
    assert [m["beta"] for m in metrics] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    for m, row in zip(metrics, result.history):
        assert 0 <= m["crown_ibp_verified_err"] <= 1 and 0 <= m["ibp_verified_err"] <= 1
        assert 0 <= m["train_verified_err"] <= 1 and m["robust_ce"] > 0
        assert 0 <= row["val_ibp_verified_acc"] <= row["val_acc"] and 0 <= row["val_crown_ibp_verified_acc"] <= row["val_acc"]
    assert json.dumps(result.history)  # plain numbers only


def test_verified_accuracy_metric_equals_verified_accuracy():
    data = _separable(40, 3)
    model = _mlp()
    metric = verified_accuracy_metric(eps=0.05, methods="crown", max_examples=30, batch_size=7)
    x, y = _tensors(data)
    expected = verified_accuracy(model, x[:30], y[:30], eps=0.05, method="crown")
    assert metric(model, data) == {"crown_verified_acc": pytest.approx(expected)}


# ---------------------------------------------------------------------------------- state, determinism
def _params(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def test_same_seed_same_weights_and_setup_leaves_the_model_alone():
    data = _separable(64, 0)
    config = TrainConfig(epochs=3, batch_size=16, seed=3)
    runs = []
    for _ in range(2):
        model = _mlp(bn=True)
        Trainer(model, CROWNIBPTraining(eps=0.1, warmup_epochs=1, ramp_epochs=1), config).fit(data)
        runs.append(_params(model))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    model = _mlp(bn=True).eval()
    model[0].weight.requires_grad_(False)
    before = _params(model)
    _setup(IBPTraining(eps=0.1), model, data)
    assert not model.training and not model[0].weight.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model)))  # running stats untouched


@pytest.mark.parametrize("name", ["ibp", "crown-ibp"])
def test_resume_is_exact(name, tmp_path):
    data = _separable(48, 0)
    config = TrainConfig(epochs=3, batch_size=16, seed=1)
    params = {"eps": 0.1, "warmup_epochs": 1, "ramp_epochs": 1, "schedule": "smoothed"}
    straight = _mlp(bn=True)
    straight_result = Trainer(straight, build_objective(name, **params), config).fit(data)
    interrupted = interrupt_at_epoch(build_objective(name, **params), 2)
    with pytest.raises(Interrupted):
        Trainer(_mlp(bn=True), interrupted, config).fit(data, run_dir=tmp_path)
    resumed = _mlp(seed=5, bn=True)
    resumed_result = Trainer(resumed, build_objective(name, **params), config).fit(data, run_dir=tmp_path,
                                                                                  resume=True)
    assert all(torch.equal(a, b) for a, b in zip(_params(straight), _params(resumed)))
    assert resumed_result.history[-1]["metrics"] == straight_result.history[-1]["metrics"]


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("kwargs", "name"), [
    ({"eps": -0.1}, "eps"),
    ({}, "eps"),
    ({"eps": 1.5}, "eps"),
    ({"eps": 0.1, "eps_train": -1.0}, "eps_train"),
    ({"eps": 0.1, "norm": "l1"}, "norm"),
    ({"eps": 0.1, "kappa_start": 1.5}, "kappa_start"),
    ({"eps": 0.1, "kappa_end": -0.5}, "kappa_end"),
    ({"eps": 0.1, "warmup_epochs": -1}, "warmup_epochs"),
    ({"eps": 0.1, "ramp_epochs": -2}, "ramp_epochs"),
    ({"eps": 0.1, "ramp_epochs": 1.5}, "ramp_epochs"),
    ({"eps": 0.1, "schedule": "cosine"}, "schedule"),
    ({"eps": 0.1, "ramp_mid": 2.0}, "ramp_mid"),
    ({"eps": 0.1, "ramp_exponent": 1.0}, "ramp_exponent"),
    ({"eps": 0.1, "verify_examples": -1}, "verify_examples"),
])
def test_bad_parameters_give_one_line_errors(kwargs, name):
    for cls in (IBPTraining, CROWNIBPTraining):
        with pytest.raises(RobustlabError) as info:
            cls(**kwargs)
        message = str(info.value)
        assert f"'{name}'" in message and "\n" not in message


@pytest.mark.parametrize(("kwargs", "name"), [({"beta_start": 2.0}, "beta_start"), ({"beta_end": -0.1}, "beta_end")])
def test_bad_beta_gives_one_line_errors(kwargs, name):
    with pytest.raises(RobustlabError, match=f"'{name}'"):
        CROWNIBPTraining(eps=0.1, **kwargs)


def test_ramp_that_does_not_fit_the_run_is_refused_at_setup():
    data = _separable(16, 0)
    with pytest.raises(RobustlabError, match="'ramp_epochs'.*at most epochs - warmup_epochs = 2"):
        _setup(IBPTraining(eps=0.1, warmup_epochs=2, ramp_epochs=3), _mlp(), data, epochs=4)
    with pytest.raises(RobustlabError, match="'warmup_epochs'.*less than the run's 4 epochs"):
        _setup(IBPTraining(eps=0.1, warmup_epochs=4), _mlp(), data, epochs=4)
    with pytest.raises(RobustlabError, match="'train'.*inputs in \\[0, 1\\]"):
        _setup(IBPTraining(eps=0.1), _mlp(), Dataset(torch.full((4, DIM), 2.0), torch.tensor([0, 1, 0, 1])))


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Linear(DIM, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2)),  # random in training mode
    nn.Sequential(nn.Linear(DIM, 8), nn.Tanh(), nn.Linear(8, 2)),  # no relaxation for tanh
], ids=["dropout", "tanh"])
def test_untraceable_model_is_refused_at_setup_in_one_line(model):
    model.eval()
    with pytest.raises(RobustlabError) as info:
        _setup(IBPTraining(eps=0.1), model, _separable(8, 0))
    message = str(info.value)
    assert "'ibp' method needs a model that bound propagation can handle" in message and "\n" not in message
    assert not model.training  # mode restored


def test_cli_trains_ibp_with_method_params(tmp_path, capsys):
    from robustlab.cli import main

    out_dir = tmp_path / "ibp"
    code = main(["train", "--data", "digits", "--model", "mlp", "--method", "ibp", "--eps", "0.05",
                 "--method-param", "warmup_epochs=1", "--method-param", "verify_examples=64",
                 "--epochs", "2", "--out", str(out_dir)])
    _, err = capsys.readouterr()
    assert code == 0, err
    history = json.loads((out_dir / "history.json").read_text())
    assert [row["metrics"]["eps"] for row in history] == pytest.approx([0.0, 0.05])
    assert [row["metrics"]["kappa"] for row in history] == pytest.approx([1.0, 0.5])
    assert all(0 <= row["metrics"]["ibp_verified_err"] <= 1 for row in history)
    code = main(["train", "--data", "digits", "--model", "mlp", "--method", "ibp", "--eps", "-1",
                 "--epochs", "2", "--out", str(tmp_path / "bad")])
    _, err = capsys.readouterr()
    assert code == 2 and "'--eps'" in err and "Traceback" not in err and err.count("\n") == 1
