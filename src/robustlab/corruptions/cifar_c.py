"""Read and write the CIFAR-10-C file layout.

A CIFAR-10-C folder holds one ``<corruption>.npy`` per corruption, a ``uint8`` array of shape
``(5 N, H, W, C)`` with the N test images at severity 1, then severity 2, ..., then 5, and one
``labels.npy`` of shape ``(5 N,)`` (the N labels repeated five times). robustlab reads that layout
memory-mapped and writes it from any image dataset, in batches, one file at a time, atomically,
skipping files that are already complete; it also writes ``robustlab_c.json`` describing what it
wrote (severities, preset, seed), which the reader uses when present.

References
----------
D. Hendrycks and T. Dietterich. Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations. ICLR 2019 (CIFAR-10-C, ``make_cifar_c.py``; data at zenodo.org/record/2535967).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab._checks import (
    check_choice,
    check_generator,
    check_int,
    check_writable_dir,
    fail,
)
from robustlab._constants import (
    CIFAR_C_LABELS_FILENAME,
    CIFAR_C_WRITE_BATCH,
    CORRUPTION_SEVERITIES,
)
from robustlab._io import atomic_path, atomic_write_text
from robustlab._progress import progress as progress_bar
from robustlab.data.dataset import ArraySource, Dataset
from robustlab.errors import DataFormatError, DataNotFoundError, InvalidTypeError

__all__ = ["METADATA_FILENAME", "CorruptedWriteSummary", "load_cifar_c", "write_corrupted"]

#: Sidecar written next to the .npy files by :func:`write_corrupted`.
METADATA_FILENAME = "robustlab_c.json"


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataFormatError(f"The file {str(path)!r} is not a complete .npy array (truncated or "
                              f"corrupt: {reason}); delete it and write it again.") from None


def _read_metadata(root: Path) -> dict[str, Any]:
    path = root / METADATA_FILENAME
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise DataFormatError(f"The file {str(path)!r} is not valid JSON: {exc}.") from None
    return meta if isinstance(meta, dict) else {}


def load_cifar_c(root: str | os.PathLike[str], corruption: str, severity: int | None = None) -> Dataset:
    """One corruption of a CIFAR-10-C style folder as a memory-mapped :class:`Dataset`.

    Parameters
    ----------
    root : path-like
        Folder with ``<corruption>.npy`` and ``labels.npy``.
    corruption : str
        File stem, e.g. ``"fog"``; an unknown one lists the corruptions found in ``root``.
    severity : int, optional
        Only that severity's block (1-5, or one of the severities named in ``robustlab_c.json``);
        default all blocks (``5 N`` examples).

    Returns
    -------
    Dataset
        Images ``(C, H, W)`` read from ``uint8`` NHWC storage and scaled to [0, 1] per batch;
        nothing is loaded until a batch is read.

    Raises
    ------
    DataNotFoundError
        Folder or file missing (the message says where it looked).
    DataFormatError
        Truncated or malformed file, or image and label counts that do not match.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DataNotFoundError(f"The 'root' parameter must be a CIFAR-10-C style folder. Got "
                                f"{str(folder)!r}, which does not exist or is not a folder.")
    found = sorted(p.stem for p in folder.glob("*.npy") if p.name != CIFAR_C_LABELS_FILENAME)
    if not isinstance(corruption, str) or corruption not in found:
        if not found:
            raise DataNotFoundError(f"The 'root' parameter must be a folder holding <corruption>.npy "
                                    f"files. Found none in {str(folder)!r}.")
        check_choice("corruption", corruption, found)
    labels_path = folder / CIFAR_C_LABELS_FILENAME
    if not labels_path.is_file():
        raise DataNotFoundError(f"The file {CIFAR_C_LABELS_FILENAME!r} is missing: looked for "
                                f"{str(labels_path)!r}.")
    images = _open_npy(folder / f"{corruption}.npy")
    labels = np.asarray(_open_npy(labels_path))
    meta = _read_metadata(folder)
    severities = tuple(meta.get("severities", CORRUPTION_SEVERITIES))
    _check_layout(folder / f"{corruption}.npy", images, labels, len(severities))
    if images.ndim == 3:  # (N, H, W) grey storage
        images = images[..., None]
    name = f"{folder.name}/{corruption}"
    if severity is not None:
        s = check_int("severity", severity, low=1)
        if s not in severities:
            fail("severity", f"one of {list(severities)} (the severities stored in {str(folder)!r})", s)
        n = images.shape[0] // len(severities)
        block = severities.index(s)
        images = images[block * n:(block + 1) * n]
        labels = labels[block * n:(block + 1) * n]
        name = f"{name}@{s}"
    class_names = meta.get("class_names")
    return Dataset(ArraySource(images, channels_last=True), torch.from_numpy(labels.astype(np.int64)),
                   class_names=class_names, name=name, kind="image")


def _check_layout(path: Path, images: np.ndarray, labels: np.ndarray, num_severities: int) -> None:
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataFormatError(f"The file {str(path)!r} must hold uint8 images of shape (S*N, H, W, C). "
                              f"Got dtype {images.dtype} and shape {images.shape} instead.")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(f"The labels file next to {str(path)!r} must hold integer labels of shape "
                              f"(S*N,). Got dtype {labels.dtype} and shape {labels.shape} instead.")
    if images.shape[0] != labels.shape[0] or images.shape[0] % num_severities:
        raise DataFormatError(f"The file {str(path)!r} must have one image per label and {num_severities} "
                              f"equal severity blocks. Got {images.shape[0]} images and {labels.shape[0]} "
                              f"labels instead.")


# --------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class CorruptedWriteSummary:
    """What :func:`write_corrupted` did.

    Attributes
    ----------
    out_dir : Path
    written : tuple of str
        Corruptions whose file was written by this call.
    skipped : tuple of str
        Corruptions whose complete file already existed (resume).
    num_examples : int
        ``N``, the images per severity.
    severities : tuple of int
    """

    out_dir: Path
    written: tuple[str, ...]
    skipped: tuple[str, ...]
    num_examples: int
    severities: tuple[int, ...]


def _corruption_seed(base: int, name: str) -> int:
    digest = hashlib.sha256(f"{base}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _complete(path: Path, shape: tuple[int, ...]) -> bool:
    if not path.is_file():
        return False
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return False
    return arr.dtype == np.uint8 and tuple(arr.shape) == shape


def write_corrupted(
    dataset: Dataset,
    out_dir: str | os.PathLike[str],
    *,
    corruptions: Sequence[str],
    generator: torch.Generator,
    severities: Sequence[int] = CORRUPTION_SEVERITIES,
    preset: str | None = None,
    batch_size: int = CIFAR_C_WRITE_BATCH,
    progress: bool | None = None,
) -> CorruptedWriteSummary:
    """Write ``dataset`` corrupted in the CIFAR-10-C layout (one ``.npy`` per corruption).

    Parameters
    ----------
    dataset : Dataset
        Image dataset, ``(C, H, W)`` with ``C`` in {1, 3}.
    out_dir : path-like
        Created if needed. Receives ``<corruption>.npy`` (``uint8``, ``(S N, H, W, C)``, severity
        blocks in the order of ``severities``), ``labels.npy`` (``(S N,)``, ``uint8`` when there
        are at most 256 classes, as CIFAR-10-C, else ``int64``) and ``robustlab_c.json``.
    corruptions : sequence of str
        Names from :data:`robustlab.corruptions.IMAGE_CORRUPTIONS`.
    generator : torch.Generator
        One integer is drawn from it; each corruption then gets its own generator seeded from
        that integer and its name, so a file's content does not depend on which other files were
        written in the same call (resume gives the same bytes as an uninterrupted run).
    severities : sequence of int, default (1, 2, 3, 4, 5)
    preset : {"cifar", "imagenet", "mnist"}, optional
        Parameter table; default ``preset_for(image size, channels)``.
    batch_size : int, default 256
        Images corrupted at a time; memory stays bounded by one batch plus the memory map.
    progress : bool, optional
        Progress bar; ``None`` shows it only on a terminal.

    Returns
    -------
    CorruptedWriteSummary

    Notes
    -----
    Pixels are stored as ``round(255 x)``; the reference ``make_cifar_c.py`` truncates
    (``np.uint8``) instead, which biases every pixel down by half a level on average. Each file
    is written to a temporary name and renamed when complete (:func:`robustlab._io.atomic_path`),
    so an interrupted run leaves only complete files, and running again skips them.
    """
    from robustlab.corruptions.image import IMAGE_CORRUPTIONS, corrupt, preset_for

    if not isinstance(dataset, Dataset) or not dataset.is_image:
        fail("dataset", "an image Dataset", dataset, error=InvalidTypeError)
    check_generator("generator", generator)
    if isinstance(corruptions, str) or not isinstance(corruptions, Sequence) or not corruptions:
        fail("corruptions", "a non-empty sequence of corruption names", corruptions, error=InvalidTypeError)
    names = [check_choice("corruptions", c, IMAGE_CORRUPTIONS) for c in corruptions]
    sev = tuple(check_int("severities", s, low=1, high=5) for s in severities)
    if not sev or len(set(sev)) != len(sev) or len(set(names)) != len(names):
        fail("severities", "a non-empty sequence of distinct severities (and distinct corruptions)",
             list(severities))
    check_int("batch_size", batch_size, low=1)
    c, h, w = dataset.input_shape
    if preset is None:
        preset = preset_for(min(h, w), c)
    folder = check_writable_dir("out_dir", out_dir)
    n = len(dataset)
    base = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))
    _write_labels(folder, dataset, len(sev))
    shape = (len(sev) * n, h, w, c)
    todo = [name for name in names if not _complete(folder / f"{name}.npy", shape)]
    skipped = tuple(name for name in names if name not in todo)
    total = len(todo) * len(sev) * dataset.num_batches(batch_size)
    with progress_bar("corrupting", total, enabled=progress) as bar:
        for name in todo:
            bar.update(description=f"corrupting: {name}")
            g = torch.Generator(device=generator.device).manual_seed(_corruption_seed(base, name))
            _write_one(folder / f"{name}.npy", dataset, name, sev, shape, g, preset, batch_size,
                       corrupt, bar)
    meta = {"format": "cifar-c", "severities": list(sev), "preset": preset, "seed": base,
            "num_examples": n, "corruptions": sorted(set(names) | set(_read_metadata(folder).get("corruptions", []))),
            "class_names": list(dataset.class_names), "pixel_rounding": "round(255 x)"}
    atomic_write_text(folder / METADATA_FILENAME, json.dumps(meta, indent=1) + "\n")
    return CorruptedWriteSummary(folder, tuple(todo), skipped, n, sev)


def _write_labels(folder: Path, dataset: Dataset, repeats: int) -> None:
    dtype = np.uint8 if dataset.num_classes <= 256 else np.int64
    labels = np.tile(dataset.labels.numpy().astype(dtype), repeats)
    target = folder / CIFAR_C_LABELS_FILENAME
    if target.is_file():
        try:
            existing = np.load(target, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            existing = None
        if existing is not None and existing.shape == labels.shape and np.array_equal(existing, labels):
            return
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, labels, allow_pickle=False)


def _write_one(target: Path, dataset: Dataset, name: str, severities: tuple[int, ...],
               shape: tuple[int, ...], generator: torch.Generator, preset: str, batch_size: int,
               corrupt: Any, bar: Any) -> None:
    n = len(dataset)
    with atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        try:
            for block, s in enumerate(severities):
                for batch in dataset.batches(batch_size):
                    y = corrupt(batch.inputs, name, s, generator=generator, preset=preset)
                    pixels = torch.round(y.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                    rows = batch.indices.numpy() + block * n
                    out[rows] = pixels
                    bar.advance()
            out.flush()
        finally:
            del out
