"""robustlab.certified.bounds: soundness, exactness, tightness order, errors, model state.

Soundness is checked against points that lie in the threat model (random points and PGD points
that push a random combination of the specification up or down): every value must lie inside
the bounds of every method, for Linf and L2 and for every supported layer type.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.certified import bounds, margin_spec, verified, verified_accuracy
from robustlab.errors import RobustlabError
from robustlab.models.layers import Normalize

METHODS = ("ibp", "crown", "crown-ibp")
NORMS = ("linf", "l2")



# ----------------------------------------------------------------------------- models
class TinyResidual(nn.Module):
    """Normalize, conv stem, a pre-activation residual block (BN, LeakyReLU, functional relu,
    x.view(x.size(0), -1), scalar arithmetic), adaptive average pooling, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize((0.4,), (0.3,))
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.act = nn.LeakyReLU(0.2)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(self.normalize(x))
        short = out
        out = self.conv1(self.act(self.bn1(out)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = (out + short) * 0.5 - 0.1
        out = self.pool(F.relu(out))
        return self.fc(out.view(out.size(0), -1))


def _randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))  # some negative scales
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def make_model(name: str, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed({"mlp": 0, "cnn": 1, "residual": 2}[name])
    if name == "mlp":
        model = nn.Sequential(nn.Flatten(), Normalize((0.5,) * 12, (0.25,) * 12, spatial_dims=0),
                              nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.BatchNorm1d(16),
                              nn.LeakyReLU(0.1), nn.Dropout(0.2), nn.Linear(16, 4))
        shape = (12,)
    elif name == "cnn":
        model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                              nn.Flatten(), nn.Linear(6 * 2 * 2, 5))
        shape = (2, 8, 8)
    else:
        model = TinyResidual()
        shape = (1, 6, 6)
    with torch.no_grad():
        _randomize_bn(model, 3)
    return model.to(dtype).eval(), shape


def inputs(shape: tuple[int, ...], n: int = 6, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    x = torch.rand((n,) + shape, generator=g, dtype=dtype)
    x[0] = 0.0  # on the box's corner: clipping matters
    return x


# ----------------------------------------------------------------------------- points in the set
def project(x0: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    d = x - x0
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        nrm = d.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (x.ndim - 1))
        d = d * (eps / nrm).clamp(max=1.0)
    return (x0 + d).clamp(0.0, 1.0)  # clipping keeps the point in the ball (x0 is in the box)


def points_in_set(model: nn.Module, x: torch.Tensor, eps: float, norm: str, C: torch.Tensor,
                  seed: int = 0, steps: int = 15) -> list[torch.Tensor]:
    """Random points and PGD points maximising / minimising random combinations of C z."""
    g = torch.Generator().manual_seed(seed)
    pts = []
    for _ in range(4):
        pts.append(project(x, x + (2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1) * eps
                           * (1.0 if norm == "linf" else 3.0), eps, norm))
    for k in range(6):
        w = torch.randn(C.shape[:2], generator=g, dtype=x.dtype)
        if k < 2:  # one specification row only
            w = torch.zeros_like(w)
            w[:, k % C.shape[1]] = 1.0 if k == 0 else -1.0
        xa = project(x, x + (2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1) * eps, eps, norm)
        for _ in range(steps):
            xa.requires_grad_(True)
            obj = (torch.einsum("nsk,nk->ns", C, model(xa)) * w).sum()
            (grad,) = torch.autograd.grad(obj, xa)
            with torch.no_grad():
                if norm == "linf":
                    step = grad.sign() * eps / 4
                else:
                    step = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (x.ndim - 1)) * eps / 2
                xa = project(x, xa + step, eps, norm)
        pts.append(xa.detach())
    return pts


# ----------------------------------------------------------------------------- soundness
@pytest.mark.parametrize("name", ["mlp", "cnn", "residual"])
@pytest.mark.parametrize("norm", NORMS)
def test_bounds_contain_every_reachable_value(name: str, norm: str) -> None:
    model, shape = make_model(name)
    x = inputs(shape)
    eps = 0.08 if norm == "linf" else 0.4
    with torch.no_grad():
        k = model(x).shape[1]
    labels = torch.arange(x.shape[0]) % k
    C = margin_spec(labels, k).to(x.dtype)
    pts = points_in_set(model, x, eps, norm, C)
    results = {m: bounds(model, x, eps=eps, norm=norm, method=m, C=C) for m in METHODS}
    plain = {m: bounds(model, x, eps=eps, norm=norm, method=m) for m in METHODS}
    with torch.no_grad():
        for p in pts:
            z = model(p)
            cz = torch.einsum("nsk,nk->ns", C, z)
            for m in METHODS:
                lo, hi = results[m]
                assert lo.shape == hi.shape == cz.shape
                assert bool((lo <= cz + 1e-9).all()), (m, float((lo - cz).max()))
                assert bool((cz <= hi + 1e-9).all()), (m, float((cz - hi).max()))
                lo, hi = plain[m]
                assert bool((lo <= z + 1e-9).all()) and bool((z <= hi + 1e-9).all()), m


def test_bounds_are_not_trivially_loose() -> None:
    """At eps = 0 every method returns the clean logits."""
    for name in ("mlp", "cnn", "residual"):
        model, shape = make_model(name)
        x = inputs(shape)
        with torch.no_grad():
            z = model(x)
        for m in METHODS:
            for norm in NORMS:
                lo, hi = bounds(model, x, eps=0.0, norm=norm, method=m)
                torch.testing.assert_close(lo, z, rtol=0, atol=1e-10)
                torch.testing.assert_close(hi, z, rtol=0, atol=1e-10)


def test_preact_resnet18_small_input_is_sound() -> None:
    from robustlab.models import build_model

    model = build_model("preact-resnet18", (3, 8, 8), 4, seed=0, width=4).double().eval()
    with torch.no_grad():
        _randomize_bn(model, 5)
    x = inputs((3, 8, 8), n=2)
    eps = 2e-3
    C = margin_spec(torch.tensor([0, 1]), 4).double()
    pts = points_in_set(model, x, eps, "linf", C, steps=5)[:6]
    for m in METHODS:
        lo, hi = bounds(model, x, eps=eps, method=m, C=C)
        with torch.no_grad():
            for p in pts:
                cz = torch.einsum("nsk,nk->ns", C, model(p))
                assert bool((lo <= cz + 1e-9).all()) and bool((cz <= hi + 1e-9).all()), m


# ----------------------------------------------------------------------------- exactness
def _linear_net(depth: int) -> nn.Module:
    torch.manual_seed(11)
    layers: list[nn.Module] = [nn.Flatten(), Normalize((0.3,) * 10, (0.5,) * 10, spatial_dims=0)]
    if depth == 1:
        layers.append(nn.Linear(10, 3))
    else:
        layers += [nn.Linear(10, 7)] + [nn.Linear(7, 7) for _ in range(depth - 2)] + [nn.Linear(7, 3)]
    return nn.Sequential(*layers).double().eval()


@pytest.mark.parametrize("depth", [1, 3])
def test_linear_network_bounds_are_attained(depth: int) -> None:
    """Purely affine nets: CROWN (and CROWN-IBP) are exact; IBP too for one affine layer."""
    model = _linear_net(depth)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 10, generator=g, dtype=torch.float64)
    x[0] = 0.0
    xm = 0.3 + 0.4 * torch.rand(5, 10, generator=g, dtype=torch.float64)  # L2 ball inside the box
    with torch.no_grad():
        jac = torch.func.jacrev(lambda v: model(v[None])[0])(x[0])  # (3, 10), constant
        for norm, xx, eps in (("linf", x, 0.1), ("l2", xm, 0.2)):
            lo_box, hi_box = (xx - eps).clamp(0, 1), (xx + eps).clamp(0, 1)
            z = model(xx)
            methods = METHODS if depth == 1 else ("crown", "crown-ibp")
            for m in methods:
                lo, hi = bounds(model, xx, eps=eps, norm=norm, method=m)
                for k in range(3):
                    w = jac[k]
                    if norm == "linf":
                        arg_lo = torch.where(w >= 0, lo_box, hi_box)
                        arg_hi = torch.where(w >= 0, hi_box, lo_box)
                    else:
                        arg_lo, arg_hi = xx - eps * w / w.norm(), xx + eps * w / w.norm()
                        assert bool(((arg_lo >= 0) & (arg_lo <= 1)).all())
                    torch.testing.assert_close(lo[:, k], model(arg_lo)[:, k], rtol=0, atol=1e-10)
                    torch.testing.assert_close(hi[:, k], model(arg_hi)[:, k], rtol=0, atol=1e-10)
                assert bool((lo <= z).all())


def test_ibp_is_exact_on_one_affine_layer_and_with_elision() -> None:
    model = _linear_net(1)
    x = torch.rand(4, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    C = margin_spec(torch.tensor([0, 1, 2, 0]), 3).double()
    w_eff = torch.func.jacrev(lambda v: model(v[None])[0])(x[0])
    for m in METHODS:
        lo, _hi = bounds(model, x, eps=0.05, method=m, C=C)
        cw = torch.einsum("nsk,ki->nsi", C, w_eff)
        lo_box, hi_box = (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1)
        arg = torch.where(cw >= 0, lo_box[:, None], hi_box[:, None])  # (N, S, D) minimisers
        with torch.no_grad():
            exact = torch.stack([torch.einsum("sk,sk->s", C[i], model(arg[i])) for i in range(4)])
        torch.testing.assert_close(lo, exact, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- tightness order
def test_crown_tighter_than_ibp_and_crown_ibp_between() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 6)).double().eval()
    x = torch.rand(16, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    C = margin_spec(torch.arange(16) % 6, 6).double()
    for norm, eps in (("linf", 0.03), ("l2", 0.15)):
        width = {}
        for m in METHODS:
            lo, hi = bounds(model, x, eps=eps, norm=norm, method=m, C=C)
            width[m] = float((hi - lo).mean())
        assert width["crown"] <= width["crown-ibp"] <= width["ibp"], width
        assert width["crown"] < 0.9 * width["ibp"], width


# ----------------------------------------------------------------------------- verified
def test_margin_spec_and_verified() -> None:
    C = margin_spec(torch.tensor([2, 0]), 3)
    expected = torch.tensor([[[-1.0, 0, 1], [0, -1, 1]], [[1, -1, 0], [1, 0, -1]]])
    torch.testing.assert_close(C, expected)
    model, shape = make_model("mlp")
    x = inputs(shape, n=8)
    with torch.no_grad():
        pred = model(x).argmax(1)
    labels = pred.clone()
    labels[0] = (pred[0] + 1) % 4  # wrong label: never verified
    v0 = verified(model, x, labels, eps=0.0, method="ibp")
    assert v0.dtype == torch.bool and v0.tolist() == (labels == pred).tolist()
    for m in METHODS:
        v = verified(model, x, labels, eps=0.02, method=m)
        assert not bool(v[0])
        lo, _ = bounds(model, x, eps=0.02, method=m, C=margin_spec(labels, 4).double())
        assert v.tolist() == (lo > 0).all(1).tolist()
        assert verified_accuracy(model, x, labels, eps=0.02, method=m) == pytest.approx(float(v.double().mean()))
    # a verified example is never broken by PGD
    v = verified(model, x, labels, eps=0.02, method="crown")
    C = margin_spec(labels, 4).double()
    pts = points_in_set(model, x, 0.02, "linf", C)
    with torch.no_grad():
        for p in pts:
            assert bool((model(p).argmax(1) == labels)[v].all())


# ----------------------------------------------------------------------------- errors, state, dtype
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"eps": 0.1, "norm": "l1"}, "norm"),
        ({"eps": 0.1, "method": "deeppoly"}, "method"),
        ({"eps": 0.1, "C": torch.zeros(3, 2, 4)}, "C"),
        ({"eps": 0.1, "C": torch.zeros(6, 2, 5)}, "C"),
        ({"eps": 0.1, "C": torch.zeros(6, 4)}, "C"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs: dict, name: str) -> None:
    model, shape = make_model("mlp")
    x = inputs(shape)
    with pytest.raises(RobustlabError) as info:
        bounds(model, x, **kwargs)
    msg = str(info.value)
    assert f"'{name}'" in msg and "\n" not in msg


def test_bad_inputs_and_unsupported_layers() -> None:
    model, shape = make_model("mlp")
    for bad, name in ((inputs(shape) * 2, "x"), (torch.zeros(4, dtype=torch.int64), "x"), ("x", "x")):
        with pytest.raises(RobustlabError, match=f"'{name}'"):
            bounds(model, bad, eps=0.1)
    with pytest.raises(RobustlabError, match="'labels'"):
        verified(model, inputs(shape), torch.tensor([0, 1]), eps=0.1)
    with pytest.raises(RobustlabError, match="'model'"):
        bounds("not a model", inputs(shape), eps=0.1)
    pool = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
    sig = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2))

    class Mul(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) * x.flatten(1)

    for bad_model, x, what in ((pool, torch.rand(2, 1, 8, 8), "MaxPool2d"),
                               (sig, torch.rand(2, 4), "Sigmoid"),
                               (nn.Sequential(nn.Flatten(), nn.LeakyReLU(-0.5)), torch.rand(2, 4), "LeakyReLU"),
                               (Mul(), torch.rand(2, 4), "mul")):
        with pytest.raises(RobustlabError) as info:
            bounds(bad_model, x, eps=0.1)
        msg = str(info.value)
        assert "'model'" in msg and what in msg and "\n" not in msg, msg


def test_model_state_unchanged_and_dtype_device_follow_inputs() -> None:
    model, shape = make_model("cnn", dtype=torch.float32)
    model.train()
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x32 = inputs(shape, dtype=torch.float32)
    for m in METHODS:
        lo, _hi = bounds(model, x32, eps=0.05, method=m)
        assert lo.dtype == torch.float32 and lo.device == x32.device
    lo64, _hi64 = bounds(model, x32.double(), eps=0.05, method="crown")  # float32 model, float64 bounds
    assert lo64.dtype == torch.float64
    lo32, hi32 = bounds(model, x32, eps=0.05, method="crown")
    torch.testing.assert_close(lo32.double(), lo64, rtol=1e-4, atol=1e-4)
    assert model.training and all(m.training for m in model.modules())
    assert not model[0].weight.requires_grad and model[3].weight.requires_grad
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the bounds used eval-mode BatchNorm: they contain the eval-mode logits
    model.eval()
    with torch.no_grad():
        z = model(x32)
    assert bool((lo32 <= z + 1e-5).all()) and bool((z <= hi32 + 1e-5).all())


def test_empty_batch() -> None:
    model, shape = make_model("mlp")
    lo, hi = bounds(model, inputs(shape)[:0], eps=0.1, method="crown")
    assert lo.shape == (0, 4) and hi.shape == (0, 4)
