"""`robustlab repair signature extract|apply|remove`: happy path, exact round trip through files, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from robustlab.models import ModelConfig, build_model, load_model, save_model
from robustlab.repair import load_signature
from cli_testkit import run_cli


_run = run_cli


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_model(folder)[0].state_dict()


@pytest.fixture()
def models(tmp_path) -> tuple[Path, Path, Path]:
    """A clean MLP, a 'fine-tuned' copy (every weight nudged) and a model of another architecture."""
    config = ModelConfig.for_model("mlp", (1, 8, 8), 10, params={"hidden_sizes": [32, 16]})
    base = build_model("mlp", (1, 8, 8), 10, seed=0, hidden_sizes=[32, 16])
    tuned = copy.deepcopy(base)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.03 * torch.randn(p.shape, generator=g))
    other_config = ModelConfig.for_model("mlp", (1, 8, 8), 10, params={"hidden_sizes": [8]})
    paths = tmp_path / "base", tmp_path / "tuned", tmp_path / "other"
    save_model(base, paths[0], config)
    save_model(tuned, paths[1], config)
    save_model(build_model("mlp", (1, 8, 8), 10, seed=0, hidden_sizes=[8]), paths[2], other_config)
    return paths


def test_extract_apply_remove_round_trip_is_exact(models, tmp_path, capsys):
    base, tuned, _ = models
    sig = tmp_path / "fog.safetensors"
    code, out, err = _run(["repair", "signature", "extract", "--base", str(base), "--tuned", str(tuned),
                           "--out", str(sig), "--name", "fog"], capsys)
    assert code == 0, err
    assert "hidden.0" in out and "full weight copy" in out and "smaller" in out
    loaded = load_signature(sig)
    assert loaded.name == "fog" and loaded.layers == ("hidden.0", "hidden.2")
    sig8 = tmp_path / "fog8.safetensors"
    code, out, err = _run(["repair", "signature", "extract", "--base", str(base), "--tuned", str(tuned),
                           "--out", str(sig8), "--layers", "hidden.0", "--bits", "8"], capsys)
    assert code == 0, err
    assert load_signature(sig8).layers == ("hidden.0",) and load_signature(sig8).bits == 8

    patched = tmp_path / "patched"
    code, out, err = _run(["repair", "signature", "apply", "--model", str(base), "--signature", str(sig),
                           "--signature", str(sig8), "--scale", "0.37", "--scale", "1.5", "--out", str(patched)],
                          capsys)
    assert code == 0, err
    assert (patched / "signature_patches.safetensors").is_file()
    w0, w1 = _weights(base), _weights(patched)
    assert not torch.equal(w0["hidden.0.weight"], w1["hidden.0.weight"])
    assert torch.equal(w0["classifier.weight"], w1["classifier.weight"])

    half = tmp_path / "half"
    code, out, err = _run(["repair", "signature", "remove", "--model", str(patched), "--signature", str(sig8),
                           "--scale", "1.5", "--out", str(half)], capsys)
    assert code == 0, err
    assert "exact removal" in out
    back = tmp_path / "back"
    code, out, err = _run(["repair", "signature", "remove", "--model", str(half), "--signature", str(sig),
                           "--scale", "0.37", "--out", str(back)], capsys)
    assert code == 0, err
    assert "exact removal" in out and not (back / "signature_patches.safetensors").exists()
    w2 = _weights(back)
    assert all(torch.equal(w0[k], w2[k]) for k in w0)  # bit for bit through files


def test_remove_without_record_is_arithmetic_and_says_so(models, tmp_path, capsys):
    base, tuned, _ = models
    sig = tmp_path / "s.safetensors"
    assert _run(["repair", "signature", "extract", "--base", str(base), "--tuned", str(tuned), "--out", str(sig)],
                capsys)[0] == 0
    code, out, err = _run(["repair", "signature", "remove", "--model", str(tuned), "--signature", str(sig),
                           "--out", str(tmp_path / "clean")], capsys)
    assert code == 0, err
    assert "arithmetic removal" in out and "warning" in err
    w0, w1, wt = _weights(base), _weights(tmp_path / "clean"), _weights(tuned)
    params = load_signature(sig).params
    for k in w0:  # the signature's layers are back to the clean model's, the rest stays tuned
        torch.testing.assert_close(w1[k], w0[k] if k in params else wt[k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("extra, flag, fragment", [
    (["--scale", "nan"], "--scale", "finite"),
    (["--scale", "inf"], "--scale", "finite"),
    (["--scale", "1", "--scale", "2"], "--scale", "once per --signature"),
])
def test_apply_bad_scale(models, tmp_path, capsys, extra, flag, fragment):
    base, tuned, _ = models
    sig = tmp_path / "s.safetensors"
    assert _run(["repair", "signature", "extract", "--base", str(base), "--tuned", str(tuned), "--out", str(sig)],
                capsys)[0] == 0
    code, _, err = _run(["repair", "signature", "apply", "--model", str(base), "--signature", str(sig),
                           "--out", str(tmp_path / "p"), *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"'{flag}'" in lines[0] and fragment in lines[0], err
    assert not (tmp_path / "p").exists()


def test_errors_one_line_naming_the_flag(models, tmp_path, capsys):
    base, tuned, other = models
    sig = tmp_path / "s.safetensors"
    assert _run(["repair", "signature", "extract", "--base", str(base), "--tuned", str(tuned), "--out", str(sig)],
                capsys)[0] == 0
    cases = [
        (["extract", "--base", str(base), "--tuned", str(other), "--out", str(tmp_path / "x.safetensors")],
         "--tuned", "architecture"),
        (["extract", "--base", str(base), "--tuned", str(tuned), "--out", str(tmp_path / "x.safetensors"),
          "--bits", "3"], "--bits", "8 or 4"),
        (["extract", "--base", str(base), "--tuned", str(tuned), "--out", str(tmp_path / "x.safetensors"),
          "--num-layers", "0"], "--num-layers", "integer"),
        (["extract", "--base", str(base), "--tuned", str(tuned), "--out", str(tmp_path / "x.safetensors"),
          "--layers", "nope"], "--layers", "nope"),
        (["extract", "--base", str(base), "--tuned", str(tuned), "--out", str(sig)], "--out", "--overwrite"),
        (["extract", "--base", str(tmp_path / "missing"), "--tuned", str(tuned), "--out",
          str(tmp_path / "x.safetensors")], "--base", "saved model folder"),
        (["apply", "--model", str(other), "--signature", str(sig), "--out", str(tmp_path / "p")],
         "--model", "architecture"),
        (["apply", "--model", str(base), "--signature", str(sig), "--out", str(base)], "--out", "--overwrite"),
        (["remove", "--model", str(base), "--signature", str(sig), "--scale", "-inf", "--out",
          str(tmp_path / "r")], "--scale", "finite"),
    ]
    for args, flag, fragment in cases:
        code, _, err = _run(["repair", "signature", *args], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (args, err)
        assert f"'{flag}'" in lines[0] and fragment in lines[0], (args, err)
        assert "Traceback" not in err
    code, _, err = _run(["repair", "signature", "apply", "--model", str(base), "--signature",
                           str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "p")], capsys)
    assert code == 2 and "none.safetensors" in err and len(err.strip().splitlines()) == 1


def test_help_ends_with_an_example(capsys):
    for command in ("extract", "apply", "remove"):
        code, text, _ = _run(["repair", "signature", command, "--help"], capsys)
        assert code == 0
        tail = " ".join(text.split())[-250:]
        assert "Example: robustlab repair signature " + command in tail, tail


def test_extract_buffers_carries_batchnorm_statistics(tmp_path, capsys):
    config = ModelConfig.for_model("small-cnn", (1, 8, 8), 10, params={"channels": [4, 4, 4]})
    base = build_model("small-cnn", (1, 8, 8), 10, seed=0, channels=[4, 4, 4])
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.features[0].weight.add_(0.1)
        tuned.features[1].running_mean.add_(0.2)
    save_model(base, tmp_path / "base", config)
    save_model(tuned, tmp_path / "tuned", config)
    for extra, has_stats in (([], False), (["--buffers"], True)):
        sig = tmp_path / f"s{len(extra)}.safetensors"
        code, _, err = _run(["repair", "signature", "extract", "--base", str(tmp_path / "base"), "--tuned",
                             str(tmp_path / "tuned"), "--out", str(sig), "--layers", "shallow", "--num-layers", "2",
                             *extra], capsys)
        assert code == 0, err
        assert ("features.1.running_mean" in load_signature(sig).params) == has_stats
    code, _, err = _run(["repair", "signature", "apply", "--model", str(tmp_path / "base"), "--signature",
                         str(tmp_path / "s1.safetensors"), "--out", str(tmp_path / "p")], capsys)
    assert code == 0, err
    assert torch.equal(_weights(tmp_path / "p")["features.1.running_mean"], tuned.features[1].running_mean)


def test_apply_onto_a_patched_model_keeps_the_record(models, tmp_path, capsys):
    base, tuned, _ = models
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for out, extra in ((a, []), (b, ["--layers", "hidden.2,classifier", "--bits", "4"])):
        assert _run(["repair", "signature", "extract", "--base", str(base), "--tuned", str(tuned), "--out",
                     str(out), *extra], capsys)[0] == 0
    steps = [["apply", "--model", str(base), "--signature", str(a), "--scale", "0.3", "--out", str(tmp_path / "p1")],
             ["apply", "--model", str(tmp_path / "p1"), "--signature", str(b), "--out", str(tmp_path / "p2")],
             ["remove", "--model", str(tmp_path / "p2"), "--signature", str(a), "--scale", "0.3", "--out",
              str(tmp_path / "p3")],
             ["apply", "--model", str(base), "--signature", str(b), "--out", str(tmp_path / "only_b")]]
    for args in steps:
        code, out, err = _run(["repair", "signature", *args], capsys)
        assert code == 0, err
        assert args[0] == "apply" or "exact removal" in out
    w3, wb = _weights(tmp_path / "p3"), _weights(tmp_path / "only_b")
    assert all(torch.equal(w3[k], wb[k]) for k in wb)  # a removed from under b, bit for bit
