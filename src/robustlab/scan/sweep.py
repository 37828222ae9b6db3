"""Sweeps: many scans from one TOML file (``robustlab scan --config sweep.toml``).

A sweep is the product models x datasets x seeds x probe-setting grids; every element is one scan
run with its own run folder under the sweep's output folder (results store + report), and, with
two runs or more, a comparison page (:mod:`robustlab.scan.compare`, ``compare.html``) puts all
runs side by side. Probe jobs run in this process or on Ray (:mod:`robustlab.scan.backends`);
models are trained in this process. Running the same config again resumes: each run reuses its folder and skips every stored job, whichever backend
stored it, and models the sweep trained are reloaded from their run folder.

Schema
------
Every key is optional. ::

    out = "runs/sweep"              # output folder (the --out option wins); default runs/sweep-<file>
    seeds = [0, 1]                  # scan seeds (and training seeds of trained models); default [0]
    datasets = ["digits"]           # built-in names or paths; default ["digits"]
    backend = "local"               # "local" or "ray" (the --backend option wins)
    address = "host:port"           # Ray cluster address (the --address option wins)

    models = ["small-cnn", "runs/elr/model"]   # short form: names or saved-model paths
    # or one table per model:
    [[models]]
    name = "small-cnn"              # architecture name (trained on each dataset) or a saved model path
    label = "cnn"                   # column label; default from the name (and swept values)
    epochs = 5                      # architectures only; default the recipe's
    method = ["ce", "gce"]          # training objective(s); a list sweeps it; default "ce"
    method_params = { q = 0.7 }     # keyword arguments of the objective
    label_noise = ["none", "symmetric:0.2", "symmetric:0.4"]   # noise rates of the training labels

    [probes.clean]                  # one table per probe: keyword arguments of the probe
    [probes.adversarial]
    eps = { linf = [0.05, 0.1, 0.2] }   # the eps grid: one job per eps inside each run
    suite = "fast"
    [probes.corruptions]
    severities = [1, 3, 5]
    [probes.corruptions.grid]       # a grid: one run per value (per combination of all grids)
    preset = ["mnist", "cifar"]

Without a ``[probes]`` table every registered probe runs with its defaults. A model given by
architecture name with method ``"ce"`` and clean labels comes from the model cache, exactly as
``robustlab scan --model NAME`` (:func:`robustlab.zoo.get_model`); another method or label noise
trains it with the architecture's recipe (:data:`robustlab.zoo.RECIPES`), the training labels
noised from the seed (:func:`robustlab.label_noise.noise_file.noisy_training_split`), and saves it
in the run folder (``model/``, ``noise.npz``), where a resumed sweep finds it.

Run folders are named ``<model>-<data>-seed<seed>`` (plus ``-<grid values>`` when the config has
a grid), so adding a seed or a model to a config keeps the folders of the runs already made.

Relative paths (``out``, datasets, saved models) are relative to the current folder, as on the
command line, not to the config file.

Errors name the TOML key: ``The 'models[1].epochs' parameter must be an int >= 1. Got 0 instead.``
Everything is checked (probe settings included) before anything is trained or scanned.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from robustlab._checks import check_choice, check_int, fail
from robustlab.errors import (
    DataFormatError,
    DataNotFoundError,
    InvalidTypeError,
    RobustlabError,
)

__all__ = [
    "ModelSpec",
    "ProbeSpec",
    "SweepConfig",
    "SweepRun",
    "SweepSummary",
    "expand_sweep",
    "load_sweep",
    "parse_sweep",
    "run_sweep",
]

logger = logging.getLogger("robustlab.scan")

_TOP_KEYS = ("out", "seeds", "datasets", "models", "probes", "backend", "address")
_MODEL_KEYS = ("name", "label", "epochs", "method", "method_params", "label_noise")
#: Model keys where a list means "one model per value".
_MODEL_GRID_KEYS = ("epochs", "method", "label_noise")
_GRID = "grid"
_NO_NOISE = "none"
_DEFAULT_METHOD = "ce"
_DEFAULT_DATA = "digits"


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ModelSpec:
    """One model of a sweep: an architecture to train (or take from the cache), or a saved model.

    ``method``, ``method_params``, ``label_noise`` and ``epochs`` only apply to architectures;
    ``label_noise`` is ``None`` for clean labels.
    """

    name: str
    label: str
    trained: bool
    epochs: int | None = None
    method: str = _DEFAULT_METHOD
    method_params: dict[str, Any] = field(default_factory=dict)
    label_noise: str | None = None

    @property
    def cached(self) -> bool:
        """Comes from the shared model cache (plain cross-entropy on clean labels)."""
        return self.trained and self.method == _DEFAULT_METHOD and not self.method_params \
            and self.label_noise is None


@dataclass(frozen=True)
class ProbeSpec:
    """A probe and the keyword arguments it is built with."""

    name: str
    params: dict[str, Any]

    def build(self) -> Any:
        from robustlab.scan.probe import build_probe

        return build_probe(self.name, **self.params)


@dataclass(frozen=True)
class SweepConfig:
    """A parsed, validated sweep (see the module docstring for the TOML schema).

    ``probes`` holds ``(name, fixed settings, grid)`` per probe, ``grid`` mapping a setting to the
    values swept; ``None`` means every registered probe with its defaults.
    """

    models: tuple[ModelSpec, ...]
    datasets: tuple[str, ...] = (_DEFAULT_DATA,)
    seeds: tuple[int, ...] = (0,)
    probes: tuple[tuple[str, dict[str, Any], dict[str, list[Any]]], ...] | None = None
    out: Path | None = None
    backend: str | None = None
    address: str | None = None
    source: Path | None = None


@dataclass(frozen=True)
class SweepRun:
    """One scan of a sweep.

    ``folder`` is the run folder's name under the sweep's output folder; ``label`` is its column
    in the comparison (only the parts that vary across the sweep); ``grid`` holds this run's value
    of every swept probe setting as ``{"probe.setting": value}``.
    """

    label: str
    folder: str
    model: ModelSpec
    data: str
    seed: int
    probes: tuple[ProbeSpec, ...]
    grid: dict[str, Any]


@dataclass(frozen=True)
class SweepSummary:
    """What :func:`run_sweep` did: each run with its scan summary, and the comparison page."""

    out_dir: Path
    runs: tuple[tuple[SweepRun, Any], ...]  # (SweepRun, ScanSummary)
    comparison: Path | None


# --------------------------------------------------------------------------- reading
def load_sweep(path: str | os.PathLike[str]) -> SweepConfig:
    """Read and validate a sweep file (TOML, parsed with the standard library's ``tomllib``).

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    DataFormatError
        The file is not valid TOML (the message gives the line and column).
    InvalidParameterError, InvalidTypeError, UnknownNameError
        A key is wrong; the message names it by its TOML path (``models[0].epochs``).
    """
    p = Path(path)
    if not p.is_file():
        fail("config", "a sweep file (TOML)", f"{str(p)!r}, which does not exist", error=DataNotFoundError,
             describe_got=False)
    try:
        with p.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        fail("config", "a valid TOML file", f"{str(p)!r} ({' '.join(str(exc).split())})", error=DataFormatError,
             describe_got=False)
    except (OSError, UnicodeDecodeError) as exc:
        fail("config", "a readable UTF-8 TOML file", f"{str(p)!r} ({exc})", error=DataFormatError,
             describe_got=False)
    return parse_sweep(raw, source=p)


def parse_sweep(raw: Mapping[str, Any], *, source: str | os.PathLike[str] | None = None) -> SweepConfig:
    """Validate a sweep given as a dict (what ``tomllib`` returns); see :func:`load_sweep`."""
    if not isinstance(raw, Mapping):
        fail("config", "a TOML table", raw, error=InvalidTypeError)
    _no_unknown_keys("config", raw, _TOP_KEYS)
    out = raw.get("out")
    if out is not None and (not isinstance(out, str) or not out.strip()):
        fail("out", "a folder path (str)", out, error=InvalidTypeError)
    backend = raw.get("backend")
    if backend is not None:
        check_choice("backend", backend, ("local", "ray"))
    address = raw.get("address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        fail("address", "a Ray cluster address (str)", address, error=InvalidTypeError)
    seeds = tuple(check_int(f"seeds[{i}]", s, low=0) for i, s in enumerate(_list("seeds", raw.get("seeds", [0]))))
    _distinct("seeds", seeds)
    datasets = tuple(_text(f"datasets[{i}]", d) for i, d in enumerate(
        _list("datasets", raw.get("datasets", [_DEFAULT_DATA]))))
    _distinct("datasets", datasets)
    for i, d in enumerate(datasets):
        _check_data(f"datasets[{i}]", d)
    models = _models(raw.get("models", ["small-cnn"]))
    probes = _probes(raw["probes"]) if "probes" in raw else None
    return SweepConfig(models=models, datasets=datasets, seeds=seeds, probes=probes,
                       out=None if out is None else Path(out), backend=backend, address=address,
                       source=None if source is None else Path(source))


def _no_unknown_keys(where: str, table: Mapping[str, Any], keys: Sequence[str]) -> None:
    for key in table:
        if key not in keys:
            listed = ", ".join(repr(k) for k in keys)
            fail(where, f"a table with keys among {{{listed}}}", f"unknown key {key!r}", describe_got=False)


def _list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        fail(name, "a non-empty array", value, error=InvalidTypeError)
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        fail(name, "a non-empty string", value, error=InvalidTypeError)
    return value


def _distinct(name: str, values: Sequence[Any]) -> None:
    if len(set(values)) != len(values):
        fail(name, "an array of distinct values", list(values))


def _check_data(name: str, data: str) -> None:
    from robustlab.data.builtins import builtin_names

    if data not in builtin_names() and not Path(data).exists():
        fail(name, f"a built-in dataset ({', '.join(builtin_names())}) or an existing path", data,
             error=DataNotFoundError)


# --------------------------------------------------------------------------- models
def _models(value: Any) -> tuple[ModelSpec, ...]:
    specs: list[ModelSpec] = []
    for i, entry in enumerate(_list("models", value)):
        specs.extend(_model_entry(f"models[{i}]", entry))
    labels = [s.label for s in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        fail("models", "models with distinct labels (set 'label')", f"the label {dup[0]!r} twice",
             describe_got=False)
    return tuple(specs)


def _model_entry(where: str, entry: Any) -> list[ModelSpec]:
    from robustlab.models import model_names

    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping):
        fail(where, "a model name, a path or a table", entry, error=InvalidTypeError)
    _no_unknown_keys(where, entry, _MODEL_KEYS)
    if "name" not in entry:
        fail(f"{where}.name", "given (an architecture name or a saved model path)", "nothing",
             describe_got=False)
    name = _text(f"{where}.name", entry["name"])
    trained = name in model_names() and not Path(name).exists()
    if not trained and not Path(name).exists():
        fail(f"{where}.name", f"a saved model path or an architecture name ({', '.join(model_names())})",
             name, error=DataNotFoundError)
    if trained:
        from robustlab.zoo import RECIPES

        check_choice(f"{where}.name", name, RECIPES)  # training needs the architecture's recipe
    else:
        for key in ("epochs", "method", "method_params", "label_noise"):
            if key in entry:
                fail(f"{where}.{key}", "left out for a saved model (it applies to architectures "
                     "trained by the sweep)", entry[key])
    label = _text(f"{where}.label", entry["label"]) if "label" in entry else _default_label(name)
    axes: dict[str, list[Any]] = {}
    for key in _MODEL_GRID_KEYS:
        if key in entry:
            values = entry[key] if isinstance(entry[key], list) else [entry[key]]
            if not values:
                fail(f"{where}.{key}", "a value or a non-empty array of values", values)
            axes[key] = [_model_value(f"{where}.{key}" + (f"[{j}]" if isinstance(entry[key], list) else ""),
                                      key, v) for j, v in enumerate(values)]
            _distinct(f"{where}.{key}", axes[key])
    method_params = entry.get("method_params", {})
    if not isinstance(method_params, Mapping):
        fail(f"{where}.method_params", "a table of the method's keyword arguments", method_params,
             error=InvalidTypeError)
    specs = []
    keys = list(axes)
    for values in itertools.product(*(axes[k] for k in keys)):
        chosen = dict(zip(keys, values))
        swept = [_value_label(k, chosen[k]) for k in keys if len(axes[k]) > 1 or
                 (k == "label_noise" and chosen[k] is not None and "label" not in entry) or
                 (k == "method" and chosen[k] != _DEFAULT_METHOD and "label" not in entry)]
        spec = ModelSpec(name=name, label="-".join([label, *swept]), trained=trained,
                         epochs=chosen.get("epochs"), method=chosen.get("method", _DEFAULT_METHOD),
                         method_params=dict(method_params), label_noise=chosen.get("label_noise"))
        _check_method(where, spec)
        specs.append(spec)
    return specs


def _model_value(name: str, key: str, value: Any) -> Any:
    if key == "epochs":
        return check_int(name, value, low=1)
    if key == "method":
        from robustlab.training import OBJECTIVES

        return check_choice(name, value, OBJECTIVES.names())
    text = _text(name, value)
    if text == _NO_NOISE:
        return None
    from robustlab.label_noise import parse_noise_spec

    parse_noise_spec(text, name=name)
    return text


def _check_method(where: str, spec: ModelSpec) -> None:
    """Build the objective once so a bad method parameter fails before any training."""
    if spec.cached:
        return
    from robustlab.training import build_objective

    with _key_path(f"{where}.method_params"):
        build_objective(spec.method, **spec.method_params)


def _value_label(key: str, value: Any) -> str:
    if key == "epochs":
        return f"e{value}"
    if key == "label_noise":
        return "clean" if value is None else str(value).replace(":", "")
    return str(value)


def _default_label(name: str) -> str:
    p = Path(name)
    if p.name in ("model", "model.safetensors") and p.parent.name:
        return p.parent.name
    return p.stem or name


# --------------------------------------------------------------------------- probes
def _probes(value: Any) -> tuple[tuple[str, dict[str, Any], dict[str, list[Any]]], ...]:
    from robustlab.scan.probe import PROBES

    if not isinstance(value, Mapping) or not value:
        fail("probes", "a table with one sub-table per probe ([probes.clean], ...)", value,
             error=InvalidTypeError)
    out = []
    for name, table in value.items():
        check_choice("probes", name, PROBES.names())
        where = f"probes.{name}"
        if not isinstance(table, Mapping):
            fail(where, "a table of the probe's settings", table, error=InvalidTypeError)
        accepted = _probe_arguments(name)
        fixed = {k: v for k, v in table.items() if k != _GRID}
        grid_table = table.get(_GRID, {})
        if not isinstance(grid_table, Mapping):
            fail(f"{where}.{_GRID}", "a table mapping settings to arrays of values", grid_table,
                 error=InvalidTypeError)
        for key in [*fixed, *grid_table]:
            if accepted is not None and key not in accepted:
                listed = ", ".join(repr(a) for a in accepted)
                fail(where, f"a table with settings among {{{listed}}}", f"unknown setting {key!r}",
                     describe_got=False)
        grid: dict[str, list[Any]] = {}
        for key, values in grid_table.items():
            if key in fixed:
                fail(f"{where}.{_GRID}.{key}", f"left out of the grid when {where}.{key} is set", values)
            grid[key] = _list(f"{where}.{_GRID}.{key}", values)
            if len({json.dumps(v, sort_keys=True) for v in grid[key]}) != len(grid[key]):
                fail(f"{where}.{_GRID}.{key}", "an array of distinct values", grid[key])
        # Build every grid point now: a bad setting fails before anything runs.
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values))
            with _key_path(where, grid_keys=set(point)):
                ProbeSpec(name, {**fixed, **point}).build()
        out.append((name, dict(fixed), grid))
    return tuple(out)


def _probe_arguments(name: str) -> list[str] | None:
    from robustlab.scan.probe import PROBES

    factory = PROBES.get(name)
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


_NAMED = re.compile(r"^The '([^']+)' parameter")


@contextmanager
def _key_path(prefix: str, grid_keys: set[str] | None = None) -> Iterator[None]:
    """Re-raise a library error naming its TOML key: ``'eps'`` -> ``'probes.adversarial.eps'``."""
    grid_keys = grid_keys or set()
    try:
        yield
    except RobustlabError as exc:
        def rename(match: re.Match[str]) -> str:
            key = match.group(1)
            if key == "params":  # build_objective names its keyword arguments 'params'
                return f"The '{prefix}' parameter"
            grid = f"{_GRID}." if key.split("[")[0] in grid_keys else ""
            return f"The '{prefix}.{grid}{key}' parameter"

        raise type(exc)(_NAMED.sub(rename, str(exc), count=1)) from None
    except TypeError as exc:  # an unknown keyword argument
        raise InvalidTypeError(f"The '{prefix}' parameter must be a table of accepted settings. "
                               f"Got {' '.join(str(exc).split())} instead.") from None


# --------------------------------------------------------------------------- expansion
def expand_sweep(config: SweepConfig) -> list[SweepRun]:
    """Every run of the sweep: models x datasets x seeds x probe grids, in that nesting order.

    Returns
    -------
    list of SweepRun
        ``len == len(models) * len(datasets) * len(seeds) * prod(len(values) of every grid)``.
    """
    probe_specs = _variants(config)
    gridded = any(grid for _, _, grid in (config.probes or ()))
    runs = []
    for model in config.models:
        for data in config.datasets:
            for seed in config.seeds:
                for grid, probes in probe_specs:
                    parts = [model.label]
                    if len(config.datasets) > 1:
                        parts.append(Path(data).name)
                    if len(config.seeds) > 1:
                        parts.append(f"seed{seed}")
                    grid_label = ",".join(f"{k}={_plain(v)}" for k, v in grid.items())
                    if len(probe_specs) > 1:
                        parts.append(grid_label)
                    folder = f"{model.label}-{Path(data).name}-seed{seed}"
                    if gridded:
                        folder += f"-{grid_label}"
                    runs.append(SweepRun(label=" · ".join(parts), folder=_slug(folder), model=model,
                                         data=data, seed=seed, probes=probes, grid=grid))
    folders = [r.folder for r in runs]
    if len(set(folders)) != len(folders):
        dup = next(f for f in folders if folders.count(f) > 1)
        fail("models", "models, datasets and grid values that give distinct run folders", dup)
    return runs


def _variants(config: SweepConfig) -> list[tuple[dict[str, Any], tuple[ProbeSpec, ...]]]:
    """Each combination of every probe grid: (its ``{"probe.setting": value}``, the probes)."""
    if config.probes is None:
        from robustlab.scan.probe import PROBES

        return [({}, tuple(ProbeSpec(n, {}) for n in _ordered(PROBES.names())))]
    names = _ordered([name for name, _, _ in config.probes])
    by_name = {name: (fixed, grid) for name, fixed, grid in config.probes}
    axes = [(name, key, values) for name in names for key, values in by_name[name][1].items()]
    variants = []
    for values in itertools.product(*(values for _, _, values in axes)):
        point = {f"{name}.{key}": v for (name, key, _), v in zip(axes, values)}
        probes = []
        for name in names:
            fixed, grid = by_name[name]
            params = {**fixed, **{k: point[f"{name}.{k}"] for k in grid}}
            probes.append(ProbeSpec(name, params))
        variants.append((point, tuple(probes)))
    return variants


def _ordered(names: Sequence[str]) -> list[str]:
    from robustlab._constants import SCAN_PROBE_ORDER

    order = list(SCAN_PROBE_ORDER)
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in text)


# --------------------------------------------------------------------------- running
def run_sweep(config: SweepConfig | str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None,
              backend: str | None = None, address: str | None = None, retrain: bool = False,
              progress: bool | None = None) -> SweepSummary:
    """Run every scan of a sweep and write the comparison page.

    Parameters
    ----------
    config : SweepConfig or path-like
        A parsed sweep or the path of its TOML file.
    out : path-like, optional
        Output folder: one run folder per run and ``compare.html``. Default: the config's ``out``,
        else ``runs/sweep-<config file name>``.
    backend : {"local", "ray"}, optional
        Where probe jobs run (default: the config's, else ``"local"``); see
        :mod:`robustlab.scan.backends`. Model training happens in this process.
    address : str, optional
        Ray cluster address (default: the config's).
    retrain : bool, default False
        Train the sweep's models again instead of reusing cached or saved ones.
    progress : bool, optional
        Progress bars; ``None`` shows them only on a terminal.

    Returns
    -------
    SweepSummary
    """
    from robustlab._checks import check_bool, check_writable_dir
    from robustlab.scan.backends import get_executor
    from robustlab.scan.compare import write_comparison
    from robustlab.scan.runner import run_scan

    if not isinstance(config, SweepConfig):
        config = load_sweep(config)
    retrain = check_bool("retrain", retrain)
    backend = backend if backend is not None else config.backend or "local"
    # the config's address belongs to its Ray backend: --backend local on the command line drops it
    address = address if address is not None else config.address if backend == "ray" else None
    get_executor(backend, address=address)  # a missing Ray fails before any training
    runs = expand_sweep(config)
    base = Path(out) if out is not None else config.out if config.out is not None else \
        Path("runs") / _slug(f"sweep-{config.source.stem if config.source else 'config'}")
    base = check_writable_dir("out", base)
    done: list[tuple[SweepRun, Any]] = []
    models: dict[tuple[Any, ...], tuple[Any, Any, dict[str, Any]]] = {}
    for run in runs:
        folder = base / run.folder
        key = (run.model.label, run.data, run.seed)
        if key not in models:  # grid variants of one (model, data, seed) share the model
            models = {key: _resolve_model(run, folder, retrain=retrain)}
        model, test, model_info = models[key]
        logger.info("sweep run %s (%d of %d)", run.label, len(done) + 1, len(runs))
        summary = run_scan(model, test, [p.build() for p in run.probes], out_dir=folder, seed=run.seed,
                           model_info=model_info, data_info=test.info() | {"source": run.data},
                           backend=backend, address=address, progress=progress)
        done.append((run, summary))
    comparison = None
    if len(runs) > 1:
        comparison = write_comparison([base / r.folder for r in runs], base, labels=[r.label for r in runs])
    return SweepSummary(out_dir=base, runs=tuple(done), comparison=comparison)


def _resolve_model(run: SweepRun, folder: Path, *, retrain: bool) -> tuple[Any, Any, dict[str, Any]]:
    """(model, test split, model description) of a run."""
    from robustlab import zoo

    spec = run.model
    if not spec.trained:
        from robustlab.models import load_any

        _, test = zoo.load_splits(run.data)
        return load_any(spec.name), test, {"name": spec.label, "source": "file", "path": spec.name}
    if spec.cached:
        entry = zoo.get_model(run.data, spec.name, seed=run.seed, epochs=spec.epochs, retrain=retrain)
        final = entry.history[-1] if entry.history else {}
        return entry.model, entry.test, {"name": spec.name, "source": "cache" if entry.cached else "trained",
                                         "path": str(entry.path), "epochs": len(entry.history),
                                         "val_acc": final.get("val_acc")}
    return _train(spec, run.data, run.seed, folder, retrain=retrain)


def _train(spec: ModelSpec, data: str, seed: int, folder: Path, *,
           retrain: bool) -> tuple[Any, Any, dict[str, Any]]:
    """Train ``spec`` with its method on (noised) labels; the model is kept in the run folder."""
    from robustlab import zoo
    from robustlab._io import atomic_write_text
    from robustlab.label_noise.noise_file import noisy_training_split
    from robustlab.models import load_model, save_model
    from robustlab.training import TrainConfig, Trainer, build_objective

    train, test = zoo.load_splits(data)
    model_dir, history_path = folder / "model", folder / "history.json"
    info: dict[str, Any] = {"name": spec.name, "method": spec.method, "method_params": spec.method_params,
                            "label_noise": spec.label_noise or _NO_NOISE, "path": str(model_dir)}
    if model_dir.exists() and not retrain:
        model, _ = load_model(model_dir)
        history = json.loads(history_path.read_text()) if history_path.exists() else []
        final = history[-1] if history else {}
        return model, test, info | {"source": "run folder", "epochs": len(history), "val_acc": final.get("val_acc")}
    folder.mkdir(parents=True, exist_ok=True)
    noisy, _ = noisy_training_split(spec.label_noise, train, seed=seed, run_dir=folder, resume=True)
    recipe = zoo.RECIPES[spec.name]
    net, mconf = zoo.build_for_data(spec.name, train, seed=seed, arch_params=recipe.arch_params)
    tconf = TrainConfig(epochs=spec.epochs or recipe.epochs, batch_size=recipe.batch_size,
                        optimizer=recipe.optimizer, lr=recipe.lr, weight_decay=recipe.weight_decay,
                        schedule=recipe.schedule, seed=seed)
    result = Trainer(net, build_objective(spec.method, **spec.method_params), tconf).fit(noisy, val=test)
    tmp = folder / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(result.model, tmp, mconf)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)  # the model appears whole or not at all
    atomic_write_text(history_path, json.dumps(result.history, indent=1))
    final = result.history[-1] if result.history else {}
    return result.model, test, info | {"source": "trained", "epochs": len(result.history),
                                       "val_acc": final.get("val_acc")}
