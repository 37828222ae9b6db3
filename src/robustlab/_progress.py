"""The one progress helper: a Rich progress bar on a terminal, silent (log lines only) otherwise."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["progress", "Progress"]

logger = logging.getLogger("robustlab")


class Progress:
    """Handle returned by :func:`progress`; ``advance`` and ``update(**fields)`` are no-ops when silent."""

    def __init__(self, bar: Any = None, task: Any = None) -> None:
        self._bar = bar
        self._task = task

    def advance(self, amount: float = 1.0) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def update(self, *, description: str | None = None, **fields: Any) -> None:
        if self._bar is not None:
            kwargs: dict[str, Any] = {"fields": fields} if fields else {}
            if description is not None:
                kwargs["description"] = description
            self._bar.update(self._task, **kwargs)


def _enabled(enabled: bool | None) -> bool:
    if enabled is not None:
        return enabled
    return sys.stderr.isatty()


@contextmanager
def progress(description: str, total: float | None, *, enabled: bool | None = None) -> Iterator[Progress]:
    """Context manager yielding a :class:`Progress`.

    ``enabled=None`` shows a bar only when stderr is a terminal, so logs and CI output stay clean.
    """
    if not _enabled(enabled):
        logger.debug("%s (total=%s)", description, total)
        yield Progress()
        return
    from rich.progress import (  # imported lazily: nothing happens at import time
        BarColumn,
        MofNCompleteColumn,
        Progress as RichProgress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = RichProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield Progress(bar, task)
