"""Repair a model in weight space.

* robust weight signatures (:mod:`~robustlab.repair.signatures`): the weight difference a
  corruption fine-tune leaves on a model's shallow layers, quantised, stored, applied with a scale,
  composed and removed exactly (Cai et al. 2023);
* weight interpolation (:mod:`~robustlab.repair.interpolate`): mix two models of one architecture
  and trace the accuracy-robustness curve over the mixing coefficient (WiSE-FT / RiFT style);
* adaptive smoothing (:mod:`~robustlab.repair.adaptive`): mix a standard and a robust classifier's
  probabilities with a fixed coefficient or a small learned mixing network (Bai et al. 2024).
"""

__all__: list[str] = []

# --- signatures ---
from robustlab.repair.signatures import (
    PatchLog,
    Signature,
    SignatureCurve,
    apply_signature,
    apply_signatures,
    extract_signature,
    layer_changes,
    load_signature,
    quantize_signature,
    remove_signature,
    save_signature,
    signature_scale_curve,
)

__all__ += [
    "PatchLog", "Signature", "SignatureCurve", "apply_signature", "apply_signatures", "extract_signature",
    "layer_changes", "load_signature", "quantize_signature", "remove_signature", "save_signature",
    "signature_scale_curve",
]
# --- end signatures ---

# --- interpolate ---
from robustlab.repair.interpolate import (  # noqa: E402
    InterpolationCurve,
    interpolate_weights,
    interpolation_curve,
    plot_interpolation,
)

__all__ += ["InterpolationCurve", "interpolate_weights", "interpolation_curve", "plot_interpolation"]
# --- end interpolate ---

# --- adaptive ---
from robustlab.repair.adaptive import (  # noqa: E402
    MixedClassifier,
    MixingFit,
    MixingNetwork,
    fit_mixing_network,
    mixed_log_probs,
)

__all__ += ["MixedClassifier", "MixingFit", "MixingNetwork", "fit_mixing_network", "mixed_log_probs"]
# --- end adaptive ---
