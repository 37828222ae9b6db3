"""Optimizers and learning-rate schedules built from a :class:`~robustlab.training.TrainConfig`.

Optimizers are torch's own (:class:`torch.optim.SGD`, :class:`torch.optim.AdamW`); schedules are
one :class:`torch.optim.lr_scheduler.LambdaLR` whose factor is :func:`lr_factor`. The scheduler is
stepped after **every optimizer step** (iteration), so warm-up and cosine decay are smooth
within an epoch, while ``"step"`` milestones are given in epochs and therefore change the rate
exactly at epoch boundaries (the same sequence as stepping per epoch).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from robustlab._checks import check_bool, check_int, check_number, fail
from robustlab._constants import ASAM_ETA, SAM_NORM_EPS

if TYPE_CHECKING:
    from robustlab.training.config import TrainConfig

__all__ = ["OPTIMIZER_NAMES", "SCHEDULE_NAMES", "build_optimizer", "build_scheduler", "lr_factor",
           "sam_perturb", "sam_restore"]


def _sgd(params: list[Any], config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           nesterov=config.nesterov, weight_decay=config.weight_decay)


def _adamw(params: list[Any], config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


_OPTIMIZERS: dict[str, Callable[[list[Any], TrainConfig], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adamw": _adamw,
}

OPTIMIZER_NAMES: tuple[str, ...] = tuple(sorted(_OPTIMIZERS))
SCHEDULE_NAMES: tuple[str, ...] = ("constant", "cosine", "step", "linear-decay")


def build_optimizer(params: Iterable[torch.Tensor | Mapping[str, Any]], config: TrainConfig
                    ) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` over ``params``.

    Parameters
    ----------
    params : iterable of Tensor or dict
        Tensors to optimise, or torch parameter-group dicts (``{"params": [...], ...}``) whose
        own settings override the config's. Plain tensors form the first group.
    config : TrainConfig
        ``optimizer``, ``lr``, ``momentum``, ``nesterov``, ``weight_decay``.
    """
    tensors: list[torch.Tensor] = []
    groups: list[dict[str, Any]] = []
    for p in params:
        if isinstance(p, Mapping):
            groups.append(dict(p))
        else:
            tensors.append(p)
    all_groups = ([{"params": tensors}] if tensors else []) + groups
    if not all_groups:
        fail("params", "at least one trainable tensor", "none", describe_got=False)
    return _OPTIMIZERS[config.optimizer](all_groups, config)


def lr_factor(config: TrainConfig, iteration: int, *, steps_per_epoch: int) -> float:
    """Multiplier of ``config.lr`` for optimizer step ``iteration`` (0-based).

    Notes
    -----
    With ``T = epochs * steps_per_epoch`` iterations, ``W = warmup_epochs * steps_per_epoch``:

    * warm-up (``t < W``): ``(t + 1) / W``, for every schedule;
    * ``"constant"``: ``1``;
    * ``"cosine"``: ``(1 + cos(pi * (t - W) / (T - W))) / 2`` — from 1 down towards 0
      (Loshchilov & Hutter, 2017, SGDR, Eq. 5 with one cycle and ``eta_min = 0``);
    * ``"step"``: ``gamma ** m`` where ``m`` is the number of milestones ``<= t // steps_per_epoch``;
    * ``"linear-decay"``: ``1 - (t - W) / (T - W)`` — straight down to 0 at the end. With a long
      warm-up this is a triangular "slow start, fast decay" schedule, the one Jeddi et al. (2020,
      "A simple fine-tuning is all you need", arXiv:2012.13628) propose for adversarial
      fine-tuning of a pretrained model (the split between the phases, ``warmup_epochs``,
      is the user's choice; the paper's exact values were not checked here).
    """
    check_int("iteration", iteration, low=0)
    check_int("steps_per_epoch", steps_per_epoch, low=1)
    warmup = config.warmup_epochs * steps_per_epoch
    if iteration < warmup:
        return (iteration + 1) / warmup
    if config.schedule == "cosine":
        total = config.epochs * steps_per_epoch
        progress = min(1.0, (iteration - warmup) / (total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.schedule == "linear-decay":
        total = config.epochs * steps_per_epoch
        return max(0.0, 1.0 - (iteration - warmup) / (total - warmup))
    if config.schedule == "step":
        epoch = iteration // steps_per_epoch
        return config.gamma ** bisect.bisect_right(config.milestones, epoch)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, *, steps_per_epoch: int
                    ) -> LambdaLR:
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` following :func:`lr_factor`.

    Call ``scheduler.step()`` after every ``optimizer.step()``. The factor is recomputed from the
    iteration count (not chained), so a scheduler restored with ``load_state_dict`` continues
    exactly.
    """
    check_int("steps_per_epoch", steps_per_epoch, low=1)

    def factor(iteration: int) -> float:  # a plain function: LambdaLR's state_dict skips it
        return lr_factor(config, iteration, steps_per_epoch=steps_per_epoch)

    return LambdaLR(optimizer, factor)


def sam_perturb(params: Sequence[torch.Tensor], *, rho: float, adaptive: bool = False,
                eta: float = ASAM_ETA) -> list[torch.Tensor | None]:
    """SAM's ascent step: move every parameter with a gradient to ``w + e(w)``, in place.

    Parameters
    ----------
    params : sequence of Tensor
        The trained tensors, with ``.grad`` holding the gradient of the loss at ``w``; tensors
        without a gradient are not moved.
    rho : float > 0
        Radius of the neighbourhood.
    adaptive : bool, default False
        ASAM's scale-invariant neighbourhood.
    eta : float >= 0, default 0.01
        ASAM's ``eta`` in ``T_w = |w| + eta``.

    Returns
    -------
    list of Tensor or None
        A copy of the original ``w`` per moved tensor (None where there was no gradient);
        :func:`sam_restore` copies it back, so the weights return bit-exactly (``(w + e) - e``
        would not, in floating point).

    Notes
    -----
    SAM (Foret et al., 2021, Eq. 2, with ``p = 2``):

    .. math:: \\hat\\epsilon(w) = \\rho\\, \\frac{g}{\\|g\\|_2},\\qquad g = \\nabla_w L(w)

    so ``||e||_2 = rho`` over all tensors together. ASAM (Kwon et al., 2021, Sec. 4) with the
    element-wise operator ``T_w = |w| + eta``:

    .. math:: \\hat\\epsilon(w) = \\rho\\, \\frac{T_w^2\\, g}{\\|T_w\\, g\\|_2}

    so ``||T_w^{-1} e||_2 = rho``. The gradient at ``w + e`` is then used for the base optimizer's
    step at ``w`` (Foret et al., Alg. 1). ``SAM_NORM_EPS`` is added to the norm to avoid 0/0.
    ASAM's code applies ``T_w`` to weight tensors only (names containing "weight") and leaves
    biases with ``T_w = 1``; here every tensor gets ``|w| + eta`` (tensors have no names here).

    References
    ----------
    Foret, Kleiner, Mobahi, Neyshabur. "Sharpness-aware minimization for efficiently improving
    generalization." ICLR 2021, Sec. 2. Kwon, Kim, Park, Choi. "ASAM: Adaptive sharpness-aware
    minimization for scale-invariant learning of deep neural networks." ICML 2021, Sec. 4.
    """
    rho = check_number("rho", rho, low=0.0, low_inclusive=False)
    adaptive = check_bool("adaptive", adaptive)
    eta = check_number("eta", eta, low=0.0)
    with torch.no_grad():
        scales = [None if p.grad is None else (p.abs() + eta if adaptive else None) for p in params]
        norms = [torch.linalg.vector_norm(p.grad if s is None else p.grad * s)
                 for p, s in zip(params, scales) if p.grad is not None]
        if not norms:
            return [None] * len(params)
        device = norms[0].device
        total = torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))
        factor = rho / (total + SAM_NORM_EPS)
        originals: list[torch.Tensor | None] = []
        for p, s in zip(params, scales):
            if p.grad is None:
                originals.append(None)
                continue
            e = p.grad * factor.to(p.device, p.grad.dtype)
            if s is not None:
                e = e * s * s
            originals.append(p.detach().clone())
            p.add_(e.to(p.dtype))
    return originals


def sam_restore(params: Sequence[torch.Tensor], originals: Sequence[torch.Tensor | None]) -> None:
    """Undo :func:`sam_perturb`: copy the original values back into every moved tensor."""
    with torch.no_grad():
        for p, w in zip(params, originals):
            if w is not None:
                p.copy_(w)
