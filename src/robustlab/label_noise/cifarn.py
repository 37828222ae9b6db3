"""Loader for the real human label files of CIFAR-10N and CIFAR-100N (Wei et al., ICLR 2022).

The released files (github.com/UCSC-REAL/cifar-10-100n, ``data/``) are ``torch.save``-d dicts of
label arrays for the 50,000 CIFAR training images, in the order of the official CIFAR python
batches:

* ``CIFAR-10_human.pt``: ``clean_label``, ``aggre_label`` (majority of three annotators),
  ``worse_label`` (a wrong label whenever one annotator gave one), ``random_label1..3`` (each of
  the three annotators);
* ``CIFAR-100_human.pt``: ``clean_label``, ``noisy_label`` (fine classes) and
  ``clean_coarse_label``, ``noisy_coarse_label`` (the 20 super-classes).

They are read with ``torch.load(weights_only=True)`` and an allow-list of the NumPy globals needed
to rebuild arrays; any other global (code execution) is refused. ``.npy`` files holding the same
dict (``np.save`` of a dict, read with robustlab's restricted unpickler) and ``.npz`` archives with
the same keys are accepted too.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_choice, check_int, fail
from robustlab._constants import (
    CIFAR10N_FILENAME,
    CIFAR10N_KEYS,
    CIFAR100_COARSE_CLASSES,
    CIFAR100N_FILENAME,
    CIFAR100N_KEYS,
    CIFAR100N_OPTIONAL_KEYS,
)
from robustlab.errors import DataFormatError, DataNotFoundError, InvalidTypeError
from robustlab.label_noise.simulate import NoisyLabels

__all__ = ["CIFAR_N_VARIANTS", "CifarNLabels", "load_cifar_n"]

#: ``variant`` values of :func:`load_cifar_n`.
CIFAR_N_VARIANTS = ("cifar10n", "cifar100n")

_SUFFIXES = (".pt", ".npy", ".npz")


@dataclass(frozen=True, eq=False)
class CifarNLabels:
    """Label arrays of a CIFAR-N file.

    Attributes
    ----------
    variant : {"cifar10n", "cifar100n"}
    path : Path
    labels : dict of str -> Tensor of int64, shape (N,)
        Every label array in the file under its released key.
    num_classes : int
        10 or 100 (fine classes).
    """

    variant: str
    path: Path
    labels: dict[str, torch.Tensor]
    num_classes: int

    @property
    def clean(self) -> torch.Tensor:
        """The original CIFAR labels (``clean_label``)."""
        return self.labels["clean_label"].clone()

    @property
    def noisy_keys(self) -> tuple[str, ...]:
        """Keys of the human (noisy) label sets, fine classes only."""
        keys = CIFAR10N_KEYS[1:] if self.variant == "cifar10n" else ("noisy_label",)
        return tuple(k for k in keys if k in self.labels)

    def noise_rates(self) -> dict[str, float]:
        """Fraction of labels that differ from the clean ones, per noisy key (coarse keys vs the
        clean coarse labels)."""
        out = {k: float((self.labels[k] != self.labels["clean_label"]).double().mean())
               for k in self.noisy_keys}
        if "noisy_coarse_label" in self.labels and "clean_coarse_label" in self.labels:
            out["noisy_coarse_label"] = float(
                (self.labels["noisy_coarse_label"] != self.labels["clean_coarse_label"]).double().mean())
        return out

    def as_noisy_labels(self, key: str) -> NoisyLabels:
        """One human label set as :class:`~robustlab.label_noise.NoisyLabels` (clean labels attached)."""
        options = self.noisy_keys + (("noisy_coarse_label",) if "noisy_coarse_label" in self.labels
                                     and "clean_coarse_label" in self.labels else ())
        check_choice("key", key, options)
        clean = self.labels["clean_coarse_label" if key == "noisy_coarse_label" else "clean_label"]
        noisy = self.labels[key]
        mask = noisy != clean
        return NoisyLabels(labels=noisy.clone(), noise_mask=mask, transition=None,
                           realised_rate=float(mask.double().mean()) if mask.numel() else 0.0,
                           kind=f"{self.variant}-{key}", params={"path": str(self.path), "key": key},
                           clean_labels=clean.clone())

    def annotations(self) -> torch.Tensor:
        """CIFAR-10N's three individual annotators as an ``(N, 3)`` matrix (for Dawid-Skene)."""
        if self.variant != "cifar10n":
            raise DataFormatError(f"The CIFAR-N file '{self.path}' is CIFAR-100N, which has one "
                                  "annotator per image; per-annotator labels exist only in CIFAR-10N.")
        return torch.stack([self.labels[f"random_label{i}"] for i in (1, 2, 3)], dim=1)


def load_cifar_n(path: str | Path, *, variant: str | None = None,
                 num_examples: int | None = None) -> CifarNLabels:
    """Read a CIFAR-10N / CIFAR-100N label file.

    Parameters
    ----------
    path : str or Path
        The file (``CIFAR-10_human.pt``, ``CIFAR-100_human.pt``, or a ``.npy`` / ``.npz`` with the
        same keys), or a folder holding one of the released names.
    variant : {"cifar10n", "cifar100n"}, optional
        Which key set to require; inferred from the keys when omitted (``aggre_label`` ->
        CIFAR-10N, ``noisy_label`` -> CIFAR-100N).
    num_examples : int, optional
        Required length of every label array (50,000 for the released files, or the size of the
        CIFAR training set they are used with).

    Returns
    -------
    CifarNLabels

    Raises
    ------
    DataNotFoundError
        The file (or a released name inside the folder) does not exist.
    DataFormatError
        Unreadable file, a pickle that needs code execution, a missing key, a label array that
        is not 1-D integers in range, or arrays of different lengths — one line naming the file
        and the key.
    """
    if variant is not None:
        check_choice("variant", variant, CIFAR_N_VARIANTS)
    if num_examples is not None:
        num_examples = check_int("num_examples", num_examples, low=1)
    if not isinstance(path, (str, Path)):
        fail("path", "a file or folder path", path, error=InvalidTypeError)
    file = _resolve(Path(path), variant)
    raw = _read(file)
    return _validate(file, raw, variant, num_examples)


def _resolve(path: Path, variant: str | None) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        stems = {"cifar10n": [Path(CIFAR10N_FILENAME).stem], "cifar100n": [Path(CIFAR100N_FILENAME).stem]}
        wanted = stems[variant] if variant else stems["cifar10n"] + stems["cifar100n"]
        found = [path / f"{s}{suf}" for s in wanted for suf in _SUFFIXES if (path / f"{s}{suf}").is_file()]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise DataFormatError(f"The folder '{path}' holds several CIFAR-N label files ({names}); "
                                  "pass the file itself or 'variant'.")
        raise DataNotFoundError(f"No CIFAR-N label file in '{path}' (looked for "
                                f"{', '.join(s + suf for s in wanted for suf in _SUFFIXES)}).")
    raise DataNotFoundError(f"The CIFAR-N label file '{path}' does not exist (looked at "
                            f"{path.resolve()}).")


def _torch_safe_globals() -> list[tuple[Any, str]]:
    from robustlab.data._safe_pickle import _allowed_globals

    allowed: list[Any] = [(obj, f"{module}.{name}") for (module, name), obj in _allowed_globals().items()]
    # numpy.dtype(...) returns instances of per-type classes (numpy.dtypes.Int64DType, ...) whose
    # state torch's unpickler sets; they hold no code, only the byte order and flags.
    allowed += sorted({type(np.dtype(c)) for c in np.typecodes["All"] if c not in "OV"}, key=str)
    return allowed


def _read(file: Path) -> Any:
    suffix = file.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(file, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        if suffix == ".npy":
            return _read_npy(file)
        with torch.serialization.safe_globals(_torch_safe_globals()):
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"GLOBAL (\S+)", text) or re.search(r"^([\w.]+\.\w+)$", text.strip())
        if found or "Unsupported" in text or "global" in text.lower():
            what = f" (it names {found.group(1)!r})" if found else ""
            raise DataFormatError(f"The CIFAR-N label file '{file}' needs arbitrary code execution to "
                                  f"load{what} and is refused; it must hold only label arrays.") from None
        raise DataFormatError(f"The CIFAR-N label file '{file}' is corrupt ({_first_line(exc)}).") from None
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile, KeyError) as exc:
        raise DataFormatError(f"The CIFAR-N label file '{file}' is corrupt, truncated or not a label "
                              f"file ({type(exc).__name__}: {_first_line(exc)}).") from None


def _read_npy(file: Path) -> Any:
    from robustlab.data._safe_pickle import safe_pickle_load

    with open(file, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        _, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(fh))
        if not dtype.hasobject:
            fh.seek(0)
            arr = np.load(fh, allow_pickle=False)
            raise DataFormatError(f"The CIFAR-N label file '{file}' holds a single array of shape "
                                  f"{arr.shape}, not a dict of label arrays keyed by name.")
        obj = safe_pickle_load(fh, encoding="latin1")
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    return obj


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _validate(file: Path, raw: Any, variant: str | None, num_examples: int | None) -> CifarNLabels:
    if not isinstance(raw, dict):
        raise DataFormatError(f"The CIFAR-N label file '{file}' must hold a dict of label arrays. "
                              f"Got a {type(raw).__name__} instead.")
    keys = set(map(str, raw))
    if variant is None:
        if "aggre_label" in keys or any(k.startswith("random_label") or k == "worse_label" for k in keys):
            variant = "cifar10n"
        elif "noisy_label" in keys:
            variant = "cifar100n"
        else:
            raise DataFormatError(f"The CIFAR-N label file '{file}' has neither CIFAR-10N keys "
                                  f"({', '.join(CIFAR10N_KEYS)}) nor CIFAR-100N keys "
                                  f"({', '.join(CIFAR100N_KEYS)}). Got keys: {', '.join(sorted(keys))}.")
    required = CIFAR10N_KEYS if variant == "cifar10n" else CIFAR100N_KEYS
    optional = () if variant == "cifar10n" else CIFAR100N_OPTIONAL_KEYS
    missing = [k for k in required if k not in keys]
    if missing:
        raise DataFormatError(f"The CIFAR-N label file '{file}' is missing key '{missing[0]}' "
                              f"({variant} needs {', '.join(required)}; found {', '.join(sorted(keys))}).")
    k_fine = 10 if variant == "cifar10n" else 100
    n_expected = num_examples
    labels: dict[str, torch.Tensor] = {}
    for key in (*required, *(o for o in optional if o in keys)):
        arr = _as_labels(file, key, raw[key])
        if n_expected is None:
            n_expected = arr.shape[0]
        if arr.shape[0] != n_expected:
            ref = "num_examples" if num_examples is not None else f"'{required[0]}'"
            raise DataFormatError(f"The CIFAR-N label file '{file}' has {arr.shape[0]} labels under key "
                                  f"'{key}' but {n_expected} are expected (from {ref}).")
        k = CIFAR100_COARSE_CLASSES if "coarse" in key else k_fine
        if arr.numel() and (int(arr.min()) < 0 or int(arr.max()) >= k):
            raise DataFormatError(f"The CIFAR-N label file '{file}' has labels outside [0, {k - 1}] under "
                                  f"key '{key}' (values in [{int(arr.min())}, {int(arr.max())}]).")
        labels[key] = arr
    return CifarNLabels(variant=variant, path=file, labels=labels, num_classes=k_fine)


def _as_labels(file: Path, key: str, value: Any) -> torch.Tensor:
    if isinstance(value, list):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        if not (np.issubdtype(value.dtype, np.integer)):
            raise DataFormatError(f"The CIFAR-N label file '{file}' holds {value.dtype} values under key "
                                  f"'{key}'; expected integer class indices.")
        value = torch.from_numpy(np.ascontiguousarray(value).astype(np.int64))
    if not isinstance(value, torch.Tensor):
        raise DataFormatError(f"The CIFAR-N label file '{file}' holds a {type(value).__name__} under key "
                              f"'{key}'; expected an array of class indices.")
    if value.is_floating_point() or value.dtype == torch.bool or value.is_complex():
        raise DataFormatError(f"The CIFAR-N label file '{file}' holds {value.dtype} values under key "
                              f"'{key}'; expected integer class indices.")
    value = value.reshape(-1) if value.ndim == 2 and 1 in value.shape else value
    if value.ndim != 1:
        raise DataFormatError(f"The CIFAR-N label file '{file}' holds an array of shape "
                              f"{tuple(value.shape)} under key '{key}'; expected one label per image (N,).")
    return value.to(torch.int64).clone()
