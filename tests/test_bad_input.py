"""The foundation issue's list of bad input, each at the public API: one clear, one-line error
naming the argument, of a RobustlabError type that also derives from the built-in one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.data import Dataset, load_dataset, train_test_split
from robustlab.errors import (
    CheckpointError,
    InvalidParameterError,
    InvalidTypeError,
    ModelOutputError,
    OutputDirError,
    RobustlabError,
    ShapeError,
    UnknownNameError,
)
from robustlab.models import ModelConfig, build_model, load_any, load_model, predict_logits, save_model
from robustlab.scan import build_probe, run_scan
from robustlab.training import Trainer, TrainConfig, build_objective

X = torch.rand(6, 1, 8, 8)
Y = torch.tensor([0, 1, 2, 0, 1, 2])


def _digits_like() -> Dataset:
    return Dataset(X, Y, class_names=["a", "b", "c"], name="toy")


class _Fixed(nn.Module):
    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out[: x.shape[0]]


def _saved_model(tmp_path: Path) -> Path:
    model = build_model("mlp", (1, 8, 8), 3, seed=0, hidden_sizes=(8,))
    config = ModelConfig.for_model("mlp", (1, 8, 8), 3, params={"hidden_sizes": [8]})
    return save_model(model, tmp_path / "model", config)


CASES = {
    "labels out of range": (lambda tmp: Dataset(X, torch.tensor([0, 1, 2, 0, 1, 3]), class_names=["a", "b", "c"]),
                            InvalidParameterError, "'labels'"),
    "labels not integers": (lambda tmp: Dataset(X, Y.float()), InvalidTypeError, "'labels'"),
    "images with wrong ndim": (lambda tmp: predict_logits(nn.Flatten(), torch.rand(8)), ShapeError, "'data'"),
    "images outside [0, 1]": (lambda tmp: Dataset(X * 3, Y), InvalidParameterError, "[0, 1]"),
    "NaN in inputs": (lambda tmp: Dataset(torch.full((6, 4), float("nan")), Y), InvalidParameterError, "NaN"),
    "inf in inputs": (lambda tmp: predict_logits(nn.Flatten(), torch.full((2, 4), float("inf"))),
                      InvalidParameterError, "NaN/inf"),
    "class with no examples in a split": (
        lambda tmp: train_test_split(Dataset(torch.rand(6, 4), torch.tensor([0, 0, 0, 1, 1, 1]),
                                             class_names=["a", "b", "c"]), test_size=0.5, seed=0),
        InvalidParameterError, "class 'c'"),
    "model output not (N, K)": (lambda tmp: predict_logits(_Fixed(torch.zeros(6)), _digits_like()),
                                ModelOutputError, "(N, K)"),
    "model K differs from the data": (lambda tmp: predict_logits(_Fixed(torch.zeros(6, 5)), _digits_like()),
                                      ModelOutputError, "3 columns"),
    "scan with a model of the wrong K": (
        lambda tmp: run_scan(_Fixed(torch.zeros(6, 5)), _digits_like(), [build_probe("clean")], out_dir=tmp / "s"),
        ModelOutputError, "3 columns"),
    "train with a model of the wrong K": (
        lambda tmp: Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), "ce", TrainConfig(epochs=1)).fit(_digits_like()),
        ModelOutputError, "3"),
    "unknown model": (lambda tmp: build_model("resnet9000", (1, 8, 8), 3), UnknownNameError, "'small-cnn'"),
    "unknown method": (lambda tmp: build_objective("magic"), UnknownNameError, "'ce'"),
    "unknown probe": (lambda tmp: build_probe("magic"), UnknownNameError, "'clean'"),
    "unknown dataset": (lambda tmp: load_dataset("imagenet-9000"), RobustlabError, "'digits'"),
    "truncated checkpoint": (lambda tmp: load_model(_truncate(_saved_model(tmp) / "model.safetensors").parent),
                             CheckpointError, "model.safetensors"),
    "corrupt checkpoint": (lambda tmp: load_any(_garbage(tmp / "weights.pt")), CheckpointError, "weights.pt"),
    "output folder not writable": (
        lambda tmp: run_scan(_Fixed(torch.zeros(6, 3)), _digits_like(), [build_probe("clean")],
                             out_dir=_file(tmp / "f") / "run"),
        OutputDirError, "'out_dir'"),
}


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(os.urandom(256))
    return path


def _file(path: Path) -> Path:
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_a_clear_error(case, tmp_path):
    make, error, fragment = CASES[case]
    with pytest.raises(error) as info:
        make(tmp_path)
    message = str(info.value)
    assert isinstance(info.value, RobustlabError)
    assert isinstance(info.value, (ValueError, TypeError, OSError))
    assert fragment in message, message
    assert "\n" not in message and len(message) < 600  # one line; a registry lists its ~30 names


def test_numpy_inputs_are_validated_like_tensors():
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\]"):
        Dataset(np.full((2, 1, 4, 4), 2.0, dtype=np.float32), np.array([0, 1]))
    with pytest.raises(InvalidParameterError, match="NaN"):
        Dataset(np.full((2, 3), np.nan, dtype=np.float64), np.array([0, 1]))
