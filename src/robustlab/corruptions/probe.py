"""The ``corruptions`` scan probe: accuracy per (corruption, severity), corruption errors, mean CE.

Jobs. The runner asks for the job list before it sees the data, so the list covers every family:
one job per image corruption (``family="image"``), per tabular corruption (``family="tabular"``)
and, when enabled, per MNIST-C corruption (``family="mnist_c"``), plus one ``corruption="all"``
summary job. A job whose family does not fit the data (an image corruption on tabular data, MNIST-C
on colour images) returns no rows and says so in its summary; it costs nothing.

The aggregate. Probes cannot read the store, so the heatmap and the mean corruption error come
from the summary job, which evaluates every (corruption, severity) cell itself. Every corruption
draws its randomness from a generator seeded from (probe ``seed``, family, corruption) -- not
from the job's generator -- so the summary job reproduces the per-corruption jobs' numbers
exactly. When the summary job runs in the process that ran the per-corruption jobs (the local
backend), it reuses their accuracies (kept on the probe object, keyed by the model -- including
its parameters' in-place version counters -- and the data); after a resume or on another worker
it evaluates every cell again (``summary=False`` skips the heatmap and the mean CE).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_bool, check_choice, check_int, fail
from robustlab._constants import CORRUPTION_SEVERITIES, DEFAULT_SEED, EVAL_BATCH_SIZE
from robustlab.corruptions.metrics import (
    ALEXNET_ERRORS,
    CorruptionReport,
    batched_accuracy,
)
from robustlab.corruptions.mnist_c import MNIST_C_CORRUPTIONS, corrupt_mnist_c
from robustlab.corruptions.tabular import TABULAR_CORRUPTIONS, corrupt_tabular
from robustlab.data.dataset import Dataset
from robustlab.errors import InvalidTypeError
from robustlab.models.inference import predict_logits
from robustlab.scan.probe import (
    ModelCache,
    PROBES,
    Figure,
    Probe,
    ProbeResult,
    ResultRow,
    Table,
    figure_to_svg,
)

__all__ = ["CorruptionsProbe"]

_SUMMARY = "all"


def _image_corruptions() -> tuple[str, ...]:
    from robustlab.corruptions.image import IMAGE_CORRUPTIONS

    return tuple(IMAGE_CORRUPTIONS)


@PROBES.register("corruptions")
class CorruptionsProbe(Probe):
    """Accuracy under common corruptions, per (corruption, severity), with the mean corruption error.

    Parameters
    ----------
    corruptions : sequence of str, optional
        Image corruptions (default: all 19 of :data:`robustlab.corruptions.IMAGE_CORRUPTIONS`).
    tabular_corruptions : sequence of str, optional
        Tabular corruptions (default: all of :data:`TABULAR_CORRUPTIONS`). ``categorical_flip``
        needs ``categorical``; without it that job reports nothing.
    severities : sequence of int, default (1, 2, 3, 4, 5)
    preset : str, optional
        Image parameter table (one of ``IMAGE_PRESETS``); default ``preset_for`` the data's image size and channels.
    mnist_c : bool, default False
        Also run the 15 MNIST-C corruptions on grey images (one severity each).
    categorical : sequence of int, optional
        Categorical columns of tabular data (skipped by Gaussian noise, flipped by
        ``categorical_flip``).
    summary : bool, default True
        Add the summary job (heatmap, accuracy table, mean corruption error).
    seed : int, default 0
        Seeds the corruptions' randomness (see the module notes).
    batch_size : int, default 512

    Notes
    -----
    Rows (fractions): ``accuracy`` per ``{family, corruption, severity}``; ``corruption_error``
    (mean error over the severities) per ``{family, corruption}``; in the summary job
    ``mean_corruption_error`` (headline; the unnormalised mean over every cell, the CIFAR-10-C
    number of AugMix), ``relative_mean_corruption_error`` (mean over cells of the corrupted minus
    the clean error), ``mean_corruption_accuracy``, and ``mce`` / ``relative_mce`` normalised by
    AlexNet when the images use the ImageNet preset and the 15 benchmark corruptions at all five
    severities are present (that normalisation is only meaningful for ImageNet-C).
    """

    name = "corruptions"
    title = "Common corruptions"

    def __init__(self, *, corruptions: Sequence[str] | None = None,
                 tabular_corruptions: Sequence[str] | None = None,
                 severities: Sequence[int] = CORRUPTION_SEVERITIES, preset: str | None = None,
                 mnist_c: bool = False, categorical: Sequence[int] | None = None, summary: bool = True,
                 seed: int = DEFAULT_SEED, batch_size: int = EVAL_BATCH_SIZE) -> None:
        image = _image_corruptions()
        self.corruptions = tuple(check_choice("corruptions", c, image)
                                 for c in (image if corruptions is None else corruptions))
        self.tabular_corruptions = tuple(check_choice("tabular_corruptions", c, TABULAR_CORRUPTIONS)
                                         for c in (TABULAR_CORRUPTIONS if tabular_corruptions is None
                                                   else tabular_corruptions))
        self.severities = tuple(check_int("severities", s, low=1, high=5) for s in severities)
        if not self.severities or len(set(self.severities)) != len(self.severities):
            fail("severities", "a non-empty sequence of distinct severities in 1-5", list(severities))
        if preset is not None:
            from robustlab.corruptions.image import IMAGE_PRESETS

            check_choice("preset", preset, IMAGE_PRESETS)
        self.preset = preset
        self.mnist_c = check_bool("mnist_c", mnist_c)
        self.categorical = None if categorical is None else tuple(check_int("categorical", c, low=0)
                                                                   for c in categorical)
        self.summary = check_bool("summary", summary)
        self.seed = check_int("seed", seed)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        # Per-corruption accuracies of the jobs run by this object, reused by the summary job when
        # it runs in the same process on the same model (unchanged weights) and data.
        self._cache = ModelCache()

    def params(self) -> dict[str, Any]:
        return {"corruptions": list(self.corruptions), "tabular_corruptions": list(self.tabular_corruptions),
                "severities": list(self.severities), "preset": self.preset, "mnist_c": self.mnist_c,
                "categorical": None if self.categorical is None else list(self.categorical),
                "seed": self.seed, "batch_size": self.batch_size, "summary": self.summary}

    def jobs(self) -> list[dict[str, Any]]:
        jobs = [{"family": "image", "corruption": c} for c in self.corruptions]
        jobs += [{"family": "tabular", "corruption": c} for c in self.tabular_corruptions]
        if self.mnist_c:
            jobs += [{"family": "mnist_c", "corruption": c} for c in MNIST_C_CORRUPTIONS]
        if self.summary:
            jobs.append({"family": _SUMMARY, "corruption": _SUMMARY})
        return jobs

    # ------------------------------------------------------------------ running
    def run(self, model: Any, data: Any, *, job: dict[str, Any], generator: torch.Generator) -> ProbeResult:
        """Evaluate one job (the job's generator is unused: see the module notes)."""
        if not isinstance(data, Dataset):
            fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
        if len(data) == 0:
            fail("data", "a Dataset with at least one example", data)
        family, corruption = job.get("family"), job.get("corruption")
        if family == _SUMMARY:
            return self._run_summary(model, data)
        reason = self._not_applicable(family, data)
        if reason:
            return ProbeResult(summary=f"{corruption}: {reason}")
        if family == "mnist_c":
            acc = self._mnist_c_accuracy(model, data, corruption)
            rows = (ResultRow("accuracy", acc, params={"family": family, "corruption": corruption}),)
            return ProbeResult(rows=rows, summary=f"MNIST-C {corruption}: accuracy {acc:.2%}.")
        if family == "tabular" and corruption == "categorical_flip" and not self.categorical:
            return ProbeResult(summary="categorical_flip: no categorical columns declared (probe "
                                       "setting 'categorical'), nothing to flip.")
        accs = self._accuracies(model, data, family, corruption)
        return ProbeResult(rows=tuple(_corruption_rows(family, corruption, self.severities, accs)),
                           summary=f"{corruption}: accuracy " + ", ".join(
                               f"{a:.1%} (s{s})" for s, a in zip(self.severities, accs)) + ".")

    def _not_applicable(self, family: str, data: Dataset) -> str:
        if family == "image" and not data.is_image:
            return "image corruption, not applicable to tabular data"
        if family == "tabular" and data.is_image:
            return "tabular corruption, not applicable to images"
        if family == "mnist_c" and (not data.is_image or data.input_shape[0] != 1):
            return "MNIST-C corruption, applies to grey images only"
        return ""

    def _generator(self, family: str, corruption: str) -> torch.Generator:
        digest = hashlib.sha256(f"{self.seed}\x00{family}\x00{corruption}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))

    def _preset(self, data: Dataset) -> str:
        from robustlab.corruptions.image import preset_for

        c, h, w = data.input_shape
        return self.preset if self.preset is not None else preset_for(min(h, w), c)

    def _accuracies(self, model: Any, data: Dataset, family: str, corruption: str) -> list[float]:
        return list(self._cache.fetch((family, corruption), model, data,
                                      lambda: tuple(self._compute_accuracies(model, data, family, corruption))))

    def _compute_accuracies(self, model: Any, data: Dataset, family: str, corruption: str) -> list[float]:
        g = self._generator(family, corruption)
        if family == "tabular":
            x, labels = data.tensors()
            out = []
            for s in self.severities:
                xc = corrupt_tabular(x, corruption, s, generator=g, categorical=self.categorical)
                out.append(_accuracy(model, xc, labels, data.num_classes, self.batch_size))
            return out
        from robustlab.corruptions.image import corrupt

        preset = self._preset(data)
        return [batched_accuracy(
                    model, data, lambda x, s=s: corrupt(x, corruption, s, generator=g, preset=preset),
                    self.batch_size)
                for s in self.severities]

    def _mnist_c_accuracy(self, model: Any, data: Dataset, corruption: str) -> float:
        g = self._generator("mnist_c", corruption)
        return batched_accuracy(model, data, lambda x: corrupt_mnist_c(x, corruption, generator=g),
                                self.batch_size)

    def _run_summary(self, model: Any, data: Dataset) -> ProbeResult:
        family = "image" if data.is_image else "tabular"
        names = self.corruptions if family == "image" else tuple(
            c for c in self.tabular_corruptions if c != "categorical_flip" or self.categorical)
        clean = _accuracy(model, data, data.labels, data.num_classes, self.batch_size)
        if not names:
            return ProbeResult(summary="No corruption applies to this data.")
        acc = np.array([self._accuracies(model, data, family, c) for c in names])
        report = CorruptionReport(names, self.severities, acc, clean_accuracy=clean)
        rows = [
            ResultRow("mean_corruption_error", report.mean_corruption_error(), params={"family": family},
                      headline=True),
            ResultRow("relative_mean_corruption_error", report.mean_corruption_error() - report.clean_error,
                      params={"family": family}),
            ResultRow("mean_corruption_accuracy", float(acc.mean()), params={"family": family}),
            ResultRow("clean_accuracy", clean, params={"family": family}),
        ]
        benchmark = [c for c in names if c in ALEXNET_ERRORS]
        if (family == "image" and self._preset(data) == "imagenet" and len(benchmark) == len(ALEXNET_ERRORS)
                and set(self.severities) == set(CORRUPTION_SEVERITIES)):
            rows += [ResultRow("mce", report.mce(corruptions=benchmark), params={"baseline": "alexnet"},
                               headline=True),
                     ResultRow("relative_mce", report.relative_mce(corruptions=benchmark),
                               params={"baseline": "alexnet"})]
        figures = (_heatmap(report, family),)
        tables = (_accuracy_table(report),)
        worst = names[int(np.argmin(acc.mean(axis=1)))]
        summary = (f"Mean corruption error {report.mean_corruption_error():.2%} over {len(names)} {family} "
                   f"corruptions x {len(self.severities)} severities (clean error {report.clean_error:.2%}); "
                   f"hardest: {worst}.")
        return ProbeResult(rows=tuple(rows), figures=figures, tables=tables, summary=summary)


def _corruption_rows(family: str, corruption: str, severities: Sequence[int],
                     accs: Sequence[float]) -> list[ResultRow]:
    rows = [ResultRow("accuracy", a, params={"family": family, "corruption": corruption, "severity": s})
            for s, a in zip(severities, accs)]
    rows.append(ResultRow("corruption_error", 1.0 - float(np.mean(accs)),
                          params={"family": family, "corruption": corruption}))
    return rows


def _accuracy(model: Any, x: Any, labels: torch.Tensor, num_classes: int, batch_size: int) -> float:
    pred = predict_logits(model, x, batch_size=batch_size, num_classes=num_classes).argmax(1)
    return float((pred == labels).double().mean())


def _accuracy_table(report: CorruptionReport) -> Table:
    rows = tuple((c, *(round(float(a), 6) for a in accs), round(float(1 - accs.mean()), 6))
                 for c, accs in zip(report.corruptions, report.accuracy))
    return Table(name="accuracy_matrix", title="Accuracy per corruption and severity",
                 columns=("corruption", *(f"severity {s}" for s in report.severities), "corruption error"),
                 rows=rows)


def _heatmap(report: CorruptionReport, family: str) -> Figure:
    from matplotlib.figure import Figure as MplFigure  # lazy, and never pyplot

    c, s = report.accuracy.shape
    fig = MplFigure(figsize=(1.2 * s + 3.0, 0.32 * c + 1.4), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(report.accuracy, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto",
                      interpolation="none")
    fig.colorbar(image, ax=ax, label="accuracy")
    ax.set_xticks(range(s), labels=[str(v) for v in report.severities])
    ax.set_yticks(range(c), labels=list(report.corruptions))
    ax.set_xlabel("severity")
    for (i, j), value in np.ndenumerate(report.accuracy):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="black" if value > 0.6 else "white")
    return Figure(name="accuracy_heatmap",
                  title=f"Accuracy under {family} corruptions (rows) by severity (columns); "
                        f"clean accuracy {report.clean_accuracy:.2%}",
                  svg=figure_to_svg(fig))
