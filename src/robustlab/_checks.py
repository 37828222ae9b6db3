"""Input validation shared by every public function.

One code path writes every error message (:func:`fail`), so messages read the same everywhere:

    The 'eps' parameter must be a float in [0, 1]. Got -0.1 instead.

Public functions validate with these helpers and then call private implementations that trust
their inputs (the cleanlab pattern). Nothing here uses ``assert``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from robustlab._constants import IMAGE_RANGE_ATOL, PROB_SUM_ATOL
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    ModelOutputError,
    OutputDirError,
    ShapeError,
    UnknownNameError,
)

__all__ = [
    "describe",
    "fail",
    "check_choice",
    "check_number",
    "check_int",
    "check_probability",
    "check_bool",
    "as_tensor",
    "check_tensor",
    "check_finite",
    "check_images",
    "check_inputs",
    "check_labels",
    "check_logits",
    "check_pred_probs",
    "check_generator",
    "check_rng",
    "check_same_length",
    "check_writable_dir",
]


def describe(value: Any) -> str:
    """Short, single-line description of a value for error messages."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, str):
        text = value if len(value) <= 80 else value[:77] + "..."
        return repr(text)
    if isinstance(value, (Path, numbers.Number, bool)) or value is None:
        return repr(value) if not isinstance(value, Path) else repr(str(value))
    text = repr(value)
    if len(text) > 80:
        text = f"a {type(value).__name__}"
    return text.replace("\n", " ")


def fail(
    name: str,
    expected: str,
    got: Any,
    *,
    error: type[Exception] = InvalidParameterError,
    describe_got: bool = True,
) -> NoReturn:
    """Raise ``error`` with the one message format robustlab uses."""
    got_text = describe(got) if describe_got else str(got)
    raise error(f"The '{name}' parameter must be {expected}. Got {got_text} instead.")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices`` (case-sensitive); the error lists valid names."""
    options = sorted(choices)
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(repr(o) for o in options)
        fail(name, f"one of {{{listed}}}", value, error=UnknownNameError)
    return value


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check a real number, finite, inside an interval; return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(name, f"a real number{_interval_text(low, high, low_inclusive, high_inclusive)}", value,
             error=InvalidTypeError)
    value = float(value)
    if not math.isfinite(value) or not _in_interval(value, low, high, low_inclusive, high_inclusive):
        fail(name, f"a finite real number{_interval_text(low, high, low_inclusive, high_inclusive)}", value)
    return value


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
) -> int:
    """Check an integer (not bool) in ``[low, high]``; return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, f"an integer{_interval_text(low, high, True, True)}", value, error=InvalidTypeError)
    value = int(value)
    if not _in_interval(value, low, high, True, True):
        fail(name, f"an integer{_interval_text(low, high, True, True)}", value)
    return value


def check_probability(name: str, value: Any, *, allow_zero: bool = True, allow_one: bool = True) -> float:
    """Check a probability in [0, 1] (endpoints optional)."""
    return check_number(name, value, low=0.0, high=1.0, low_inclusive=allow_zero, high_inclusive=allow_one)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        fail(name, "a bool", value, error=InvalidTypeError)
    return bool(value)


def _in_interval(v: float, low: float | None, high: float | None, li: bool, hi: bool) -> bool:
    if low is not None and (v < low or (v == low and not li)):
        return False
    if high is not None and (v > high or (v == high and not hi)):
        return False
    return True


def _interval_text(low: float | None, high: float | None, li: bool, hi: bool) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>=' if li else '>'} {low}"
    if low is None:
        return f" {'<=' if hi else '<'} {high}"
    return f" in {'[' if li else '('}{low}, {high}{']' if hi else ')'}"


def as_tensor(name: str, value: Any, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Accept a tensor or a NumPy array / nested list; return a tensor (no copy when possible)."""
    if isinstance(value, torch.Tensor):
        out = value
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            fail(name, "a numeric tensor or array", value, error=InvalidTypeError)
        out = torch.from_numpy(np.ascontiguousarray(value))
    elif isinstance(value, (list, tuple)):
        try:
            out = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError):
            fail(name, "a numeric tensor or array", value, error=InvalidTypeError)
    else:
        fail(name, "a torch.Tensor or numpy.ndarray", value, error=InvalidTypeError)
    if dtype is not None and out.dtype != dtype:
        out = out.to(dtype)
    return out


def check_tensor(name: str, x: Any, *, ndim: int | Sequence[int] | None = None,
                 dims: str | None = None) -> torch.Tensor:
    """Check the number of dimensions; ``dims`` names them for the message (e.g. ``"N, C, H, W"``)."""
    x = as_tensor(name, x)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and x.ndim not in allowed:
        want = f"{dims} ({'/'.join(str(a) for a in allowed)} dims)" if dims else f"{'/'.join(map(str, allowed))}-dimensional"
        raise ShapeError(
            f"The '{name}' parameter must have shape ({want}). Got {describe(x)} instead.",
            expected=allowed, got=tuple(x.shape),
        )
    return x


def check_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    """Reject NaN and infinity."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise InvalidParameterError(
            f"The '{name}' parameter must contain only finite values. Got {n_bad} NaN/inf "
            f"value(s) in {describe(x)} instead."
        )
    return x


def check_images(name: str, x: Any) -> torch.Tensor:
    """Images: float ``(N, C, H, W)`` in [0, 1], finite (DESIGN.md contract)."""
    x = check_tensor(name, x, ndim=4, dims="N, C, H, W")
    if not x.is_floating_point():
        fail(name, "a float tensor of images in [0, 1] (divide uint8 images by 255)", x,
             error=InvalidTypeError)
    check_finite(name, x)
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < -IMAGE_RANGE_ATOL or hi > 1 + IMAGE_RANGE_ATOL:
            raise InvalidParameterError(
                f"The '{name}' parameter must hold images with values in [0, 1] (not normalised; "
                f"normalisation is a layer inside the model). Got values in [{lo:.4g}, {hi:.4g}] instead."
            )
    return x


def check_inputs(name: str, x: Any) -> torch.Tensor:
    """Model inputs: float tensor with a batch dimension, finite. Images or tabular ``(N, D)``."""
    x = check_tensor(name, x, ndim=(2, 3, 4, 5), dims="N, ...")
    if not x.is_floating_point():
        fail(name, "a float tensor", x, error=InvalidTypeError)
    return check_finite(name, x)


def check_labels(
    name: str,
    labels: Any,
    *,
    num_classes: int | None = None,
    n: int | None = None,
) -> torch.Tensor:
    """Labels: integer ``(N,)`` in ``[0, num_classes)``; returned as int64."""
    labels = check_tensor(name, labels, ndim=1, dims="N")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        if labels.is_floating_point() and labels.numel() and bool((labels == labels.round()).all()) \
                and bool(torch.isfinite(labels).all()):
            fail(name, "an integer tensor (int64 class indices), not float", labels,
                 error=InvalidTypeError)
        fail(name, "an integer tensor of class indices", labels, error=InvalidTypeError)
    labels = labels.to(torch.int64)
    if n is not None and labels.shape[0] != n:
        raise ShapeError(
            f"The '{name}' parameter must have {n} entries (one per example). Got {labels.shape[0]} instead.",
            expected=(n,), got=tuple(labels.shape),
        )
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        upper = f"{num_classes - 1}" if num_classes is not None else "inf"
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            raise InvalidParameterError(
                f"The '{name}' parameter must hold class indices in [0, {upper}]. "
                f"Got values in [{lo}, {hi}] instead."
            )
    return labels


def check_logits(name: str, logits: Any, *, n: int | None = None, num_classes: int | None = None,
                 error: type[Exception] = ModelOutputError) -> torch.Tensor:
    """Scores ``(N, K)``; ``error`` defaults to :class:`ModelOutputError` since logits come from models."""
    if not isinstance(logits, torch.Tensor):
        raise error(f"The '{name}' must be a tensor of logits of shape (N, K). Got {describe(logits)} instead.")
    if logits.ndim != 2:
        raise error(f"The '{name}' must have shape (N, K). Got {describe(logits)} instead.")
    if n is not None and logits.shape[0] != n:
        raise error(f"The '{name}' must have one row per input ({n}). Got {describe(logits)} instead.")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise error(
            f"The '{name}' must have {num_classes} columns (one per class of the data). "
            f"Got {describe(logits)} instead."
        )
    return logits


def check_pred_probs(name: str, pred_probs: Any, *, n: int | None = None,
                     num_classes: int | None = None) -> torch.Tensor:
    """``pred_probs``: float ``(N, K)``, finite, non-negative, rows summing to one."""
    p = check_tensor(name, pred_probs, ndim=2, dims="N, K")
    if not p.is_floating_point():
        fail(name, "a float tensor of probabilities", p, error=InvalidTypeError)
    check_finite(name, p)
    check_logits(name, p, n=n, num_classes=num_classes, error=ShapeError)
    if p.numel():
        if float(p.min()) < 0:
            fail(name, "non-negative probabilities", f"minimum {float(p.min()):.4g}", describe_got=False)
        dev = float((p.sum(dim=1) - 1).abs().max())
        if dev > PROB_SUM_ATOL:
            fail(name, "rows summing to 1", f"a row sum off by {dev:.3g}", describe_got=False)
    return p


def check_generator(name: str, generator: Any) -> torch.Generator:
    """Randomness is explicit: a ``torch.Generator`` is required, ``None`` is refused."""
    if not isinstance(generator, torch.Generator):
        fail(name, "a torch.Generator (e.g. torch.Generator().manual_seed(0)); robustlab never "
             "uses the global RNG", generator, error=InvalidTypeError)
    return generator


def check_rng(name: str, rng: Any) -> np.random.Generator:
    """Randomness is explicit: a ``numpy.random.Generator`` is required."""
    if not isinstance(rng, np.random.Generator):
        fail(name, "a numpy.random.Generator (e.g. numpy.random.default_rng(0))", rng,
             error=InvalidTypeError)
    return rng


def check_same_length(names: Sequence[str], *values: Any) -> int:
    lengths = [len(v) for v in values]
    if len(set(lengths)) > 1:
        pairs = ", ".join(f"'{n}' has {ln}" for n, ln in zip(names, lengths))
        raise ShapeError(f"The parameters {', '.join(repr(n) for n in names)} must have the same "
                         f"length. Got: {pairs}.", expected=lengths[0], got=lengths)
    return lengths[0]


def check_writable_dir(name: str, path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check it is a writable folder."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputDirError(f"The '{name}' parameter must be a folder. Got {str(p)!r}, which is a file.") from None
    except OSError as exc:
        raise OutputDirError(
            f"The '{name}' parameter must be a folder that can be created. Got {str(p)!r}: {exc.strerror}."
        ) from None
    if not p.is_dir():
        raise OutputDirError(f"The '{name}' parameter must be a folder. Got {str(p)!r}, which is not a folder.")
    probe = p / f".robustlab-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputDirError(
            f"The '{name}' parameter must be a writable folder. Got {str(p)!r}: {exc.strerror}."
        ) from None
    return p
