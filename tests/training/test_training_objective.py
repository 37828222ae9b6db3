"""The Objective protocol, the CE objective and the registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from robustlab.data import Batch
from robustlab.errors import CheckpointError, InvalidParameterError, UnknownNameError
from robustlab.training import (
    OBJECTIVES,
    BaseObjective,
    CrossEntropy,
    Objective,
    ObjectiveOutput,
    TrainConfig,
    Trainer,
    build_objective,
)


def test_one_ce_step_reduces_the_loss_on_a_fixed_batch(toy_data, make_model):
    model = make_model(0)
    x, y = toy_data.tensors()
    with torch.no_grad():
        before = float(F.cross_entropy(model(x), y))
    # One epoch with the whole data in one batch is exactly one optimizer step.
    config = TrainConfig(epochs=1, batch_size=len(toy_data), lr=0.5, momentum=0.0, weight_decay=0.0,
                         schedule="constant")
    result = Trainer(model, CrossEntropy(), config).fit(toy_data)
    with torch.no_grad():
        after = float(F.cross_entropy(model(x), y))
    assert after < before - 1e-3
    assert result.history[0]["train_loss"] == pytest.approx(before, rel=1e-5)


def test_ce_objective_matches_torch_cross_entropy(toy_data, make_model):
    model = make_model(0)
    x, y = toy_data.tensors()
    batch = Batch(x, y, torch.arange(len(y)))
    for smoothing in (0.0, 0.2):
        out = CrossEntropy(label_smoothing=smoothing).compute(model, batch, epoch=0, step=0)
        expected = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        assert torch.allclose(out.loss, expected)
        assert out.logits.shape == (len(y), 3)


def test_label_smoothing_is_validated():
    with pytest.raises(InvalidParameterError, match="'label_smoothing'"):
        CrossEntropy(label_smoothing=1.0)


def test_build_objective_by_name():
    objective = build_objective("ce", label_smoothing=0.1)
    assert isinstance(objective, CrossEntropy) and objective.label_smoothing == 0.1
    assert "ce" in OBJECTIVES.names()


def test_unknown_objective_lists_valid_names():
    with pytest.raises(UnknownNameError, match=r"'method'.*'ce'.*Got 'nope'"):
        build_objective("nope")


def test_unknown_objective_params_are_named():
    with pytest.raises(InvalidParameterError, match=r"'ce' objective.*'label_smoothing'.*Got 'smoothing'"):
        build_objective("ce", smoothing=0.1)


@pytest.mark.parametrize("method", ["pgd-at", "trades", "mart", "fast-at"])
def test_missing_required_objective_param_is_named(method):
    with pytest.raises(InvalidParameterError, match=rf"The 'eps' parameter must be given for the '{method}' objective"):
        build_objective(method)


def test_protocol_and_base_class():
    assert isinstance(CrossEntropy(), Objective)
    assert not isinstance(object(), Objective)
    with pytest.raises(TypeError):
        BaseObjective()  # compute is abstract


class ScaledCE(BaseObjective):
    """Toy stateful objective: CE of logits scaled by a learnable scalar, plus an ELR-like per-example
    buffer of the last loss seen and a count of steps; the scalar is an extra parameter."""

    name = "scaled-ce"

    def setup(self, *, model, train, config, device, generator) -> None:
        self.scale = torch.nn.Parameter(torch.ones((), device=device))
        self.last_loss = torch.zeros(len(train), device=device)
        # Uses the objective generator, so its state must survive resume too.
        self.noise = torch.rand(len(train), generator=generator).to(device)
        self.steps = 0
        self.epochs_started: list[int] = []

    def compute(self, model, batch, *, epoch, step) -> ObjectiveOutput:
        logits = model(batch.inputs)
        losses = F.cross_entropy(logits * self.scale, batch.labels, reduction="none")
        self.last_loss[batch.indices] = losses.detach()
        return ObjectiveOutput(loss=losses.mean(), logits=logits,
                               metrics={"scale": self.scale.detach(), "seen": float(len(losses))})

    def on_epoch_start(self, epoch: int) -> None:
        self.epochs_started.append(epoch)

    def on_step_end(self, *, epoch: int, step: int) -> None:
        self.steps += 1

    def extra_parameters(self) -> Iterable[Any]:
        return [self.scale]

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale.detach().clone(), "last_loss": self.last_loss.clone(),
                "noise": self.noise.clone(), "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            self.scale.copy_(state["scale"])  # in place: the optimizer holds this tensor
        self.last_loss.copy_(state["last_loss"])
        self.noise.copy_(state["noise"])
        self.steps = state["steps"]


class Crash(Exception):
    pass


class CrashingScaledCE(ScaledCE):
    def on_epoch_start(self, epoch: int) -> None:
        if epoch == 2:
            raise Crash
        super().on_epoch_start(epoch)


def test_custom_objective_trains_extra_parameter_and_logs_metrics(toy_data, make_model):
    objective = ScaledCE()
    config = TrainConfig(epochs=2, batch_size=32, lr=0.1)
    result = Trainer(make_model(0), objective, config).fit(toy_data)
    assert float(objective.scale.detach()) != 1.0  # the optimizer updated the extra parameter
    assert objective.steps == 2 * 3 and objective.epochs_started == [0, 1]
    assert bool((objective.last_loss > 0).all())  # every example went through compute
    metrics = result.history[1]["metrics"]
    assert metrics["seen"] == pytest.approx(32.0)
    assert metrics["scale"] != pytest.approx(1.0)


def test_custom_objective_state_survives_resume(toy_data, make_model, tmp_path):
    config = TrainConfig(epochs=3, batch_size=32, lr=0.1)
    straight = ScaledCE()
    model_a = make_model(0)
    Trainer(model_a, straight, config).fit(toy_data)

    crashing = CrashingScaledCE()
    with pytest.raises(Crash):
        Trainer(make_model(0), crashing, config).fit(toy_data, run_dir=tmp_path)
    resumed = ScaledCE()
    model_b = make_model(5)  # different weights: resume must load them
    Trainer(model_b, resumed, config).fit(toy_data, run_dir=tmp_path, resume=True)

    assert torch.equal(resumed.scale.detach(), straight.scale.detach())
    assert torch.equal(resumed.last_loss, straight.last_loss)
    assert torch.equal(resumed.noise, straight.noise)
    assert resumed.steps == straight.steps == 9
    assert resumed.epochs_started == [2]
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)


def test_resume_with_another_objective_is_refused(toy_data, make_model, tmp_path):
    with pytest.raises(Crash):
        Trainer(make_model(0), CrashingScaledCE(), TrainConfig(epochs=3, batch_size=32)).fit(
            toy_data, run_dir=tmp_path)
    with pytest.raises(CheckpointError, match="objective 'scaled-ce', not 'ce'"):
        Trainer(make_model(0), CrossEntropy(), TrainConfig(epochs=3, batch_size=32)).fit(
            toy_data, run_dir=tmp_path, resume=True)
