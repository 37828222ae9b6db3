"""Tabular corruptions: noise std, missing-value rate and imputation, shuffles, categorical flips."""

from __future__ import annotations

import pytest
import torch

from robustlab.corruptions import (
    TABULAR_CORRUPTIONS,
    categorical_flip,
    corrupt_tabular,
    feature_shuffle,
    missing_values,
    tabular_gaussian_noise,
)
from robustlab.errors import InvalidParameterError, ShapeError, UnknownNameError


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    g = _g(123)
    scales = torch.tensor([0.1, 1.0, 5.0, 0.0])
    x = torch.randn(4000, 4, generator=g, dtype=torch.float64) * scales + torch.tensor([1.0, -2.0, 0.5, 3.0])
    return x


def test_noise_std_is_proportional_to_feature_std(table: torch.Tensor) -> None:
    y = tabular_gaussian_noise(table, scale=0.5, generator=_g())
    added = (y - table).std(dim=0, unbiased=False)
    feature = table.std(dim=0, unbiased=False)
    assert torch.allclose(added[:3] / feature[:3], torch.full((3,), 0.5, dtype=torch.float64), rtol=0.05)
    assert torch.equal(y[:, 3], table[:, 3]), "a constant feature must stay unchanged"
    # with a reference, its std is used instead of the batch's
    ref = table[:, :] * 2
    y2 = tabular_gaussian_noise(table[:500], scale=1.0, generator=_g(), reference=ref)
    ratio = (y2 - table[:500]).std(dim=0)[:3] / ref.std(dim=0, unbiased=False)[:3]
    assert torch.allclose(ratio, torch.ones(3, dtype=torch.float64), rtol=0.12)
    only = tabular_gaussian_noise(table, scale=1.0, generator=_g(), columns=[1])
    assert torch.equal(only[:, [0, 2, 3]], table[:, [0, 2, 3]]) and not torch.equal(only[:, 1], table[:, 1])


@pytest.mark.parametrize("imputation", ["mean", "median", "zero"])
def test_missing_values_rate_and_exact_imputation(table: torch.Tensor, imputation: str) -> None:
    ref = table[:1001] * 3 + 1
    y = missing_values(table, rate=0.3, generator=_g(), imputation=imputation, reference=ref)
    changed = y != table
    rate = float(changed[:, :3].double().mean())
    assert abs(rate - 0.3) < 0.015  # 12000 Bernoulli(0.3) draws: sd 0.004
    fill = {"mean": ref.mean(dim=0), "median": ref.median(dim=0).values,
            "zero": torch.zeros(4, dtype=table.dtype)}[imputation]
    for j in range(4):
        values = y[changed[:, j], j]
        assert torch.equal(values, fill[j].expand_as(values))


def test_missing_values_without_reference_use_the_observed_entries() -> None:
    x = torch.arange(20, dtype=torch.float64).reshape(10, 2)
    y = missing_values(x, rate=0.5, generator=_g(3), imputation="mean")
    missing = y != x
    # a filled value equal to the original would hide a missing entry; recompute the mask exactly
    # (the same uniform draws from the same generator state)
    torch_missing = torch.rand((10, 2), generator=_g(3)) < 0.5
    for j in range(2):
        observed = x[~torch_missing[:, j], j]
        assert torch.allclose(y[torch_missing[:, j], j], observed.mean().expand(int(torch_missing[:, j].sum())))
    assert missing.sum() <= torch_missing.sum()


def test_feature_shuffle_preserves_each_column_multiset(table: torch.Tensor) -> None:
    y = feature_shuffle(table, fraction=0.5, generator=_g())
    varied = table[:, :3]
    z = feature_shuffle(varied, fraction=0.67, generator=_g())  # round(0.67 * 3) = 2 columns
    assert sum(not torch.equal(z[:, j], varied[:, j]) for j in range(3)) == 2
    assert torch.equal((z == varied).all(dim=0).sum(), torch.tensor(1))
    for j in range(4):
        assert torch.equal(torch.sort(y[:, j]).values, torch.sort(table[:, j]).values)
    assert torch.equal(feature_shuffle(table, fraction=0.0, generator=_g()), table)
    everything = feature_shuffle(table[:, :3], fraction=1.0, generator=_g())
    assert all(not torch.equal(everything[:, j], table[:, j]) for j in range(3))


def test_categorical_flip_picks_another_valid_category() -> None:
    g = _g(5)
    cats = torch.randint(0, 4, (5000,), generator=g).double()
    x = torch.stack([torch.randn(5000, generator=g, dtype=torch.float64), cats * 10], 1)
    y = categorical_flip(x, rate=0.2, categorical=[1], generator=_g())
    assert torch.equal(y[:, 0], x[:, 0])
    flipped = y[:, 1] != x[:, 1]
    assert abs(float(flipped.double().mean()) - 0.2) < 0.02
    assert set(y[:, 1].unique().tolist()) <= {0.0, 10.0, 20.0, 30.0}
    # uniform over the other three categories
    new = y[flipped, 1]
    counts = torch.stack([(new == v).sum() for v in (0.0, 10.0, 20.0, 30.0)]).double()
    assert float(counts.min()) > 0.15 * float(counts.sum())
    explicit = categorical_flip(x, rate=1.0, categorical={1: [0, 10, 20, 30, 40]}, generator=_g())
    assert bool((explicit[:, 1] != x[:, 1]).all())


@pytest.mark.parametrize("name", TABULAR_CORRUPTIONS)
def test_corrupt_tabular_by_name(table: torch.Tensor, name: str) -> None:
    x = table.clone()
    x[:, 3] = torch.randint(0, 3, (len(x),), generator=_g(9)).double()
    kwargs = {"categorical": [3]}
    weak = corrupt_tabular(x, name, 1, generator=_g(), **kwargs)
    strong = corrupt_tabular(x, name, 5, generator=_g(), **kwargs)
    assert weak.shape == x.shape and weak.dtype == x.dtype
    assert torch.equal(weak, corrupt_tabular(x, name, 1, generator=_g(), **kwargs))
    d_weak, d_strong = float((weak != x).double().mean()), float((strong != x).double().mean())
    assert d_strong >= d_weak and d_strong > 0
    if name == "gaussian_noise":
        assert torch.equal(weak[:, 3], x[:, 3]), "categorical columns get no Gaussian noise"


def test_bad_input(table: torch.Tensor) -> None:
    with pytest.raises(UnknownNameError, match="missing_values"):
        corrupt_tabular(table, "blur", 1, generator=_g())
    with pytest.raises(InvalidParameterError, match="severity"):
        corrupt_tabular(table, "gaussian_noise", 6, generator=_g())
    with pytest.raises(InvalidParameterError, match="categorical"):
        corrupt_tabular(table, "categorical_flip", 1, generator=_g())
    with pytest.raises(ShapeError, match="N, D"):
        tabular_gaussian_noise(table[None], scale=1.0, generator=_g())
    with pytest.raises(ShapeError, match="reference"):
        tabular_gaussian_noise(table, scale=1.0, generator=_g(), reference=table[:, :2])
    with pytest.raises(InvalidParameterError, match="rate"):
        missing_values(table, rate=1.5, generator=_g())
    with pytest.raises(UnknownNameError, match="median"):
        missing_values(table, rate=0.1, generator=_g(), imputation="knn")
    with pytest.raises(InvalidParameterError, match="columns"):
        feature_shuffle(table, fraction=0.5, generator=_g(), columns=[0, 9])
