"""Calibration: metrics on predicted probabilities, selective classification, post-hoc scaling.

* metrics (:mod:`~robustlab.calibration.metrics`): ECE with equal-width or equal-mass bins, MCE,
  classwise ECE, Brier score, NLL, reliability diagrams (drawn by :func:`plot_reliability`);
* selective classification (:mod:`~robustlab.calibration.selective`): risk-coverage curve, AURC;
* post-hoc scalers on logits (:mod:`~robustlab.calibration.scaling`): temperature, vector and
  matrix scaling, fitted by L-BFGS on held-out data;
* training-time objectives (:mod:`~robustlab.calibration.training`): the Trainer objectives
  "maxsup" (MaxSup, Zhou et al. 2025) and "adaptive-label-smoothing" (ACLS, Park et al. 2023);
  plain label smoothing and mixup are the objectives "label-smoothing" and "mixup" of
  :mod:`robustlab.label_noise`;
* the scan probe "calibration" (:mod:`~robustlab.calibration.probe`): calibration on clean data,
  under corruptions and under attack.
"""

from robustlab.calibration.metrics import (
    BINNINGS,
    CALIBRATION_NORMS,
    ReliabilityDiagram,
    brier_score,
    classwise_calibration_error,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
)
from robustlab.calibration.plotting import plot_reliability
from robustlab.calibration.scaling import (
    MatrixScaling,
    TemperatureScaling,
    VectorScaling,
)
from robustlab.calibration.selective import (
    RiskCoverageCurve,
    optimal_aurc,
    risk_coverage_curve,
)

__all__ = [
    "BINNINGS",
    "CALIBRATION_NORMS",
    "MatrixScaling",
    "ReliabilityDiagram",
    "RiskCoverageCurve",
    "TemperatureScaling",
    "VectorScaling",
    "brier_score",
    "classwise_calibration_error",
    "expected_calibration_error",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "optimal_aurc",
    "plot_reliability",
    "reliability_diagram",
    "risk_coverage_curve",
]

# --- training ---
from robustlab.calibration.training import (
    AdaptiveConditionalLabelSmoothing,
    MaxSup,
    acls_loss,
    maxsup_loss,
)

__all__ += ["AdaptiveConditionalLabelSmoothing", "MaxSup", "acls_loss", "maxsup_loss"]
# --- end training ---
