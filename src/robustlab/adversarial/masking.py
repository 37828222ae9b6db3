"""Sanity checks that flag an unreliable robustness evaluation (gradient masking and friends).

A high robust accuracy is only credible if the attacks could have found adversarial examples. The
checks below are the symptoms listed by Athalye, Carlini & Wagner, "Obfuscated gradients give a
false sense of security" (ICML 2018, Sec. 3 and 3.1 "Identifying obfuscated & masked gradients")
and by Carlini et al., "On evaluating adversarial robustness" (arXiv:1902.06705, 2019, Sec. 5
checklist), plus the warnings fra31/AutoAttack prints (``autoattack/checks.py``). Each check can
fail; a warning is a reason to look closer (adaptive attacks, EoT, BPDA), not a proof of masking.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from robustlab._checks import check_choice, check_int, fail
from robustlab._constants import (
    ADV_EVAL_RANDOMIZED_ATOL,
    ATTACK_PROBABILITY_ATOL,
    AUTOATTACK_NUM_STEPS,
    AUTOATTACK_RHO,
    AUTOATTACK_SQUARE_P_INIT,
    MASKING_BLACKBOX_EXCESS,
    MASKING_BLACKBOX_MIN_EXAMPLES,
    MASKING_MONOTONE_TOL,
    MASKING_RANDOM_PASSES,
    MASKING_RESTART_DISAGREEMENT,
    MASKING_SQUARE_QUERIES,
    MASKING_UNBOUNDED_MAX_ACC,
    MASKING_ZERO_GRAD_FRACTION,
)
from robustlab.adversarial._core import (
    ce_loss,
    check_attack_args,
    check_eps,
    check_norm,
    flat,
    input_gradient,
    model_view,
)
from robustlab.adversarial.evaluate import (
    _APGD,
    _SQUARE,
    RobustnessResult,
    _batches,
    _logits,
    _square_offers,
    _SuiteAttack,
    evaluate,
    resolve_batch_size,
)
from robustlab.errors import InvalidTypeError

__all__ = ["MaskingCheck", "MaskingReport", "check_gradient_masking"]

#: The checks, in the order they run and are reported.
MASKING_CHECKS: tuple[str, ...] = (
    "probability_outputs", "randomness", "zero_gradients", "monotonicity", "unbounded",
    "black_box", "restarts",
)


@dataclass(frozen=True)
class MaskingCheck:
    """One check: ``status`` is ``"pass"`` or ``"warn"``; ``value`` the number it judged."""

    name: str
    status: str
    detail: str
    value: float = float("nan")


@dataclass(frozen=True)
class MaskingReport:
    """All checks of :func:`check_gradient_masking`.

    Attributes
    ----------
    checks : tuple of MaskingCheck
    eps : float
    norm : str
    seconds : float
    """

    checks: tuple[MaskingCheck, ...]
    eps: float
    norm: str
    seconds: float

    @property
    def passed(self) -> bool:
        """True when no check warns."""
        return all(c.status == "pass" for c in self.checks)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Names of the checks that warn."""
        return tuple(c.name for c in self.checks if c.status == "warn")

    def __getitem__(self, name: str) -> MaskingCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_rows(self) -> list[dict[str, Any]]:
        """``[{"metric", "value", "params"}]``: one row per check (value; 1.0 = warn in ``warned``)."""
        return [{"metric": f"masking_{c.name}", "value": c.value,
                 "params": {"eps": self.eps, "norm": self.norm, "status": c.status}}
                for c in self.checks]


def _check(name: str, warn: bool, detail: str, value: float) -> MaskingCheck:
    return MaskingCheck(name=name, status="warn" if warn else "pass", detail=detail, value=float(value))


def check_gradient_masking(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    generator: torch.Generator,
    eps_grid: Sequence[float] | None = None,
    large_eps: float | None = None,
    num_steps: int = AUTOATTACK_NUM_STEPS,
    square_queries: int = MASKING_SQUARE_QUERIES,
    batch_size: int | None = None,
    checks: Sequence[str] | None = None,
) -> MaskingReport:
    """Run the gradient-masking checklist on a model at radius ``eps``.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits; differentiable (the zero-gradient check backpropagates to the inputs).
    inputs : float Tensor (N, ...) in [0, 1]
    labels : int64 Tensor (N,)
    eps : float > 0
    norm : {"linf", "l2", "l1"}, default "linf"
    generator : torch.Generator
        Required; APGD runs and Square draw from it.
    eps_grid : sequence of float, optional
        Radii of the monotonicity check; default ``(eps/4, eps/2, eps, 2 eps)``, then
        ``large_eps`` is appended.
    large_eps : float, optional
        Radius of the unbounded check; default the diameter of the unit box in ``norm``
        (1 for linf, ``sqrt(D)`` for l2, ``D`` for l1, D = input dimension), at which every point
        of the box is reachable.
    num_steps : int, default 100
        APGD iterations (AutoAttack's 100).
    square_queries : int, default 5000
        Square's query budget (AutoAttack's 5000).
    batch_size : int, optional
        As in :func:`~robustlab.adversarial.evaluate` (250 on an accelerator, 128 on CPU).
    checks : sequence of str, optional
        Run only these checks (names below); all of them by default. The three forward-pass
        checks cost nothing; the attack-based ones dominate the run time.

    Returns
    -------
    MaskingReport
        Checks, in order:

        ``probability_outputs``
            Outputs non-negative with rows summing to 1: the model returns probabilities, whose
            gradients saturate (fra31 ``check_range_output``). value: largest ``|row sum - 1|``.
        ``randomness``
            Five forward passes of the same inputs differ: a randomised model needs EoT
            (``suite="rand"``; Athalye et al. 2018, Sec. 4.2; fra31 ``check_randomized``).
            value: largest distance between L2-normalised output rows.
        ``zero_gradients``
            Fraction of correctly classified examples whose cross-entropy input gradient is zero
            or not finite: shattered/vanishing gradients (Athalye et al. 2018, Sec. 3.1; fra31
            ``check_zero_gradients``).
        ``monotonicity``
            Robust accuracy under APGD-CE, run independently at each radius of the grid, must not
            rise with eps (Carlini et al. 2019, Sec. 5.2). value: the largest rise.
        ``unbounded``
            Robust accuracy at ``large_eps`` must be about 0 (Athalye et al. 2018, Sec. 3.1
            "unbounded attacks do not reach 100% success"). value: that accuracy.
        ``black_box``
            Fraction of all examples that Square (black-box) breaks but neither of two APGD-CE
            runs does (Athalye et al. 2018, Sec. 3.1 "black-box attacks are better than
            white-box"; fra31 ``check_square_sr``). Left out for norms robustlab's Square does
            not offer (l1).
        ``restarts``
            Fraction of the attacked examples on which two APGD-CE runs with different seeds
            disagree: a noisy loss surface or randomness (Carlini et al. 2019, Sec. 5).

        Thresholds: ``MASKING_*`` in ``robustlab._constants`` (each with its reason).

    Notes
    -----
    Cost: about ``len(eps_grid) + 2`` APGD-CE runs and one Square run on the clean-correct
    examples. Pass fewer examples (a few hundred suffice) for a quick check.

    Examples
    --------
    >>> report = check_gradient_masking(model, x[:256], y[:256], eps=8 / 255,
    ...                                 generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> report.passed, report.warnings  # doctest: +SKIP
    """
    inputs, labels, _ = check_attack_args(inputs, labels, generator=generator, needs_generator=True)
    if inputs.shape[0] == 0:
        fail("inputs", "a batch of at least one example", inputs)
    eps = check_eps(eps, allow_zero=False)
    norm = check_norm(norm)
    num_steps = check_int("num_steps", num_steps, low=1)
    square_queries = check_int("square_queries", square_queries, low=1)
    requested, batch_size = batch_size, resolve_batch_size(batch_size, inputs.device)
    if checks is None:
        wanted = MASKING_CHECKS
    else:
        if isinstance(checks, str) or not isinstance(checks, Sequence) or not checks:
            fail("checks", f"a non-empty list of check names from {MASKING_CHECKS}", checks,
                 error=InvalidTypeError)
        wanted = tuple(check_choice("checks", c, MASKING_CHECKS) for c in checks)
    d = flat(inputs).shape[1]
    if large_eps is None:
        large_eps = {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[norm]
    large_eps = check_eps(large_eps, name="large_eps", allow_zero=False)
    if eps_grid is None:
        grid = [eps / 4, eps / 2, eps, 2 * eps]
    else:
        from robustlab.adversarial.curves import _check_grid

        grid = _check_grid("eps_grid", eps_grid).tolist()
        if eps not in grid:
            fail("eps_grid", f"a grid containing eps={eps:g} (the restart and black-box checks reuse "
                 "that run)", grid)
    grid = sorted({e for e in grid if 0 < e < large_eps}) + [large_eps]
    return _masking_impl(model, inputs, labels, eps, norm, generator, grid, num_steps, square_queries,
                         batch_size, wanted, requested)


def _masking_impl(model: Any, inputs: torch.Tensor, labels: torch.Tensor, eps: float, norm: str,
                  generator: torch.Generator, grid: list[float], num_steps: int, square_queries: int,
                  batch_size: int, wanted: tuple[str, ...], requested: int | None = None) -> MaskingReport:
    # batch_size: this function's own forward passes; requested (None: evaluate's default chunking)
    # for the evaluations
    start = time.perf_counter()
    n = inputs.shape[0]
    out: dict[str, MaskingCheck] = {}
    with warnings.catch_warnings():
        # the report states what the attacks' and evaluate's own warnings would say
        warnings.simplefilter("ignore")
        logits = _logits(model, inputs, batch_size).float()
        clean_correct = logits.argmax(dim=1) == labels
        if "probability_outputs" in wanted:
            out["probability_outputs"] = _probability_check(logits)
        if "randomness" in wanted:
            out["randomness"] = _randomness_check(model, inputs, logits, batch_size)
        if "zero_gradients" in wanted:
            out["zero_gradients"] = _zero_gradient_check(model, inputs, labels, clean_correct, batch_size)

        def apgd_run(e: float) -> RobustnessResult:
            attack = _SuiteAttack(_APGD, "apgd", eps=e, norm=norm, loss="ce", num_steps=num_steps,
                                  restarts=1, rho=AUTOATTACK_RHO, eot_iter=1)
            return evaluate(model, inputs, labels, eps=e, norm=norm, batch_size=requested,
                            generator=generator, attacks=[("apgd-ce", attack)])

        runs: dict[float, RobustnessResult] = {}
        if "monotonicity" in wanted:
            runs = {e: apgd_run(e) for e in grid}
            out["monotonicity"] = _monotonicity_check(grid, [runs[e].robust_accuracy for e in grid], n)
        if "unbounded" in wanted:
            large = grid[-1]
            acc_large = (runs[large] if large in runs else apgd_run(large)).robust_accuracy
            out["unbounded"] = _check(
                "unbounded", acc_large > MASKING_UNBOUNDED_MAX_ACC,
                f"APGD-CE leaves {acc_large:.1%} robust accuracy at {norm} eps={large:g}, where every "
                f"input in the box is reachable (expected <= {MASKING_UNBOUNDED_MAX_ACC:.0%})", acc_large)
        if "black_box" in wanted or "restarts" in wanted:
            first = runs[eps] if eps in runs else apgd_run(eps)
            second = apgd_run(eps)
            if "black_box" in wanted and _square_offers(norm):
                square = _SuiteAttack(_SQUARE, "square", eps=eps, norm=norm, max_queries=square_queries,
                                      p_init=AUTOATTACK_SQUARE_P_INIT, restarts=1)
                sq = evaluate(model, inputs, labels, eps=eps, norm=norm, batch_size=requested,
                              generator=generator, attacks=[("square", square)])
                excess = int((first.robust & second.robust & ~sq.robust).sum())
                out["black_box"] = _check(
                    "black_box", excess / n > MASKING_BLACKBOX_EXCESS and excess >= MASKING_BLACKBOX_MIN_EXAMPLES,
                    f"Square breaks {excess} of {n} example(s) that two APGD-CE runs do not "
                    f"(warns above {MASKING_BLACKBOX_EXCESS:.0%} of the examples and at least "
                    f"{MASKING_BLACKBOX_MIN_EXAMPLES})", excess / n)
            if "restarts" in wanted:
                attacked = int(clean_correct.sum())
                disagree = int((first.robust != second.robust).sum())
                frac = disagree / attacked if attacked else 0.0
                out["restarts"] = _check(
                    "restarts", frac > MASKING_RESTART_DISAGREEMENT,
                    f"two APGD-CE runs with different seeds disagree on {disagree} of {attacked} "
                    f"attacked example(s) at eps={eps:g} (threshold {MASKING_RESTART_DISAGREEMENT:.0%})",
                    frac)
    checks = tuple(out[name] for name in MASKING_CHECKS if name in out)
    return MaskingReport(checks=checks, eps=eps, norm=norm, seconds=time.perf_counter() - start)


def _probability_check(logits: torch.Tensor) -> MaskingCheck:
    dev = float((logits.sum(dim=1) - 1).abs().max())
    probs = bool((logits >= 0).all()) and dev <= ATTACK_PROBABILITY_ATOL
    detail = ("outputs are non-negative and rows sum to 1: the model returns probabilities; "
              "attack its logits instead" if probs else "outputs are not probabilities")
    return _check("probability_outputs", probs, detail, dev)


def _unit_rows(z: torch.Tensor) -> torch.Tensor:
    return z / (z.norm(dim=1, keepdim=True) + 1e-10)


def _randomness_check(model: Any, inputs: torch.Tensor, logits: torch.Tensor,
                      batch_size: int) -> MaskingCheck:
    first = _unit_rows(logits)
    worst = 0.0
    for _ in range(MASKING_RANDOM_PASSES - 1):
        other = _unit_rows(_logits(model, inputs, batch_size).float())
        worst = max(worst, float((first - other).norm(dim=1).max()))
    rnd = worst > ADV_EVAL_RANDOMIZED_ATOL
    detail = (f"{MASKING_RANDOM_PASSES} forward passes of the same inputs differ (max normalised "
              f"distance {worst:.3g}): randomised model, use suite='rand' (EoT)" if rnd else
              f"{MASKING_RANDOM_PASSES} forward passes agree")
    return _check("randomness", rnd, detail, worst)


def _zero_gradient_check(model: Any, inputs: torch.Tensor, labels: torch.Tensor,
                         clean_correct: torch.Tensor, batch_size: int) -> MaskingCheck:
    idx_all = clean_correct.nonzero().flatten()
    bad = 0
    with model_view(model, inputs) as view:
        for s in _batches(idx_all.numel(), batch_size):
            idx = idx_all[s]
            y = labels[idx]
            grad, _, _ = input_gradient(view, inputs[idx], lambda z, y=y: ce_loss(z, y))
            g = flat(grad)
            dead = (g == 0).all(dim=1) | ~torch.isfinite(g).all(dim=1)
            bad += int(dead.sum())
    total = int(idx_all.numel())
    frac = bad / total if total else 0.0
    warn = frac > MASKING_ZERO_GRAD_FRACTION
    detail = (f"{bad} of {total} correctly classified example(s) have a zero or non-finite "
              "cross-entropy input gradient" + ("; gradient-based attacks cannot move them "
                                                "(shattered or vanishing gradients)" if warn else ""))
    return _check("zero_gradients", warn, detail, frac)


def _monotonicity_check(grid: list[float], accs: list[float], n: int) -> MaskingCheck:
    rises = [accs[i + 1] - accs[i] for i in range(len(accs) - 1)]
    worst = max(rises, default=0.0)
    tol = max(MASKING_MONOTONE_TOL, 1.0 / n)
    curve = ", ".join(f"{e:g}: {a:.1%}" for e, a in zip(grid, accs))
    warn = worst > tol + 1e-12
    detail = (f"APGD-CE robust accuracy by eps ({curve})"
              + (f" rises by {worst:.1%} with eps (tolerance {tol:.1%})" if warn else " does not rise"))
    return _check("monotonicity", warn, detail, max(worst, 0.0))
