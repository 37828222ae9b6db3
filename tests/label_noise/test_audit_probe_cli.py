"""The `audit` scan probe (rows, tables, figures, through run_scan) and `robustlab audit` end to end."""

from __future__ import annotations

import csv
import sqlite3

import pytest
import torch
from torch import nn

from robustlab.data import Dataset
from robustlab.errors import UnknownNameError
from robustlab.scan import PROBES, build_probe, run_scan
from cli_testkit import run_cli


class OneHotFromFirstFeature(nn.Module):
    """Predicts the class stored in feature 0 (scaled to [0, 1]) with probability ~0.98."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.scale = nn.Parameter(torch.tensor(6.0))
        self.head = nn.Linear(k, k, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = torch.round(x.reshape(x.shape[0], -1)[:, 0] * (self.k - 1)).long()
        return self.head(nn.functional.one_hot(cls, self.k).float() * self.scale)


def _tabular(n_per_class: int = 20, k: int = 3, flips: tuple[int, ...] = (4, 25, 47)) -> tuple[Dataset, set[int]]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(k).repeat_interleave(n_per_class)
    x = torch.rand(len(y), 5, generator=g) * 0.2 + 0.4
    x[:, 0] = y.float() / (k - 1)  # the model reads the clean class here
    x[:, 1] = y.float() / (k - 1)
    noisy = y.clone()
    for i in flips:
        noisy[i] = (noisy[i] + 1) % k
    return Dataset(x, noisy, class_names=["a", "b", "c"][:k]), set(flips)


def test_probe_registered_and_validates():
    assert "audit" in PROBES.names()
    with pytest.raises(UnknownNameError, match="'source'"):
        build_probe("audit", source="magic")
    with pytest.raises(UnknownNameError, match="'arch'"):
        build_probe("audit", source="kfold", arch="nope")
    assert build_probe("audit").params() == {"source": "model", "top": 20, "knn": True, "embedding": "inputs"}


def test_probe_rows_tables_and_scan_store(tmp_path):
    ds, flips = _tabular()
    model = OneHotFromFirstFeature(3)
    probe = build_probe("audit", top=5)
    result = probe.run(model, ds, job={}, generator=torch.Generator().manual_seed(0))
    rows = {(r.metric, tuple(sorted(r.params.items()))): r for r in result.rows}
    assert rows[("noise_rate", ())].headline and rows[("num_label_issues", ())].headline
    assert rows[("noise_rate", ())].value == pytest.approx(3 / 60, abs=0.02)
    assert rows[("detector_issues", (("detector", "confident_learning"),))].value == 3
    assert rows[("class_fraction", (("class", "a"),))].value == pytest.approx(20 / 60)
    assert rows[("num_exact_duplicates", ())].value == 0
    suspects = next(t for t in result.tables if t.name == "suspects")
    assert {r[1] for r in suspects.rows} >= flips and suspects.columns[:4] == (
        "rank", "index", "given label", "suggested label")
    by_index = {r[1]: r for r in suspects.rows}
    assert by_index[25][2] == "c" and by_index[25][3] == "b"
    assert {f.name for f in result.figures} == {"noise_matrix"}  # tabular: no thumbnails
    assert {t.name for t in result.tables} >= {"suspects", "noise_matrix"}
    summary = run_scan(model, ds, [probe], out_dir=tmp_path / "run", model_info={"name": "onehot"})
    assert not summary.failed and summary.report_path.is_file()
    with sqlite3.connect(summary.store_path) as con:
        value = con.execute("SELECT value FROM results WHERE probe='audit' AND metric='num_label_issues'"
                            ).fetchone()[0]
    assert value == rows[("num_label_issues", ())].value
    assert "Label audit" in summary.report_path.read_text()


def test_probe_kfold_source_is_seeded_by_the_generator():
    ds, _ = _tabular()
    probe = build_probe("audit", source="kfold", arch="mlp", folds=2, epochs=1)
    assert probe.params() == {"source": "kfold", "top": 20, "knn": True, "embedding": "inputs",
                              "arch": "mlp", "folds": 2, "epochs": 1}

    def noise(seed):
        result = probe.run(None, ds, job={}, generator=torch.Generator().manual_seed(seed))
        assert "2-fold cross-validation of mlp" in result.summary
        return {r.metric: r.value for r in result.rows if not r.params}

    assert noise(0) == noise(0)


def test_probe_on_images_draws_thumbnails():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(3).repeat_interleave(12)
    x = torch.rand(36, 1, 8, 8, generator=g) * 0.1
    x[:, 0, 0, 0] = y.float() / 2
    noisy = y.clone()
    noisy[[3, 20]] = torch.tensor([1, 0])
    ds = Dataset(x, noisy)
    result = build_probe("audit", knn=False).run(OneHotFromFirstFeature(3), ds, job={},
                                                 generator=torch.Generator().manual_seed(0))
    thumbs = next(f for f in result.figures if f.name == "suspect_thumbnails")
    assert thumbs.svg.startswith("<svg") and "<image" in thumbs.svg


# --------------------------------------------------------------------------- CLI
_run = run_cli


def test_cli_audit_end_to_end(tmp_path, capsys):
    out_dir = tmp_path / "audit"
    code, out, err = _run(["audit", "--data", "wine", "--epochs", "2", "--folds", "3", "--out", str(out_dir),
                           "--top", "5"], capsys)
    assert code == 0, err
    assert "estimated noise rate" in out and f"suspects: {out_dir / 'suspects.csv'}" in out
    rows = list(csv.DictReader((out_dir / "suspects.csv").open()))
    assert len(rows) == 178 and sorted(int(r["index"]) for r in rows) == list(range(178))
    assert {"flag_confident_learning", "flag_knn", "flag_aum", "flag_forgetting"} <= set(rows[0])
    assert {r["given_label"] for r in rows} <= {"class_0", "class_1", "class_2"}
    scores = [float(r["score"]) for r in rows if r["flagged"] == "1"]
    assert scores == sorted(scores)
    html = (out_dir / "report.html").read_text()
    assert "Label audit" in html and "noise_rate" in html
    code, out, err = _run(["report", str(out_dir)], capsys)
    assert code == 0, err


@pytest.mark.parametrize(("args", "needle"), [
    (["--folds", "100"], "'--folds'"),
    (["--model", "no-such-net"], "'--model'"),
    (["--split", "half"], "'--split'"),
])
def test_cli_audit_bad_input_one_line(tmp_path, capsys, args, needle):
    code, _, err = _run(["audit", "--data", "wine", "--out", str(tmp_path / "x"), *args], capsys)
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_cli_audit_help_has_example(capsys):
    code, out, _ = _run(["audit", "--help"], capsys)
    assert code == 0 and "Example: robustlab audit" in out


