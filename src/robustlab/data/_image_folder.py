"""Trees of image files, one subfolder per class, decoded with Pillow per batch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_choice, check_int, fail
from robustlab._constants import IMAGE_EXTENSIONS
from robustlab.data._files import as_path, bad_file, check_split, holdout, missing
from robustlab.data.dataset import Dataset
from robustlab.errors import DataNotFoundError, InvalidTypeError

IMAGE_FOLDER_TEST_NAMES = ("test", "val")
IMAGE_MODES = ("RGB", "L")
#: Pillow modes decoded as one-channel ("L") images when ``mode`` is taken from the first image.
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


class ImageFolderSource:
    """Image files decoded with Pillow per batch (implements :class:`~robustlab.data.InputSource`).

    Parameters
    ----------
    paths : sequence of str or path
        One file per example.
    mode : {"RGB", "L"}, optional
        Colour mode every image is converted to. Default: ``"L"`` if the first image is greyscale,
        else ``"RGB"``.
    size : (int, int), optional
        ``(height, width)`` every image is resized to (bilinear). Default: the first image's size.

    Notes
    -----
    Only the first image's header is read at construction; a corrupt file is reported (as
    :class:`~robustlab.errors.DataFormatError` naming it) by the batch that contains it.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *, mode: str | None = None,
                 size: tuple[int, int] | None = None) -> None:
        self.paths = tuple(str(p) for p in paths)
        if not self.paths:
            fail("paths", "at least one image file", [])
        if mode is not None:
            check_choice("mode", mode, IMAGE_MODES)
        if size is not None:
            size = _check_size(size)
        if mode is None or size is None:
            first_mode, first_size = _peek_image(Path(self.paths[0]))
            mode = mode or ("L" if first_mode in _GRAY_MODES else "RGB")
            size = size or first_size
        self.mode: str = mode
        self.size: tuple[int, int] = size

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return (1 if self.mode == "L" else 3, *self.size)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        """Decode ``indices`` into float32 ``(len(indices), C, H, W)`` in [0, 1]."""
        channels, height, width = self.example_shape
        out = np.empty((indices.numel(), height, width, channels), dtype=np.uint8)
        for row, i in enumerate(indices.cpu().tolist()):
            out[row] = _decode_image(Path(self.paths[i]), self.mode, self.size)
        chw = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
        return torch.from_numpy(chw).to(torch.float32).div_(255.0)


def _check_size(size: Any) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        fail("size", "a (height, width) pair of positive integers", size, error=InvalidTypeError)
    return check_int("size", size[0], low=1), check_int("size", size[1], low=1)


_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)  # Pillow raises all of these on bad files


def _peek_image(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and ``(height, width)`` from the header only."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode, (img.height, img.width)
    except Image.DecompressionBombError as exc:
        bad_file("paths", "readable image files", path, str(exc))
    except FileNotFoundError:
        missing("paths", "existing image files", path)
    except _IMAGE_ERRORS as exc:
        bad_file("paths", "readable image files", path, f"cannot be decoded: {exc}")


def _decode_image(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 ``(H, W, C)``."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if (img.height, img.width) != size:
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        bad_file("paths", "readable image files", path, str(exc))
    except FileNotFoundError:
        missing("paths", "existing image files", path)
    except _IMAGE_ERRORS as exc:
        bad_file("paths", "readable image files", path, f"cannot be decoded: {exc}")
    return array[..., None] if array.ndim == 2 else array


def _class_dirs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _image_files(class_dir: Path) -> list[Path]:
    files = (p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    visible = (p for p in files if not any(part.startswith(".") for part in p.relative_to(class_dir).parts))
    return sorted(visible, key=lambda p: p.relative_to(class_dir).as_posix())


def _image_tree(folder: Path, class_names: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Files and labels of one tree ``folder/<class>/**/<image>``; absent classes contribute nothing."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(class_names):
        files = _image_files(folder / cls) if (folder / cls).is_dir() else []
        paths += files
        labels += [label] * len(files)
    return paths, labels


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    split: str = "all",
    mode: str | None = None,
    size: tuple[int, int] | None = None,
    name: str | None = None,
) -> Dataset:
    """A tree of images, one subfolder per class (torchvision ``ImageFolder`` layout).

    Parameters
    ----------
    root : str or path
        ``root/<class>/**/<image>`` — class names are the subfolder names, sorted — or
        ``root/train/<class>/...`` with ``root/test/...`` (or ``root/val/...``); then class names
        are the sorted union of both. Extensions read: ``IMAGE_EXTENSIONS`` (any case); hidden
        files and folders are skipped; a class folder without images is an error.
    split : {"train", "test", "all"}, default "all"
        The ``train``/``test`` folders when present, else the stratified hold-out of the module
        docstring.
    mode : {"RGB", "L"}, optional
        Colour mode; default from the first image (see :class:`ImageFolderSource`).
    size : (int, int), optional
        ``(height, width)``; default the first image's size.
    name : str, optional
        Default: the folder name.

    Returns
    -------
    Dataset
        Backed by an :class:`ImageFolderSource`: files are decoded per batch, never all at once.
    """
    split = check_split(split)
    root = as_path("root", root)
    if not root.is_dir():
        fail("root", "an existing folder of class subfolders", f"'{root}' (no such folder)",
             describe_got=False, error=DataNotFoundError)
    test_dir = next((root / t for t in IMAGE_FOLDER_TEST_NAMES if (root / t).is_dir()), None)
    trees = [root / "train", test_dir] if (root / "train").is_dir() and test_dir is not None else [root]
    class_names = sorted(set().union(*(_class_dirs(t) for t in trees)))
    if not class_names:
        bad_file("root", "a folder of class subfolders", root, "no subfolders")
    listed = [_image_tree(t, class_names) for t in trees]
    _check_classes_have_images(root, listed, class_names)
    if len(trees) == 2 and split != "all":
        listed = listed[:1] if split == "train" else listed[1:]
    paths = [p for tree_paths, _ in listed for p in tree_paths]
    labels = [k for _, tree_labels in listed for k in tree_labels]
    source = ImageFolderSource(paths, mode=mode, size=size)
    dataset = Dataset(source, torch.tensor(labels, dtype=torch.int64), class_names=class_names,
                      name=name or root.name, kind="image")
    return holdout(dataset, split) if len(trees) == 1 else dataset


def _check_classes_have_images(root: Path, listed: list[tuple[list[Path], list[int]]],
                               class_names: list[str]) -> None:
    found = {k for _, labels in listed for k in labels}
    if not found:
        bad_file("root", "a folder of class subfolders holding images", root,
                 f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class subfolders")
    empty = [c for k, c in enumerate(class_names) if k not in found]
    if empty:
        # As torchvision: an empty class folder is more likely a mistake than a class with no data.
        bad_file("root", "a folder whose class subfolders all hold images", root,
                 f"no image files in class folder(s) {empty[:5]}{' ...' if len(empty) > 5 else ''}")
