"""The Dataset container: batching, subsets, label replacement, input sources and validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustlab.data import ArraySource, Dataset, TensorSource
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError


def _toy(n: int = 10, k: int = 3) -> Dataset:
    inputs = torch.arange(n * 4, dtype=torch.float32).reshape(n, 4) / (n * 4)
    return Dataset(inputs, torch.arange(n) % k, name="toy")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 80), batch_size=st.integers(1, 90), shuffle=st.booleans(), seed=st.integers(0, 2**31))
def test_batches_cover_every_index_exactly_once(n: int, batch_size: int, shuffle: bool, seed: int) -> None:
    ds = _toy(n)
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    batches = list(ds.batches(batch_size, shuffle=shuffle, generator=gen))
    seen = torch.cat([b.indices for b in batches])
    assert sorted(seen.tolist()) == list(range(n))
    assert [len(b.indices) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    assert len(batches) == ds.num_batches(batch_size)
    x_all, y_all = ds.tensors()
    for b in batches:
        assert torch.equal(b.inputs, x_all[b.indices])
        assert torch.equal(b.labels, y_all[b.indices])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 50), batch_size=st.integers(1, 60))
def test_drop_last_yields_only_full_batches(n: int, batch_size: int) -> None:
    ds = _toy(n)
    batches = list(ds.batches(batch_size, drop_last=True))
    assert len(batches) == n // batch_size == ds.num_batches(batch_size, drop_last=True)
    assert all(len(b.indices) == batch_size for b in batches)


def test_shuffle_is_deterministic_per_generator_seed() -> None:
    ds = _toy(50)

    def order(seed: int) -> list[int]:
        return torch.cat([b.indices for b in ds.batches(7, shuffle=True,
                                                         generator=torch.Generator().manual_seed(seed))]).tolist()

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert order(3) != list(range(50))


def test_shuffle_without_generator_is_refused() -> None:
    with pytest.raises(InvalidTypeError, match="'generator'"):
        next(_toy().batches(4, shuffle=True))


def test_subset_of_subset_maps_to_original_indices() -> None:
    ds = _toy(10)
    inner = ds.subset([5, 3, 8, 1]).subset([2, 0])
    x, y = inner.tensors()
    x_ref, y_ref = ds.load([8, 5])
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    assert len(inner) == 2 and inner.class_names == ds.class_names


def test_subset_shares_storage_and_keeps_metadata() -> None:
    ds = _toy(10)
    sub = ds.subset(torch.tensor([1, 2]), name="part")
    assert sub.source.base is ds.source  # a view, not a copy of the inputs
    assert sub.name == "part" and sub.kind == ds.kind and sub.num_classes == ds.num_classes


def test_boolean_mask_selects_true_positions() -> None:
    ds = _toy(6)
    mask = torch.tensor([True, False, False, True, True, False])
    x, y = ds.load(mask)
    x_ref, y_ref = ds.load([0, 3, 4])
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    assert len(ds.subset(mask)) == 3


def test_boolean_mask_of_wrong_length_is_refused() -> None:
    with pytest.raises(ShapeError, match="'indices'"):
        _toy(6).load(torch.tensor([True, False]))


@pytest.mark.parametrize("indices, error", [([0, 10], InvalidParameterError), ([-11], InvalidParameterError),
                                            (torch.tensor([0.0, 1.0]), InvalidTypeError)])
def test_bad_indices_are_refused(indices, error) -> None:
    with pytest.raises(error, match="'indices'"):
        _toy(10).load(indices)


def test_negative_indices_count_from_the_end() -> None:
    ds = _toy(10)
    assert torch.equal(ds.load([-1])[0], ds.load([9])[0])


def test_with_labels_does_not_mutate_the_original() -> None:
    ds = _toy(6)
    before = ds.labels
    new = ds.with_labels(torch.tensor([2, 2, 2, 0, 0, 0]))
    assert torch.equal(ds.labels, before)
    assert new.labels.tolist() == [2, 2, 2, 0, 0, 0]
    assert torch.equal(new.tensors()[0], ds.tensors()[0])


def test_labels_property_is_a_copy() -> None:
    ds = _toy(6)
    labels = ds.labels
    labels[:] = 0
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_with_labels_validates_against_num_classes() -> None:
    with pytest.raises(InvalidParameterError, match="'labels'"):
        _toy(6).with_labels(torch.tensor([0, 1, 2, 3, 0, 0]))


def test_uint8_array_source_matches_division_by_255() -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(9, 3, 4, 5), dtype=np.uint8)
    ds = Dataset(x, np.zeros(9, dtype=np.int64))
    loaded = ds.tensors()[0]
    assert loaded.dtype == torch.float32
    assert torch.equal(loaded, torch.from_numpy(x.astype(np.float32) / np.float32(255)))
    assert float(loaded.max()) <= 1.0 and ds.kind == "image"


def test_unsorted_indices_on_array_source_keep_their_order() -> None:
    x = np.arange(5 * 2, dtype=np.uint8).reshape(5, 2)
    ds = Dataset(ArraySource(x), torch.zeros(5, dtype=torch.int64), kind="tabular")
    assert torch.equal(ds.load([4, 0, 2])[0], torch.from_numpy(x[[4, 0, 2]]).float() / 255)


def test_channels_last_source_is_transposed_per_batch() -> None:
    x = np.random.default_rng(1).integers(0, 256, size=(4, 6, 5, 3), dtype=np.uint8)  # N, H, W, C
    ds = Dataset(ArraySource(x, channels_last=True), torch.zeros(4, dtype=torch.int64))
    assert ds.input_shape == (3, 6, 5)
    loaded = ds.load([2, 1])[0]
    assert loaded.shape == (2, 3, 6, 5)
    assert float(loaded[0, 2, 4, 1]) == pytest.approx(x[2, 4, 1, 2] / 255)
    assert torch.equal(loaded, torch.from_numpy(x[[2, 1]].transpose(0, 3, 1, 2).astype(np.float32) / 255))


def test_channels_last_needs_four_dimensions() -> None:
    with pytest.raises(ShapeError, match="'inputs'"):
        ArraySource(np.zeros((4, 6, 5), dtype=np.uint8), channels_last=True)


def test_uint8_tensor_inputs_are_scaled() -> None:
    ds = Dataset(torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), torch.tensor([0, 1]))
    assert float(ds.tensors()[0].min()) == 1.0


def test_class_counts_include_declared_empty_classes() -> None:
    ds = Dataset(torch.rand(4, 2), torch.tensor([0, 0, 2, 2]), class_names=["a", "b", "c", "d"])
    assert ds.class_counts().tolist() == [2, 0, 2, 0] and ds.num_classes == 4


def test_info_reports_storage_and_counts() -> None:
    info = _toy(6).info()
    assert info["class_counts"] == [2, 2, 2] and info["storage"] == "TensorSource" and info["num_examples"] == 6


# ------------------------------------------------------------------ validation
def test_float_labels_are_refused() -> None:
    with pytest.raises(InvalidTypeError, match="'labels'.*not float"):
        Dataset(torch.rand(3, 2), torch.tensor([0.0, 1.0, 1.0]))


def test_labels_out_of_range_of_class_names() -> None:
    with pytest.raises(InvalidParameterError, match=r"'labels'.*\[0, 1\]"):
        Dataset(torch.rand(3, 2), torch.tensor([0, 1, 2]), class_names=["a", "b"])


def test_negative_labels_are_refused() -> None:
    with pytest.raises(InvalidParameterError, match="'labels'"):
        Dataset(torch.rand(3, 2), torch.tensor([0, -1, 1]))


def test_labels_of_wrong_length() -> None:
    with pytest.raises(ShapeError, match="'labels'.*3 entries"):
        Dataset(torch.rand(3, 2), torch.tensor([0, 1]))


def test_two_dimensional_labels_are_refused() -> None:
    with pytest.raises(ShapeError, match="'labels'"):
        Dataset(torch.rand(3, 2), torch.zeros(3, 1, dtype=torch.int64))


def test_nan_inputs_are_refused() -> None:
    x = torch.rand(3, 2)
    x[1, 1] = float("nan")
    with pytest.raises(InvalidParameterError, match="'inputs'.*1 NaN"):
        Dataset(x, torch.tensor([0, 1, 0]))


def test_images_outside_unit_interval_are_refused() -> None:
    with pytest.raises(InvalidParameterError, match=r"'inputs'.*\[0, 1\]"):
        Dataset(torch.rand(3, 1, 2, 2) * 2, torch.tensor([0, 1, 0]))


def test_tabular_inputs_may_leave_unit_interval() -> None:
    ds = Dataset(torch.rand(3, 2) * 100 - 50, torch.tensor([0, 1, 0]))
    assert ds.kind == "tabular"


@pytest.mark.parametrize("shape", [(3,), (3, 2, 2), (3, 1, 2, 2, 2)])
def test_inputs_of_wrong_rank_are_refused(shape) -> None:
    with pytest.raises(ShapeError, match="'inputs'"):
        Dataset(torch.rand(*shape), torch.tensor([0, 1, 0]))


def test_integer_tensor_inputs_are_refused() -> None:
    with pytest.raises(InvalidTypeError, match="'inputs'"):
        Dataset(torch.zeros(3, 2, dtype=torch.int64), torch.tensor([0, 1, 0]))


def test_duplicate_class_names_are_refused() -> None:
    with pytest.raises(InvalidParameterError, match="'class_names'"):
        Dataset(torch.rand(2, 2), torch.tensor([0, 1]), class_names=["a", "a"])


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="'kind'"):
        Dataset(torch.rand(2, 2), torch.tensor([0, 1]), kind="audio")


def test_tensor_source_reports_shape() -> None:
    source = TensorSource(torch.rand(5, 3, 2, 2))
    assert len(source) == 5 and source.example_shape == (3, 2, 2)
