"""Out-of-distribution and adversarial-input detection.

Every detector follows scikit-learn's pattern (``__init__`` stores settings, ``fit(model, ...)``
learns and returns ``self``, learned attributes end in ``_``, :class:`~robustlab.errors.NotFittedError`
before ``fit``) and has ``score(model, inputs) -> Tensor (N,)`` where a HIGHER score means MORE
in-distribution. Metrics treat the in-distribution as the positive class.
"""

from robustlab.detection.baselines import KNN, Energy, MaxSoftmax, model_logits
from robustlab.detection.mahalanobis import Mahalanobis
from robustlab.detection.metrics import (
    DetectionMetrics,
    detection_metrics,
    evaluate_detector,
)

__all__ = [
    "KNN",
    "DetectionMetrics",
    "Energy",
    "Mahalanobis",
    "MaxSoftmax",
    "detection_metrics",
    "evaluate_detector",
    "model_logits",
]

# --- detection: automatic layer ensemble; probe.py registers the scan probe "detection" and is
# imported by the scan, not here ---
from robustlab.detection._features import auto_layers

__all__ += ["auto_layers"]
# --- end detection: automatic layer ensemble ---
