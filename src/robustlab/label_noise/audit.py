"""The whole label audit behind ``robustlab audit``: K-fold pred_probs, detectors, health, files.

:func:`audit_dataset` computes; :func:`write_audit` writes the ranked CSV of suspects and the
HTML report through the scan's results store and report (the ``audit`` probe's section), so an
audit folder is a normal run folder that ``robustlab report`` can render again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustlab._checks import check_int, check_writable_dir, fail
from robustlab._constants import (
    AUDIT_DEFAULT_FOLDS,
    AUDIT_SUSPECTS_FILENAME,
    AUDIT_TOP_SUSPECTS,
    KNN_NEIGHBOURS,
    STORE_FILENAME,
)
from robustlab.data.dataset import Dataset
from robustlab.errors import InvalidTypeError
from robustlab.label_noise.detectors import (
    LabelIssues,
    aum_issues,
    forgetting_issues,
    train_with_records,
)
from robustlab.label_noise.health import DatasetHealth, dataset_health
from robustlab.label_noise.oof import (
    cross_val_outputs,
    default_train_config,
    derived_seed,
    resolve_model,
)
from robustlab.label_noise.probe import AuditProbe, audit_result, default_arch, knn_on
from robustlab.models.config import ModelConfig

__all__ = ["AuditFiles", "AuditOutcome", "audit_dataset", "write_audit"]

logger = logging.getLogger("robustlab.label_noise")


@dataclass(frozen=True, eq=False)
class AuditOutcome:
    """What :func:`audit_dataset` computed.

    Attributes
    ----------
    health : DatasetHealth
    pred_probs : ndarray (N, K)
        Out-of-sample predicted probabilities.
    model_name : str
        Architecture (or estimator class) used for cross-validation.
    settings : dict
        JSON-serialisable settings (folds, seed, epochs, detectors) that identify the audit.
    seconds : float
        Wall time of the computation.
    """

    health: DatasetHealth
    pred_probs: np.ndarray
    model_name: str
    settings: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class AuditFiles:
    """Files written by :func:`write_audit`."""

    out_dir: Path
    suspects_csv: Path
    report_path: Path
    run_id: str


def audit_dataset(
    data: Dataset,
    *,
    model: Any = None,
    n_splits: int = AUDIT_DEFAULT_FOLDS,
    seed: int,
    epochs: int | None = None,
    dynamics: bool = True,
    progress: bool | None = None,
) -> AuditOutcome:
    """Audit the labels of ``data``: K-fold confident learning, kNN consistency and training dynamics.

    Parameters
    ----------
    data : Dataset
    model : str, ModelConfig or estimator, optional
        Trained on each fold (see :func:`~robustlab.label_noise.cross_val_pred_probs`); default
        ``"small-cnn"`` for images, ``"mlp"`` for tabular data.
    n_splits : int, default 5
    seed : int
    epochs : int, optional
        Epochs per training run (default: the architecture's recipe).
    dynamics : bool, default True
        With a robustlab architecture, also train once on all the data with per-example records
        and add the AUM (threshold 0) and forgetting-event detectors.
    progress : bool, optional

    Returns
    -------
    AuditOutcome
        ``health.detector_issues`` holds ``confident_learning``, ``knn`` (on the out-of-sample
        penultimate features, or the flattened inputs for estimators) and, with ``dynamics``,
        ``aum`` and ``forgetting``; ``health.issues`` combines them by rank.
    """
    if not isinstance(data, Dataset):
        fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
    model = default_arch(data) if model is None else model
    seed = check_int("seed", seed, low=0, high=2**32 - 1)
    epochs = None if epochs is None else check_int("epochs", epochs, low=1)
    arch = model if isinstance(model, str) else model.name if isinstance(model, ModelConfig) else None
    train_config = default_train_config(arch, epochs=epochs, seed=seed) if isinstance(arch, str) else None
    spec = resolve_model(data, model, train_config)
    start = time.perf_counter()
    outputs = cross_val_outputs(data, model, n_splits=n_splits, seed=seed, train_config=train_config,
                                progress=progress)
    detectors: dict[str, LabelIssues] = {}
    if len(data) > KNN_NEIGHBOURS:
        detectors["knn"] = knn_on(data, outputs.features)
    use_dynamics = bool(dynamics) and hasattr(spec, "train_config")
    if use_dynamics:
        result = train_with_records(data, model, seed=derived_seed(seed, n_splits), train_config=train_config)
        detectors["aum"] = aum_issues(result.records)
        detectors["forgetting"] = forgetting_issues(result.records)
    health = dataset_health(data, pred_probs=outputs.pred_probs, features=outputs.features, detectors=detectors)
    settings = {"model": spec.name, "folds": n_splits, "seed": seed, "epochs": epochs,
                "detectors": list(health.detector_issues)}
    return AuditOutcome(health=health, pred_probs=outputs.pred_probs, model_name=spec.name, settings=settings,
                        seconds=time.perf_counter() - start)


def write_audit(
    outcome: AuditOutcome,
    data: Dataset,
    out_dir: str | os.PathLike[str],
    *,
    data_info: dict[str, Any] | None = None,
    top: int = AUDIT_TOP_SUSPECTS,
) -> AuditFiles:
    """Write ``suspects.csv`` (every example, flagged ones first) and the HTML report into ``out_dir``.

    The report goes through the scan's :class:`~robustlab.scan.ResultsStore` as one ``audit``
    probe job, keyed by the data fingerprint and the audit settings: writing the same audit
    again replaces it, a different one becomes another run in the same store.
    """
    from robustlab.scan.report import write_report
    from robustlab.scan.runner import fingerprint_data
    from robustlab.scan.store import ResultsStore

    if not isinstance(outcome, AuditOutcome):
        fail("outcome", "an AuditOutcome (from audit_dataset)", outcome, error=InvalidTypeError)
    top = check_int("top", top, low=1)
    out = check_writable_dir("out_dir", out_dir)
    csv_path = out / AUDIT_SUSPECTS_FILENAME
    outcome.health.to_csv(csv_path)
    note = (f"Out-of-sample pred_probs from {outcome.settings['folds']}-fold cross-validation of "
            f"{outcome.model_name}; full ranked list in {AUDIT_SUSPECTS_FILENAME}.")
    result = audit_result(outcome.health, data, top=top, note=note)
    key_config = {"audit": outcome.settings, "data": fingerprint_data(data)}
    model_info = {"name": outcome.model_name, "source": "k-fold cross-validation",
                  "folds": outcome.settings["folds"], "epochs": outcome.settings["epochs"]}
    with ResultsStore(out / STORE_FILENAME) as store:
        run_id = store.start_run(key_config, model_info=model_info, data_info=data_info or data.info())
        params = {**outcome.settings, "source": "kfold", "top": top}
        store.add_probe(run_id, AuditProbe.name, title=AuditProbe.title, params=params, position=0)
        store.write_job(run_id, AuditProbe.name, {}, result, seconds=outcome.seconds)
        store.finish_run(run_id, "complete")
    report = write_report(out / STORE_FILENAME, run_id=run_id)
    return AuditFiles(out_dir=out, suspects_csv=csv_path, report_path=report, run_id=run_id)

