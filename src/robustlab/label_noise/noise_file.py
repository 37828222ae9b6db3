"""The noisy labels of a training run, saved beside it (``noise.npz``) and checked on resume.

``robustlab train --label-noise SPEC`` noises the training split once, from ``--seed``; this module
writes what was done to the run folder so the run can be audited later (which labels were flipped,
the realised rate, the transition matrix) and so that ``--resume`` cannot silently continue on
different labels: the noise is drawn again (same spec, same seed, same labels) and compared with
the saved file.

File contents (``numpy.savez``, no pickles): ``noisy_labels``, ``clean_labels``, ``noise_mask``
(int64/bool arrays of length N), ``kind``, ``spec`` (str), ``seed`` (int), ``realised_rate`` (float)
and, for noise with a known transition matrix, ``transition`` (K, K).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab._constants import NOISE_FILENAME
from robustlab._io import atomic_path
from robustlab.errors import DataFormatError, DataNotFoundError, InvalidParameterError
from robustlab.label_noise.simulate import NoiseSpec, NoisyLabels, apply_noise_spec, parse_noise_spec

__all__ = ["noisy_training_split", "write_noise_file", "read_noise_file"]

_REQUIRED = ("noisy_labels", "clean_labels", "noise_mask", "kind", "spec", "seed", "realised_rate")


def write_noise_file(path: str | os.PathLike[str], noisy: NoisyLabels, clean_labels: torch.Tensor, *,
                     spec: NoiseSpec | str, seed: int) -> Path:
    """Write ``noisy`` (and the clean labels it came from) to ``path`` atomically; return the path."""
    path = Path(path)
    arrays: dict[str, Any] = {
        "noisy_labels": noisy.labels.cpu().numpy(), "clean_labels": clean_labels.cpu().numpy(),
        "noise_mask": noisy.noise_mask.cpu().numpy(), "kind": np.array(noisy.kind),
        "spec": np.array(str(spec)), "seed": np.array(seed), "realised_rate": np.array(noisy.realised_rate),
    }
    if noisy.transition is not None:
        arrays["transition"] = noisy.transition.cpu().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def read_noise_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of a noise file; a missing file or key gives a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"The 'path' parameter must be a noise file ({NOISE_FILENAME}). "
                                f"Got {str(path)!r}, which does not exist instead.")
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {k: saved[k] for k in saved.files}
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"The noise file {str(path)!r} cannot be read: {exc}.") from None
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise DataFormatError(f"The noise file {str(path)!r} lacks the key(s) {', '.join(missing)}.")
    return arrays


def noisy_training_split(spec: NoiseSpec | str | None, train: Any, *, seed: int,
                         run_dir: str | os.PathLike[str], resume: bool) -> tuple[Any, NoisyLabels | None]:
    """Noise ``train`` from ``seed`` and save ``noise.npz`` in ``run_dir``; check it on ``resume``.

    Parameters
    ----------
    spec : NoiseSpec, str or None
        ``None`` leaves the labels clean (and refuses to resume a run that was noised).
    train : Dataset
        The training split; never changed.
    seed : int
        Seeds the noise (``torch.Generator().manual_seed(seed)``).
    run_dir : path-like
        The run folder.
    resume : bool
        When True and the file exists, the regenerated noisy labels must equal the saved ones.

    Returns
    -------
    (Dataset, NoisyLabels or None)
        The dataset to train on and the noise drawn (None without ``spec``).
    """
    path = Path(run_dir) / NOISE_FILENAME
    if spec is None:
        if resume and path.exists():
            raise InvalidParameterError(f"The 'label_noise' parameter must be given as in the original run "
                                        f"when resuming: '{path}' holds its noisy labels.")
        return train, None
    if isinstance(spec, str):
        spec = parse_noise_spec(spec, name="label_noise")
    noisy_ds, noisy = apply_noise_spec(spec, train, generator=torch.Generator().manual_seed(seed))
    if resume and path.exists():
        saved = read_noise_file(path)
        if not np.array_equal(saved["noisy_labels"], noisy.labels.cpu().numpy()):
            raise InvalidParameterError(f"The 'label_noise' parameter must reproduce the noisy labels saved in "
                                        f"'{path}' when resuming (same spec and --seed).")
    write_noise_file(path, noisy, train.labels, spec=spec, seed=seed)
    return noisy_ds, noisy
