"""`robustlab attack`: the table and JSON on a small saved model, and one-line errors for bad flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_testkit import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small-cnn trained for 3 epochs on digits and saved as a robustlab model folder."""
    from robustlab import zoo
    from robustlab.models import save_model
    from robustlab.training import TrainConfig, Trainer, build_objective

    train, _ = zoo.load_splits("digits")
    net, config = zoo.build_for_data("small-cnn", train, seed=0)
    result = Trainer(net, build_objective("ce"), TrainConfig(epochs=3, batch_size=64, seed=0)).fit(train)
    path = tmp_path_factory.mktemp("attack-model") / "model"
    save_model(result.model, path, config)
    return path


_run = run_cli


def test_attack_prints_table_and_writes_json(saved_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub" / "attack.json"
    code, stdout, err = _run(["attack", "--model", str(saved_model), "--data", "digits", "--eps", "1/10",
                              "--norm", "linf", "--suite", "standard", "--num-examples", "12", "--seed", "2",
                              "--out", str(out)], capsys)
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["eps"] == 0.1 and record["eps_text"] == "1/10"
    assert record["norm"] == "linf" and record["suite"] == "standard" and record["num_examples"] == 12
    assert 0.0 <= record["robust_accuracy"] <= record["clean_accuracy"] <= 1.0
    names = [a["name"] for a in record["attacks"]]
    assert names[0] == "apgd-ce" and len(names) == len(set(names)) >= 2  # AutoAttack's order
    broken = sum(a["num_broken"] for a in record["attacks"])
    assert broken == round(12 * record["clean_accuracy"]) - round(12 * record["robust_accuracy"])
    assert "robust accuracy" in stdout and "apgd-ce" in stdout and "clean" in stdout
    assert f"{record['robust_accuracy']:.4f}" in stdout and f"result: {out}" in stdout

    # Same seed, same subset and attacks: the same numbers (and "fast" is a suite too).
    code, _, err = _run(["attack", "--model", str(saved_model), "--eps", "0.1", "--suite", "fast",
                         "--num-examples", "12", "--seed", "2", "--out", str(tmp_path / "fast.json")], capsys)
    assert code == 0, err
    fast = json.loads((tmp_path / "fast.json").read_text())
    assert fast["clean_accuracy"] == record["clean_accuracy"]
    assert fast["robust_accuracy"] >= record["robust_accuracy"]  # fast runs a subset of standard's attacks
    assert record["batch_size"] == 128  # the CPU default, recorded for reproducibility

    # --workers: the chunks of each attack in 2 processes, the same numbers as in one
    code, _, err = _run(["attack", "--model", str(saved_model), "--eps", "0.1", "--suite", "fast",
                         "--num-examples", "12", "--seed", "2", "--batch-size", "5", "--workers", "2",
                         "--out", str(tmp_path / "w2.json")], capsys)
    assert code == 0, err
    code, _, err = _run(["attack", "--model", str(saved_model), "--eps", "0.1", "--suite", "fast",
                         "--num-examples", "12", "--seed", "2", "--batch-size", "5", "--workers", "1",
                         "--out", str(tmp_path / "w1.json")], capsys)
    assert code == 0, err
    w1, w2 = (json.loads((tmp_path / f).read_text()) for f in ("w1.json", "w2.json"))
    assert w1["robust_accuracy"] == w2["robust_accuracy"] and w1["batch_size"] == 5
    assert [a["num_broken"] for a in w1["attacks"]] == [a["num_broken"] for a in w2["attacks"]]


BAD = [
    (["--eps", "abc"], "'--eps' option", "'abc'"),
    (["--eps", "-1"], "'--eps' option", "'-1'"),
    (["--eps=1/0"], "'--eps' option", "'1/0'"),
    (["--eps", "0.1", "--norm", "l3"], "'--norm' option", "'linf'"),
    (["--eps", "0.1", "--suite", "strongest"], "'--suite' option", "'standard'"),
    (["--eps", "0.1", "--num-examples", "0"], "'--num-examples' option", ">= 1"),
    (["--eps", "0.1", "--workers", "0"], "'--workers' option", ">= 1"),
    (["--eps", "0.1", "--batch-size", "0"], "'--batch-size' option", ">= 1"),
    (["--eps", "0.1", "--model", "/nonexistent/model"], "'--model' option", "/nonexistent/model"),
    ([], "Missing option", "--eps"),
]


@pytest.mark.parametrize(("args", "fragment", "detail"), BAD)
def test_bad_input_is_one_line_exit_2(args, fragment, detail, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "cache"))
    code, _, err = _run(["attack", *args], capsys)
    assert code == 2
    assert_one_line_error(err, fragment, detail)
    assert not (tmp_path / "cache").exists()  # flags are checked before any model is trained


def test_zero_eps_keeps_clean_accuracy(saved_model: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(["attack", "--model", str(saved_model), "--eps", "0", "--suite", "fast",
                         "--num-examples", "5", "--out", str(tmp_path / "zero.json")], capsys)
    assert code == 0, err
    zero = json.loads((tmp_path / "zero.json").read_text())
    assert zero["robust_accuracy"] == zero["clean_accuracy"]  # eps = 0: nothing can change
