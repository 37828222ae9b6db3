"""What the adversarial-training objectives share: the inner maximisation, eps ramp-up, AWP,
GAIRAT weights and the per-epoch robust-accuracy metric.

Private to :mod:`robustlab.adversarial.training` (which documents the public objectives); the
inner maximisation uses the attack core's primitives (:func:`~robustlab.adversarial._core.project`,
:func:`~robustlab.adversarial._core.normalize_direction`,
:func:`~robustlab.adversarial._core.random_in_ball`) rather than
:func:`robustlab.adversarial.gradient.pgd` because training needs what an evaluation attack must
not do: run the model in *train* mode where the reference code does (batch-norm batch
statistics, as in Madry et al.'s and Wong et al.'s code), maximise other losses than CE (TRADES'
KL), count GAIRAT's geometry value, and skip the query bookkeeping and output checks on every
step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from robustlab._checks import check_choice, check_int, check_number, fail
from robustlab._constants import (
    ADV_TRAIN_STEP_FRACTION,
    AWP_NORM_EPS,
    VAL_ROBUST_MAX_EXAMPLES,
    VAL_ROBUST_NUM_STEPS,
)
from robustlab._model_state import preserve_state
from robustlab.adversarial._core import (
    NORMS,
    check_eps,
    check_norm,
    check_unit_box,
    normalize_direction,
    project,
    randn,
    random_in_ball,
)
from robustlab.data.dataset import Dataset

__all__ = [
    "ATTACK_MODES",
    "START_KINDS",
    "awp_perturbation",
    "batch_stats_frozen",
    "check_training_data",
    "eps_at",
    "gair_weights",
    "inner_maximize",
    "kl_per_example",
    "perturbed_model",
    "robust_accuracy_metric",
]

#: ``attack_mode``: the model's mode while the inner maximisation runs.
ATTACK_MODES: tuple[str, ...] = ("train", "eval")
#: ``start``: where the inner maximisation starts.
START_KINDS: tuple[str, ...] = ("uniform", "normal", "zero")

LossFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- checks
def check_threat_model(eps: Any, norm: Any, num_steps: Any, step_size: Any, *,
                       allowed_norms: tuple[str, ...] = NORMS, min_steps: int = 1
                       ) -> tuple[float, str, int, float | None]:
    """Validate ``eps``, ``norm``, ``num_steps`` and ``step_size`` of a training objective."""
    eps = check_eps(eps)
    norm = check_norm(norm, allowed=allowed_norms)
    if norm == "linf" and eps > 1:
        fail("eps", "at most 1 for the linf norm (inputs lie in [0, 1])", eps)
    num_steps = check_int("num_steps", num_steps, low=min_steps)
    if step_size is not None:
        step_size = check_number("step_size", step_size, low=0.0, low_inclusive=False)
    return eps, norm, num_steps, step_size


def check_training_data(train: Dataset, method: str) -> None:
    """Adversarial training perturbs inputs in ``[0, 1]``: check the data's first batch."""
    first = next(iter(train.batches(min(len(train), 256))))
    check_unit_box(f"train (inputs of {method!r})", first.inputs)


def check_trainable(model: torch.nn.Module, method: str) -> None:
    if not any(p.requires_grad for p in model.parameters()):
        fail("model", f"a model with trainable parameters for the {method!r} method", "a model without any",
             describe_got=False)


# --------------------------------------------------------------------------- inner maximisation
@contextmanager
def attack_mode_of(model: torch.nn.Module, mode: str) -> Iterator[None]:
    """Parameters frozen (gradients w.r.t. inputs only) and ``mode`` set; the caller's state restored."""
    with preserve_state(model):
        model.train(mode == "train")
        for p in model.parameters():
            p.requires_grad_(False)
        yield


def _start(x: torch.Tensor, kind: str, norm: str, eps: float, generator: torch.Generator,
           normal_std: float) -> torch.Tensor:
    if kind == "uniform":
        delta = random_in_ball(x, norm, eps, generator)
    elif kind == "normal":
        delta = normal_std * randn(tuple(x.shape), generator, x)
    else:
        delta = torch.zeros_like(x)
    delta = project(delta, norm, eps)
    return (x + delta).clamp(0, 1) - x


def inner_maximize(
    model: torch.nn.Module,
    x: torch.Tensor,
    loss_fn: LossFn,
    *,
    eps: float,
    norm: str,
    num_steps: int,
    step_size: float,
    start: str,
    generator: torch.Generator,
    mode: str,
    normal_std: float = 0.0,
    labels_for_kappa: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Projected steepest ascent of ``loss_fn(logits)`` (per example) in the ``norm`` ball.

    ``x_{t+1} = clip_[0,1](x + P_eps(x_t + step_size * dir(grad) - x))`` with ``dir`` the unit
    steepest-ascent direction (sign for linf, normalised gradient for L2), started from
    ``start``. Returns the detached adversarial inputs and, when ``labels_for_kappa`` is given,
    GAIRAT's geometry value ``kappa`` (number of iterates classified correctly, counted before
    each step as in GAIRAT's ``attack_generator.GA_PGD``).
    """
    if eps == 0 or num_steps == 0:
        delta = _start(x, start, norm, eps, generator, normal_std) if eps > 0 else torch.zeros_like(x)
        kappa = None if labels_for_kappa is None else torch.zeros(x.shape[0], device=x.device)
        return (x + delta).detach(), kappa
    kappa = None if labels_for_kappa is None else torch.zeros(x.shape[0], device=x.device)
    with attack_mode_of(model, mode):
        delta = _start(x, start, norm, eps, generator, normal_std)
        for _ in range(num_steps):
            x_adv = (x + delta).detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(x_adv)
                loss = loss_fn(logits)
                grad, = torch.autograd.grad(loss.sum(), x_adv)
            if kappa is not None:
                kappa += (logits.detach().argmax(dim=1) == labels_for_kappa).to(kappa.dtype)
            delta = delta + step_size * normalize_direction(grad, norm)
            delta = project(delta, norm, eps)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach(), kappa


def kl_per_example(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(p) || softmax(q))`` per example (``(N,)``), from logits."""
    p_log = F.log_softmax(p_logits, dim=1)
    return (p_log.exp() * (p_log - F.log_softmax(q_logits, dim=1))).sum(dim=1)


def default_step_size(eps: float) -> float:
    return ADV_TRAIN_STEP_FRACTION * eps


def eps_at(eps: float, *, warmup_epochs: int, step: int, steps_per_epoch: int) -> float:
    """Linear eps ramp-up: ``eps * min(1, (step + 1) / (warmup_epochs * steps_per_epoch))``.

    Per optimizer step, so the radius grows smoothly within an epoch (as the eps warm-up in
    tml-epfl/understanding-fast-adv-training ``train.py``); ``warmup_epochs = 0`` is no ramp.
    """
    if warmup_epochs <= 0:
        return eps
    return eps * min(1.0, (step + 1) / (warmup_epochs * steps_per_epoch))


# --------------------------------------------------------------------------- batch norm
@contextmanager
def batch_stats_frozen(model: torch.nn.Module) -> Iterator[None]:
    """Batch-norm layers use batch statistics but leave their running averages unchanged.

    ``momentum = 0`` for the block (running <- 1 * running + 0 * batch), then the momentum and
    ``num_batches_tracked`` are restored. Unlike copying saved buffers back after the forward
    pass, this never modifies a tensor autograd saved for the backward pass.
    """
    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in layers]
    try:
        for m in layers:
            m.momentum = 0.0
        yield
    finally:
        with torch.no_grad():
            for m, momentum, tracked in saved:
                m.momentum = momentum
                if tracked is not None:
                    m.num_batches_tracked.copy_(tracked)


# --------------------------------------------------------------------------- AWP
def awp_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The tensors AWP perturbs: trainable weights with at least 2 dimensions (conv/linear kernels).

    Biases and normalisation parameters (1-d) are left alone, as in csdongxian/AWP
    ``utils_awp.diff_in_weights`` (``if len(old_w.size()) <= 1: continue``).
    """
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]


def awp_perturbation(model: torch.nn.Module, loss_of: Callable[[Callable[[torch.Tensor], torch.Tensor]], torch.Tensor],
                     gamma: float) -> dict[str, torch.Tensor]:
    """AWP's weight perturbation ``v``, one tensor per perturbed layer (Wu et al. 2020, Eq. 6-7).

    One ascent step on the training loss in weight space, scaled *per layer* to
    ``||v_l|| = gamma * ||w_l||``: ``v_l = gamma * ||w_l|| * g_l / ||g_l||`` with
    ``g_l = d loss / d w_l`` at the current weights. The reference computes it on a proxy copy
    of the model (so the real model's batch-norm statistics do not move); here
    :func:`batch_stats_frozen` keeps them unchanged during the extra pass. ``loss_of`` takes
    a forward function and returns the scalar loss to maximise.
    """
    named = awp_parameters(model)
    with batch_stats_frozen(model), torch.enable_grad():
        loss = loss_of(model)
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for (name, p), g in zip(named, grads):
            if g is None:
                continue
            scale = gamma * p.norm() / (g.norm() + AWP_NORM_EPS)
            out[name] = (g * scale).detach()
    return out


def perturbed_model(model: torch.nn.Module, perturbation: Mapping[str, torch.Tensor]
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward function computing ``model`` at weights ``w + v`` *without touching* ``w``.

    :func:`torch.func.functional_call` with ``{name: w + v}``: gradients of its outputs reach the
    real parameters through ``w + v`` (so the optimizer step uses the gradient at the perturbed
    point, as AWP's ``perturb -> backward -> restore -> step`` does), while the parameters are
    never modified in place — the model cannot be left perturbed, even by an exception.
    """
    params = dict(model.named_parameters())

    def forward(x: torch.Tensor) -> torch.Tensor:
        moved = {n: params[n] + v for n, v in perturbation.items()}
        return torch.func.functional_call(model, moved, (x,))

    return forward


# --------------------------------------------------------------------------- GAIRAT
def gair_weights(kappa: torch.Tensor, num_steps: int, lam: float) -> torch.Tensor:
    """GAIRAT's instance weights from the geometry value ``kappa`` (Zhang et al. 2021, Eq. 6).

    ``w = (1 + tanh(lam + 5 * (1 - 2 * kappa / K))) / 2`` with ``K`` the number of PGD steps
    (``int(K / 2)`` in the reference ``GAIR.py`` Tanh branch), normalised so the weights of a
    batch sum to its size. Small ``kappa`` (attacked quickly, close to the decision boundary)
    gets a large weight.
    """
    half = max(int(num_steps / 2), 1)
    w = (torch.tanh(lam + (half - kappa) * 5.0 / half) + 1) / 2
    return w * w.numel() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


# --------------------------------------------------------------------------- evaluation hook
def robust_accuracy_metric(
    *,
    eps: float,
    norm: str = "linf",
    num_steps: int = VAL_ROBUST_NUM_STEPS,
    step_size: float | None = None,
    max_examples: int | None = VAL_ROBUST_MAX_EXAMPLES,
    seed: int = 0,
    batch_size: int = 256,
) -> Callable[[torch.nn.Module, Dataset], dict[str, float]]:
    """A ``val_metrics`` callable for :meth:`robustlab.training.Trainer.fit`: PGD robust accuracy.

    Each call runs :func:`robustlab.adversarial.gradient.pgd` (eval mode, frozen parameters, one
    random start drawn from a generator seeded with ``seed`` — the same start every epoch) on the
    first ``max_examples`` validation examples and returns ``{"robust_acc": fraction robust}``
    (stored as ``val_robust_acc`` in the history). PGD-10 is a *training curve*, not a robustness
    evaluation: report final numbers with :func:`robustlab.adversarial.evaluate.evaluate`.

    Parameters
    ----------
    eps : float >= 0
    norm : {"linf", "l2", "l1"}, default "linf"
    num_steps : int >= 1, default 10
    step_size : float > 0 or None
        ``None``: PGD's own default (``2.5 * eps / num_steps``).
    max_examples : int >= 1 or None, default 512
        ``None`` attacks every validation example.
    seed : int, default 0
    batch_size : int, default 256
    """
    eps = check_eps(eps)
    norm = check_norm(norm)
    num_steps = check_int("num_steps", num_steps, low=1)
    if step_size is not None:
        step_size = check_number("step_size", step_size, low=0.0, low_inclusive=False)
    if max_examples is not None:
        max_examples = check_int("max_examples", max_examples, low=1)
    seed = check_int("seed", seed, low=0)
    batch_size = check_int("batch_size", batch_size, low=1)

    def metric(model: torch.nn.Module, val: Dataset) -> dict[str, float]:
        from robustlab.adversarial.gradient import pgd

        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        n = len(val) if max_examples is None else min(len(val), max_examples)
        subset = val.subset(torch.arange(n))
        generator = torch.Generator().manual_seed(seed)
        robust = 0
        for batch in subset.batches(batch_size):
            x, y = batch.inputs.to(device), batch.labels.to(device)
            result = pgd(model, x, y, eps=eps, norm=norm, num_steps=num_steps, step_size=step_size,
                         generator=generator)
            robust += int(result.robust.sum())
        return {"robust_acc": robust / max(n, 1)}

    return metric


def finite_or_fail(name: str, value: float) -> float:
    if not math.isfinite(value):
        fail(name, "a finite number", value)
    return value


def check_mode(attack_mode: Any) -> str:
    return check_choice("attack_mode", attack_mode, ATTACK_MODES)
