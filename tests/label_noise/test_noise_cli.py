"""`robustlab train --label-noise`: noise on the training split only, seeded, saved, checked on resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab import zoo
from robustlab.label_noise import apply_noise_spec
from cli_testkit import run_cli


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "cache"))


_run = run_cli


def test_train_with_label_noise_saves_the_mask(tmp_path, cache, capsys):
    out_dir = tmp_path / "run"
    base = ["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--out", str(out_dir),
            "--seed", "3"]
    code, out, err = _run(base + ["--label-noise", "symmetric:0.4"], capsys)
    assert code == 0, err
    saved = np.load(out_dir / "noise.npz")
    train, _ = zoo.load_splits("digits")
    assert np.array_equal(saved["clean_labels"], train.labels.numpy())
    assert np.array_equal(saved["noise_mask"], saved["noisy_labels"] != saved["clean_labels"])
    assert str(saved["kind"]) == "symmetric" and str(saved["spec"]) == "symmetric:0.4"
    rate = float(saved["noise_mask"].mean())
    assert abs(rate - 0.4) < 4 * np.sqrt(0.24 / len(train))
    assert f"realised rate {rate:.4f}" in out
    # seeded from --seed: the library call with the same seed gives the same labels
    _, expected = apply_noise_spec("symmetric:0.4", train, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(saved["noisy_labels"], expected.labels.numpy())
    assert saved["transition"].shape == (10, 10)
    # resuming with another spec would train on other labels: refused in one line
    code, _, err = _run(base + ["--resume", "--label-noise", "pair:0.2"], capsys)
    assert code == 2 and "--label-noise" in err and err.count("\n") == 1
    code, _, err = _run(base + ["--resume"], capsys)
    assert code == 2 and "--label-noise" in err


@pytest.mark.parametrize("spec, text", [
    ("gaussian:0.2", "symmetric, symmetric-inclusive, pair, cifar10-asym, instance, transition"),
    ("symmetric:1.5", "RATE in [0, 1]"),
    ("pair:1.0", "RATE in [0, 1)"),
])
def test_bad_specs_fail_before_training(tmp_path, cache, capsys, spec, text):
    code, _, err = _run(["train", "--epochs", "1", "--out", str(tmp_path / "r"), "--label-noise", spec],
                          capsys)
    assert code == 2 and text in err and "'--label-noise' option" in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
