"""Architectures and build_model: shapes, known parameter counts, fx tracing, validation, seeding."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from robustlab.errors import InvalidParameterError, InvalidTypeError, UnknownNameError
from robustlab.models import MODELS, Normalize, build_model, model_names, model_params

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
# Cheap variants of the big networks; the default sizes are checked once by parameter count.
CHEAP = {"wide-resnet": {"depth": 10, "widen_factor": 1}, "preact-resnet18": {"width": 8},
         "mlp": {"hidden_sizes": (16,)}, "small-cnn": {"channels": (4, 8, 8)}}


def _x(shape, n=2, seed=0):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_holds_the_four_architectures():
    assert model_names() == ["mlp", "preact-resnet18", "small-cnn", "wide-resnet"]
    assert set(MODELS) == set(model_names())


@pytest.mark.parametrize("name", ["mlp", "small-cnn", "preact-resnet18", "wide-resnet"])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_architecture_maps_images_to_logits(name, shape):
    model = build_model(name, shape, 7, seed=0, **CHEAP[name])
    out = model(_x(shape))
    assert out.shape == (2, 7)
    assert out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    assert isinstance(model.normalize, Normalize)


@pytest.mark.parametrize("name", ["small-cnn", "preact-resnet18", "wide-resnet"])
def test_conv_models_accept_non_square_sizes_and_many_channels(name):
    shape = (5, 9, 13)
    assert build_model(name, shape, 3, seed=0, **CHEAP[name])(_x(shape)).shape == (2, 3)


def test_mlp_takes_tabular_inputs():
    model = build_model("mlp", (11,), 4, seed=0, hidden_sizes=(8, 8))
    assert model(torch.rand(5, 11)).shape == (5, 4)
    linear = build_model("mlp", (11,), 4, seed=0, hidden_sizes=())
    assert sum(isinstance(m, nn.Linear) for m in linear.modules()) == 1


def test_default_sizes_match_the_reference_parameter_counts():
    # Known answers: PreActResNet-18 of the fast-AT / RobustBench code (final BN included) and
    # WRN-28-10 of TRADES / RobustBench, both on CIFAR-10.
    with torch.device("meta"):  # count without allocating 36M parameters
        preact = build_model("preact-resnet18", (3, 32, 32), 10)
        wrn = build_model("wide-resnet", (3, 32, 32), 10)
    assert _num_params(preact) == 11_172_170
    assert _num_params(wrn) == 36_479_194
    assert round(_num_params(preact) / 1e6, 1) == 11.2 and round(_num_params(wrn) / 1e6, 1) == 36.5
    assert model_params("wide-resnet") == {"depth": 28, "widen_factor": 10, "dropout": 0.0}


def test_small_cnn_stays_small():
    assert _num_params(build_model("small-cnn", (1, 8, 8), 10, seed=0)) < 100_000


@pytest.mark.parametrize("name", ["mlp", "small-cnn", "preact-resnet18", "wide-resnet"])
def test_fx_trace_gives_identical_output(name):
    params = dict(CHEAP[name], dropout=0.3) if name == "wide-resnet" else CHEAP[name]
    model = build_model(name, (3, 16, 16), 5, seed=0, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3),
                        **params).eval()
    traced = torch.fx.symbolic_trace(model)
    x = _x((3, 16, 16), n=3)
    torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    # Residual additions appear as graph nodes (what the bound-propagation code walks).
    ops = {n.target for n in traced.graph.nodes if n.op == "call_function"}
    if "resnet" in name:
        assert any(getattr(op, "__name__", "") == "add" for op in ops)


def test_normalisation_is_applied_inside_the_model():
    mean, std = (0.3,), (0.2,)
    plain = build_model("mlp", (1, 8, 8), 3, seed=0, hidden_sizes=(8,))
    normed = build_model("mlp", (1, 8, 8), 3, seed=0, hidden_sizes=(8,), mean=mean, std=std)
    x = _x((1, 8, 8))
    torch.testing.assert_close(normed(x), plain((x - 0.3) / 0.2))


def test_model_moves_to_float64_with_its_statistics():
    model = build_model("small-cnn", (3, 8, 8), 4, seed=0, mean=(0.1, 0.2, 0.3), std=0.5,
                        channels=(4, 4, 4)).to(torch.float64).eval()
    assert model.normalize.mean.dtype == torch.float64
    assert model(_x((3, 8, 8)).double()).dtype == torch.float64


def test_same_seed_same_weights_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = build_model("small-cnn", (1, 8, 8), 10, seed=3)
    b = build_model("small-cnn", (1, 8, 8), 10, seed=3)
    c = build_model("small-cnn", (1, 8, 8), 10, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["features.0.weight"], sc["features.0.weight"])


def test_generator_gives_reproducible_init_and_advances():
    first = build_model("mlp", (4,), 2, generator=torch.Generator().manual_seed(0))
    again = build_model("mlp", (4,), 2, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    one, two = build_model("mlp", (4,), 2, generator=g), build_model("mlp", (4,), 2, generator=g)
    w = "classifier.weight"
    assert torch.equal(first.state_dict()[w], again.state_dict()[w])
    assert not torch.equal(one.state_dict()[w], two.state_dict()[w])


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(UnknownNameError, match="'mlp'.*'small-cnn'.*'wide-resnet'.*Got 'resnet50'"):
        build_model("resnet50", (3, 32, 32), 10)


def test_unknown_params_are_named_with_the_accepted_ones():
    with pytest.raises(UnknownNameError, match=r"'widen'.*") as info:
        build_model("wide-resnet", (3, 32, 32), 10, widen=2, depht=10)
    message = str(info.value)
    assert "'depht'" in message and "'depth'" in message and "'widen_factor'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "shape", "num_classes", "params", "error", "needle"),
    [
        ("mlp", (3, 32), 10, {}, InvalidParameterError, "'input_shape'"),
        ("mlp", "3x32x32", 10, {}, InvalidTypeError, "'input_shape'"),
        ("mlp", (3, 0, 32), 10, {}, InvalidParameterError, "'input_shape'"),
        ("mlp", (3, 32.0, 32), 10, {}, InvalidTypeError, "'input_shape'"),
        ("small-cnn", (64,), 10, {}, InvalidParameterError, "'input_shape'"),
        ("small-cnn", (1, 7, 8), 10, {}, InvalidParameterError, r"'input_shape'.*>= 8"),
        ("small-cnn", (1, 8, 8), 1, {}, InvalidParameterError, "'num_classes'"),
        ("small-cnn", (1, 8, 8), 2.0, {}, InvalidTypeError, "'num_classes'"),
        ("small-cnn", (1, 8, 8), 10, {"channels": (8, 8)}, InvalidParameterError, "'channels'"),
        ("mlp", (4,), 3, {"hidden_sizes": (8, 0)}, InvalidParameterError, "'hidden_sizes'"),
        ("mlp", (4,), 3, {"hidden_sizes": 8}, InvalidTypeError, "'hidden_sizes'"),
        ("wide-resnet", (3, 32, 32), 10, {"depth": 12}, InvalidParameterError, r"'depth'.*6n \+ 4"),
        ("wide-resnet", (3, 32, 32), 10, {"depth": 4}, InvalidParameterError, "'depth'"),
        ("wide-resnet", (3, 32, 32), 10, {"widen_factor": 0}, InvalidParameterError, "'widen_factor'"),
        ("wide-resnet", (3, 32, 32), 10, {"dropout": 1.0}, InvalidParameterError, "'dropout'"),
        ("preact-resnet18", (3, 32, 32), 10, {"width": 0}, InvalidParameterError, "'width'"),
        ("small-cnn", (3, 8, 8), 10, {"mean": (0.1, 0.2)}, InvalidParameterError, "'mean'.*3 values"),
        ("mlp", (5,), 10, {"std": (1.0, 1.0)}, InvalidParameterError, "'std'.*feature"),
        ("mlp", (5,), 10, {"seed": -1}, InvalidParameterError, "'seed'"),
        ("mlp", (5,), 10, {"generator": 0}, InvalidTypeError, "'generator'"),
        ("mlp", (5,), 10, {"seed": 0, "generator": torch.Generator()}, InvalidParameterError, "'seed'"),
    ],
)
def test_bad_arguments_give_one_line_errors_naming_the_argument(name, shape, num_classes, params,
                                                                error, needle):
    with pytest.raises(error, match=needle) as info:
        build_model(name, shape, num_classes, **params)
    assert "\n" not in str(info.value)


def test_wide_resnet_dropout_is_active_only_in_training():
    model = build_model("wide-resnet", (3, 8, 8), 3, seed=0, depth=10, widen_factor=1, dropout=0.5)
    x = _x((3, 8, 8))
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()  # two independent dropout masks of 1,000+ units never coincide in practice
    assert not torch.equal(model(x), model(x))


def test_preact_keys_follow_the_reference_implementation():
    keys = build_model("preact-resnet18", (3, 32, 32), 10, seed=0, width=8).state_dict().keys()
    for key in ("conv1.weight", "layer1.0.bn1.weight", "layer2.0.shortcut.0.weight", "bn.weight",
                "linear.weight", "normalize.mean"):
        assert key in keys
    wrn = build_model("wide-resnet", (3, 32, 32), 10, seed=0, depth=10, widen_factor=1).state_dict()
    for key in ("conv1.weight", "block1.layer.0.bn1.weight", "block2.layer.0.convShortcut.weight",
                "bn1.weight", "fc.weight"):
        assert key in wrn
