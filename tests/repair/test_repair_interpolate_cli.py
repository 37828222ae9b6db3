"""`robustlab repair interpolate`: the curve table and JSON on two small saved models, the saved
interpolated model, and one-line errors naming the flag for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _mix_fixtures import EPS, init_weights, train

from robustlab.adversarial import evaluate
from robustlab.adversarial.probe import select_examples
from robustlab.cli import main
from robustlab.models import ModelConfig, load_model, save_model
from robustlab.repair import interpolate_weights
from cli_testkit import run_cli

NUM = 16


def _saved(folder: Path, hidden: int, *, epochs: int, adversarial: bool) -> Path:
    config = ModelConfig("mlp", (1, 8, 8), 10, params={"hidden_sizes": [hidden]})
    net = train(init_weights(config.build(), 0), epochs=epochs, seed=1, adversarial=adversarial)
    return save_model(net, folder, config)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("interp-models")
    return {"ce": _saved(root / "ce", 32, epochs=3, adversarial=False),
            "pgd": _saved(root / "pgd", 32, epochs=2, adversarial=True),
            "narrow": _saved(root / "narrow", 16, epochs=0, adversarial=False)}


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_cli(["repair", "interpolate", *args], capsys)


def test_curve_table_json_and_saved_model(models, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run(["--model-a", str(models["ce"]), "--model-b", str(models["pgd"]), "--data", "digits",
                              "--alphas", "0,0.5,1", "--eps", "1/10", "--num-examples", str(NUM),
                              "--save-alpha", "0.25", "--out", str(out)], capsys)
    assert code == 0, err
    record = json.loads((out / "interpolation.json").read_text())
    assert record["alphas"] == [0.0, 0.5, 1.0] and record["eps"] == EPS and record["eps_text"] == "1/10"
    assert record["suite"] == "fast" and record["num_examples"] == NUM and record["norm"] == "linf"
    assert record["selected_alpha"] in record["alphas"]
    for c, r in zip(record["clean_accuracy"], record["robust_accuracy"]):
        assert 0.0 <= r <= c <= 1.0
        assert f"{r:.4f}" in stdout and f"{c:.4f}" in stdout
    assert "robust accuracy" in stdout and "RiFT" in stdout and "interpolation.json" in stdout
    assert (out / "interpolation.svg").read_text().startswith("<svg")

    # The alpha = 1 point is --model-b evaluated alone, on the documented subset and seed.
    from robustlab import zoo

    _, test = zoo.load_splits("digits")
    x, y = test.load(select_examples(len(test), NUM, 0))
    a, b = load_model(models["ce"])[0], load_model(models["pgd"])[0]
    single = evaluate(b, x, y, eps=EPS, suite="fast", generator=torch.Generator().manual_seed(0))
    assert (record["clean_accuracy"][2], record["robust_accuracy"][2]) == (single.clean_accuracy,
                                                                           single.robust_accuracy)

    # The saved model is the interpolation at --save-alpha and loads as a robustlab model.
    assert record["saved_model"]["alpha"] == 0.25
    saved, config = load_model(out / "model")
    assert config.params == {"hidden_sizes": [32]}
    want = interpolate_weights(a, b, 0.25)
    for key, value in want.state_dict().items():
        torch.testing.assert_close(saved.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("extra, flag", [
    (["--alphas", "0,x"], "--alphas"),
    (["--alphas", "0,nan"], "--alphas"),
    (["--alphas", "0,0"], "--alphas"),
    (["--save-alpha", "nan", "--out", "OUT"], "--save-alpha"),
    (["--save-alpha", "inf", "--out", "OUT"], "--save-alpha"),
    (["--save-alpha", "0.5"], "--out"),
    (["--eps", "-1"], "--eps"),
    (["--norm", "l3"], "--norm"),
    (["--suite", "slow"], "--suite"),
    (["--num-examples", "0"], "--num-examples"),
])
def test_bad_flags_one_line(extra, flag, models, tmp_path, capsys):
    extra = [str(tmp_path / "o") if v == "OUT" else v for v in extra]
    code, stdout, err = _run(["--model-a", str(models["ce"]), "--model-b", str(models["pgd"]), *extra], capsys)
    assert code == 2
    assert err.startswith(f"robustlab: error: The '{flag}' option") and err.count("\n") == 1, err
    assert "Traceback" not in err and stdout == ""


def test_mismatched_architectures_and_missing_model(models, tmp_path, capsys):
    code, _, err = _run(["--model-a", str(models["ce"]), "--model-b", str(models["narrow"]),
                         "--num-examples", "4"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("robustlab: error: The '--model-b' option must be a model with the architecture "
                          "of '--model-a'")
    assert "'hidden.0.weight' has shape (16, 64)" in err
    code, _, err = _run(["--model-a", str(tmp_path / "nope"), "--model-b", str(models["pgd"])], capsys)
    assert code == 2 and err.startswith("robustlab: error: The '--model-a' option") and err.count("\n") == 1


def test_help_ends_with_example(capsys):
    code = main(["repair", "interpolate", "--help"])
    out, _ = capsys.readouterr()
    assert code == 0
    text = " ".join(out.split())
    assert text.endswith("--save-alpha 0.5 --out runs/interpolate")
    assert "Example: robustlab repair interpolate --model-a" in text
