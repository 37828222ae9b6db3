"""Adversarial perturbations: attacks (one module per family), evaluation, curves, training.

Every attack is a function returning an :class:`AttackResult`; thin classes store settings and
are registered by name in :data:`ATTACKS`.
"""

from robustlab.adversarial._core import (
    ATTACKS,
    NORMS,
    Attack,
    AttackResult,
    perturbation_norms,
    project,
)

__all__ = ["ATTACKS", "NORMS", "Attack", "AttackResult", "perturbation_norms", "project"]
