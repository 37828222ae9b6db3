"""Robustness over a range of radii: accuracy–perturbation curves, AUAC, minimal-norm distributions.

A single robust accuracy at one ``eps`` hides how a model degrades; papers compare whole curves
(e.g. Wong, Schmidt & Kolter, "Wasserstein adversarial examples via projected Sinkhorn
iterations", ICML 2019, plot adversarial accuracy against the radius) and summarise them by the
area under the accuracy curve, AUAC (Bouniot, Audigier & Loesch, "Optimal transport as a defense
against adversarial attacks", ICPR 2020, arXiv:2102.03156 — the paper that introduces Sinkhorn
Adversarial Training, SAT).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_bool, check_choice, check_int, fail
from robustlab._constants import CURVE_NORM_QUANTILES
from robustlab.adversarial._core import check_attack_args, check_norm
from robustlab.adversarial.evaluate import SUITES, _batches, _logits, evaluate, resolve_batch_size
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError

__all__ = [
    "AccuracyCurve",
    "MinimalNorms",
    "accuracy_curve",
    "accuracy_from_norms",
    "auac",
    "minimal_norm_distribution",
]


# --------------------------------------------------------------------------- AUAC
def _check_grid(name: str, eps: Any) -> np.ndarray:
    if isinstance(eps, torch.Tensor):
        eps = eps.detach().cpu().tolist()
    if isinstance(eps, (str, bytes)) or not isinstance(eps, (Sequence, np.ndarray)) or any(
            isinstance(e, bool) for e in np.ravel(np.asarray(eps, dtype=object))):
        fail(name, "a sequence of real numbers", eps, error=InvalidTypeError)
    try:
        arr = np.asarray(eps, dtype=float)
    except (TypeError, ValueError):
        fail(name, "a sequence of real numbers", eps, error=InvalidTypeError)
    if arr.ndim != 1 or arr.size == 0:
        fail(name, "a non-empty 1-D sequence of radii", eps, error=ShapeError)
    if not np.all(np.isfinite(arr)) or arr.min() < 0:
        fail(name, "finite radii >= 0", f"{arr.tolist()}", describe_got=False)
    if arr.size > 1 and not np.all(np.diff(arr) > 0):
        fail(name, "strictly increasing", f"{arr.tolist()}", describe_got=False)
    return arr


def auac(eps: Sequence[float], accuracy: Sequence[float]) -> float:
    """Area under the accuracy–eps curve, normalised by the eps range (trapezoid rule).

    Parameters
    ----------
    eps : sequence of float, length G >= 2
        Strictly increasing radii.
    accuracy : sequence of float, length G
        Robust accuracy (fraction in ``[0, 1]``) at each radius.

    Returns
    -------
    float in [0, 1]
        :math:`\\frac{1}{\\epsilon_G - \\epsilon_1} \\sum_{i=1}^{G-1}
        \\frac{(a_i + a_{i+1})(\\epsilon_{i+1} - \\epsilon_i)}{2}`.

    Notes
    -----
    Bouniot et al. (ICPR 2020) propose AUAC, the area under the accuracy curve over a range of
    perturbation sizes, computed with the trapezoid rule. The raw area depends on the
    units and extent of the eps range; robustlab divides by ``eps[-1] - eps[0]`` so the number is
    the mean accuracy over the range (a model at constant accuracy ``a`` scores ``a``) and curves
    over the same range compare directly. Only curves over the SAME grid range are comparable;
    multiply by ``eps[-1] - eps[0]`` to get the paper's unnormalised area.

    Examples
    --------
    >>> auac([0.0, 0.1, 0.2], [1.0, 0.5, 0.0])
    0.5
    """
    e = _check_grid("eps", eps)
    a = _check_grid_values("accuracy", accuracy, e.size)
    if e.size < 2:
        fail("eps", "at least two radii (an area needs a range)", f"{e.tolist()}", describe_got=False)
    return _auac(e, a)


def _check_grid_values(name: str, values: Any, size: int) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        fail(name, "a sequence of real numbers", values, error=InvalidTypeError)
    if arr.ndim != 1 or arr.size != size:
        raise ShapeError(f"The '{name}' parameter must have {size} entries (one per eps). "
                         f"Got shape {arr.shape} instead.", expected=(size,), got=arr.shape)
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        fail(name, "accuracies in [0, 1]", f"{arr.tolist()}", describe_got=False)
    return arr


def _auac(e: np.ndarray, a: np.ndarray) -> float:
    if e.size < 2:
        return float("nan")
    area = float(np.sum((a[1:] + a[:-1]) * np.diff(e)) / 2.0)
    return area / float(e[-1] - e[0])


# --------------------------------------------------------------------------- accuracy curve
@dataclass(frozen=True, eq=False)
class AccuracyCurve:
    """Robust accuracy at each radius of a grid.

    Attributes
    ----------
    eps : tuple of float, length G
        The radii, increasing.
    accuracy : tuple of float, length G
        Robust accuracy at each radius (non-increasing by construction, see
        :func:`accuracy_curve`).
    auac : float
        :func:`auac` of the curve (``nan`` for a single radius).
    robust : bool Tensor (G, N)
        ``robust[i, j]``: example ``j`` survived every attack at ``eps[i]``. Rows are nested.
    broken_at : float Tensor (N,)
        Smallest grid radius at which the example was broken; ``0`` for examples misclassified
        without attack, ``inf`` for examples robust at every radius.
    clean_accuracy : float
    norm : str
    suite : str
    seconds : float
    num_examples : int
    """

    eps: tuple[float, ...]
    accuracy: tuple[float, ...]
    auac: float
    robust: torch.Tensor
    broken_at: torch.Tensor
    clean_accuracy: float
    norm: str
    suite: str
    seconds: float
    num_examples: int

    def to_rows(self) -> list[dict[str, Any]]:
        """``[{"metric", "value", "params"}]`` rows: one accuracy per radius, then the AUAC."""
        base = {"suite": self.suite, "norm": self.norm}
        rows = [{"metric": "robust_accuracy", "value": a, "params": dict(base, eps=e)}
                for e, a in zip(self.eps, self.accuracy)]
        rows.append({"metric": "auac", "value": self.auac,
                     "params": dict(base, eps_min=self.eps[0], eps_max=self.eps[-1])})
        return rows


def accuracy_curve(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps_grid: Sequence[float],
    norm: str = "linf",
    suite: str = "fast",
    generator: torch.Generator,
    batch_size: int | None = None,
    progress: bool = False,
) -> AccuracyCurve:
    """Robust accuracy over a grid of radii, with :func:`evaluate` at each radius.

    Parameters
    ----------
    model, inputs, labels
        As in :func:`~robustlab.adversarial.evaluate`.
    eps_grid : sequence of float
        Strictly increasing radii ``>= 0`` (``0`` gives the clean accuracy without attacking).
    norm : {"linf", "l2", "l1"}, default "linf"
    suite : str, default "fast"
        Evaluation suite run at each radius (APGD-CE + APGD-T by default; "standard" for numbers
        to publish).
    generator : torch.Generator
        Required; every radius draws its seeds from it in turn.
    batch_size : int, optional
        As in :func:`~robustlab.adversarial.evaluate` (250 on an accelerator, 128 on CPU).
    progress : bool, default False

    Returns
    -------
    AccuracyCurve

    Notes
    -----
    Monotonicity is exploited: an adversarial input found at ``eps_i`` lies in every larger ball,
    so an example broken at ``eps_i`` is broken at every ``eps_j > eps_i``. Each radius therefore
    only attacks the examples that survived the previous one; the curve is non-increasing by
    construction and costs about as much as the evaluations of its last few radii.
    """
    inputs, labels, _ = check_attack_args(inputs, labels, generator=generator, needs_generator=True)
    grid = _check_grid("eps_grid", eps_grid)
    norm = check_norm(norm)
    check_choice("suite", suite, SUITES)
    requested, batch_size = batch_size, resolve_batch_size(batch_size, inputs.device)
    progress = check_bool("progress", progress)
    if inputs.shape[0] == 0:
        fail("inputs", "a batch of at least one example", inputs)
    return _accuracy_curve_impl(model, inputs, labels, grid, norm, suite, generator, batch_size, progress,
                                requested)


def _accuracy_curve_impl(model: Any, inputs: torch.Tensor, labels: torch.Tensor, grid: np.ndarray,
                         norm: str, suite: str, generator: torch.Generator, batch_size: int,
                         progress: bool, requested: int | None = None) -> AccuracyCurve:
    """``batch_size`` for this function's own forward passes; ``requested`` (``None``: evaluate's
    default chunking) for the evaluations."""
    start = time.perf_counter()
    n = inputs.shape[0]
    clean_correct = _logits(model, inputs, batch_size).argmax(dim=1) == labels
    alive = clean_correct.clone()
    broken_at = torch.where(clean_correct.cpu(), torch.full((n,), float("inf"), dtype=torch.float64),
                            torch.zeros(n, dtype=torch.float64))
    rows = []
    for e in grid.tolist():
        idx = alive.nonzero().flatten()
        if idx.numel() and e > 0:
            res = evaluate(model, inputs[idx], labels[idx], eps=e, norm=norm, suite=suite,
                           batch_size=requested, generator=generator, progress=progress)
            newly = idx[~res.robust]
            alive[newly] = False
            broken_at[newly.cpu()] = e
        rows.append(alive.clone())
    robust = torch.stack(rows)
    acc = tuple(float(r.sum()) / n for r in robust)
    return AccuracyCurve(
        eps=tuple(float(e) for e in grid), accuracy=acc, auac=_auac(grid, np.asarray(acc)),
        robust=robust, broken_at=broken_at, clean_accuracy=float(clean_correct.sum()) / n,
        norm=norm, suite=suite, seconds=time.perf_counter() - start, num_examples=n,
    )


# --------------------------------------------------------------------------- minimal norms
@dataclass(frozen=True, eq=False)
class MinimalNorms:
    """Smallest adversarial perturbation a minimum-norm attack found, per example.

    Attributes
    ----------
    norms : float Tensor (N,)
        ``0`` where the model is wrong without attack, the norm of the attack's misclassified
        input where it found one, ``inf`` where it found none. An upper bound on each example's
        true minimal adversarial norm.
    quantiles : dict of float -> float
        Empirical quantiles of ``norms`` over all examples (``inf`` when more than that fraction
        is unbroken); the inverted-CDF definition, so ``accuracy_from_norms(norms, [q_p])`` is at
        most ``1 - p``.
    norm : str
    attack : str
    clean_accuracy : float
    seconds : float
    """

    norms: torch.Tensor
    quantiles: dict[float, float]
    norm: str
    attack: str
    clean_accuracy: float
    seconds: float

    @property
    def median(self) -> float:
        return _quantiles(self.norms, (0.5,))[0.5]


_MIN_NORM_ATTACKS = ("fab", "fmn")


def minimal_norm_distribution(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str = "l2",
    attack: str = "fmn",
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    num_steps: int | None = None,
    quantiles: Sequence[float] = CURVE_NORM_QUANTILES,
) -> MinimalNorms:
    """Per-example minimal adversarial norms found by FMN or FAB, with their quantiles.

    Parameters
    ----------
    model, inputs, labels
        As in :func:`~robustlab.adversarial.evaluate`.
    norm : {"linf", "l2", "l1"}, default "l2"
    attack : {"fmn", "fab"}, default "fmn"
        Fast Minimum-Norm (Pintor et al., NeurIPS 2021) or FAB (Croce & Hein, ICML 2020), run
        without an eps budget.
    generator : torch.Generator, optional
        Passed to the attack (FAB's restarts draw from it; FMN ignores it unless it says
        otherwise). Required when the attack is randomised.
    batch_size : int, optional
        As in :func:`~robustlab.adversarial.evaluate` (250 on an accelerator, 128 on CPU).
    num_steps : int, optional
        Iterations of the attack; its own default (100 for both) when ``None``.
    quantiles : sequence of float in [0, 1]

    Returns
    -------
    MinimalNorms

    Notes
    -----
    Every reported norm is re-checked: the model must misclassify the returned input (one
    forward pass), otherwise the example counts as unbroken (``inf``). The norms are upper
    bounds on the true minimal norms, so :func:`accuracy_from_norms` gives an upper bound on
    robust accuracy, as any attack does.
    """
    inputs, labels, _ = check_attack_args(inputs, labels, generator=generator)
    norm = check_norm(norm)
    check_choice("attack", attack, _MIN_NORM_ATTACKS)
    batch_size = resolve_batch_size(batch_size, inputs.device)
    if num_steps is not None:
        num_steps = check_int("num_steps", num_steps, low=1)
    qs = _check_quantiles(quantiles)
    if inputs.shape[0] == 0:
        fail("inputs", "a batch of at least one example", inputs)
    start = time.perf_counter()
    n = inputs.shape[0]
    clean_correct = _logits(model, inputs, batch_size).argmax(dim=1) == labels
    norms = torch.where(clean_correct.cpu(), torch.full((n,), float("inf"), dtype=inputs.dtype),
                        torch.zeros(n, dtype=inputs.dtype))
    idx_all = clean_correct.nonzero().flatten()
    fn = _min_norm_function(attack)
    settings: dict[str, Any] = {"norm": norm}
    if num_steps is not None:
        settings["num_steps"] = num_steps
    for s in _batches(idx_all.numel(), batch_size):
        idx = idx_all[s]
        x, y = inputs[idx], labels[idx]
        res = fn(model, x, y, generator=generator, **settings)
        adv = res.adv_inputs.detach()
        with torch.no_grad():
            broken = (_logits(model, adv, batch_size).argmax(dim=1) != y).cpu()
        found = res.norms.detach().to(device="cpu", dtype=inputs.dtype)
        norms[idx.cpu()] = torch.where(broken, found, torch.full_like(found, float("inf")))
    return MinimalNorms(norms=norms, quantiles=_quantiles(norms, qs), norm=norm, attack=attack,
                        clean_accuracy=float(clean_correct.float().mean()),
                        seconds=time.perf_counter() - start)


def _min_norm_function(attack: str) -> Any:
    if attack == "fab":
        from robustlab.adversarial.fab import fab
        return fab
    from robustlab.adversarial.minimum_norm import fmn
    return fmn


def _check_quantiles(quantiles: Any) -> tuple[float, ...]:
    try:
        qs = tuple(float(q) for q in quantiles)
    except (TypeError, ValueError):
        fail("quantiles", "a sequence of numbers in [0, 1]", quantiles, error=InvalidTypeError)
    if not qs or any(not (0.0 <= q <= 1.0) for q in qs):
        fail("quantiles", "a non-empty sequence of numbers in [0, 1]", quantiles)
    return qs


def _quantiles(norms: torch.Tensor, qs: Sequence[float]) -> dict[float, float]:
    """Inverted-CDF empirical quantiles (``inf`` entries allowed)."""
    v = np.sort(norms.detach().cpu().double().numpy())
    if v.size == 0:
        return {q: float("nan") for q in qs}
    out = {}
    for q in qs:
        k = max(int(np.ceil(q * v.size)) - 1, 0)
        out[q] = float(v[k])
    return out


def accuracy_from_norms(norms: torch.Tensor | Sequence[float], eps_grid: Sequence[float]) -> tuple[float, ...]:
    """Robust accuracy at each radius implied by per-example minimal norms.

    An example is robust at ``eps`` iff its minimal adversarial norm exceeds ``eps`` (the ball is
    closed: a perturbation of norm exactly ``eps`` is allowed). ``0`` marks examples wrong without
    attack, ``inf`` examples never broken.

    Examples
    --------
    >>> accuracy_from_norms([0.0, 0.1, 0.3, float("inf")], [0.0, 0.1, 0.2, 1.0])
    (0.75, 0.5, 0.5, 0.25)
    """
    if isinstance(norms, torch.Tensor):
        v = norms.detach().cpu().numpy()
        if not np.issubdtype(v.dtype, np.floating):
            v = v.astype(float)
    else:
        try:
            v = np.asarray(norms, dtype=float)
        except (TypeError, ValueError):
            fail("norms", "a tensor or sequence of norms", norms, error=InvalidTypeError)
    if v.ndim != 1 or v.size == 0:
        fail("norms", "a non-empty 1-D tensor of per-example norms", norms, error=ShapeError)
    if np.isnan(v).any() or (v < 0).any():
        raise InvalidParameterError("The 'norms' parameter must hold norms >= 0 (inf allowed). "
                                    f"Got minimum {np.nanmin(v) if not np.isnan(v).all() else 'nan'} "
                                    "or NaN instead.")
    grid = _check_grid("eps_grid", eps_grid)
    # compare in the norms' precision: a float32 norm of 0.1 must count as <= eps=0.1
    return tuple(float((v > np.asarray(e, dtype=v.dtype)).mean()) for e in grid.tolist())
