"""The ``adversarial`` scan probe: robust accuracy per (norm, eps), the accuracy-eps curve, checks.

Jobs. One job per (norm, eps) of the grid (``{"norm": "linf", "eps": 0.1}``): the evaluation
suite at that radius -- the reliable ``suite`` (AutoAttack's "standard" by default) at each
norm's headline eps, the cheaper ``curve_suite`` ("fast": APGD-CE + APGD-T) elsewhere. Then, per
norm, three jobs keyed by ``part``: ``"curve"`` (clean accuracy, the accuracy-eps curve and its
area, a table of which attack broke how many examples at each eps), ``"minimal_norm"`` (the
distribution of minimal adversarial perturbation norms) and ``"masking"`` (gradient-masking
sanity checks at the headline eps).

Randomness. Every evaluation draws from a generator seeded from (probe ``seed``, norm, eps, part),
not from the job's generator, so the curve job reproduces the per-eps jobs' numbers exactly. When
the curve job runs in the process that ran the per-eps jobs (the local backend) it reuses their
results (kept on the probe object, keyed by the model -- including its parameters' in-place
version counters -- and the data); after a resume or on another worker it evaluates every eps
again. This is the design of the ``corruptions`` probe's summary job.

Examples. Attacks cost hundreds of forward/backward passes per example, so the probe evaluates a
fixed random subset of at most ``num_examples`` examples (drawn with ``seed``, kept in data
order); every job uses the same subset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_bool, check_choice, check_int, fail
from robustlab._constants import (
    ADV_PROBE_CURVE_SUITE,
    ADV_PROBE_EPS,
    ADV_PROBE_HIST_BINS,
    ADV_PROBE_MASKING_SQUARE_QUERIES,
    ADV_PROBE_MIN_NORM_ATTACK,
    ADV_PROBE_MIN_NORM_STEPS,
    ADV_PROBE_NUM_EXAMPLES,
    ADV_PROBE_SUITE,
    DEFAULT_SEED,
    IMAGE_RANGE_ATOL,
)
from robustlab.adversarial._core import NORMS, check_eps
from robustlab.data.dataset import Dataset
from robustlab.errors import InvalidTypeError
from robustlab.scan.probe import (
    ModelCache,
    PROBES,
    Figure,
    Probe,
    ProbeResult,
    ResultRow,
    Table,
    check_headline_radius,
    check_radius_grid,
    figure_to_svg,
    seeded_generator,
)

__all__ = ["AdversarialProbe", "parse_eps", "select_examples"]

_PARTS = ("curve", "minimal_norm", "masking")


# --------------------------------------------------------------------------- shared helpers
def parse_eps(text: Any, *, name: str = "eps") -> float:
    """A radius from text: a decimal (``"0.03"``) or a fraction (``"8/255"``), finite and >= 0.

    Parameters
    ----------
    text : str or real
    name : str, default "eps"
        Parameter name used in the error message.

    Returns
    -------
    float

    Examples
    --------
    >>> parse_eps("8/255") == 8 / 255
    True
    """
    if isinstance(text, str):
        parts = text.strip().split("/")
        try:
            if len(parts) == 2:
                num, den = float(parts[0]), float(parts[1])
                value = num / den if den != 0 else math.nan
            elif len(parts) == 1:
                value = float(parts[0])
            else:
                value = math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            fail(name, "a finite number >= 0, as a decimal ('0.03') or a fraction ('8/255')", text)
        return value
    return check_eps(text, name=name)


def select_examples(n: int, num_examples: int | None, seed: int) -> torch.Tensor:
    """Indices of a random subset of ``min(n, num_examples)`` of ``range(n)``, in increasing order.

    ``None`` (or ``num_examples >= n``) keeps every example. The subset depends only on
    ``(n, num_examples, seed)``.
    """
    if num_examples is None or num_examples >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:num_examples].sort().values


def _suites() -> tuple[str, ...]:
    from robustlab.adversarial.evaluate import (
        SUITES,  # lazy: evaluation imports every attack
    )

    return tuple(SUITES)
@dataclass(frozen=True)
class _EpsOutcome:
    """What the curve job needs from one (norm, eps) evaluation."""

    suite: str
    robust_accuracy: float
    clean_accuracy: float
    attack_stats: tuple[tuple[str, int, int, float], ...]  # (name, attacked, broken, seconds)
    seconds: float


# --------------------------------------------------------------------------- the probe
@PROBES.register("adversarial")
class AdversarialProbe(Probe):
    """Robust accuracy under norm-bounded attacks, the accuracy-eps curve and sanity checks.

    Parameters
    ----------
    eps : dict of str to sequence of float, optional
        Radii per norm (``"linf"``, ``"l2"``, ``"l1"``), for inputs in ``[0, 1]``. Default
        ``{"linf": (0.05, 0.1, 0.2)}``, chosen for the built-in 8x8 digits (grey levels 1/16
        apart): the zoo's naturally trained small CNN keeps about 90%, 25% and 0% of its accuracy.
        Each norm adds about 35 CPU-seconds on 100 digits, so L2 is opt-in:
        ``{"linf": (0.05, 0.1, 0.2), "l2": (0.25, 0.5, 1.0)}`` (about 90%, 50%, 0%). For CIFAR-10
        the usual values are ``{"linf": [2/255, 4/255, 8/255], "l2": [0.25, 0.5, 1.0]}``.
    headline_eps : dict of str to float, optional
        The radius per norm evaluated with ``suite`` and shown in the report summary; default the
        middle value of each grid (the lower middle for an even number).
    suite : str, default "standard"
        Suite of :func:`robustlab.adversarial.evaluate` at the headline eps ("standard", "plus",
        "rand" -- AutoAttack's -- or "fast").
    curve_suite : str, default "fast"
        Suite at the other radii of the grid (APGD-CE + APGD-T: the curve, cheaply).
    num_examples : int or None, default 100
        Size of the random subset that is attacked (``None``: every example).
    minimal_norm : bool, default True
        Add the per-norm ``minimal_norm`` job: histogram of the minimal perturbation norms found by
        FAB (:func:`~robustlab.adversarial.curves.minimal_norm_distribution`, 20 iterations instead
        of 100 to keep the scan fast; ``ADV_PROBE_MIN_NORM_STEPS``).
    masking : bool, default True
        Add the per-norm ``masking`` job: :func:`~robustlab.adversarial.masking.check_gradient_masking`
        at the headline eps, its monotonicity check over this norm's grid, Square with 1000 queries
        instead of 5000 in its black-box check (``ADV_PROBE_MASKING_SQUARE_QUERIES``).
    seed : int, default 0
        Seeds the subset and every attack (see the module notes).
    batch_size : int, optional
        Examples attacked at a time: :func:`~robustlab.adversarial.evaluate`'s default when
        ``None`` (250, AutoAttack's, on an accelerator; 128 on CPU).

    Notes
    -----
    Rows (fractions unless stated): per (norm, eps) job ``robust_accuracy`` (headline at the
    headline eps; the suite is in the job summary and the curve job's table), ``broken`` per ``{"attack"}`` (examples each
    attack broke first, a count) and ``seconds`` of the evaluation; per norm, in the curve job,
    ``clean_accuracy`` on the attacked subset and ``auac`` (:func:`robustlab.adversarial.curves.auac`
    of the curve from ``eps = 0``, where the accuracy is the clean one, to the largest radius: the
    mean accuracy over that range); in the minimal-norm job ``median_minimal_norm`` (``inf`` when
    the attack breaks fewer than half the examples) and ``accuracy_from_minimal_norms`` at the
    headline eps (both per ``{"attack"}``); in the masking job ``masking_warnings`` (a count) and
    ``masking_check`` per ``{"check"}`` (1 pass, 0 warn).

    Data outside ``[0, 1]`` (the box every attack keeps) gets no rows: each job says so.
    """

    name = "adversarial"
    title = "Adversarial robustness"

    def __init__(self, *, eps: Mapping[str, Sequence[float]] | None = None,
                 headline_eps: Mapping[str, float] | None = None, suite: str = ADV_PROBE_SUITE,
                 curve_suite: str = ADV_PROBE_CURVE_SUITE, num_examples: int | None = ADV_PROBE_NUM_EXAMPLES,
                 minimal_norm: bool = True, masking: bool = True, seed: int = DEFAULT_SEED,
                 batch_size: int | None = None) -> None:
        self.eps = check_radius_grid(dict(ADV_PROBE_EPS) if eps is None else eps, NORMS)
        self.headline_eps = check_headline_radius(self.eps, headline_eps)
        self.suite = check_choice("suite", suite, _suites())
        self.curve_suite = check_choice("curve_suite", curve_suite, _suites())
        self.num_examples = None if num_examples is None else check_int("num_examples", num_examples, low=1)
        self.minimal_norm = check_bool("minimal_norm", minimal_norm)
        self.masking = check_bool("masking", masking)
        self.seed = check_int("seed", seed, low=0)
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size, low=1)
        # (norm, eps) -> outcome of the evaluations run by this object, reused by the curve job
        # when it runs in the same process on the same model (unchanged weights) and data.
        self._cache = ModelCache()

    def params(self) -> dict[str, Any]:
        return {"eps": {n: list(v) for n, v in self.eps.items()}, "headline_eps": dict(self.headline_eps),
                "suite": self.suite, "curve_suite": self.curve_suite, "num_examples": self.num_examples,
                "minimal_norm": self.minimal_norm, "masking": self.masking, "seed": self.seed,
                "batch_size": self.batch_size}

    def jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = [{"norm": n, "eps": e} for n, grid in self.eps.items() for e in grid]
        for n in self.eps:
            jobs.append({"norm": n, "part": "curve"})
            if self.minimal_norm:
                jobs.append({"norm": n, "part": "minimal_norm"})
            if self.masking:
                jobs.append({"norm": n, "part": "masking"})
        return jobs

    # ------------------------------------------------------------------ running
    def run(self, model: Any, data: Any, *, job: dict[str, Any], generator: torch.Generator) -> ProbeResult:
        """Run one job (the job's generator is unused: see the module notes)."""
        if not isinstance(data, Dataset):
            fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
        if len(data) == 0:
            fail("data", "a Dataset with at least one example", data)
        norm = check_choice("job['norm']", job.get("norm"), tuple(self.eps))
        x, y = self._examples(data)
        reason = _not_applicable(x)
        if reason:
            return ProbeResult(summary=reason)
        part = job.get("part")
        if part is None:
            return self._run_eps(model, data, x, y, norm, float(job["eps"]))
        check_choice("job['part']", part, _PARTS)
        if part == "curve":
            return self._run_curve(model, data, x, y, norm)
        if part == "minimal_norm":
            return self._run_minimal_norm(model, x, y, norm)
        return self._run_masking(model, x, y, norm)

    def _examples(self, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        idx = select_examples(len(data), self.num_examples, self.seed)
        return data.load(idx)

    def _suite_for(self, norm: str, eps: float) -> str:
        return self.suite if eps == self.headline_eps[norm] else self.curve_suite

    def _outcome(self, model: Any, data: Dataset, x: torch.Tensor, y: torch.Tensor, norm: str,
                 eps: float) -> _EpsOutcome:
        return self._cache.fetch((norm, eps), model, data, lambda: self._evaluate(model, x, y, norm, eps))

    def _evaluate(self, model: Any, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> _EpsOutcome:
        from robustlab.adversarial.evaluate import evaluate

        suite = self._suite_for(norm, eps)
        result = evaluate(model, x, y, eps=eps, norm=norm, suite=suite, batch_size=self.batch_size,
                          generator=seeded_generator(self.seed, norm, eps))
        stats = tuple((s.name, int(s.num_attacked), int(s.num_broken), float(s.seconds))
                      for s in result.attack_stats)
        return _EpsOutcome(suite, float(result.robust_accuracy), float(result.clean_accuracy), stats,
                           float(result.seconds))

    def _run_eps(self, model: Any, data: Dataset, x: torch.Tensor, y: torch.Tensor, norm: str,
                 eps: float) -> ProbeResult:
        out = self._outcome(model, data, x, y, norm, eps)
        headline = eps == self.headline_eps[norm]
        # No "suite" param: robust accuracy over eps stays one curve (e.g. in `robustlab report A B`).
        rows = [ResultRow("robust_accuracy", out.robust_accuracy, headline=headline)]
        rows += [ResultRow("broken", float(broken), params={"attack": name}, unit="examples")
                 for name, _, broken, _ in out.attack_stats]
        rows.append(ResultRow("seconds", out.seconds, unit="s"))
        first = max(out.attack_stats, key=lambda s: s[2], default=None)
        summary = (f"{norm} eps={eps:.4g} ({out.suite} suite, {len(x)} examples): robust accuracy "
                   f"{out.robust_accuracy:.2%} (clean {out.clean_accuracy:.2%}) in {out.seconds:.1f} s")
        if first is not None and first[2]:
            summary += f"; most examples broken by {first[0]} ({first[2]})"
        return ProbeResult(rows=tuple(rows), summary=summary + ".")

    def _run_curve(self, model: Any, data: Dataset, x: torch.Tensor, y: torch.Tensor, norm: str) -> ProbeResult:
        from robustlab.adversarial.curves import auac

        grid = self.eps[norm]
        outcomes = [self._outcome(model, data, x, y, norm, e) for e in grid]
        clean = outcomes[0].clean_accuracy
        accuracy = [o.robust_accuracy for o in outcomes]
        # From eps = 0 (clean accuracy): the mean accuracy over [0, largest eps].
        area = float(auac([0.0, *grid], [clean, *accuracy]))
        rows = (ResultRow("clean_accuracy", clean), ResultRow("auac", area))
        table_rows = tuple((float(e), o.suite, name, attacked, broken, round(seconds, 3))
                           for e, o in zip(grid, outcomes) for name, attacked, broken, seconds in o.attack_stats)
        table = Table(name="attacks", title=f"Which attack broke how many examples ({norm}; each attack "
                                             "runs on the examples still unbroken)",
                      columns=("eps", "suite", "attack", "attacked", "broken", "seconds"), rows=table_rows)
        figure = _curve_figure(norm, grid, accuracy, clean, self.headline_eps[norm],
                               [o.suite for o in outcomes])
        summary = (f"{norm}: robust accuracy " + ", ".join(f"{a:.1%} (eps={e:.4g})" for e, a in zip(grid, accuracy))
                   + f"; clean {clean:.2%} on {len(x)} examples; area under the curve from 0 to eps={grid[-1]:.4g} "
                   f"(normalised: the mean accuracy over that range) {area:.4g}.")
        return ProbeResult(rows=rows, figures=(figure,), tables=(table,), summary=summary)

    def _run_minimal_norm(self, model: Any, x: torch.Tensor, y: torch.Tensor, norm: str) -> ProbeResult:
        from robustlab.adversarial.curves import (
            accuracy_from_norms,
            minimal_norm_distribution,
        )

        found = minimal_norm_distribution(model, x, y, norm=norm, attack=ADV_PROBE_MIN_NORM_ATTACK,
                                          generator=seeded_generator(self.seed, norm, "minimal_norm"),
                                          batch_size=self.batch_size, num_steps=ADV_PROBE_MIN_NORM_STEPS)
        norms = found.norms.detach().double().cpu()
        eps = self.headline_eps[norm]
        (implied,) = accuracy_from_norms(norms, [eps])
        params = {"attack": found.attack}
        rows = (ResultRow("median_minimal_norm", found.median, params=params),
                ResultRow("accuracy_from_minimal_norms", implied, params={**params, "eps": eps}))
        finite = norms[torch.isfinite(norms)]
        figure = _norm_histogram(norm, finite.numpy(), eps, int(norms.numel() - finite.numel()), found.attack)
        summary = (f"{norm}: {found.attack} finds a median minimal perturbation of {found.median:.4g} over "
                   f"{len(norms)} examples (misclassified ones count as 0); {implied:.1%} need more than "
                   f"eps={eps:.4g} (an upper bound on robust accuracy, to compare with the suite's).")
        return ProbeResult(rows=rows, figures=(figure,), summary=summary)

    def _run_masking(self, model: Any, x: torch.Tensor, y: torch.Tensor, norm: str) -> ProbeResult:
        from robustlab.adversarial.masking import check_gradient_masking

        eps = self.headline_eps[norm]
        report = check_gradient_masking(model, x, y, eps=eps, norm=norm, eps_grid=self.eps[norm],
                                        square_queries=ADV_PROBE_MASKING_SQUARE_QUERIES,
                                        batch_size=self.batch_size,
                                        generator=seeded_generator(self.seed, norm, eps, "masking"))
        checks = tuple(getattr(report, "checks", report))
        warnings_ = [c for c in checks if c.status != "pass"]
        rows = [ResultRow("masking_warnings", float(len(warnings_)), params={"eps": eps}, unit="checks")]
        rows += [ResultRow("masking_check", 1.0 if c.status == "pass" else 0.0, params={"check": c.name, "eps": eps})
                 for c in checks]
        table = Table(name="masking", title=f"Gradient-masking checks ({norm}, eps={eps:.4g})",
                      columns=("check", "status", "detail"),
                      rows=tuple((c.name, c.status, c.detail) for c in checks))
        summary = (f"{norm} eps={eps:.4g}: " + (f"{len(warnings_)} gradient-masking warning(s): "
                                                + ", ".join(c.name for c in warnings_)
                                                if warnings_ else f"all {len(checks)} gradient-masking checks pass")
                   + ".")
        return ProbeResult(rows=tuple(rows), tables=(table,), summary=summary)


# --------------------------------------------------------------------------- validation
def _not_applicable(x: torch.Tensor) -> str:
    if not x.is_floating_point():
        return "Not applicable: attacks need float inputs."
    lo, hi = float(x.min()), float(x.max())
    if lo < -IMAGE_RANGE_ATOL or hi > 1 + IMAGE_RANGE_ATOL:
        return (f"Not applicable: attacks perturb inputs in [0, 1] (normalisation belongs inside the "
                f"model); these inputs lie in [{lo:.4g}, {hi:.4g}].")
    return ""


# --------------------------------------------------------------------------- figures
def _curve_figure(norm: str, grid: Sequence[float], accuracy: Sequence[float], clean: float,
                  headline: float, suites: Sequence[str]) -> Figure:
    from matplotlib.figure import Figure as MplFigure  # lazy, and never pyplot

    fig = MplFigure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    xs, ys = [0.0, *grid], [clean, *accuracy]
    ax.plot(xs, ys, marker="o", color="tab:blue")
    i = list(grid).index(headline)
    ax.plot([headline], [accuracy[i]], marker="s", markersize=9, color="tab:red", linestyle="none",
            label=f"eps={headline:.4g} ({suites[i]} suite)")
    ax.set_xlabel(f"eps ({norm})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return Figure(name="accuracy_curve",
                  title=f"Robust accuracy against {norm} radius (eps=0: clean accuracy)",
                  svg=figure_to_svg(fig))


def _norm_histogram(norm: str, norms: np.ndarray, eps: float, missing: int, attack: str) -> Figure:
    from matplotlib.figure import Figure as MplFigure  # lazy, and never pyplot

    fig = MplFigure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    if norms.size:
        ax.hist(norms, bins=ADV_PROBE_HIST_BINS, color="tab:blue", alpha=0.8)
    ax.axvline(eps, color="tab:red", linestyle="--", label=f"headline eps={eps:.4g}")
    ax.set_xlabel(f"minimal perturbation ({norm} norm)")
    ax.set_ylabel("examples")
    ax.legend(loc="upper right", fontsize=8)
    note = f"; {missing} example(s) it could not break are left out" if missing else ""
    return Figure(name="minimal_norms",
                  title=f"Minimal {norm} perturbation that changes the prediction, found by {attack} "
                        f"(misclassified examples count as 0){note}",
                  svg=figure_to_svg(fig))
