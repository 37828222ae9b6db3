"""MNIST-style IDX files (http://yann.lecun.com/exdb/mnist/): header parsed and checked, memory-mapped."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from robustlab._checks import fail
from robustlab.data._files import as_path, bad_file, check_file_labels, check_split, missing
from robustlab.data.dataset import ArraySource, Dataset
from robustlab.errors import DataNotFoundError

# IDX format (http://yann.lecun.com/exdb/mnist/): 0x0000, type code (0x08 = unsigned byte), ndim.
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_IDX_DIM_BYTES = 4
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
_MNIST_NUM_CLASSES = 10


def idx_candidates(folder: Path, name: str) -> list[Path]:
    """Existing files for an IDX name: plain or .gz, ``-idx`` or ``.idx`` spelling, in ``folder`` or ``raw/``."""
    spellings = (name, name.replace("-idx", ".idx"))
    found = []
    for base in (folder, folder / "raw"):
        for spelling in spellings:
            found += [base / f"{spelling}{ext}" for ext in ("", ".gz") if (base / f"{spelling}{ext}").is_file()]
    return found


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse and validate an unsigned-byte IDX file; plain files are memory-mapped."""
    expected = f"MNIST-style IDX files (magic number 0x{magic:08X})"
    ndim = magic & 0xFF
    header_size = _IDX_DIM_BYTES * (1 + ndim)
    content = _read_gzip(path, expected) if path.suffix == ".gz" else None
    header = content[:header_size] if content is not None else _read_head(path, header_size, expected)
    if len(header) < header_size:
        bad_file("root", expected, path, f"truncated: {len(header)} bytes, shorter than the header")
    (found,) = struct.unpack(">I", header[:_IDX_DIM_BYTES])
    if found != magic:
        bad_file("root", expected, path, f"magic number 0x{found:08X}, expected 0x{magic:08X}")
    dims = struct.unpack(f">{ndim}I", header[_IDX_DIM_BYTES:header_size])
    size = len(content) if content is not None else path.stat().st_size
    if size != header_size + math.prod(dims):
        what = "truncated" if size < header_size + math.prod(dims) else "trailing data"
        bad_file("root", expected, path, f"{what}: {size} bytes, but its header (dims {list(dims)}) "
                 f"needs {header_size + math.prod(dims)}")
    shape = (dims[0], 1, *dims[1:]) if ndim == 3 else dims
    if content is not None:
        return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)
    if math.prod(dims) == 0:
        return np.zeros(shape, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=header_size, shape=shape)


def _read_head(path: Path, size: int, expected: str) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError as exc:
        bad_file("root", expected, path, f"cannot be read: {exc.strerror or exc}")


def _read_gzip(path: Path, expected: str) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        bad_file("root", expected, path, f"not a readable gzip file: {exc}")


def _find_idx(folder: Path, name: str, expected: str) -> Path:
    found = idx_candidates(folder, name)
    if not found:
        missing("root", f"{expected} (plain or .gz)", folder / name)
    return found[0]


def load_mnist(
    root: str | os.PathLike[str],
    *,
    split: str = "train",
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """MNIST-style IDX files: MNIST, Fashion-MNIST, KMNIST, ...

    Parameters
    ----------
    root : str or path
        Folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each plain or ``.gz``; also
        accepted: ``.idx3-ubyte`` spellings and a ``raw/`` subfolder, as torchvision stores them).
    split : {"train", "test", "all"}, default "train"
    class_names : sequence of str, optional
        Default: Fashion-MNIST's names when the folder (or its parent) has "fashion" in its name,
        else ``"0"`` .. ``"9"``.
    name : str, optional
        Default ``"fashion-mnist"`` or ``"mnist"``, following ``class_names``' default.

    Returns
    -------
    Dataset
        uint8 ``(N, 1, H, W)`` storage (memory-mapped for plain files; ``.gz`` files are
        decompressed into memory), served as float in [0, 1].
    """
    split = check_split(split)
    folder = as_path("root", root)
    if not folder.is_dir():
        fail("root", "an existing folder of IDX files", f"'{folder}' (no such folder)",
             describe_got=False, error=DataNotFoundError)
    fashion = any("fashion" in part.lower() for part in folder.parts[-2:])
    default_names = FASHION_MNIST_CLASSES if fashion else tuple(str(i) for i in range(_MNIST_NUM_CLASSES))
    class_names = tuple(default_names if class_names is None else class_names)
    splits = ("train", "test") if split == "all" else (split,)
    parts = [_mnist_part(folder, s, len(class_names)) for s in splits]
    images = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    default_name = "fashion-mnist" if fashion else "mnist"
    return Dataset(ArraySource(images), torch.from_numpy(labels), class_names=class_names,
                   name=name or default_name, kind="image")


def _mnist_part(folder: Path, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    image_name, label_name = MNIST_FILES[split]
    expected = "a folder of MNIST-style IDX files"
    image_path = _find_idx(folder, image_name, expected)
    label_path = _find_idx(folder, label_name, expected)
    images = _read_idx(image_path, IDX_IMAGES_MAGIC)
    labels = np.asarray(_read_idx(label_path, IDX_LABELS_MAGIC), dtype=np.int64)
    if labels.shape[0] != images.shape[0]:
        bad_file("root", expected, label_path, f"{labels.shape[0]} labels for the {images.shape[0]} "
                 f"images of '{image_path.name}'")
    check_file_labels("root", expected, label_path, labels, num_classes)
    return images, labels
