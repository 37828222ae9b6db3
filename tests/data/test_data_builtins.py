"""Built-in datasets: digits, tabular sets, the synthetic Gaussian mixture and the name registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.datasets
import torch
from scipy.stats import norm

from robustlab.data import (
    builtin_names,
    load_breast_cancer,
    load_builtin,
    load_digits,
    load_wine,
    make_synthetic,
    tabular_scaling,
)
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError, UnknownNameError


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_digits_shape_range_and_classes(digits) -> None:
    x, y = digits.tensors()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert digits.num_classes == 10 and digits.class_names == tuple(str(i) for i in range(10))
    assert digits.name == "digits" and digits.kind == "image"


def test_digits_pixels_are_sklearn_counts_over_16(digits) -> None:
    bunch = sklearn.datasets.load_digits()
    x, y = digits.tensors()
    np.testing.assert_array_equal(x.numpy()[:, 0], (bunch.images / 16).astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), bunch.target)


def test_builtin_names_and_lookup(digits) -> None:
    assert builtin_names() == ["breast-cancer", "digits", "synthetic", "wine"]
    assert torch.equal(load_builtin("digits").labels, digits.labels)


def test_unknown_builtin_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="'digits'.*Got 'digitz'"):
        load_builtin("digitz")


def test_unknown_option_is_a_one_line_error() -> None:
    with pytest.raises(UnknownNameError, match="'scale'") as info:
        load_builtin("digits", scale=True)
    assert "\n" not in str(info.value)


def test_wine_is_min_max_scaled_per_feature() -> None:
    ds = load_wine()
    x, _ = ds.tensors()
    assert x.shape == (178, 13) and ds.kind == "tabular" and ds.num_classes == 3
    torch.testing.assert_close(x.min(dim=0).values, torch.zeros(13))
    torch.testing.assert_close(x.max(dim=0).values, torch.ones(13))
    assert ds.class_names == ("class_0", "class_1", "class_2")


def test_raw_tabular_values_and_scaling_round_trip() -> None:
    raw = sklearn.datasets.load_wine().data
    unscaled = load_wine(scale=False).tensors()[0]
    np.testing.assert_array_equal(unscaled.numpy(), raw.astype(np.float32))
    scaling = tabular_scaling("wine")
    assert scaling.feature_names[0] == "alcohol"
    back = scaling.inverse_transform(load_wine().tensors()[0].double())
    np.testing.assert_allclose(back.numpy(), raw, rtol=1e-6)
    torch.testing.assert_close(scaling.transform(torch.from_numpy(raw)), load_wine().tensors()[0].double(),
                               atol=1e-6, rtol=0)


def test_scaling_checks_feature_count() -> None:
    with pytest.raises(ShapeError, match="13 features"):
        tabular_scaling("wine").transform(torch.zeros(2, 5))


def test_breast_cancer_shape_and_names() -> None:
    ds = load_breast_cancer()
    assert ds.input_shape == (30,) and len(ds) == 569 and ds.class_names == ("malignant", "benign")
    assert load_builtin("breast-cancer", scale=False).tensors()[0].max() > 1000


# ------------------------------------------------------------------ synthetic
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_synthetic_same_seed_same_data_different_seed_different() -> None:
    a = make_synthetic(300, generator=_gen(1))
    b = make_synthetic(300, generator=_gen(1))
    c = make_synthetic(300, generator=_gen(2))
    assert torch.equal(a.dataset.tensors()[0], b.dataset.tensors()[0])
    assert torch.equal(a.dataset.labels, b.dataset.labels) and torch.equal(a.means, b.means)
    assert not torch.equal(a.dataset.tensors()[0], c.dataset.tensors()[0])
    assert not torch.equal(a.means, c.means)


@pytest.mark.parametrize("num_classes, dim", [(2, 1), (3, 8), (6, 5)])
def test_synthetic_means_are_equidistant_and_classes_balanced(num_classes: int, dim: int) -> None:
    task = make_synthetic(60, num_classes=num_classes, dim=dim, separation=2.5, generator=_gen(0))
    dist = torch.cdist(task.means.double(), task.means.double())
    off_diagonal = dist[~torch.eye(num_classes, dtype=torch.bool)]
    torch.testing.assert_close(off_diagonal, torch.full_like(off_diagonal, 2.5), atol=1e-5, rtol=0)
    counts = task.dataset.class_counts()
    assert int(counts.max() - counts.min()) <= 1
    assert task.dataset.input_shape == (dim,) and task.dataset.kind == "tabular"


def test_synthetic_noise_has_the_stated_std() -> None:
    task = make_synthetic(20000, dim=4, std=0.7, generator=_gen(5))
    x, y = task.dataset.tensors()
    residual = x - task.means[y]
    assert float(residual.std()) == pytest.approx(0.7, rel=0.02)


def test_two_class_bayes_accuracy_matches_closed_form() -> None:
    task = make_synthetic(10, num_classes=2, dim=3, separation=2.0, std=1.5, generator=_gen(0))
    assert task.bayes_accuracy == pytest.approx(norm.cdf(2.0 / (2 * 1.5)), abs=1e-9)


def test_bayes_accuracy_grows_with_separation() -> None:
    accs = [make_synthetic(10, separation=s, generator=_gen(0)).bayes_accuracy for s in (1.0, 2.0, 4.0)]
    assert 1 / 3 < accs[0] < accs[1] < accs[2] < 1


@pytest.mark.parametrize("num_classes, dim, separation", [(3, 8, 3.0), (5, 4, 2.5)])
def test_bayes_predict_reaches_the_stated_bayes_accuracy(num_classes: int, dim: int, separation: float) -> None:
    task = make_synthetic(10, num_classes=num_classes, dim=dim, separation=separation, generator=_gen(7))
    x, y = task.sample(100_000, generator=_gen(8)).tensors()
    acc = float((task.bayes_predict(x) == y).double().mean())
    se = math.sqrt(task.bayes_accuracy * (1 - task.bayes_accuracy) / len(y))
    assert abs(acc - task.bayes_accuracy) < 4.5 * se


def test_fitted_nearest_mean_classifier_approaches_bayes_accuracy() -> None:
    task = make_synthetic(3000, num_classes=4, dim=6, separation=3.0, generator=_gen(11))
    x_train, y_train = task.dataset.tensors()
    fitted = torch.stack([x_train[y_train == k].mean(dim=0) for k in range(4)])
    x_test, y_test = task.sample(30_000, generator=_gen(12)).tensors()
    acc = float((torch.cdist(x_test, fitted).argmin(dim=1) == y_test).double().mean())
    assert task.bayes_accuracy - 0.02 < acc < task.bayes_accuracy + 0.01


def test_sample_draws_new_points_from_the_same_means() -> None:
    task = make_synthetic(50, generator=_gen(0))
    fresh = task.sample(50, generator=_gen(99))
    assert not torch.equal(fresh.tensors()[0], task.dataset.tensors()[0])
    assert fresh.num_classes == task.dataset.num_classes


def test_bayes_predict_checks_dimension() -> None:
    task = make_synthetic(10, dim=4, generator=_gen(0))
    with pytest.raises(ShapeError, match="4 features"):
        task.bayes_predict(torch.zeros(2, 3))


def test_synthetic_by_name_uses_its_seed() -> None:
    a, b = load_builtin("synthetic", seed=1), load_builtin("synthetic", seed=1)
    c = load_builtin("synthetic", seed=2, num_examples=1000)
    assert torch.equal(a.tensors()[0], b.tensors()[0]) and not torch.equal(a.tensors()[0], c.tensors()[0])
    assert len(load_builtin("synthetic", num_examples=40, num_classes=4, dim=3)) == 40


@pytest.mark.parametrize("kwargs, error, name", [
    ({"num_classes": 5, "dim": 3}, InvalidParameterError, "'dim'"),
    ({"num_classes": 1}, InvalidParameterError, "'num_classes'"),
    ({"separation": 0.0}, InvalidParameterError, "'separation'"),
    ({"std": -1.0}, InvalidParameterError, "'std'"),
    ({"num_examples": 0}, InvalidParameterError, "'num_examples'"),
])
def test_synthetic_bad_parameters(kwargs, error, name) -> None:
    params = {"num_examples": 10, "generator": _gen(0)} | kwargs
    with pytest.raises(error, match=name):
        make_synthetic(**params)


def test_synthetic_requires_a_generator() -> None:
    with pytest.raises(InvalidTypeError, match="'generator'"):
        make_synthetic(10, generator=None)
    with pytest.raises(InvalidTypeError, match="'generator'"):
        make_synthetic(10, generator=_gen(0)).sample(5, generator=None)
