"""Certification: prove robustness (bound propagation, randomized smoothing) and train for it."""

__all__: list[str] = []

# --- certified.smoothing (randomized smoothing) -------------------------------------------------
from robustlab.certified.smoothing import (
    ABSTAIN,
    Certificate,
    Smooth,
    average_certified_radius,
    certified_accuracy_curve,
    certify,
    checkerboard_split,
    clopper_pearson_lower,
    dual_certify,
    predict,
    sample_counts,
)

__all__ += [
    "ABSTAIN",
    "Certificate",
    "Smooth",
    "average_certified_radius",
    "certified_accuracy_curve",
    "certify",
    "checkerboard_split",
    "clopper_pearson_lower",
    "dual_certify",
    "predict",
    "sample_counts",
]
# --- end certified.smoothing --------------------------------------------------------------------

# --- certified.bounds (bound propagation: IBP, CROWN, CROWN-IBP) --------------------------------
from robustlab.certified.bounds import bounds, margin_spec, verified, verified_accuracy

__all__ += ["bounds", "margin_spec", "verified", "verified_accuracy"]
# --- end certified.bounds -----------------------------------------------------------------------

# --- certified.bounds.differentiable (bounds for certified training) ----------------------------
from robustlab.certified.bounds import differentiable_bounds

__all__ += ["differentiable_bounds"]
# --- end certified.bounds.differentiable --------------------------------------------------------

# --- certified.training (IBP / CROWN-IBP certified training objectives) ------------------------
from robustlab.certified.training import (
    CROWNIBPTraining,
    IBPTraining,
    eps_schedule,
    robust_cross_entropy,
    verified_accuracy_metric,
)

__all__ += ["CROWNIBPTraining", "IBPTraining", "eps_schedule", "robust_cross_entropy", "verified_accuracy_metric"]
# --- end certified.training ---------------------------------------------------------------------
