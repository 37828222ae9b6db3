"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors, numbers, strings, bools, None, lists and dicts only, so loading
it never runs code from the file. Writing goes to a temporary file in the same folder, is flushed
to disk, then renamed over the previous checkpoint with :func:`os.replace` (atomic on POSIX and
Windows): a process killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robustlab._checks import fail
from robustlab._io import atomic_path
from robustlab.errors import CheckpointError, InvalidTypeError

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

#: Marker and version stored in every training checkpoint; readers refuse other formats and newer
#: versions instead of misreading them.
CHECKPOINT_FORMAT = "robustlab-training-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename).

    ``format`` and ``version`` keys are added. Returns the path written.
    """
    if not isinstance(state, Mapping):
        fail("state", "a dict", state, error=InvalidTypeError)
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on CPU).

    Raises
    ------
    CheckpointError
        The file is missing, truncated, not a robustlab training checkpoint, from a newer
        robustlab, or holds objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Cannot resume: no checkpoint at {str(path)!r}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to unpickle means the file is unusable; say which file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"The checkpoint {str(path)!r} is corrupt or unsafe to load: {reason}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"The file {str(path)!r} is not a robustlab training checkpoint.")
    version = state.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"The checkpoint {str(path)!r} has format version {version!r}; this robustlab reads "
            f"versions up to {CHECKPOINT_VERSION}.")
    return state
