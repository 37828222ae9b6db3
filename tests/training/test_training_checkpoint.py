"""Checkpoints: atomic writes, safe loading, clear errors on resume."""

from __future__ import annotations

import os

import pytest
import torch

from robustlab.errors import CheckpointError, OutputDirError
from robustlab.training import (
    CrossEntropy,
    TrainConfig,
    Trainer,
    load_checkpoint,
    save_checkpoint,
)


def _boom_after_partial_write(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a zip file")  # what a killed torch.save leaves behind
    raise KeyboardInterrupt


def test_save_and_load_round_trip(tmp_path):
    path = save_checkpoint({"epoch": 3, "w": torch.arange(4.0), "nested": {"a": [1, None]}},
                           tmp_path / "c.pt")
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(4.0))
    assert state["nested"] == {"a": [1, None]}
    assert os.listdir(tmp_path) == ["c.pt"]


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"epoch": 1}, path)
    monkeypatch.setattr(torch, "save", _boom_after_partial_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary file left behind


def test_crash_before_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"epoch": 1}, path)

    def no_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


def test_trainer_crash_while_checkpointing_then_exact_resume(toy_data, make_model, tmp_path, monkeypatch):
    config = TrainConfig(epochs=3, batch_size=32)
    straight = make_model(0)
    Trainer(straight, CrossEntropy(), config).fit(toy_data)

    real_save = torch.save
    calls = []

    def save_then_die_on_second(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            _boom_after_partial_write(obj, f)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_die_on_second)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_model(0), CrossEntropy(), config).fit(toy_data, run_dir=tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1

    resumed = make_model(9)
    Trainer(resumed, CrossEntropy(), config).fit(toy_data, run_dir=tmp_path, resume=True)
    assert all(torch.equal(p, q) for p, q in zip(straight.parameters(), resumed.parameters()))


def test_missing_checkpoint_names_the_file(toy_data, make_model, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        Trainer(make_model(0), "ce", TrainConfig(epochs=1)).fit(toy_data, run_dir=tmp_path, resume=True)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04 truncated"])
def test_corrupt_checkpoint_names_the_file(toy_data, make_model, tmp_path, content):
    (tmp_path / "checkpoint.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*corrupt"):
        Trainer(make_model(0), "ce", TrainConfig(epochs=1)).fit(toy_data, run_dir=tmp_path, resume=True)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoints_are_loaded_without_running_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "robustlab-training-checkpoint", "version": 1, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)


def test_foreign_file_and_newer_version_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="not a robustlab training checkpoint"):
        load_checkpoint(tmp_path / "a.pt")
    torch.save({"format": "robustlab-training-checkpoint", "version": 99}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "b.pt")


def test_resume_with_a_different_config_names_the_fields(toy_data, make_model, tmp_path):
    Trainer(make_model(0), "ce", TrainConfig(epochs=2, batch_size=32)).fit(toy_data, run_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"different config \(lr: checkpoint 0.1, now 0.2\)"):
        Trainer(make_model(0), "ce", TrainConfig(epochs=2, batch_size=32, lr=0.2)).fit(
            toy_data, run_dir=tmp_path, resume=True)
    # Settings that do not change the weights may differ.
    Trainer(make_model(0), "ce", TrainConfig(epochs=2, batch_size=32, eval_every=2, checkpoint_every=5)).fit(
        toy_data, run_dir=tmp_path, resume=True)


def test_resume_on_different_data_is_refused(toy_data, make_model, tmp_path):
    Trainer(make_model(0), "ce", TrainConfig(epochs=1)).fit(toy_data, run_dir=tmp_path)
    with pytest.raises(CheckpointError, match="num_examples"):
        Trainer(make_model(0), "ce", TrainConfig(epochs=1)).fit(toy_data.subset(torch.arange(50)),
                                                                run_dir=tmp_path, resume=True)


def test_resume_with_another_architecture_is_a_checkpoint_error(toy_data, make_model, tmp_path):
    Trainer(make_model(0), "ce", TrainConfig(epochs=1)).fit(toy_data, run_dir=tmp_path)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        Trainer(make_model(0, hidden=8), "ce", TrainConfig(epochs=1)).fit(toy_data, run_dir=tmp_path,
                                                                          resume=True)


def test_existing_checkpoint_is_not_overwritten_without_resume(toy_data, make_model, tmp_path):
    Trainer(make_model(0), "ce", TrainConfig(epochs=1)).fit(toy_data, run_dir=tmp_path)
    with pytest.raises(OutputDirError, match="'run_dir'.*resume=True"):
        Trainer(make_model(0), "ce", TrainConfig(epochs=1)).fit(toy_data, run_dir=tmp_path)


def test_checkpoint_holds_the_run_state(toy_data, make_model, tmp_path):
    config = TrainConfig(epochs=2, batch_size=32, record_examples=True)
    Trainer(make_model(0), "ce", config).fit(toy_data, run_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 2 and state["step"] == 6
    assert state["config"] == config.to_dict()
    assert state["objective"] == {"name": "ce", "state": {}}
    assert state["records"]["margin"].shape == (2, len(toy_data))
    assert len(state["history"]) == 2
