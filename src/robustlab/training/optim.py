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
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from robustlab._checks import check_int, fail

if TYPE_CHECKING:
    from robustlab.training.config import TrainConfig

__all__ = ["OPTIMIZER_NAMES", "SCHEDULE_NAMES", "build_optimizer", "build_scheduler", "lr_factor"]


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
SCHEDULE_NAMES: tuple[str, ...] = ("constant", "cosine", "step")


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
    * ``"step"``: ``gamma ** m`` where ``m`` is the number of milestones ``<= t // steps_per_epoch``.
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
