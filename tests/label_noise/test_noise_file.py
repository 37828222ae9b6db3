"""noise.npz: written atomically, read back with clear errors, checked on resume."""

from __future__ import annotations

import numpy as np
import pytest

from robustlab.data import load_dataset
from robustlab.errors import DataFormatError, DataNotFoundError, InvalidParameterError
from robustlab.label_noise.noise_file import noisy_training_split, read_noise_file


def test_round_trip_and_resume_check(tmp_path):
    train = load_dataset("digits", split="train")
    noisy_ds, noisy = noisy_training_split("pair:0.3", train, seed=4, run_dir=tmp_path, resume=False)
    saved = read_noise_file(tmp_path / "noise.npz")
    assert np.array_equal(saved["noisy_labels"], noisy_ds.labels.numpy())
    assert np.array_equal(saved["clean_labels"], train.labels.numpy())
    assert int(saved["noise_mask"].sum()) == noisy.num_flipped and str(saved["spec"]) == "pair:0.3"
    assert "transition" in saved and saved["transition"].shape == (10, 10)
    # same spec and seed: resumes; another seed: refused, file untouched
    again, _ = noisy_training_split("pair:0.3", train, seed=4, run_dir=tmp_path, resume=True)
    assert np.array_equal(again.labels.numpy(), noisy_ds.labels.numpy())
    with pytest.raises(InvalidParameterError, match="'label_noise'"):
        noisy_training_split("pair:0.3", train, seed=5, run_dir=tmp_path, resume=True)
    with pytest.raises(InvalidParameterError, match="'label_noise'"):
        noisy_training_split(None, train, seed=4, run_dir=tmp_path, resume=True)
    assert np.array_equal(read_noise_file(tmp_path / "noise.npz")["noisy_labels"], noisy_ds.labels.numpy())


def test_read_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="noise.npz"):
        read_noise_file(tmp_path / "noise.npz")
    np.savez(tmp_path / "bad.npz", noisy_labels=np.zeros(3, dtype=np.int64))
    with pytest.raises(DataFormatError, match="clean_labels"):
        read_noise_file(tmp_path / "bad.npz")
