"""The ``audit`` scan probe: label issues, estimated noise and dataset health of the scanned data.

It needs predicted probabilities for the scanned examples. Two sources:

* ``source="model"`` (default, and what ``robustlab scan`` runs): the scanned model's own
  softmax outputs. These are *in-sample* — and so too confident to reveal wrong labels — if the
  model was trained on the scanned data; the default scan passes the held-out test split, where
  they are out-of-sample. The kNN detector runs on the model's penultimate features.
* ``source="kfold"``: out-of-sample probabilities and features from K-fold cross-validation on the
  scanned data with a fresh model of architecture ``arch`` (:func:`cross_val_outputs`); costs
  ``folds`` trainings.

:func:`audit_result` turns a :class:`~robustlab.label_noise.DatasetHealth` into a
:class:`~robustlab.scan.ProbeResult`; ``robustlab audit`` uses it to write its report through
the scan store.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robustlab._checks import check_bool, check_choice, check_int, fail
from robustlab._constants import (
    AUDIT_DEFAULT_FOLDS,
    AUDIT_THUMBNAILS,
    AUDIT_TOP_DUPLICATES,
    AUDIT_TOP_SUSPECTS,
    CONFUSION_TICKS_MAX_CLASSES,
    KNN_NEIGHBOURS,
)
from robustlab.data.dataset import Dataset
from robustlab.errors import InvalidTypeError
from robustlab.label_noise.detectors import LabelIssues, knn_issues
from robustlab.label_noise.health import DatasetHealth, _flat_inputs, dataset_health
from robustlab.label_noise.oof import (
    cross_val_outputs,
    default_train_config,
    logits_and_features,
)
from robustlab.models.registry import model_names
from robustlab.scan.probe import (
    PROBES,
    Figure,
    Probe,
    ProbeResult,
    ResultRow,
    Table,
    figure_to_svg,
)

__all__ = ["AuditProbe", "audit_result", "default_arch"]

_SOURCES = ("model", "kfold")


def default_arch(data: Dataset) -> str:
    """The architecture audits train when none is named: ``small-cnn`` for images, ``mlp`` otherwise."""
    return "small-cnn" if data.is_image else "mlp"


@PROBES.register("audit")
class AuditProbe(Probe):
    """Label audit of the scanned data: noise estimate, label issues, class balance, duplicates, outliers.

    Parameters
    ----------
    source : {"model", "kfold"}, default "model"
        Where ``pred_probs`` come from (see the module docstring): the scanned model (fast;
        in-sample if it was trained on this data) or K-fold cross-validation (out-of-sample).
    arch : str, optional
        Architecture trained by ``source="kfold"``; default ``small-cnn`` for images, ``mlp``
        for tabular data.
    folds : int >= 2, default 5
    epochs : int, optional
        Epochs per fold (default: the architecture's recipe).
    top : int >= 1, default 20
        Suspects listed in the table (and up to 16 thumbnails for images).
    knn : bool, default True
        Also run the kNN label-consistency detector on the (penultimate) features and combine it
        with confident learning by rank.
    embedding : {"inputs", "model"}, default "inputs"
        Space of the near-duplicate and outlier searches: the flattened inputs, or the model's
        penultimate features (which collapse within classes once trained, see
        :func:`~robustlab.label_noise.health.near_duplicates`).

    Notes
    -----
    Rows: ``noise_rate`` and ``num_label_issues`` (headline), ``label_issue_fraction``,
    ``detector_issues[detector]``, ``class_fraction[class]``, ``imbalance_ratio``,
    ``num_exact_duplicates``, ``num_conflicting_duplicates``, ``num_near_duplicate_pairs``,
    ``num_outliers``. Tables: top suspects, noise matrix, duplicates. Figures: noise-matrix
    heatmap, suspects' thumbnails (images).
    """

    name = "audit"
    title = "Label audit and dataset health"

    def __init__(self, *, source: str = "model", arch: str | None = None, folds: int = AUDIT_DEFAULT_FOLDS,
                 epochs: int | None = None, top: int = AUDIT_TOP_SUSPECTS, knn: bool = True,
                 embedding: str = "inputs") -> None:
        self.source = check_choice("source", source, _SOURCES)
        if arch is not None:
            check_choice("arch", arch, model_names())
        self.arch = arch
        self.folds = check_int("folds", folds, low=2)
        self.epochs = None if epochs is None else check_int("epochs", epochs, low=1)
        self.top = check_int("top", top, low=1)
        self.knn = check_bool("knn", knn)
        self.embedding = check_choice("embedding", embedding, ("inputs", "model"))

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "top": self.top, "knn": self.knn,
                               "embedding": self.embedding}
        if self.source == "kfold":
            out.update(arch=self.arch, folds=self.folds, epochs=self.epochs)
        return out

    def run(self, model: Any, data: Any, *, job: dict[str, Any], generator: torch.Generator) -> ProbeResult:
        """Audit ``data``; ``generator`` seeds the folds and fold models when ``source="kfold"``."""
        if not isinstance(data, Dataset):
            fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
        if len(data) < 2:
            fail("data", "a Dataset with at least 2 examples", data)
        if self.source == "model":
            logits, feats = logits_and_features(model, data)
            pred_probs = torch.softmax(logits.double(), dim=1).numpy()
            features = None if feats is None else feats.numpy()
            note = ("pred_probs from the scanned model (out-of-sample only if it was not trained on "
                    "these examples)")
        else:
            arch = self.arch or default_arch(data)
            seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
            outputs = cross_val_outputs(data, arch, n_splits=self.folds, seed=seed,
                                        train_config=default_train_config(arch, epochs=self.epochs, seed=seed))
            pred_probs, features = outputs.pred_probs, outputs.features
            note = f"out-of-sample pred_probs from {self.folds}-fold cross-validation of {arch}"
        detectors = {}
        if self.knn and len(data) > KNN_NEIGHBOURS:
            detectors["knn"] = knn_on(data, features)
        space = features if self.embedding == "model" else None
        health = dataset_health(data, pred_probs=pred_probs, features=space, detectors=detectors)
        return audit_result(health, data, top=self.top, note=note)


def knn_on(data: Dataset, features: np.ndarray | None) -> LabelIssues:
    """kNN label-consistency issues on ``features``, or on the flattened inputs when there are none."""
    emb = features if features is not None else _flat_inputs(data).numpy()
    return knn_issues(emb, data.labels, num_classes=data.num_classes)


# --------------------------------------------------------------------------- result
def audit_result(health: DatasetHealth, data: Dataset, *, top: int = AUDIT_TOP_SUSPECTS,
                 note: str = "") -> ProbeResult:
    """Rows, tables and figures of an audit (see :class:`AuditProbe`), from a :class:`DatasetHealth`."""
    if not isinstance(health, DatasetHealth):
        fail("health", "a DatasetHealth", health, error=InvalidTypeError)
    n = health.num_examples
    rows = [
        ResultRow("noise_rate", health.noise_rate, headline=True),
        ResultRow("num_label_issues", float(health.num_label_issues), unit="examples", headline=True),
        ResultRow("label_issue_fraction", health.num_label_issues / max(1, n)),
        ResultRow("num_examples", float(n), unit="examples"),
        ResultRow("imbalance_ratio", health.imbalance_ratio),
        ResultRow("num_exact_duplicates", float(health.num_exact_duplicates), unit="examples"),
        ResultRow("num_conflicting_duplicates", float(len(health.conflicting_duplicate_groups)), unit="groups"),
        ResultRow("num_near_duplicate_pairs", float(len(health.near_duplicate_pairs)), unit="pairs"),
        ResultRow("num_outliers", float(health.outlier_mask.sum()), unit="examples"),
    ]
    rows += [ResultRow("class_fraction", float(f), params={"class": name})
             for name, f in zip(health.class_names, health.class_fractions)]
    rows += [ResultRow("detector_issues", float(det.num_issues), params={"detector": name}, unit="examples")
             for name, det in health.detector_issues.items()]
    tables = [_suspects_table(health, top)]
    figures = []
    if health.noise is not None:
        tables.append(_noise_table(health))
        figures.append(_noise_figure(health))
    dup = _duplicates_table(health)
    if dup is not None:
        tables.append(dup)
    if data.is_image and health.issues is not None and health.issues.num_issues:
        figures.append(_thumbnails(health, data, min(top, AUDIT_THUMBNAILS)))
    summary = (f"{health.num_label_issues} of {n} labels flagged as likely wrong; estimated noise rate "
               f"{health.noise_rate:.1%}; {health.num_exact_duplicates} exact duplicate(s), "
               f"{len(health.near_duplicate_pairs)} near-duplicate pair(s), "
               f"{int(health.outlier_mask.sum())} outlier(s). {note}".strip())
    return ProbeResult(rows=tuple(rows), figures=tuple(figures), tables=tuple(tables), summary=summary)


def _suspects_table(health: DatasetHealth, top: int) -> Table:
    suspects = [r for r in health.suspects(top) if r["flagged"]]
    detector_cols = [f"flag_{n}" for n in health.detector_issues]
    columns = ("rank", "index", "given label", "suggested label", "score", *[c[5:] for c in detector_cols],
               "outlier", "duplicate")
    rows = tuple((r["rank"], r["index"], r["given_label"], r["suggested_label"], round(r["score"], 4),
                  *["yes" if r[c] else "" for c in detector_cols], "yes" if r["outlier"] else "",
                  "yes" if r["duplicate"] else "") for r in suspects)
    return Table(name="suspects", title=f"Top {len(rows)} suspected label errors (lower score = more "
                 "suspicious)", columns=columns, rows=rows)


def _noise_table(health: DatasetHealth) -> Table:
    m = np.asarray(health.noise.noise_matrix)
    names = health.class_names
    rows = tuple((names[i], *(round(float(v), 4) for v in m[i])) for i in range(m.shape[0]))
    return Table(name="noise_matrix", title="Estimated noise matrix P(given label = row | true label = column)",
                 columns=("given \\ true", *names), rows=rows)


def _duplicates_table(health: DatasetHealth) -> Table | None:
    rows = []
    for g in health.exact_duplicate_groups[:AUDIT_TOP_DUPLICATES]:
        labels = sorted({health.class_names[int(health.labels[i])] for i in g})
        rows.append(("exact", " ".join(str(int(i)) for i in g), 1.0, ", ".join(labels)))
    for (i, j), s in zip(health.near_duplicate_pairs[:AUDIT_TOP_DUPLICATES].tolist(),
                         health.near_duplicate_similarity[:AUDIT_TOP_DUPLICATES].tolist()):
        labels = sorted({health.class_names[int(health.labels[i])], health.class_names[int(health.labels[j])]})
        rows.append(("near", f"{i} {j}", round(s, 4), ", ".join(labels)))
    if not rows:
        return None
    return Table(name="duplicates", title="Duplicates (exact: identical inputs; near: cosine similarity of "
                 "embeddings)", columns=("kind", "indices", "similarity", "labels"), rows=tuple(rows))


def _noise_figure(health: DatasetHealth) -> Figure:
    from matplotlib.figure import Figure as MplFigure  # lazy, and never pyplot

    m = np.asarray(health.noise.noise_matrix, dtype=np.float64)
    names = health.class_names
    k = len(names)
    side = min(max(3.5, 0.35 * k + 2.0), 10.0)
    # No per-cell numbers (the noise_matrix table has them) and no layout engine: text drawn as
    # SVG paths is what makes figures slow, and the scan runs this probe by default.
    fig = MplFigure(figsize=(side + 1.0, side))
    fig.subplots_adjust(left=0.15, right=0.95, bottom=0.13, top=0.95)
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap="Reds", vmin=0.0, vmax=1.0, interpolation="none")
    fig.colorbar(image, ax=ax, label="P(given | true)")
    ax.set_xlabel("true label (estimated)")
    ax.set_ylabel("given label")
    if k <= CONFUSION_TICKS_MAX_CLASSES:
        ax.set_xticks(range(k), labels=names, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), labels=names)
    return Figure(name="noise_matrix", title="Estimated noise matrix P(given label | true label) (confident "
                  "learning; exact values in the table)", svg=figure_to_svg(fig))


def _thumbnails(health: DatasetHealth, data: Dataset, count: int) -> Figure:
    """One mosaic image of the suspects (a single embedded PNG), captioned "index: given -> suggested"."""
    from matplotlib.figure import Figure as MplFigure

    idx = [int(i) for i in health.issues.ranked_indices[:count]]
    images, _ = data.load(torch.tensor(idx, dtype=torch.int64))
    x = images.clamp(0, 1).numpy()
    c, h, w = x.shape[1:]
    cols = min(8, len(idx))
    nrows = -(-len(idx) // cols)
    pad = max(1, h // 8)
    mosaic = np.ones((nrows * (h + pad) + pad, cols * (w + pad) + pad, 3))
    for pos, img in enumerate(x):
        r, q = divmod(pos, cols)
        tile = np.repeat(img[:1], 3, axis=0) if c == 1 else img[:3]
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        mosaic[top:top + h, left:left + w] = tile.transpose(1, 2, 0)
    fig = MplFigure(figsize=(1.2 * cols, 1.35 * nrows))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9)
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    names = health.class_names
    for pos, i in enumerate(idx):
        r, q = divmod(pos, cols)
        given = names[int(health.labels[i])]
        sug = "?" if health.suggested_labels is None else names[int(health.suggested_labels[i])]
        ax.text(pad + q * (w + pad) + w / 2, pad + r * (h + pad) - pad / 3, f"#{i}: {given}>{sug}",
                ha="center", va="bottom", fontsize=6)
    ax.set_axis_off()
    return Figure(name="suspect_thumbnails", title="Most suspicious examples (index: given label > "
                  "suggested label)", svg=figure_to_svg(fig))
