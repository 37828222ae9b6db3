"""The ``calibration`` scan probe: calibration on clean data, under corruptions and under attack.

Jobs (keyed by ``part``):

* ``"clean"``: ECE (equal-width bins), ACE (ECE with equal-mass bins), MCE, classwise ECE, Brier
  score, NLL, AURC, accuracy and mean confidence of the model's softmax on the probe's examples;
  the same on a held-out half before and after temperature scaling fitted on the other half;
  reliability diagrams before / after.
* ``"corrupted"`` (images only): the same numbers under a few common corruptions (one per
  ImageNet-C category, ``CAL_PROBE_CORRUPTIONS``) at the middle severity 3 of the corruptions
  probe's 1-5 scale, with that probe's preset rule (``preset_for`` the image size and
  channels, unless ``preset`` is given), per corruption and their mean.
* ``"adversarial"``: the same numbers on APGD-CE inputs at the adversarial probe's headline
  linf radius (``ADV_PROBE_EPS``; 0.1 for the default grid) on the adversarial probe's example
  subset (:func:`robustlab.adversarial.probe.select_examples` with ``ADV_PROBE_NUM_EXAMPLES``
  and the same ``seed``), so the accuracy here is the robust accuracy of APGD-CE alone.
* ``"summary"``: the three reliability diagrams overlaid and one table.

Probes do not see each other's results: "under corruptions and attacks" uses the corruptions and
adversarial probes' settings (severity scale and preset, radius and subset) so the numbers line up
in the report, not their stored outputs.

Held-out temperature. The probe's examples are split into two stratified, seeded halves (per
class, a random half). :class:`~robustlab.calibration.TemperatureScaling` is fitted on the
logits of the *fit* half; every row with ``"scaling": "temperature"`` is computed on examples
outside the fit half only (the held-out half of the clean data, its corrupted copies, and the
attacked examples whose clean version is not in the fit half), next to the unscaled numbers on
exactly those examples (``"subset": "held_out"``). Temperature scaling fitted on clean data is
known not to carry over to shifted data (Ovadia et al., NeurIPS 2019); these rows show by how much.

Adversarial inputs. APGD-CE returns, for each example it breaks, the *first* iterate that breaks
it (as AutoAttack does), so wrong predictions sit just past the decision boundary: their
confidence (``mean_confidence_wrong``) is what an evaluation's adversarial examples carry, a lower
bound on the confidence an attacker who keeps pushing could reach.

Randomness comes from generators seeded from (``seed``, part, corruption or radius), never the
job's generator, so the summary job reproduces the other jobs' numbers exactly (and reuses them
when it runs in the same process on the same, unchanged model and data, as the corruptions probe's
summary job does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_choice, check_int, check_number, fail
from robustlab._constants import (
    ADV_PROBE_EPS,
    ADV_PROBE_NUM_EXAMPLES,
    CAL_PROBE_ATTACK_STEPS,
    CAL_PROBE_CORRUPTIONS,
    CAL_PROBE_NUM_EXAMPLES,
    CAL_PROBE_SEVERITY,
    CALIBRATION_N_BINS,
    DEFAULT_SEED,
    EVAL_BATCH_SIZE,
    IMAGE_RANGE_ATOL,
)
from robustlab.calibration.metrics import (
    brier_score,
    classwise_calibration_error,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
)
from robustlab.calibration.scaling import TemperatureScaling
from robustlab.calibration.selective import risk_coverage_curve
from robustlab.data.dataset import Dataset
from robustlab.data.split import stratified_halves
from robustlab.errors import InvalidTypeError
from robustlab.scan.probe import (
    ModelCache,
    PROBES,
    Figure,
    Probe,
    ProbeResult,
    ResultRow,
    Table,
    figure_to_svg,
    seeded_generator,
)

__all__ = ["CalibrationProbe", "calibration_metrics", "split_halves"]

PARTS = ("clean", "corrupted", "adversarial", "summary")
#: Rows reported for every set of predictions, in report order.
METRICS = ("ece", "ace", "mce", "classwise_ece", "brier", "nll", "aurc", "accuracy", "mean_confidence",
           "mean_confidence_wrong")
#: Fewest examples the temperature is fitted on.
_MIN_FIT = 2

def _headline_eps() -> float:
    grid = sorted(dict(ADV_PROBE_EPS)["linf"])
    return float(grid[(len(grid) - 1) // 2])  # the adversarial probe's default headline radius

def _in_unit_box(x: torch.Tensor) -> bool:
    return x.is_floating_point() and float(x.min()) >= -IMAGE_RANGE_ATOL and float(x.max()) <= 1 + IMAGE_RANGE_ATOL


# --------------------------------------------------------------------------- building blocks
def calibration_metrics(pred_probs: Any, labels: Any, *, n_bins: int = CALIBRATION_N_BINS) -> dict[str, float]:
    """Every number the probe reports for one set of predictions, from the library's functions.

    Parameters
    ----------
    pred_probs : Tensor or ndarray of shape (N, K), rows summing to one
    labels : int Tensor or ndarray of shape (N,)
    n_bins : int, default 15

    Returns
    -------
    dict of str to float
        ``ece`` (:func:`expected_calibration_error`, equal-width bins), ``ace`` (equal-mass
        bins), ``mce``, ``classwise_ece``, ``brier``, ``nll``, ``aurc``
        (:func:`risk_coverage_curve`), ``accuracy``, ``mean_confidence`` (mean top-label
        probability) and ``mean_confidence_wrong`` (the same over wrong predictions; NaN when
        there are none).
    """
    p = torch.as_tensor(pred_probs, dtype=torch.float64)
    y = torch.as_tensor(labels)
    conf, pred = p.max(dim=1)
    wrong = pred != y
    return {
        "ece": expected_calibration_error(p, y, n_bins=n_bins, binning="width"),
        "ace": expected_calibration_error(p, y, n_bins=n_bins, binning="mass"),
        "mce": maximum_calibration_error(p, y, n_bins=n_bins),
        "classwise_ece": classwise_calibration_error(p, y, n_bins=n_bins),
        "brier": brier_score(p, y),
        "nll": negative_log_likelihood(p, y),
        "aurc": risk_coverage_curve(p, y).aurc,
        "accuracy": float((~wrong).double().mean()),
        "mean_confidence": float(conf.mean()),
        "mean_confidence_wrong": float(conf[wrong].mean()) if bool(wrong.any()) else float("nan"),
    }


def split_halves(labels: torch.Tensor, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified, seeded halves ``(fit_positions, held_out_positions)`` of ``range(len(labels))``.

    Per class, the first ``n_c // 2`` of a random permutation of its examples form the fit half;
    both position tensors are sorted. Depends only on ``(labels, seed)``.
    """
    return stratified_halves(labels, generator=seeded_generator(seed, "calibration", "split"))


@dataclass(frozen=True, eq=False)
class _Set:
    """Logits of one set of inputs, their labels and which of them lie outside the fit half."""

    name: str
    logits: torch.Tensor  # (n, K) float64 on CPU
    labels: torch.Tensor
    held_out: torch.Tensor  # bool (n,)


@dataclass(frozen=True, eq=False)
class _Outcome:
    sets: tuple[_Set, ...]
    note: str  # why the part has no sets ("" when it has)
    temperature: float | None


# --------------------------------------------------------------------------- the probe
@PROBES.register("calibration")
class CalibrationProbe(Probe):
    """Calibration of the softmax on clean, corrupted and adversarial inputs.

    Parameters
    ----------
    num_examples : int or None, default 1000
        Size of the random subset of the data used (``None``: every example).
    n_bins : int, default 15
        Bins of every binned metric (Guo et al. 2017).
    corruptions : sequence of str, default ("gaussian_noise", "defocus_blur", "brightness", "contrast")
        Image corruptions of the ``corrupted`` job (one per ImageNet-C category; ``fog`` and
        ``frost`` would cost seconds on digits).
    severity : int in 1-5, default 3
    preset : str, optional
        Corruption parameter table; default that of the corruptions probe (``preset_for`` the data).
    eps : float, optional
        Linf radius of the ``adversarial`` job; default the adversarial probe's headline radius.
    num_attack_examples : int or None, default 100
        Examples attacked: the adversarial probe's subset size.
    attack_steps : int, default 100
        APGD-CE iterations.
    seed : int, default 0
        Seeds the subsets, the split, the corruptions and the attack.
    batch_size : int, default 512

    Notes
    -----
    Rows: every metric of :func:`calibration_metrics` with params ``{"data": ..., "scaling":
    "none"}`` on all the set's examples (``data`` is ``"clean"``, ``"corrupted"`` with
    ``"corruption"`` (a name or ``"mean"``), or ``"adversarial"`` with ``"eps"``), the same with
    ``"subset": "held_out"`` for ``"scaling"`` ``"none"`` and ``"temperature"``, and the fitted
    ``temperature``. Headline: the clean ECE.
    """

    name = "calibration"
    title = "Calibration"

    def __init__(self, *, num_examples: int | None = CAL_PROBE_NUM_EXAMPLES, n_bins: int = CALIBRATION_N_BINS,
                 corruptions: Sequence[str] = CAL_PROBE_CORRUPTIONS, severity: int = CAL_PROBE_SEVERITY,
                 preset: str | None = None, eps: float | None = None,
                 num_attack_examples: int | None = ADV_PROBE_NUM_EXAMPLES,
                 attack_steps: int = CAL_PROBE_ATTACK_STEPS, seed: int = DEFAULT_SEED,
                 batch_size: int = EVAL_BATCH_SIZE) -> None:
        from robustlab.corruptions.image import IMAGE_CORRUPTIONS, IMAGE_PRESETS

        self.num_examples = None if num_examples is None else check_int("num_examples", num_examples, low=2)
        self.n_bins = check_int("n_bins", n_bins, low=1)
        if isinstance(corruptions, str) or not isinstance(corruptions, Sequence):
            fail("corruptions", "a sequence of corruption names", corruptions, error=InvalidTypeError)
        self.corruptions = tuple(check_choice("corruptions", c, IMAGE_CORRUPTIONS) for c in corruptions)
        if len(set(self.corruptions)) != len(self.corruptions):
            fail("corruptions", "distinct corruption names", list(corruptions))
        self.severity = check_int("severity", severity, low=1, high=5)
        self.preset = None if preset is None else check_choice("preset", preset, IMAGE_PRESETS)
        self.eps = _headline_eps() if eps is None else check_number("eps", eps, low=0.0, low_inclusive=False)
        self.num_attack_examples = (None if num_attack_examples is None
                                    else check_int("num_attack_examples", num_attack_examples, low=1))
        self.attack_steps = check_int("attack_steps", attack_steps, low=1)
        self.seed = check_int("seed", seed, low=0)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self._cache = ModelCache()

    def params(self) -> dict[str, Any]:
        return {"num_examples": self.num_examples, "n_bins": self.n_bins, "corruptions": list(self.corruptions),
                "severity": self.severity, "preset": self.preset, "eps": self.eps,
                "num_attack_examples": self.num_attack_examples, "attack_steps": self.attack_steps,
                "seed": self.seed, "batch_size": self.batch_size}

    def jobs(self) -> list[dict[str, Any]]:
        return [{"part": p} for p in PARTS]

    # ------------------------------------------------------------------ running
    def run(self, model: Any, data: Any, *, job: dict[str, Any], generator: torch.Generator) -> ProbeResult:
        """Run one job (the job's generator is unused: see the module notes)."""
        if not isinstance(data, Dataset):
            fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
        if len(data) < 2:
            fail("data", "a Dataset with at least two examples", data)
        part = check_choice("job['part']", job.get("part"), PARTS)
        if part == "summary":
            return self._run_summary(model, data)
        out = self._outcome(model, data, part)
        if not out.sets:
            return ProbeResult(summary=out.note)
        return self._part_result(part, out)

    def _outcome(self, model: Any, data: Dataset, part: str) -> _Outcome:
        return self._cache.fetch(part, model, data, lambda: self._compute(model, data, part))

    def _logits(self, model: Any, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        from robustlab.models.inference import predict_logits

        return predict_logits(model, x, batch_size=self.batch_size, num_classes=num_classes).detach().double().cpu()

    def _compute(self, model: Any, data: Dataset, part: str) -> _Outcome:
        from robustlab.adversarial.probe import select_examples

        idx = select_examples(len(data), self.num_examples, self.seed)
        x, y = data.load(idx)
        y = y.cpu()
        fit_pos, _ = split_halves(y, seed=self.seed)
        fit_data_idx = idx[fit_pos]
        held = torch.ones(len(y), dtype=torch.bool)
        held[fit_pos] = False
        clean_logits = self._logits(model, x, data.num_classes)
        temperature = None
        if fit_pos.numel() >= _MIN_FIT and held.any():
            temperature = TemperatureScaling().fit(clean_logits[fit_pos], y[fit_pos]).temperature_
        if part == "clean":
            return _Outcome((_Set("clean", clean_logits, y, held),), "", temperature)
        if part == "corrupted":
            if not data.is_image:
                return _Outcome((), "Not applicable: the corruptions of this probe are image corruptions; "
                                    "this data is tabular.", temperature)
            from robustlab.corruptions.image import corrupt, preset_for

            c, h, w = data.input_shape
            preset = self.preset if self.preset is not None else preset_for(min(h, w), c)
            sets = []
            for name in self.corruptions:
                g = seeded_generator(self.seed, "calibration", "corruption", name)
                shifted = corrupt(x, name, self.severity, generator=g, preset=preset)
                sets.append(_Set(name, self._logits(model, shifted, data.num_classes), y, held))
            sets = tuple(sets)
            return _Outcome(sets, "", temperature)
        return self._adversarial(model, data, fit_data_idx, temperature)

    def _adversarial(self, model: Any, data: Dataset, fit_data_idx: torch.Tensor,
                     temperature: float | None) -> _Outcome:
        from robustlab.adversarial import apgd
        from robustlab.adversarial.probe import select_examples

        idx = select_examples(len(data), self.num_attack_examples, self.seed)
        xa, ya = data.load(idx)
        if not _in_unit_box(xa):
            return _Outcome((), "Not applicable: attacks perturb inputs in [0, 1] (normalisation belongs inside "
                                "the model), as in the adversarial probe.", temperature)
        if not isinstance(model, torch.nn.Module):
            return _Outcome((), "Not applicable: APGD needs the model's gradients (a torch.nn.Module).",
                            temperature)
        # where predict_logits runs the model: the device of its first parameter or buffer
        first = next(iter((*model.parameters(), *model.buffers())), None)
        if first is not None:
            xa, ya = xa.to(first.device), ya.to(first.device)
        res = apgd(model, xa, ya, eps=self.eps, norm="linf", loss="ce", num_steps=self.attack_steps,
                   generator=seeded_generator(self.seed, "calibration", "attack", self.eps))
        logits = self._logits(model, res.adv_inputs.detach(), data.num_classes)
        held = ~torch.isin(idx, fit_data_idx)
        return _Outcome((_Set("adversarial", logits, ya.cpu(), held),), "", temperature)

    # ------------------------------------------------------------------ results
    def _metrics(self, s: _Set, *, held_out: bool = False, temperature: float | None = None) -> dict[str, float]:
        logits, labels = (s.logits[s.held_out], s.labels[s.held_out]) if held_out else (s.logits, s.labels)
        if temperature is not None:
            logits = logits / temperature
        return calibration_metrics(torch.softmax(logits, dim=1), labels, n_bins=self.n_bins)

    def _part_result(self, part: str, out: _Outcome) -> ProbeResult:
        rows: list[ResultRow] = []
        per_set: list[tuple[str, dict[str, float], dict[str, float], dict[str, float]]] = []
        for s in out.sets:
            raw = self._metrics(s)
            held_raw = self._metrics(s, held_out=True) if s.held_out.any() else {}
            held_ts = (self._metrics(s, held_out=True, temperature=out.temperature)
                       if s.held_out.any() and out.temperature is not None else {})
            per_set.append((s.name, raw, held_raw, held_ts))
        base = self._base_params(part)
        for name, raw, held_raw, held_ts in per_set:
            extra = {"corruption": name} if part == "corrupted" else {}
            rows += _rows(raw, {**base, **extra, "scaling": "none"}, headline_ece=part == "clean")
            rows += _rows(held_raw, {**base, **extra, "scaling": "none", "subset": "held_out"})
            rows += _rows(held_ts, {**base, **extra, "scaling": "temperature", "subset": "held_out"})
        if part == "corrupted" and len(per_set) > 1:
            for i, subset in ((1, {}), (2, {"subset": "held_out"}), (3, {"subset": "held_out"})):
                scaling = "temperature" if i == 3 else "none"
                rows += _rows(_mean([p[i] for p in per_set]),
                              {**base, "corruption": "mean", "scaling": scaling, **subset})
        if part == "clean" and out.temperature is not None:
            rows.append(ResultRow("temperature", out.temperature, params={"data": "clean"}))
        figures = (_clean_figure(self, out),) if part == "clean" else ()
        return ProbeResult(rows=tuple(rows), figures=figures, summary=self._summary(part, out, per_set))

    def _base_params(self, part: str) -> dict[str, Any]:
        if part == "adversarial":
            return {"data": "adversarial", "eps": self.eps, "norm": "linf"}
        if part == "corrupted":
            return {"data": "corrupted", "severity": self.severity}
        return {"data": "clean"}

    def _summary(self, part: str, out: _Outcome, per_set: list[Any]) -> str:
        t = (f"; temperature {out.temperature:.3g} (fitted on the other half) gives ECE "
             if out.temperature is not None else "")
        if part == "clean":
            _, raw, held_raw, held_ts = per_set[0]
            text = (f"Clean: ECE {raw['ece']:.2%} (equal-mass {raw['ace']:.2%}), accuracy {raw['accuracy']:.2%}, "
                    f"mean confidence {raw['mean_confidence']:.2%} on {len(out.sets[0].labels)} examples")
            if held_ts:
                text += f"; on the held-out half ECE {held_raw['ece']:.2%}" + t + f"{held_ts['ece']:.2%}"
            return text + "."
        if part == "corrupted":
            mean = _mean([p[1] for p in per_set])
            return (f"Under {len(per_set)} corruptions at severity {self.severity}: mean ECE {mean['ece']:.2%}, "
                    f"accuracy {mean['accuracy']:.2%}, mean confidence {mean['mean_confidence']:.2%}; "
                    + ", ".join(f"{n} ECE {r['ece']:.1%}" for n, r, _, _ in per_set) + ".")
        _, raw, _, held_ts = per_set[0]
        wrong = raw["mean_confidence_wrong"]
        text = (f"APGD-CE at linf eps={self.eps:.4g} on {len(out.sets[0].labels)} examples (each broken example at "
                f"the first iterate that breaks it, as in the evaluation): accuracy "
                f"{raw['accuracy']:.2%}, ECE {raw['ece']:.2%}, mean confidence {raw['mean_confidence']:.2%}")
        if np.isfinite(wrong):
            text += f" ({wrong:.2%} on its wrong predictions)"
        if held_ts:
            text += f"; with the clean temperature, held-out ECE {held_ts['ece']:.2%}"
        return text + "."

    def _run_summary(self, model: Any, data: Dataset) -> ProbeResult:
        outcomes = {p: self._outcome(model, data, p) for p in PARTS[:3]}
        groups: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        for part, out in outcomes.items():
            if out.sets:
                logits = torch.cat([s.logits for s in out.sets])
                labels = torch.cat([s.labels for s in out.sets])
                label = {"clean": "clean", "corrupted": f"corrupted (severity {self.severity}, pooled)",
                         "adversarial": f"APGD-CE, eps={self.eps:.4g}"}[part]
                groups.append((label, logits, labels))
        table_rows = []
        temperature = outcomes["clean"].temperature
        for part, out in outcomes.items():
            for s in out.sets:
                m = self._metrics(s)
                ts = (self._metrics(s, held_out=True, temperature=temperature)
                      if temperature is not None and s.held_out.any() else {})
                table_rows.append((part, s.name, len(s.labels), *(round(m[k], 6) for k in
                                   ("accuracy", "mean_confidence", "mean_confidence_wrong", "ece", "ace", "nll")),
                                   round(ts["ece"], 6) if ts else None))
        table = Table(name="calibration", title="Calibration per set of inputs (ECE after temperature scaling: "
                                                 "held-out examples only)",
                      columns=("part", "set", "examples", "accuracy", "mean confidence", "mean confidence (wrong)",
                               "ECE", "ECE (equal-mass)", "NLL", "ECE after temperature"),
                      rows=tuple(tuple(None if isinstance(v, float) and not np.isfinite(v) else v for v in r)
                                 for r in table_rows))
        figure = _overlay_figure(groups, self.n_bins)
        notes = [o.note for o in outcomes.values() if o.note]
        summary = "Reliability on " + ", ".join(g[0] for g in groups) + "." + (" " + " ".join(notes) if notes else "")
        return ProbeResult(figures=(figure,), tables=(table,), summary=summary)


def _rows(metrics: dict[str, float], params: dict[str, Any], *, headline_ece: bool = False) -> list[ResultRow]:
    return [ResultRow(k, metrics[k], params=params, headline=headline_ece and k == "ece" and "subset" not in params)
            for k in METRICS if k in metrics]


def _mean(dicts: list[dict[str, float]]) -> dict[str, float]:
    dicts = [d for d in dicts if d]
    if not dicts:
        return {}
    return {k: float(np.nanmean([d[k] for d in dicts])) if any(np.isfinite(d[k]) for d in dicts) else float("nan")
            for k in dicts[0]}


# --------------------------------------------------------------------------- figures
def _draw(ax: Any, probs: torch.Tensor, labels: torch.Tensor, n_bins: int, label: str, color: str) -> float:
    d = reliability_diagram(probs, labels, n_bins=n_bins)
    full = d.counts > 0
    sizes = 10 + 200 * d.counts[full] / max(int(d.counts.sum()), 1)
    ax.plot(d.confidence[full], d.accuracy[full], color=color, linewidth=1.2, label=f"{label} (ECE {d.ece:.1%})")
    ax.scatter(d.confidence[full], d.accuracy[full], s=sizes, color=color, alpha=0.7)
    return d.ece


def _axes_frame(ax: Any) -> None:
    ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", linewidth=1)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("confidence (bin mean)")
    ax.set_ylabel("accuracy in bin")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)


def _clean_figure(probe: CalibrationProbe, out: _Outcome) -> Figure:
    from matplotlib.figure import Figure as MplFigure  # lazy, and never pyplot

    s = out.sets[0]
    fig = MplFigure(figsize=(4.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    _draw(ax, torch.softmax(s.logits, 1), s.labels, probe.n_bins, "all examples", "tab:blue")
    if out.temperature is not None and s.held_out.any():
        z, y = s.logits[s.held_out], s.labels[s.held_out]
        _draw(ax, torch.softmax(z, 1), y, probe.n_bins, "held-out half", "tab:gray")
        _draw(ax, torch.softmax(z / out.temperature, 1), y, probe.n_bins,
              f"held-out, T={out.temperature:.3g}", "tab:green")
    _axes_frame(ax)
    return Figure(name="reliability_clean",
                  title=f"Reliability on clean data ({probe.n_bins} equal-width bins; marker area ~ examples "
                        "in the bin); temperature fitted on the other half",
                  svg=figure_to_svg(fig))


def _overlay_figure(groups: list[tuple[str, torch.Tensor, torch.Tensor]], n_bins: int) -> Figure:
    from matplotlib.figure import Figure as MplFigure  # lazy, and never pyplot

    fig = MplFigure(figsize=(4.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for (label, logits, labels), color in zip(groups, ("tab:blue", "tab:orange", "tab:red")):
        _draw(ax, torch.softmax(logits, 1), labels, n_bins, label, color)
    _axes_frame(ax)
    return Figure(name="reliability_overlay",
                  title="Reliability on clean, corrupted and adversarial inputs (points below the diagonal: "
                        "over-confident)", svg=figure_to_svg(fig))
