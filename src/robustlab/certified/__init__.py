"""Certified robustness: proofs that no perturbation in a norm ball changes a prediction.

- bound propagation: :func:`bounds` (IBP, CROWN, CROWN-IBP), :func:`margin_spec`,
  :func:`verified`, :func:`verified_accuracy`
"""

__all__: list[str] = []

# --- bounds (bound propagation) ----
from robustlab.certified.bounds import bounds, margin_spec, verified, verified_accuracy  # noqa: E402

__all__ += ["bounds", "margin_spec", "verified", "verified_accuracy"]
# --- end bounds ----
