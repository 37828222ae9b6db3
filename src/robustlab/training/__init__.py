"""Training: the one :class:`Trainer` loop and the :class:`Objective` protocol.

A training method is an objective (registered in :data:`OBJECTIVES`, built with
:func:`build_objective`); the loop, optimizers, schedules, checkpoints and per-example records are
shared by all of them.
"""

from robustlab.training.checkpoint import load_checkpoint, save_checkpoint
from robustlab.training.config import TrainConfig
from robustlab.training.objective import (
    OBJECTIVES,
    BaseObjective,
    CrossEntropy,
    Objective,
    ObjectiveOutput,
    build_objective,
)
from robustlab.training.optim import build_optimizer, build_scheduler, lr_factor
from robustlab.training.records import TrainingRecords, margins
from robustlab.training.trainer import Trainer, TrainResult

__all__ = [
    "Trainer",
    "TrainResult",
    "TrainConfig",
    "Objective",
    "BaseObjective",
    "ObjectiveOutput",
    "CrossEntropy",
    "OBJECTIVES",
    "build_objective",
    "TrainingRecords",
    "margins",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "save_checkpoint",
    "load_checkpoint",
]
