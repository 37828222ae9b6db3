"""train_test_split and stratified_kfold: sizes, stratification, determinism and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.model_selection
import torch

from robustlab.data import Dataset, stratified_kfold, train_test_split
from robustlab.errors import InvalidParameterError, InvalidTypeError


def _ds(labels, class_names=None) -> Dataset:
    labels = torch.as_tensor(labels)
    # Input row i holds i, so a split's inputs tell which examples it took.
    inputs = torch.arange(len(labels), dtype=torch.float32)[:, None].repeat(1, 2)
    return Dataset(inputs, labels, class_names=class_names)


def _ids(ds: Dataset) -> list[int]:
    return ds.tensors()[0][:, 0].long().tolist()


def test_split_partitions_the_examples() -> None:
    ds = _ds(torch.arange(100) % 4)
    train, test = train_test_split(ds, test_size=0.25, seed=0)
    assert len(train) == 75 and len(test) == 25
    assert sorted(_ids(train) + _ids(test)) == list(range(100))


def test_split_keeps_class_proportions() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    train, test = train_test_split(_ds(labels), test_size=0.2, seed=3)
    assert test.class_counts().tolist() == [12, 6, 2]
    assert train.class_counts().tolist() == [48, 24, 8]


def test_split_matches_sklearn_on_indices() -> None:
    labels = np.random.default_rng(0).integers(0, 3, size=40)
    train, test = train_test_split(_ds(labels), test_size=0.3, seed=5)
    ref_train, ref_test = sklearn.model_selection.train_test_split(
        np.arange(40), test_size=12, random_state=5, stratify=labels)
    assert _ids(train) == sorted(ref_train.tolist()) and _ids(test) == sorted(ref_test.tolist())


def test_split_is_deterministic_per_seed() -> None:
    ds = _ds(torch.arange(60) % 3)
    assert _ids(train_test_split(ds, test_size=0.2, seed=1)[1]) == _ids(train_test_split(ds, test_size=0.2, seed=1)[1])
    assert _ids(train_test_split(ds, test_size=0.2, seed=1)[1]) != _ids(train_test_split(ds, test_size=0.2, seed=2)[1])


def test_integer_test_size_is_a_count() -> None:
    train, test = train_test_split(_ds(torch.arange(30) % 3), test_size=6, seed=0)
    assert len(test) == 6 and len(train) == 24


def test_split_keeps_metadata_and_shares_storage() -> None:
    ds = Dataset(torch.rand(20, 3), torch.arange(20) % 2, class_names=["no", "yes"], name="toy")
    train, test = train_test_split(ds, test_size=0.5, seed=0)
    assert train.class_names == ("no", "yes") and test.name == "toy"
    assert train.source.base is ds.source


def test_class_with_one_example_names_the_class() -> None:
    ds = _ds([0, 0, 0, 1, 1, 1, 2], class_names=["a", "b", "rare"])
    with pytest.raises(InvalidParameterError, match="1 example.*'rare'"):
        train_test_split(ds, test_size=0.3, seed=0)


def test_declared_class_without_examples_names_the_class() -> None:
    ds = _ds([0, 0, 0, 1, 1, 1], class_names=["a", "b", "empty"])
    with pytest.raises(InvalidParameterError, match="0 example.*'empty'"):
        train_test_split(ds, test_size=0.5, seed=0)


def test_unstratified_split_accepts_rare_classes() -> None:
    train, test = train_test_split(_ds([0, 0, 0, 1, 1, 1, 2]), test_size=2, seed=0, stratify=False)
    assert len(test) == 2 and len(train) == 5


@pytest.mark.parametrize("test_size", [0.0, 1.0, 1.5, -0.1, 0, 10, 12, float("nan")])
def test_test_size_out_of_range(test_size) -> None:
    with pytest.raises(InvalidParameterError, match="'test_size'"):
        train_test_split(_ds(torch.arange(10) % 2), test_size=test_size, seed=0)


@pytest.mark.parametrize("test_size", [True, "0.2", None])
def test_test_size_of_wrong_type(test_size) -> None:
    with pytest.raises(InvalidTypeError, match="'test_size'"):
        train_test_split(_ds(torch.arange(10) % 2), test_size=test_size, seed=0)


def test_test_part_smaller_than_number_of_classes() -> None:
    with pytest.raises(InvalidParameterError, match="'test_size'.*number of classes \\(5\\)"):
        train_test_split(_ds(torch.arange(50) % 5), test_size=3, seed=0)


def test_bad_seed() -> None:
    with pytest.raises(InvalidParameterError, match="'seed'"):
        train_test_split(_ds(torch.arange(10) % 2), test_size=0.2, seed=-1)


def test_kfold_test_parts_partition_the_data_and_are_stratified() -> None:
    labels = torch.tensor([0] * 12 + [1] * 6 + [2] * 9)
    folds = list(stratified_kfold(_ds(labels), n_splits=3, seed=0))
    assert len(folds) == 3
    assert sorted(torch.cat([test for _, test in folds]).tolist()) == list(range(27))
    for train, test in folds:
        assert train.dtype == torch.int64 and not set(train.tolist()) & set(test.tolist())
        assert len(train) + len(test) == 27
        assert torch.bincount(labels[test], minlength=3).tolist() == [4, 2, 3]


def test_kfold_is_deterministic_per_seed() -> None:
    ds = _ds(torch.arange(30) % 3)
    first = [t.tolist() for _, t in stratified_kfold(ds, n_splits=5, seed=4)]
    assert first == [t.tolist() for _, t in stratified_kfold(ds, n_splits=5, seed=4)]
    assert first != [t.tolist() for _, t in stratified_kfold(ds, n_splits=5, seed=5)]


def test_kfold_small_class_fails_at_call_time() -> None:
    ds = _ds([0] * 10 + [1] * 2, class_names=["common", "rare"])
    with pytest.raises(InvalidParameterError, match="2 example.*'rare'"):
        stratified_kfold(ds, n_splits=3, seed=0)  # no iteration needed


@pytest.mark.parametrize("n_splits", [1, 0, 100])
def test_kfold_bad_number_of_splits(n_splits) -> None:
    with pytest.raises(InvalidParameterError, match="'n_splits'"):
        stratified_kfold(_ds(torch.arange(20) % 2), n_splits=n_splits, seed=0)


def test_stratified_halves_per_class_disjoint_sorted_and_seeded():
    from robustlab.data import stratified_halves

    labels = torch.tensor([0] * 7 + [1] * 4 + [2] * 1 + [0] * 2)
    first, second = stratified_halves(labels, generator=torch.Generator().manual_seed(3))
    assert sorted(first.tolist() + second.tolist()) == list(range(len(labels)))  # a partition
    for c, n in ((0, 9), (1, 4), (2, 1)):
        assert int((labels[first] == c).sum()) == n // 2 and int((labels[second] == c).sum()) == n - n // 2
    assert torch.equal(first, first.sort().values) and torch.equal(second, second.sort().values)
    again = stratified_halves(labels, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again[0])
    others = [stratified_halves(labels, generator=torch.Generator().manual_seed(s))[0] for s in range(4, 9)]
    assert any(not torch.equal(first, o) for o in others)
    empty = stratified_halves(torch.zeros(0, dtype=torch.long), generator=torch.Generator())
    assert empty[0].numel() == 0 and empty[1].numel() == 0
