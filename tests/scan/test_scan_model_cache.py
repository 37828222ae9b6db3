"""scan.probe.ModelCache: results reused only for the same model (unchanged weights) and data."""

from __future__ import annotations

import pickle

import torch

from robustlab.data import Dataset
from robustlab.scan.probe import ModelCache


def test_hit_only_for_the_same_unchanged_model_and_data() -> None:
    model = torch.nn.Linear(2, 2)
    data = Dataset(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    cache, calls = ModelCache(), []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert cache.fetch("k", model, data, compute) == 1
    assert cache.fetch("k", model, data, compute) == 1  # hit
    assert cache.fetch("other", model, data, compute) == 2  # another key
    with torch.no_grad():
        model.weight.add_(1.0)  # in-place change: the stamp moves
    assert cache.fetch("k", model, data, compute) == 3
    assert cache.fetch("k", torch.nn.Linear(2, 2), data, compute) == 4  # another model
    assert cache.fetch("k", model, Dataset(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)), compute) == 5
    clone = pickle.loads(pickle.dumps(cache))
    assert type(clone) is ModelCache and clone == {} and len(cache) == 2


def test_values_for_objects_without_weak_references_are_not_kept() -> None:
    cache = ModelCache()
    data = Dataset(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))

    def predict(x):  # a plain function is weakly referenceable; a bound builtin is not
        return x

    assert cache.fetch("k", predict, data, lambda: 1) == 1 and len(cache) == 1
    assert cache.fetch("k", len, data, lambda: 2) == 2 and len(cache) == 1
