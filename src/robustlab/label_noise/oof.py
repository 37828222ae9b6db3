"""Out-of-sample predicted probabilities by stratified K-fold cross-validation.

Confident learning (Northcutt et al., 2021) needs ``pred_probs`` that the model produced for
examples it was *not* trained on: a model that has memorised its training labels predicts them
back with probability one, and every wrong label then looks right. :func:`cross_val_pred_probs`
splits the data into ``n_splits`` stratified folds, trains a fresh model on all folds but one and
predicts the held-out fold, so every example is scored by a model that never saw it.

The model is any robustlab architecture (a registered name such as ``"small-cnn"`` or a
:class:`~robustlab.models.ModelConfig`), trained with the :class:`~robustlab.training.Trainer`,
or any scikit-learn-style estimator (``fit(X, y)`` / ``predict_proba(X)``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_int, fail
from robustlab._constants import AUDIT_DEFAULT_FOLDS, EVAL_BATCH_SIZE
from robustlab._progress import progress as progress_bar
from robustlab.data.dataset import Dataset
from robustlab.data.split import stratified_kfold
from robustlab.errors import InvalidParameterError, InvalidTypeError, ModelOutputError
from robustlab.models.config import ModelConfig
from robustlab.models.inference import predict_logits
from robustlab.models.registry import model_names

__all__ = [
    "CrossValOutputs",
    "cross_val_outputs",
    "cross_val_pred_probs",
    "default_train_config",
    "logits_and_features",
]

logger = logging.getLogger("robustlab.label_noise")

#: Largest seed accepted by scikit-learn's ``random_state`` (and used for derived seeds).
_MAX_SEED = 2**32 - 1


@dataclass(frozen=True, eq=False)
class CrossValOutputs:
    """Everything K-fold cross-validation produced for each example.

    Attributes
    ----------
    pred_probs : ndarray, float64, shape (N, K)
        Out-of-sample predicted probabilities; rows sum to 1.
    features : ndarray, float32, shape (N, F) or None
        Penultimate-layer features (the input of the model's last ``nn.Linear``) of each example,
        computed by the fold model that did not train on it; ``None`` for scikit-learn estimators.
    fold : ndarray, int64, shape (N,)
        Index of the fold in which each example was held out.
    """

    pred_probs: np.ndarray
    features: np.ndarray | None
    fold: np.ndarray


def cross_val_pred_probs(
    data: Dataset,
    model: ModelConfig | str | Any,
    *,
    n_splits: int = AUDIT_DEFAULT_FOLDS,
    seed: int,
    train_config: Any = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Out-of-sample ``pred_probs`` for every example by stratified K-fold cross-validation.

    Parameters
    ----------
    data : Dataset
        ``N`` examples, ``K = data.num_classes`` classes; every class needs at least ``n_splits``
        examples.
    model : str, ModelConfig or scikit-learn-style estimator
        * a registered architecture name (``"mlp"``, ``"small-cnn"``, ...): built for the data's
          input shape and classes, with the input normalisation computed on each training fold;
        * a :class:`~robustlab.models.ModelConfig` (its ``input_shape`` and ``num_classes`` must
          match the data; its ``mean``/``std`` are used as given);
        * an object with ``fit(X, y)`` and ``predict_proba(X)``: cloned for each fold
          (``sklearn.base.clone``, else ``copy.deepcopy``) and fitted on the flattened inputs
          ``X`` of shape ``(n, prod(input_shape))``; a ``random_state`` parameter is set from
          ``seed`` so results are reproducible.
    n_splits : int >= 2, default 5
        Number of folds.
    seed : int in [0, 2**32 - 1]
        Seeds the fold assignment (scikit-learn ``StratifiedKFold(shuffle=True)``) and each fold
        model's initialisation (a seed derived from ``(seed, fold)``).
    train_config : TrainConfig, optional
        Training settings of robustlab models. Default: :func:`default_train_config` of the
        architecture (the recipe ``robustlab scan`` uses). Its ``seed`` fixes the data order.
        Ignored for estimators.
    progress : bool, optional
        Progress bar over folds; ``None`` shows it only on a terminal.

    Returns
    -------
    ndarray, float64, shape (N, K)
        Row ``i`` is predicted by the model of the fold that held ``i`` out; rows sum to 1.

    Raises
    ------
    InvalidParameterError
        A class with fewer than ``n_splits`` examples (the message names it), ``n_splits`` out of
        range, or a ``ModelConfig`` that does not fit the data.
    UnknownNameError
        Unknown architecture name (the message lists valid ones).
    InvalidTypeError
        ``model`` is neither a name, a config nor an estimator.

    Notes
    -----
    An estimator that saw only some classes in a training fold returns fewer columns
    (``classes_`` lists those it saw). As in cleanlab's ``estimate_cv_predicted_probabilities``,
    the missing classes get probability 0 and each row is renormalised to sum to 1; a row that
    sums to 0 becomes uniform. With stratified folds and at least ``n_splits`` examples per
    class this only happens for estimators that drop classes on their own.

    References
    ----------
    .. [1] Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset
       Labels", JAIR 70, 2021, Sec. 4 (out-of-sample predicted probabilities by cross-validation).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from robustlab.data import load_dataset
    >>> ds = load_dataset("breast-cancer")
    >>> p = cross_val_pred_probs(ds, LogisticRegression(max_iter=500), n_splits=3, seed=0)
    >>> p.shape, bool(abs(p.sum(axis=1) - 1).max() < 1e-9)
    ((569, 2), True)
    """
    return cross_val_outputs(data, model, n_splits=n_splits, seed=seed, train_config=train_config,
                             progress=progress, features=False).pred_probs


def cross_val_outputs(
    data: Dataset,
    model: ModelConfig | str | Any,
    *,
    n_splits: int = AUDIT_DEFAULT_FOLDS,
    seed: int,
    train_config: Any = None,
    progress: bool | None = None,
    features: bool = True,
) -> CrossValOutputs:
    """:func:`cross_val_pred_probs` plus out-of-sample penultimate features and fold indices.

    Same parameters as :func:`cross_val_pred_probs`; ``features=False`` skips the features.
    The features feed the kNN detectors and the near-duplicate search of
    :func:`~robustlab.label_noise.dataset_health` without another training run.
    """
    spec = resolve_model(data, model, train_config)
    seed = check_int("seed", seed, low=0, high=_MAX_SEED)
    check_folds(data, n_splits)
    folds = list(stratified_kfold(data, n_splits=n_splits, seed=seed))
    n, k = len(data), data.num_classes
    pred_probs = np.zeros((n, k), dtype=np.float64)
    fold_of = np.zeros(n, dtype=np.int64)
    feats: np.ndarray | None = None
    with progress_bar("cross-validation", total=len(folds), enabled=progress) as bar:
        for i, (train_idx, test_idx) in enumerate(folds):
            bar.update(description=f"cross-validation fold {i + 1}/{len(folds)}")
            logger.info("cross-validation fold %d/%d (%d train, %d held out)", i + 1, len(folds),
                        len(train_idx), len(test_idx))
            probs, f = spec.fit_predict(data, train_idx, test_idx, seed=derived_seed(seed, i),
                                        features=features)
            idx = test_idx.numpy()
            pred_probs[idx] = probs
            fold_of[idx] = i
            if f is not None:
                if feats is None:
                    feats = np.zeros((n, f.shape[1]), dtype=np.float32)
                feats[idx] = f
            bar.advance()
    return CrossValOutputs(pred_probs=pred_probs, features=feats, fold=fold_of)


def check_folds(data: Dataset, n_splits: Any, *, name: str = "n_splits") -> int:
    """``n_splits`` as an int in [2, smallest class size]; the error names the smallest class."""
    n_splits = check_int(name, n_splits, low=2)
    counts = data.class_counts().tolist()
    smallest = min(range(len(counts)), key=lambda c: counts[c]) if counts else None
    if smallest is not None and counts[smallest] < n_splits:
        raise InvalidParameterError(
            f"The '{name}' parameter must be at most the number of examples of the smallest class "
            f"({counts[smallest]} of class {data.class_names[smallest]!r}) for stratified K-fold "
            f"cross-validation. Got {n_splits} instead.")
    return n_splits


def derived_seed(seed: int, index: int) -> int:
    """Independent seed for sub-task ``index`` of a seeded procedure (NumPy SeedSequence spawning)."""
    state = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, dtype=np.uint32)
    return int(state[0])


def default_train_config(arch: str, *, seed: int = 0, epochs: int | None = None,
                         record_examples: bool = False) -> Any:
    """The training recipe of ``robustlab scan`` for ``arch`` (``TrainConfig()`` if it has none)."""
    from robustlab.training import TrainConfig
    from robustlab.zoo import RECIPES

    recipe = RECIPES.get(arch)
    if recipe is None:
        return TrainConfig(seed=seed, record_examples=record_examples,
                           **({} if epochs is None else {"epochs": epochs}))
    return TrainConfig(epochs=recipe.epochs if epochs is None else epochs, batch_size=recipe.batch_size,
                       optimizer=recipe.optimizer, lr=recipe.lr, weight_decay=recipe.weight_decay,
                       schedule=recipe.schedule, seed=seed, record_examples=record_examples)


# --------------------------------------------------------------------------- model specs
class _TorchSpec:
    """A robustlab architecture trained with the Trainer on each fold."""

    def __init__(self, config: ModelConfig | None, arch: str | None, train_config: Any) -> None:
        self.config, self.arch, self.train_config = config, arch, train_config

    def build(self, train: Dataset, *, seed: int, num_classes: int | None = None) -> torch.nn.Module:
        """A fresh model for ``train`` (normalisation from ``train`` when built from a name)."""
        from robustlab.zoo import input_statistics

        k = train.num_classes if num_classes is None else num_classes
        if self.config is not None:
            conf = self.config
            if num_classes is not None and num_classes != conf.num_classes:
                conf = ModelConfig(conf.name, conf.input_shape, num_classes, params=conf.params,
                                   mean=conf.mean, std=conf.std)
            return conf.build(seed=seed)
        conf = ModelConfig.for_model(self.arch, train.input_shape, k, params=input_statistics(train))
        return conf.build(seed=seed)

    @property
    def name(self) -> str:
        return self.config.name if self.config is not None else str(self.arch)

    def fit(self, train: Dataset, *, seed: int, config: Any = None) -> Any:
        from robustlab.training import CrossEntropy, Trainer

        model = self.build(train, seed=seed)
        return Trainer(model, CrossEntropy(), config or self.train_config).fit(train)

    def fit_predict(self, data: Dataset, train_idx: torch.Tensor, test_idx: torch.Tensor, *,
                    seed: int, features: bool) -> tuple[np.ndarray, np.ndarray | None]:
        result = self.fit(data.subset(train_idx), seed=seed)
        logits, feats = logits_and_features(result.model, data.subset(test_idx), features=features)
        probs = torch.softmax(logits.double(), dim=1).numpy()
        return probs, (None if feats is None else feats.numpy())


class _EstimatorSpec:
    """A scikit-learn-style estimator, cloned and fitted on each fold."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    @property
    def name(self) -> str:
        return type(self.estimator).__name__

    def fit_predict(self, data: Dataset, train_idx: torch.Tensor, test_idx: torch.Tensor, *,
                    seed: int, features: bool) -> tuple[np.ndarray, None]:
        est = _clone(self.estimator, seed)
        x, y = data.tensors()
        x = x.reshape(len(data), -1).numpy()
        y = y.numpy()
        tr, te = train_idx.numpy(), test_idx.numpy()
        est.fit(x[tr], y[tr])
        raw = np.asarray(est.predict_proba(x[te]), dtype=np.float64)
        classes = np.asarray(getattr(est, "classes_", np.arange(raw.shape[1] if raw.ndim == 2 else 0)))
        return _expand_columns(raw, classes, data.num_classes, len(te), self.name), None


def _clone(estimator: Any, seed: int) -> Any:
    try:
        from sklearn.base import clone

        est = clone(estimator)
    except (TypeError, RuntimeError):  # not a scikit-learn estimator: copy it
        est = copy.deepcopy(estimator)
    get_params = getattr(est, "get_params", None)
    if callable(get_params) and "random_state" in get_params():
        est.set_params(random_state=seed)
    return est


def _expand_columns(raw: np.ndarray, classes: np.ndarray, k: int, n: int, name: str) -> np.ndarray:
    """Put an estimator's ``predict_proba`` columns at their class index; zeros elsewhere; renormalise."""
    if raw.ndim != 2 or raw.shape[0] != n or raw.shape[1] != len(classes):
        raise ModelOutputError(
            f"The estimator {name} must return predict_proba of shape ({n}, {len(classes)}) "
            f"(one column per entry of classes_). Got shape {raw.shape} instead.")
    if not np.isfinite(raw).all() or (raw < 0).any():
        raise ModelOutputError(f"The estimator {name} returned predict_proba values that are not "
                               "finite non-negative probabilities.")
    if classes.size and (classes.min() < 0 or classes.max() >= k
                         or not np.issubdtype(classes.dtype, np.integer)):
        raise ModelOutputError(f"The estimator {name} has classes_ {classes.tolist()[:10]} that are not "
                               f"class indices in [0, {k - 1}].")
    out = np.zeros((n, k), dtype=np.float64)
    out[:, classes.astype(np.int64)] = raw
    sums = out.sum(axis=1, keepdims=True)
    zero = sums[:, 0] <= 0
    out[zero] = 1.0 / k
    sums[zero] = 1.0
    return out / sums


def resolve_model(data: Any, model: Any, train_config: Any) -> _TorchSpec | _EstimatorSpec:
    """Validate ``data``/``model``/``train_config`` and return the per-fold trainer."""
    from robustlab.training import TrainConfig

    if not isinstance(data, Dataset):
        fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
    if train_config is not None and not isinstance(train_config, TrainConfig):
        fail("train_config", "None or a robustlab.training.TrainConfig", train_config,
             error=InvalidTypeError)
    if isinstance(model, str):
        from robustlab._checks import check_choice

        check_choice("model", model, model_names())
        return _TorchSpec(None, model, train_config or default_train_config(model))
    if isinstance(model, ModelConfig):
        if tuple(model.input_shape) != tuple(data.input_shape) or model.num_classes != data.num_classes:
            raise InvalidParameterError(
                f"The 'model' parameter must be a ModelConfig for the data (input_shape "
                f"{data.input_shape}, {data.num_classes} classes). Got input_shape {model.input_shape} "
                f"and {model.num_classes} classes instead.")
        return _TorchSpec(model, None, train_config or default_train_config(model.name))
    if callable(getattr(model, "fit", None)) and callable(getattr(model, "predict_proba", None)):
        return _EstimatorSpec(model)
    fail("model", "an architecture name, a robustlab ModelConfig or an estimator with fit and "
         "predict_proba", model, error=InvalidTypeError)


# --------------------------------------------------------------------------- features
def _last_linear(model: torch.nn.Module) -> torch.nn.Linear | None:
    last = None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            last = module
    return last


@torch.no_grad()
def logits_and_features(
    model: Callable[[torch.Tensor], torch.Tensor],
    data: Dataset,
    *,
    features: bool = True,
    batch_size: int = EVAL_BATCH_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits ``(N, K)`` and penultimate features ``(N, F)`` of ``model`` on ``data`` (float32, CPU).

    The features are the input of the model's *last* ``nn.Linear`` module in registration order
    (the classifier head of every robustlab architecture), captured with a forward hook in eval
    mode; the caller's train/eval mode is restored. A model without a linear layer (or a plain
    callable) gives ``None``.
    """
    head = _last_linear(model) if (features and isinstance(model, torch.nn.Module)) else None
    captured: list[torch.Tensor] = []
    handle = None
    if head is not None:
        handle = head.register_forward_hook(lambda _m, inp, _out: captured.append(
            inp[0].detach().reshape(inp[0].shape[0], -1).float().cpu()))
    try:
        logits = predict_logits(model, data, batch_size=batch_size)
    finally:
        if handle is not None:
            handle.remove()
    feats = torch.cat(captured) if (head is not None and captured) else None
    if feats is not None and feats.shape[0] != logits.shape[0]:
        feats = None  # the head ran more or fewer times than batches: not a plain classifier head
    return logits, feats
