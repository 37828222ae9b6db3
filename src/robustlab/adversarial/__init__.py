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

# --- black-box attacks (robustlab.adversarial.square, robustlab.adversarial.decision)
from robustlab.adversarial.decision import HopSkipJump, hop_skip_jump  # noqa: E402
from robustlab.adversarial.square import Square, square  # noqa: E402

__all__ += ["HopSkipJump", "Square", "hop_skip_jump", "square"]

# --- optimisation attacks and universal perturbations (robustlab.adversarial.optimization, .universal)
from robustlab.adversarial.optimization import CWL2, EAD, cw_l2, ead  # noqa: E402
from robustlab.adversarial.universal import (  # noqa: E402
    UAP,
    UniversalPerturbation,
    apply_universal,
    universal_attack,
    universal_perturbation,
)

__all__ += ["CWL2", "EAD", "UAP", "UniversalPerturbation", "apply_universal", "cw_l2", "ead",
            "universal_attack", "universal_perturbation"]

# --- evaluation, curves, gradient-masking checks (robustlab.adversarial.evaluate, .curves, .masking)
from robustlab.adversarial.curves import (
    AccuracyCurve,
    MinimalNorms,
    accuracy_curve,
    accuracy_from_norms,
    auac,
    minimal_norm_distribution,
)
from robustlab.adversarial.evaluate import (
    SUITES,
    AttackStat,
    RobustnessResult,
    evaluate,
    suite_attacks,
)
from robustlab.adversarial.masking import MaskingCheck, MaskingReport, check_gradient_masking

__all__ += ["SUITES", "AccuracyCurve", "AttackStat", "MaskingCheck", "MaskingReport", "MinimalNorms",
            "RobustnessResult", "accuracy_curve", "accuracy_from_norms", "auac", "check_gradient_masking",
            "evaluate", "minimal_norm_distribution", "suite_attacks"]

# --- minimum-norm attacks (robustlab.adversarial.fab, robustlab.adversarial.minimum_norm)
from robustlab.adversarial.fab import FAB, FABTargeted, fab  # noqa: E402
from robustlab.adversarial.minimum_norm import FMN, DeepFool, deepfool, fmn  # noqa: E402

__all__ += ["FAB", "FABTargeted", "fab", "FMN", "DeepFool", "deepfool", "fmn"]

# --- adversarial training (robustlab.adversarial.training*): Trainer objectives "pgd-at", "trades",
# "mart", "fast-at", "vat"
from robustlab.adversarial.training import (  # noqa: E402
    MART,
    TRADES,
    FastAdversarialTraining,
    PGDAdversarialTraining,
    VirtualAdversarialTraining,
    detect_catastrophic_overfitting,
    robust_accuracy_metric,
)

__all__ += ["MART", "TRADES", "FastAdversarialTraining", "PGDAdversarialTraining", "VirtualAdversarialTraining",
            "detect_catastrophic_overfitting", "robust_accuracy_metric"]

# --- Auto-PGD (robustlab.adversarial.apgd)
from robustlab.adversarial.apgd import APGDCE, APGDDLR, APGDT, apgd, apgd_targeted  # noqa: E402

__all__ += ["APGDCE", "APGDDLR", "APGDT", "apgd", "apgd_targeted"]
