"""Robust weight signatures (robustlab.repair.signatures): exact removal, quantisation, composition,
storage, layer choice, and a real fine-tune on a corruption of digits."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from robustlab.errors import (
    CheckpointError,
    InvalidParameterError,
    InvalidTypeError,
    RobustlabError,
)
from robustlab.models import build_model
from robustlab.repair import (
    Signature,
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
from robustlab.repair.signatures import _pack_int4, _unpack_int4
from train_testkit import fit_adam


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _perturbed(model: nn.Module, seed: int, size: float = 0.05) -> nn.Module:
    """A copy of ``model`` with every parameter moved by random noise (a stand-in fine-tune)."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(size * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return out


@pytest.fixture(scope="module")
def pair() -> tuple[nn.Module, nn.Module]:
    base = build_model("small-cnn", (1, 8, 8), 10, seed=0)
    return base, _perturbed(base, 1)


# ----------------------------------------------------------------------------------- exact removal
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1.0, 0.37, -2.5])
def test_apply_then_remove_restores_weights_bit_for_bit(pair, dtype, scale):
    base, tuned = (m.to(dtype) for m in map(copy.deepcopy, pair))
    sig = extract_signature(base, tuned, layers="shallow", num_layers=4)
    before = _state(base)
    patched = apply_signature(base, sig, scale=scale)
    assert _bit_equal(_state(base), before)  # the caller's model is untouched
    assert not _bit_equal(_state(patched), before)
    if scale == 0.37:  # arithmetic would not be exact: (w + s d) - s d != w for some entries
        assert any(not torch.equal((w + scale * d) - scale * d, w)
                   for w, d in ((base.get_parameter(p).detach(), sig.deltas()[p]) for p in sig.params))
    restored = remove_signature(patched, sig, scale=scale)
    assert _bit_equal(_state(restored), before)
    assert restored.robustlab_patches.entries == []


def test_remove_out_of_order_equals_applying_the_rest_alone(pair):
    base, tuned = pair
    a = extract_signature(base, tuned, layers="shallow", num_layers=4, name="a")
    b = extract_signature(base, _perturbed(base, 2), layers="shallow", num_layers=5, name="b")
    both = apply_signature(apply_signature(base, a, scale=0.7), b, scale=1.3)
    without_a = remove_signature(both, a, scale=0.7)
    assert _bit_equal(_state(without_a), _state(apply_signature(base, b, scale=1.3)))
    assert without_a.robustlab_patches.applied() == [("b", 1.3)]
    assert _bit_equal(_state(remove_signature(without_a, b, scale=1.3)), _state(base))


def test_remove_one_of_a_composition_is_exact(pair):
    base, tuned = pair
    a = extract_signature(base, tuned, layers="shallow", num_layers=3)
    b = extract_signature(base, _perturbed(base, 3), layers="shallow", num_layers=5)
    both = apply_signatures(base, [a, b], [0.5, 2.0])
    assert _bit_equal(_state(remove_signature(both, b, scale=2.0)), _state(apply_signature(base, a, scale=0.5)))


def test_remove_without_record_is_arithmetic_within_rounding_and_warns(pair):
    base, tuned = pair
    sig = extract_signature(base, tuned, layers="shallow", num_layers=4)
    patched = apply_signature(base, sig, scale=0.37)
    fresh = copy.deepcopy(base)
    fresh.load_state_dict(patched.state_dict())  # weights only, as from a file: no record
    with pytest.warns(UserWarning, match="arithmetically"):
        restored = remove_signature(fresh, sig, scale=0.37)
    eps = torch.finfo(torch.float32).eps
    for p in sig.params:
        w0, w1 = base.get_parameter(p), restored.get_parameter(p)
        bound = 2 * eps * (w0.abs() + 0.37 * sig.deltas()[p].abs()) + 1e-30
        assert bool(((w1 - w0).abs() <= bound).all())


def test_weights_edited_after_patching_fall_back_to_arithmetic(pair):
    base, tuned = pair
    sig = extract_signature(base, tuned, layers="shallow", num_layers=2)
    patched = apply_signature(base, sig)
    with torch.no_grad():
        patched.features[0].weight[0, 0, 0, 0] += 1.0
    with pytest.warns(UserWarning):
        restored = remove_signature(patched, sig)
    got = restored.features[0].weight[0, 0, 0, 0]
    assert float((got - base.features[0].weight[0, 0, 0, 0]).detach()) == pytest.approx(1.0, abs=1e-5)


def test_model_state_kept(pair):
    base, tuned = pair
    model = copy.deepcopy(base).train()
    model.features[0].weight.requires_grad_(False)
    sig = extract_signature(base, tuned)
    out = apply_signature(model, sig)
    assert out is not model and out.training and not out.features[0].weight.requires_grad
    assert model.training and not hasattr(model, "robustlab_patches")


# ----------------------------------------------------------------------------------- quantisation
def test_int4_packing_round_trip():
    q = torch.tensor([-7, 7, 0, 3, -1], dtype=torch.int8)  # odd length
    packed = _pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.numel() == 3
    assert torch.equal(_unpack_int4(packed, 5), q)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_signature_within_half_a_step(pair, bits):
    base, tuned = pair
    sig = extract_signature(base, tuned, layers="shallow", num_layers=7)
    q = quantize_signature(sig, bits)
    assert extract_signature(base, tuned, layers="shallow", num_layers=7, bits=bits).fingerprint == q.fingerprint
    for p, d in sig.deltas().items():
        step = q.steps[p]
        rows = d.reshape(step.shape[0], -1)
        err = (q.deltas()[p].reshape(step.shape[0], -1) - rows).abs()
        assert bool((err <= step[:, None] / 2 * (1 + 1e-5) + 1e-12).all())
        assert step.shape[0] == (d.shape[0] if d.ndim >= 2 else 1)  # per output channel / per tensor
    patched = apply_signature(base, q)
    for p in sig.params:
        step = q.steps[p]
        gap = (patched.get_parameter(p) - tuned.get_parameter(p)).reshape(step.shape[0], -1).abs()
        assert bool((gap <= step[:, None] / 2 + 1e-6).all())
    restored = remove_signature(patched, q)  # the record makes it exact, quantised or not
    assert _bit_equal(_state(restored), _state(base))


def test_quantisation_keeps_zero_exact():
    base = nn.Sequential(nn.Linear(4, 3))
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned[0].weight[1] += torch.tensor([0.1, -0.2, 0.3, 0.05])
    q = extract_signature(base, tuned, layers=["0.weight"], bits=4)
    d = q.deltas()["0.weight"]
    assert torch.equal(d[0], torch.zeros(4)) and torch.equal(d[2], torch.zeros(4))
    assert float(d[1].abs().max()) == pytest.approx(0.3)


def test_sizes_int4_smaller_than_int8_smaller_than_float(pair):
    base, tuned = pair
    sig = extract_signature(base, tuned)
    s8, s4 = quantize_signature(sig, 8), quantize_signature(sig, 4)
    assert s4.num_bytes < s8.num_bytes < sig.num_bytes <= sig.full_copy_bytes
    float_bytes = sum(base.get_parameter(p).numel() * 4 for p in sig.params)
    assert sig.num_bytes == float_bytes
    assert s4.compression_ratio > 7 * sig.compression_ratio
    assert sig.full_copy_bytes == sum(t.numel() * t.element_size() for t in base.state_dict().values()
                                      if t.is_floating_point())


# ----------------------------------------------------------------------------------- composition
def test_composition_is_order_independent_bit_for_bit(pair):
    base, tuned = pair
    a = extract_signature(base, tuned, layers="shallow", num_layers=4)
    b = quantize_signature(extract_signature(base, _perturbed(base, 4), layers="shallow", num_layers=6), 8)
    ab = apply_signatures(base, [a, b], [0.3, 0.9])
    ba = apply_signatures(base, [b, a], [0.9, 0.3])
    assert _bit_equal(_state(ab), _state(ba))
    sequential = apply_signature(apply_signature(base, b, scale=0.9), a, scale=0.3)
    for k, v in _state(ab).items():
        torch.testing.assert_close(v, sequential.state_dict()[k], rtol=1e-6, atol=1e-7)
    linear = base.features[3].weight + 0.3 * a.deltas()["features.3.weight"] + 0.9 * b.deltas()["features.3.weight"]
    torch.testing.assert_close(ab.features[3].weight, linear, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------- storage
@pytest.mark.parametrize("bits", [None, 8, 4])
def test_save_load_round_trip(pair, tmp_path, bits):
    base, tuned = pair
    sig = extract_signature(base, tuned, bits=bits, name="fog")
    path = save_signature(sig, tmp_path / "fog.safetensors")
    back = load_signature(path)
    assert back.fingerprint == sig.fingerprint and back.name == "fog" and back.bits == bits
    assert (back.params, back.layers, back.shapes, back.dtypes) == (sig.params, sig.layers, sig.shapes, sig.dtypes)
    assert back.architecture == sig.architecture and back.full_copy_bytes == sig.full_copy_bytes
    assert back.relative_change == pytest.approx(sig.relative_change)
    assert back.num_bytes == sig.num_bytes
    assert path.stat().st_size < sig.num_bytes + 8192  # the file is the stored tensors plus metadata
    assert all(torch.equal(back.deltas()[p], sig.deltas()[p]) for p in sig.params)
    assert [f.name for f in tmp_path.iterdir()] == ["fog.safetensors"]  # no temporary file left


def test_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="not a robustlab signature"):
        load_signature(tmp_path / "w.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="junk"):
        load_signature(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        load_signature(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------------- layer choice
def test_auto_picks_shallow_layers_with_largest_relative_change():
    with torch.random.fork_rng(devices=[]):  # nn.Linear draws from the global RNG; leave it as it was
        torch.manual_seed(0)
        base = nn.Sequential(*[nn.Linear(6, 6) for _ in range(6)])
    tuned = copy.deepcopy(base)
    wanted = [0.1, 0.01, 0.3, 0.05, 0.02, 0.9]  # the deepest layer changes most but is not shallow
    with torch.no_grad():
        for layer, r in zip(tuned, wanted):
            for p in layer.parameters():
                p.mul_(1 + r)  # relative change exactly r
    changes = layer_changes(base, tuned)
    assert list(changes) == [str(i) for i in range(6)]
    assert [changes[str(i)] for i in range(6)] == pytest.approx(wanted, rel=1e-5)
    assert extract_signature(base, tuned, num_layers=2).layers == ("0", "2")
    assert extract_signature(base, tuned, num_layers=1).layers == ("2",)
    assert extract_signature(base, tuned, layers="shallow", num_layers=2).layers == ("0", "1")
    assert extract_signature(base, tuned).layers == ("0", "1", "2")  # default: the shallow half
    assert extract_signature(base, tuned, num_layers=4).layers == ("0", "1", "2", "3")
    named = extract_signature(base, tuned, layers=["4", "1.bias"])
    assert named.params == ("1.bias", "4.weight", "4.bias") and named.layers == ("1", "4")


# ----------------------------------------------------------------------------------- real fine-tune
def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, seed: int) -> nn.Module:
    return fit_adam(model, x, y, epochs=epochs, lr=lr, generator=torch.Generator().manual_seed(seed))


def test_signature_from_a_corruption_fine_tune_patches_the_clean_model():
    from robustlab.corruptions import corrupt
    from robustlab.data import load_dataset

    x, y = load_dataset("digits", split="train").tensors()
    xt, yt = load_dataset("digits", split="test").tensors()
    g = torch.Generator().manual_seed(0)
    xc, xtc = corrupt(x, "contrast", 5, generator=g), corrupt(xt, "contrast", 5, generator=g)
    base = _train(build_model("mlp", (1, 8, 8), 10, seed=0, hidden_sizes=(64, 64)), x, y, epochs=6, lr=1e-2, seed=0)
    tuned = _train(copy.deepcopy(base), xc, y, epochs=3, lr=3e-3, seed=1)
    sig = extract_signature(base, tuned, name="contrast")
    assert sig.layers == ("hidden.0", "hidden.2")
    curves = {bits: signature_scale_curve(base, sig if bits is None else quantize_signature(sig, bits), xt, yt,
                                          scales=(0.0, 0.5, 1.0), corrupted_inputs=xtc)
              for bits in (None, 8, 4)}
    c = curves[None]
    base_clean = float((base(xt).argmax(1) == yt).double().mean())
    base_corrupted = float((base(xtc).argmax(1) == yt).double().mean())
    assert c.clean_accuracy[0] == base_clean and c.corrupted_accuracy[0] == base_corrupted
    assert base_corrupted < 0.4 < base_clean - 0.4  # the corruption hurts the clean model
    for bits, curve in curves.items():
        assert curve.corrupted_accuracy[2] >= base_corrupted + 0.3, (bits, curve)
        assert curve.clean_accuracy[2] >= base_clean - 0.15, (bits, curve)
        assert curve.corrupted_accuracy[0] < curve.corrupted_accuracy[1] < curve.corrupted_accuracy[2]
    assert curves[4].num_bytes < curves[8].num_bytes < c.num_bytes < c.full_copy_bytes


# ----------------------------------------------------------------------------------- bad input
def _with_nan(model: nn.Module) -> nn.Module:
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.features[0].weight[0, 0, 0, 0] = float("nan")
    return out


def test_bad_input_one_line_errors(pair):
    base, tuned = pair
    sig = extract_signature(base, tuned)
    other = build_model("small-cnn", (1, 8, 8), 10, seed=0, channels=(16, 64, 128))
    cases = [
        (lambda: extract_signature(base, other), "tuned", "shape"),
        (lambda: extract_signature(base, build_model("mlp", (1, 8, 8), 10, seed=0)), "tuned", "only in base"),
        (lambda: apply_signature(other, sig), "model", "features.0.weight"),
        (lambda: apply_signature(base, sig, scale=float("nan")), "scale", "finite"),
        (lambda: apply_signature(base, sig, scale=float("inf")), "scale", "finite"),
        (lambda: remove_signature(base, sig, scale=float("-inf")), "scale", "finite"),
        (lambda: apply_signatures(base, [sig, sig], [1.0]), "scales", "one number per signature"),
        (lambda: extract_signature(base, tuned, bits=3), "bits", "8 or 4"),
        (lambda: quantize_signature(sig, 16), "bits", "8"),
        (lambda: quantize_signature(quantize_signature(sig, 8), 4), "sig", "already quantised"),
        (lambda: extract_signature(base, tuned, num_layers=0), "num_layers", "in [1, 7]"),
        (lambda: extract_signature(base, tuned, num_layers=99), "num_layers", "in [1, 7]"),
        (lambda: extract_signature(base, tuned, layers=["features.99"]), "layers", "features.99"),
        (lambda: extract_signature(base, tuned, layers=["features.0"], num_layers=1), "num_layers", "None"),
        (lambda: apply_signature("model", sig), "model", "nn.Module"),
        (lambda: extract_signature(base, _with_nan(tuned)), "tuned", "finite"),
        (lambda: apply_signature(base, "sig"), "sig", "Signature"),
        (lambda: signature_scale_curve(base, sig, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long),
                                       scales=[0.0, math.nan]), "scales", "finite"),
        (lambda: signature_scale_curve(base, sig, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long),
                                       corrupted_inputs=torch.rand(3, 1, 8, 8)), "corrupted_inputs", "shape"),
    ]
    for call, name, fragment in cases:
        with pytest.raises(RobustlabError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg and f"'{name}'" in msg and fragment in msg, msg
        assert isinstance(info.value, (InvalidParameterError, InvalidTypeError))


def test_signature_repr_and_record(pair):
    base, tuned = pair
    sig = extract_signature(base, tuned, bits=4, name="fog")
    assert "fog" in repr(sig) and "int4" in repr(sig)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        patched = apply_signature(base, sig, scale=0.5)
        assert patched.robustlab_patches.applied() == [("fog", 0.5)]
        remove_signature(patched, sig, scale=0.5)
    assert isinstance(sig, Signature)


def test_batchnorm_running_statistics_with_include_buffers():
    base = build_model("small-cnn", (1, 8, 8), 10, seed=0)
    tuned = _perturbed(base, 5, size=0.01)
    with torch.no_grad():
        tuned.features[1].running_mean.add_(0.3)
        tuned.features[1].running_var.mul_(0.5)  # a scale of 3 would make it negative
    plain = extract_signature(base, tuned, layers="shallow", num_layers=2)
    assert plain.params == ("features.0.weight", "features.1.weight", "features.1.bias")
    sig = extract_signature(base, tuned, layers="shallow", num_layers=2, include_buffers=True)
    assert sig.params == ("features.0.weight", "features.1.weight", "features.1.bias",
                          "features.1.running_mean", "features.1.running_var")  # not num_batches_tracked
    assert sig.relative_change == plain.relative_change  # ranked on parameters only
    patched = apply_signature(base, sig)
    for p in sig.params:
        torch.testing.assert_close(patched.get_parameter(p) if "running" not in p else patched.get_buffer(p),
                                   tuned.get_parameter(p) if "running" not in p else tuned.get_buffer(p))
    assert _bit_equal(_state(remove_signature(patched, sig)), _state(base))
    half = apply_signature(base, sig, scale=0.5)
    torch.testing.assert_close(half.features[1].running_var, 0.75 * base.features[1].running_var)
    with pytest.raises(InvalidParameterError, match="'scale'.*running variances positive"):
        apply_signature(base, sig, scale=3.0)
    with pytest.raises(InvalidTypeError, match="'include_buffers'"):
        extract_signature(base, tuned, include_buffers="yes")


@pytest.mark.parametrize("seed", range(4))
def test_random_apply_remove_sequences_match_replaying_what_is_left(seed):
    """Any interleaving of applications and removals leaves, bit for bit, the model obtained by
    applying the remaining (signature, scale) pairs to the clean model in their original order."""
    import random

    rnd = random.Random(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 4), nn.Linear(4, 2))
    sigs = [extract_signature(base, _perturbed(base, 10 + i), layers=layers, bits=bits)
            for i, (layers, bits) in enumerate([(["0"], None), (["0", "1"], 8), (["1", "2"], None), (["2"], 4)])]
    model, applied = base, []
    for _ in range(12):
        if applied and rnd.random() < 0.4:
            sig, scale = applied[rnd.randrange(len(applied))]
            last = max(i for i, (s, sc) in enumerate(applied) if s is sig and sc == scale)
            del applied[last]
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # the exact path, never the arithmetic fallback
                model = remove_signature(model, sig, scale=scale)
        else:
            pair = (rnd.choice(sigs), rnd.choice([0.5, 1.0, -0.3, 2.0]))
            applied.append(pair)
            model = apply_signature(model, pair[0], scale=pair[1])
        expected = base
        for sig, scale in applied:
            expected = apply_signature(expected, sig, scale=scale)
        assert _bit_equal(_state(model), _state(expected))
