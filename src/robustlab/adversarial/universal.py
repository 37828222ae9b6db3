"""Universal adversarial perturbations: one ``delta`` that fools the model on most inputs.

A universal perturbation ``v`` (shape of one input, no batch dimension) is added to every input:
``x + v``, clamped to ``[0, 1]``. Threat model: ``||v||_p <= eps`` for ``norm`` ``"linf"`` or
``"l2"``, white box. Its *fooling rate* on labelled data is the fraction of inputs misclassified
after adding ``v``: ``mean(argmax f(clamp(x + v)) != y)``. (Moosavi-Dezfooli et al. count
prediction changes, ``k(x + v) != k(x)``; with labels, misclassification is what a robustness
evaluation reports, and with ``v = 0`` the fooling rate is the clean error.)

Two solvers, chosen by ``method``:

* ``"deepfool"`` — Moosavi-Dezfooli et al., CVPR 2017, Alg. 1: pass over the data in a random
  order; for each point still classified correctly under ``v``, find a minimal perturbation
  ``dv`` of ``x + v`` with DeepFool and set ``v <- P_{p, eps}(v + dv)``; stop when the fooling
  rate reaches ``target_fooling_rate`` (``1 - delta`` in the paper) or after ``max_passes``.
* ``"sgd"`` — Shafahi et al., AAAI 2020, Alg. 1: minibatch gradient ascent on the mean clipped
  cross-entropy ``min(CE(f(x + v), y), beta)`` (their clipped loss), with sign steps (Linf) or
  normalised-gradient steps (L2) of ``step_size``, each followed by the projection onto the ball.

References
----------
.. [1] S.-M. Moosavi-Dezfooli, A. Fawzi, O. Fawzi, P. Frossard, "Universal adversarial
   perturbations", CVPR 2017, Alg. 1. Reference code: LTS4/universal ``python/universal_pert.py``.
.. [2] A. Shafahi, M. Najibi, Z. Xu, J. Dickerson, L. S. Davis, T. Goldstein, "Universal
   Adversarial Training", AAAI 2020, Alg. 1 and its clipped loss.
.. [3] S.-M. Moosavi-Dezfooli, A. Fawzi, P. Frossard, "DeepFool: a simple and accurate method to
   fool deep neural networks", CVPR 2016, Alg. 2 and Sec. 3.3 (Lp version).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from robustlab._checks import (
    check_choice,
    check_int,
    check_number,
    check_probability,
    fail,
)
from robustlab._constants import (
    EVAL_BATCH_SIZE,
    UAP_DEEPFOOL_GUARD,
    UAP_DEEPFOOL_OVERSHOOT,
    UAP_DEEPFOOL_STEPS,
    UAP_MAX_PASSES,
    UAP_SGD_BATCH_SIZE,
    UAP_SGD_LOSS_CLIP,
    UAP_SGD_STEP_FACTOR,
    UAP_TARGET_FOOLING_RATE,
)
from robustlab.adversarial._core import (
    ATTACKS,
    Attack,
    AttackResult,
    ModelView,
    ce_loss,
    check_attack_args,
    check_eps,
    check_norm,
    finalize,
    flat,
    model_view,
    normalize_direction,
    project,
)
from robustlab.errors import InvalidTypeError, ShapeError

__all__ = [
    "UAP",
    "UAP_METHODS",
    "UAP_NORMS",
    "UniversalPerturbation",
    "apply_universal",
    "universal_attack",
    "universal_perturbation",
]

#: Solvers of :func:`universal_perturbation`.
UAP_METHODS: tuple[str, ...] = ("deepfool", "sgd")

#: Norms a universal perturbation can be bounded in.
UAP_NORMS: tuple[str, ...] = ("linf", "l2")


@dataclass(frozen=True)
class UniversalPerturbation:
    """A universal perturbation and how well it did on the data it was computed on.

    Attributes
    ----------
    perturbation : Tensor, shape of one input (e.g. ``(C, H, W)``)
        ``v`` with ``||v||_norm <= eps``; add it with :func:`apply_universal`.
    fooling_rate : float
        Fraction of the given inputs misclassified after adding ``v`` (clamped to ``[0, 1]``).
    norm : str
        ``"linf"`` or ``"l2"``.
    eps : float
        Radius of the ball ``v`` lies in.
    passes : int
        Passes over the data the solver made.
    method : str
        ``"deepfool"`` or ``"sgd"``.
    """

    perturbation: torch.Tensor
    fooling_rate: float
    norm: str
    eps: float
    passes: int
    method: str


# --------------------------------------------------------------------------- public API
def apply_universal(perturbation: torch.Tensor | UniversalPerturbation,
                    inputs: torch.Tensor) -> torch.Tensor:
    """``clamp(inputs + v, 0, 1)`` for every input; ``v`` broadcasts over the batch.

    Parameters
    ----------
    perturbation : Tensor (shape of one input) or UniversalPerturbation
    inputs : Tensor (N, ...)
        Values in ``[0, 1]``; never written.
    """
    v = perturbation.perturbation if isinstance(perturbation, UniversalPerturbation) else perturbation
    if not isinstance(v, torch.Tensor):
        fail("perturbation", "a tensor or a UniversalPerturbation", v, error=InvalidTypeError)
    if not isinstance(inputs, torch.Tensor):
        fail("inputs", "a tensor", inputs, error=InvalidTypeError)
    if tuple(v.shape) != tuple(inputs.shape[1:]):
        raise ShapeError(
            f"The 'perturbation' parameter must have the shape of one input, "
            f"{tuple(inputs.shape[1:])}. Got shape {tuple(v.shape)} instead.",
            expected=tuple(inputs.shape[1:]), got=tuple(v.shape))
    return (inputs + v.to(device=inputs.device, dtype=inputs.dtype)).clamp(0.0, 1.0)


def universal_perturbation(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    method: str = "sgd",
    max_passes: int = UAP_MAX_PASSES,
    target_fooling_rate: float = UAP_TARGET_FOOLING_RATE,
    batch_size: int = UAP_SGD_BATCH_SIZE,
    step_size: float | None = None,
    loss_clip: float = UAP_SGD_LOSS_CLIP,
    deepfool_steps: int = UAP_DEEPFOOL_STEPS,
    overshoot: float = UAP_DEEPFOOL_OVERSHOOT,
    generator: torch.Generator,
) -> UniversalPerturbation:
    """Compute one perturbation ``v``, ``||v||_norm <= eps``, that fools ``model`` on most inputs.

    Parameters
    ----------
    model : nn.Module
        Returns logits ``(N, K)``; eval mode and frozen parameters during the attack, restored.
    inputs : Tensor (N, ...)
        The data ``v`` is fitted on; values in ``[0, 1]``, never written.
    labels : int64 Tensor (N,)
    eps : float
        Radius of the ``norm`` ball (``xi`` in Moosavi-Dezfooli et al.; ``eps`` in Shafahi et al.).
    norm : {"linf", "l2"}, default "linf"
    method : {"sgd", "deepfool"}, default "sgd"
        ``"deepfool"``: Moosavi-Dezfooli et al. 2017, Alg. 1; ``"sgd"``: Shafahi et al. 2020,
        Alg. 1 (13x faster than the DeepFool method on ImageNet, per their abstract).
    max_passes : int, default 20
        Most passes (epochs) over the data. The reference loops until the target is met
        (``max_iter_uni = inf``); a bound keeps the cost predictable.
    target_fooling_rate : float in [0, 1], default 0.8
        Stop once the fooling rate on ``inputs`` reaches it (``1 - delta``, ``delta = 0.2`` in
        universal_pert.py).
    batch_size : int, default 32
        Minibatch of the SGD variant (small enough for several steps per pass on a few hundred
        examples). Ignored by ``"deepfool"``.
    step_size : float, optional
        SGD step; default ``2.5 * eps / (max_passes * number of minibatches)``, the rule of
        Madry et al. 2018 (App. A) that lets the iterate cross the ball once in the step budget.
        Ignored by ``"deepfool"``.
    loss_clip : float, default 9.0
        ``beta`` of Shafahi et al.'s clipped loss ``min(CE, beta)``: examples already
        fooled with a large loss stop contributing. Ignored by ``"deepfool"``.
    deepfool_steps : int, default 10
        DeepFool steps per point (universal_pert.py ``max_iter_df``); a run that does not fool
        the model within them does not update ``v`` (universal_pert.py's test is the slightly
        stricter ``iter < max_iter_df - 1``).
    overshoot : float, default 0.02
        DeepFool overshoot (universal_pert.py). Ignored by ``"sgd"``.
    generator : torch.Generator
        Required: the order of the data in each pass is drawn from it.

    Returns
    -------
    UniversalPerturbation
        The perturbation with the highest fooling rate seen at the end of a pass (the one that
        met the target when it was met), its fooling rate and the passes made.

    Notes
    -----
    DeepFool step (Moosavi-Dezfooli et al. 2016, Alg. 2 with the Lp rule of Sec. 3.3; LTS4/DeepFool
    ``adversarial_perturbation.m``, ``project_on_polyhedron``): at
    ``x_i = clamp(x + v + (1 + overshoot) r)``, with ``w_k = grad Z_k - grad Z_y`` and
    ``f_k = Z_k - Z_y``, choose ``l = argmin_k |f_k| / ||w_k||_q`` (``q`` the dual norm: 1 for
    Linf, 2 for L2) and step ``r += (|f_l| + 1e-4) / ||w_l||_q * dir(w_l)``, ``dir = sign``
    (Linf) or ``w / ||w||_2`` (L2). The ``1e-4`` is not in the reference: points Alg. 1 leaves on
    a boundary have ``|f_l| ~ 0`` and stall without it (see ``UAP_DEEPFOOL_GUARD``).
    universal_pert.py uses the L2 DeepFool step for every ``p``; the Lp rule here is the one the
    DeepFool paper gives for ``p``. :func:`robustlab.adversarial.minimum_norm.deepfool` is not
    called per point: it has no such guard, and on the digits MLP of the tests (5 passes, 5
    seeds) its UAPs fooled 0.14-0.39 of the points at Linf eps=0.2 (0.41-0.56 here) and
    0.48-0.72 at L2 eps=1.5 (0.72-0.83 here), at 1.5-2x the time. Its projection for ``p = 2``
    rescales ``v`` onto the sphere; here ``v`` is projected onto the ball (scaled only when
    outside). Points are perturbed in the box: ``x + v`` is clamped to ``[0, 1]`` everywhere.
    """
    inputs, labels, _ = check_attack_args(inputs, labels, generator=generator, needs_generator=True)
    settings = _check_settings(eps=eps, norm=norm, method=method, max_passes=max_passes,
                               target_fooling_rate=target_fooling_rate, batch_size=batch_size,
                               step_size=step_size, loss_clip=loss_clip,
                               deepfool_steps=deepfool_steps, overshoot=overshoot)
    x = inputs.contiguous()
    with model_view(model, x) as view:
        return _universal_impl(view, x, labels, generator=generator, **settings)


def universal_attack(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    method: str = "sgd",
    max_passes: int = UAP_MAX_PASSES,
    target_fooling_rate: float = UAP_TARGET_FOOLING_RATE,
    batch_size: int = UAP_SGD_BATCH_SIZE,
    step_size: float | None = None,
    loss_clip: float = UAP_SGD_LOSS_CLIP,
    deepfool_steps: int = UAP_DEEPFOOL_STEPS,
    overshoot: float = UAP_DEEPFOOL_OVERSHOOT,
    targets: torch.Tensor | None = None,
    generator: torch.Generator,
) -> AttackResult:
    """Fit a universal perturbation on ``inputs`` and apply it: the ``"uap"`` attack.

    The settings are those of :func:`universal_perturbation`. Every input the model classifies
    correctly gets the same ``v`` (``clamp(x + v, 0, 1)``); inputs it already misclassifies are
    left unchanged (the attack contract: zero perturbation, success). ``success`` comes from a
    forward pass on the result; ``eps`` is the universal radius, so every example's perturbation
    lies in the ball. Untargeted only: ``targets`` must be ``None``.
    """
    if targets is not None:
        fail("targets", "None (a universal perturbation is untargeted)", targets)
    inputs, labels, _ = check_attack_args(inputs, labels, generator=generator, needs_generator=True)
    settings = _check_settings(eps=eps, norm=norm, method=method, max_passes=max_passes,
                               target_fooling_rate=target_fooling_rate, batch_size=batch_size,
                               step_size=step_size, loss_clip=loss_clip,
                               deepfool_steps=deepfool_steps, overshoot=overshoot)
    x = inputs.contiguous()
    with model_view(model, x) as view:
        uap = _universal_impl(view, x, labels, generator=generator, **settings)
        with torch.no_grad():
            correct = view(x).argmax(dim=1) == labels
        adv = torch.where(_bcast(correct, x), apply_universal(uap.perturbation, x), x)
        return finalize(view, x, adv, labels, norm=uap.norm, eps=uap.eps, targets=None,
                        num_iterations=uap.passes)


@ATTACKS.register("uap")
class UAP(Attack):
    """Registered ``"uap"``: stores :func:`universal_attack`'s settings and calls it."""

    function = staticmethod(universal_attack)
    name = "uap"


# --------------------------------------------------------------------------- validation
def _check_settings(*, eps: Any, norm: Any, method: Any, max_passes: Any, target_fooling_rate: Any,
                    batch_size: Any, step_size: Any, loss_clip: Any, deepfool_steps: Any,
                    overshoot: Any) -> dict[str, Any]:
    eps = check_eps(eps)
    return {
        "eps": eps,
        "norm": check_norm(norm, allowed=UAP_NORMS),
        "method": check_choice("method", method, UAP_METHODS),
        "max_passes": check_int("max_passes", max_passes, low=1),
        "target_fooling_rate": check_probability("target_fooling_rate", target_fooling_rate),
        "batch_size": check_int("batch_size", batch_size, low=1),
        "step_size": (None if step_size is None
                   else check_number("step_size", step_size, low=0.0, low_inclusive=False)),
        "loss_clip": check_number("loss_clip", loss_clip, low=0.0, low_inclusive=False),
        "deepfool_steps": check_int("deepfool_steps", deepfool_steps, low=1),
        "overshoot": check_number("overshoot", overshoot, low=0.0),
    }


# --------------------------------------------------------------------------- solvers
def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def _randperm(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A permutation drawn from the caller's generator, moved to ``device``."""
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def _fooling_rate(view: ModelView, x: torch.Tensor, labels: torch.Tensor, v: torch.Tensor) -> float:
    wrong = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], EVAL_BATCH_SIZE):
            stop = min(start + EVAL_BATCH_SIZE, x.shape[0])
            index = torch.arange(start, stop, device=x.device)
            pred = view((x[start:stop] + v).clamp(0.0, 1.0), index).argmax(dim=1)
            wrong += int((pred != labels[start:stop]).sum())
    return wrong / x.shape[0] if x.shape[0] else 0.0


def _universal_impl(view: ModelView, x: torch.Tensor, labels: torch.Tensor, *,
                    generator: torch.Generator, eps: float, norm: str, method: str,
                    max_passes: int, target_fooling_rate: float, batch_size: int,
                    step_size: float | None, loss_clip: float, deepfool_steps: int,
                    overshoot: float) -> UniversalPerturbation:
    if step_size is None:  # Madry et al.'s rule: 2.5 * eps / steps can cross the ball
        num_batches = -(-x.shape[0] // batch_size)
        step_size = UAP_SGD_STEP_FACTOR * eps / max(max_passes * num_batches, 1)
    v = torch.zeros(x.shape[1:], dtype=x.dtype, device=x.device)
    best_v, best_rate = v, _fooling_rate(view, x, labels, v)
    one_pass: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    if method == "deepfool":
        def one_pass(v: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
            return _deepfool_pass(view, x, labels, v, order, norm=norm, eps=eps,
                                  num_steps=deepfool_steps, overshoot=overshoot)
    else:
        def one_pass(v: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
            return _sgd_pass(view, x, labels, v, order, norm=norm, eps=eps, step_size=step_size,
                             loss_clip=loss_clip, batch_size=batch_size)
    passes = 0
    while best_rate < target_fooling_rate and passes < max_passes and eps > 0:
        v = one_pass(v, _randperm(x.shape[0], generator, x.device))
        passes += 1
        rate = _fooling_rate(view, x, labels, v)
        if rate > best_rate:
            best_v, best_rate = v, rate
    return UniversalPerturbation(perturbation=best_v.detach().clone(), fooling_rate=best_rate,
                                 norm=norm, eps=eps, passes=passes, method=method)


def _project_one(v: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    return project(v[None], norm, eps)[0]


def _sgd_pass(view: ModelView, x: torch.Tensor, labels: torch.Tensor, v: torch.Tensor,
              order: torch.Tensor, *, norm: str, eps: float, step_size: float, loss_clip: float,
              batch_size: int) -> torch.Tensor:
    """One epoch of Shafahi et al.'s Alg. 1: ascend the mean clipped CE over each minibatch."""
    for start in range(0, order.numel(), batch_size):
        index = order[start:start + batch_size]
        with torch.enable_grad():
            vg = v.detach().requires_grad_(True)
            logits = view((x[index] + vg).clamp(0.0, 1.0), index)
            loss = ce_loss(logits, labels[index]).clamp_max(loss_clip).mean()
            grad, = torch.autograd.grad(loss, vg)
        step = normalize_direction(grad[None], norm)[0]
        v = _project_one(v + step_size * step, norm, eps)
    return v


def _deepfool_pass(view: ModelView, x: torch.Tensor, labels: torch.Tensor, v: torch.Tensor,
                   order: torch.Tensor, *, norm: str, eps: float, num_steps: int,
                   overshoot: float) -> torch.Tensor:
    """One pass of Moosavi-Dezfooli et al.'s Alg. 1 over the points in ``order``."""
    for i in order.tolist():
        r, converged = _deepfool_point(view, x[i], int(labels[i]), v, i, norm=norm,
                                       num_steps=num_steps, overshoot=overshoot)
        if converged:
            v = _project_one(v + r, norm, eps)
    return v


def _deepfool_point(view: ModelView, x: torch.Tensor, label: int, v: torch.Tensor, i: int, *,
                    norm: str, num_steps: int, overshoot: float) -> tuple[torch.Tensor, bool]:
    """DeepFool (Lp) from ``x + v`` for one point: ``((1 + overshoot) r, converged)``.

    ``converged`` is False, and ``r`` zero, when the point is already misclassified under ``v``
    (Alg. 1 skips it); it is also False when ``num_steps`` steps do not fool the model.
    """
    num_classes = view.num_classes
    if num_classes is None:  # the view has not seen an output yet: one call tells K
        with torch.no_grad():
            num_classes = view((x + v).clamp(0.0, 1.0)[None], torch.tensor([i], device=x.device)).shape[1]
    index = torch.full((num_classes,), i, dtype=torch.long, device=x.device)
    r_tot = torch.zeros_like(x)
    tiny = torch.finfo(x.dtype).tiny
    for it in range(num_steps + 1):
        point = (x + v + (1 + overshoot) * r_tot).clamp(0.0, 1.0)
        z, jac = _logits_and_class_gradients(view, point, index, need_grad=it < num_steps, label=label)
        if int(z.argmax()) != label:
            return (1 + overshoot) * r_tot, it > 0
        if jac is None:
            break
        w = flat(jac - jac[label])
        f = z - z[label]
        dual = (w.abs().sum(dim=1) if norm == "linf" else w.norm(p=2, dim=1)).clamp_min(tiny)
        dist = f.abs() / dual
        dist[label] = float("inf")
        lowest = int(dist.argmin())
        w_l = w[lowest].reshape(x.shape)
        direction = w_l.sign() if norm == "linf" else w_l / dual[lowest]
        r_tot = r_tot + (f[lowest].abs() + UAP_DEEPFOOL_GUARD) / dual[lowest] * direction
    return (1 + overshoot) * r_tot, False


def _logits_and_class_gradients(view: ModelView, point: torch.Tensor, index: torch.Tensor, *,
                                need_grad: bool, label: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits ``(K,)`` at ``point`` and, unless it is misclassified, every logit's gradient ``(K, ...)``.

    One forward pass on ``K`` copies of the point: the diagonal of the ``(K, K)`` logits holds
    ``Z_k`` of copy ``k``, so one backward pass of its sum gives ``grad Z_k`` in row ``k``.
    """
    k = index.numel()
    with torch.enable_grad():
        copies = point.expand((k,) + tuple(point.shape)).clone().requires_grad_(need_grad)
        logits = view(copies, index)
        z = logits.detach()[0]
        if not need_grad or int(z.argmax()) != label:
            return z, None
        jac, = torch.autograd.grad(logits.diagonal().sum(), copies)
    return z, jac
