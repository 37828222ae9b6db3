"""Networks, inputs and auto_LiRPA bounds for the CI-runnable differential test of the bounds.

auto_LiRPA cannot be installed in CI (PyPI has only 0.3, which pins an old torch and NumPy 1), so
its answers are computed once with auto_LiRPA 0.7.1 from a source checkout and stored next to
this file, together with the exact weights and inputs they were computed on:

    PYTHONPATH=/path/to/auto_LiRPA .venv/bin/python tests/certified/auto_lirpa_reference.py

writes ``tests/certified/data/auto_lirpa_reference.safetensors``. ``test_bounds_vs_auto_lirpa.py``
rebuilds the networks from :func:`networks`, loads the stored weights and compares robustlab's
bounds with auto_LiRPA's at 1e-4 relative (the issue's tolerance). The networks cover every layer
the bounds support that auto_LiRPA bounds the same way: Linear, Conv2d, ReLU, LeakyReLU,
BatchNorm (eval), AvgPool2d, Flatten, the model's Normalize layer and a residual addition.
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from robustlab.models.layers import Normalize

DATA = Path(__file__).resolve().parent / "data" / "auto_lirpa_reference.safetensors"
NUM_INPUTS = 8
#: (norm, eps, shift): "interior" settings map inputs into [0.25, 0.75] so an L2 ball never
#: leaves the [0, 1] box (robustlab intersects it with the box, auto_LiRPA does not).
SETTINGS = (("linf", 0.02, False), ("linf", 0.05, False), ("l2", 0.3, True))
METHODS = {"ibp": "IBP", "crown": "CROWN", "crown-ibp": "CROWN-IBP"}


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.bn(self.conv1(x))))


def networks() -> dict[str, nn.Module]:
    """The reference networks (random init; the stored weights replace it)."""
    return {
        "mlp": nn.Sequential(Normalize(0.3, 0.4, spatial_dims=2), nn.Flatten(), nn.Linear(64, 48), nn.ReLU(),
                             nn.Linear(48, 32), nn.LeakyReLU(0.1), nn.Linear(32, 10)),
        "mlp-plain": nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.LeakyReLU(0.1),
                                   nn.Linear(32, 10)),
        "cnn": nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(), nn.AvgPool2d(2),
                             nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, 10)),
        "resnet": nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), _Residual(8), nn.ReLU(),
                                nn.Flatten(), nn.Linear(8 * 8 * 8, 10)),
    }


def settings_for(name: str) -> list[tuple[str, float, bool]]:
    # L2 is compared on the MLP without a normalisation layer only. The L2 interval of a first
    # Conv2d differs by design (robustlab: exact per-output dual norm over the receptive field
    # inside the image; auto_LiRPA: the whole kernel's norm; docs/benchmarks/certified_bounds.md).
    # And auto_LiRPA 0.7.1's L2 interval of a Linear layer that follows a normalisation ignores
    # the division by std, which is unsound: test_normalize_then_linear_l2_is_sound shows a point
    # of the ball whose margin is below auto_LiRPA's lower bound.
    return [s for s in SETTINGS if s[0] == "linf" or name == "mlp-plain"]


def key(name: str, norm: str, eps: float, method: str, side: str) -> str:
    return f"ref/{name}/{norm}/{eps}/{method}/{side}"


def _randomise_batchnorm(model: nn.Module, g: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics and affine terms
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))


def main() -> None:  # pragma: no cover - run by hand with auto_LiRPA on the path
    from safetensors.torch import save_file

    stub = Path(tempfile.mkdtemp()) / "graphviz.py"
    stub.write_text("class Digraph:  # plotting only\n    pass\n")
    sys.path.append(str(stub.parent))
    warnings.filterwarnings("ignore")
    import auto_LiRPA
    from auto_LiRPA import BoundedModule, BoundedTensor
    from auto_LiRPA.perturbations import PerturbationLpNorm

    from robustlab.certified import margin_spec
    from robustlab.data import load_dataset

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x_test, y_test = load_dataset("digits", split="test").tensors()
    x, y = x_test[:NUM_INPUTS].double(), y_test[:NUM_INPUTS]
    tensors: dict[str, torch.Tensor] = {"inputs": x.contiguous(), "labels": y.contiguous()}
    C = margin_spec(y, 10).double()
    for name, model in networks().items():
        _randomise_batchnorm(model, g)
        model = model.double().eval()
        for k, v in model.state_dict().items():
            tensors[f"weights/{name}/{k}"] = v.contiguous()
        bm = BoundedModule(model, torch.zeros_like(x[:1]), verbose=False)
        for norm, eps, interior in settings_for(name):
            xs = 0.25 + 0.5 * x if interior else x
            if norm == "linf":
                ptb = PerturbationLpNorm(norm=float("inf"), eps=eps, x_L=(xs - eps).clamp(0, 1),
                                         x_U=(xs + eps).clamp(0, 1))
            else:
                ptb = PerturbationLpNorm(norm=2, eps=eps)
            for ours, theirs in METHODS.items():
                with torch.no_grad():
                    lo, hi = bm.compute_bounds(x=(BoundedTensor(xs, ptb),), C=C, method=theirs)
                tensors[key(name, norm, eps, ours, "lower")] = lo.contiguous()
                tensors[key(name, norm, eps, ours, "upper")] = hi.contiguous()
    DATA.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(DATA), metadata={"auto_LiRPA": auto_LiRPA.__version__, "torch": torch.__version__,
                                            "settings": json.dumps(SETTINGS)})
    print(f"wrote {DATA} ({DATA.stat().st_size} bytes) with auto_LiRPA {auto_LiRPA.__version__}")


if __name__ == "__main__":  # pragma: no cover
    main()
