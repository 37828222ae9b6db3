"""Shared helpers of the on-disk loaders: paths, splits and the error messages that name files."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from robustlab._checks import check_choice, fail
from robustlab._constants import DATA_TEST_FRACTION, DEFAULT_SEED
from robustlab.data.dataset import Dataset
from robustlab.data.split import train_test_split
from robustlab.errors import DataFormatError, DataNotFoundError, InvalidTypeError, UnknownNameError

SPLITS = ("train", "test", "all")


def one_line(text: object) -> str:
    """Collapse whitespace so that messages quoting library errors stay on one line."""
    return " ".join(str(text).split())


def missing(param: str, expected: str, path: Path) -> NoReturn:
    """Raise DataNotFoundError naming the missing file and the folder looked in."""
    fail(param, expected, f"no file '{path.name}' in '{path.parent}'", describe_got=False,
         error=DataNotFoundError)


def bad_file(param: str, expected: str, path: Path, problem: str) -> NoReturn:
    """Raise DataFormatError naming the file and what is wrong with it."""
    fail(param, expected, f"'{path}' ({one_line(problem)})", describe_got=False, error=DataFormatError)


def as_path(param: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        fail(param, "a path (str or os.PathLike)", value, error=InvalidTypeError)
    return Path(value).expanduser().absolute()


def check_split(split: Any) -> str:
    return check_choice("split", split, SPLITS)


def holdout(dataset: Dataset, split: str) -> Dataset:
    """``split`` of a source without an official test split (stratified hold-out, see ``loaders``)."""
    if split == "all":
        return dataset
    train, test = train_test_split(dataset, test_size=DATA_TEST_FRACTION, seed=DEFAULT_SEED)
    return train if split == "train" else test


def check_file_labels(param: str, expected: str, path: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad_file(param, expected, path, f"labels in [{int(labels.min())}, {int(labels.max())}], "
                 f"expected class indices in [0, {num_classes - 1}]")


def call_with_options(loader: Callable[..., Any], args: tuple[Any, ...], options: Mapping[str, Any],
                      what: str) -> Any:
    """Call ``loader(*args, **options)``; an option it does not take is a one-line error, not a TypeError."""
    params = inspect.signature(loader).parameters
    accepted = sorted(p for p, spec in params.items() if spec.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        listed = "{" + ", ".join(repr(a) for a in accepted) + "}"
        fail("options", f"options that {what} takes: {listed}", ", ".join(map(repr, unknown)),
             describe_got=False, error=UnknownNameError)
    return loader(*args, **options)
