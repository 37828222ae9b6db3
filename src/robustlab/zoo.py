"""Reference models trained on built-in or on-disk data, cached on disk.

``robustlab scan`` with no arguments needs a trained model in seconds: :func:`get_model` trains one
with the :class:`~robustlab.training.Trainer` the first time and reuses the cached copy afterwards.
The cache key covers everything that changes the weights (data, architecture, seed, training
recipe, robustlab version), so a stale model is never reused.

The cache folder is ``$ROBUSTLAB_CACHE`` when set, else ``~/.cache/robustlab``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustlab import __version__
from robustlab._checks import check_choice, check_int
from robustlab._constants import CACHE_ENV, DEFAULT_CACHE_DIR
from robustlab.data import Dataset
from robustlab.errors import CheckpointError

__all__ = ["Recipe", "ZooModel", "RECIPES", "get_model", "cache_dir", "load_splits", "build_for_data",
           "input_statistics"]

logger = logging.getLogger("robustlab.zoo")


@dataclass(frozen=True)
class Recipe:
    """A training recipe: architecture parameters and the Trainer settings that produce a model."""

    arch: str
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    arch_params: dict[str, Any] = field(default_factory=dict)


#: Recipes per (data kind, architecture). Digits' small CNN reaches ~0.98 test accuracy in
#: seconds on 2 CPU cores (docs/benchmarks/make_run.md); the others are sensible defaults.
RECIPES: dict[str, Recipe] = {
    "small-cnn": Recipe("small-cnn", epochs=15, batch_size=64, optimizer="adamw", lr=3e-3,
                        weight_decay=5e-4, schedule="cosine"),
    "mlp": Recipe("mlp", epochs=30, batch_size=64, optimizer="adamw", lr=1e-3,
                  weight_decay=1e-4, schedule="cosine"),
    "preact-resnet18": Recipe("preact-resnet18", epochs=30, batch_size=128, optimizer="sgd", lr=0.1,
                              weight_decay=5e-4, schedule="cosine"),
    "wide-resnet": Recipe("wide-resnet", epochs=30, batch_size=128, optimizer="sgd", lr=0.1,
                          weight_decay=5e-4, schedule="cosine",
                          arch_params={"depth": 16, "widen_factor": 4}),
}


@dataclass(frozen=True)
class ZooModel:
    """A trained model with the data splits it was trained and evaluated on."""

    model: torch.nn.Module
    config: Any  # robustlab.models.ModelConfig
    train: Dataset
    test: Dataset
    path: Path
    history: list[dict[str, Any]]
    cached: bool


def cache_dir() -> Path:
    """The cache folder: ``$ROBUSTLAB_CACHE`` or ``~/.cache/robustlab``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / DEFAULT_CACHE_DIR


def load_splits(data: str) -> tuple[Dataset, Dataset]:
    """Train and test splits of ``data`` (a built-in name or a path).

    Formats with an official test split (CIFAR, MNIST, train/test folders) use it; the others use
    the fixed stratified hold-out of :func:`robustlab.data.load_dataset`, which does not depend on
    the training seed, so models trained with different seeds are scored on the same examples and
    a scan never evaluates on training data.
    """
    from robustlab.data import load_dataset

    return load_dataset(data, split="train"), load_dataset(data, split="test")


def _key(data: str, recipe: Recipe, seed: int, input_shape: tuple[int, ...], num_classes: int) -> str:
    payload = json.dumps({"data": data, "recipe": asdict(recipe), "seed": seed, "version": __version__,
                          "input_shape": list(input_shape), "num_classes": num_classes},
                         sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(data).name)[:40]
    return f"{safe}-{recipe.arch}-s{seed}-{digest}"


def get_model(
    data: str = "digits",
    arch: str = "small-cnn",
    *,
    seed: int = 0,
    epochs: int | None = None,
    retrain: bool = False,
    cache: Path | None = None,
) -> ZooModel:
    """Train (or reuse from the cache) ``arch`` on ``data``.

    Parameters
    ----------
    data : str, default "digits"
        A built-in dataset name or a path readable by :func:`robustlab.data.load_dataset`.
    arch : str, default "small-cnn"
        An architecture with a recipe in :data:`RECIPES`.
    seed : int, default 0
        Seeds the split, the initialisation and the data order.
    epochs : int, optional
        Overrides the recipe's number of epochs.
    retrain : bool, default False
        Ignore a cached model and train again.
    cache : Path, optional
        Cache folder; defaults to :func:`cache_dir`.
    """
    from robustlab.models import load_model, save_model
    from robustlab.training import Trainer, TrainConfig, build_objective

    check_choice("arch", arch, RECIPES)
    seed = check_int("seed", seed, low=0)
    recipe = RECIPES[arch]
    if epochs is not None:
        recipe = Recipe(**{**asdict(recipe), "epochs": check_int("epochs", epochs, low=1)})
    train, test = load_splits(data)
    folder = (cache or cache_dir()) / "models" / _key(data, recipe, seed, train.input_shape, train.num_classes)
    model_path = folder / "model"
    history_path = folder / "history.json"
    if model_path.exists() and not retrain:
        try:
            model, config = load_model(model_path)
            history = json.loads(history_path.read_text()) if history_path.exists() else []
            logger.info("reusing cached model %s", folder)
            return ZooModel(model, config, train, test, model_path, history, cached=True)
        except (CheckpointError, ValueError) as exc:  # a damaged cache entry is rebuilt, not fatal
            logger.warning("cached model %s unusable (%s); retraining", folder, exc)
    model, config = build_for_data(arch, train, seed=seed, arch_params=recipe.arch_params)
    tconf = TrainConfig(epochs=recipe.epochs, batch_size=recipe.batch_size, optimizer=recipe.optimizer,
                        lr=recipe.lr, weight_decay=recipe.weight_decay, schedule=recipe.schedule,
                        seed=seed)
    result = Trainer(model, build_objective("ce"), tconf).fit(train, val=test)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(result.model, tmp / "model", config)
    (tmp / "history.json").write_text(json.dumps(result.history, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # the cache entry appears whole or not at all
    return ZooModel(result.model, config, train, test, model_path, list(result.history), cached=False)


def build_for_data(arch: str, train: Dataset, *, seed: int,
                   arch_params: dict[str, Any] | None = None) -> tuple[torch.nn.Module, Any]:
    """A freshly initialised ``arch`` for ``train`` and the ModelConfig that rebuilds it.

    The model's normalisation layer gets the training inputs' statistics
    (:func:`input_statistics`), computed once and stored in the config.
    """
    from robustlab.models import ModelConfig, build_model

    params = {**(arch_params or {}), **input_statistics(train)}
    model = build_model(arch, train.input_shape, train.num_classes, seed=seed, **params)
    config = ModelConfig.for_model(arch, train.input_shape, train.num_classes, params=params,
                                   class_names=train.class_names)
    return model, config


def input_statistics(train: Dataset) -> dict[str, Any]:
    """Per-channel (images) or per-feature (tabular) mean/std of the training inputs.

    Returned as ``{"mean": [...], "std": [...]}``, the keyword arguments of
    :func:`robustlab.models.build_model`'s normalisation layer.
    """
    total = None
    total_sq = None
    count = 0
    for batch in train.batches(1024):
        x = batch.inputs.double()
        dims = [0, 2, 3] if x.ndim == 4 else [0]
        s, sq = x.sum(dim=dims), (x * x).sum(dim=dims)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.numel() // s.numel()
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt().clamp_min(1e-3)
    return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}
