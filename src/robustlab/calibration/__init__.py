"""Calibration: metrics on predicted probabilities, selective classification, post-hoc scaling.

* metrics (:mod:`~robustlab.calibration.metrics`): ECE with equal-width or equal-mass bins, MCE,
  classwise ECE, Brier score, NLL, reliability diagrams (drawn by :func:`plot_reliability`);
* selective classification (:mod:`~robustlab.calibration.selective`): risk-coverage curve, AURC;
* post-hoc scalers on logits (:mod:`~robustlab.calibration.scaling`): temperature, vector and
  matrix scaling, fitted by L-BFGS on held-out data.

Training-time calibration objectives are not here: label smoothing is the Trainer objective
"label-smoothing" of :mod:`robustlab.label_noise`.
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
