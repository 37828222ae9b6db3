"""Adversarial perturbations: attacks (one module per family), evaluation, curves, training.

Every attack is a function ``attack(model, inputs, labels, *, ..., generator) -> AttackResult``;
thin classes store settings and are registered by name in :data:`ATTACKS`.

- gradient: :func:`fgsm`, :func:`pgd` (Linf, L2, L1); :func:`apgd`, :func:`apgd_targeted` (Auto-PGD)
- minimum norm: :func:`fab` (FAB, FAB-T), :func:`deepfool`, :func:`fmn`
- optimisation: :func:`cw_l2` (Carlini & Wagner), :func:`ead` (elastic net)
- black box: :func:`square` (scores), :func:`hop_skip_jump` (labels only)
- universal: :func:`universal_perturbation`
- evaluation: :func:`evaluate` (AutoAttack-equivalent suites), :func:`accuracy_curve` and
  :func:`auac`, :func:`minimal_norm_distribution`, :func:`check_gradient_masking`
- training objectives (``robustlab train --method NAME``): ``pgd-at``, ``trades``, ``mart``,
  ``fast-at``, ``vat``
"""

from robustlab.adversarial._core import ATTACKS, NORMS, Attack, AttackResult, perturbation_norms, project
from robustlab.adversarial.apgd import APGDCE, APGDDLR, APGDT, apgd, apgd_targeted
from robustlab.adversarial.curves import (
    AccuracyCurve,
    MinimalNorms,
    accuracy_curve,
    accuracy_from_norms,
    auac,
    minimal_norm_distribution,
)
from robustlab.adversarial.decision import HopSkipJump, hop_skip_jump
from robustlab.adversarial.evaluate import SUITES, AttackStat, RobustnessResult, evaluate, suite_attacks
from robustlab.adversarial.fab import FAB, FABTargeted, fab
from robustlab.adversarial.gradient import FGSM, PGD, fgsm, pgd
from robustlab.adversarial.masking import MaskingCheck, MaskingReport, check_gradient_masking
from robustlab.adversarial.minimum_norm import FMN, DeepFool, deepfool, fmn
from robustlab.adversarial.optimization import CWL2, EAD, cw_l2, ead
from robustlab.adversarial.square import Square, square
from robustlab.adversarial.training import (
    MART,
    TRADES,
    FastAdversarialTraining,
    PGDAdversarialTraining,
    VirtualAdversarialTraining,
    detect_catastrophic_overfitting,
    robust_accuracy_metric,
)
from robustlab.adversarial.universal import (
    UAP,
    UniversalPerturbation,
    apply_universal,
    universal_attack,
    universal_perturbation,
)

__all__ = [
    # core
    "ATTACKS", "NORMS", "Attack", "AttackResult", "perturbation_norms", "project",
    # attacks
    "fgsm", "pgd", "FGSM", "PGD", "apgd", "apgd_targeted", "APGDCE", "APGDDLR", "APGDT",
    "fab", "FAB", "FABTargeted", "deepfool", "DeepFool", "fmn", "FMN", "cw_l2", "CWL2", "ead", "EAD",
    "square", "Square", "hop_skip_jump", "HopSkipJump",
    "universal_perturbation", "universal_attack", "apply_universal", "UniversalPerturbation", "UAP",
    # evaluation
    "evaluate", "suite_attacks", "SUITES", "RobustnessResult", "AttackStat",
    "accuracy_curve", "auac", "accuracy_from_norms", "minimal_norm_distribution", "AccuracyCurve",
    "MinimalNorms", "check_gradient_masking", "MaskingReport", "MaskingCheck",
    # training
    "PGDAdversarialTraining", "TRADES", "MART", "FastAdversarialTraining", "VirtualAdversarialTraining",
    "detect_catastrophic_overfitting", "robust_accuracy_metric",
]
