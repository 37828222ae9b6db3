"""Gradient attacks with a fixed step: FGSM / fast gradient method and PGD (Linf, L2, L1).

Threat model: ``||x_adv - x||_p <= eps`` for ``p`` in ``norm`` and ``0 <= x_adv <= 1``. Inputs are
float tensors ``(N, ...)`` with values in ``[0, 1]``; the model returns logits ``(N, K)``.

Losses (all *maximised* by the attack; see :func:`attack_objective`):

- ``"ce"``: cross-entropy of the label (untargeted) or minus the cross-entropy of the target
  (targeted: the attack minimises the target's cross-entropy);
- ``"margin"``: the Carlini & Wagner (S&P 2017, Eq. 6 with ``kappa = inf``) logit margin,
  ``max_{j != y} z_j - z_y`` untargeted, ``z_t - max_{j != t} z_j`` targeted;
- ``"dlr"``: the Difference of Logits Ratio (Croce & Hein, ICML 2020, Eq. 6 / Eq. 7).

Every attack keeps, per example, the first iterate that breaks it and stops working on it, so
success never goes down as the attack runs longer; clean mistakes (or, targeted, inputs already
predicted as the target) are returned unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from robustlab._checks import check_bool, check_choice, check_int, check_number
from robustlab._constants import PGD_L1_PERCENTILE, PGD_STEP_FACTOR
from robustlab.adversarial._core import (
    ATTACKS,
    NORMS,
    Attack,
    AttackResult,
    ModelView,
    ce_loss,
    check_attack_args,
    check_eps,
    check_norm,
    dlr_loss,
    finalize,
    flat,
    input_gradient,
    margin,
    model_view,
    normalize_direction,
    project,
    random_in_ball,
)

__all__ = [
    "FGSM",
    "LOSSES",
    "PGD",
    "attack_objective",
    "fgsm",
    "is_success",
    "l1_num_coordinates",
    "l1_sparse_direction",
    "pgd",
    "project_l1_box",
]

#: Losses the gradient attacks maximise.
LOSSES: tuple[str, ...] = ("ce", "margin", "dlr")

Objective = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


# --------------------------------------------------------------------------- losses & success
def _ce_objective(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    return ce_loss(logits, labels) if targets is None else -ce_loss(logits, targets)


def _margin_objective(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    return -margin(logits, labels) if targets is None else margin(logits, targets)


def _dlr_objective(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    return dlr_loss(logits, labels, targets)


_OBJECTIVES: dict[str, Objective] = {"ce": _ce_objective, "margin": _margin_objective, "dlr": _dlr_objective}


def attack_objective(loss: str) -> Objective:
    """The per-example objective ``f(logits, labels, targets) -> (N,)`` an attack maximises."""
    return _OBJECTIVES[loss]


def is_success(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """Prediction differs from the label (untargeted) or equals the target (targeted)."""
    pred = logits.argmax(dim=1)
    return pred != labels if targets is None else pred == targets


# --------------------------------------------------------------------------- steps
def l1_sparse_direction(grad: torch.Tensor, x_adv: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
    """Sparse steepest-ascent direction of unit L1 norm (SLIDE), box-aware.

    Tramer & Boneh, "Adversarial Training and Robustness for Multiple Perturbations" (NeurIPS 2019),
    Sec. 4 / Alg. 1: ``e_i = sign(g_i)`` on the ``k`` coordinates with the largest ``|g_i|``, zero
    elsewhere, normalised to ``||e||_1 = 1``. Following Croce & Hein, "Mind the box: l1-APGD for
    sparse adversarial attacks on image classifiers" (ICML 2021), Sec. 3.2, coordinates already at
    the box boundary whose gradient points outward (``x_i = 0, g_i < 0`` or ``x_i = 1, g_i > 0``)
    cannot move and are excluded before the top-``k`` selection. ``k`` is an int or a per-example
    int64 tensor ``(N,)`` (each at least 1).
    """
    g = flat(grad)
    xa = flat(x_adv)
    blocked = ((xa <= 0) & (g < 0)) | ((xa >= 1) & (g > 0))
    mag = g.abs().masked_fill(blocked, 0)
    d = g.shape[1]
    if isinstance(k, torch.Tensor):
        k_max = int(k.max())
        top = mag.topk(min(k_max, d), dim=1)
        keep = torch.arange(top.indices.shape[1], device=g.device)[None, :] < k[:, None]
        vals = top.values * keep
    else:
        top = mag.topk(min(int(k), d), dim=1)
        vals = top.values
    chosen = vals > 0
    e = torch.zeros_like(g).scatter_(1, top.indices, g.gather(1, top.indices).sign() * chosen)
    count = chosen.sum(dim=1, keepdim=True).clamp_min(1).to(g.dtype)
    return (e / count).reshape(grad.shape)


def project_l1_box(delta: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    """Euclidean projection of ``delta`` onto ``{d : ||d||_1 <= eps, 0 <= x0 + d <= 1}``, per example.

    The projection onto the intersection of the L1 ball and the box (Croce & Hein, "Mind the box",
    ICML 2021, Sec. 3.1 / Prop. 3.1; fra31/auto-attack autopgd_base.py ``L1_projection``): by the
    KKT conditions ``d_i = sign(v_i) * clip(|v_i| - theta, 0, c_i)`` with ``c_i`` the room left in the
    box in the direction of ``v_i`` and ``theta >= 0`` the smallest value with ``sum |d_i| <= eps``.
    ``g(theta) = sum_i clip(|v_i| - theta, 0, c_i)`` is piecewise linear with breakpoints ``|v_i|``
    and ``|v_i| - c_i``; sorting them gives ``theta`` exactly (no bisection). Projecting onto the
    L1 ball first and clamping afterwards, as PGD usually does, is feasible but not the nearest
    point, and wastes budget on coordinates the box cuts off.
    """
    d = flat(delta)
    x = flat(x0)
    n = d.shape[0]
    v = d.abs()
    room = torch.where(d >= 0, 1 - x, x).clamp_min(0)
    e = torch.as_tensor(eps, dtype=d.dtype, device=d.device).expand(n)
    clipped = torch.minimum(v, room)
    out = d.sign() * clipped
    outside = clipped.sum(dim=1) > e
    if not bool(outside.any()):
        return out.reshape(delta.shape)
    vo, co, eo = v[outside], room[outside], e[outside]
    brk = torch.cat([vo, vo - co], dim=1)
    change = torch.cat([torch.ones_like(vo), -torch.ones_like(vo)], dim=1)
    brk, order = brk.sort(dim=1, descending=True)
    slope = change.gather(1, order).cumsum(dim=1)  # -g'(theta) just below each breakpoint
    g_at = torch.cat([torch.zeros_like(brk[:, :1]),
                      (slope[:, :-1] * (brk[:, :-1] - brk[:, 1:])).cumsum(dim=1)], dim=1)
    first = (g_at >= eo[:, None]).to(torch.int8).argmax(dim=1).clamp_min(1)
    prev = (first - 1)[:, None]
    theta = brk.gather(1, prev) - (eo[:, None] - g_at.gather(1, prev)) / slope.gather(1, prev).clamp_min(1)
    theta = theta.clamp_min(0)
    out[outside] = d[outside].sign() * torch.minimum((vo - theta).clamp_min(0), co)
    return out.reshape(delta.shape)


def l1_num_coordinates(num_features: int, percentile: float = PGD_L1_PERCENTILE) -> int:
    """Coordinates at or above the ``percentile`` of ``|grad|``: ``ceil((1 - q/100) D)``, at least 1."""
    return max(1, math.ceil((1.0 - percentile / 100.0) * num_features - 1e-9))


def _step(x_adv: torch.Tensor, x0: torch.Tensor, grad: torch.Tensor, *, norm: str, eps: float,
          step_size: float, l1_k: int) -> torch.Tensor:
    """One ascent step of size ``step_size`` in ``norm``, projected onto the ball, clamped to the box."""
    if norm == "l1":
        delta = project_l1_box(x_adv + step_size * l1_sparse_direction(grad, x_adv, l1_k) - x0, x0, eps)
    else:
        delta = project(x_adv + step_size * normalize_direction(grad, norm) - x0, norm, eps)
    return (x0 + delta).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------- validation
def _check_common(eps: Any, norm: Any, loss: Any) -> tuple[float, str, str]:
    eps = check_eps(eps)
    norm = check_norm(norm, allowed=NORMS)
    loss = check_choice("loss", loss, LOSSES)
    return eps, norm, loss


# --------------------------------------------------------------------------- FGSM
def fgsm(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    loss: str = "ce",
    targets: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Fast Gradient Sign Method (Linf) / fast gradient method (L2, L1): one step of size ``eps``.

    Goodfellow et al., "Explaining and Harnessing Adversarial Examples" (ICLR 2015), Eq. 3:
    ``x_adv = clip(x + eps * sign(grad_x L))``. For ``norm="l2"`` the step is
    ``eps * g / ||g||_2`` (the fast gradient method, Miyato et al. 2016 / Kurakin et al. 2017);
    for ``norm="l1"`` it moves the single coordinate with the largest ``|g|`` among those the box
    lets move by ``eps`` (clipped to the box).

    Parameters
    ----------
    model : nn.Module returning logits ``(N, K)``
    inputs : float Tensor (N, ...)
        Values in ``[0, 1]``; never written.
    labels : int64 Tensor (N,)
    eps : float
        Radius of the ``norm`` ball (>= 0).
    norm : {"linf", "l2", "l1"}, default "linf"
    loss : {"ce", "margin", "dlr"}, default "ce"
        Objective the step ascends (targeted: towards ``targets``).
    targets : int64 Tensor (N,), optional
        Target classes (targeted attack: success means "predicted as the target").
    generator : torch.Generator, optional
        Unused (FGSM is deterministic); accepted for a uniform attack signature.

    Returns
    -------
    AttackResult
        Examples already misclassified (targeted: already predicted as the target) are unchanged.
    """
    inputs, labels, targets = check_attack_args(inputs, labels, targets=targets, generator=generator)
    eps, norm, loss = _check_common(eps, norm, loss)
    with model_view(model, inputs) as view:
        return _fgsm_impl(view, inputs, labels, targets, eps=eps, norm=norm, objective=attack_objective(loss))


def _fgsm_impl(view: ModelView, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, *,
               eps: float, norm: str, objective: Objective) -> AttackResult:
    grad, _, logits = input_gradient(view, x, lambda z: objective(z, y, t))
    done = is_success(logits, y, t)
    if norm == "l1":  # the steepest L1 step, on a coordinate the box lets move
        adv = x + project_l1_box(eps * l1_sparse_direction(grad, x, 1), x, eps)
    else:
        adv = x + project(eps * normalize_direction(grad, norm), norm, eps)
    adv = adv.clamp_(0.0, 1.0)
    adv = torch.where(done.reshape((-1,) + (1,) * (x.ndim - 1)), x, adv)
    return finalize(view, x, adv, y, norm=norm, eps=eps, targets=t, num_iterations=1)


# --------------------------------------------------------------------------- PGD
def pgd(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    num_steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    loss: str = "ce",
    targets: torch.Tensor | None = None,
    eot_iter: int = 1,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Projected gradient descent (Madry et al., "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018, Eq. 2) in the Linf, L2 or L1 ball, with restarts.

    Each step ``x <- clip_[0,1](x0 + P_eps(x + step_size * d(g) - x0))`` with ``g`` the input
    gradient of the loss and ``d`` the steepest-ascent direction of unit norm: ``sign(g)`` (Linf),
    ``g / ||g||_2`` (L2) or, for L1, the sparse SLIDE direction of Tramer & Boneh (NeurIPS 2019,
    Alg. 1; :func:`l1_sparse_direction`: the sign of the coordinates at or above the
    ``PGD_L1_PERCENTILE``-th percentile of ``|g|``, box-aware as in Croce & Hein, ICML 2021,
    normalised to unit L1 norm) followed by the exact projection onto the intersection of the L1
    ball and the box (:func:`project_l1_box`, Croce & Hein 2021, Sec. 3.1).

    Parameters
    ----------
    model : nn.Module returning logits ``(N, K)``
    inputs : float Tensor (N, ...)
        Values in ``[0, 1]``; never written.
    labels : int64 Tensor (N,)
    eps : float
        Radius of the ``norm`` ball (>= 0).
    norm : {"linf", "l2", "l1"}, default "linf"
    num_steps : int, default 10
        Gradient steps per restart (>= 1).
    step_size : float, optional
        Step length in ``norm``. Default ``2.5 * eps / num_steps`` (Madry et al. 2018, App. A,
        ``PGD_STEP_FACTOR``); torchattacks' ``alpha=2/255`` at ``eps=8/255, steps=10`` is the same.
    random_start : bool, default True
        Start each restart from a uniform point of the ball (:func:`random_in_ball`); otherwise from
        the clean input. Needs ``generator``.
    restarts : int, default 1
        Independent runs; only examples no earlier run broke go to the next one.
    loss : {"ce", "margin", "dlr"}, default "ce"
        See the module docstring; targeted attacks minimise the target's CE / maximise its margin.
    targets : int64 Tensor (N,), optional
        Target classes (targeted attack).
    eot_iter : int, default 1
        Gradients averaged per step (Expectation over Transformation, Athalye et al. 2018) for
        randomised models.
    generator : torch.Generator
        Required when ``random_start`` is True.

    Returns
    -------
    AttackResult
        Per example, the first iterate (over steps and restarts) that breaks it; unbroken examples
        get the last iterate of their highest-loss restart. ``queries`` counts the clean forward,
        ``eot_iter`` per step, one forward after the last step and the final success check.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x, y = torch.full((2, 4), 0.5), torch.tensor([0, 1])
    >>> res = pgd(model, x, y, eps=0.1, num_steps=5, generator=torch.Generator().manual_seed(0))
    >>> res.adv_inputs.shape, bool((res.norms <= 0.1 + 1e-6).all()), res.queries.tolist()[0] <= 8
    (torch.Size([2, 4]), True, True)

    Notes
    -----
    Whether an iterate breaks an example is read from the logits of its gradient pass (the model
    is in eval mode, so they are the predictions on the iterate; for a randomised model, those of
    the last EoT pass) plus one forward after the last step: one forward and backward per step,
    and broken examples leave the batch. The returned ``success`` is recomputed by one more
    forward on ``adv_inputs``.
    """
    random_start = check_bool("random_start", random_start)
    inputs, labels, targets = check_attack_args(inputs, labels, targets=targets, generator=generator,
                                                needs_generator=random_start)
    eps, norm, loss = _check_common(eps, norm, loss)
    num_steps = check_int("num_steps", num_steps, low=1)
    if step_size is None:
        step_size = PGD_STEP_FACTOR * eps / num_steps
    else:
        step_size = check_number("step_size", step_size, low=0.0, low_inclusive=False)
    restarts = check_int("restarts", restarts, low=1)
    eot_iter = check_int("eot_iter", eot_iter, low=1)
    with model_view(model, inputs) as view:
        return _pgd_impl(view, inputs, labels, targets, eps=eps, norm=norm, num_steps=num_steps,
                         step_size=step_size, random_start=random_start, restarts=restarts,
                         objective=attack_objective(loss), eot_iter=eot_iter, generator=generator)


def _pgd_impl(view: ModelView, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, *,
              eps: float, norm: str, num_steps: int, step_size: float, random_start: bool,
              restarts: int, objective: Objective, eot_iter: int,
              generator: torch.Generator | None) -> AttackResult:
    n = x.shape[0]
    with torch.no_grad():
        broken = is_success(view(x), y, t)
    adv = x.clone()
    best_loss = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)
    l1_k = l1_num_coordinates(flat(x).shape[1]) if norm == "l1" else 0
    iterations = 0
    for _ in range(restarts):
        idx = (~broken).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        x0, y0 = x[idx], y[idx]
        t0 = t[idx] if t is not None else None
        if random_start:
            assert generator is not None
            x_adv = (x0 + random_in_ball(x0, norm, eps, generator)).clamp_(0.0, 1.0)
        else:
            x_adv = x0.clone()
        for step in range(num_steps + 1):
            if step < num_steps:
                grad, obj, logits = input_gradient(view, x_adv, lambda z, y0=y0, t0=t0: objective(z, y0, t0),
                                                   index=idx, eot_iter=eot_iter)
            else:
                with torch.no_grad():
                    logits = view(x_adv, idx)
                    obj = objective(logits, y0, t0)
            hit = is_success(logits, y0, t0)
            if bool(hit.any()):
                adv[idx[hit]] = x_adv[hit]
                broken[idx[hit]] = True
                keep = ~hit
                idx, x0, y0, x_adv, obj = idx[keep], x0[keep], y0[keep], x_adv[keep], obj[keep]
                t0 = t0[keep] if t0 is not None else None
                if step < num_steps:
                    grad = grad[keep]
            iterations = max(iterations, step)
            if idx.numel() == 0:
                break
            if step == num_steps:
                better = obj > best_loss[idx]
                adv[idx[better]] = x_adv[better]
                best_loss[idx[better]] = obj[better]
                break
            x_adv = _step(x_adv, x0, grad, norm=norm, eps=eps, step_size=step_size, l1_k=l1_k)
    return finalize(view, x, adv, y, norm=norm, eps=eps, targets=t, num_iterations=iterations)


# --------------------------------------------------------------------------- thin classes
@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Thin class for :func:`fgsm`: ``FGSM(eps=8/255)(model, x, y)``."""

    function = staticmethod(fgsm)
    name = "fgsm"


@ATTACKS.register("pgd")
class PGD(Attack):
    """Thin class for :func:`pgd`: ``PGD(eps=8/255, num_steps=20)(model, x, y, generator=g)``."""

    function = staticmethod(pgd)
    name = "pgd"
