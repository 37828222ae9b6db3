"""MNIST-style IDX files: header parsing, memmap storage, gzip, and malformed files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from robustlab.data import load_mnist
from robustlab.errors import DataFormatError, DataNotFoundError


def _float_images(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images[:, None].astype(np.float32) / np.float32(255))


def test_plain_files_give_exact_pixels_and_labels(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist")
    ds = load_mnist(files.folder)
    assert ds.input_shape == (1, 7, 5) and len(ds) == 6 and ds.name == "mnist"
    assert torch.equal(ds.tensors()[0], _float_images(files.train_images))
    assert ds.labels.tolist() == files.train_labels.tolist()
    assert ds.class_names == tuple(str(i) for i in range(10))


def test_plain_files_are_memory_mapped(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist")
    array = load_mnist(files.folder, split="test").source.array
    assert isinstance(array, np.memmap) and array.dtype == np.uint8 and array.shape == (4, 1, 7, 5)


def test_gzip_files_give_the_same_data(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist", gz=True)
    ds = load_mnist(files.folder, split="test")
    assert torch.equal(ds.tensors()[0], _float_images(files.test_images))
    assert ds.labels.tolist() == files.test_labels.tolist()


def test_dot_spelling_in_raw_subfolder(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "MNIST" / "raw", spelling=".idx")
    ds = load_mnist(tmp_path / "MNIST", split="all")
    expected = np.concatenate([files.train_images, files.test_images])
    assert torch.equal(ds.tensors()[0], _float_images(expected))
    assert ds.labels.tolist() == files.train_labels.tolist() + files.test_labels.tolist()


def test_fashion_folder_gets_fashion_class_names(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "fashion-mnist")
    ds = load_mnist(files.folder)
    assert ds.name == "fashion-mnist" and ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


def test_explicit_class_names_and_name(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "digits-idx")
    ds = load_mnist(files.folder, class_names=[f"c{i}" for i in range(12)], name="emnist-ish")
    assert ds.num_classes == 12 and ds.name == "emnist-ish"


def test_wrong_magic_number(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist")
    path = files.folder / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">I", 0x00000802) + path.read_bytes()[4:])
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte.*magic number 0x00000802, expected 0x00000803"):
        load_mnist(files.folder)


def test_labels_file_with_images_magic(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist")
    path = files.folder / "t10k-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">I", 0x00000803) + path.read_bytes()[4:])
    with pytest.raises(DataFormatError, match="t10k-labels-idx1-ubyte.*0x00000801"):
        load_mnist(files.folder, split="test")


def test_truncated_images_file(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist")
    path = files.folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte.*truncated: 223 bytes.*\[6, 7, 5\].*226"):
        load_mnist(files.folder)


def test_truncated_header(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist")
    (files.folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte.*shorter than the header"):
        load_mnist(files.folder)


def test_trailing_bytes(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist")
    path = files.folder / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataFormatError, match="t10k-labels-idx1-ubyte.*trailing data"):
        load_mnist(files.folder, split="test")


def test_truncated_gzip_member(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist", gz=True)
    path = files.folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte.gz"):
        load_mnist(files.folder)


def test_not_gzip_at_all(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist", gz=True)
    (files.folder / "train-labels-idx1-ubyte.gz").write_bytes(b"plain text")
    with pytest.raises(DataFormatError, match="train-labels-idx1-ubyte.gz.*gzip"):
        load_mnist(files.folder)


def test_label_count_differs_from_image_count(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist")
    labels = np.zeros(5, dtype=np.uint8)
    (files.folder / "train-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x00000801, 5) + labels.tobytes())
    with pytest.raises(DataFormatError, match="train-labels-idx1-ubyte.*5 labels for the 6 images"):
        load_mnist(files.folder)


def test_label_outside_class_range(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist")
    labels = np.array([0, 1, 2, 11], dtype=np.uint8)
    with gzip.open(files.folder / "unused.gz", "wb") as fh:  # a stray file must not confuse the loader
        fh.write(b"x")
    (files.folder / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x00000801, 4) + labels.tobytes())
    with pytest.raises(DataFormatError, match=r"t10k-labels-idx1-ubyte.*\[0, 11\].*\[0, 9\]"):
        load_mnist(files.folder, split="test")


def test_missing_labels_file_names_file_and_folder(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist")
    (files.folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataNotFoundError, match="'t10k-labels-idx1-ubyte'") as info:
        load_mnist(files.folder, split="test")
    assert str(files.folder) in str(info.value)
    assert len(load_mnist(files.folder, split="train")) == 6  # the train files are still fine


def test_missing_folder(tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match="no such folder"):
        load_mnist(tmp_path / "absent")
