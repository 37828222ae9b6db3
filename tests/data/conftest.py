"""Writers of tiny datasets in the standard on-disk formats, with the arrays they hold."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def _dump_pickle(path: Path, obj: object) -> None:
    # Protocol 2 is what the published CIFAR files use.
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _cifar10_batch(images: np.ndarray, labels: np.ndarray, title: bytes) -> dict:
    return {
        b"batch_label": title,
        b"labels": [int(v) for v in labels],
        b"data": images.reshape(len(images), -1),  # rows: 1024 red, 1024 green, 1024 blue values
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }


@pytest.fixture
def cifar10_files(tmp_path: Path) -> SimpleNamespace:
    """``tmp_path/cifar-10-batches-py`` with 5 training batches of 4 images and a test batch of 3."""
    rng = np.random.default_rng(10)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_images, train_labels = _cifar_images(rng, 20), rng.integers(0, 10, size=20)
    for b in range(5):
        part = slice(4 * b, 4 * b + 4)
        _dump_pickle(folder / f"data_batch_{b + 1}",
                    _cifar10_batch(train_images[part], train_labels[part], f"training batch {b + 1} of 5".encode()))
    test_images, test_labels = _cifar_images(rng, 3), rng.integers(0, 10, size=3)
    _dump_pickle(folder / "test_batch", _cifar10_batch(test_images, test_labels, b"testing batch 1 of 1"))
    meta = {b"num_cases_per_batch": 4, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}
    _dump_pickle(folder / "batches.meta", meta)
    return SimpleNamespace(root=tmp_path, folder=folder, train_images=train_images, train_labels=train_labels,
                           test_images=test_images, test_labels=test_labels, class_names=CIFAR10_NAMES)


@pytest.fixture
def cifar100_files(tmp_path: Path) -> SimpleNamespace:
    """``tmp_path/cifar-100-python`` with 6 training and 2 test images."""
    rng = np.random.default_rng(100)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    out = SimpleNamespace(root=tmp_path, folder=folder,
                          fine_names=[f"fine_{i:02d}" for i in range(100)],
                          coarse_names=[f"coarse_{i:02d}" for i in range(20)])
    for split, n in (("train", 6), ("test", 2)):
        images, fine, coarse = _cifar_images(rng, n), rng.integers(0, 100, size=n), rng.integers(0, 20, size=n)
        _dump_pickle(folder / split, {b"filenames": [b"x.png"] * n, b"batch_label": split.encode(),
                                     b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist(),
                                     b"data": images.reshape(n, -1)})
        setattr(out, f"{split}_images", images)
        setattr(out, f"{split}_fine", fine)
        setattr(out, f"{split}_coarse", coarse)
    _dump_pickle(folder / "meta", {b"fine_label_names": [n.encode() for n in out.fine_names],
                                  b"coarse_label_names": [n.encode() for n in out.coarse_names]})
    return out


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@pytest.fixture
def write_mnist():
    """``write_mnist(folder, gz=False)`` writes 6 train and 4 test 7x5 images (H=7, W=5) with labels."""

    def write(folder: Path, *, gz: bool = False, spelling: str = "-idx") -> SimpleNamespace:
        rng = np.random.default_rng(28)
        folder.mkdir(parents=True, exist_ok=True)
        out = SimpleNamespace(folder=folder)
        for prefix, n in (("train", 6), ("t10k", 4)):
            images, labels = rng.integers(0, 256, size=(n, 7, 5), dtype=np.uint8), rng.integers(0, 10, size=n)
            for kind, array, magic in (("images", images, 0x00000803), ("labels", labels, 0x00000801)):
                name = f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte".replace("-idx", spelling)
                data = idx_bytes(array, magic)
                if gz:
                    with gzip.open(folder / f"{name}.gz", "wb") as fh:
                        fh.write(data)
                else:
                    (folder / name).write_bytes(data)
            split = "train" if prefix == "train" else "test"
            setattr(out, f"{split}_images", images)
            setattr(out, f"{split}_labels", labels)
        return out

    return write


@pytest.fixture
def write_images():
    """``write_images(root, {"cls": [uint8 (H, W, 3) or (H, W) arrays]}, ext=".png")`` -> paths per class."""
    from PIL import Image

    def write(root: Path, classes: dict[str, list[np.ndarray]], *, ext: str = ".png") -> dict[str, list[Path]]:
        paths: dict[str, list[Path]] = {}
        for cls, arrays in classes.items():
            (root / cls).mkdir(parents=True, exist_ok=True)
            paths[cls] = []
            for i, array in enumerate(arrays):
                path = root / cls / f"img_{i:03d}{ext}"
                Image.fromarray(array).save(path)
                paths[cls].append(path)
        return paths

    return write
