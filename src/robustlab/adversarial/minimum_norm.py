"""Minimum-norm attacks: DeepFool (L2, Linf) and FMN, the Fast Minimum-Norm attack (L2, Linf, L1).

Both look for the smallest perturbation that changes the decision and report it (the result's
``eps`` is ``None``; ``norms`` are the minimal norms found). Inputs lie in ``[0, 1]`` and the
perturbed points stay there. Examples the model already misclassifies are returned unchanged.

* DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016): repeatedly step to the closest
  linearised decision boundary among the candidate classes (Alg. 2, Sec. 3.3 for Linf).
* FMN (Pintor, Roli, Brendel & Biggio, NeurIPS 2021, Alg. 1): normalised gradient ascent on the
  logit margin inside an ``eps`` ball whose radius shrinks while the point is adversarial and
  grows while it is not.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robustlab._checks import check_int, check_number, fail
from robustlab._constants import (
    DEEPFOOL_NUM_STEPS,
    DEEPFOOL_OVERSHOOT,
    FMN_ALPHA_FINAL_RATIO,
    FMN_ALPHA_INIT,
    FMN_GAMMA_FINAL,
    FMN_GAMMA_INIT,
    FMN_GRAD_FLOOR,
    FMN_PROJECTION_BISECTION_STEPS,
)
from robustlab.adversarial._core import (
    ATTACKS,
    Attack,
    AttackResult,
    check_attack_args,
    check_norm,
    finalize,
    flat,
    input_gradient,
    margin,
    model_view,
    perturbation_norms,
    project,
)
from robustlab.adversarial.fab import box_hyperplane_step, logit_difference_grads

__all__ = ["FMN", "DeepFool", "deepfool", "fmn"]

#: Dual exponent per norm (distance to a hyperplane ``|f| / ||w||_dual``).
_DUAL = {"linf": 1.0, "l2": 2.0, "l1": float("inf")}


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


# --------------------------------------------------------------------------- DeepFool
def _deepfool_impl(model: Any, inputs: torch.Tensor, labels: torch.Tensor, *, norm: str,
                   num_steps: int, overshoot: float, num_candidates: int | None) -> AttackResult:
    with model_view(model, inputs) as view:
        with torch.no_grad():
            logits = view(inputs)
        k = logits.shape[1]
        if num_candidates is not None and num_candidates > k:
            fail("num_candidates", f"an integer in [2, {k}] (the model has {k} classes)", num_candidates)
        c = k if num_candidates is None else num_candidates
        idx = (logits.argmax(dim=1) == labels).nonzero().squeeze(1)
        # candidates: the top-c classes of the clean logits; the first is the (correct) label
        others = logits[idx].argsort(dim=1, descending=True)[:, 1:c]
        x0, y = inputs[idx], labels[idx]
        x = x0.clone()
        act = torch.arange(idx.numel(), device=inputs.device)
        steps = 0
        for step in range(num_steps):
            if act.numel() == 0:
                break
            out, df, dg = logit_difference_grads(view, x[act], y[act], others[act], idx[act])
            still = out.argmax(dim=1) == y[act]  # only unbroken examples take another step
            act, df, dg = act[still], df[still], dg[still]
            if act.numel() == 0:
                break
            steps = step + 1
            # closest linearised boundary (Alg. 2 line 6 / Sec. 3.3: |f'_k| / ||w'_k||_q)
            dual = dg.norm(p=_DUAL[norm], dim=2)
            lhat = (df.abs() / dual.clamp_min(torch.finfo(df.dtype).tiny)).argmin(dim=1)
            rows = torch.arange(act.numel(), device=inputs.device)
            f, w = df[rows, lhat].abs(), dg[rows, lhat]
            # the smallest step onto that linearised boundary within the box: Alg. 2's
            # r = |f'| w' / ||w'||_2^2 (Linf: |f'| sign(w') / ||w'||_1) when the box is not active
            r = box_hyperplane_step(flat(x[act]), w, f, norm).reshape((-1,) + tuple(x0.shape[1:]))
            # x0 + (1 + overshoot) * (sum of steps), with the steps the box clipped left out
            x[act] = (x[act] + (1 + overshoot) * r).clamp(0, 1)
        adv_inputs = inputs.clone()
        adv_inputs[idx] = x
        return finalize(view, inputs, adv_inputs, labels, norm=norm, eps=None, targets=None,
                        num_iterations=steps)


def deepfool(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str = "l2",
    num_steps: int = DEEPFOOL_NUM_STEPS,
    overshoot: float = DEEPFOOL_OVERSHOOT,
    num_candidates: int | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """DeepFool (Moosavi-Dezfooli et al., CVPR 2016): a small ``norm`` perturbation that flips the decision.

    Parameters
    ----------
    model : nn.Module
        Returns logits ``(N, K)``; differentiated w.r.t. its input (eval mode, frozen parameters,
        its state restored afterwards).
    inputs : Tensor (N, ...)
        Values in ``[0, 1]``; never modified.
    labels : int64 Tensor (N,)
    norm : {"l2", "linf"}, default "l2"
        L2 is Alg. 2; Linf the ``p = inf`` case of Sec. 3.3.
    num_steps : int, default 50
        Most linearisation steps per example (LTS4/DeepFool Python/deepfool.py ``max_iter=50``).
    overshoot : float >= 0, default 0.02
        The accumulated step is scaled by ``1 + overshoot`` (Sec. 4, eta = 0.02) so the point
        ends past the boundary.
    num_candidates : int, optional
        Only the ``num_candidates`` highest-scoring classes of the clean logits (the label among
        them) are searched for the closest boundary, as the authors' code does with its
        ``num_classes``; all ``K`` classes by default.
    generator : None
        Unused (DeepFool is deterministic); accepted for the common attack signature.

    Returns
    -------
    AttackResult
        ``eps`` is ``None``; ``norms`` are the norms of the perturbations found. Examples the
        model already misclassifies are unchanged.

    Notes
    -----
    With ``x_0`` the input and ``r`` the accumulated step, each iteration linearises
    ``f'_k = f_k - f_y`` at ``x_i = clip(x_0 + (1 + overshoot) r)`` for the candidate classes,
    picks ``l = argmin_k |f'_k| / ||w'_k||_q`` (``w'_k`` the gradient of ``f'_k``, ``q`` the dual
    exponent) and adds ``r_i = |f'_l| / ||w'_l||_q^q * |w'_l|^(q-1) * sign(w'_l)``: for L2
    ``|f'_l| w'_l / ||w'_l||_2^2``, for Linf ``|f'_l| sign(w'_l) / ||w'_l||_1``. Only examples the
    model still classifies correctly iterate. On an affine classifier one step lands exactly on
    the closest boundary, so the result's norm is ``(1 + overshoot)`` times the minimal one.

    Deviations: the paper has no box. Here each step is the smallest step onto the linearised
    boundary *within* ``[0, 1]`` (FAB's box-constrained projection, Croce & Hein 2020, Sec. 3.1,
    :func:`~robustlab.adversarial.fab.box_hyperplane_step`), equal to Alg. 2's step wherever the
    box is not active, and the accumulated step keeps only what the box let through. Clipping
    Alg. 2's step instead (torchattacks' DeepFool) stalls short of the boundary when much of the
    gradient points out of the box: on the digits MLP of the tests about 30% of the examples are
    never broken that way. The overshoot multiplies the accumulated step at every iteration, as
    in the authors' code (LTS4/DeepFool Python/deepfool.py), rather than once at the end
    (Alg. 2). All gradients of an iteration come from one batched backward pass.

    References
    ----------
    S.-M. Moosavi-Dezfooli, A. Fawzi and P. Frossard. DeepFool: a simple and accurate method to
    fool deep neural networks. CVPR 2016.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> res = deepfool(model, torch.rand(2, 4), torch.tensor([0, 1]))
    >>> res.eps is None
    True
    """
    norm = check_norm(norm, allowed=("l2", "linf"))
    num_steps = check_int("num_steps", num_steps, low=1)
    overshoot = check_number("overshoot", overshoot, low=0.0)
    if num_candidates is not None:
        num_candidates = check_int("num_candidates", num_candidates, low=2)
    inputs, labels, _ = check_attack_args(inputs, labels, generator=generator)
    return _deepfool_impl(model, inputs, labels, norm=norm, num_steps=num_steps, overshoot=overshoot,
                          num_candidates=num_candidates)


# --------------------------------------------------------------------------- FMN
def _project_ball_and_box(delta: torch.Tensor, x0: torch.Tensor, norm: str, eps: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each ``delta`` onto ``{||d|| <= eps} & {0 <= x0 + d <= 1}``.

    Linf: both sets are boxes, so projecting onto one and clipping to the other is exact. L2:
    the KKT point is ``clip(lam * delta)`` with ``lam`` in ``(0, 1]``; L1: it is
    ``sign(delta) * clip(|delta| - theta, 0, room)`` with ``theta >= 0`` (soft-thresholding
    within the box). The norm is monotone in ``lam`` / ``theta``; both are found by bisection,
    ending on the side inside the ball.
    """
    if norm == "linf":
        return (x0 + project(delta, norm, eps)).clamp(0, 1) - x0
    d, lo, hi = flat(delta), flat(-x0), flat(1 - x0)
    clipped = torch.minimum(torch.maximum(d, lo), hi)
    inside = perturbation_norms(clipped, norm) <= eps
    if bool(inside.all()):
        return clipped.reshape(delta.shape)
    if norm == "l2":
        def point(lam: torch.Tensor) -> torch.Tensor:
            return torch.minimum(torch.maximum(lam[:, None] * d, lo), hi)
        a, b = torch.zeros_like(eps), torch.ones_like(eps)  # norm(point) grows from a to b
    else:
        room = torch.where(d > 0, hi, -lo)

        def point(theta: torch.Tensor) -> torch.Tensor:
            return d.sign() * torch.minimum((d.abs() - theta[:, None]).clamp_min(0), room)
        a, b = d.abs().amax(dim=1), torch.zeros_like(eps)  # norm(point) grows from a to b
    for _ in range(FMN_PROJECTION_BISECTION_STEPS):
        mid = (a + b) / 2
        over = perturbation_norms(point(mid), norm) > eps
        a, b = torch.where(over, a, mid), torch.where(over, mid, b)
    out = torch.where(inside[:, None], clipped, point(a))
    return out.reshape(delta.shape)


def _fmn_impl(model: Any, inputs: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None, *,
              norm: str, num_steps: int, alpha_init: float, alpha_final: float, gamma_init: float,
              gamma_final: float) -> AttackResult:
    with model_view(model, inputs) as view:
        with torch.no_grad():
            logits = view(inputs)
        idx = (logits.argmax(dim=1) == labels).nonzero().squeeze(1)
        if idx.numel() == 0:  # nothing to attack: every example is already misclassified
            return finalize(view, inputs, inputs, labels, norm=norm, eps=None, targets=targets,
                            num_iterations=0)
        x0, y = inputs[idx], labels[idx]
        t = None if targets is None else targets[idx]
        n = idx.numel()

        def loss_fn(z: torch.Tensor) -> torch.Tensor:
            # positive exactly when adversarial: max_{j != y} z_j - z_y, or z_t - max_{j != t} z_j
            return -margin(z, y) if t is None else margin(z, t)

        delta = torch.zeros_like(x0)
        eps = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
        worst = perturbation_norms(torch.maximum(x0, 1 - x0), norm)  # no ball beyond the box
        best_norm = torch.full_like(eps, math.inf)
        best_adv = x0.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x0.device)
        for i in range(num_steps + 1):
            grad, loss, z = input_gradient(view, x0 + delta, loss_fn, index=idx)
            pred = z.argmax(dim=1)
            adv = pred != y if t is None else pred == t
            size = perturbation_norms(delta, norm)
            better = adv & (size < best_norm)
            best_norm = torch.where(better, size, best_norm)
            best_adv = torch.where(_bcast(better, x0), x0 + delta, best_adv)
            found |= adv
            if i == num_steps:  # the last iterate is only evaluated
                break
            cosine = (1 + math.cos(math.pi * i / num_steps)) / 2
            alpha = alpha_final + (alpha_init - alpha_final) * cosine
            gamma = gamma_final + (gamma_init - gamma_final) * cosine
            gflat = flat(grad)
            # Alg. 1 lines 6-10: shrink eps while adversarial, grow it once something was found,
            # before that jump to the linearised boundary distance |L| / ||grad||_dual
            to_boundary = size + loss.abs() / gflat.norm(p=_DUAL[norm], dim=1).clamp_min(FMN_GRAD_FLOOR)
            # at least a gamma-step out: a point exactly on the boundary (L = 0, a tie that is not
            # adversarial) would otherwise keep eps unchanged forever
            to_boundary = torch.maximum(to_boundary, size * (1 + gamma))
            eps = torch.where(adv, torch.minimum(eps * (1 - gamma), best_norm),
                              torch.where(found, eps * (1 + gamma), to_boundary))
            eps = torch.minimum(eps, worst)
            # Alg. 1 lines 11-13: normalised gradient step, projection onto the eps ball and the box
            step = grad / _bcast(gflat.norm(p=2, dim=1).clamp_min(FMN_GRAD_FLOOR), grad)
            delta = _project_ball_and_box(delta + alpha * step, x0, norm, eps)
        adv_inputs = inputs.clone()
        adv_inputs[idx] = torch.where(_bcast(torch.isfinite(best_norm), x0), best_adv, x0)
        return finalize(view, inputs, adv_inputs, labels, norm=norm, eps=None, targets=targets,
                        num_iterations=num_steps)


def fmn(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str = "l2",
    num_steps: int = 100,
    targets: torch.Tensor | None = None,
    alpha_init: float = FMN_ALPHA_INIT,
    alpha_final: float | None = None,
    gamma_init: float = FMN_GAMMA_INIT,
    gamma_final: float = FMN_GAMMA_FINAL,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021, Alg. 1), L2, Linf or L1.

    Parameters
    ----------
    model : nn.Module
        Returns logits ``(N, K)``; differentiated w.r.t. its input (eval mode, frozen parameters,
        its state restored afterwards).
    inputs : Tensor (N, ...)
        Values in ``[0, 1]``; never modified.
    labels : int64 Tensor (N,)
    norm : {"l2", "linf", "l1"}, default "l2"
        The norm that is minimised.
    num_steps : int, default 100
        Gradient steps (foolbox ``FMNAttackLp(steps=100)``); the point after the last step is
        evaluated too.
    targets : int64 Tensor (N,), optional
        Targeted attack: success means "predicted as the target".
    alpha_init, alpha_final : float, default 1.0 and ``alpha_init / 100``
        Step size, cosine-annealed from ``alpha_init`` to ``alpha_final`` (Alg. 1 line 11;
        foolbox ``max_stepsize=1.0``, ``min_stepsize = max_stepsize / 100``).
    gamma_init, gamma_final : float in (0, 1), default 0.05 and 0.001
        The eps step: ``eps`` is multiplied by ``1 - gamma`` / ``1 + gamma``; cosine-annealed
        (Alg. 1 line 4; foolbox anneals ``gamma=0.05`` to 0.001).
    generator : None
        Unused (FMN is deterministic); accepted for the common attack signature.

    Returns
    -------
    AttackResult
        ``eps`` is ``None``; ``norms`` are the smallest adversarial norms found (0 where none was
        found: the input is returned). Examples the model already misclassifies are unchanged.

    Notes
    -----
    With ``L(x) = max_{j != y} z_j - z_y`` (untargeted) or ``z_t - max_{j != t} z_j`` (targeted),
    positive exactly when ``x`` is adversarial, each step ``k`` of Alg. 1 does, at ``x0 + delta``:

    * keep ``delta`` if adversarial and smaller than the best so far;
    * ``eps <- min(eps (1 - gamma_k), ||delta*||)`` if adversarial, else ``eps (1 + gamma_k)`` once
      an adversarial point was found, else ``||delta|| + |L| / ||grad L||_q`` (the linearised
      distance to the boundary, ``q`` the dual norm: L2 -> L2, Linf -> L1, L1 -> Linf); ``eps``
      never exceeds the largest norm the box allows;
    * ``delta <- delta + alpha_k grad L / ||grad L||_2``, then the Euclidean projection onto the
      intersection of the ``eps`` ball of ``norm`` and the box (:func:`_project_ball_and_box`;
      for L1 a soft-threshold within the box, the box-aware form of Duchi et al. 2008).

    ``gamma_k`` and ``alpha_k`` follow ``h(a0, aK, k) = aK + (a0 - aK)(1 + cos(pi k / K)) / 2``.

    Deviations: before the first adversarial point the radius grows by at least the factor
    ``1 + gamma_k`` (the reference sets it to ``||delta|| + |L| / ||grad L||_q`` alone, which
    stalls forever on a point exactly on a linear boundary, where ``L = 0`` but the tie is not
    adversarial); no warm start from another attack's point (the paper's optional binary search,
    Sec. 3); the last iterate is evaluated once more (the reference stops after the step). The
    reference projects onto the ball and then clips to the box; that wastes the radius on
    coordinates the box cuts and stalls when the best coordinates sit on a face (every L1
    example of ``linear_problem`` in the tests; on the digits MLP of the tests it leaves 27% of
    the examples unbroken in L1 and 5% in L2 after 100 steps, against none here). For Linf both
    orders give the same point.

    References
    ----------
    M. Pintor, F. Roli, W. Brendel and B. Biggio. Fast minimum-norm adversarial attacks through
    adaptive norm constraints. NeurIPS 2021. Reference code: pralab/Fast-Minimum-Norm-FMN-Attack,
    foolbox ``attacks/fast_minimum_norm.py``.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> res = fmn(model, torch.rand(2, 4), torch.tensor([0, 1]), norm="linf", num_steps=20)
    >>> res.norm
    'linf'
    """
    norm = check_norm(norm)
    num_steps = check_int("num_steps", num_steps, low=1)
    alpha_init = check_number("alpha_init", alpha_init, low=0.0, low_inclusive=False)
    if alpha_final is None:
        alpha_final = alpha_init * FMN_ALPHA_FINAL_RATIO
    alpha_final = check_number("alpha_final", alpha_final, low=0.0, low_inclusive=False)
    gamma_init = check_number("gamma_init", gamma_init, low=0.0, high=1.0, low_inclusive=False,
                              high_inclusive=False)
    gamma_final = check_number("gamma_final", gamma_final, low=0.0, high=1.0, low_inclusive=False,
                               high_inclusive=False)
    inputs, labels, targets = check_attack_args(inputs, labels, targets=targets, generator=generator)
    return _fmn_impl(model, inputs, labels, targets, norm=norm, num_steps=num_steps,
                     alpha_init=alpha_init, alpha_final=alpha_final, gamma_init=gamma_init,
                     gamma_final=gamma_final)


@ATTACKS.register("deepfool")
class DeepFool(Attack):
    """Thin class for :func:`deepfool` (settings stored, validated when called)."""

    function = staticmethod(deepfool)
    name = "deepfool"


@ATTACKS.register("fmn")
class FMN(Attack):
    """Thin class for :func:`fmn` (settings stored, validated when called)."""

    function = staticmethod(fmn)
    name = "fmn"
