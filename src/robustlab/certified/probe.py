"""The ``certified`` scan probe: verified accuracy by bound propagation and randomized smoothing.

Jobs. Bound propagation: one job per (method, norm, eps) of the grid (``{"method": "crown",
"norm": "linf", "eps": 0.02}``) with the fraction of examples :func:`~robustlab.certified.verified`
proves robust, then per norm one ``part="bounds_curve"`` job (clean accuracy of the subset,
verified accuracy against eps per method: figure and table). Randomized smoothing: one job per
noise level (``{"sigma": 0.25}``) running CERTIFY (Cohen et al. 2019, Sec. 3.2) -- certified
accuracy at fixed L2 radii, abstention rate, average certified radius, accuracy of the base
classifier under the noise -- and one ``part="smoothing_curve"`` job (certified accuracy against
the radius per sigma).

Models bound propagation cannot handle (a layer it does not support, a model that torch.fx
cannot trace, a callable that is not an ``nn.Module``) and data outside ``[0, 1]`` get no rows
from the bound-propagation jobs, whose summaries say "Not applicable: ..." and why; the
smoothing jobs, which only need the model's predictions, run on any model and any float data.

Randomness. Bound propagation is deterministic. Each smoothing job draws its noise from a
generator seeded from (probe ``seed``, sigma), not from the job's generator, so the curve job
reproduces the per-sigma certificates exactly. As in the ``adversarial`` probe, the curve jobs
reuse the outcomes of the jobs run by the same probe object on the same model (unchanged
weights) and data (the local backend); after a resume or on another worker they compute them
again.

Examples. Bounds and CERTIFY cost far more than a forward pass (CROWN about 0.2 CPU-seconds per
example and radius on the zoo's small CNN; CERTIFY ``n0 + n`` forward passes per example), so the
probe evaluates a fixed random subset of at most ``num_examples`` examples (drawn with ``seed``
by :func:`robustlab.adversarial.probe.select_examples`, kept in data order); every job uses the
same subset. The defaults (20 examples, ``n = 1000``) are small-sample estimates for a quick
scan: raise them for numbers to publish.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats

from robustlab._checks import check_choice, check_int, check_number, fail
from robustlab._constants import (
    CERT_PROBE_ALPHA,
    CERT_PROBE_BOUNDS_BATCH_SIZE,
    CERT_PROBE_EPS,
    CERT_PROBE_METHODS,
    CERT_PROBE_N,
    CERT_PROBE_N0,
    CERT_PROBE_NUM_EXAMPLES,
    CERT_PROBE_RADII,
    CERT_PROBE_SIGMAS,
    CERTIFIED_METHODS,
    CERTIFIED_NORMS,
    DEFAULT_SEED,
    EVAL_BATCH_SIZE,
    SMOOTHING_BATCH_SIZE,
    SMOOTHING_N,
)
from robustlab._model_state import eval_mode
from robustlab.certified._graph import SUPPORTED_TEXT, trace
from robustlab.certified.bounds import verified
from robustlab.certified.smoothing import (
    average_certified_radius,
    certified_accuracy_curve,
    certify,
)
from robustlab.data.dataset import Dataset
from robustlab.errors import InvalidTypeError, RobustlabError
from robustlab.models.inference import predict_logits
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

__all__ = ["CertifiedProbe", "bounds_not_applicable", "max_certifiable_radius"]

_PARTS = ("bounds_curve", "smoothing_curve")
#: Preference order of the headline method: the tightest one the probe runs.
_HEADLINE_ORDER = ("crown", "crown-ibp", "ibp")


# --------------------------------------------------------------------------- shared helpers
def bounds_not_applicable(model: Any, x: torch.Tensor) -> str:
    """Why bound propagation cannot certify ``model`` on inputs like ``x``, or ``""`` if it can.

    Checks that the model is an ``nn.Module``, the inputs are floats in ``[0, 1]`` (the box of
    the threat model) and the model traces into operations the bounds support (tracing is cached
    by :mod:`robustlab.certified.bounds`, so the later bounds reuse it).

    Returns
    -------
    str
        ``""``, or one sentence starting with ``"Not applicable: "``.
    """
    if not isinstance(model, torch.nn.Module):
        return (f"Not applicable: bound propagation needs a torch.nn.Module, not a "
                f"{type(model).__name__} (randomized smoothing below needs only predictions).")
    if not x.is_floating_point():
        return "Not applicable: bound propagation needs float inputs."
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            return (f"Not applicable: bound propagation certifies inputs in [0, 1] (normalisation "
                    f"belongs inside the model); these inputs lie in [{lo:.4g}, {hi:.4g}].")
    try:
        with eval_mode(model), torch.no_grad():
            trace(model, x[:1].to(_device_of(model, x)))
    except RobustlabError as exc:
        match = re.search(r"Got (.*) instead\.$", str(exc).strip())
        what = match.group(1) if match else str(exc).strip()
        what = re.sub(r"^a model with the unsupported ", "unsupported ", what)
        what = re.sub(r"^a model whose tracing failed: ", "torch.fx cannot trace the model: ", what)
        return f"Not applicable: {what}; bound propagation needs {SUPPORTED_TEXT}."
    return ""


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """Largest radius CERTIFY can return: ``sigma * Phi^{-1}(alpha^{1/n})`` (all ``n`` votes right)."""
    return float(sigma * stats.norm.ppf(alpha ** (1.0 / n)))


def _device_of(model: Any, x: torch.Tensor) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            return t.device
    return x.device
@dataclass(frozen=True)
class _BoundOutcome:
    verified: int
    total: int
    seconds: float

    @property
    def accuracy(self) -> float:
        return self.verified / self.total if self.total else float("nan")


@dataclass(frozen=True)
class _SmoothOutcome:
    certificate: Any  # robustlab.certified.smoothing.Certificate
    seconds: float


# --------------------------------------------------------------------------- the probe
@PROBES.register("certified")
class CertifiedProbe(Probe):
    """Certified robustness: verified accuracy by IBP / CROWN-IBP / CROWN and randomized smoothing.

    Parameters
    ----------
    eps : dict of str to sequence of float, optional
        Bound-propagation radii per norm (``"linf"``, ``"l2"``) for inputs in ``[0, 1]``. Default
        ``{"linf": (0.01, 0.02, 0.03)}``, chosen for the built-in 8x8 digits (CROWN verifies about
        95%, 90% and 50-70% of the zoo's naturally trained small CNN). For CIFAR-10 the usual
        values are ``{"linf": [2/255, 8/255]}``.
    headline_eps : dict of str to float, optional
        The radius per norm whose verified accuracy (of the tightest method run: CROWN by
        default) is the headline; default the (lower) middle value of each grid.
    methods : sequence of str, default ("ibp", "crown-ibp", "crown")
        Bound-propagation methods (:func:`robustlab.certified.verified`); empty: none.
    sigmas : sequence of float, default (0.25,)
        Noise levels of randomized smoothing (one job each); empty: no smoothing.
    n0, n : int, default 100, 1000
        CERTIFY's selection and estimation samples per example. Cohen et al. use ``n = 100,000``;
        the default 1,000 is a small-sample estimate (certified radii at most ``2.46 sigma``
        instead of ``3.8 sigma``; never unsound, only smaller).
    alpha : float, default 0.001
        CERTIFY's failure probability per example (Cohen et al.).
    radii : sequence of float, default (0.0, 0.25, 0.5, 0.75, 1.0)
        L2 radii at which certified accuracy is reported (rows and table).
    num_examples : int or None, default 20
        Size of the random subset every job evaluates (``None``: every example).
    seed : int, default 0
        Seeds the subset and the smoothing noise (see the module notes).
    batch_size : int, default 1000
        Noisy copies per forward pass in CERTIFY (the certificates depend on it, as on ``seed``).
    bounds_batch_size : int, default 128
        Examples bounded at a time (memory only: each example's bounds are independent).

    Notes
    -----
    Rows (fractions unless stated). Per bound job ``verified_accuracy`` (headline for the tightest
    method at the headline eps; a lower bound on the robust accuracy that any attack can only
    bound from above) and ``seconds``; per norm, in the curve job, ``clean_accuracy`` of the
    subset (an example can only be verified if it is classified correctly). Per sigma
    ``certified_accuracy`` per ``{"radius"}`` (correct, not abstained and certified at least that
    radius; Cohen et al.'s metric), ``abstention_rate``, ``average_certified_radius`` (ACR, Zhai
    et al. 2020), ``noisy_accuracy`` (the base classifier's accuracy on the ``n`` noisy copies: low
    when the model was not trained with Gaussian noise, see the ``gaussian-augment`` objective),
    ``clean_accuracy`` of the base classifier and ``seconds``.
    """

    name = "certified"
    title = "Certified robustness"

    def __init__(self, *, eps: Mapping[str, Sequence[float]] | None = None,
                 headline_eps: Mapping[str, float] | None = None,
                 methods: Sequence[str] = CERT_PROBE_METHODS, sigmas: Sequence[float] = CERT_PROBE_SIGMAS,
                 n0: int = CERT_PROBE_N0, n: int = CERT_PROBE_N, alpha: float = CERT_PROBE_ALPHA,
                 radii: Sequence[float] = CERT_PROBE_RADII,
                 num_examples: int | None = CERT_PROBE_NUM_EXAMPLES, seed: int = DEFAULT_SEED,
                 batch_size: int = SMOOTHING_BATCH_SIZE,
                 bounds_batch_size: int = CERT_PROBE_BOUNDS_BATCH_SIZE) -> None:
        self.eps = check_radius_grid(dict(CERT_PROBE_EPS) if eps is None else eps, CERTIFIED_NORMS)
        self.headline_eps = check_headline_radius(self.eps, headline_eps)
        self.methods = _check_methods(methods)
        self.sigmas = _check_positive_list("sigmas", sigmas, allow_empty=True)
        if not self.methods and not self.sigmas:
            fail("methods", "a non-empty list of bound-propagation methods when 'sigmas' is empty "
                 "(the probe would have nothing to do)", list(methods))
        self.n0 = check_int("n0", n0, low=1)
        self.n = check_int("n", n, low=1)
        self.alpha = check_number("alpha", alpha, low=0.0, high=1.0, low_inclusive=False,
                                  high_inclusive=False)
        self.radii = _check_radii(radii)
        self.num_examples = None if num_examples is None else check_int("num_examples", num_examples, low=1)
        self.seed = check_int("seed", seed, low=0)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.bounds_batch_size = check_int("bounds_batch_size", bounds_batch_size, low=1)
        # Outcomes of the jobs run by this object, reused by the curve jobs when they run in the
        # same process on the same model (unchanged weights) and data.
        self._cache = ModelCache()

    def params(self) -> dict[str, Any]:
        return {"eps": {k: list(v) for k, v in self.eps.items()}, "headline_eps": dict(self.headline_eps),
                "methods": list(self.methods), "sigmas": list(self.sigmas), "n0": self.n0, "n": self.n,
                "alpha": self.alpha, "radii": list(self.radii), "num_examples": self.num_examples,
                "seed": self.seed, "batch_size": self.batch_size,
                "bounds_batch_size": self.bounds_batch_size}

    def jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        if self.methods:
            for norm, grid in self.eps.items():
                jobs += [{"method": m, "norm": norm, "eps": e} for m in self.methods for e in grid]
                jobs.append({"norm": norm, "part": "bounds_curve"})
        if self.sigmas:
            jobs += [{"sigma": s} for s in self.sigmas]
            jobs.append({"part": "smoothing_curve"})
        return jobs

    @property
    def headline_method(self) -> str | None:
        """The tightest method run (CROWN by default); its verified accuracy is the headline."""
        return next((m for m in _HEADLINE_ORDER if m in self.methods), None)

    # ------------------------------------------------------------------ running
    def run(self, model: Any, data: Any, *, job: dict[str, Any], generator: torch.Generator) -> ProbeResult:
        """Run one job (the job's generator is unused: see the module notes)."""
        if not isinstance(data, Dataset):
            fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
        if len(data) == 0:
            fail("data", "a Dataset with at least one example", data)
        x, y = data.load(self._subset(len(data)))
        part = job.get("part")
        if part is not None:
            check_choice("job['part']", part, _PARTS)
        if "sigma" in job or part == "smoothing_curve":
            if not x.is_floating_point():
                return ProbeResult(summary="Not applicable: randomized smoothing needs float inputs.")
            if part == "smoothing_curve":
                return self._run_smoothing_curve(model, data, x, y)
            sigma = check_number("job['sigma']", job["sigma"], low=0.0, low_inclusive=False)
            return self._run_sigma(model, data, x, y, sigma)
        norm = check_choice("job['norm']", job.get("norm"), tuple(self.eps))
        reason = bounds_not_applicable(model, x)
        if reason:
            return ProbeResult(summary=reason)
        if part == "bounds_curve":
            return self._run_bounds_curve(model, data, x, y, norm)
        method = check_choice("job['method']", job.get("method"), self.methods)
        return self._run_bound(model, data, x, y, method, norm, float(job["eps"]))

    def _subset(self, n: int) -> torch.Tensor:
        from robustlab.adversarial.probe import (
            select_examples,  # lazy: the attacks are not needed
        )

        return select_examples(n, self.num_examples, self.seed)

    # ------------------------------------------------------------------ bound propagation
    def _bound_outcome(self, model: Any, data: Dataset, x: torch.Tensor, y: torch.Tensor, method: str,
                       norm: str, eps: float) -> _BoundOutcome:
        def compute() -> _BoundOutcome:
            device = _device_of(model, x)
            start = time.perf_counter()
            count = 0
            for i in range(0, len(y), self.bounds_batch_size):
                xb, yb = x[i:i + self.bounds_batch_size].to(device), y[i:i + self.bounds_batch_size].to(device)
                count += int(verified(model, xb, yb, eps=eps, norm=norm, method=method).sum())
            return _BoundOutcome(count, len(y), time.perf_counter() - start)

        return self._cache.fetch(("bound", method, norm, eps), model, data, compute)

    def _run_bound(self, model: Any, data: Dataset, x: torch.Tensor, y: torch.Tensor, method: str,
                   norm: str, eps: float) -> ProbeResult:
        out = self._bound_outcome(model, data, x, y, method, norm, eps)
        headline = method == self.headline_method and eps == self.headline_eps[norm]
        rows = (ResultRow("verified_accuracy", out.accuracy, headline=headline),
                ResultRow("seconds", out.seconds, unit="s"))
        summary = (f"{method.upper()} {norm} eps={eps:.4g}: {out.verified} of {out.total} examples "
                   f"verified robust ({out.accuracy:.2%}) in {out.seconds:.2f} s.")
        return ProbeResult(rows=rows, summary=summary)

    def _run_bounds_curve(self, model: Any, data: Dataset, x: torch.Tensor, y: torch.Tensor,
                          norm: str) -> ProbeResult:
        grid = self.eps[norm]
        clean = self._clean_accuracy(model, data, x, y)
        acc = {m: [self._bound_outcome(model, data, x, y, m, norm, e).accuracy for e in grid]
               for m in self.methods}
        rows = (ResultRow("clean_accuracy", clean),)
        table = Table(name="verified_accuracy", title=f"Verified accuracy ({norm}) per method and radius, "
                                                       f"{len(y)} examples (clean accuracy {clean:.2%})",
                      columns=("method", *(f"eps={e:.4g}" for e in grid)),
                      rows=tuple((m, *(round(a, 6) for a in acc[m])) for m in self.methods))
        figure = _bounds_figure(norm, grid, acc, clean, self.headline_eps[norm])
        best = self.headline_method
        summary = (f"{norm}: clean accuracy {clean:.2%} on {len(y)} examples; verified accuracy "
                   + "; ".join(f"{m}: " + ", ".join(f"{a:.1%}" for a in acc[m]) for m in self.methods)
                   + f" at eps = {', '.join(f'{e:.4g}' for e in grid)}.")
        if best is not None:
            gap = clean - acc[best][grid.index(self.headline_eps[norm])]
            summary += (f" At eps={self.headline_eps[norm]:.4g}, {gap:.1%} of the examples are classified "
                        f"correctly but not proven robust by {best}.")
        return ProbeResult(rows=rows, figures=(figure,), tables=(table,), summary=summary)

    def _clean_accuracy(self, model: Any, data: Dataset, x: torch.Tensor, y: torch.Tensor) -> float:
        def compute() -> float:
            logits = predict_logits(model, x, batch_size=EVAL_BATCH_SIZE, num_classes=data.num_classes)
            return float((logits.argmax(1) == y).double().mean())

        return self._cache.fetch(("clean",), model, data, compute)

    # ------------------------------------------------------------------ randomized smoothing
    def _smooth_outcome(self, model: Any, data: Dataset, x: torch.Tensor, sigma: float) -> _SmoothOutcome:
        def compute() -> _SmoothOutcome:
            start = time.perf_counter()
            cert = certify(model, x.to(_device_of(model, x)), sigma=sigma, n0=self.n0, n=self.n,
                           alpha=self.alpha, batch_size=self.batch_size,
                           generator=seeded_generator(self.seed, "smoothing", sigma), num_classes=data.num_classes)
            return _SmoothOutcome(cert, time.perf_counter() - start)

        return self._cache.fetch(("smoothing", sigma), model, data, compute)

    def _run_sigma(self, model: Any, data: Dataset, x: torch.Tensor, y: torch.Tensor,
                   sigma: float) -> ProbeResult:
        out = self._smooth_outcome(model, data, x, sigma)
        cert = out.certificate
        labels = y.to(cert.predictions.device)
        _, acc = certified_accuracy_curve(cert, labels, list(self.radii))
        acr = average_certified_radius(cert, labels)
        noisy = float((cert.counts.gather(1, labels[:, None])[:, 0].double() / cert.n).mean())
        clean = self._clean_accuracy(model, data, x, y)
        rows = [ResultRow("certified_accuracy", float(a), params={"radius": float(r)})
                for r, a in zip(self.radii, acc)]
        rows += [ResultRow("abstention_rate", cert.abstention_rate),
                 ResultRow("average_certified_radius", acr),
                 ResultRow("noisy_accuracy", noisy),
                 ResultRow("clean_accuracy", clean),
                 ResultRow("seconds", out.seconds, unit="s")]
        top = max_certifiable_radius(sigma, self.n, self.alpha)
        small = "small-n estimate, " if self.n < SMOOTHING_N else ""
        summary = (f"sigma={sigma:.4g} (n0={self.n0}, n={self.n}, alpha={self.alpha:g}, {len(y)} examples; "
                   f"{small}radii at most {top:.3g}): certified accuracy "
                   + ", ".join(f"{a:.1%} (r={r:.4g})" for r, a in zip(self.radii, acc))
                   + f"; abstains on {cert.abstention_rate:.1%}; average certified radius {acr:.3g}; "
                   f"base classifier accuracy {noisy:.1%} under the noise, {clean:.1%} clean; "
                   f"{out.seconds:.1f} s.")
        return ProbeResult(rows=tuple(rows), summary=summary)

    def _run_smoothing_curve(self, model: Any, data: Dataset, x: torch.Tensor, y: torch.Tensor) -> ProbeResult:
        certs = {s: self._smooth_outcome(model, data, x, s).certificate for s in self.sigmas}
        table_rows = []
        for s, cert in certs.items():
            labels = y.to(cert.predictions.device)
            _, acc = certified_accuracy_curve(cert, labels, list(self.radii))
            table_rows.append((float(s), *(round(float(a), 6) for a in acc), round(cert.abstention_rate, 6),
                               round(average_certified_radius(cert, labels), 6)))
        table = Table(name="certified_accuracy",
                      title=f"Randomized smoothing: certified accuracy per L2 radius (n0={self.n0}, n={self.n}, "
                            f"alpha={self.alpha:g}, {len(y)} examples)",
                      columns=("sigma", *(f"r={r:.4g}" for r in self.radii), "abstained", "ACR"),
                      rows=tuple(table_rows))
        figure = _smoothing_figure(certs, y, self.n, self.alpha)
        best = max(table_rows, key=lambda r: r[-1])
        summary = (f"Randomized smoothing over sigma = {', '.join(f'{s:.4g}' for s in self.sigmas)} "
                   f"(n={self.n}, alpha={self.alpha:g}, {len(y)} examples): the largest average certified "
                   f"radius is {best[-1]:.3g} at sigma={best[0]:.4g}.")
        return ProbeResult(figures=(figure,), tables=(table,), summary=summary)


# --------------------------------------------------------------------------- validation
def _check_positive_list(name: str, values: Any, *, allow_empty: bool, what: str = "values") -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or (not values and not allow_empty):
        fail(name, f"a {'' if allow_empty else 'non-empty '}list of {what} > 0", values, error=InvalidTypeError)
    out = tuple(sorted(check_number(name, v, low=0.0, low_inclusive=False) for v in values))
    if len(set(out)) != len(out):
        fail(name, f"distinct {what}", list(values))
    return out


def _check_methods(methods: Any) -> tuple[str, ...]:
    if isinstance(methods, (str, bytes)) or not isinstance(methods, Sequence):
        fail("methods", f"a list of names from {list(CERTIFIED_METHODS)}", methods, error=InvalidTypeError)
    out = tuple(check_choice("methods", m, CERTIFIED_METHODS) for m in methods)
    if len(set(out)) != len(out):
        fail("methods", "distinct method names", list(methods))
    return out


def _check_radii(radii: Any) -> tuple[float, ...]:
    if isinstance(radii, (str, bytes)) or not isinstance(radii, Sequence) or not radii:
        fail("radii", "a non-empty list of L2 radii >= 0", radii, error=InvalidTypeError)
    out = tuple(sorted(check_number("radii", r, low=0.0) for r in radii))
    if len(set(out)) != len(out):
        fail("radii", "distinct radii", list(radii))
    return out


# --------------------------------------------------------------------------- figures
_METHOD_STYLE = {"ibp": ("tab:orange", "v"), "crown-ibp": ("tab:green", "^"), "crown": ("tab:blue", "o")}


def _bounds_figure(norm: str, grid: Sequence[float], acc: Mapping[str, Sequence[float]], clean: float,
                   headline: float) -> Figure:
    from matplotlib.figure import Figure as MplFigure  # lazy, and never pyplot

    fig = MplFigure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for method, values in acc.items():
        color, marker = _METHOD_STYLE.get(method, ("tab:gray", "s"))
        ax.plot([0.0, *grid], [clean, *values], marker=marker, color=color, label=method)
    ax.axvline(headline, color="tab:red", linestyle=":", linewidth=1, label=f"headline eps={headline:.4g}")
    ax.set_xlabel(f"eps ({norm})")
    ax.set_ylabel("verified accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return Figure(name="verified_accuracy_curve",
                  title=f"Verified accuracy against {norm} radius per bound-propagation method "
                        f"(eps=0: clean accuracy {clean:.2%})",
                  svg=figure_to_svg(fig))


def _smoothing_figure(certs: Mapping[float, Any], labels: torch.Tensor, n: int, alpha: float) -> Figure:
    from matplotlib.figure import Figure as MplFigure  # lazy, and never pyplot

    fig = MplFigure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    right = 0.0
    for sigma, cert in certs.items():
        correct = (cert.predictions.cpu() == labels.cpu()).numpy()
        radius = np.sort(cert.radius.cpu().numpy()[correct])
        total, k = max(len(correct), 1), radius.size
        top = max_certifiable_radius(sigma, n, alpha)
        right = max(right, top)
        # The exact step curve: accuracy(r) = #{correct examples with radius >= r} / N.
        xs, ys = [0.0], [k / total]
        for i, r in enumerate(radius):
            xs += [float(r), float(r)]
            ys += [(k - i) / total, (k - i - 1) / total]
        xs.append(max(top, xs[-1]))
        ys.append(0.0 if k else ys[-1])
        ax.plot(xs, ys, label=f"sigma={sigma:.4g}")
    ax.set_xlim(0.0, right * 1.02 if right > 0 else 1.0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("L2 radius")
    ax.set_ylabel("certified accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return Figure(name="certified_accuracy_curve",
                  title=f"Randomized smoothing: certified accuracy against L2 radius per sigma "
                        f"(n={n}, alpha={alpha:g}; radii beyond sigma * Phi^-1(alpha^(1/n)) cannot be "
                        "certified with this n)",
                  svg=figure_to_svg(fig))
