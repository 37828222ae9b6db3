"""Exceptions raised by robustlab.

Every error a user can trigger is a :class:`RobustlabError`. Each subclass also derives from the
built-in exception a Python user would expect (``ValueError``, ``TypeError``, ``FileNotFoundError``),
so ``except ValueError`` keeps working. Messages name the argument, what was expected and what came,
on one line; the CLI prints them as they are and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "RobustlabError",
    "InvalidParameterError",
    "InvalidTypeError",
    "ShapeError",
    "UnknownNameError",
    "DataFormatError",
    "DataNotFoundError",
    "CheckpointError",
    "NotFittedError",
    "ModelOutputError",
    "OutputDirError",
]


class RobustlabError(Exception):
    """Base class of every error robustlab raises on purpose."""


class InvalidParameterError(RobustlabError, ValueError):
    """A parameter has a value outside what the function accepts."""


class InvalidTypeError(RobustlabError, TypeError):
    """A parameter has the wrong type."""


class ShapeError(InvalidParameterError):
    """A tensor or array has the wrong shape (number or size of dimensions)."""

    def __init__(self, message: str, *, expected: object = None, got: object = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


class UnknownNameError(InvalidParameterError):
    """A name (model, method, probe, dataset, ...) is not registered; the message lists valid ones."""


class DataFormatError(RobustlabError, ValueError):
    """A data file exists but is malformed; the message names the file and what was wrong."""


class DataNotFoundError(RobustlabError, FileNotFoundError):
    """A data file or folder is missing; the message names it and where robustlab looked."""


class CheckpointError(RobustlabError, ValueError):
    """A checkpoint or model file is corrupt, truncated, unsafe or does not match its config."""


class NotFittedError(RobustlabError, ValueError):
    """An estimator was used before ``fit``."""


class ModelOutputError(RobustlabError, ValueError):
    """A model returned something that is not ``(N, K)`` logits for the data it was given."""


class OutputDirError(RobustlabError, OSError):
    """An output folder cannot be created or written."""
