"""robustlab.certified.differentiable_bounds: same numbers as bounds(), correct gradients,
training-mode BatchNorm with the clean batch's statistics, Dropout refused, state untouched."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.certified import bounds, differentiable_bounds, margin_spec
from robustlab.errors import RobustlabError
from robustlab.models.layers import Normalize

METHODS = ("ibp", "crown-ibp", "crown")



class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize((0.4,), (0.3,))
        self.stem = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.act = nn.LeakyReLU(0.2)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(3 * 3 * 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(self.normalize(x))
        out = self.conv(self.act(self.bn(out))) + out
        out = self.pool(F.relu(out))
        return self.fc(out.flatten(1))


def make(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed({"mlp": 0, "cnn": 1, "residual": 2}[name])
    if name == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(10, 12), nn.BatchNorm1d(12), nn.ReLU(),
                              nn.Dropout(0.3), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4))
        shape = (10,)
    elif name == "cnn":
        model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(5 * 4 * 4, 4))
        shape = (2, 8, 8)
    else:
        model = Residual()
        shape = (1, 6, 6)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    x = torch.rand((6,) + shape, generator=g, dtype=torch.float64)
    x[0] = 0.0
    return model.double().eval(), x


def spec(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    k = 4
    return margin_spec(torch.arange(x.shape[0]) % k, k).double()


def with_batch_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """An eval-mode copy whose BatchNorm running statistics are the clean batch's statistics."""
    inputs: dict[str, torch.Tensor] = {}
    ref = copy.deepcopy(model).eval()
    hooks = [m.register_forward_pre_hook(lambda mod, a, name=n: inputs.__setitem__(name, a[0]))
             for n, m in ref.named_modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    with torch.no_grad():  # each layer's input depends only on earlier layers, already replaced
        for name, m in ref.named_modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                ref(x)
                v = inputs[name]
                dims = [0] + list(range(2, v.ndim))
                m.running_mean.copy_(v.mean(dims))
                m.running_var.copy_(v.var(dims, unbiased=False))
    for h in hooks:
        h.remove()
    return ref


# ----------------------------------------------------------------------------- same numbers
@pytest.mark.parametrize("name", ["mlp", "cnn", "residual"])
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 0.3)])
def test_equal_to_bounds_in_eval_mode(name: str, norm: str, eps: float) -> None:
    model, x = make(name)
    for C in (spec(model, x), None):
        got = differentiable_bounds(model, x, eps=eps, norm=norm, methods=METHODS, C=C)
        assert list(got) == list(METHODS)
        for m in METHODS:
            lo, hi = bounds(model, x, eps=eps, norm=norm, method=m, C=C)
            scale = torch.maximum(lo.abs(), hi.abs()).clamp(min=1e-6)
            assert float(((got[m][0].detach() - lo).abs() / scale).max()) <= 1e-6, m
            assert float(((got[m][1].detach() - hi).abs() / scale).max()) <= 1e-6, m
            assert got[m][0].requires_grad and got[m][1].requires_grad
    # one method alone, given as a string, and a repeated name
    alone = differentiable_bounds(model, x, eps=eps, norm=norm, methods="crown-ibp")
    twice = differentiable_bounds(model, x, eps=eps, norm=norm, methods=["ibp", "ibp"])
    assert list(alone) == ["crown-ibp"] and list(twice) == ["ibp"]
    torch.testing.assert_close(alone["crown-ibp"], bounds(model, x, eps=eps, norm=norm, method="crown-ibp"),
                               rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- gradients
def _tiny(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.LeakyReLU(0.1),
                         nn.Linear(5, 3)).double().eval()


def _with_weight(model: nn.Module, path: str, w: torch.Tensor) -> nn.Module:
    """A copy of ``model`` whose parameter ``path`` is the tensor ``w`` (autograd flows to it)."""
    new = copy.deepcopy(model)
    *parent, leaf = path.split(".")
    mod = new.get_submodule(".".join(parent))
    delattr(mod, leaf)
    setattr(mod, leaf, w)
    return new


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 0.4)])
def test_gradients_match_finite_differences(method: str, norm: str, eps: float) -> None:
    model = _tiny(3)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    C = margin_spec(torch.tensor([0, 1, 2, 0, 1]), 3).double()
    for path in ("1.weight", "3.bias"):
        w0 = model.get_submodule(path.rsplit(".", 1)[0]).get_parameter(path.rsplit(".", 1)[1])

        def f(w: torch.Tensor, path: str = path) -> torch.Tensor:
            lo, hi = differentiable_bounds(_with_weight(model, path, w), x, eps=eps, norm=norm,
                                           methods=(method,), C=C)[method]
            return torch.cat([lo, hi], dim=1)

        w = w0.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-6, rtol=1e-5)
    # the relaxation is exercised: some first-layer ReLU is unstable (IBP interval around 0)
    with torch.no_grad():
        lin = model[1]
        pre = lin(x)
        rad = eps * (lin.weight.abs().sum(1) if norm == "linf" else lin.weight.norm(dim=1))
        assert bool((pre.abs() < rad).any())


def test_gradient_through_training_mode_batchnorm_statistics() -> None:
    model, x = make("cnn")
    model.train()
    C = spec(model, x)

    def f(w: torch.Tensor) -> torch.Tensor:
        res = differentiable_bounds(_with_weight(model, "0.weight", w), x, eps=0.02,
                                    methods=("ibp", "crown"), C=C)
        return torch.cat([res["ibp"][0], res["crown"][1]], dim=1)

    w = model[0].weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- training mode
@pytest.mark.parametrize("name", ["cnn", "residual"])
def test_training_mode_batchnorm_uses_clean_batch_statistics(name: str) -> None:
    model, x = make(name)
    model.train()
    C = spec(model, x)
    ref = with_batch_stats(model, x)
    # at eps = 0 the bounds are the training-mode forward's logits
    z_train = copy.deepcopy(model)(x).detach()
    zero = differentiable_bounds(model, x, eps=0.0, methods=METHODS)
    for m in METHODS:
        torch.testing.assert_close(zero[m][0], z_train, rtol=0, atol=1e-10)
        torch.testing.assert_close(zero[m][1], z_train, rtol=0, atol=1e-10)
    got = differentiable_bounds(model, x, eps=0.04, methods=METHODS, C=C)
    g = torch.Generator().manual_seed(0)
    for m in METHODS:
        lo, hi = bounds(ref, x, eps=0.04, method=m, C=C)
        torch.testing.assert_close(got[m][0], lo, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(got[m][1], hi, rtol=1e-6, atol=1e-9)
    # sound for the network with the clean batch's statistics: random and corner points
    with torch.no_grad():
        for k in range(20):
            d = (2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1) * 0.04
            if k % 2:
                d = d.sign() * 0.04
            cz = torch.einsum("nsk,nk->ns", C, ref((x + d).clamp(0, 1)))
            for m in METHODS:
                assert bool((got[m][0] <= cz + 1e-9).all()) and bool((cz <= got[m][1] + 1e-9).all()), m


def test_model_state_untouched_and_gradients_reach_trainable_parameters() -> None:
    model, x = make("mlp")
    model.train()
    model[4].eval()  # Dropout off: a deterministic network
    model[1].weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = differentiable_bounds(model, x, eps=0.03, methods=("ibp", "crown-ibp"), C=spec(model, x))
    loss = sum(F.softplus(-lo).sum() for lo, _ in res.values())
    loss.backward()
    assert [m.training for m in model.modules()] == modes
    assert not model[1].weight.requires_grad and model[1].bias.requires_grad
    for k, v in model.state_dict().items():  # running statistics included
        assert torch.equal(v, before[k]), k
    assert model[1].weight.grad is None
    for p in (model[1].bias, model[2].weight, model[5].weight, model[7].bias):
        assert p.grad is not None and bool(p.grad.abs().sum() > 0)
    # under no_grad nothing is recorded
    with torch.no_grad():
        lo, _ = differentiable_bounds(model, x, eps=0.03)["ibp"]
    assert not lo.requires_grad


# ----------------------------------------------------------------------------- errors
def test_training_mode_dropout_and_single_example_batchnorm_raise() -> None:
    model, x = make("mlp")
    model.train()
    with pytest.raises(RobustlabError) as info:
        differentiable_bounds(model, x, eps=0.1)
    msg = str(info.value)
    assert "'model'" in msg and "Dropout" in msg and "'4'" in msg and "\n" not in msg
    model[4].eval()
    with pytest.raises(RobustlabError) as info:
        differentiable_bounds(model, x[:1], eps=0.1)
    msg = str(info.value)
    assert "'x'" in msg and "BatchNorm1d" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"methods": ()}, "methods"), ({"methods": ("deeppoly",)}, "methods"), ({"methods": 3}, "methods"),
     ({"eps": -1.0}, "eps"), ({"norm": "l1"}, "norm"), ({"C": torch.zeros(6, 2, 5)}, "C")],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    model, x = make("mlp")
    kwargs = {"eps": 0.1, **kwargs}
    with pytest.raises(RobustlabError) as info:
        differentiable_bounds(model, x, **kwargs)
    msg = str(info.value)
    assert f"'{name}'" in msg and "\n" not in msg
