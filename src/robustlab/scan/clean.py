"""The ``clean`` probe: accuracy on unperturbed data, per class, with a confusion matrix and timing."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_int, fail
from robustlab._constants import (
    CLEAN_WARMUP_EXAMPLES,
    CONFUSION_ANNOTATE_MAX_CLASSES,
    CONFUSION_TICKS_MAX_CLASSES,
    EVAL_BATCH_SIZE,
)
from robustlab.data.dataset import Dataset
from robustlab.errors import InvalidTypeError
from robustlab.models.inference import predict_logits
from robustlab.scan.probe import PROBES, Figure, Probe, ProbeResult, ResultRow, Table, figure_to_svg

__all__ = ["CleanProbe", "confusion_matrix"]


@PROBES.register("clean")
class CleanProbe(Probe):
    """Accuracy, balanced accuracy, macro-F1, per-class accuracy, confusion matrix and speed.

    Parameters
    ----------
    batch_size : int, default 512
        Inference batch size; it changes the timing rows, so it is part of the probe's settings.

    Notes
    -----
    Per-class accuracy is the recall of the class, :math:`C_{kk} / \\sum_j C_{kj}` for the
    confusion matrix :math:`C` (rows: true class, columns: predicted class); it is ``nan`` for a
    class with no examples. Balanced accuracy is the mean recall over classes that have examples
    (``sklearn.metrics.balanced_accuracy_score``); macro-F1 is
    ``sklearn.metrics.f1_score(average="macro")`` over the classes seen in labels or predictions.

    Timing covers :func:`~robustlab.models.predict_logits` over the whole dataset (data loading
    included) after an untimed warm-up on a few examples; ``time_per_example`` is its mean.
    """

    name = "clean"
    title = "Clean accuracy"

    def __init__(self, *, batch_size: int = EVAL_BATCH_SIZE) -> None:
        self.batch_size = check_int("batch_size", batch_size, low=1)

    def params(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}

    def run(self, model: Any, data: Any, *, job: dict[str, Any],
            generator: torch.Generator) -> ProbeResult:
        """Measure ``model`` on ``data`` (no randomness: ``generator`` is unused)."""
        if not isinstance(data, Dataset):
            fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
        if len(data) == 0:
            fail("data", "a Dataset with at least one example", data)
        logits, seconds = _timed_logits(model, data, batch_size=self.batch_size)
        labels = data.labels
        preds = logits.argmax(dim=1)
        cm = confusion_matrix(labels, preds, num_classes=data.num_classes)
        rows = _accuracy_rows(cm, labels, preds, data.class_names)
        rows += _timing_rows(seconds, len(data))
        correct, n = int(np.trace(cm)), len(data)
        summary = (f"{correct} of {n} examples classified correctly (accuracy {correct / n:.2%}); "
                   f"inference timed with batch size {self.batch_size}.")
        return ProbeResult(rows=tuple(rows), figures=(_confusion_figure(cm, data.class_names),),
                           tables=(_confusion_table(cm, data.class_names),), summary=summary)


def _timed_logits(model: Any, data: Dataset, *, batch_size: int) -> tuple[torch.Tensor, float]:
    # The first call pays one-off costs (lazy init, allocator, kernel selection): keep it untimed.
    warmup = data.subset(torch.arange(min(len(data), CLEAN_WARMUP_EXAMPLES)))
    predict_logits(model, warmup, batch_size=batch_size)
    start = time.perf_counter()
    logits = predict_logits(model, data, batch_size=batch_size)
    return logits, time.perf_counter() - start


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, *, num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of examples of true class ``i`` predicted as ``j``, int64 ``(K, K)``.

    Same as ``sklearn.metrics.confusion_matrix(labels, preds, labels=range(K))``.
    """
    flat = labels.to(torch.int64) * num_classes + preds.to(torch.int64)
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy()


def _accuracy_rows(cm: np.ndarray, labels: torch.Tensor, preds: torch.Tensor,
                   class_names: tuple[str, ...]) -> list[ResultRow]:
    from sklearn.metrics import f1_score  # lazy: sklearn is slow to import

    n = int(cm.sum())
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diag(cm) / support  # nan where a class has no examples
    f1 = f1_score(labels.numpy(), preds.numpy(), average="macro", zero_division=0)
    rows = [
        ResultRow("accuracy", float(np.trace(cm)) / n, headline=True),
        ResultRow("balanced_accuracy", float(np.nanmean(recall)), headline=True),
        ResultRow("macro_f1", float(f1)),
        ResultRow("num_examples", float(n), unit="examples"),
    ]
    rows += [ResultRow("class_accuracy", float(r), params={"class": name})
             for name, r in zip(class_names, recall)]
    return rows


def _timing_rows(seconds: float, n: int) -> list[ResultRow]:
    # A clock can read 0 for a tiny, fast job; keep throughput finite.
    seconds = max(seconds, 1e-9)
    return [
        ResultRow("time_per_example", 1000.0 * seconds / n, unit="ms"),
        ResultRow("throughput", n / seconds, unit="examples/s"),
    ]


def _confusion_table(cm: np.ndarray, class_names: tuple[str, ...]) -> Table:
    rows = tuple((name, *(int(c) for c in counts)) for name, counts in zip(class_names, cm))
    return Table(name="confusion_matrix", title="Confusion matrix (rows: true class, columns: predicted)",
                 columns=("true \\ predicted", *class_names), rows=rows)


def _confusion_figure(cm: np.ndarray, class_names: tuple[str, ...]) -> Figure:
    from matplotlib.figure import Figure as MplFigure  # lazy, and never pyplot

    k = len(class_names)
    side = min(max(4.0, 0.45 * k + 2.0), 12.0)
    fig = MplFigure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = cm / cm.sum(axis=1, keepdims=True)
    # interpolation="none" embeds the K x K image itself, drawn with crisp edges at any size.
    image = ax.imshow(np.nan_to_num(rates), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="none")
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= CONFUSION_TICKS_MAX_CLASSES:
        ax.set_xticks(range(k), labels=class_names, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), labels=class_names)
    if k <= CONFUSION_ANNOTATE_MAX_CLASSES:
        _annotate(ax, cm, np.nan_to_num(rates))
    return Figure(name="confusion_matrix", title="Confusion matrix (colour: fraction of the true class)",
                  svg=figure_to_svg(fig))


def _annotate(ax: Any, cm: np.ndarray, rates: np.ndarray) -> None:
    for (i, j), count in np.ndenumerate(cm):
        colour = "white" if rates[i, j] > 0.5 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=8)
