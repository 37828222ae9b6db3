"""The ``detection`` scan probe: can the model's detectors flag OOD and adversarial inputs?

Protocol. A probe only sees the evaluation data, so the probe splits it: a stratified random half
(seeded by ``seed``; per class the first ``n_c // 2`` of a random permutation) *fits* the detectors
(class means and covariance, the kNN feature bank, the Mahalanobis ensemble), the other half is
the in-distribution test set. At most ``num_examples`` examples (a random subset,
:func:`robustlab.adversarial.probe.select_examples`) are used.

Out sets, generated from the evaluation half without downloads:

- images: ``uniform_noise`` (i.i.d. uniform pixels over the data's range), ``permuted_pixels``
  (each image's pixel positions shuffled with its own permutation, channels kept together: no
  spatial structure, the same intensity histogram) and ``corrupted`` (``corruption`` at severity
  5 from :func:`robustlab.corruptions.corrupt`, a heavy covariate shift);
- tabular: ``gaussian_shift`` (Gaussian rows with every feature's mean moved by
  ``DET_PROBE_TABULAR_SHIFT`` standard deviations and its spread multiplied by
  ``DET_PROBE_TABULAR_SCALE``, moments of the fit half) and ``shuffled_features`` (each column
  permuted independently across rows: the same marginals, the joint structure destroyed);
- ``adversarial`` (inputs in ``[0, 1]`` only): APGD-CE (or PGD) at the adversarial probe's
  headline radius on a random subset of at most ``num_attack_examples`` evaluation examples. As in
  Lee et al. (2018, Sec. 3.2; deep_Mahalanobis_detector ADV_Samples.py keeps the examples whose
  clean input is classified correctly and whose adversarial input is not), only examples that are
  classified correctly and that the attack breaks count: the in set is those clean inputs, the
  out set their adversarial versions. (The reference also requires a Gaussian-noised copy to be
  classified correctly and adds those copies to the in set; the probe does not.)

Detectors: maximum softmax probability, energy, kNN on penultimate features and the Mahalanobis
detector with its layer ensemble (``layers="auto"``) and input pre-processing (``eps="auto"``),
whose ensemble weights and pre-processing magnitude are chosen on validation data as Lee et al.
do when the OOD type is unknown (Sec. 3.1, "validation on adversarial samples"): the fit half
(in) against its FGSM examples at the same radius (out). Data outside ``[0, 1]`` have no such
adversarial validation set; there the Mahalanobis detector is the plain one (penultimate layer,
no pre-processing), which the summary says. A detector that cannot read the model's features (a
callable that is not an ``nn.Module``, a model without a linear head, ...) is skipped with the
reason; the others still run.

Randomness comes from generators seeded from (``seed``, purpose), so a probe gives the same
numbers for the same seed in any job order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_bool, check_choice, check_int, check_number, fail
from robustlab._constants import (
    ADV_PROBE_EPS,
    ADV_PROBE_NUM_EXAMPLES,
    DEFAULT_SEED,
    DET_PROBE_ATTACK_STEPS,
    DET_PROBE_CORRUPTION,
    DET_PROBE_CORRUPTION_SEVERITY,
    DET_PROBE_DETECTORS,
    DET_PROBE_HIST_BINS,
    DET_PROBE_KNN_K,
    DET_PROBE_MIN_EXAMPLES,
    DET_PROBE_NUM_EXAMPLES,
    DET_PROBE_TABULAR_SCALE,
    DET_PROBE_TABULAR_SHIFT,
    EVAL_BATCH_SIZE,
    IMAGE_RANGE_ATOL,
    MAHALANOBIS_AUTO,
    PENULTIMATE,
)
from robustlab.adversarial.probe import select_examples
from robustlab.data.dataset import Dataset
from robustlab.data.split import stratified_halves
from robustlab.detection.metrics import DetectionMetrics, detection_metrics
from robustlab.errors import InvalidTypeError, RobustlabError
from robustlab.scan.probe import (
    PROBES,
    Figure,
    Probe,
    ProbeResult,
    ResultRow,
    Table,
    figure_to_svg,
    seeded_generator,
)

__all__ = ["ATTACKS", "IMAGE_OOD_SETS", "TABULAR_OOD_SETS", "DetectionProbe", "build_detectors",
           "fit_eval_split", "make_ood_sets"]

#: Out-of-distribution sets the probe generates, per kind of data.
IMAGE_OOD_SETS = ("uniform_noise", "permuted_pixels", "corrupted")
TABULAR_OOD_SETS = ("gaussian_shift", "shuffled_features")
#: Attacks that make the adversarial out set.
ATTACKS = ("apgd-ce", "pgd")
_ADVERSARIAL = "adversarial"
_DETECTOR_NAMES = ("msp", "energy", "knn", "mahalanobis")
_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr")


def _headline_eps() -> float:
    grid = dict(ADV_PROBE_EPS)["linf"]
    return float(grid[(len(grid) - 1) // 2])  # the adversarial probe's default headline radius

# --------------------------------------------------------------------------- building blocks
def fit_eval_split(labels: torch.Tensor, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified, seeded halves ``(fit_indices, eval_indices)`` of ``range(len(labels))``.

    Per class the first ``n_c // 2`` of a random permutation of its examples go to the fit half,
    the rest to the evaluation half; both index tensors are sorted. Depends only on
    ``(labels, seed)``.
    """
    return stratified_halves(labels, generator=seeded_generator(seed, "detection", "split"))


def _in_unit_box(x: torch.Tensor) -> bool:
    return x.is_floating_point() and float(x.min()) >= -IMAGE_RANGE_ATOL and float(x.max()) <= 1 + IMAGE_RANGE_ATOL


def make_ood_sets(x_fit: torch.Tensor, x_eval: torch.Tensor, *, is_image: bool, seed: int,
                  corruption: str = DET_PROBE_CORRUPTION) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The probe's OOD sets (see the module notes) and the reasons for the ones it cannot make.

    Parameters
    ----------
    x_fit, x_eval : Tensor
        The fit and evaluation halves (tabular moments come from the fit half).
    is_image : bool
    seed : int
    corruption : str
        Image corruption applied at severity ``DET_PROBE_CORRUPTION_SEVERITY`` (5).

    Returns
    -------
    (dict of name to Tensor, dict of name to reason)
    """
    sets: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    n = x_eval.shape[0]
    if is_image:
        lo, hi = (0.0, 1.0) if _in_unit_box(x_eval) else (float(x_eval.min()), float(x_eval.max()))
        g = seeded_generator(seed, "detection", "uniform_noise")
        sets["uniform_noise"] = (lo + (hi - lo) * torch.rand(x_eval.shape, generator=g)).to(x_eval)
        g = seeded_generator(seed, "detection", "permuted_pixels")
        flat = x_eval.flatten(2)  # (N, C, H*W): positions shuffled, channels kept together
        perm = torch.argsort(torch.rand(n, flat.shape[2], generator=g), dim=1).to(x_eval.device)
        sets["permuted_pixels"] = flat.gather(2, perm[:, None, :].expand_as(flat)).reshape(x_eval.shape)
        if not _in_unit_box(x_eval):
            skipped["corrupted"] = "image corruptions need inputs in [0, 1]"
        else:
            from robustlab.corruptions.image import corrupt, preset_for

            try:
                preset = preset_for(tuple(x_eval.shape[2:]), x_eval.shape[1])
                sets["corrupted"] = corrupt(x_eval, corruption, DET_PROBE_CORRUPTION_SEVERITY,
                                            generator=seeded_generator(seed, "detection", "corrupted"), preset=preset)
            except RobustlabError as exc:
                skipped["corrupted"] = str(exc)
        return sets, skipped
    f = x_fit.flatten(1).to(torch.float64)
    mean, std = f.mean(0), f.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature still gets spread
    g = seeded_generator(seed, "detection", "gaussian_shift")
    z = torch.randn((n, f.shape[1]), generator=g, dtype=torch.float64)
    shifted = mean + DET_PROBE_TABULAR_SHIFT * std + DET_PROBE_TABULAR_SCALE * std * z
    sets["gaussian_shift"] = shifted.to(x_eval).reshape(x_eval.shape)
    g = seeded_generator(seed, "detection", "shuffled_features")
    flat = x_eval.flatten(1)
    perm = torch.argsort(torch.rand(flat.shape[1], n, generator=g), dim=1).T.to(x_eval.device)
    sets["shuffled_features"] = flat.gather(0, perm).reshape(x_eval.shape)
    return sets, skipped


def build_detectors(names: Sequence[str], *, knn_k: int, mahalanobis_layers: Any, mahalanobis_eps: Any,
                    batch_size: int) -> dict[str, Any]:
    """Unfitted detectors by probe name (``"msp"``, ``"energy"``, ``"knn"``, ``"mahalanobis"``)."""
    from robustlab.detection.baselines import KNN, Energy, MaxSoftmax
    from robustlab.detection.mahalanobis import Mahalanobis

    make = {"msp": lambda: MaxSoftmax(batch_size=batch_size),
            "energy": lambda: Energy(batch_size=batch_size),
            "knn": lambda: KNN(k=knn_k, batch_size=batch_size),
            "mahalanobis": lambda: Mahalanobis(layers=mahalanobis_layers, eps=mahalanobis_eps,
                                               batch_size=batch_size)}
    return {n: make[n]() for n in names}


@dataclass(frozen=True)
class _OutSet:
    """One out set and the in-distribution inputs it is compared with."""

    x_in: torch.Tensor
    x_out: torch.Tensor
    kind: str  # "ood" or "adversarial"


# --------------------------------------------------------------------------- the probe
@PROBES.register("detection")
class DetectionProbe(Probe):
    """AUROC, AUPR and FPR at 95% TPR of OOD / adversarial-input detectors on the model.

    Parameters
    ----------
    detectors : sequence of str, default ("msp", "energy", "knn", "mahalanobis")
        Maximum softmax probability (Hendrycks & Gimpel 2017), energy (Liu et al. 2020), deep kNN
        (Sun et al. 2022) and Mahalanobis (Lee et al. 2018); see :mod:`robustlab.detection`.
    adversarial : bool, default True
        Add the adversarial out set (inputs in ``[0, 1]`` only).
    eps : float, optional
        Linf radius of the adversarial inputs (and of the FGSM validation set of the Mahalanobis
        ensemble); default the adversarial probe's headline radius (0.1, for digits).
    attack : {"apgd-ce", "pgd"}, default "apgd-ce"
        APGD with the cross-entropy loss (``DET_PROBE_ATTACK_STEPS`` = 100 steps, AutoAttack's) or
        PGD (10 steps, step eps/4, random start).
    num_examples : int or None, default 1000
        At most this many evaluation examples are used (then split into halves).
    num_attack_examples : int or None, default 100
        At most this many evaluation-half examples are attacked (the adversarial probe's default).
    corruption : str, default "gaussian_noise"
        Image corruption of the ``corrupted`` OOD set (severity 5).
    knn_k : int, default 10
        kNN's k (capped at the size of the fit half); see ``DET_PROBE_KNN_K``.
    mahalanobis_layers : sequence of str or "auto", default "auto"
    mahalanobis_eps : float or "auto", default "auto"
        Passed to :class:`~robustlab.detection.Mahalanobis` (``"auto"`` needs the FGSM validation
        set; for data outside ``[0, 1]`` the detector falls back to the penultimate layer and
        ``eps = 0``).
    seed : int, default 0
        Seeds the subset, the split, the OOD sets and the attacks.
    batch_size : int, default 512

    Notes
    -----
    Rows (fractions): ``auroc``, ``aupr_in``, ``aupr_out`` and ``fpr_at_95_tpr`` (in-distribution
    = positives; :func:`~robustlab.detection.detection_metrics`) per ``{"detector", "out"}``;
    ``mean_ood_auroc`` per ``{"detector"}`` (mean over the generated OOD sets, adversarial
    excluded); ``best_mean_ood_auroc`` (headline: the largest ``mean_ood_auroc``; the summary
    names its detector) and ``best_adversarial_auroc``; ``num_in`` / ``num_out`` counts per
    ``{"out"}``; ``mahalanobis_eps`` (the pre-processing magnitude used).

    The headline is an OOD number, not the adversarial one, because it exists for every model and
    dataset: the adversarial set needs inputs in ``[0, 1]`` and an attack that succeeds (a robust
    model can leave almost no adversarial examples to detect). It is the best detector's, i.e.
    what this model's outputs and features allow; the per-detector rows show the rest. Small
    evaluation sets give noisy numbers: ``num_in`` / ``num_out`` say how many inputs each rests on.
    """

    name = "detection"
    title = "OOD and adversarial-input detection"

    def __init__(self, *, detectors: Sequence[str] = DET_PROBE_DETECTORS, adversarial: bool = True,
                 eps: float | None = None, attack: str = "apgd-ce",
                 num_examples: int | None = DET_PROBE_NUM_EXAMPLES,
                 num_attack_examples: int | None = ADV_PROBE_NUM_EXAMPLES,
                 corruption: str = DET_PROBE_CORRUPTION, knn_k: int = DET_PROBE_KNN_K,
                 mahalanobis_layers: Sequence[str] | str = MAHALANOBIS_AUTO,
                 mahalanobis_eps: float | str = MAHALANOBIS_AUTO, seed: int = DEFAULT_SEED,
                 batch_size: int = EVAL_BATCH_SIZE) -> None:
        from robustlab.corruptions.image import IMAGE_CORRUPTIONS

        if isinstance(detectors, str) or not isinstance(detectors, Sequence) or not detectors:
            fail("detectors", "a non-empty sequence of detector names", detectors, error=InvalidTypeError)
        self.detectors = tuple(check_choice("detectors", d, _DETECTOR_NAMES) for d in detectors)
        if len(set(self.detectors)) != len(self.detectors):
            fail("detectors", "distinct detector names", list(detectors))
        self.adversarial = check_bool("adversarial", adversarial)
        self.eps = _headline_eps() if eps is None else check_number("eps", eps, low=0.0, low_inclusive=False)
        self.attack = check_choice("attack", attack, ATTACKS)
        self.num_examples = None if num_examples is None else check_int("num_examples", num_examples, low=1)
        self.num_attack_examples = (None if num_attack_examples is None
                                    else check_int("num_attack_examples", num_attack_examples, low=1))
        self.corruption = check_choice("corruption", corruption, IMAGE_CORRUPTIONS)
        self.knn_k = check_int("knn_k", knn_k, low=1)
        if isinstance(mahalanobis_layers, str):
            if mahalanobis_layers != MAHALANOBIS_AUTO:
                fail("mahalanobis_layers", "'auto' or a sequence of module names", mahalanobis_layers)
            self.mahalanobis_layers: Any = MAHALANOBIS_AUTO
        else:
            if not isinstance(mahalanobis_layers, Sequence) or not mahalanobis_layers \
                    or not all(isinstance(n, str) for n in mahalanobis_layers):
                fail("mahalanobis_layers", "'auto' or a non-empty sequence of module names",
                     mahalanobis_layers, error=InvalidTypeError)
            self.mahalanobis_layers = tuple(mahalanobis_layers)
        if isinstance(mahalanobis_eps, str):
            if mahalanobis_eps != MAHALANOBIS_AUTO:
                fail("mahalanobis_eps", "'auto' or a number >= 0", mahalanobis_eps)
            self.mahalanobis_eps: Any = MAHALANOBIS_AUTO
        else:
            self.mahalanobis_eps = check_number("mahalanobis_eps", mahalanobis_eps, low=0.0)
        self.seed = check_int("seed", seed, low=0)
        self.batch_size = check_int("batch_size", batch_size, low=1)

    def params(self) -> dict[str, Any]:
        layers = self.mahalanobis_layers
        return {"detectors": list(self.detectors), "adversarial": self.adversarial, "eps": self.eps,
                "attack": self.attack, "num_examples": self.num_examples,
                "num_attack_examples": self.num_attack_examples, "corruption": self.corruption,
                "knn_k": self.knn_k, "mahalanobis_layers": layers if isinstance(layers, str) else list(layers),
                "mahalanobis_eps": self.mahalanobis_eps, "seed": self.seed, "batch_size": self.batch_size}

    # ------------------------------------------------------------------ running
    def run(self, model: Any, data: Any, *, job: dict[str, Any], generator: torch.Generator) -> ProbeResult:
        """Fit, attack and score (the job's generator is unused: see the module notes)."""
        if not isinstance(data, Dataset):
            fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
        if len(data) == 0:
            fail("data", "a Dataset with at least one example", data)
        start = time.perf_counter()
        x, y = data.load(select_examples(len(data), self.num_examples, self.seed))
        if not x.is_floating_point():
            return ProbeResult(summary="Not applicable: detectors need float inputs.")
        fit_idx, eval_idx = fit_eval_split(y, seed=self.seed)
        if len(fit_idx) < DET_PROBE_MIN_EXAMPLES or len(eval_idx) < DET_PROBE_MIN_EXAMPLES:
            return ProbeResult(summary=f"Not applicable: {len(y)} examples are too few to split into "
                                       f"fit and evaluation halves of at least {DET_PROBE_MIN_EXAMPLES}.")
        x_fit, y_fit, x_eval, y_eval = x[fit_idx], y[fit_idx], x[eval_idx], y[eval_idx]
        notes: list[str] = []
        ood, skipped = make_ood_sets(x_fit, x_eval, is_image=data.is_image, seed=self.seed,
                                     corruption=self.corruption)
        out_sets = {name: _OutSet(x_eval, xo, "ood") for name, xo in ood.items()}
        attackable = _in_unit_box(x)
        if self.adversarial:
            if not attackable:
                skipped[_ADVERSARIAL] = "attacks need inputs in [0, 1]"
            else:
                adv = self._adversarial_set(model, x_eval, y_eval)
                if isinstance(adv, str):
                    skipped[_ADVERSARIAL] = adv
                else:
                    out_sets[_ADVERSARIAL] = adv
        fitted, not_fitted, maha_note = self._fit(model, x_fit, y_fit, attackable)
        if maha_note:
            notes.append(maha_note)
        metrics: dict[tuple[str, str], DetectionMetrics] = {}
        scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        eval_scores: dict[str, np.ndarray] = {}
        for d, det in fitted.items():
            s_eval = det.score(model, x_eval)
            eval_scores[d] = s_eval.detach().double().cpu().numpy()
            for o, out in out_sets.items():
                s_in = s_eval if out.x_in is x_eval else det.score(model, out.x_in)
                s_out = det.score(model, out.x_out)
                metrics[(d, o)] = detection_metrics(s_in, s_out)
                scores[(d, o)] = (s_in.detach().double().cpu().numpy(), s_out.detach().double().cpu().numpy())
        rows = self._rows(fitted, out_sets, metrics)
        if "mahalanobis" in fitted:
            rows.append(ResultRow("mahalanobis_eps", float(fitted["mahalanobis"].eps_)))
        figures = (_roc_figure(list(fitted), list(out_sets), scores),
                   _histogram_figure(eval_scores, list(out_sets), scores)) if metrics else ()
        tables = (_metrics_table(metrics),) if metrics else ()
        summary = self._summary(len(fit_idx), len(eval_idx), fitted, not_fitted, out_sets, skipped,
                                metrics, notes, time.perf_counter() - start)
        return ProbeResult(rows=tuple(rows), figures=figures, tables=tables, summary=summary)

    def _adversarial_set(self, model: Any, x_eval: torch.Tensor, y_eval: torch.Tensor) -> _OutSet | str:
        from robustlab.adversarial import apgd, pgd

        idx = select_examples(len(y_eval), self.num_attack_examples, self.seed)
        xa, ya = x_eval[idx], y_eval[idx]
        g = seeded_generator(self.seed, "detection", "attack", self.eps)
        if self.attack == "apgd-ce":
            res = apgd(model, xa, ya, eps=self.eps, norm="linf", loss="ce", num_steps=DET_PROBE_ATTACK_STEPS,
                       generator=g)
        else:
            res = pgd(model, xa, ya, eps=self.eps, norm="linf", generator=g)
        from robustlab.detection.baselines import model_logits

        correct = model_logits(model, xa, batch_size=self.batch_size).argmax(1).cpu() == ya.cpu()
        keep = (correct & res.success.cpu()).to(xa.device)
        if int(keep.sum()) < DET_PROBE_MIN_EXAMPLES:
            return (f"the attack broke {int(keep.sum())} of {int(correct.sum())} correctly classified "
                    f"examples (eps={self.eps:.4g}); at least {DET_PROBE_MIN_EXAMPLES} are needed")
        return _OutSet(xa[keep], res.adv_inputs[keep].detach(), _ADVERSARIAL)

    def _fit(self, model: Any, x_fit: torch.Tensor, y_fit: torch.Tensor,
             attackable: bool) -> tuple[dict[str, Any], dict[str, str], str]:
        layers, eps, note = self.mahalanobis_layers, self.mahalanobis_eps, ""
        val = None
        if "mahalanobis" in self.detectors and isinstance(model, torch.nn.Module):
            if attackable:
                from robustlab.adversarial import fgsm

                val = (x_fit, fgsm(model, x_fit, y_fit, eps=self.eps, norm="linf").adv_inputs.detach())
                note = (f"Mahalanobis ensemble weights{' and pre-processing' if eps == MAHALANOBIS_AUTO else ''}"
                        f" fitted on the fit half against its FGSM examples (eps={self.eps:.4g}).")
            else:
                layers = (PENULTIMATE,) if layers == MAHALANOBIS_AUTO else layers
                eps = 0.0 if eps == MAHALANOBIS_AUTO else eps
                note = ("No FGSM validation set (inputs outside [0, 1]): Mahalanobis uses "
                        f"{'the penultimate layer' if layers == (PENULTIMATE,) else 'the mean over its layers'}"
                        f" with eps={eps:.4g}.")
        dets = build_detectors(self.detectors, knn_k=min(self.knn_k, len(y_fit)), mahalanobis_layers=layers,
                               mahalanobis_eps=eps, batch_size=self.batch_size)
        fitted: dict[str, Any] = {}
        failed: dict[str, str] = {}
        for name, det in dets.items():
            if name in ("knn", "mahalanobis") and not isinstance(model, torch.nn.Module):
                failed[name] = "needs a torch.nn.Module to read features with forward hooks"
                continue
            try:
                if name == "mahalanobis" and val is not None:
                    det.fit(model, x_fit, y_fit, val_in=val[0], val_out=val[1])
                else:
                    det.fit(model, x_fit, y_fit)
            except RobustlabError as exc:
                failed[name] = str(exc)
                continue
            fitted[name] = det
        return fitted, failed, note if "mahalanobis" in fitted else ""

    def _rows(self, fitted: dict[str, Any], out_sets: dict[str, _OutSet],
              metrics: dict[tuple[str, str], DetectionMetrics]) -> list[ResultRow]:
        rows: list[ResultRow] = []
        for (d, o), m in metrics.items():
            rows += [ResultRow(k, getattr(m, k), params={"detector": d, "out": o}) for k in _METRICS]
        for o, out in out_sets.items():
            rows.append(ResultRow("num_in", float(out.x_in.shape[0]), params={"out": o}, unit="examples"))
            rows.append(ResultRow("num_out", float(out.x_out.shape[0]), params={"out": o}, unit="examples"))
        ood = [o for o, out in out_sets.items() if out.kind == "ood"]
        means = {d: float(np.mean([metrics[(d, o)].auroc for o in ood])) for d in fitted} if ood else {}
        rows += [ResultRow("mean_ood_auroc", v, params={"detector": d}) for d, v in means.items()]
        if means:
            rows.append(ResultRow("best_mean_ood_auroc", max(means.values()), headline=True))
        if _ADVERSARIAL in out_sets and fitted:
            rows.append(ResultRow("best_adversarial_auroc", max(metrics[(d, _ADVERSARIAL)].auroc for d in fitted)))
        return rows

    def _summary(self, n_fit: int, n_eval: int, fitted: dict[str, Any], failed: dict[str, str],
                 out_sets: dict[str, _OutSet], skipped: dict[str, str],
                 metrics: dict[tuple[str, str], DetectionMetrics], notes: list[str], seconds: float) -> str:
        parts = [(f"Detectors fitted on a stratified half of the evaluation data ({n_fit} examples, seed "
                  f"{self.seed}) and tested on the other half ({n_eval}).")]
        ood = [o for o, out in out_sets.items() if out.kind == "ood"]
        if fitted and ood:
            means = {d: float(np.mean([metrics[(d, o)].auroc for o in ood])) for d in fitted}
            best = max(means, key=means.get)
            parts.append(f"Best mean OOD AUROC over {', '.join(ood)}: {means[best]:.4f} ({best}).")
        if fitted and _ADVERSARIAL in out_sets:
            best = max(fitted, key=lambda d: metrics[(d, _ADVERSARIAL)].auroc)
            out = out_sets[_ADVERSARIAL]
            parts.append(f"Adversarial inputs ({self.attack}, linf eps={self.eps:.4g}, {out.x_out.shape[0]} "
                         f"broken correctly classified examples): best AUROC "
                         f"{metrics[(best, _ADVERSARIAL)].auroc:.4f} ({best}).")
        parts += notes
        parts += [f"Skipped detector {d}: {why}" + ("" if why.endswith(".") else ".") for d, why in failed.items()]
        parts += [f"Skipped out set {o}: {why}" + ("" if why.endswith(".") else ".") for o, why in skipped.items()]
        parts.append(f"{seconds:.1f} s.")
        return " ".join(parts)


# --------------------------------------------------------------------------- figures and tables
def _metrics_table(metrics: dict[tuple[str, str], DetectionMetrics]) -> Table:
    rows = tuple((d, o, round(m.auroc, 4), round(m.aupr_in, 4), round(m.aupr_out, 4),
                  round(m.fpr_at_95_tpr, 4), m.num_in, m.num_out) for (d, o), m in metrics.items())
    return Table(name="detection", title="Detection metrics per detector and out set (in-distribution = positives)",
                 columns=("detector", "out", "auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr", "num_in", "num_out"),
                 rows=rows)


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def _roc_figure(detectors: list[str], outs: list[str],
                scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> Figure:
    from matplotlib.figure import Figure as MplFigure  # lazy, and never pyplot
    from sklearn.metrics import roc_curve

    nr, nc = _grid(len(detectors))
    fig = MplFigure(figsize=(3.0 * nc, 2.9 * nr), layout="constrained")
    for i, d in enumerate(detectors):
        ax = fig.add_subplot(nr, nc, i + 1)
        for o in outs:
            s_in, s_out = scores[(d, o)]
            y = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
            # out as the "detected" class: x = in inputs flagged, y = out inputs flagged
            fpr, tpr, _ = roc_curve(y, -np.concatenate([s_in, s_out]))
            ax.plot(fpr, tpr, label=o, linewidth=1.2)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(d, fontsize=9)
        ax.set_xlabel("in-distribution flagged", fontsize=8)
        ax.set_ylabel("out flagged", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, loc="lower right")
    return Figure(name="roc_curves", title="ROC curves per detector (one curve per out set)",
                  svg=figure_to_svg(fig))


def _histogram_figure(eval_scores: dict[str, np.ndarray], outs: list[str],
                      scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> Figure:
    from matplotlib.figure import Figure as MplFigure  # lazy, and never pyplot

    nr, nc = _grid(len(eval_scores))
    fig = MplFigure(figsize=(3.0 * nc, 2.9 * nr), layout="constrained")
    for i, (d, s_in) in enumerate(eval_scores.items()):
        ax = fig.add_subplot(nr, nc, i + 1)
        every = np.concatenate([s_in, *(scores[(d, o)][1] for o in outs)])
        lo, hi = float(every.min()), float(every.max())
        bins = np.linspace(lo, hi, DET_PROBE_HIST_BINS + 1) if hi > lo else DET_PROBE_HIST_BINS
        ax.hist(s_in, bins=bins, color="black", alpha=0.35, label="in (evaluation half)", density=True)
        for o in outs:
            ax.hist(scores[(d, o)][1], bins=bins, histtype="step", linewidth=1.2, label=o, density=True)
        ax.set_title(d, fontsize=9)
        ax.set_xlabel("score (higher = more in-distribution)", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    return Figure(name="score_histograms",
                  title="Detector scores: in-distribution evaluation half vs each out set (densities)",
                  svg=figure_to_svg(fig))
