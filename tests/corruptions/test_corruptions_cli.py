"""`robustlab corrupt` end to end on a tiny .npz dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robustlab.cli import main
from robustlab.corruptions import load_cifar_c


@pytest.fixture()
def npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_test=rng.integers(0, 256, (8, 10, 10, 3), dtype=np.uint8),
             y_test=np.arange(8) % 2, x_train=rng.integers(0, 256, (4, 10, 10, 3), dtype=np.uint8),
             y_train=np.arange(4) % 2)
    return path


def test_corrupt_end_to_end(npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["corrupt", "--data", str(npz), "--out", str(out), "--corruptions", "fog,contrast",
            "--severities", "1,3", "--seed", "3"]
    assert main(argv) == 0
    assert "wrote 2 corruption file(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["contrast.npy", "fog.npy", "labels.npy", "robustlab_c.json"]
    ds = load_cifar_c(out, "fog", severity=3)
    assert len(ds) == 8 and ds.input_shape == (3, 10, 10)
    assert main(argv) == 0
    assert "skipped 2 already complete" in capsys.readouterr().out


@pytest.mark.parametrize("flag,value,needle", [
    ("--corruptions", "fog,rain", "'--corruptions' option must be one of"),
    ("--severities", "0-6", "'--severities' option"),
    ("--severities", "a", "'--severities' option"),
    ("--preset", "huge", "'--preset' option"),
])
def test_corrupt_bad_flags(npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str,
                           value: str, needle: str) -> None:
    argv = ["corrupt", "--data", str(npz), "--out", str(tmp_path / "o"), flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
