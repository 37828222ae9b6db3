"""Model architectures, registry, safe save/load and inference."""

from robustlab.models.inference import predict_logits

__all__ = ["predict_logits"]
