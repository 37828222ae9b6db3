"""Auto-PGD: step-size-free PGD with momentum (APGD-CE, APGD-DLR, APGD-T), Linf, L2 and L1.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML 2020), Alg. 1 and Sec. 3; the L1 version follows Croce & Hein,
"Mind the box: l1-APGD for sparse adversarial attacks on image classifiers" (ICML 2021), Sec. 3.
Schedules and edge cases were read from the reference implementation, fra31/auto-attack
``autoattack/autopgd_base.py`` (cited below as ``autopgd_base.py:LINE``); no code was copied.

Threat model: ``||x_adv - x||_p <= eps`` and ``0 <= x_adv <= 1``. Inputs ``(N, ...)`` in ``[0, 1]``;
the model returns logits ``(N, K)``.

Speed: one forward and one backward pass per iteration (``eot_iter`` of each for randomised models),
success is read from the logits of that pass, and an example leaves the batch as soon as it is
broken, so later iterations, restarts and target classes only run on the still-robust examples.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import torch

from robustlab._checks import check_bool, check_choice, check_int, check_number, fail
from robustlab._constants import (
    APGD_CHECKPOINT_DECAY,
    APGD_FIRST_CHECKPOINT,
    APGD_L1_CHECKPOINT,
    APGD_L1_INIT_SPARSITY,
    APGD_L1_MIN_STEP_RATIO,
    APGD_L1_SPARSITY_DIVISOR,
    APGD_L1_SPARSITY_DROP,
    APGD_L1_STEP_DIVISOR,
    APGD_L1_STEP_FACTOR,
    APGD_LARGEREPS_FRACTION,
    APGD_MIN_CHECKPOINT,
    APGD_MOMENTUM,
    APGD_STEP_FACTOR,
)
from robustlab.adversarial._core import (
    ATTACKS,
    NORMS,
    Attack,
    AttackResult,
    ModelView,
    check_attack_args,
    check_eps,
    check_norm,
    check_target_ranks,
    finalize,
    flat,
    input_gradient,
    model_view,
    normalize_direction,
    project,
    rand,
    randn,
)
from robustlab.adversarial.gradient import (
    Objective,
    attack_objective,
    is_success,
    l1_sparse_direction,
    project_l1_box,
)

__all__ = ["APGDCE", "APGDDLR", "APGDT", "APGD_LOSSES", "apgd", "apgd_targeted", "checkpoints",
           "largereps_schedule"]

#: Losses APGD offers (CE and DLR, as in the paper).
APGD_LOSSES: tuple[str, ...] = ("ce", "dlr")


def checkpoints(num_steps: int, norm: str = "linf") -> tuple[int, ...]:
    """Iterations (0-based) after which APGD checks whether to halve the step.

    Linf/L2: ``w_j = ceil(p_j * N_iter)`` with ``p_0 = 0, p_1 = 0.22`` and
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (paper Sec. 3.2), in the integer form of
    ``autopgd_base.py:153-155`` (first window ``int(0.22 N)``, each next one ``int(0.03 N)`` shorter,
    never below ``int(0.06 N)``, all at least 1). L1: every ``int(0.04 N)`` iterations
    (``autopgd_base.py:301``). For ``N = 100`` (Linf/L2): 21, 40, 56, 69, 79, 86, 92, 98.
    """
    out = []
    if norm == "l1":
        k = max(int(APGD_L1_CHECKPOINT * num_steps), 1)
        return tuple(range(k - 1, num_steps, k))
    k = max(int(APGD_FIRST_CHECKPOINT * num_steps), 1)
    k_min = max(int(APGD_MIN_CHECKPOINT * num_steps), 1)
    decay = max(int(APGD_CHECKPOINT_DECAY * num_steps), 1)
    i = k - 1
    while i < num_steps:
        out.append(i)
        k = max(k - decay, k_min)
        i += k
    return tuple(out)


def _windows(num_steps: int, norm: str) -> dict[int, int]:
    """checkpoint iteration -> length of the window that ends there."""
    marks = checkpoints(num_steps, norm)
    return {m: m - p for m, p in zip(marks, (-1,) + marks[:-1])}


# --------------------------------------------------------------------------- one run
@dataclass
class _State:
    """Per-example state of the still-unbroken examples of one APGD run (rows stay aligned)."""

    idx: torch.Tensor        # positions in the attacked batch
    x0: torch.Tensor         # clean inputs
    y0: torch.Tensor         # labels
    t_loss: torch.Tensor | None     # targets the loss uses
    t_success: torch.Tensor | None  # targets success is judged by (None: misclassification)
    x_adv: torch.Tensor
    x_old: torch.Tensor
    grad: torch.Tensor
    x_best: torch.Tensor
    grad_best: torch.Tensor
    loss_best: torch.Tensor
    loss_prev: torch.Tensor
    n_increase: torch.Tensor
    loss_best_last_check: torch.Tensor
    reduced_last_check: torch.Tensor
    step: torch.Tensor       # (n,) step size
    sparsity: torch.Tensor   # (n,) L1 only: fraction of coordinates a step moves
    l0_old: torch.Tensor     # (n,) L1 only
    lo: torch.Tensor         # Linf only: the ball-and-box interval [lo, hi] of each coordinate
    hi: torch.Tensor

    def keep(self, mask: torch.Tensor) -> None:
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value[mask])


def _bc(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def _initial_point(x0: torch.Tensor, norm: str, eps: float, generator: torch.Generator) -> torch.Tensor:
    """Random start (autopgd_base.py:206-218): Linf ``x + eps * t / ||t||_inf`` with ``t ~ U[-1, 1]``
    (a corner-heavy point with ``||delta||_inf = eps``); L2 ``x + eps * t / ||t||_2`` with Gaussian
    ``t`` (on the sphere); L1 a Gaussian point projected onto the L1 ball within the box."""
    tiny = 1e-12
    if norm == "linf":
        t = 2 * rand(tuple(x0.shape), generator, x0) - 1
        t = t / _bc(flat(t).abs().amax(dim=1) + tiny, t)
        return (x0 + eps * t).clamp_(0.0, 1.0)
    t = randn(tuple(x0.shape), generator, x0)
    if norm == "l2":
        t = t / _bc(flat(t).norm(dim=1) + tiny, t)
        return (x0 + eps * t).clamp_(0.0, 1.0)
    return (x0 + project_l1_box(t, x0, eps)).clamp_(0.0, 1.0)


def _l1_k(sparsity: torch.Tensor, d: int) -> torch.Tensor:
    """Coordinates moved for a sparsity fraction (autopgd_base.py:348-350: the coordinates at or above
    the ``(1 - sparsity)`` quantile of ``|grad|``)."""
    lo = ((1.0 - sparsity) * d).clamp(0, d - 1).floor().long()
    return (d - lo).clamp_min(1)


def _ascent(s: _State, norm: str, eps: float, momentum: float) -> torch.Tensor:
    """One APGD step from ``s.x_adv`` (paper Eq. 2; autopgd_base.py:322-359)."""
    x0, x = s.x0, s.x_adv
    eta = _bc(s.step, x)
    if norm == "l1":  # L1: no momentum (autopgd_base.py:346-357)
        d = l1_sparse_direction(s.grad, x, _l1_k(s.sparsity, flat(x).shape[1]))
        return (x0 + project_l1_box(x + eta * d - x0, x0, eps)).clamp_(0.0, 1.0)
    if norm == "linf":  # ball and box are both intervals per coordinate: one clamp projects
        z = torch.addcmul(x, eta, s.grad.sign()).clamp_(min=s.lo, max=s.hi)
        if momentum == 1.0:
            return z
        return _momentum(z, x, s.x_old, momentum).clamp_(min=s.lo, max=s.hi)
    z = (x0 + project(x + eta * normalize_direction(s.grad, norm) - x0, norm, eps)).clamp_(0.0, 1.0)
    if momentum == 1.0:
        return z
    return (x0 + project(_momentum(z, x, s.x_old, momentum) - x0, norm, eps)).clamp_(0.0, 1.0)


def _momentum(z: torch.Tensor, x: torch.Tensor, x_old: torch.Tensor, a: float) -> torch.Tensor:
    """``x + a (z - x) + (1 - a)(x - x_old)`` (paper Eq. 2) as ``a z + 2(1 - a) x - (1 - a) x_old``."""
    return (z * a).add_(x, alpha=2 * (1 - a)).sub_(x_old, alpha=1 - a)


def _apgd_run(
    view: ModelView, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, *,
    t_loss: torch.Tensor | None, t_success: torch.Tensor | None, eps: float, norm: str,
    num_steps: int, rho: float, objective: Objective, eot_iter: int, generator: torch.Generator,
    adv: torch.Tensor, broken: torch.Tensor, x_init: torch.Tensor | None = None, record: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run on the examples ``idx``, from ``x_init`` (rows of ``idx``) or a random start.

    With ``record``, examples broken at some iterate are written into ``adv``/``broken`` (their
    first breaking iterate) and leave the run. Returns ``(idx, x_best, loss_best)`` of the
    examples still in the run at its end.
    """
    x0, y0 = x[idx], y[idx]
    tl = t_loss[idx] if t_loss is not None else None
    ts = t_success[idx] if t_success is not None else None
    x_adv = _initial_point(x0, norm, eps, generator) if x_init is None else x_init.clamp(0.0, 1.0)
    n, d = x0.shape[0], flat(x0).shape[1]
    grad, loss, logits = input_gradient(view, x_adv, lambda z: objective(z, y0, tl), index=idx,
                                        eot_iter=eot_iter)
    alpha = APGD_L1_STEP_FACTOR if norm == "l1" else APGD_STEP_FACTOR
    s = _State(
        idx=idx, x0=x0, y0=y0, t_loss=tl, t_success=ts, x_adv=x_adv, x_old=x_adv, grad=grad,
        x_best=x_adv, grad_best=grad, loss_best=loss, loss_prev=loss,
        n_increase=torch.zeros(n, dtype=torch.int64, device=x.device),
        loss_best_last_check=loss, reduced_last_check=torch.ones(n, dtype=torch.bool, device=x.device),
        step=torch.full((n,), alpha * eps, dtype=x.dtype, device=x.device),
        sparsity=torch.full((n,), APGD_L1_INIT_SPARSITY, dtype=x.dtype, device=x.device),
        l0_old=torch.full((n,), float(d), dtype=x.dtype, device=x.device),
        lo=(x0 - eps).clamp_(min=0.0) if norm == "linf" else x0,
        hi=(x0 + eps).clamp_(max=1.0) if norm == "linf" else x0,
    )
    if x_init is not None and norm == "l1":  # warm start: sparsity of the start (autopgd_base.py:305-307)
        s.l0_old = (flat(x_adv - x0) != 0).sum(dim=1).to(x.dtype)
        s.sparsity = s.l0_old / d / APGD_L1_SPARSITY_DIVISOR
    if record:
        _record_hits(s, logits, adv, broken)
    windows = _windows(num_steps, norm)
    for i in range(num_steps):
        if s.idx.numel() == 0:
            break
        x_new = _ascent(s, norm, eps, 1.0 if i == 0 else APGD_MOMENTUM)
        s.x_old, s.x_adv = s.x_adv, x_new
        y0, tl = s.y0, s.t_loss
        s.grad, loss, logits = input_gradient(view, x_new, lambda z, y0=y0, tl=tl: objective(z, y0, tl),
                                              index=s.idx, eot_iter=eot_iter)
        kept = _record_hits(s, logits, adv, broken) if record else None
        if kept is not None:
            if s.idx.numel() == 0:
                break
            loss = loss[kept]
        # best point so far (autopgd_base.py:396-400): strict improvement
        better = loss > s.loss_best
        s.x_best = torch.where(_bc(better, s.x_adv), s.x_adv, s.x_best)
        s.grad_best = torch.where(_bc(better, s.x_adv), s.grad, s.grad_best)
        s.loss_best = torch.where(better, loss, s.loss_best)
        s.n_increase += (loss > s.loss_prev).long()
        s.loss_prev = loss
        if i in windows:
            _checkpoint(s, norm, eps, alpha, rho, windows[i], d)
    return s.idx, s.x_best, s.loss_best


def _record_hits(s: _State, logits: torch.Tensor, adv: torch.Tensor,
                 broken: torch.Tensor) -> torch.Tensor | None:
    """Examples whose current iterate ``s.x_adv`` (``logits`` are its outputs) succeeds keep that
    iterate in ``adv`` and leave the run; returns the mask of the rows kept (``None``: all)."""
    hit = is_success(logits, s.y0, s.t_success)
    if not bool(hit.any()):
        return None
    rows = s.idx[hit]
    adv[rows] = s.x_adv[hit]
    broken[rows] = True
    kept = ~hit
    s.keep(kept)
    return kept


def _checkpoint(s: _State, norm: str, eps: float, alpha: float, rho: float, window: int, d: int) -> None:
    """Step-size control at a checkpoint (paper Alg. 1 conditions; autopgd_base.py:405-438)."""
    if norm == "l1":
        l0 = (flat(s.x_best - s.x0) != 0).sum(dim=1).to(s.step.dtype)
        dropped = (l0 / s.l0_old) < APGD_L1_SPARSITY_DROP
        s.sparsity = l0 / d / APGD_L1_SPARSITY_DIVISOR
        s.step = torch.where(dropped, torch.full_like(s.step, alpha * eps), s.step / APGD_L1_STEP_DIVISOR)
        s.step = s.step.clamp(alpha * eps / APGD_L1_MIN_STEP_RATIO, alpha * eps)
        s.l0_old = l0
        restore = dropped
    else:
        # condition 1: at most rho * window of the steps since the last checkpoint raised the
        # loss (the reference's `<=`, autopgd_base.py:171; the paper writes `<`); condition 2:
        # the step was not halved at the last checkpoint and the best loss did not improve.
        oscillating = s.n_increase <= window * rho
        stalled = ~s.reduced_last_check & (s.loss_best_last_check >= s.loss_best)
        restore = oscillating | stalled
        s.reduced_last_check = restore
        s.loss_best_last_check = s.loss_best
        s.step = torch.where(restore, s.step / 2, s.step)
        s.n_increase = torch.zeros_like(s.n_increase)
    if bool(restore.any()):
        # the next step starts from the best point, along its gradient; the momentum term keeps
        # the previous iterate (x_old), as the reference does
        s.x_adv = torch.where(_bc(restore, s.x_adv), s.x_best, s.x_adv)
        s.grad = torch.where(_bc(restore, s.x_adv), s.grad_best, s.grad)


# --------------------------------------------------------------------------- public functions
def _check_largereps(use_largereps: Any, norm: str, num_steps: int) -> bool:
    use_largereps = check_bool("use_largereps", use_largereps)
    if use_largereps and norm != "l1":
        fail("use_largereps", "False unless norm='l1' (AutoAttack's schedule is for APGD-L1)",
             use_largereps)
    if use_largereps and num_steps < 3:
        fail("num_steps", "at least 3 with use_largereps=True (three radii)", num_steps)
    return use_largereps


def _check_apgd(eps: Any, norm: Any, loss: Any, num_steps: Any, restarts: Any, rho: Any,
                eot_iter: Any) -> tuple[float, str, str, int, int, float, int]:
    return (check_eps(eps), check_norm(norm, allowed=NORMS), check_choice("loss", loss, APGD_LOSSES),
            check_int("num_steps", num_steps, low=1), check_int("restarts", restarts, low=1),
            check_number("rho", rho, low=0.0, high=1.0), check_int("eot_iter", eot_iter, low=1))


def apgd(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    loss: str = "ce",
    num_steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    targets: torch.Tensor | None = None,
    eot_iter: int = 1,
    generator: torch.Generator | None = None,
    use_largereps: bool = False,
) -> AttackResult:
    """Auto-PGD (Croce & Hein, ICML 2020, Alg. 1): APGD-CE (``loss="ce"``) and APGD-DLR (``"dlr"``).

    PGD whose step size needs no tuning: it starts at ``2 * eps`` (``1 * eps`` for L1;
    autopgd_base.py:293) and is halved at checkpoints ``w_j`` (:func:`checkpoints`) when
    (1) at most ``rho`` of the steps since the last checkpoint raised the loss, or (2) the step was
    not halved at the last checkpoint and the best loss has not improved since; after a halving
    the next step starts from the best point so far. Steps use momentum 0.75 (paper Eq. 2,
    ``x <- P(x + 0.75 (z - x) + 0.25 (x - x_prev))`` with ``z = P(x + eta * sign(g))``; the first
    step has none). L1 (Croce & Hein, ICML 2021, Sec. 3): the step moves the top-``k`` |grad|
    coordinates (sign, normalised to unit L1 norm, box-aware), ``k`` adapted at every checkpoint
    (every 4% of the iterations) to ``||x_best - x||_0 / 1.5``, the step size reset or divided by 1.5,
    and the projection is onto the L1 ball intersected with the box (:func:`project_l1_box`).

    Parameters
    ----------
    model : nn.Module returning logits ``(N, K)``
    inputs : float Tensor (N, ...)
        Values in ``[0, 1]``; never written.
    labels : int64 Tensor (N,)
    eps : float
        Radius of the ``norm`` ball.
    norm : {"linf", "l2", "l1"}, default "linf"
    loss : {"ce", "dlr"}, default "ce"
        Untargeted: cross-entropy, or DLR (paper Eq. 6). With ``targets``: minus the target's
        cross-entropy, or the targeted DLR (Eq. 7).
    num_steps : int, default 100
        Iterations per restart (AutoAttack's ``n_iter``).
    restarts : int, default 1
        Runs from random starts; only examples no earlier run broke go to the next one.
    rho : float, default 0.75
        Condition-1 threshold on the fraction of loss-increasing steps (paper Sec. 3.2).
    targets : int64 Tensor (N,), optional
        Targeted attack: success means "predicted as the target".
    eot_iter : int, default 1
        Gradients averaged per iteration (EoT) for randomised models.
    generator : torch.Generator
        Required: the starting points are random.
    use_largereps : bool, default False
        L1 only: AutoAttack's radius schedule (:func:`largereps_schedule`; its standard L1 suite
        sets it, autoattack.py:312). ``num_steps`` must then be at least 3.

    Returns
    -------
    AttackResult
        Broken examples: the first iterate that broke them. Unbroken: the highest-loss point over
        iterations and restarts (AutoAttack returns the clean input there; both are "robust").
        Clean mistakes (targeted: already the target) are unchanged.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x, y = torch.full((2, 4), 0.5), torch.tensor([0, 1])
    >>> res = apgd(model, x, y, eps=0.1, norm="l2", num_steps=10, generator=torch.Generator().manual_seed(0))
    >>> bool((res.norms <= 0.1 + 1e-6).all()), res.success.dtype
    (True, torch.bool)

    Notes
    -----
    Deviations from autopgd_base.py, none of which changes a converged result: the
    condition-1 count of the first window compares the first iterate's loss with the starting
    point's (the reference compares with 0, the unset last entry of its loss history,
    autopgd_base.py:168-169 with the zero-initialised history of line 233); an example leaves the batch when broken (the reference carries it to
    the end of the run); the L1 step skips coordinates the box blocks (the reference's top-k
    includes them and its projection then shrinks the step); with ``eot_iter > 1`` the loss that
    drives the step-size control is the mean over the EoT passes (the reference keeps the last
    pass's).
    """
    inputs, labels, targets = check_attack_args(inputs, labels, targets=targets, generator=generator,
                                                needs_generator=True)
    eps, norm, loss, num_steps, restarts, rho, eot_iter = _check_apgd(
        eps, norm, loss, num_steps, restarts, rho, eot_iter)
    use_largereps = _check_largereps(use_largereps, norm, num_steps)
    with model_view(model, inputs) as view:
        with torch.no_grad():
            broken = is_success(view(inputs), labels, targets)
        adv = inputs.clone()
        best = torch.full((inputs.shape[0],), -math.inf, dtype=inputs.dtype, device=inputs.device)
        objective = attack_objective(loss)
        for _ in range(restarts):
            _restart(view, inputs, labels, t_loss=targets, t_success=targets, eps=eps, norm=norm,
                     num_steps=num_steps, rho=rho, objective=objective, eot_iter=eot_iter,
                     generator=generator, adv=adv, broken=broken, best=best, use_largereps=use_largereps)
        return finalize(view, inputs, adv, labels, norm=norm, eps=eps, targets=targets,
                        num_iterations=num_steps)


def _restart(view: ModelView, x: torch.Tensor, y: torch.Tensor, *, t_loss: torch.Tensor | None,
             t_success: torch.Tensor | None, adv: torch.Tensor, broken: torch.Tensor,
             best: torch.Tensor, use_largereps: bool = False, **run: Any) -> None:
    """One run on the unbroken examples; unbroken ones keep their highest-loss point in ``adv``."""
    idx = (~broken).nonzero().squeeze(1)
    if idx.numel() == 0:
        return
    runner = _largereps_run if use_largereps else _apgd_run
    left, x_best, loss_best = runner(view, x, y, idx, t_loss=t_loss, t_success=t_success,
                                     adv=adv, broken=broken, **run)
    better = loss_best > best[left]
    adv[left[better]] = x_best[better]
    best[left[better]] = loss_best[better]


def largereps_schedule(eps: float, num_steps: int) -> tuple[tuple[float, int], ...]:
    """AutoAttack's APGD-L1 schedule: ``(3 eps, 30%), (2 eps, 30%), (eps, the rest)`` of the steps.

    fra31/auto-attack autopgd_base.py:486-490 (``use_largereps``; Croce & Hein, "Mind the box",
    ICML 2021, Sec. 4: starting with a larger radius helps APGD-L1 find sparse perturbations).
    """
    first = math.ceil(APGD_LARGEREPS_FRACTION * num_steps)
    return ((3.0 * eps, first), (2.0 * eps, first), (eps, num_steps - 2 * first))


def _largereps_run(view: ModelView, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, *,
                   eps: float, num_steps: int, generator: torch.Generator,
                   **run: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """APGD-L1 over the shrinking radii of :func:`largereps_schedule`, each stage warm-started at
    the previous stage's best point projected onto the smaller ball (autopgd_base.py:542-564).
    Only the last stage (radius ``eps``) can break an example."""
    x0 = x[idx]
    stages = largereps_schedule(eps, num_steps)
    start = x0 + randn(tuple(x0.shape), generator, x0)
    left, x_best, loss_best = idx, start, x0.new_empty(0)
    for k, (radius, steps) in enumerate(stages):
        start = x0 + project_l1_box(start - x0, x0, radius)
        last = k == len(stages) - 1
        left, x_best, loss_best = _apgd_run(view, x, y, idx, eps=radius, num_steps=steps,
                                            generator=generator, x_init=start, record=last, **run)
        start = x_best
    return left, x_best, loss_best


def apgd_targeted(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    num_target_classes: int = 9,
    num_steps: int = 100,
    restarts: int = 1,
    loss: str = "dlr",
    rho: float = 0.75,
    eot_iter: int = 1,
    generator: torch.Generator | None = None,
    use_largereps: bool = False,
    target_ranks: Sequence[int] | None = None,
) -> AttackResult:
    """APGD-T: APGD on a targeted loss, towards each of the top non-true classes in turn.

    AutoAttack's APGD-T (Croce & Hein, ICML 2020, Sec. 4; autopgd_base.py:606-683, target loop 655-668): for
    ``r = 2, ..., num_target_classes + 1`` the target of each still-robust example is the class with
    the ``r``-th largest clean logit, and ``restarts`` APGD runs maximise the targeted DLR loss
    (Eq. 7; ``loss="ce"``: minus the target's cross-entropy). Success is misclassification (any
    class), as in AutoAttack; only examples no earlier target broke are attacked with the next one.
    AutoAttack's standard suite uses 9 target classes (5 for L1) and 1 restart.

    Parameters
    ----------
    model, inputs, labels, eps, norm, num_steps, restarts, rho, eot_iter, generator, use_largereps
        As in :func:`apgd`.
    num_target_classes : int, default 9
        Target classes tried per example; more than ``K - 1`` is reduced to ``K - 1`` with a
        warning (AutoAttack's checks.py warns likewise).
    loss : {"dlr", "ce"}, default "dlr"
        The targeted loss. The targeted DLR needs ``K >= 4`` classes.
    target_ranks : sequence of int, optional
        Which targets, by rank among the non-true classes ordered by clean logit (1 = the
        highest-scoring wrong class), tried in the order given; overrides
        ``num_target_classes`` (which means ranks ``1, ..., num_target_classes``).
        :func:`~robustlab.adversarial.evaluate` runs one rank per call so that the targets can
        run side by side.

    Returns
    -------
    AttackResult
        ``targets`` is ``None`` (success = misclassified); see :func:`apgd` for ``adv_inputs``.
    """
    inputs, labels, _ = check_attack_args(inputs, labels, generator=generator, needs_generator=True)
    eps, norm, loss, num_steps, restarts, rho, eot_iter = _check_apgd(
        eps, norm, loss, num_steps, restarts, rho, eot_iter)
    num_target_classes = check_int("num_target_classes", num_target_classes, low=1)
    use_largereps = _check_largereps(use_largereps, norm, num_steps)
    with model_view(model, inputs) as view:
        with torch.no_grad():
            clean = view(inputs)
        num_classes = clean.shape[1]
        if target_ranks is None and num_target_classes > num_classes - 1:
            warnings.warn(f"num_target_classes={num_target_classes} exceeds the {num_classes - 1} "
                          f"classes other than the true one; using {num_classes - 1}.",
                          UserWarning, stacklevel=2)
            num_target_classes = num_classes - 1
        ranks = (range(1, num_target_classes + 1) if target_ranks is None
                 else check_target_ranks(target_ranks, num_classes))
        broken = is_success(clean, labels, None)
        ranked = clean.argsort(dim=1, descending=True)
        adv = inputs.clone()
        best = torch.full((inputs.shape[0],), -math.inf, dtype=inputs.dtype, device=inputs.device)
        objective = attack_objective(loss)
        for rank in ranks:
            # ranked[:, 0] is the label for the clean-correct examples, the only ones attacked
            for _ in range(restarts):
                _restart(view, inputs, labels, t_loss=ranked[:, rank], t_success=None, eps=eps,
                         norm=norm, num_steps=num_steps, rho=rho, objective=objective,
                         eot_iter=eot_iter, generator=generator, adv=adv, broken=broken, best=best,
                         use_largereps=use_largereps)
        return finalize(view, inputs, adv, labels, norm=norm, eps=eps, targets=None,
                        num_iterations=num_steps)


# --------------------------------------------------------------------------- thin classes
@ATTACKS.register("apgd-ce")
class APGDCE(Attack):
    """APGD-CE, AutoAttack's first attack: :func:`apgd` with ``loss="ce"``."""

    function = staticmethod(apgd)
    name = "apgd-ce"

    def __init__(self, **settings: Any) -> None:
        super().__init__(**{"loss": "ce", **settings})


@ATTACKS.register("apgd-dlr")
class APGDDLR(Attack):
    """APGD-DLR: :func:`apgd` with ``loss="dlr"``."""

    function = staticmethod(apgd)
    name = "apgd-dlr"

    def __init__(self, **settings: Any) -> None:
        super().__init__(**{"loss": "dlr", **settings})


@ATTACKS.register("apgd-t")
class APGDT(Attack):
    """APGD-T: :func:`apgd_targeted` (targeted DLR over the top non-true classes)."""

    function = staticmethod(apgd_targeted)
    name = "apgd-t"
