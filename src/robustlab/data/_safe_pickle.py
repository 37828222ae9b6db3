"""Load pickles that may only hold plain data and NumPy arrays.

A pickle can run arbitrary code when loaded, so dataset pickles (CIFAR python batches) go through
an unpickler that resolves only the globals NumPy needs to rebuild arrays. Anything else — ``os``,
``builtins.eval``, a user class — is refused before it is called.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
from typing import IO, Any

__all__ = ["RefusedGlobalError", "safe_pickle_load"]


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; ``str(error)`` is ``module.name``."""


def _numpy_core(submodule: str) -> Any:
    # NumPy 2 renamed numpy.core to numpy._core; importing the old name warns.
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }
    # Old files (CIFAR's, written by Python 2 + NumPy 1) name numpy.core; NumPy 2 writes numpy._core.
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], *, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise RefusedGlobalError(f"{module}.{name}")
        return obj


def safe_pickle_load(file: IO[bytes], *, encoding: str = "bytes") -> Any:
    """Unpickle ``file`` allowing only builtin containers/scalars and NumPy arrays, dtypes and scalars.

    Parameters
    ----------
    file : binary file object
    encoding : str, default "bytes"
        How Python 2 ``str`` objects are decoded; ``"bytes"`` keeps them as ``bytes`` (CIFAR keys
        are then ``b"data"``, ``b"labels"``, ...).

    Raises
    ------
    RefusedGlobalError
        The pickle refers to any other global (it could execute code).
    pickle.UnpicklingError, EOFError, ...
        Whatever a malformed pickle raises; callers turn these into ``DataFormatError``.
    """
    return _RestrictedUnpickler(file, encoding=encoding).load()
