"""CIFAR-10-C layout: write -> read round trip, exact uint8 values, resume, truncated files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.corruptions import corrupt, load_cifar_c, write_corrupted
from robustlab.data import Dataset
from robustlab.errors import (
    DataFormatError,
    DataNotFoundError,
    InvalidParameterError,
    UnknownNameError,
)


@pytest.fixture()
def tiny() -> Dataset:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (10, 3, 12, 12), generator=g, dtype=torch.uint8)
    return Dataset(pixels.float() / 255, torch.arange(10) % 3, class_names=["a", "b", "c"], name="tiny")


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_round_trip_exact_uint8(tiny: Dataset, tmp_path: Path) -> None:
    summary = write_corrupted(tiny, tmp_path, corruptions=["contrast", "brightness"], generator=_g(),
                              preset="cifar", batch_size=4, progress=False)
    assert summary.written == ("contrast", "brightness") and summary.skipped == ()
    raw = np.load(tmp_path / "contrast.npy")
    assert raw.dtype == np.uint8 and raw.shape == (50, 12, 12, 3)
    labels = np.load(tmp_path / "labels.npy")
    assert labels.dtype == np.uint8 and labels.tolist() == (np.arange(10) % 3).tolist() * 5
    x, _ = tiny.tensors()
    for s in (1, 3, 5):
        # contrast is deterministic: the stored block is round(255 * corrupt(x)) exactly
        expected = torch.round(corrupt(x, "contrast", s, generator=_g(), preset="cifar") * 255).to(torch.uint8)
        assert np.array_equal(raw[(s - 1) * 10:s * 10], expected.permute(0, 2, 3, 1).numpy())
        ds = load_cifar_c(tmp_path, "contrast", severity=s)
        xs, ys = ds.tensors()
        assert len(ds) == 10 and ds.input_shape == (3, 12, 12) and ds.class_names == ("a", "b", "c")
        assert torch.equal(xs, expected.float() / 255)
        assert ys.tolist() == (np.arange(10) % 3).tolist()
    everything = load_cifar_c(tmp_path, "brightness")
    assert len(everything) == 50
    meta = json.loads((tmp_path / "robustlab_c.json").read_text())
    assert meta["severities"] == [1, 2, 3, 4, 5] and meta["preset"] == "cifar"


def test_resume_skips_finished_files_and_gives_the_same_bytes(tiny: Dataset, tmp_path: Path) -> None:
    one = tmp_path / "one"
    write_corrupted(tiny, one, corruptions=["gaussian_noise", "fog"], generator=_g(7), progress=False)
    two = tmp_path / "two"
    write_corrupted(tiny, two, corruptions=["fog"], generator=_g(7), progress=False)
    stamp = os.stat(two / "fog.npy").st_mtime_ns
    summary = write_corrupted(tiny, two, corruptions=["gaussian_noise", "fog"], generator=_g(7), progress=False)
    assert summary.skipped == ("fog",) and summary.written == ("gaussian_noise",)
    assert os.stat(two / "fog.npy").st_mtime_ns == stamp
    for name in ("gaussian_noise", "fog"):
        assert (one / f"{name}.npy").read_bytes() == (two / f"{name}.npy").read_bytes()
    # a different seed gives different noise
    three = tmp_path / "three"
    write_corrupted(tiny, three, corruptions=["gaussian_noise"], generator=_g(8), progress=False)
    assert (three / "gaussian_noise.npy").read_bytes() != (one / "gaussian_noise.npy").read_bytes()


def test_truncated_file_is_rewritten_and_reported(tiny: Dataset, tmp_path: Path) -> None:
    write_corrupted(tiny, tmp_path, corruptions=["contrast"], severities=[1, 2], generator=_g(), progress=False)
    path = tmp_path / "contrast.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="truncated") as info:
        load_cifar_c(tmp_path, "contrast")
    assert "\n" not in str(info.value)
    summary = write_corrupted(tiny, tmp_path, corruptions=["contrast"], severities=[1, 2], generator=_g(),
                              progress=False)
    assert summary.written == ("contrast",)
    assert path.read_bytes() == data
    assert len(load_cifar_c(tmp_path, "contrast", severity=2)) == 10
    with pytest.raises(InvalidParameterError, match="severity"):
        load_cifar_c(tmp_path, "contrast", severity=3)


def test_grey_images_and_reader_errors(tmp_path: Path) -> None:
    grey = Dataset(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1]))
    write_corrupted(grey, tmp_path, corruptions=["pixelate"], severities=[2], generator=_g(), progress=False)
    assert np.load(tmp_path / "pixelate.npy").shape == (6, 8, 8, 1)
    assert load_cifar_c(tmp_path, "pixelate", severity=2).input_shape == (1, 8, 8)
    with pytest.raises(UnknownNameError, match="pixelate"):
        load_cifar_c(tmp_path, "fog")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_cifar_c(tmp_path / "missing", "fog")
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(DataNotFoundError, match="labels.npy"):
        load_cifar_c(tmp_path, "pixelate")
    np.save(tmp_path / "labels.npy", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataFormatError, match="one image per label"):
        load_cifar_c(tmp_path, "pixelate")


def test_writer_bad_input(tiny: Dataset, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="gaussian_noise"):
        write_corrupted(tiny, tmp_path, corruptions=["rain"], generator=_g())
    with pytest.raises(InvalidParameterError, match="severities"):
        write_corrupted(tiny, tmp_path, corruptions=["fog"], severities=[0], generator=_g())
    with pytest.raises(TypeError, match="image Dataset"):
        write_corrupted(Dataset(torch.rand(4, 3), torch.tensor([0, 1, 0, 1])), tmp_path,
                        corruptions=["fog"], generator=_g())
