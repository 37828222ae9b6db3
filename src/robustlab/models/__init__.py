"""Model architectures, registry, safe save/load and inference.

Architectures (build them with :func:`build_model`; names in :func:`model_names`):

* ``"mlp"`` — fully connected ReLU network, tabular ``(D,)`` or flattened images;
* ``"small-cnn"`` — three conv-BN-ReLU blocks, trains on 8x8 digits in seconds on CPU;
* ``"preact-resnet18"`` — pre-activation ResNet-18 (He et al., 2016), CIFAR-style;
* ``"wide-resnet"`` — WRN-depth-k (Zagoruyko & Komodakis, 2016), default WRN-28-10.

Every model takes inputs in [0, 1] and normalises them itself (a :class:`Normalize` layer), and
is traceable by ``torch.fx``. Models are saved as safetensors + JSON folders
(:func:`save_model` / :func:`load_model`); foreign checkpoints are read without running pickled
code (:func:`load_checkpoint`, :func:`load_any`).
"""

from robustlab.models.config import ModelConfig
from robustlab.models.inference import predict_logits
from robustlab.models.io import load_any, load_checkpoint, load_model, save_model
from robustlab.models.layers import Normalize
from robustlab.models.registry import MODELS, build_model, model_names, model_params

__all__ = [
    "MODELS",
    "build_model",
    "model_names",
    "model_params",
    "Normalize",
    "ModelConfig",
    "save_model",
    "load_model",
    "load_checkpoint",
    "load_any",
    "predict_logits",
]
