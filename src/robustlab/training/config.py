"""Settings of a training run: :class:`TrainConfig`."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from robustlab._checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    fail,
)
from robustlab._constants import DEFAULT_SEED, TRAIN_BATCH_SIZE
from robustlab.errors import InvalidTypeError
from robustlab.training.optim import OPTIMIZER_NAMES, SCHEDULE_NAMES

__all__ = ["TrainConfig"]

#: Fields that do not change the trained weights, so they may differ when resuming a run.
RESUMABLE_CHANGES = frozenset({"eval_every", "checkpoint_every", "device"})

#: Largest seed torch.Generator.manual_seed accepts.
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; every field is validated on construction.

    Parameters
    ----------
    epochs : int >= 1, default 10
    batch_size : int >= 1, default 128
        The last batch of an epoch may be smaller (no example is dropped).
    optimizer : {"sgd", "adamw"}, default "sgd"
    lr : float > 0, default 0.1
        Peak learning rate (reached after warm-up).
    momentum : float in [0, 1), default 0.9
        SGD momentum; ignored by AdamW (which uses torch's default betas).
    nesterov : bool, default False
        Nesterov momentum for SGD; needs ``momentum > 0``.
    weight_decay : float >= 0, default 5e-4
        L2 penalty for SGD, decoupled decay for AdamW; applied to every trainable tensor.
    schedule : {"constant", "cosine", "step", "linear-decay"}, default "cosine"
        See :func:`robustlab.training.optim.lr_factor`; stepped every iteration. ``"linear-decay"``
        with a long ``warmup_epochs`` is the "slow start, fast decay" schedule for adversarial
        fine-tuning (Jeddi et al. 2020).
    warmup_epochs : int in [0, epochs), default 0
        Linear warm-up from ``lr / warmup_iters`` to ``lr`` before the schedule (any schedule).
    milestones : sequence of int, default ()
        Epochs (strictly increasing, in [1, epochs - 1]) at which ``schedule="step"`` multiplies the
        learning rate by ``gamma``.
    gamma : float > 0, default 0.1
    grad_clip_norm : float > 0 or None, default None
        Clip the global 2-norm of all gradients to this value before each step.
    seed : int >= 0, default 0
        Seeds the data order, the objective's generator and model-internal randomness (dropout).
    eval_every : int >= 1, default 1
        Evaluate on the validation set every this many epochs (and always after the last).
    checkpoint_every : int >= 1, default 1
        Write the checkpoint every this many epochs (and always after the last).
    record_examples : bool, default False
        Keep per-example loss, margin and correctness for every epoch
        (:class:`~robustlab.training.TrainingRecords`).
    device : str or torch.device or None, default None
        Where to train; ``None`` uses the device of the model's parameters. Stored as a string.
    sam_rho : float > 0 or None, default None
        Sharpness-aware minimisation (Foret et al., 2021) with neighbourhood radius ``rho`` around
        the optimizer of ``optimizer`` (the "base optimizer"); works with any objective. 0.05 is
        the paper's usual value; the ASAM authors use 0.5 with ``sam_adaptive`` on CIFAR-10.
        ``None`` trains without SAM. Each step costs two forward/backward passes. See
        :func:`robustlab.training.optim.sam_perturb` and :class:`~robustlab.training.Trainer`.
    sam_adaptive : bool, default False
        Adaptive SAM (ASAM, Kwon et al., 2021): the radius is measured after the element-wise
        rescaling ``T_w = |w| + eta``. Needs ``sam_rho``.
    """

    epochs: int = 10
    batch_size: int = TRAIN_BATCH_SIZE
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0
    milestones: Sequence[int] = field(default_factory=tuple)
    gamma: float = 0.1
    grad_clip_norm: float | None = None
    seed: int = DEFAULT_SEED
    eval_every: int = 1
    checkpoint_every: int = 1
    record_examples: bool = False
    device: str | torch.device | None = None
    sam_rho: float | None = None
    sam_adaptive: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise values once, here
        set_(self, "epochs", check_int("epochs", self.epochs, low=1))
        set_(self, "batch_size", check_int("batch_size", self.batch_size, low=1))
        check_choice("optimizer", self.optimizer, OPTIMIZER_NAMES)
        set_(self, "lr", check_number("lr", self.lr, low=0.0, low_inclusive=False))
        set_(self, "momentum", check_number("momentum", self.momentum, low=0.0, high=1.0,
                                            high_inclusive=False))
        set_(self, "nesterov", check_bool("nesterov", self.nesterov))
        if self.nesterov and self.optimizer == "sgd" and self.momentum == 0:
            fail("nesterov", "False when momentum is 0 (Nesterov needs momentum > 0)", True)
        set_(self, "weight_decay", check_number("weight_decay", self.weight_decay, low=0.0))
        check_choice("schedule", self.schedule, SCHEDULE_NAMES)
        set_(self, "warmup_epochs", check_int("warmup_epochs", self.warmup_epochs, low=0,
                                              high=self.epochs - 1))
        set_(self, "milestones", _check_milestones(self.milestones, self.epochs))
        set_(self, "gamma", check_number("gamma", self.gamma, low=0.0, low_inclusive=False))
        if self.grad_clip_norm is not None:
            set_(self, "grad_clip_norm", check_number("grad_clip_norm", self.grad_clip_norm, low=0.0,
                                                      low_inclusive=False))
        set_(self, "seed", check_int("seed", self.seed, low=0, high=_MAX_SEED))
        set_(self, "eval_every", check_int("eval_every", self.eval_every, low=1))
        set_(self, "checkpoint_every", check_int("checkpoint_every", self.checkpoint_every, low=1))
        set_(self, "record_examples", check_bool("record_examples", self.record_examples))
        set_(self, "device", _check_device(self.device))
        if self.sam_rho is not None:
            set_(self, "sam_rho", check_number("sam_rho", self.sam_rho, low=0.0, low_inclusive=False))
        set_(self, "sam_adaptive", check_bool("sam_adaptive", self.sam_adaptive))
        if self.sam_adaptive and self.sam_rho is None:
            fail("sam_adaptive", "False when 'sam_rho' is None (ASAM is a variant of SAM)", True)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, numbers, strings, None) for checkpoints and logs."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    def differences(self, other: dict[str, Any]) -> list[str]:
        """Fields whose value in ``other`` (a :meth:`to_dict`) would change the trained weights."""
        mine = self.to_dict()
        return [k for k in mine if k not in RESUMABLE_CHANGES
                and other.get(k, _ADDED_FIELDS.get(k, _MISSING)) != mine[k]]


_MISSING = object()

#: Fields added after the first release, with the value that a checkpoint lacking them implies
#: (so runs checkpointed before the field existed can still be resumed).
_ADDED_FIELDS: dict[str, Any] = {"sam_rho": None, "sam_adaptive": False}


def _check_milestones(milestones: Any, epochs: int) -> tuple[int, ...]:
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        fail("milestones", "a sequence of epoch numbers", milestones, error=InvalidTypeError)
    values = tuple(milestones)
    for m in values:
        if isinstance(m, bool) or not isinstance(m, numbers.Integral):
            fail("milestones", "a sequence of integers", list(values), error=InvalidTypeError)
    values = tuple(int(m) for m in values)
    increasing = all(a < b for a, b in zip(values, values[1:]))
    if not increasing or (values and (values[0] < 1 or values[-1] > epochs - 1)):
        fail("milestones", f"strictly increasing epochs in [1, {epochs - 1}]", list(values))
    return values


def _check_device(device: Any) -> str | None:
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        fail("device", "None, a device string ('cpu', 'cuda:0') or a torch.device", device,
             error=InvalidTypeError)
    try:
        return str(torch.device(device))
    except (RuntimeError, ValueError):
        fail("device", "a valid device ('cpu', 'cuda', 'cuda:0', ...)", device)
