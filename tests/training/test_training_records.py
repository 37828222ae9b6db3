"""Per-example training records: definitions on hand-computed examples, and what the Trainer stores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustlab.errors import CheckpointError, InvalidParameterError
from robustlab.training import (
    CrossEntropy,
    ObjectiveOutput,
    TrainConfig,
    Trainer,
    TrainingRecords,
    margins,
)


def test_margin_on_a_hand_computed_example():
    logits = torch.tensor([[2.0, 1.0, 0.5],
                           [0.0, 3.0, 1.0],
                           [1.0, 1.0, -1.0]])
    labels = torch.tensor([0, 2, 1])
    # 2 - 1; 1 - 3; tie: 1 - 1.
    assert torch.equal(margins(logits, labels), torch.tensor([1.0, -2.0, 0.0]))


def test_aum_and_forgetting_events_on_hand_made_records():
    margin = torch.tensor([[1.0, -1.0], [-2.0, 3.0], [4.0, 1.0]])
    correct = torch.tensor([[True, False], [False, True], [True, False]])
    records = TrainingRecords(loss=torch.zeros(3, 2), margin=margin, correct=correct)
    assert torch.allclose(records.aum(), torch.tensor([1.0, 1.0]))
    assert torch.allclose(records.aum(start=1), torch.tensor([1.0, 2.0]))
    # Example 0: T F T -> one forgetting event; example 1: F T F -> one.
    assert records.forgetting_events().tolist() == [1, 1]
    assert records.forgetting_events(end=2).tolist() == [1, 0]
    with pytest.raises(InvalidParameterError, match="'end'"):
        records.aum(end=5)


def test_aum_refuses_epochs_not_run():
    with pytest.raises(InvalidParameterError, match="trained"):
        TrainingRecords.empty(3, 4).aum()


def test_trainer_records_come_from_the_training_forward_pass(toy_data, make_model):
    model = make_model(0)
    x, y = toy_data.tensors()
    with torch.no_grad():
        initial = model(x)
    # One step per epoch: the records of epoch 0 are the logits before that step's update.
    config = TrainConfig(epochs=3, batch_size=len(toy_data), record_examples=True)
    result = Trainer(model, CrossEntropy(), config).fit(toy_data)
    records = result.records
    n = len(toy_data)
    assert records.loss.shape == records.margin.shape == records.correct.shape == (3, n)
    assert records.correct.dtype == torch.bool
    assert torch.allclose(records.loss[0], F.cross_entropy(initial, y, reduction="none"), atol=1e-6)
    assert torch.allclose(records.margin[0], margins(initial, y), atol=1e-6)
    assert torch.equal(records.correct[0], initial.argmax(1) == y)
    assert result.history[0]["train_acc"] == pytest.approx(float(records.correct[0].float().mean()))
    assert not torch.equal(records.margin[0], records.margin[2])  # later epochs differ
    assert records.aum().shape == (n,)


def test_records_follow_dataset_indices_with_shuffling(toy_data, make_model):
    class Capture(CrossEntropy):
        def setup(self, **kwargs):
            self.seen = {}

        def compute(self, model, batch, *, epoch, step):
            out = super().compute(model, batch, epoch=epoch, step=step)
            if epoch == 1:
                for i, m in zip(batch.indices.tolist(), margins(out.logits.detach(), batch.labels).tolist()):
                    self.seen[i] = m
            return out

    objective = Capture()
    result = Trainer(make_model(0), objective, TrainConfig(epochs=2, batch_size=10, record_examples=True)
                     ).fit(toy_data)
    expected = torch.tensor([objective.seen[i] for i in range(len(toy_data))])
    assert torch.allclose(result.records.margin[1], expected)


def test_record_examples_needs_logits(toy_data, make_model):
    class NoLogits(CrossEntropy):
        def compute(self, model, batch, *, epoch, step):
            return ObjectiveOutput(loss=super().compute(model, batch, epoch=epoch, step=step).loss)

    with pytest.raises(InvalidParameterError, match="'record_examples'.*returns no logits"):
        Trainer(make_model(0), NoLogits(), TrainConfig(epochs=1, record_examples=True)).fit(toy_data)


def test_round_trip_and_malformed_state():
    records = TrainingRecords.empty(2, 3)
    again = TrainingRecords.from_dict(records.to_dict())
    assert again.margin.shape == (2, 3)
    assert records.truncated(1).loss.shape == (1, 3)
    with pytest.raises(CheckpointError, match="run.pt"):
        TrainingRecords.from_dict({"loss": torch.zeros(2, 3)}, source="run.pt")
