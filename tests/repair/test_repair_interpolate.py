"""robustlab.repair.interpolate: weight mixing is exact at the ends, linear in between, refuses
mismatched architectures in one line, leaves its inputs alone; the curve's endpoints are the
single-model evaluations."""

from __future__ import annotations

import math

import pytest
import torch
from _mix_fixtures import (
    EPS,
    assert_unchanged,
    digits,
    snapshot,
    standard_and_robust,
    tiny_bn_net,
)
from torch import nn

from robustlab.adversarial import evaluate
from robustlab.errors import InvalidParameterError, InvalidTypeError, RobustlabError
from robustlab.repair import (
    InterpolationCurve,
    interpolate_weights,
    interpolation_curve,
    plot_interpolation,
)


def _pair() -> tuple[nn.Module, nn.Module]:
    """Two differently initialised nets with distinct BatchNorm statistics and step counts."""
    a, b = tiny_bn_net(3), tiny_bn_net(4)
    with torch.no_grad():
        a[2].running_mean.uniform_(-1, 1, generator=torch.Generator().manual_seed(5))
        b[2].running_var.uniform_(0.5, 2, generator=torch.Generator().manual_seed(6))
    a[2].num_batches_tracked.fill_(7)
    b[2].num_batches_tracked.fill_(11)
    return a.eval(), b.eval()


def test_endpoints_are_bit_for_bit():
    a, b = _pair()
    with torch.no_grad():
        a[1].weight[0, 0] = -0.0  # the sign of a zero survives alpha = 0
    for alpha, ref in ((0.0, a), (1.0, b), (0, a), (1, b)):
        out = interpolate_weights(a, b, alpha)
        for key, value in ref.state_dict().items():
            got = out.state_dict()[key]
            assert got.dtype == value.dtype and torch.equal(got, value), key
            if got.is_floating_point():
                assert torch.equal(torch.signbit(got), torch.signbit(value)), key
    x = digits()[2][:16]
    assert torch.equal(interpolate_weights(a, b, 0.0)(x), a(x))


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.9, -0.5, 1.5])
def test_linear_in_alpha_for_parameters_and_float_buffers(alpha):
    a, b = _pair()
    out = interpolate_weights(a, b, alpha)
    sa, sb, so = a.state_dict(), b.state_dict(), out.state_dict()
    for key in sa:
        if sa[key].is_floating_point():
            want = (1 - alpha) * sa[key].double() + alpha * sb[key].double()
            torch.testing.assert_close(so[key].double(), want, rtol=1e-6, atol=1e-6)
        else:  # integer buffers come from the nearer endpoint
            assert torch.equal(so[key], (sa if alpha <= 0.5 else sb)[key])
    # Affine in alpha: the midpoint of two mixes is the mix at the mean coefficient.
    p, q = interpolate_weights(a, b, 0.2), interpolate_weights(a, b, 0.6)
    mid = interpolate_weights(a, b, 0.4)
    torch.testing.assert_close((p[1].weight + q[1].weight) / 2, mid[1].weight, rtol=1e-6, atol=1e-7)


def test_new_model_and_inputs_untouched():
    a, b = _pair()
    a.train()
    b[1].weight.requires_grad_(False)
    snap_a, snap_b = snapshot(a), snapshot(b)
    out = interpolate_weights(a, b, 0.3)
    assert out is not a and type(out) is type(a) and out.training  # mode copied from model_a
    assert all(p.requires_grad for p in out.parameters())
    assert all(pa.data_ptr() != po.data_ptr() for pa, po in zip(a.parameters(), out.parameters()))
    with torch.no_grad():
        out[1].weight.add_(1.0)
    assert_unchanged(a, snap_a)
    assert_unchanged(b, snap_b)


def test_float64_model_stays_float64():
    a, b = tiny_bn_net(1).double(), tiny_bn_net(2).double()
    out = interpolate_weights(a, b, 1 / 3)
    assert out[1].weight.dtype == torch.float64
    want = (2 / 3) * a[1].weight + (1 / 3) * b[1].weight
    torch.testing.assert_close(out[1].weight, want, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("other, fragment", [
    (lambda: tiny_bn_net(0, hidden=16), "'1.weight' has shape (16, 64) where 'model_a' has (32, 64)"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.GELU(), nn.Linear(32, 10)),
     "module '3' is a GELU, not a ReLU"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU()),
     "lacks the module '4'"),
    (lambda: tiny_bn_net(0).double(), "'1.weight' has dtype float64 where 'model_a' has float32"),
])
def test_mismatched_architectures_one_line(other, fragment):
    with pytest.raises(InvalidParameterError) as info:
        interpolate_weights(tiny_bn_net(0), other(), 0.5)
    message = str(info.value)
    assert message.startswith("The 'model_b' parameter must be a model with the architecture of 'model_a'")
    assert fragment in message and "\n" not in message


def test_missing_buffer_is_named():
    a = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    b = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2, track_running_stats=False))
    with pytest.raises(InvalidParameterError, match=r"lacks the parameter '1.num_batches_tracked'"):
        interpolate_weights(a, b, 0.5)


@pytest.mark.parametrize("alpha, error", [(math.nan, InvalidParameterError), (math.inf, InvalidParameterError),
                                          (-math.inf, InvalidParameterError), ("0.5", InvalidTypeError),
                                          (None, InvalidTypeError), (True, InvalidTypeError)])
def test_bad_alpha(alpha, error):
    with pytest.raises(error, match=r"^The 'alpha' parameter must be a (finite )?real number"):
        interpolate_weights(tiny_bn_net(0), tiny_bn_net(1), alpha)


def test_not_a_module():
    with pytest.raises(InvalidTypeError, match="The 'model_b' parameter must be a torch.nn.Module"):
        interpolate_weights(tiny_bn_net(0), {"weight": torch.zeros(1)}, 0.5)


# ----------------------------------------------------------------------------- curve
@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x, y = digits()
    return x[:48].clone(), y[:48].clone()


def test_curve_endpoints_equal_single_model_evaluations(batch):
    standard, robust = standard_and_robust()
    x, y = batch
    snaps = snapshot(standard), snapshot(robust)
    g = torch.Generator().manual_seed(3)
    curve = interpolation_curve(standard, robust, x, y, alphas=[1.0, 0.0, 0.5], eps=EPS, generator=g)
    assert isinstance(curve, InterpolationCurve) and curve.alphas == (1.0, 0.0, 0.5)
    assert curve.num_examples == 48 and curve.suite == "fast" and curve.norm == "linf"
    for model, i in ((robust, 0), (standard, 1)):
        single = evaluate(model, x, y, eps=EPS, suite="fast", generator=torch.Generator().manual_seed(3))
        assert curve.clean_accuracy[i] == single.clean_accuracy
        assert curve.robust_accuracy[i] == single.robust_accuracy
    for c, r in zip(curve.clean_accuracy, curve.robust_accuracy):
        assert 0.0 <= r <= c <= 1.0
    # The PGD-trained endpoint is the robust one (the premise of the whole curve).
    assert curve.robust_accuracy[0] > curve.robust_accuracy[1]
    assert_unchanged(standard, snaps[0])
    assert_unchanged(robust, snaps[1])
    # The generator moved on, and the same state gives the same curve.
    again = interpolation_curve(standard, robust, x, y, alphas=[1.0, 0.0, 0.5], eps=EPS,
                                generator=torch.Generator().manual_seed(3))
    assert again.robust_accuracy == curve.robust_accuracy
    assert not torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())


def test_curve_eps_zero_is_clean_accuracy_and_rows(batch):
    standard, robust = standard_and_robust()
    x, y = batch
    curve = interpolation_curve(standard, robust, x, y, alphas=[0.0, 0.5, 1.0], eps=0.0,
                                generator=torch.Generator().manual_seed(0))
    assert curve.robust_accuracy == curve.clean_accuracy
    for alpha, acc in zip(curve.alphas, curve.clean_accuracy):
        model = interpolate_weights(standard, robust, alpha)
        with torch.no_grad():
            assert acc == pytest.approx(float((model(x).argmax(1) == y).float().mean()))
    rows = curve.to_rows()
    assert len(rows) == 6 and {r["metric"] for r in rows} == {"clean_accuracy", "robust_accuracy"}


def test_select_alpha_rift_rule():
    curve = InterpolationCurve(alphas=(0.0, 0.25, 0.5, 1.0), clean_accuracy=(0.80, 0.85, 0.90, 0.95),
                               robust_accuracy=(0.50, 0.50, 0.47, 0.10), eps=0.1, norm="linf", suite="fast",
                               num_examples=100, seconds=0.0)
    assert curve.select_alpha() == 0.25  # best clean accuracy without losing robustness
    assert curve.select_alpha(max_robust_drop=0.05) == 0.5
    assert curve.select_alpha(max_robust_drop=1.0) == 1.0
    with pytest.raises(InvalidParameterError, match="'max_robust_drop'"):
        curve.select_alpha(max_robust_drop=-0.1)


def test_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    curve = InterpolationCurve(alphas=(1.0, 0.0, 0.5), clean_accuracy=(0.8, 0.95, 0.9),
                               robust_accuracy=(0.5, 0.1, 0.3), eps=0.1, norm="linf", suite="fast",
                               num_examples=10, seconds=0.0)
    fig = curve.plot()
    lines = fig.axes[0].get_lines()
    assert [list(line.get_xdata()) for line in lines] == [[0.0, 0.5, 1.0]] * 2  # sorted by alpha
    assert list(lines[1].get_ydata()) == [0.1, 0.3, 0.5]
    with pytest.raises(InvalidTypeError, match="'curve'"):
        plot_interpolation({"alphas": [0]})


@pytest.mark.parametrize("kwargs, name", [
    ({"alphas": []}, "alphas"), ({"alphas": [0, math.nan]}, "alphas"), ({"alphas": "0,1"}, "alphas"),
    ({"alphas": [0.5, 0.5]}, "alphas"), ({"eps": -0.1}, "eps"), ({"norm": "l3"}, "norm"),
    ({"suite": "slow"}, "suite"), ({"generator": None}, "generator"),
])
def test_curve_bad_input(kwargs, name, batch):
    x, y = batch
    args = {"alphas": [0, 1], "eps": 0.1, "generator": torch.Generator().manual_seed(0), **kwargs}
    with pytest.raises(RobustlabError, match=rf"^The '{name}' parameter"):
        interpolation_curve(tiny_bn_net(0).eval(), tiny_bn_net(1).eval(), x, y, **args)
