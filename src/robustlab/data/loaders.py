"""Loaders for standard on-disk dataset formats; nothing is ever downloaded.

=====================  ==========================================================  ===============
format                 layout                                                      storage
=====================  ==========================================================  ===============
CIFAR-10 (python)      ``cifar-10-batches-py/{data_batch_1..5, test_batch,          uint8 NHWC
                       batches.meta}``
CIFAR-100 (python)     ``cifar-100-python/{train, test, meta}``                     uint8 NHWC
MNIST / Fashion-MNIST  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``        uint8 memmap
ImageFolder            ``root/<class>/*.png|jpg|...`` (optionally ``root/train``,   decoded per
                       ``root/test``)                                               batch (Pillow)
.npz                   arrays ``x``, ``y`` [, ``class_names``] or ``x_train``,      as stored
                       ``y_train``, ``x_test``, ``y_test``
CSV                    header row, a label column, numeric feature columns          float32
=====================  ==========================================================  ===============

:func:`load_dataset` picks the loader from a built-in name or from what is on disk. Every loader
returns a :class:`~robustlab.data.Dataset` whose images are float ``(N, C, H, W)`` in [0, 1] per
batch, without a float32 copy of the whole dataset.

``split`` is ``"train"``, ``"test"`` or ``"all"``. Formats with an official split (CIFAR, MNIST,
ImageFolder trees with ``train``/``test`` folders, .npz with ``x_train``/``x_test``; see
:func:`has_test_split`) use it; ``"all"`` joins both. Sources without one (built-ins, CSV,
single-set .npz and ImageFolder trees) are split deterministically: a stratified hold-out of
``DATA_TEST_FRACTION`` with seed ``DEFAULT_SEED`` (:func:`robustlab.data.train_test_split`).
Callers that split with their own seed should ask for ``"all"``.

A missing file raises :class:`~robustlab.errors.DataNotFoundError` naming the file and the folder
looked in; a malformed one raises :class:`~robustlab.errors.DataFormatError` naming the file and
what is wrong.

Each format is implemented in a private module (``_cifar``, ``_idx``, ``_image_folder``, ``_npz``,
``_csv``); this module is the public entry point for all of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from robustlab._checks import check_choice, fail
from robustlab.data._cifar import (
    CIFAR10_FOLDER,
    CIFAR10_META_FILE,
    CIFAR10_TEST_FILE,
    CIFAR10_TRAIN_FILES,
    CIFAR100_FILES,
    CIFAR100_FOLDER,
    CIFAR100_META_FILE,
    load_cifar10,
    load_cifar100,
)
from robustlab.data._csv import load_csv
from robustlab.data._files import SPLITS, as_path, bad_file, call_with_options, check_split, holdout, missing
from robustlab.data._idx import FASHION_MNIST_CLASSES, MNIST_FILES, idx_candidates, load_mnist
from robustlab.data._image_folder import IMAGE_FOLDER_TEST_NAMES, ImageFolderSource, load_image_folder
from robustlab.data._npz import load_npz, npz_keys
from robustlab.data.builtins import builtin_names, load_builtin
from robustlab.data.dataset import Dataset
from robustlab.errors import DataNotFoundError, UnknownNameError

__all__ = [
    "SPLITS",
    "FORMATS",
    "load_dataset",
    "detect_format",
    "has_test_split",
    "load_cifar10",
    "load_cifar100",
    "load_mnist",
    "load_image_folder",
    "ImageFolderSource",
    "load_npz",
    "load_csv",
    "FASHION_MNIST_CLASSES",
]

FORMATS = ("cifar10", "cifar100", "mnist", "image-folder", "npz", "csv")


def load_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    split: str = "all",
    format: str | None = None,
    **kwargs: Any,
) -> Dataset:
    """Load a built-in dataset by name or a dataset from disk, detecting its format.

    Parameters
    ----------
    name_or_path : str or path
        A built-in name (:func:`~robustlab.data.builtin_names`; wins over a folder of the same
        name — write ``./digits`` for the folder), a ``.npz`` or ``.csv`` file, or a folder holding
        CIFAR-10/100 python batches, MNIST IDX files or class subfolders of images.
    split : {"train", "test", "all"}, default "all"
        ``"all"`` is everything (both official parts, where the format has them). ``"train"`` and
        ``"test"`` are the official split where the format has one (:func:`has_test_split`),
        otherwise a deterministic stratified hold-out of ``DATA_TEST_FRACTION`` (module docstring).
    format : {"cifar10", "cifar100", "mnist", "image-folder", "npz", "csv"}, optional
        Skip detection (e.g. a CSV file named ``data.txt``).
    **kwargs
        Options of the chosen loader (e.g. ``label_type="coarse"`` for CIFAR-100, ``size=(64, 64)``
        for an ImageFolder tree, ``label_column="target"`` for CSV).

    Returns
    -------
    Dataset

    Raises
    ------
    UnknownNameError
        Not a built-in name and no such path, or an option the loader does not take.
    DataNotFoundError
        A path or a file the format needs does not exist (the message names it and the folder).
    DataFormatError
        The path is in no known format, or a file is malformed (the message names the file).

    Examples
    --------
    >>> train = load_dataset("digits", split="train")
    >>> test = load_dataset("digits", split="test")
    >>> len(train), len(test), len(load_dataset("digits"))
    (1437, 360, 1797)
    """
    split = check_split(split)
    if isinstance(name_or_path, str) and name_or_path in builtin_names():
        if format is not None:
            fail("format", "None for a built-in dataset", format)
        return holdout(load_builtin(name_or_path, **kwargs), split)
    path = _resolve_data_path(name_or_path)
    fmt = detect_format(path) if format is None else check_choice("format", format, FORMATS)
    loader = _FORMAT_LOADERS[fmt]
    return call_with_options(loader, (path,), {**kwargs, "split": split}, f"the {fmt} loader")


def has_test_split(name_or_path: str | os.PathLike[str]) -> bool:
    """Whether a dataset comes with an official test split.

    Parameters
    ----------
    name_or_path : str or path
        As for :func:`load_dataset`.

    Returns
    -------
    bool
        ``True`` for CIFAR-10/100 and MNIST folders, ImageFolder trees with ``train`` and ``test``
        (or ``val``) folders and .npz files with ``x_train``/``x_test``; ``False`` for built-ins,
        CSV files and single-set .npz files and ImageFolder trees (their ``"train"``/``"test"``
        splits are a hold-out).
    """
    if isinstance(name_or_path, str) and name_or_path in builtin_names():
        return False
    path = _resolve_data_path(name_or_path)
    fmt = detect_format(path)
    if fmt in ("cifar10", "cifar100", "mnist"):
        return True
    if fmt == "image-folder":
        return (path / "train").is_dir() and any((path / t).is_dir() for t in IMAGE_FOLDER_TEST_NAMES)
    if fmt == "npz":
        return "x_train" in npz_keys(path)
    return False


def _resolve_data_path(name_or_path: Any) -> Path:
    path = as_path("name_or_path", name_or_path)
    if path.exists():
        return path
    text = os.fspath(name_or_path)
    if os.sep not in text and "/" not in text and not Path(text).suffix:
        listed = ", ".join(repr(n) for n in builtin_names())
        fail("name_or_path", f"a built-in dataset name ({{{listed}}}) or an existing path", text,
             error=UnknownNameError)
    fail("name_or_path", "an existing file or folder",
         f"'{path}' (nothing named '{path.name}' in '{path.parent}')", describe_got=False,
         error=DataNotFoundError)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a dataset on disk, one of ``FORMATS``.

    Parameters
    ----------
    path : str or path
        A ``.npz``/``.csv`` file, or a folder (CIFAR-10/100 python batches, directly or in their
        ``cifar-10-batches-py``/``cifar-100-python`` subfolder; IDX files, directly or in ``raw/``;
        class subfolders of images).

    Raises
    ------
    DataNotFoundError
        ``path`` does not exist.
    DataFormatError
        ``path`` is in none of the known formats.
    """
    path = as_path("path", path)
    if not path.exists():
        missing("path", "an existing file or folder", path)
    if path.is_file():
        fmt = {".npz": "npz", ".csv": "csv"}.get(path.suffix.lower())
        if fmt is None:
            bad_file("path", "a .npz or .csv file, or a dataset folder", path,
                     f"unrecognised file type {path.suffix!r}; pass format=... to choose a loader")
        return fmt
    for fmt, probe in _FOLDER_PROBES:
        if probe(path):
            return fmt
    bad_file("path", "a dataset folder (CIFAR-10/100 python batches, MNIST IDX files or class "
             "subfolders of images)", path, "none of these layouts found")


def _is_cifar10(folder: Path) -> bool:
    return (folder / CIFAR10_FOLDER).is_dir() or any(
        (folder / f).is_file() for f in (CIFAR10_META_FILE, CIFAR10_TEST_FILE, *CIFAR10_TRAIN_FILES))


def _is_cifar100(folder: Path) -> bool:
    return (folder / CIFAR100_FOLDER).is_dir() or (
        (folder / CIFAR100_META_FILE).is_file() and any((folder / f).is_file() for f in CIFAR100_FILES))


def _is_idx(folder: Path) -> bool:
    return any(idx_candidates(folder, name) for names in MNIST_FILES.values() for name in names)


def _is_image_folder(folder: Path) -> bool:
    return any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())


_FOLDER_PROBES = (("cifar10", _is_cifar10), ("cifar100", _is_cifar100), ("mnist", _is_idx),
                  ("image-folder", _is_image_folder))


_FORMAT_LOADERS = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "mnist": load_mnist,
    "image-folder": load_image_folder,
    "npz": load_npz,
    "csv": load_csv,
}
