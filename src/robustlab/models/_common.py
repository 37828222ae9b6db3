"""Validation shared by the architecture factories (each factory is public and validates itself)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from robustlab._checks import check_int, describe, fail
from robustlab._constants import MIN_IMAGE_SIZE
from robustlab.errors import InvalidParameterError, InvalidTypeError
from robustlab.models.layers import Normalize, Stats

__all__ = ["check_input_shape", "check_num_classes", "check_positive_ints", "make_normalize"]

_SHAPE_TEXT = "a tuple of positive ints: (C, H, W) for images or (D,) for tabular data"


def check_input_shape(input_shape: Any, *, model: str | None = None) -> tuple[int, ...]:
    """Per-example shape ``(C, H, W)`` or ``(D,)``.

    With ``model`` given, the shape must be an image of at least ``MIN_IMAGE_SIZE`` pixels a side
    (the convolutional architectures downsample three times).
    """
    shape = _int_tuple("input_shape", input_shape, _SHAPE_TEXT)
    if len(shape) not in (1, 3) or min(shape) < 1:
        fail("input_shape", _SHAPE_TEXT, shape)
    if model is not None and (len(shape) != 3 or min(shape[1:]) < MIN_IMAGE_SIZE):
        fail("input_shape", f"an image shape (C, H, W) with H and W >= {MIN_IMAGE_SIZE} for model "
             f"{model!r} (use 'mlp' for tabular data)", shape)
    return shape


def check_num_classes(num_classes: Any) -> int:
    return check_int("num_classes", num_classes, low=2)


def check_positive_ints(name: str, value: Any, *, length: int | None = None,
                        allow_empty: bool = False) -> tuple[int, ...]:
    """A sequence of positive ints (layer widths), returned as a tuple."""
    what = f"a sequence of {length} positive ints" if length is not None else "a sequence of positive ints"
    out = _int_tuple(name, value, what)
    if (length is not None and len(out) != length) or (not out and not allow_empty) \
            or any(v < 1 for v in out):
        fail(name, what, out)
    return out


def _int_tuple(name: str, value: Any, what: str) -> tuple[int, ...]:
    """A sequence (not a string) of ints (not bools) as a tuple; anything else is a type error."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        fail(name, what, value, error=InvalidTypeError)
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        fail(name, what, value, error=InvalidTypeError)
    return tuple(int(v) for v in value)


def make_normalize(input_shape: tuple[int, ...], mean: Stats | None, std: Stats | None) -> Normalize:
    """The input layer: ``(x - mean) / std`` per channel (images) or per feature (tabular).

    ``None`` means the identity (mean 0, std 1). The layer is always present, so every model of an
    architecture has the same state-dict keys whether or not it was given statistics.
    """
    channels = input_shape[0]
    mean = 0.0 if mean is None else mean
    std = 1.0 if std is None else std
    unit = "channel" if len(input_shape) == 3 else "feature"
    for name, value in (("mean", mean), ("std", std)):
        n = _length(name, value)
        if n not in (1, channels):
            raise InvalidParameterError(
                f"The '{name}' parameter must be a float or {channels} values (one per {unit} of "
                f"input_shape {input_shape}). Got {describe(value)} with {n} values instead.")
    layer = Normalize(mean, std, spatial_dims=len(input_shape) - 1)
    if layer.num_channels != channels:  # both given as one value: broadcast to every channel
        layer = Normalize(layer.mean.flatten().expand(channels), layer.std.flatten().expand(channels),
                          spatial_dims=len(input_shape) - 1)
    return layer


def _length(name: str, value: Any) -> int:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return 1
    try:
        return len(value) if not hasattr(value, "numel") else int(value.numel())
    except TypeError:
        fail(name, "a float, a sequence of floats or a tensor", value, error=InvalidTypeError)
