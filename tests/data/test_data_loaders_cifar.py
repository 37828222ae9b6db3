"""CIFAR-10/100 python pickles: exact pixels and labels, safe unpickling, clear errors."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from robustlab.data import ArraySource, load_cifar10, load_cifar100
from robustlab.errors import DataFormatError, DataNotFoundError, UnknownNameError


def dump_pickle(path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _as_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.astype(np.float32) / np.float32(255))


def test_cifar10_train_has_exact_pixels_labels_and_names(cifar10_files) -> None:
    ds = load_cifar10(cifar10_files.folder)
    x, y = ds.tensors()
    assert ds.name == "cifar10" and ds.input_shape == (3, 32, 32) and len(ds) == 20
    assert torch.equal(x, _as_float(cifar10_files.train_images))
    assert y.tolist() == cifar10_files.train_labels.tolist()
    assert ds.class_names == tuple(cifar10_files.class_names)


def test_cifar10_is_stored_as_uint8_channels_last(cifar10_files) -> None:
    source = load_cifar10(cifar10_files.folder).source
    assert isinstance(source, ArraySource) and source.channels_last
    assert source.array.dtype == np.uint8 and source.array.shape == (20, 32, 32, 3)
    # Row layout of the file: 1024 red values, then green, then blue.
    assert source.array[0, 0, 1, 2] == cifar10_files.train_images[0, 2, 0, 1]


@pytest.mark.parametrize("split, n", [("test", 3), ("all", 23)])
def test_cifar10_other_splits(cifar10_files, split: str, n: int) -> None:
    ds = load_cifar10(cifar10_files.root, split=split)  # the parent folder works too
    images = cifar10_files.test_images if split == "test" else np.concatenate(
        [cifar10_files.train_images, cifar10_files.test_images])
    assert len(ds) == n and torch.equal(ds.tensors()[0], _as_float(images))


def test_old_numpy_core_pickles_load_without_warnings(cifar10_files) -> None:
    path = cifar10_files.folder / "test_batch"
    # Files written by Python 2 + NumPy 1 name numpy.core.multiarray, not numpy._core.
    path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_cifar10(cifar10_files.folder, split="test")
    assert torch.equal(ds.tensors()[0], _as_float(cifar10_files.test_images))


def test_str_keys_are_accepted(cifar10_files) -> None:
    batch = {"data": cifar10_files.test_images.reshape(3, -1), "labels": cifar10_files.test_labels.tolist()}
    dump_pickle(cifar10_files.folder / "test_batch", batch)
    assert load_cifar10(cifar10_files.folder, split="test").labels.tolist() == cifar10_files.test_labels.tolist()


def test_missing_batch_names_file_and_folder(cifar10_files) -> None:
    (cifar10_files.folder / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="'data_batch_3'") as info:
        load_cifar10(cifar10_files.folder)
    assert str(cifar10_files.folder) in str(info.value)


def test_missing_meta_file(cifar10_files) -> None:
    (cifar10_files.folder / "batches.meta").unlink()
    with pytest.raises(DataNotFoundError, match="'batches.meta'"):
        load_cifar10(cifar10_files.folder, split="test")


def test_missing_root_folder(tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match="no such folder"):
        load_cifar10(tmp_path / "nowhere")


def test_batch_without_data_key(cifar10_files) -> None:
    dump_pickle(cifar10_files.folder / "test_batch", {b"labels": [1, 2, 3]})
    with pytest.raises(DataFormatError, match="test_batch.*missing key b'data'"):
        load_cifar10(cifar10_files.folder, split="test")


def test_truncated_batch(cifar10_files) -> None:
    path = cifar10_files.folder / "data_batch_2"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataFormatError, match="data_batch_2.*not a readable pickle") as info:
        load_cifar10(cifar10_files.folder)
    assert "\n" not in str(info.value)


def test_garbage_bytes(cifar10_files) -> None:
    (cifar10_files.folder / "test_batch").write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataFormatError, match="test_batch"):
        load_cifar10(cifar10_files.folder, split="test")


class _Exploit:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickle_that_would_run_code_is_refused(cifar10_files, tmp_path) -> None:
    target = tmp_path / "pwned"
    (cifar10_files.folder / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit(str(target))}, protocol=2))
    with pytest.raises(DataFormatError, match=r"test_batch.*refers to (posix|os|nt)\.mkdir"):
        load_cifar10(cifar10_files.folder, split="test")
    assert not target.exists()


def test_wrong_data_shape(cifar10_files) -> None:
    dump_pickle(cifar10_files.folder / "test_batch", {b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]})
    with pytest.raises(DataFormatError, match=r"test_batch.*\(N, 3072\)"):
        load_cifar10(cifar10_files.folder, split="test")


def test_float_data_is_refused(cifar10_files) -> None:
    dump_pickle(cifar10_files.folder / "test_batch", {b"data": np.zeros((3, 3072)), b"labels": [0, 1, 2]})
    with pytest.raises(DataFormatError, match="test_batch.*uint8"):
        load_cifar10(cifar10_files.folder, split="test")


def test_label_count_mismatch(cifar10_files) -> None:
    dump_pickle(cifar10_files.folder / "test_batch", {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataFormatError, match="test_batch.*3 integer labels"):
        load_cifar10(cifar10_files.folder, split="test")


def test_label_out_of_range(cifar10_files) -> None:
    dump_pickle(cifar10_files.folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    with pytest.raises(DataFormatError, match=r"test_batch.*\[0, 9\]"):
        load_cifar10(cifar10_files.folder, split="test")


def test_pickle_of_a_list_is_refused(cifar10_files) -> None:
    dump_pickle(cifar10_files.folder / "test_batch", [1, 2, 3])
    with pytest.raises(DataFormatError, match="test_batch.*not a dict"):
        load_cifar10(cifar10_files.folder, split="test")


def test_meta_with_wrong_number_of_names(cifar10_files) -> None:
    dump_pickle(cifar10_files.folder / "batches.meta", {b"label_names": [b"a", b"b"]})
    with pytest.raises(DataFormatError, match="batches.meta.*10 class names"):
        load_cifar10(cifar10_files.folder, split="test")


def test_cifar100_fine_labels(cifar100_files) -> None:
    ds = load_cifar100(cifar100_files.folder)
    assert ds.name == "cifar100" and ds.num_classes == 100 and len(ds) == 6
    assert torch.equal(ds.tensors()[0], _as_float(cifar100_files.train_images))
    assert ds.labels.tolist() == cifar100_files.train_fine.tolist()
    assert ds.class_names[:2] == ("fine_00", "fine_01")


def test_cifar100_coarse_labels_on_test_split(cifar100_files) -> None:
    ds = load_cifar100(cifar100_files.root, split="test", label_type="coarse")
    assert ds.num_classes == 20 and ds.class_names[19] == "coarse_19"
    assert ds.labels.tolist() == cifar100_files.test_coarse.tolist()
    assert torch.equal(ds.tensors()[0], _as_float(cifar100_files.test_images))


def test_cifar100_all_split(cifar100_files) -> None:
    ds = load_cifar100(cifar100_files.folder, split="all")
    assert ds.labels.tolist() == cifar100_files.train_fine.tolist() + cifar100_files.test_fine.tolist()


def test_cifar100_missing_coarse_labels(cifar100_files) -> None:
    dump_pickle(cifar100_files.folder / "test", {b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [3]})
    with pytest.raises(DataFormatError, match="missing key b'coarse_labels'"):
        load_cifar100(cifar100_files.folder, split="test", label_type="coarse")


def test_cifar100_bad_label_type(cifar100_files) -> None:
    with pytest.raises(UnknownNameError, match="'label_type'"):
        load_cifar100(cifar100_files.folder, label_type="medium")


def test_bad_split_name(cifar10_files) -> None:
    with pytest.raises(UnknownNameError, match="'split'.*'train'"):
        load_cifar10(cifar10_files.folder, split="validation")
