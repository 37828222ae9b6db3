"""load_dataset / detect_format: dispatch by name or on-disk layout, splits, options, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.data import detect_format, has_test_split, load_dataset
from robustlab.errors import DataFormatError, DataNotFoundError, InvalidParameterError, UnknownNameError


def test_builtin_train_and_test_partition_the_data() -> None:
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    everything = load_dataset("digits")
    assert len(everything) == 1797 and len(test) == 360 and len(train) + len(test) == 1797
    assert torch.equal(train.class_counts() + test.class_counts(), everything.class_counts())
    rows = torch.cat([train.tensors()[0], test.tensors()[0]]).flatten(1)
    assert len(torch.unique(rows, dim=0)) == len(torch.unique(everything.tensors()[0].flatten(1), dim=0))


def test_builtin_split_is_deterministic_and_forwards_options() -> None:
    a = load_dataset("synthetic", split="test", num_examples=100, seed=3)
    b = load_dataset("synthetic", split="test", num_examples=100, seed=3)
    assert len(a) == 20 and torch.equal(a.tensors()[0], b.tensors()[0])
    raw = load_dataset("wine", split="all", scale=False)
    assert float(raw.tensors()[0].max()) > 1000


def test_cifar10_folder(cifar10_files) -> None:
    assert detect_format(cifar10_files.root) == "cifar10" == detect_format(cifar10_files.folder)
    test = load_dataset(cifar10_files.root, split="test")
    assert test.name == "cifar10" and test.labels.tolist() == cifar10_files.test_labels.tolist()
    assert len(load_dataset(str(cifar10_files.folder), split="train")) == 20
    assert len(load_dataset(cifar10_files.folder)) == 23  # default: everything


def test_cifar100_folder_with_options(cifar100_files) -> None:
    assert detect_format(cifar100_files.root) == "cifar100"
    ds = load_dataset(cifar100_files.folder, split="train", label_type="coarse")
    assert ds.num_classes == 20 and ds.labels.tolist() == cifar100_files.train_coarse.tolist()


def test_mnist_folder(tmp_path, write_mnist) -> None:
    files = write_mnist(tmp_path / "mnist", gz=True)
    assert detect_format(files.folder) == "mnist"
    assert load_dataset(files.folder, split="test").labels.tolist() == files.test_labels.tolist()


def test_image_folder(tmp_path, write_images) -> None:
    rng = np.random.default_rng(0)
    write_images(tmp_path / "imgs", {c: [rng.integers(0, 256, (3, 3, 3), dtype=np.uint8) for _ in range(5)]
                                     for c in ("a", "b")})
    assert detect_format(tmp_path / "imgs") == "image-folder"
    assert len(load_dataset(tmp_path / "imgs", split="train")) == 8 and len(load_dataset(tmp_path / "imgs")) == 10
    assert load_dataset(tmp_path / "imgs", size=(2, 2)).input_shape == (3, 2, 2)


def test_npz_and_csv_files(tmp_path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3)), y=np.arange(10) % 2)
    (tmp_path / "t.csv").write_text("f,target\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    assert detect_format(tmp_path / "d.npz") == "npz" and detect_format(tmp_path / "t.csv") == "csv"
    assert len(load_dataset(tmp_path / "d.npz", split="test")) == 2
    ds = load_dataset(tmp_path / "t.csv", label_column="target")
    assert ds.labels.tolist() == [i % 2 for i in range(10)]


def test_explicit_format_for_an_unusual_suffix(tmp_path) -> None:
    (tmp_path / "data.txt").write_text("x,label\n1,0\n2,1\n")
    with pytest.raises(DataFormatError, match="data.txt.*unrecognised file type '.txt'"):
        load_dataset(tmp_path / "data.txt")
    assert len(load_dataset(tmp_path / "data.txt", format="csv")) == 2


def test_unknown_option_names_it_and_the_valid_ones(tmp_path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3)), y=np.arange(4) % 2)
    with pytest.raises(UnknownNameError, match="'layout'.*Got 'label_column'") as info:
        load_dataset(tmp_path / "d.npz", label_column="y")
    assert "\n" not in str(info.value)


def test_unknown_name_lists_builtins() -> None:
    with pytest.raises(UnknownNameError, match="'name_or_path'.*'digits'.*Got 'cifar11'"):
        load_dataset("cifar11")


def test_missing_path_names_it_and_its_folder(tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match=f"nothing named 'gone.npz' in '{tmp_path}'"):
        load_dataset(tmp_path / "gone.npz")
    with pytest.raises(DataNotFoundError, match="'absent'"):
        load_dataset(str(tmp_path / "absent"))


def test_folder_in_no_known_layout(tmp_path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "readme.md").write_text("hi")
    with pytest.raises(DataFormatError, match="stuff.*none of these layouts"):
        detect_format(tmp_path / "stuff")


def test_bad_split_and_format_names(tmp_path) -> None:
    with pytest.raises(UnknownNameError, match="'split'"):
        load_dataset("digits", split="val")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3)), y=np.arange(4) % 2)
    with pytest.raises(UnknownNameError, match="'format'"):
        load_dataset(tmp_path / "d.npz", format="parquet")
    with pytest.raises(InvalidParameterError, match="'format'"):
        load_dataset("digits", format="csv")


def test_holdout_needs_two_examples_per_class(tmp_path) -> None:
    (tmp_path / "tiny.csv").write_text("x,label\n1,a\n2,a\n3,b\n")
    with pytest.raises(InvalidParameterError, match="1 example.*'b'"):
        load_dataset(tmp_path / "tiny.csv", split="train")
    assert len(load_dataset(tmp_path / "tiny.csv")) == 3


def test_has_test_split(tmp_path, cifar10_files, write_mnist, write_images) -> None:
    assert not has_test_split("digits")
    assert has_test_split(cifar10_files.root)
    assert has_test_split(write_mnist(tmp_path / "m").folder)
    np.savez(tmp_path / "one.npz", x=np.zeros((4, 3)), y=np.arange(4) % 2)
    np.savez(tmp_path / "two.npz", x_train=np.zeros((4, 3)), y_train=np.arange(4) % 2,
             x_test=np.zeros((2, 3)), y_test=np.arange(2))
    assert not has_test_split(tmp_path / "one.npz") and has_test_split(tmp_path / "two.npz")
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    write_images(tmp_path / "flat", {"a": [image], "b": [image]})
    write_images(tmp_path / "split" / "train", {"a": [image]})
    write_images(tmp_path / "split" / "val", {"a": [image]})
    assert not has_test_split(tmp_path / "flat") and has_test_split(tmp_path / "split")
    (tmp_path / "t.csv").write_text("x,label\n1,0\n")
    assert not has_test_split(tmp_path / "t.csv")
