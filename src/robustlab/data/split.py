"""Train/test splits and stratified k-fold over a :class:`~robustlab.data.Dataset`.

The split logic is scikit-learn's (``train_test_split``, ``StratifiedKFold``) applied to example
indices, so the inputs are never copied: the results are :meth:`Dataset.subset` views. What this
module adds is validation up front, with messages that name the class that is too small.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_bool, check_int, check_number, fail
from robustlab.data.dataset import Dataset
from robustlab.errors import InvalidParameterError, InvalidTypeError

__all__ = ["train_test_split", "stratified_kfold", "stratified_halves"]

#: Largest seed accepted by scikit-learn's ``random_state``.
_MAX_SEED = 2**32 - 1

#: A stratified split puts at least one example of every class on each side.
_MIN_PER_CLASS_SPLIT = 2


def train_test_split(
    dataset: Dataset,
    *,
    test_size: float | int,
    seed: int,
    stratify: bool = True,
) -> tuple[Dataset, Dataset]:
    """Split a dataset into a training and a test part.

    Parameters
    ----------
    dataset : Dataset
        ``N`` examples.
    test_size : float in (0, 1) or int in [1, N - 1]
        Fraction or number of examples in the test part.
    seed : int in [0, 2**32 - 1]
        Seed of the shuffle (scikit-learn's ``random_state``); same seed, same split.
    stratify : bool, default True
        Keep the class proportions in both parts. Every class declared in ``class_names`` then
        needs at least 2 examples, and each part needs at least ``num_classes`` examples.

    Returns
    -------
    train, test : Dataset
        Views of ``dataset`` (shared storage) with the same class names, kind and name.

    Raises
    ------
    InvalidParameterError
        ``test_size`` out of range, or a class too small for a stratified split (the message
        names the class and its count).

    Examples
    --------
    >>> import torch
    >>> ds = Dataset(torch.rand(10, 3), torch.tensor([0, 1] * 5))
    >>> train, test = train_test_split(ds, test_size=0.2, seed=0)
    >>> len(train), len(test), test.class_counts().tolist()
    (8, 2, [1, 1])
    """
    n_test = _check_test_size(dataset, test_size)
    seed = check_int("seed", seed, low=0, high=_MAX_SEED)
    stratify = check_bool("stratify", stratify)
    labels = dataset.labels.numpy()
    if stratify:
        _check_class_counts(dataset, _MIN_PER_CLASS_SPLIT, "a stratified train/test split")
        _check_room_for_classes(dataset, n_test)
    train_idx, test_idx = _split_impl(labels, n_test, seed, stratify)
    return dataset.subset(train_idx), dataset.subset(test_idx)


def stratified_kfold(dataset: Dataset, *, n_splits: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Stratified k-fold cross-validation indices.

    Parameters
    ----------
    dataset : Dataset
        ``N`` examples; every class declared in ``class_names`` needs at least ``n_splits``.
    n_splits : int in [2, N]
        Number of folds.
    seed : int in [0, 2**32 - 1]
        Seed of the shuffle before folding (scikit-learn's ``StratifiedKFold(shuffle=True)``).

    Returns
    -------
    iterator of (train_indices, test_indices)
        ``n_splits`` pairs of int64 tensors; the test parts partition ``range(N)``.

    Raises
    ------
    InvalidParameterError
        ``n_splits`` out of range or a class with fewer than ``n_splits`` examples.

    Notes
    -----
    Validation happens when this function is called, not when the iterator is first advanced.
    """
    n_splits = check_int("n_splits", n_splits, low=2, high=max(len(dataset), 2))
    seed = check_int("seed", seed, low=0, high=_MAX_SEED)
    _check_class_counts(dataset, n_splits, f"stratified {n_splits}-fold splitting")
    return _kfold_impl(dataset.labels.numpy(), n_splits, seed)


def stratified_halves(labels: torch.Tensor, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified random halves ``(first, second)`` of ``range(len(labels))``.

    Per class, the first ``n_c // 2`` of a random permutation (drawn from ``generator``) of its
    examples form the first half, the rest the second; both index tensors are sorted. Probes use it
    to fit on one half of their data (a scaler, a detector) and report on the other.

    Parameters
    ----------
    labels : Tensor, shape (N,)
        Integer labels (any device; indices come back on the CPU).
    generator : torch.Generator
        CPU generator; the split depends only on ``labels`` and its state.

    Returns
    -------
    first, second : LongTensor
    """
    labels = labels.detach().cpu()
    first, second = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        first.append(idx[: idx.numel() // 2])
        second.append(idx[idx.numel() // 2:])
    if not first:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    return torch.cat(first).sort().values, torch.cat(second).sort().values


def _check_test_size(dataset: Dataset, test_size: Any) -> int:
    """Validate ``test_size`` and return it as a number of examples."""
    n = len(dataset)
    if n < _MIN_PER_CLASS_SPLIT:
        fail("dataset", f"a dataset with at least {_MIN_PER_CLASS_SPLIT} examples to split",
             f"{n} example(s)", describe_got=False)
    if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
        return check_int("test_size", test_size, low=1, high=n - 1)
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        fail("test_size", "a float in (0, 1) or an integer number of examples", test_size,
             error=InvalidTypeError)
    fraction = check_number("test_size", test_size, low=0.0, high=1.0, low_inclusive=False,
                            high_inclusive=False)
    # scikit-learn's own rounding: the test part is ceil(fraction * n).
    n_test = int(np.ceil(fraction * n))
    if n_test >= n:
        fail("test_size", f"a fraction that leaves at least one of the {n} examples for training",
             test_size)
    return n_test


def _check_class_counts(dataset: Dataset, minimum: int, purpose: str) -> None:
    counts = dataset.class_counts().tolist()
    for name, count in zip(dataset.class_names, counts):
        if count < minimum:
            raise InvalidParameterError(
                f"The 'dataset' parameter must have at least {minimum} examples of every class for "
                f"{purpose}. Got {count} example(s) of class {name!r} instead."
            )


def _check_room_for_classes(dataset: Dataset, n_test: int) -> None:
    k, n = dataset.num_classes, len(dataset)
    if n_test < k:
        fail("test_size", f"at least the number of classes ({k}) for a stratified split",
             f"{n_test} test example(s)", describe_got=False)
    if n - n_test < k:
        fail("test_size", f"small enough to leave at least the number of classes ({k}) for training",
             f"{n - n_test} training example(s)", describe_got=False)


def _split_impl(labels: np.ndarray, n_test: int, seed: int, stratify: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.model_selection import (
        train_test_split as sk_split,  # slow import; only when used
    )

    indices = np.arange(labels.shape[0])
    train_idx, test_idx = sk_split(indices, test_size=n_test, random_state=seed,
                                   stratify=labels if stratify else None)
    return torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))


def _kfold_impl(labels: np.ndarray, n_splits: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.model_selection import StratifiedKFold  # slow import; only when used

    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train_idx, test_idx in folds.split(np.zeros((labels.shape[0], 1)), labels):
        yield torch.from_numpy(train_idx.astype(np.int64)), torch.from_numpy(test_idx.astype(np.int64))
