"""Bad input: one-line errors that name the argument."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.data import Dataset
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    ModelOutputError,
    RobustlabError,
    UnknownNameError,
)
from robustlab.training import CrossEntropy, ObjectiveOutput, TrainConfig, Trainer

BAD_CONFIG = [
    ("epochs", 0),
    ("epochs", 2.5),
    ("batch_size", 0),
    ("optimizer", "rmsprop"),
    ("lr", 0.0),
    ("lr", -0.1),
    ("lr", float("nan")),
    ("momentum", 1.0),
    ("nesterov", "yes"),
    ("weight_decay", -1e-4),
    ("schedule", "linear"),
    ("warmup_epochs", 10),
    ("warmup_epochs", -1),
    ("milestones", (5, 3)),
    ("milestones", (0,)),
    ("milestones", (20,)),
    ("milestones", "3"),
    ("gamma", 0.0),
    ("grad_clip_norm", 0.0),
    ("grad_clip_norm", -1.0),
    ("seed", -1),
    ("seed", True),
    ("eval_every", 0),
    ("checkpoint_every", 0),
    ("record_examples", 1),
    ("device", "gpu"),
    ("device", 3),
]


@pytest.mark.parametrize(("field", "value"), BAD_CONFIG)
def test_bad_config_field_is_named(field, value):
    with pytest.raises(RobustlabError) as info:
        TrainConfig(**{"epochs": 10, field: value})
    message = str(info.value)
    assert f"'{field}'" in message and "\n" not in message


def test_unknown_optimizer_lists_choices():
    with pytest.raises(UnknownNameError, match=r"\{'adamw', 'sgd'\}"):
        TrainConfig(optimizer="adam")


def test_nesterov_needs_momentum():
    with pytest.raises(InvalidParameterError, match="'nesterov'"):
        TrainConfig(nesterov=True, momentum=0.0)


def test_config_normalises_values():
    config = TrainConfig(epochs=4, milestones=[1, 3], device=torch.device("cpu"), lr=1)
    assert config.milestones == (1, 3) and config.device == "cpu" and isinstance(config.lr, float)


def test_empty_training_set(make_model):
    empty = Dataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), class_names=["a", "b", "c"])
    with pytest.raises(InvalidParameterError, match="'train'.*non-empty"):
        Trainer(make_model(0), CrossEntropy(), TrainConfig(epochs=1)).fit(empty)


def test_train_must_be_a_dataset(make_model):
    with pytest.raises(InvalidTypeError, match="'train'"):
        Trainer(make_model(0), CrossEntropy(), TrainConfig(epochs=1)).fit(torch.zeros(4, 4))


def test_wrong_number_of_classes_is_a_model_output_error(toy_data):
    model = nn.Linear(4, 5)
    with pytest.raises(ModelOutputError, match="3 columns"):
        Trainer(model, CrossEntropy(), TrainConfig(epochs=1)).fit(toy_data)


def test_model_output_not_2d_is_a_model_output_error(toy_data):
    model = nn.Sequential(nn.Linear(4, 3), nn.Flatten(0))
    with pytest.raises(ModelOutputError, match=r"\(N, K\)"):
        Trainer(model, CrossEntropy(), TrainConfig(epochs=1)).fit(toy_data)


def test_model_for_other_inputs_is_a_model_output_error(toy_data):
    with pytest.raises(ModelOutputError, match="'model' failed"):
        Trainer(nn.Linear(7, 3), CrossEntropy(), TrainConfig(epochs=1)).fit(toy_data)


def test_val_must_match_train(toy_data, make_model):
    other = Dataset(torch.zeros(4, 4), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(InvalidParameterError, match="'val'.*3 classes"):
        Trainer(make_model(0), CrossEntropy(), TrainConfig(epochs=1)).fit(toy_data, val=other)


def test_labels_must_be_in_range_for_the_dataset():
    # The Dataset is where labels are checked; the Trainer relies on it.
    with pytest.raises(InvalidParameterError, match=r"'labels'.*\[0, 1\]"):
        Dataset(torch.zeros(3, 4), torch.tensor([0, 1, 2]), class_names=["a", "b"])


def test_single_class_data_is_refused(make_model):
    data = Dataset(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(InvalidParameterError, match="at least 2 classes"):
        Trainer(nn.Linear(4, 1), CrossEntropy(), TrainConfig(epochs=1)).fit(data)


def test_bad_model_objective_config_types(toy_data, make_model):
    with pytest.raises(InvalidTypeError, match="'model'"):
        Trainer(lambda x: x, CrossEntropy()).fit(toy_data)
    with pytest.raises(InvalidTypeError, match="'objective'"):
        Trainer(make_model(0), object()).fit(toy_data)
    with pytest.raises(UnknownNameError, match="'method'"):
        Trainer(make_model(0), "nope").fit(toy_data)
    with pytest.raises(InvalidTypeError, match="'config'"):
        Trainer(make_model(0), "ce", {"epochs": 1}).fit(toy_data)
    with pytest.raises(InvalidTypeError, match="'resume'"):
        Trainer(make_model(0), "ce").fit(toy_data, resume="yes")


def test_resume_needs_a_run_dir(toy_data, make_model):
    with pytest.raises(InvalidParameterError, match="'resume'.*'run_dir'"):
        Trainer(make_model(0), "ce", TrainConfig(epochs=1)).fit(toy_data, resume=True)


def test_no_trainable_parameters(toy_data, make_model):
    model = make_model(0).requires_grad_(False)
    with pytest.raises(InvalidParameterError, match="trainable parameters"):
        Trainer(model, "ce", TrainConfig(epochs=1)).fit(toy_data)


def test_objective_must_return_objective_output(toy_data, make_model):
    class Bad(CrossEntropy):
        def compute(self, model, batch, *, epoch, step):
            return super().compute(model, batch, epoch=epoch, step=step).loss

    with pytest.raises(InvalidTypeError, match="ObjectiveOutput"):
        Trainer(make_model(0), Bad(), TrainConfig(epochs=1)).fit(toy_data)


def test_objective_loss_must_be_a_scalar_with_grad(toy_data, make_model):
    class PerExample(CrossEntropy):
        def compute(self, model, batch, *, epoch, step):
            logits = model(batch.inputs)
            return ObjectiveOutput(loss=nn.functional.cross_entropy(logits, batch.labels, reduction="none"))

    with pytest.raises(InvalidTypeError, match="scalar loss"):
        Trainer(make_model(0), PerExample(), TrainConfig(epochs=1)).fit(toy_data)


def test_objective_logits_are_checked(toy_data, make_model):
    class WrongLogits(CrossEntropy):
        def compute(self, model, batch, *, epoch, step):
            out = super().compute(model, batch, epoch=epoch, step=step)
            return ObjectiveOutput(loss=out.loss, logits=out.logits[:, :2])

    with pytest.raises(ModelOutputError, match="3 columns"):
        Trainer(make_model(0), WrongLogits(), TrainConfig(epochs=1)).fit(toy_data)


def test_divergence_is_reported(toy_data, make_model):
    class Explode(CrossEntropy):
        def compute(self, model, batch, *, epoch, step):
            out = super().compute(model, batch, epoch=epoch, step=step)
            return ObjectiveOutput(loss=out.loss * float("inf"), logits=out.logits)

    with pytest.raises(InvalidParameterError, match="diverged.*'lr'"):
        Trainer(make_model(0), Explode(), TrainConfig(epochs=1)).fit(toy_data)
