"""The model config: everything needed to rebuild a model, as JSON."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustlab import __version__
from robustlab._checks import describe, fail
from robustlab._constants import MODEL_FORMAT_NAME, MODEL_FORMAT_VERSION
from robustlab.errors import CheckpointError, InvalidParameterError, InvalidTypeError, RobustlabError
from robustlab.models._common import check_input_shape, check_num_classes
from robustlab.models.layers import Stats
from robustlab.models.registry import build_model

__all__ = ["ModelConfig", "config_from_text"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: architecture, its parameters and the data it expects.

    Parameters
    ----------
    name : str
        Registered architecture name (see :func:`robustlab.models.model_names`).
    input_shape : tuple of int
        Per-example input shape, ``(C, H, W)`` or ``(D,)``.
    num_classes : int
        Number of classes ``K >= 2``.
    params : dict, default {}
        Architecture parameters passed to :func:`~robustlab.models.build_model`. Must be JSON
        values; tuples are stored as lists (the factories accept both).
    mean, std : tuple of float, optional
        Statistics of the normalisation layer inside the model (``None``: identity).
    class_names : tuple of str, optional
        One name per class.
    robustlab_version : str
        Version that wrote the config (informational).

    Examples
    --------
    >>> config = ModelConfig("mlp", (64,), 10, params={"hidden_sizes": [32]})
    >>> ModelConfig.from_json(config.to_json()) == config
    True
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    params: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None
    robustlab_version: str = __version__

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            fail("name", "a non-empty model name", self.name, error=InvalidTypeError)
        shape = check_input_shape(self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "num_classes", check_num_classes(self.num_classes))
        object.__setattr__(self, "params", _json_params(self.params))
        for stat in ("mean", "std"):
            object.__setattr__(self, stat, _stat_tuple(stat, getattr(self, stat), shape))
        if self.class_names is not None:
            names = self.class_names
            if isinstance(names, str) or not isinstance(names, Sequence) or len(names) != self.num_classes:
                fail("class_names", f"a sequence of {self.num_classes} names (one per class)", names)
            object.__setattr__(self, "class_names", tuple(str(c) for c in names))
        if not isinstance(self.robustlab_version, str):
            fail("robustlab_version", "a str", self.robustlab_version, error=InvalidTypeError)

    def __hash__(self) -> int:  # params is a dict, so hash the canonical text instead
        return hash(self.to_json())

    @classmethod
    def for_model(
        cls,
        name: str,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        params: Mapping[str, Any] | None = None,
        mean: Stats | None = None,
        std: Stats | None = None,
        class_names: Sequence[str] | None = None,
    ) -> ModelConfig:
        """Config from the same keyword arguments as :func:`~robustlab.models.build_model`.

        ``mean`` and ``std`` may be given directly or inside ``params`` (as ``build_model``'s
        ``**kwargs`` would hold them); they are moved to their own fields.
        """
        arch = dict(params or {})
        for key, value in (("mean", mean), ("std", std)):
            if key in arch and value is not None:
                raise InvalidParameterError(f"The '{key}' parameter must be given once. Got it both "
                                            f"directly and inside 'params' instead.")
        mean = arch.pop("mean", mean)
        std = arch.pop("std", std)
        return cls(name, tuple(input_shape), num_classes, params=arch, mean=_plain(mean),
                   std=_plain(std), class_names=None if class_names is None else tuple(class_names))

    def build(self, *, generator: torch.Generator | None = None, seed: int | None = None) -> nn.Module:
        """A freshly initialised model of this architecture (see :func:`~robustlab.models.build_model`)."""
        return build_model(self.name, self.input_shape, self.num_classes, mean=self.mean, std=self.std,
                           generator=generator, seed=seed, **self.params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with the file format name and version first."""
        return {
            "format": MODEL_FORMAT_NAME,
            "format_version": MODEL_FORMAT_VERSION,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "params": self.params,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "class_names": None if self.class_names is None else list(self.class_names),
            "robustlab_version": self.robustlab_version,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        """Inverse of :meth:`to_dict`; raises :class:`~robustlab.errors.CheckpointError`."""
        return _config_from_obj(data, "The model config")

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Inverse of :meth:`to_json`; raises :class:`~robustlab.errors.CheckpointError`."""
        return config_from_text(text, "The model config")


def _json_params(params: Any) -> dict[str, Any]:
    """Canonical JSON form (tuples -> lists), so a config equals its own round trip."""
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        fail("params", "a dict with str keys", params, error=InvalidTypeError)
    try:
        return json.loads(json.dumps(dict(params), allow_nan=False))
    except (TypeError, ValueError):
        fail("params", "a dict of JSON values (numbers, strings, lists, dicts)", params)


def _stat_tuple(name: str, value: Any, shape: tuple[int, ...]) -> tuple[float, ...] | None:
    if value is None:
        return None
    value = _plain(value)
    values = [value] if isinstance(value, numbers.Real) else value
    if isinstance(values, str) or not isinstance(values, Sequence) \
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        fail(name, "a float or a sequence of floats", value, error=InvalidTypeError)
    out = tuple(float(v) for v in values)
    if len(out) not in (1, shape[0]) or not all(math.isfinite(v) for v in out):
        fail(name, f"1 or {shape[0]} finite values for input_shape {shape}", value)
    return out


def _plain(value: Any) -> Any:
    """Tensors / arrays -> nested Python floats (JSON-ready)."""
    return value.tolist() if hasattr(value, "tolist") else value


def config_from_text(text: str, source: str) -> ModelConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} "
                              f"column {exc.colno}).") from None
    return _config_from_obj(data, source)


def _config_from_obj(data: Any, source: str) -> ModelConfig:
    if not isinstance(data, dict):
        raise CheckpointError(f"{source} must be a JSON object. Got {describe(data)} instead.")
    fmt = data.get("format", MODEL_FORMAT_NAME)
    if fmt != MODEL_FORMAT_NAME:
        raise CheckpointError(f"{source} is not a robustlab model config (format {fmt!r}).")
    version = data.get("format_version", MODEL_FORMAT_VERSION)
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
        raise CheckpointError(f"{source} has format version {version!r}, newer than this robustlab "
                              f"({__version__}) reads ({MODEL_FORMAT_VERSION}); upgrade robustlab.")
    missing = [k for k in ("name", "input_shape", "num_classes") if k not in data]
    if missing:
        raise CheckpointError(f"{source} lacks the field(s) {', '.join(map(repr, missing))}.")
    # Unknown fields are ignored: a later robustlab may add informational ones.
    fields = {k: data[k] for k in ("name", "input_shape", "num_classes", "params", "mean", "std",
                                   "class_names", "robustlab_version") if k in data}
    if fields.get("params") is None:
        fields["params"] = {}
    try:
        return ModelConfig(**fields)
    except RobustlabError as exc:
        raise CheckpointError(f"{source} is invalid: {exc}") from None
