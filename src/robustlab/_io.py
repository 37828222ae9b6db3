"""Crash-safe file writes shared by every package that stores something.

A file is written to a temporary name in the same folder, flushed to disk, then renamed over the
target with :func:`os.replace` (atomic on POSIX and Windows), and the folder entry is synced. A
run killed at any moment therefore leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["temp_path", "fsync_file", "fsync_dir", "atomic_path", "atomic_write_text"]


def temp_path(target: Path) -> Path:
    """A hidden, unique temporary name next to ``target`` (same file system, so rename is atomic)."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable; best effort (not possible on Windows or some file systems)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` atomically.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``target`` is
    left as it was.
    """
    target = Path(target)
    tmp = temp_path(target)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically; the file mode follows the umask."""
    with atomic_path(target) as tmp:
        # os.open with 0o666 lets the umask decide the mode, as for any file the user writes.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
