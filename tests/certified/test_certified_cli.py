"""`robustlab certify`: table and JSON for bound propagation and smoothing, one-line errors naming flags."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from cli_testkit import assert_one_line_error, run_cli



@pytest.fixture(scope="module")
def saved_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The registry's mlp trained for 3 epochs on digits, saved as a robustlab model folder."""
    from robustlab import zoo
    from robustlab.models import save_model
    from robustlab.training import TrainConfig, Trainer, build_objective

    train, _ = zoo.load_splits("digits")
    net, config = zoo.build_for_data("mlp", train, seed=0)
    result = Trainer(net, build_objective("ce"), TrainConfig(epochs=3, batch_size=64, seed=0)).fit(train)
    path = tmp_path_factory.mktemp("certify-model") / "model"
    save_model(result.model, path, config)
    return path


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TorchScript model: a black box that bound propagation cannot trace."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    path = tmp_path_factory.mktemp("certify-script") / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still loaded
        torch.jit.save(torch.jit.script(net), str(path))
    return path


_run = run_cli


def test_bounds_table_and_json(saved_mlp: Path, tmp_path: Path, capsys) -> None:
    from robustlab import zoo
    from robustlab.adversarial.probe import select_examples
    from robustlab.certified import verified_accuracy
    from robustlab.models import load_any

    records = {}
    for method in ("ibp", "crown"):
        out = tmp_path / "sub" / f"{method}.json"
        code, stdout, err = _run(["certify", "--model", str(saved_mlp), "--data", "digits", "--method", method,
                                  "--eps", "2/255", "--num-examples", "40", "--seed", "3", "--out", str(out)],
                                 capsys)
        assert code == 0, err
        records[method] = record = json.loads(out.read_text())
        assert record["eps"] == 2 / 255 and record["eps_text"] == "2/255" and record["norm"] == "linf"
        assert record["num_examples"] == 40 and record["method"] == method
        assert 0.0 <= record["verified_accuracy"] <= record["clean_accuracy"] <= 1.0
        assert record["num_verified"] == round(40 * record["verified_accuracy"])
        assert "verified accuracy" in stdout and f"{record['verified_accuracy']:.4f}" in stdout
        assert "wall time" in stdout and f"result: {out}" in stdout
    assert records["ibp"]["verified_accuracy"] <= records["crown"]["verified_accuracy"]
    assert records["crown"]["verified_accuracy"] > 0.5
    # the same numbers as the library on the same seeded subset
    _, test = zoo.load_splits("digits")
    x, y = test.load(select_examples(len(test), 40, 3))
    assert records["crown"]["verified_accuracy"] == pytest.approx(
        verified_accuracy(load_any(saved_mlp), x, y, eps=2 / 255, method="crown"))


def test_smoothing_table_and_json(saved_mlp: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "smooth.json"
    args = ["certify", "--model", str(saved_mlp), "--method", "smoothing", "--sigma", "0.1", "--n", "200",
            "--n0", "20", "--num-examples", "30", "--eps", "0.25", "--out", str(out)]
    code, stdout, err = _run(args, capsys)
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["norm"] == "l2" and record["sigma"] == 0.1 and (record["n"], record["n0"]) == (200, 20)
    curve = {p["radius"]: p["certified_accuracy"] for p in record["curve"]}
    assert record["certified_accuracy"] == curve[0.25]
    assert list(curve.values()) == sorted(curve.values(), reverse=True)
    assert curve[0.0] + record["abstention_rate"] <= 1.0 + 1e-12
    assert record["num_abstained"] == round(30 * record["abstention_rate"])
    assert 0.0 < record["average_certified_radius"] <= record["max_certifiable_radius"]
    assert "abstentions" in stdout and "average certified radius" in stdout and "certified accuracy" in stdout
    code, _, err = _run(args, capsys)  # the same seed: the same certificate
    assert code == 0, err
    again = json.loads(out.read_text())
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in record.items() if k != "seconds"}


def test_help_ends_with_an_example(capsys) -> None:
    code, stdout, _ = _run(["certify", "--help"], capsys)
    assert code == 0
    assert "Example: robustlab certify" in stdout.strip()[-400:]


BAD = [
    (["--method", "lp"], "'--method' option", "'lp'"),
    (["--method", "crown", "--eps", "-1"], "'--eps' option", "'-1'"),
    (["--method", "crown", "--eps=1/0"], "'--eps' option", "'1/0'"),
    (["--method", "crown", "--norm", "l1"], "'--norm' option", "'linf'"),
    (["--method", "smoothing", "--norm", "linf"], "'--norm' option", "'l2'"),
    (["--method", "smoothing", "--sigma", "0"], "'--sigma' option", "0.0"),
    (["--method", "smoothing", "--sigma=-0.5"], "'--sigma' option", "-0.5"),
    (["--method", "smoothing", "--n0", "0"], "'--n0' option", ">= 1"),
    (["--method", "smoothing", "--n", "0"], "'--n' option", ">= 1"),
    (["--method", "smoothing", "--n=0"], "'--n' option", ">= 1"),
    (["--method", "smoothing", "--alpha=2"], "'--alpha' option", "2.0"),
    (["--method", "smoothing", "--alpha", "1.5"], "'--alpha' option", "1.5"),
    (["--method", "smoothing", "--alpha", "0"], "'--alpha' option", "0.0"),
    (["--method", "crown", "--num-examples", "0"], "'--num-examples' option", ">= 1"),
    (["--method", "crown", "--batch-size", "0"], "'--batch-size' option", ">= 1"),
    (["--method", "crown", "--model", "/nonexistent/model"], "'--model' option", "/nonexistent/model"),
    ([], "Missing option", "--method"),
]


@pytest.mark.parametrize(("args", "fragment", "detail"), BAD)
def test_bad_input_is_one_line_exit_2(args, fragment, detail, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "cache"))
    code, _, err = _run(["certify", *args], capsys)
    assert code == 2
    assert_one_line_error(err, fragment, detail)
    assert not (tmp_path / "cache").exists()  # rejected before any model is trained


def test_unsupported_model_is_one_line_exit_2(scripted: Path, capsys) -> None:
    code, _, err = _run(["certify", "--model", str(scripted), "--method", "crown", "--num-examples", "4"], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("robustlab: error: The '--model' option must be") and "torch.fx" in line, line
    # the same black box can be certified by smoothing, which needs only its predictions
    code, _, err = _run(["certify", "--model", str(scripted), "--method", "smoothing", "--n", "50", "--n0", "10",
                         "--num-examples", "4"], capsys)
    assert code == 0, err
