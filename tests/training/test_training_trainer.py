"""The Trainer loop: learning, determinism, exact resume, model state, clipping, history."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from robustlab.data import Dataset
from robustlab.models import predict_logits
from robustlab.training import CrossEntropy, ObjectiveOutput, TrainConfig, Trainer


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def _accuracy(model: nn.Module, data: Dataset) -> float:
    return float((predict_logits(model, data).argmax(1) == data.labels).float().mean())


class Crash(Exception):
    pass


class CrashAt(CrossEntropy):
    """CE that dies at the start of one epoch, like a killed process."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.crash_epoch = epoch

    def on_epoch_start(self, epoch: int) -> None:
        if epoch == self.crash_epoch:
            raise Crash


def test_learns_a_linearly_separable_problem(toy_data, toy_val, make_model):
    model = make_model(0)
    config = TrainConfig(epochs=30, batch_size=16, lr=0.1, weight_decay=0.0)
    result = Trainer(model, "ce", config).fit(toy_data, val=toy_val)
    assert _accuracy(model, toy_data) >= 0.98
    assert result.final_val_acc >= 0.9
    assert result.best_val_acc == max(row["val_acc"] for row in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 3
    assert result.model is model and result.records is None and result.seconds > 0


def test_history_rows(toy_data, toy_val, make_model):
    config = TrainConfig(epochs=3, batch_size=32, lr=0.1, schedule="step", milestones=(1, 2), gamma=0.5,
                         eval_every=2)
    result = Trainer(make_model(0), CrossEntropy(), config).fit(toy_data, val=toy_val)
    assert [row["epoch"] for row in result.history] == [0, 1, 2]
    assert [row["lr"] for row in result.history] == pytest.approx([0.1, 0.05, 0.025])
    # Evaluated every 2nd epoch and after the last one.
    assert [row["val_acc"] is None for row in result.history] == [True, False, False]
    assert set(result.history[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                                      "seconds", "metrics"}
    assert 0.0 <= result.history[0]["train_acc"] <= 1.0


def test_same_seed_gives_identical_weights_different_seed_does_not(toy_data, make_model):
    def run(seed: int) -> nn.Module:
        model = make_model(0, dropout=0.3)
        Trainer(model, CrossEntropy(), TrainConfig(epochs=2, batch_size=16, seed=seed)).fit(toy_data)
        return model

    a, b, c = run(1), run(1), run(2)
    assert _same(a, b)
    assert not _same(a, c)


def test_global_rng_is_neither_read_nor_changed(toy_data, make_model):
    config = TrainConfig(epochs=1, batch_size=16)
    model_a = make_model(0, dropout=0.5)  # nn.Linear's default init draws from the global RNG
    torch.manual_seed(123)
    state = torch.get_rng_state()
    Trainer(model_a, CrossEntropy(), config).fit(toy_data)
    assert torch.equal(torch.get_rng_state(), state)  # caller's state untouched
    torch.manual_seed(456)  # a different global state must not change the result
    model_b = make_model(0, dropout=0.5)
    Trainer(model_b, CrossEntropy(), config).fit(toy_data)
    assert _same(model_a, model_b)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(toy_data, toy_val, make_model, tmp_path, optimizer):
    config = TrainConfig(epochs=3, batch_size=16, optimizer=optimizer, lr=0.05, schedule="cosine",
                         warmup_epochs=1, grad_clip_norm=5.0, record_examples=True)
    straight = make_model(0, dropout=0.3)
    expected = Trainer(straight, CrossEntropy(), config).fit(toy_data, val=toy_val)

    with pytest.raises(Crash):
        Trainer(make_model(0, dropout=0.3), CrashAt(2), config).fit(toy_data, val=toy_val, run_dir=tmp_path)
    resumed = make_model(7, dropout=0.3)  # fresh weights, as in a new process
    result = Trainer(resumed, CrossEntropy(), config).fit(toy_data, val=toy_val, run_dir=tmp_path,
                                                          resume=True)
    assert _same(straight, resumed)
    assert len(result.history) == 3
    assert [r["train_loss"] for r in result.history] == [r["train_loss"] for r in expected.history]
    for name in ("loss", "margin", "correct"):
        assert torch.equal(getattr(result.records, name), getattr(expected.records, name))


def test_resuming_a_finished_run_trains_nothing(toy_data, make_model, tmp_path):
    config = TrainConfig(epochs=2, batch_size=32)
    first = make_model(0)
    Trainer(first, CrossEntropy(), config).fit(toy_data, run_dir=tmp_path)
    again = make_model(3)
    result = Trainer(again, CrossEntropy(), config).fit(toy_data, run_dir=tmp_path, resume=True)
    assert _same(first, again) and len(result.history) == 2


def test_checkpoint_every_and_resume_from_an_older_epoch(toy_data, make_model, tmp_path):
    from robustlab.training import load_checkpoint

    config = TrainConfig(epochs=4, batch_size=32, checkpoint_every=2)
    straight = make_model(0)
    Trainer(straight, CrossEntropy(), config).fit(toy_data)
    with pytest.raises(Crash):
        Trainer(make_model(0), CrashAt(3), config).fit(toy_data, run_dir=tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2  # epoch 3 was not checkpointed
    resumed = make_model(1)
    Trainer(resumed, CrossEntropy(), config).fit(toy_data, run_dir=tmp_path, resume=True)
    assert _same(straight, resumed)


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_fit_restores_the_models_modes(toy_data, make_model, mode):
    model = make_model(0, dropout=0.2)
    model.train(mode != "eval")
    if mode == "mixed":
        model[2].eval()
    before = [m.training for m in model.modules()]
    seen = []

    class Spy(CrossEntropy):
        def compute(self, model, batch, *, epoch, step):
            seen.append(model.training)
            return super().compute(model, batch, epoch=epoch, step=step)

    Trainer(model, Spy(), TrainConfig(epochs=1, batch_size=48)).fit(toy_data, val=toy_data)
    assert seen == [True, True]  # training steps run in train mode
    assert [m.training for m in model.modules()] == before


def test_modes_restored_when_training_fails(toy_data, make_model):
    model = make_model(0).eval()
    with pytest.raises(Crash):
        Trainer(model, CrashAt(0), TrainConfig(epochs=1)).fit(toy_data)
    assert not any(m.training for m in model.modules())


def test_frozen_parameters_are_not_trained(toy_data, make_model):
    model = make_model(0)
    model[0].weight.requires_grad_(False)
    frozen, trained = model[0].weight.detach().clone(), model[2].weight.detach().clone()
    Trainer(model, CrossEntropy(), TrainConfig(epochs=1, batch_size=32)).fit(toy_data)
    assert torch.equal(model[0].weight, frozen) and not model[0].weight.requires_grad
    assert not torch.equal(model[2].weight, trained)


class GradNormSpy(CrossEntropy):
    """Reads the gradient norm right after the optimizer step (gradients are still there)."""

    def setup(self, *, model, **kwargs) -> None:
        self.model, self.norms = model, []

    def on_step_end(self, *, epoch: int, step: int) -> None:
        grads = [p.grad.flatten() for p in self.model.parameters()]
        self.norms.append(float(torch.cat(grads).norm()))


@pytest.mark.parametrize("clip", [None, 0.01])
def test_grad_clipping_bounds_the_gradient_norm(toy_data, make_model, clip):
    spy = GradNormSpy()
    Trainer(make_model(0), spy, TrainConfig(epochs=2, batch_size=16, grad_clip_norm=clip)).fit(toy_data)
    if clip is None:
        assert max(spy.norms) > 0.1  # so the bound below is not trivially met
    else:
        assert max(spy.norms) <= clip * (1 + 1e-5)


def test_one_log_line_per_epoch(toy_data, make_model, caplog):
    with caplog.at_level(logging.INFO, logger="robustlab.training"):
        Trainer(make_model(0), CrossEntropy(), TrainConfig(epochs=2, batch_size=48)).fit(toy_data)
    lines = [r.getMessage() for r in caplog.records if r.name == "robustlab.training"]
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2 train_loss=")


def test_objective_without_logits(toy_data, make_model):
    class NoLogits(CrossEntropy):
        def compute(self, model, batch, *, epoch, step):
            return ObjectiveOutput(loss=super().compute(model, batch, epoch=epoch, step=step).loss)

    result = Trainer(make_model(0), NoLogits(), TrainConfig(epochs=1)).fit(toy_data)
    assert result.history[0]["train_acc"] is None


def test_config_device_moves_the_model(toy_data, make_model):
    model = make_model(0)
    Trainer(model, CrossEntropy(), TrainConfig(epochs=1, device="cpu")).fit(toy_data)
    assert all(p.device.type == "cpu" for p in model.parameters())
