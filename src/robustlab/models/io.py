"""Safe saving and loading of models.

A robustlab model is saved as a **folder** holding two files:

* ``model.safetensors`` — the state dict, in the safetensors format (no pickle, so loading
  cannot run code). Its metadata also carries the model config, so the weights file alone is
  enough to rebuild the model.
* ``config.json`` — the same :class:`~robustlab.models.config.ModelConfig`, readable by people and other tools.

Loading never unpickles arbitrary objects: foreign PyTorch checkpoints go through
``torch.load(weights_only=True)`` and anything that needs code execution is refused with a
:class:`~robustlab.errors.CheckpointError`. TorchScript archives are loaded as black boxes.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch as st
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from robustlab._checks import check_writable_dir, describe, fail
from robustlab._io import fsync_dir, fsync_file, temp_path
from robustlab._constants import (
    CHECKPOINT_KEY_PREFIXES,
    CHECKPOINT_STATE_DICT_KEYS,
    MODEL_CONFIG_FILENAME,
    MODEL_CONFIG_METADATA_KEY,
    MODEL_WEIGHTS_FILENAME,
)
from robustlab.errors import CheckpointError, InvalidParameterError, InvalidTypeError, RobustlabError
from robustlab.models.config import ModelConfig, config_from_text
from robustlab.models.layers import Normalize

__all__ = ["ModelConfig", "save_model", "load_model", "load_checkpoint", "load_any"]

PathLike = str | os.PathLike[str]

# Messages of torch's weights-only unpickler that mean "this file wants to run code" (a pickled
# class or function), as opposed to a damaged byte stream.
_CODE_MARKERS = ("GLOBAL", "unrecognized function", "Can only build", "Can only create new object")


# ----------------------------------------------------------------------------------- save
def save_model(model: nn.Module, path: PathLike, config: ModelConfig) -> Path:
    """Save ``model`` as a robustlab model folder (``model.safetensors`` + ``config.json``).

    Parameters
    ----------
    model : nn.Module
        A model of the architecture ``config`` describes (``DataParallel``,
        ``DistributedDataParallel`` and ``torch.compile`` wrappers are unwrapped). Tied (shared)
        tensors are stored once.
    path : str or PathLike
        The folder; created if needed. Other files in it are left alone.
    config : ModelConfig
        Describes the model. It is checked against the model before anything is written: the
        architecture it builds must have exactly the model's state-dict keys and shapes, and its
        ``mean``/``std`` must equal the model's normalisation layer.

    Returns
    -------
    Path
        The folder.

    Raises
    ------
    InvalidParameterError
        ``config`` does not describe ``model``.
    OutputDirError
        ``path`` is a file or cannot be written.

    Notes
    -----
    Each file is written to a temporary file in the same folder, flushed to disk, and moved into
    place with ``os.replace`` (atomic on POSIX and Windows), weights first. An interrupted save
    therefore never leaves a partial file: the folder holds the old pair, the new pair, or new
    weights with the old ``config.json``. In that last case :func:`load_model` notices (the
    weights carry their own copy of the config), warns and uses the copy stored with the weights.
    """
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module", model, error=InvalidTypeError)
    if not isinstance(config, ModelConfig):
        fail("config", "a robustlab.models.ModelConfig", config, error=InvalidTypeError)
    model = _unwrap(model)
    _check_config_matches(model, config)
    folder = check_writable_dir("path", path)
    weights, config_file = folder / MODEL_WEIGHTS_FILENAME, folder / MODEL_CONFIG_FILENAME
    tmp_weights, tmp_config = temp_path(weights), temp_path(config_file)
    try:
        st.save_model(model, str(tmp_weights), metadata={MODEL_CONFIG_METADATA_KEY: config.to_json()})
        tmp_config.write_text(config.to_json() + "\n", encoding="utf-8")
        for tmp in (tmp_weights, tmp_config):
            fsync_file(tmp)
        os.replace(tmp_weights, weights)
        os.replace(tmp_config, config_file)
    finally:
        for tmp in (tmp_weights, tmp_config):
            tmp.unlink(missing_ok=True)
    fsync_dir(folder)
    return folder


def _check_config_matches(model: nn.Module, config: ModelConfig) -> None:
    """Refuse to write a config that would not rebuild this model (found at save, not at load)."""
    try:
        # On the meta device nothing is allocated or initialised: cheap even for WRN-28-10.
        with torch.device("meta"):
            reference = config.build()
    except RobustlabError:
        raise
    except Exception:  # a user-registered factory that cannot run on "meta": build it for real
        reference = config.build()
    problems = _state_problems(reference.state_dict(), model.state_dict(), expected_name="config",
                               actual_name="model")
    if problems:
        raise InvalidParameterError(
            f"The 'config' parameter must describe the model being saved. Got a config for "
            f"{config.name!r} whose architecture differs: {'; '.join(problems)}.")
    layer = getattr(model, "normalize", None)
    if isinstance(layer, Normalize):
        for stat, default in (("mean", 0.0), ("std", 1.0)):
            have = getattr(layer, stat).detach().flatten().cpu().double()
            want = torch.tensor(getattr(config, stat) or (default,), dtype=torch.float64).expand_as(have)
            if not torch.allclose(have, want, rtol=1e-5, atol=1e-7):
                raise InvalidParameterError(
                    f"The 'config' parameter must have the model's normalisation statistics. Got "
                    f"{stat}={getattr(config, stat)} but the model's layer has "
                    f"{[round(v, 6) for v in have.tolist()[:8]]} instead.")


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        # torch.compile's OptimizedModule, recognised without importing torch._dynamo.
        elif type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None),
                                                                       nn.Module):
            model = model._orig_mod
        else:
            return model


# ----------------------------------------------------------------------------------- load
def load_model(path: PathLike, *, map_location: torch.device | str = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Load a model saved by :func:`save_model`.

    Parameters
    ----------
    path : str or PathLike
        The model folder, or its ``model.safetensors`` file alone (the config travels in it).
    map_location : device or str, default "cpu"
        Where the model's tensors are placed.

    Returns
    -------
    model : nn.Module
        Rebuilt from the config, weights loaded strictly, in eval mode, in the dtype it was saved
        in.
    config : ModelConfig

    Raises
    ------
    CheckpointError
        Missing, corrupt or truncated ``model.safetensors`` or ``config.json``, a config that
        does not build, or weights that do not match the architecture. The message names the
        file and what was wrong.
    """
    target = Path(path)
    if target.is_dir():
        weights, config_file = target / MODEL_WEIGHTS_FILENAME, target / MODEL_CONFIG_FILENAME
        if not config_file.is_file():
            raise CheckpointError(f"Cannot load the model config '{config_file}': file not found "
                                  f"(is '{target}' a folder written by save_model?).")
    elif target.is_file():
        if _detect_kind(target) != "safetensors":
            raise CheckpointError(f"Cannot load '{target}' with load_model: it is not a robustlab model "
                                  f"folder or .safetensors file (use load_any for other formats).")
        weights, config_file = target, None
    else:
        raise CheckpointError(f"Cannot load a model from '{target}': no such file or folder.")
    if not weights.is_file():
        raise CheckpointError(f"Cannot load the model weights '{weights}': file not found.")
    from_json = None
    if config_file is not None:
        from_json = config_from_text(_read_text(config_file), f"The model config '{config_file}'")
    stored = _stored_config(weights)
    if stored is None and from_json is None:
        raise CheckpointError(f"The weights file '{weights}' carries no robustlab config; load it with "
                              f"load_any(path, config=ModelConfig(...)).")
    if stored is not None and from_json is not None and stored != from_json:
        warnings.warn(f"'{config_file}' differs from the config stored in '{weights}' (an interrupted "
                      f"save, or an edited config.json); using the one stored with the weights.",
                      stacklevel=2)
    config = stored if stored is not None else from_json
    source = f"'{weights}'" if stored is not None else f"'{config_file}'"
    model = _build_for_loading(config, source)
    _load_weights(model, _read_safetensors(weights, map_location), weights, map_location,
                  dtype_from_file=True)
    return model.eval(), config


def load_checkpoint(path: PathLike, *, map_location: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Read the state dict of a foreign checkpoint without running code from it.

    Parameters
    ----------
    path : str or PathLike
        A ``torch.save`` file (``.pt``/``.pth``/``.bin``) or a ``.safetensors`` file. The state dict
        may be nested under one of the keys ``'state_dict'``, ``'model'``, ``'model_state_dict'``,
        ``'net'``, ``'network'``; key prefixes added by ``DataParallel`` (``'module.'``) or
        ``torch.compile`` (``'_orig_mod.'``) are removed.
    map_location : device or str, default "cpu"

    Returns
    -------
    dict of str to Tensor

    Raises
    ------
    CheckpointError
        The file is missing, truncated or corrupt; it is a TorchScript archive (use
        :func:`load_any`); it holds no state dict; or it needs arbitrary code execution to load
        (pickled classes or functions — whole pickled ``nn.Module`` objects included), which is
        refused: re-save it with ``torch.save(model.state_dict(), path)`` or as safetensors.

    Notes
    -----
    ``torch.load`` is only ever called with ``weights_only=True``, which restricts unpickling to
    tensors and plain containers.
    """
    file = _existing_file(path)
    kind = _detect_kind(file)
    if kind == "torchscript":
        raise CheckpointError(f"The checkpoint '{file}' is a TorchScript model, not a state dict; "
                              f"load it with load_any.")
    if kind == "safetensors":
        state = _read_safetensors(file, map_location)
    else:
        state = _extract_state_dict(_torch_load(file, map_location), file)
    return _strip_prefixes(state)


def load_any(
    path: PathLike,
    *,
    config: ModelConfig | None = None,
    map_location: torch.device | str = "cpu",
) -> nn.Module:
    """Load whatever model ``path`` holds, in eval mode, detecting its kind from its content.

    Parameters
    ----------
    path : str or PathLike
        One of:

        * a robustlab model folder, or its ``model.safetensors`` (see :func:`load_model`);
        * a TorchScript archive (``torch.jit.save``) — loaded with ``torch.jit.load``;
        * bare weights: a ``.safetensors`` file without a robustlab config, or a ``torch.save``
          state dict (read by :func:`load_checkpoint`) — needs ``config``.
    config : ModelConfig, optional
        The architecture for bare weights; ignored for the other kinds, which carry their own.
        Weights from reference implementations that have no normalisation layer (keys without
        ``normalize.mean``/``normalize.std``) load too: the layer then keeps ``config.mean`` and
        ``config.std``. Every other key must match exactly.
    map_location : device or str, default "cpu"

    Returns
    -------
    nn.Module
        Maps inputs to logits. A TorchScript model is a ``torch.jit.ScriptModule`` and must be
        treated as a black box: it cannot be traced by ``torch.fx`` or rebuilt, and gradients with
        respect to the inputs are usually available but not guaranteed (the scripted code may
        detach or run without autograd) — use black-box methods (Square attack, corruptions,
        randomized smoothing) on it.

    Raises
    ------
    CheckpointError
        Unreadable, corrupt or unsafe files (see :func:`load_checkpoint`), bare weights without
        ``config``, or weights that do not match ``config``.

    Notes
    -----
    TorchScript archives contain TorchScript code, which ``torch.jit.load`` compiles and runs in
    its own restricted interpreter (not arbitrary Python, unlike pickle); still, load models
    only from sources you trust.
    """
    target = Path(path)
    if target.is_dir():
        return load_model(target, map_location=map_location)[0]
    file = _existing_file(target)
    kind = _detect_kind(file)
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated upstream but still how many models are shipped;
                # loading one is a supported, documented path here, not a user mistake.
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated",
                                        category=DeprecationWarning)
                module = torch.jit.load(str(file), map_location=map_location)
        except (RuntimeError, ValueError, OSError) as exc:
            raise CheckpointError(f"The TorchScript model '{file}' is corrupt or truncated "
                                  f"({_first_line(exc)}).") from None
        return module.eval()
    if kind == "safetensors" and _stored_config(file) is not None:
        return load_model(file, map_location=map_location)[0]
    if config is None:
        raise CheckpointError(f"The file '{file}' holds bare weights (a state dict) and no architecture; "
                              f"pass config=ModelConfig(...) to say which model they belong to.")
    if not isinstance(config, ModelConfig):
        fail("config", "a robustlab.models.ModelConfig", config, error=InvalidTypeError)
    state = load_checkpoint(file, map_location=map_location)
    model = _build_for_loading(config, "the given config")
    optional = {f"normalize.{k}" for k in ("mean", "std")} if isinstance(
        getattr(model, "normalize", None), Normalize) else set()
    _load_weights(model, state, file, map_location, optional=optional, arch=config.name)
    return model.eval()


# ----------------------------------------------------------------------------------- helpers
def _existing_file(path: PathLike) -> Path:
    file = Path(path)
    if not file.exists():
        raise CheckpointError(f"Cannot load '{file}': no such file.")
    if not file.is_file():
        raise CheckpointError(f"Cannot load '{file}': not a file.")
    return file


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"Cannot read the model config '{file}': {exc}.") from None


def _detect_kind(file: Path) -> str:
    """``"torchscript"``, ``"safetensors"`` or ``"torch"`` (anything else: let torch.load judge)."""
    with open(file, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(file) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "torch"  # damaged archive: torch.load reports it as corrupt
        # torch.jit.save archives hold compiled code and constants; torch.save ones only data.pkl.
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        return "torch"
    # safetensors: 8-byte little-endian header length, then the JSON header.
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") >= 2:
        return "safetensors"
    return "torch"


def _stored_config(weights: Path) -> ModelConfig | None:
    """The config in the safetensors metadata, or None when the file has none."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"The weights file '{weights}' is corrupt or truncated "
                              f"({_first_line(exc)}).") from None
    text = metadata.get(MODEL_CONFIG_METADATA_KEY)
    if text is None:
        return None
    return config_from_text(text, f"The config stored in '{weights}'")


def _read_safetensors(file: Path, map_location: torch.device | str) -> dict[str, torch.Tensor]:
    try:
        state = st.load_file(str(file), device=str(torch.device(map_location)))
        with safe_open(str(file), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"The weights file '{file}' is corrupt or truncated "
                              f"({_first_line(exc)}).") from None
    # safetensors.torch.save_model stores tied tensors once and records each dropped name in
    # the metadata as {dropped: kept}; restore the dropped names so a strict load sees them.
    for dropped, kept in metadata.items():
        if dropped not in state and kept in state:
            state[dropped] = state[kept]
    return state


def _torch_load(file: Path, map_location: torch.device | str) -> Any:
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if any(marker in text for marker in _CODE_MARKERS):
            found = re.search(r"GLOBAL (\S+)", text)
            what = f" (it pickles {found.group(1)!r})" if found else ""
            raise CheckpointError(
                f"The checkpoint '{file}' needs arbitrary code execution to load{what} and is refused; "
                f"re-save it as a state dict (torch.save(model.state_dict(), path)) or as safetensors."
            ) from None
        raise CheckpointError(f"The checkpoint '{file}' is corrupt ({_first_line(exc)}).") from None
    except Exception as exc:  # truncated/corrupt files raise EOFError, KeyError, RuntimeError, ...
        raise CheckpointError(f"The checkpoint '{file}' is corrupt, truncated or not a PyTorch "
                              f"checkpoint ({type(exc).__name__}: {_first_line(exc)}).") from None


def _extract_state_dict(obj: Any, file: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}; deeper nesting is not a convention
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        nested = next((obj[k] for k in CHECKPOINT_STATE_DICT_KEYS
                       if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"The checkpoint '{file}' holds {describe(obj)}, not a state dict "
                              f"(a dict of tensors).")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(f"The checkpoint '{file}' is not a state dict: {len(bad)} entries are not "
                              f"tensors (keys: {keys}{', ...' if len(obj) > 8 else ''}); expected the "
                              f"tensors at the top level or under one of {list(CHECKPOINT_STATE_DICT_KEYS)}.")
    return dict(obj)


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:  # e.g. "module._orig_mod.conv1.weight"
        changed = False
        for prefix in CHECKPOINT_KEY_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _build_for_loading(config: ModelConfig, source: str) -> nn.Module:
    try:
        return config.build()
    except RobustlabError as exc:
        raise CheckpointError(f"The model config in {source} does not build: {exc}") from None


def _load_weights(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    file: Path,
    map_location: torch.device | str,
    *,
    optional: Collection[str] = (),
    arch: str | None = None,
    dtype_from_file: bool = False,
) -> None:
    """Strict load with a one-line error; ``optional`` keys may be absent from ``state``."""
    model.to(map_location)
    if dtype_from_file:
        dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
        if len(dtypes) == 1:  # a model saved after .double() / .half() comes back the same
            model.to(dtypes.pop())
    problems = _state_problems(model.state_dict(), state, expected_name="model", actual_name="file",
                               optional=optional)
    if problems:
        name = f"the {arch!r} architecture" if arch else "the architecture in its config"
        raise CheckpointError(f"The weights in '{file}' do not match {name}: {'; '.join(problems)}.")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"The weights in '{file}' could not be loaded: {_first_line(exc)}") from None


def _state_problems(expected: Mapping[str, torch.Tensor], actual: Mapping[str, torch.Tensor], *,
                    expected_name: str, actual_name: str, optional: Collection[str] = ()) -> list[str]:
    """Missing and unexpected keys of ``actual`` against ``expected``, then shape mismatches."""
    problems = _key_problems(set(expected) - set(actual) - set(optional), set(actual) - set(expected))
    shapes = sorted(k for k in expected.keys() & actual.keys() if expected[k].shape != actual[k].shape)
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} shape mismatch(es), e.g. {k!r}: {actual_name} "
                        f"{tuple(actual[k].shape)}, {expected_name} {tuple(expected[k].shape)}")
    return problems


def _key_problems(missing: set[str], unexpected: set[str]) -> list[str]:
    out = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            shown = ", ".join(repr(k) for k in sorted(keys)[:5])
            more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
            out.append(f"{len(keys)} {label} key(s) {shown}{more}")
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
