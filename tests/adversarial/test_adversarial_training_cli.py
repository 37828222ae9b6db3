"""`robustlab train` for adversarial methods: --eps, --method-param, --sam-rho, --init, robust curves,
and one-line errors."""

from __future__ import annotations

import json

import pytest

from robustlab.cli import _parse_param_value
from cli_testkit import run_cli


_run = run_cli


def test_pgd_at_writes_clean_and_robust_curves_then_fine_tunes(tmp_path, capsys):
    out_dir = tmp_path / "pgd"
    code, out, err = _run(["train", "--data", "digits", "--model", "mlp", "--method", "pgd-at", "--eps", "0.1",
                           "--method-param", "num_steps=2", "--method-param", "attack_mode=eval",
                           "--epochs", "2", "--out", str(out_dir)], capsys)
    assert code == 0, err
    history = json.loads((out_dir / "history.json").read_text())
    assert len(history) == 2
    for row in history:
        assert 0 <= row["val_robust_acc"] <= row["val_acc"] <= 1
        assert row["metrics"]["eps"] == pytest.approx(0.1)
    assert "PGD robust accuracy" in out
    tuned = tmp_path / "tuned"
    code, out, err = _run(["train", "--data", "digits", "--method", "trades", "--eps", "0.1", "--init",
                           str(out_dir / "model"), "--schedule", "linear-decay", "--warmup-epochs", "1",
                           "--sam-rho", "0.05", "--method-param", "num_steps=1", "--epochs", "2",
                           "--out", str(tuned)], capsys)
    assert code == 0, err
    history = json.loads((tuned / "history.json").read_text())
    assert history[0]["lr"] < history[1]["lr"]  # the slow start of the fine-tuning schedule
    assert "trained mlp" in out


def test_gaussian_augment_is_reachable_with_an_eval_eps_curve(tmp_path, capsys):
    out_dir = tmp_path / "gauss"
    code, _, err = _run(["train", "--data", "digits", "--model", "mlp", "--method", "gaussian-augment",
                         "--method-param", "sigma=0.1", "--eval-eps", "0.05", "--epochs", "1",
                         "--out", str(out_dir)], capsys)
    assert code == 0, err
    assert "val_robust_acc" in json.loads((out_dir / "history.json").read_text())[0]


@pytest.mark.parametrize("args, flag", [
    (["--method", "pgd-at", "--eps", "-1"], "'--eps' option"),
    (["--method", "pgd-at", "--eps", "2"], "'--eps' option"),
    (["--method", "pgd-at", "--eps", "0.1", "--method-param", "gamma=1"], "'--method-param' option"),
    (["--method", "pgd-at", "--eps", "0.1", "--method-param", "num_steps"], "'--method-param' option"),
    (["--method", "trades", "--eps", "0.1", "--method-param", "beta=-2"], "'beta'"),
    (["--method", "pgd-at", "--eps", "0.1", "--method-param", "step_size=0"], "'step_size'"),
    (["--method", "ce", "--eps", "0.1"], "'--eps' option"),
    (["--method", "ce", "--sam-rho", "-1"], "'--sam-rho' option"),
    (["--method", "gce", "--method-param", "qq=0.7"], "'--method-param' option"),
    (["--method", "ce", "--eval-eps", "-1"], "'--eval-eps' option"),
    (["--method", "trades", "--eps", "0.1", "--init", "/nonexistent/model"], "'--init' option"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, flag):
    code, _, err = _run(["train", "--data", "digits", "--model", "mlp", "--epochs", "1",
                         "--out", str(tmp_path / "bad"), *args], capsys)
    assert code == 2
    assert err.count("\n") == 1 and flag in err, err
    if "gamma=1" in args:
        assert "num_steps" in err and "awp_gamma" in err  # the method's parameters are listed


def test_method_param_values_are_typed():
    assert _parse_param_value("3") == 3 and isinstance(_parse_param_value("3"), int)
    assert _parse_param_value("0.5") == 0.5
    assert _parse_param_value("true") is True and _parse_param_value("False") is False
    assert _parse_param_value("none") is None
    assert _parse_param_value("l2") == "l2"
