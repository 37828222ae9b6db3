"""Long-tailed subsets: counts follow the profile; combinable with noise."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab.data import Dataset
from robustlab.errors import InvalidParameterError, RobustlabError
from robustlab.label_noise import apply_noise_spec, long_tail_counts, long_tail_indices


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_exponential_profile_counts():
    y = torch.arange(10).repeat(500)
    keep = long_tail_indices(y, 10, 100, generator=gen())
    counts = torch.bincount(y[keep], minlength=10)
    expected = [math.floor(500 * 100 ** (-k / 9) + 1e-9) for k in range(10)]
    assert counts.tolist() == expected
    assert counts[0] == 500 and counts[9] == 5  # n_max / ratio
    assert torch.equal(keep, keep.sort().values) and len(set(keep.tolist())) == len(keep)
    # CIFAR-10-LT (ratio 100) sizes as published: 5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50
    assert long_tail_counts(10, 100, 5000).tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_step_profile_and_order():
    y = torch.arange(4).repeat(100)
    keep = long_tail_indices(y, 4, 10, generator=gen(), profile="step", class_order=[3, 2, 1, 0])
    assert torch.bincount(y[keep], minlength=4).tolist() == [10, 10, 100, 100]


def test_deterministic_and_combinable_with_noise():
    y = torch.arange(5).repeat(60)
    a = long_tail_indices(y, 5, 10, generator=gen(1))
    assert torch.equal(a, long_tail_indices(y, 5, 10, generator=gen(1)))
    assert not torch.equal(a, long_tail_indices(y, 5, 10, generator=gen(2)))
    ds = Dataset(torch.rand(300, 3), y)
    lt = ds.subset(a)
    noisy_ds, noisy = apply_noise_spec("symmetric:0.5", lt, generator=gen())
    assert len(noisy_ds) == len(a) and noisy.num_flipped > 0
    assert torch.equal(noisy.clean_labels, y[a])


def test_bad_input():
    y = torch.arange(3).repeat(10)
    for call, text in [
        (lambda: long_tail_indices(y, 3, 0.5, generator=gen()), "'imbalance_ratio'"),
        (lambda: long_tail_indices(y, 3, 2, generator=gen(), profile="linear"), "'profile'"),
        (lambda: long_tail_indices(y, 3, 2, generator=gen(), n_max=11), "'n_max'"),
        (lambda: long_tail_indices(torch.tensor([0, 0, 1]), 3, 2, generator=gen()), "class 2"),
        (lambda: long_tail_indices(y, 3, 2, generator=gen(), class_order=[0, 0, 1]), "'class_order'"),
    ]:
        with pytest.raises(InvalidParameterError, match=text) as info:
            call()
        assert isinstance(info.value, RobustlabError)


def test_docstring_examples_of_the_simulation_modules():
    import doctest

    from robustlab.label_noise import annotators, imbalance, simulate

    for module in (simulate, annotators, imbalance):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
