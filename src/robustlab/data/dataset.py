"""The :class:`Dataset` container: inputs, int64 labels, class names and a name.

Inputs live behind an *input source* so that in-memory tensors, uint8 arrays (including
``numpy.memmap`` files) and folders of image files are iterated the same way, in batches, without
materialising a float32 copy of everything:

* :class:`TensorSource` — a float tensor already in memory (digits, tabular data).
* :class:`ArraySource` — a NumPy array (``uint8`` images are divided by 255 *per batch*; ``NHWC``
  layouts are transposed per batch), so CIFAR-scale data costs its uint8 size, not 4x that.
* :class:`~robustlab.data.loaders.ImageFolderSource` — file paths, decoded with Pillow per batch.

Images follow the DESIGN.md contract: float ``(N, C, H, W)`` in [0, 1], not normalised.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from robustlab._checks import (
    as_tensor,
    check_choice,
    check_generator,
    check_images,
    check_inputs,
    check_int,
    check_labels,
    fail,
)
from robustlab._constants import EVAL_BATCH_SIZE
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError

__all__ = ["Dataset", "Batch", "InputSource", "TensorSource", "ArraySource"]

KINDS = ("image", "tabular")

#: Examples per chunk when validating float array inputs (bounded memory for memmaps).
_VALIDATE_CHUNK = 4096


@runtime_checkable
class InputSource(Protocol):
    """Anything that can load a batch of inputs by index as a float tensor."""

    def __len__(self) -> int: ...

    @property
    def example_shape(self) -> tuple[int, ...]: ...

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        """Return float32 inputs for ``indices`` (int64, 1-D), shape ``(len(indices), *example_shape)``."""
        ...


class TensorSource:
    """Float tensor already in memory."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __len__(self) -> int:
        return int(self.tensor.shape[0])

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape[1:])

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        return self.tensor.index_select(0, indices.to(self.tensor.device))


class ArraySource:
    """NumPy array (possibly a memmap); converted to float per batch.

    Parameters
    ----------
    array : ndarray
        ``uint8`` (scaled by 1/255) or floating point.
    channels_last : bool, default False
        ``True`` for ``(N, H, W, C)`` storage (CIFAR pickles, .npy dumps); transposed per batch.
    """

    def __init__(self, array: np.ndarray, *, channels_last: bool = False) -> None:
        if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
            fail("inputs", "a uint8 or floating point array", array, error=InvalidTypeError)
        if channels_last and array.ndim != 4:
            fail("inputs", "a 4-dimensional (N, H, W, C) array when channels_last=True", array,
                 error=ShapeError)
        self.array = array
        self.channels_last = channels_last

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def example_shape(self) -> tuple[int, ...]:
        shape = tuple(self.array.shape[1:])
        if self.channels_last:
            h, w, c = shape
            return (c, h, w)
        return shape

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        idx = indices.cpu().numpy()
        # Sorted reads are much faster on a memmap; undo the order afterwards.
        order = np.argsort(idx, kind="stable")
        chunk = np.asarray(self.array[idx[order]])
        chunk = chunk[np.argsort(order, kind="stable")]
        if self.channels_last:
            chunk = chunk.transpose(0, 3, 1, 2)
        out = torch.from_numpy(np.ascontiguousarray(chunk))
        if out.dtype == torch.uint8:
            return out.to(torch.float32).div_(255.0)
        return out.to(torch.float32)


class Batch(NamedTuple):
    """One batch: float inputs, int64 labels and the examples' indices in the dataset."""

    inputs: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


def _to_source(inputs: Any) -> InputSource:
    if isinstance(inputs, torch.Tensor):
        if not inputs.is_floating_point():
            if inputs.dtype == torch.uint8:
                return ArraySource(inputs.cpu().numpy())
            fail("inputs", "a float tensor (or uint8 images)", inputs, error=InvalidTypeError)
        return TensorSource(inputs)
    if isinstance(inputs, np.ndarray):
        return ArraySource(inputs)
    if isinstance(inputs, InputSource):
        return inputs
    fail("inputs", "a torch.Tensor, numpy.ndarray or InputSource", inputs, error=InvalidTypeError)


@dataclass(frozen=True)
class _Meta:
    name: str
    kind: str
    class_names: tuple[str, ...]


class Dataset:
    """A labelled dataset.

    Parameters
    ----------
    inputs : Tensor, ndarray or InputSource
        Images ``(N, C, H, W)`` in [0, 1] (``uint8`` arrays are scaled per batch) or tabular ``(N, D)``.
    labels : Tensor or ndarray of int, shape (N,)
        Class indices in ``[0, num_classes)``.
    class_names : sequence of str, optional
        One name per class; defaults to ``"0", "1", ...``. Its length fixes ``num_classes``, so a
        class with no examples still counts.
    name : str, default "dataset"
    kind : {"image", "tabular"}, optional
        Inferred from the input rank when omitted (4-D per batch -> image).
    validate : bool, default True
        For in-memory float inputs, check finiteness (and [0, 1] for images) once, up front.

    Examples
    --------
    >>> import torch
    >>> ds = Dataset(torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2]), name="toy")
    >>> len(ds), ds.num_classes, ds.input_shape, ds.kind
    (6, 3, (1, 4, 4), 'image')
    >>> [tuple(b.inputs.shape) for b in ds.batches(4)]
    [(4, 1, 4, 4), (2, 1, 4, 4)]
    """

    def __init__(
        self,
        inputs: Any,
        labels: Any,
        *,
        class_names: Sequence[str] | None = None,
        name: str = "dataset",
        kind: str | None = None,
        validate: bool = True,
    ) -> None:
        source = _to_source(inputs)
        shape = tuple(source.example_shape)
        if len(shape) not in (1, 3):
            raise ShapeError(
                f"The 'inputs' parameter must have shape (N, C, H, W) for images or (N, D) for tabular "
                f"data. Got per-example shape {shape} instead.", expected="(C, H, W) or (D,)", got=shape)
        labels_t = check_labels("labels", as_tensor("labels", labels), n=len(source))
        if class_names is None:
            k = int(labels_t.max()) + 1 if labels_t.numel() else 0
            class_names = tuple(str(i) for i in range(k))
        else:
            class_names = tuple(str(c) for c in class_names)
            if len(set(class_names)) != len(class_names):
                fail("class_names", "unique names", list(class_names))
        labels_t = check_labels("labels", labels_t, num_classes=len(class_names))
        if kind is None:
            kind = "image" if len(shape) == 3 else "tabular"
        check_choice("kind", kind, KINDS)
        if kind == "image" and len(shape) != 3:
            fail("inputs", "images of shape (N, C, H, W) when kind='image'", f"per-example shape {shape}",
                 describe_got=False, error=ShapeError)
        self._source = source
        self._labels = labels_t.cpu()
        self._meta = _Meta(name=str(name), kind=kind, class_names=class_names)
        if validate:
            self._validate_inputs()

    def _validate_inputs(self) -> None:
        """Check finiteness (and [0, 1] for images) of in-memory or float array inputs, once.

        uint8 arrays are in range by construction and file-backed sources (image folders) are
        decoded to [0, 1] by their loader, so only float storage needs reading; it is read in
        chunks so a float memmap is never loaded whole.
        """
        check = check_images if self.kind == "image" else check_inputs
        if isinstance(self._source, TensorSource):
            check("inputs", self._source.tensor)
        elif isinstance(self._source, ArraySource) and self._source.array.dtype != np.uint8:
            for start in range(0, len(self), _VALIDATE_CHUNK):
                idx = torch.arange(start, min(start + _VALIDATE_CHUNK, len(self)))
                check("inputs", self._source.load(idx))

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        return self._meta.name

    @property
    def kind(self) -> str:
        """``"image"`` or ``"tabular"``."""
        return self._meta.kind

    @property
    def is_image(self) -> bool:
        return self._meta.kind == "image"

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._meta.class_names

    @property
    def num_classes(self) -> int:
        return len(self._meta.class_names)

    @property
    def labels(self) -> torch.Tensor:
        """int64 labels, shape ``(N,)`` (a copy: changing it does not change the dataset)."""
        return self._labels.clone()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-example shape: ``(C, H, W)`` or ``(D,)``."""
        return tuple(self._source.example_shape)

    @property
    def source(self) -> InputSource:
        return self._source

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, kind={self.kind!r})")

    def class_counts(self) -> torch.Tensor:
        """Number of examples per class, int64 ``(num_classes,)`` (zeros included)."""
        return torch.bincount(self._labels, minlength=self.num_classes)

    # ------------------------------------------------------------------ access
    def load(self, indices: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (float32) and labels for ``indices``."""
        idx = self._check_indices(indices)
        return self._source.load(idx), self._labels.index_select(0, idx)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All inputs and labels in memory. Meant for small data (digits, tabular, subsets)."""
        return self.load(torch.arange(len(self)))

    def batches(
        self,
        batch_size: int = EVAL_BATCH_SIZE,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Iterate over :class:`Batch` es; the same for in-memory and on-disk sources.

        ``shuffle=True`` needs a ``generator`` (randomness is explicit).
        """
        check_int("batch_size", batch_size, low=1)
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=check_generator("generator", generator))
        else:
            order = torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield Batch(self._source.load(idx), self._labels.index_select(0, idx), idx)

    def num_batches(self, batch_size: int, *, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    # ------------------------------------------------------------------ derived datasets
    def subset(self, indices: Any, *, name: str | None = None) -> Dataset:
        """A dataset holding only ``indices`` (shares the underlying storage)."""
        idx = self._check_indices(indices)
        return Dataset(
            _SubsetSource(self._source, idx),
            self._labels.index_select(0, idx),
            class_names=self.class_names,
            name=name or self.name,
            kind=self.kind,
            validate=False,
        )

    def with_labels(self, labels: Any, *, name: str | None = None) -> Dataset:
        """Same inputs, new labels (e.g. after injecting label noise); the original is unchanged."""
        labels_t = check_labels("labels", as_tensor("labels", labels), num_classes=self.num_classes,
                                n=len(self))
        return Dataset(self._source, labels_t.clone(), class_names=self.class_names,
                       name=name or self.name, kind=self.kind, validate=False)

    def _check_indices(self, indices: Any) -> torch.Tensor:
        idx = as_tensor("indices", indices)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                fail("indices", f"a boolean mask of length {len(self)}", idx, error=ShapeError)
            return idx.nonzero().flatten()
        if idx.is_floating_point() or idx.ndim != 1:
            fail("indices", "a 1-D integer tensor of indices or a boolean mask", idx, error=InvalidTypeError)
        idx = idx.to(torch.int64).cpu()
        if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise InvalidParameterError(
                f"The 'indices' parameter must hold indices in [0, {len(self) - 1}]. Got values in "
                f"[{int(idx.min())}, {int(idx.max())}] instead.")
        return torch.where(idx < 0, idx + len(self), idx)

    def info(self) -> dict[str, Any]:
        """Summary used by ``robustlab data info``."""
        counts = self.class_counts().tolist()
        return {
            "name": self.name,
            "kind": self.kind,
            "num_examples": len(self),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "class_counts": counts,
            "storage": _storage_name(self._source),
        }


def _storage_name(source: InputSource) -> str:
    if isinstance(source, _SubsetSource):
        return f"subset of {_storage_name(source.base)}"
    return type(source).__name__


class _SubsetSource:
    def __init__(self, base: InputSource, indices: torch.Tensor) -> None:
        if isinstance(base, _SubsetSource):  # flatten nested subsets
            indices = base.indices.index_select(0, indices)
            base = base.base
        self.base = base
        self.indices = indices

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.base.example_shape)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        return self.base.load(self.indices.index_select(0, indices.cpu()))
