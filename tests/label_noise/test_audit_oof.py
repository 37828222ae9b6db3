"""K-fold out-of-sample pred_probs: every example is predicted by a model that never saw it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.data import Dataset, stratified_kfold
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    ModelOutputError,
    UnknownNameError,
)
from robustlab.label_noise import cross_val_outputs, cross_val_pred_probs
from robustlab.models import ModelConfig
from robustlab.training import TrainConfig


class Memoriser:
    """Predicts the stored label (probability 1) of inputs it was fitted on, uniform otherwise."""

    def __init__(self, num_classes: int = 3) -> None:
        self.num_classes = num_classes

    def get_params(self, deep: bool = True) -> dict:
        return {"num_classes": self.num_classes}

    def set_params(self, **params) -> Memoriser:
        self.__dict__.update(params)
        return self

    def fit(self, x, y):
        self.table_ = {row.tobytes(): int(label) for row, label in zip(x, y)}
        self.classes_ = np.arange(self.num_classes)
        return self

    def predict_proba(self, x):
        out = np.full((len(x), self.num_classes), 1.0 / self.num_classes)
        for i, row in enumerate(x):
            label = self.table_.get(row.tobytes())
            if label is not None:
                out[i] = np.eye(self.num_classes)[label]
        return out


class DropsLastClass(Memoriser):
    """Claims to know only classes 0..K-2 (``classes_`` misses the last one)."""

    def fit(self, x, y):
        self.classes_ = np.arange(self.num_classes - 1)
        return self

    def predict_proba(self, x):
        p = np.zeros((len(x), self.num_classes - 1))
        p[:, 0] = 0.5
        p[:, 1:] = 0.5 / max(1, self.num_classes - 2)
        return p


def _random_dataset(n: int = 60, k: int = 3, d: int = 5, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g)
    y = torch.arange(n) % k
    return Dataset(x, y)


def test_memorising_estimator_never_sees_the_examples_it_predicts():
    ds = _random_dataset()
    p = cross_val_pred_probs(ds, Memoriser(), n_splits=4, seed=0)
    assert p.shape == (60, 3) and p.dtype == np.float64
    # Had any example been in its own fold's training part, its row would be one-hot.
    np.testing.assert_allclose(p, 1.0 / 3)
    # Sanity check of the check: fitted on everything, the memoriser is exact.
    x = ds.tensors()[0].numpy()
    assert (Memoriser().fit(x, ds.labels.numpy()).predict_proba(x).argmax(1) == ds.labels.numpy()).all()


def test_folds_are_the_stratified_kfold_test_parts():
    ds = _random_dataset()
    out = cross_val_outputs(ds, Memoriser(), n_splits=5, seed=3)
    assert out.features is None
    for fold, (_, test_idx) in enumerate(stratified_kfold(ds, n_splits=5, seed=3)):
        assert (out.fold[test_idx.numpy()] == fold).all()


def test_missing_class_column_is_zero_and_rows_renormalised():
    ds = _random_dataset(k=4, n=40)
    p = cross_val_pred_probs(ds, DropsLastClass(num_classes=4), n_splits=2, seed=0)
    np.testing.assert_allclose(p[:, 3], 0.0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[:, 0], 0.5)


def _tiny_mlp(ds: Dataset) -> ModelConfig:
    return ModelConfig("mlp", ds.input_shape, ds.num_classes, params={"hidden_sizes": [64]})


def test_torch_model_is_out_of_sample_and_deterministic():
    # Random labels: a network memorises them in-sample but cannot predict them out of sample.
    ds = _random_dataset(n=60, k=3, d=20)
    ds = ds.with_labels(torch.randperm(60, generator=torch.Generator().manual_seed(1)) % 3)
    config = TrainConfig(epochs=60, batch_size=64, optimizer="adamw", lr=3e-2, weight_decay=0.0,
                         schedule="constant")
    out = cross_val_outputs(ds, _tiny_mlp(ds), n_splits=3, seed=0, train_config=config)
    p = out.pred_probs
    assert p.shape == (60, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert out.features is not None and out.features.shape == (60, 64)
    from robustlab.label_noise.detectors import train_with_records

    in_sample = train_with_records(ds, _tiny_mlp(ds), seed=0, train_config=config).records
    assert float(in_sample.correct[-1].float().mean()) > 0.9  # it can memorise them...
    assert (p.argmax(1) == ds.labels.numpy()).mean() < 0.6  # ...but never predicted one it saw
    again = cross_val_pred_probs(ds, _tiny_mlp(ds), n_splits=3, seed=0, train_config=config)
    np.testing.assert_array_equal(again, p)


def test_sklearn_estimator_random_state_follows_seed():
    from sklearn.ensemble import RandomForestClassifier

    ds = _random_dataset(n=60)
    a = cross_val_pred_probs(ds, RandomForestClassifier(n_estimators=5), n_splits=3, seed=0)
    b = cross_val_pred_probs(ds, RandomForestClassifier(n_estimators=5), n_splits=3, seed=0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.sum(axis=1), 1.0)


def test_bad_input_one_line_errors():
    ds = _random_dataset(n=12, k=3)  # 4 per class
    with pytest.raises(InvalidParameterError, match=r"'n_splits'.*smallest class \(4 of class '0'\)"):
        cross_val_pred_probs(ds, Memoriser(), n_splits=5, seed=0)
    with pytest.raises(UnknownNameError, match="'model'.*'mlp'"):
        cross_val_pred_probs(ds, "no-such-net", seed=0)
    with pytest.raises(InvalidTypeError, match="'model'"):
        cross_val_pred_probs(ds, object(), seed=0)
    with pytest.raises(InvalidParameterError, match="'model'.*ModelConfig for the data"):
        cross_val_pred_probs(ds, ModelConfig("mlp", (7,), 3), seed=0)
    with pytest.raises(InvalidTypeError, match="'data'"):
        cross_val_pred_probs(np.zeros((4, 2)), Memoriser(), seed=0)
    with pytest.raises(InvalidTypeError, match="'train_config'"):
        cross_val_pred_probs(ds, "mlp", seed=0, train_config={"epochs": 1})

    class BadShape(Memoriser):
        def predict_proba(self, x):
            return np.ones((len(x), 2))

    with pytest.raises(ModelOutputError, match="predict_proba of shape"):
        cross_val_pred_probs(ds, BadShape(), n_splits=2, seed=0)
    for err in (InvalidParameterError, UnknownNameError):
        try:
            cross_val_pred_probs(ds, "no-such-net" if err is UnknownNameError else Memoriser(),
                                 n_splits=5, seed=0)
        except err as exc:
            assert "\n" not in str(exc)
