"""CIFAR-10/100 python batches (https://www.cs.toronto.edu/~kriz/cifar.html), unpickled safely."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_choice, describe, fail
from robustlab.data._files import as_path, bad_file, check_file_labels, check_split, missing
from robustlab.data._safe_pickle import RefusedGlobalError, safe_pickle_load
from robustlab.data.dataset import ArraySource, Dataset
from robustlab.errors import DataNotFoundError

# Names fixed by the published datasets (https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_META_FILE = "meta"
CIFAR100_FILES = ("train", "test")
_CIFAR_HWC = (32, 32, 3)
_CIFAR_ROW = 3 * 32 * 32


def _cifar_root(root: Any, subfolder: str) -> Path:
    root = as_path("root", root)
    if (root / subfolder).is_dir():
        return root / subfolder
    if not root.is_dir():
        fail("root", f"an existing folder (containing {subfolder!r} or its files)",
             f"'{root}' (no such folder)", describe_got=False, error=DataNotFoundError)
    return root


def _read_cifar_pickle(path: Path, expected: str) -> dict[str, Any]:
    """A CIFAR pickle as a dict with ``str`` keys (Python 2 byte-string keys decoded)."""
    if not path.is_file():
        missing("root", expected, path)
    try:
        with path.open("rb") as fh:
            obj = safe_pickle_load(fh, encoding="bytes")
    except RefusedGlobalError as exc:
        bad_file("root", expected, path, f"the pickle refers to {exc}, which robustlab refuses to load: "
                 "dataset pickles may hold only plain data and NumPy arrays")
    except OSError as exc:
        bad_file("root", expected, path, f"cannot be read: {exc.strerror or exc}")
    except Exception as exc:  # a malformed pickle can fail in any way; every way means "bad file"
        bad_file("root", expected, path, f"not a readable pickle: {type(exc).__name__}: {exc}")
    if not isinstance(obj, dict):
        bad_file("root", expected, path, f"the pickle holds {describe(obj)}, not a dict")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str, num_classes: int, expected: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 32, 32, 3)`` uint8 (a view) and int64 labels of one CIFAR batch file."""
    batch = _read_cifar_pickle(path, expected)
    for key in ("data", label_key):
        if key not in batch:
            bad_file("root", expected, path, f"missing key b'{key}'; its keys are {sorted(batch)}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW:
        bad_file("root", expected, path, f"b'data' must be a uint8 array of shape (N, {_CIFAR_ROW}), "
                 f"got {describe(data)}")
    labels = _integer_labels(batch[label_key])
    if labels is None or labels.shape != (data.shape[0],):
        bad_file("root", expected, path, f"b'{label_key}' must be {data.shape[0]} integer labels, "
                 f"got {describe(batch[label_key])}")
    check_file_labels("root", expected, path, labels, num_classes)
    images = data.reshape(-1, _CIFAR_HWC[2], *_CIFAR_HWC[:2]).transpose(0, 2, 3, 1)
    return images, labels


def _integer_labels(value: Any) -> np.ndarray | None:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        return None
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        return None
    return arr.astype(np.int64)


def _cifar_names(path: Path, key: str, count: int, expected: str) -> tuple[str, ...]:
    meta = _read_cifar_pickle(path, expected)
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or len(names) != count or \
            not all(isinstance(n, (bytes, str)) for n in names):
        bad_file("root", expected, path, f"b'{key}' must be a list of {count} class names, got "
                 f"{describe(names) if key in meta else 'no such key'}")
    try:
        return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)
    except UnicodeDecodeError:
        bad_file("root", expected, path, f"b'{key}' holds names that are not UTF-8")


def _cifar_dataset(parts: list[tuple[np.ndarray, np.ndarray]], class_names: tuple[str, ...], name: str) -> Dataset:
    # One contiguous NHWC uint8 copy (np.concatenate / ascontiguousarray), never a float32 one.
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0])
    labels = np.concatenate([p[1] for p in parts])
    return Dataset(ArraySource(images, channels_last=True), torch.from_numpy(labels),
                   class_names=class_names, name=name, kind="image")


def load_cifar10(root: str | os.PathLike[str], *, split: str = "train") -> Dataset:
    """CIFAR-10 from its python version (``cifar-10-batches-py``).

    Parameters
    ----------
    root : str or path
        The ``cifar-10-batches-py`` folder or the folder containing it.
    split : {"train", "test", "all"}, default "train"
        ``data_batch_1`` .. ``data_batch_5`` (50 000), ``test_batch`` (10 000), or both.

    Returns
    -------
    Dataset
        uint8 ``(N, 32, 32, 3)`` storage (``ArraySource(channels_last=True)``), served as float
        ``(B, 3, 32, 32)`` in [0, 1]; class names from ``batches.meta``; name ``"cifar10"``.
    """
    split = check_split(split)
    folder = _cifar_root(root, CIFAR10_FOLDER)
    expected = "a CIFAR-10 python folder (cifar-10-batches-py)"
    files = {"train": CIFAR10_TRAIN_FILES, "test": (CIFAR10_TEST_FILE,),
             "all": (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)}[split]
    class_names = _cifar_names(folder / CIFAR10_META_FILE, "label_names", 10, expected)
    parts = [_cifar_batch(folder / f, "labels", 10, expected) for f in files]
    return _cifar_dataset(parts, class_names, "cifar10")


def load_cifar100(root: str | os.PathLike[str], *, split: str = "train", label_type: str = "fine") -> Dataset:
    """CIFAR-100 from its python version (``cifar-100-python``).

    Parameters
    ----------
    root : str or path
        The ``cifar-100-python`` folder or the folder containing it.
    split : {"train", "test", "all"}, default "train"
        ``train`` (50 000), ``test`` (10 000) or both.
    label_type : {"fine", "coarse"}, default "fine"
        100 fine classes or 20 coarse superclasses (names from ``meta``).

    Returns
    -------
    Dataset
        uint8 NHWC storage as in :func:`load_cifar10`; name ``"cifar100"``.
    """
    split = check_split(split)
    label_type = check_choice("label_type", label_type, ("fine", "coarse"))
    folder = _cifar_root(root, CIFAR100_FOLDER)
    expected = "a CIFAR-100 python folder (cifar-100-python)"
    num_classes = 100 if label_type == "fine" else 20
    class_names = _cifar_names(folder / CIFAR100_META_FILE, f"{label_type}_label_names", num_classes, expected)
    files = CIFAR100_FILES if split == "all" else (split,)
    parts = [_cifar_batch(folder / f, f"{label_type}_labels", num_classes, expected) for f in files]
    return _cifar_dataset(parts, class_names, "cifar100")
