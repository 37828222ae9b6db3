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

# --- gradient attacks (robustlab.adversarial.gradient, robustlab.adversarial.apgd)
from robustlab.adversarial.gradient import FGSM, PGD, fgsm, pgd  # noqa: E402

__all__ += ["FGSM", "PGD", "fgsm", "pgd"]
