"""The comparison report: rows lined up by (probe, metric, params), best marked, curves, verdicts."""

from __future__ import annotations

import pytest

from robustlab.errors import DataNotFoundError, InvalidParameterError
from robustlab.scan import ProbeResult, ResultRow, ResultsStore
from robustlab.scan.compare import compare_runs, metric_direction, write_comparison

EVIL = "<script>alert(1)</script>"


def _run(path, model_name, clean_acc, robust_by_eps, ece=None, extra=None):
    with ResultsStore(path) as store:
        run_id = store.start_run({"k": model_name}, model_info={"name": model_name}, data_info={"name": "d"})
        store.add_probe(run_id, "clean", title="Clean accuracy", params={}, position=0)
        rows = [ResultRow("accuracy", clean_acc, headline=True)]
        if ece is not None:
            rows.append(ResultRow("ece", ece, headline=True))
        if extra:
            rows.append(ResultRow(extra, 0.5, headline=True))
        store.write_job(run_id, "clean", {}, ProbeResult(rows=rows), seconds=0.1)
        store.add_probe(run_id, "adversarial", title="Adversarial", params={}, position=1)
        for eps, acc in robust_by_eps.items():
            store.write_job(run_id, "adversarial", {"eps": eps, "norm": "linf"},
                            ProbeResult(rows=[ResultRow("robust_accuracy", acc, headline=eps == 0.1)]),
                            seconds=0.1)
    return path


@pytest.fixture
def two_runs(tmp_path):
    a = _run(tmp_path / "ce", "mlp", 0.97, {0.05: 0.6, 0.1: 0.2, 0.2: 0.01}, ece=0.03)
    b = _run(tmp_path / "pgd-at", "mlp", 0.93, {0.05: 0.85, 0.1: 0.7, 0.2: 0.3}, ece=0.05, extra=f"odd {EVIL}")
    return a, b


def test_rows_are_lined_up_and_best_is_marked(two_runs):
    cmp = compare_runs(two_runs)
    assert [r.label for r in cmp.runs] == ["ce", "pgd-at"]
    by = {(r.metric, r.params): r for r in cmp.rows}
    acc = by[("accuracy", "")]
    assert acc.values == (0.97, 0.93) and acc.best == (0,) and acc.direction == 1
    ece = by[("ece", "")]
    assert ece.best == (0,) and ece.direction == -1
    rob = by[("robust_accuracy", "eps=0.1, norm=linf")]
    assert rob.values == (0.2, 0.7) and rob.best == (1,)
    odd = by[(f"odd {EVIL}", "")]
    assert odd.values == (None, 0.5) and odd.best == ()  # unknown direction, one value: never ranked
    # only headline rows are compared; the probe order of the report is kept
    assert [r.probe for r in cmp.rows][0] == "clean"
    assert not any(r.params == "eps=0.05, norm=linf" for r in cmp.rows)


def test_curves_overlay_every_run_and_verdicts_name_the_gaps(two_runs):
    cmp = compare_runs(two_runs)
    assert len(cmp.curves) == 1
    title, svg = cmp.curves[0]
    assert "robust_accuracy" in title and "norm=linf" in title and svg.lstrip().startswith("<svg")
    verdicts = dict(cmp.verdicts)
    assert verdicts["ce"].startswith("Best of 2 on accuracy = 0.9700, ece = 0.0300.")
    assert "Clearly behind on robust_accuracy (eps=0.1, norm=linf) (0.2000 vs 0.7000 for pgd-at)" in verdicts["ce"]
    assert verdicts["pgd-at"].startswith("Best of 2 on robust_accuracy (eps=0.1, norm=linf) = 0.7000.")
    assert "accuracy (0.9300 vs 0.9700 for ce)" in verdicts["pgd-at"]


def test_page_is_self_contained_and_escaped(two_runs, tmp_path):
    out = write_comparison(two_runs, tmp_path / "cmp", labels=["CE", f"AT {EVIL}"])
    assert out.name == "compare.html"
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org', "").replace(
        'xmlns:xlink="http://www.w3.org', "").replace("http://www.w3.org/", "")
    assert html.count("★") >= 1 and 'class="num best"' in html
    assert "<svg" in html


def test_bad_input(two_runs, tmp_path):
    with pytest.raises(InvalidParameterError, match="'paths'"):
        compare_runs([])
    with pytest.raises(InvalidParameterError, match="'labels'"):
        compare_runs(two_runs, labels=["only one"])
    with pytest.raises(DataNotFoundError):
        compare_runs([tmp_path / "missing"])


@pytest.mark.parametrize("metric,direction", [("robust_accuracy", 1), ("relative_mce", -1), ("ece", -1),
                                              ("auac", 1), ("estimated_noise_rate", 0), ("seconds", 0)])
def test_metric_direction(metric, direction):
    assert metric_direction(metric) == direction


def test_cli_report_compares_several_runs(two_runs, tmp_path, capsys):
    from robustlab.cli import main

    out = tmp_path / "page.html"
    assert main(["report", str(two_runs[0]), str(two_runs[1]), "--out", str(out)]) == 0
    assert out.exists() and "pgd-at" in out.read_text(encoding="utf-8")
    assert main(["report", str(two_runs[0]), str(two_runs[1]), "--labels", "one"]) == 2
    err = capsys.readouterr().err
    assert "--labels" in err and len(err.strip().splitlines()) == 1


def test_cli_scan_with_several_models_writes_one_run_each_and_a_comparison(tmp_path, capsys):
    """Issue 3's use: two methods trained on the same noisy labels, scanned and compared in one page."""
    from robustlab.cli import main

    for method in ("ce", "gce"):
        assert main(["train", "--model", "mlp", "--method", method, "--epochs", "2", "--label-noise",
                     "symmetric:0.4", "--out", str(tmp_path / method)]) == 0
    out = tmp_path / "scan"
    assert main(["scan", "--model", str(tmp_path / "ce" / "model"), "--model", str(tmp_path / "gce" / "model"),
                 "--probes", "clean", "--out", str(out)]) == 0
    assert (out / "ce" / "results.sqlite").exists() and (out / "gce" / "report.html").exists()
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert "<strong>ce</strong>" in page and "<strong>gce</strong>" in page
    cmp = compare_runs([out / "ce", out / "gce"])
    assert any(r.metric == "accuracy" and all(v is not None for v in r.values) for r in cmp.rows)
