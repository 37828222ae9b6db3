"""Arrays in NumPy .npz files (loaded with allow_pickle=False)."""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from robustlab._checks import check_choice, describe
from robustlab._constants import IMAGE_RANGE_ATOL
from robustlab.data._files import as_path, bad_file, check_file_labels, check_split, holdout, missing
from robustlab.data.dataset import ArraySource, Dataset
from robustlab.errors import RobustlabError

NPZ_LAYOUTS = ("auto", "nchw", "nhwc")


def load_npz(
    path: str | os.PathLike[str],
    *,
    split: str = "all",
    layout: str = "auto",
    name: str | None = None,
) -> Dataset:
    """Arrays in a NumPy ``.npz`` file.

    Parameters
    ----------
    path : str or path
        A ``.npz`` with ``x`` and ``y`` (and optionally ``class_names``), or with ``x_train``,
        ``y_train``, ``x_test``, ``y_test`` (the Keras ``mnist.npz`` layout). Loaded with
        ``allow_pickle=False``.

        * ``x``: images ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H, W)`` (greyscale), uint8
          (scaled by 1/255 per batch) or float in [0, 1]; or tabular ``(N, D)`` (any real dtype,
          kept as float32 without scaling).
        * ``y``: ``(N,)`` integer class indices, or strings (mapped to sorted class names).
    split : {"train", "test", "all"}, default "all"
        With ``x_train``/``x_test`` the stored split; otherwise the hold-out of the module docstring.
    layout : {"auto", "nchw", "nhwc"}, default "auto"
        Channel layout of 4-D ``x``. ``"auto"`` picks NHWC when the last dimension is 1 or 3 and
        the second is not.
    name : str, optional
        Default: the file name without ``.npz``.

    Returns
    -------
    Dataset
    """
    split = check_split(split)
    layout = check_choice("layout", layout, NPZ_LAYOUTS)
    path = as_path("path", path)
    if not path.is_file():
        missing("path", "an existing .npz file", path)
    arrays = _read_npz(path)
    if "x_train" in arrays:
        parts = ("train", "test") if split == "all" else (split,)
        x = _concat_part(path, arrays, "x", parts)
        y = _concat_part(path, arrays, "y", parts)
    elif "x" in arrays and "y" in arrays:
        x, y = arrays["x"], arrays["y"]
    else:
        bad_file("path", "a .npz file with arrays 'x' and 'y'", path, f"its arrays are {sorted(arrays)}")
    stored_names = arrays.get("class_names")
    dataset = _npz_dataset(path, x, y, stored_names, layout, name or path.stem)
    return dataset if "x_train" in arrays else holdout(dataset, split)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    expected = "a readable .npz file"
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            bad_file("path", expected, path, "a single .npy array, not an .npz archive")
        with npz:
            return {key: npz[key] for key in npz.files}
    except RobustlabError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            bad_file("path", expected, path, "holds Python objects (pickled arrays), which are refused")
        bad_file("path", expected, path, f"cannot be read: {exc}")
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        bad_file("path", expected, path, f"cannot be read: {exc}")


def npz_keys(path: Path) -> list[str]:
    """Array names of an .npz without reading the arrays."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return []  # load_npz reports what is wrong with the file
    if not isinstance(npz, np.lib.npyio.NpzFile):
        return []
    with npz:
        return list(npz.files)


def _concat_part(path: Path, arrays: dict[str, np.ndarray], prefix: str, parts: Sequence[str]) -> np.ndarray:
    keys = [f"{prefix}_{p}" for p in parts]
    absent = [k for k in keys if k not in arrays]
    if absent:
        bad_file("path", "a .npz file with x_train, y_train, x_test, y_test", path,
                 f"missing {absent}; its arrays are {sorted(arrays)}")
    chunks = [arrays[k] for k in keys]
    if len(chunks) == 1:
        return chunks[0]
    if len({c.shape[1:] for c in chunks}) > 1 or len({c.dtype for c in chunks}) > 1:
        bad_file("path", "train and test arrays of matching shape and dtype", path,
                 f"{prefix}_train is {describe(chunks[0])}, {prefix}_test is {describe(chunks[1])}")
    return np.concatenate(chunks)


def _npz_dataset(path: Path, x: np.ndarray, y: np.ndarray, stored_names: np.ndarray | None,
                 layout: str, name: str) -> Dataset:
    labels, class_names = _array_labels(path, y, stored_names, x.shape[0] if x.ndim else -1)
    if x.ndim == 2:
        inputs = _tabular_inputs(path, x)
        return Dataset(inputs, labels, class_names=class_names, name=name, kind="tabular")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        bad_file("path", "a .npz whose 'x' is (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C)", path,
                 f"'x' is {describe(x)}")
    channels_last = _is_channels_last(x.shape) if layout == "auto" else layout == "nhwc"
    _check_image_array(path, x)
    return Dataset(ArraySource(x, channels_last=channels_last), labels, class_names=class_names,
                   name=name, kind="image")


def _is_channels_last(shape: tuple[int, ...]) -> bool:
    return shape[3] in (1, 3) and shape[1] not in (1, 3)


def _check_image_array(path: Path, x: np.ndarray) -> None:
    expected = "a .npz whose images 'x' are uint8, or float in [0, 1]"
    if x.dtype == np.uint8:
        return
    if not np.issubdtype(x.dtype, np.floating):
        bad_file("path", expected, path, f"'x' has dtype {x.dtype}")
    if x.size and not np.isfinite(x).all():
        bad_file("path", expected, path, f"'x' has {int((~np.isfinite(x)).sum())} NaN/inf values")
    if x.size and (float(x.min()) < -IMAGE_RANGE_ATOL or float(x.max()) > 1 + IMAGE_RANGE_ATOL):
        bad_file("path", expected, path, f"'x' has values in [{float(x.min()):.4g}, {float(x.max()):.4g}]; "
                 "store uint8 or divide by 255")


def _tabular_inputs(path: Path, x: np.ndarray) -> torch.Tensor:
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        bad_file("path", "a .npz whose tabular 'x' is numeric", path, f"'x' has dtype {x.dtype}")
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not bool(torch.isfinite(inputs).all()):
        bad_file("path", "a .npz whose tabular 'x' is finite", path,
                 f"'x' has {int((~torch.isfinite(inputs)).sum())} NaN/inf values (after float32 conversion)")
    return inputs


def _array_labels(path: Path, y: np.ndarray, stored_names: np.ndarray | None,
                  n: int) -> tuple[torch.Tensor, tuple[str, ...] | None]:
    """int64 labels and class names from a ``y`` array (integers, or strings mapped to sorted names)."""
    expected = "a .npz whose 'y' holds one integer class index (or class-name string) per example"
    if y.ndim != 1 or y.shape[0] != n:
        bad_file("path", expected, path, f"'y' is {describe(y)} for {n} examples in 'x'")
    names = None
    if stored_names is not None:
        if stored_names.ndim != 1 or stored_names.dtype.kind not in "US":
            bad_file("path", "a .npz whose 'class_names' is a 1-D array of strings", path,
                     f"'class_names' is {describe(stored_names)}")
        names = tuple(str(c) for c in stored_names)
    if y.dtype.kind in "US":
        return _string_labels(path, y, names, expected)
    if not np.issubdtype(y.dtype, np.integer):
        bad_file("path", expected, path, f"'y' has dtype {y.dtype}")
    labels = y.astype(np.int64)
    num_classes = len(names) if names is not None else (int(labels.max()) + 1 if labels.size else 0)
    check_file_labels("path", expected, path, labels, max(num_classes, 1))
    return torch.from_numpy(labels), names


def _string_labels(path: Path, y: np.ndarray, names: tuple[str, ...] | None,
                   expected: str) -> tuple[torch.Tensor, tuple[str, ...]]:
    texts = [str(t) for t in y.tolist()]
    names = names if names is not None else tuple(sorted(set(texts)))
    lookup = {c: i for i, c in enumerate(names)}
    unknown = sorted(set(texts) - set(lookup))
    if unknown:
        bad_file("path", expected, path, f"'y' holds {unknown[:5]}, not in 'class_names'")
    return torch.tensor([lookup[t] for t in texts], dtype=torch.int64), names
