"""The `robustlab` command: the default job end to end, resume, and one-line errors."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from robustlab import __version__
from robustlab.cli import main
from cli_testkit import assert_one_line_error, run_cli


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(path))
    return path


_run = run_cli


def _accuracy(run_dir: Path) -> float:
    with sqlite3.connect(run_dir / "results.sqlite") as con:
        rows = con.execute("SELECT value FROM results WHERE probe='clean' AND metric='accuracy'").fetchall()
    assert len(rows) == 1, rows  # stored exactly once, even after a second scan
    return rows[0][0]


def test_default_scan_trains_scans_and_resumes(tmp_path, cache, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["scan"], capsys)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "scan-digits-small-cnn"
    report = run_dir / "report.html"
    assert report.is_file() and f"report: {Path('runs/scan-digits-small-cnn/report.html')}" in out
    assert "accuracy" in out and "failed: 0" in out
    assert _accuracy(run_dir) >= 0.95  # the bar for the default job
    assert any((cache / "models").iterdir())
    code, out, _ = _run(["scan"], capsys)
    assert code == 0 and "jobs run: 0, skipped (already stored): " in out
    _accuracy(run_dir)
    html = report.read_text()
    assert "<html" in html and "clean" in html


def test_train_resume_then_scan_saved_model(tmp_path, cache, capsys):
    out_dir = tmp_path / "train"
    code, out, err = _run(["train", "--epochs", "2", "--out", str(out_dir)], capsys)
    assert code == 0, err
    assert (out_dir / "model" / "model.safetensors").is_file()
    history = json.loads((out_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    code, _, err = _run(["train", "--epochs", "2", "--out", str(out_dir)], capsys)
    assert code == 2 and "'--out'" in err and "--resume" in err
    code, out, err = _run(["train", "--epochs", "2", "--out", str(out_dir), "--resume"], capsys)
    assert code == 0, err
    scan_dir = tmp_path / "scan"
    code, out, err = _run(["scan", "--model", str(out_dir / "model"), "--out", str(scan_dir)], capsys)
    assert code == 0, err
    assert _accuracy(scan_dir) > 0.9
    code, out, err = _run(["report", str(scan_dir)], capsys)
    assert code == 0 and "report.html" in out


def test_data_info_json(capsys):
    code, out, _ = _run(["data", "info", "digits", "--split", "test", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["num_examples"] == 360 and info["input_shape"] == [1, 8, 8]
    assert sum(info["class_counts"]) == 360


BAD = [
    (["scan", "--model", "nope"], "'--model' option", "small-cnn"),
    (["scan", "--data", "nope"], "'--data' option", "digits"),
    (["scan", "--probes", "clean,xyz"], "'--probes' option", "'clean'"),
    (["scan", "--seed", "-3"], "'--seed' option", ">= 0"),
    (["scan", "--backend", "dask"], "'--backend' option", "local"),
    (["train", "--method", "zzz"], "'--method' option", "'ce'"),
    (["train", "--method", "pgd-at"], "'--eps' option", "must be given for the 'pgd-at' objective"),
    (["train", "--lr", "-1"], "'--lr' option", "> 0"),
    (["train", "--optimizer", "lbfgs"], "'--optimizer' option", "adamw"),
    (["train", "--epochs", "0"], "'--epochs' option", ">= 1"),
    (["train", "--model", "resnet9000"], "'--model' option", "small-cnn"),
    (["report", "/nonexistent/run"], "results store", "/nonexistent/run"),
    (["data", "info", "/nonexistent/x.npz"], "'--data' option", "x.npz"),
    (["scan", "--bogus"], "No such option", "--bogus"),
    (["scan", "--epochs", "many"], "usage error", "integer"),
]


@pytest.mark.parametrize(("args", "fragment", "detail"), BAD)
def test_bad_input_is_one_line_exit_2(args, fragment, detail, tmp_path, cache, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(args, capsys)
    assert code == 2
    assert_one_line_error(err, fragment, detail)
    assert "Traceback" not in err


def test_out_dir_not_writable(tmp_path, cache, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(["scan", "--out", str(blocker / "run"), "--epochs", "1"], capsys)
    assert code == 2 and "'--out' option" in err and len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(capsys):
    from robustlab.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        main(["--debug", "train", "--method", "zzz"])


def test_entry_point_installed():
    exe = Path(sys.executable).with_name("robustlab")
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == f"robustlab {__version__}"
    done = subprocess.run([str(exe), "scan", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and re.search(r"Examples?: robustlab scan", done.stdout)
