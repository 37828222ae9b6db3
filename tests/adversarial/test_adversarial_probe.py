"""The ``adversarial`` scan probe: jobs, rows, the curve job, a scan with its report, resume."""

from __future__ import annotations

import importlib

import pytest
import torch
from adv_testkit import make_mlp

from robustlab.adversarial.probe import AdversarialProbe, parse_eps, select_examples
from robustlab.data import Dataset
from robustlab.errors import InvalidParameterError, InvalidTypeError, UnknownNameError
from robustlab.scan import PROBES, ResultsStore, build_probe, run_scan

GRID = {"linf": [0.2, 0.05], "l2": [0.5, 2.0]}  # unsorted on purpose: the probe sorts each grid
NUM_EXAMPLES = 24


@pytest.fixture(scope="module")
def digits_test(digits_split) -> Dataset:
    _, _, x, y = digits_split
    return Dataset(x[:40].clone(), y[:40].clone(), name="digits-40")


def _probe(**kw) -> AdversarialProbe:
    settings = {"eps": GRID, "num_examples": NUM_EXAMPLES, "seed": 1}
    return build_probe("adversarial", **{**settings, **kw})


def test_registered_jobs_and_params() -> None:
    assert "adversarial" in PROBES
    probe = _probe()
    assert probe.eps == {"linf": (0.05, 0.2), "l2": (0.5, 2.0)}
    assert probe.headline_eps == {"linf": 0.05, "l2": 0.5}  # the (lower) middle of each grid
    jobs = probe.jobs()
    assert jobs[:4] == [{"norm": "linf", "eps": 0.05}, {"norm": "linf", "eps": 0.2},
                        {"norm": "l2", "eps": 0.5}, {"norm": "l2", "eps": 2.0}]
    assert {"norm": "l2", "part": "curve"} in jobs and {"norm": "linf", "part": "masking"} in jobs
    assert len(jobs) == 4 + 2 * 3
    assert len(_probe(minimal_norm=False, masking=False).jobs()) == 4 + 2
    params = probe.params()
    assert params["eps"] == {"linf": [0.05, 0.2], "l2": [0.5, 2.0]} and params["suite"] == "standard"
    assert params["curve_suite"] == "fast" and params["num_examples"] == NUM_EXAMPLES
    default = build_probe("adversarial")
    assert default.eps == {"linf": (0.05, 0.1, 0.2)} and default.headline_eps == {"linf": 0.1}
    assert default.num_examples == 100 and default.suite == "standard"


@pytest.mark.parametrize(("settings", "error", "fragment"), [
    ({"eps": {"l3": [0.1]}}, UnknownNameError, "'eps'"),
    ({"eps": {"linf": [-0.1]}}, InvalidParameterError, "'eps'"),
    ({"eps": {"linf": [0.0]}}, InvalidParameterError, "'eps'"),
    ({"eps": {"linf": [0.1, 0.1]}}, InvalidParameterError, "distinct"),
    ({"eps": {"linf": []}}, InvalidTypeError, "'eps'"),
    ({"eps": [0.1]}, InvalidTypeError, "'eps'"),
    ({"headline_eps": {"linf": 0.3}}, InvalidParameterError, "'headline_eps'"),
    ({"suite": "strongest"}, UnknownNameError, "'suite'"),
    ({"curve_suite": "x"}, UnknownNameError, "'curve_suite'"),
    ({"num_examples": 0}, InvalidParameterError, "'num_examples'"),
    ({"seed": -1}, InvalidParameterError, "'seed'"),
])
def test_bad_settings(settings, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        _probe(**settings)


def test_parse_eps_and_subset() -> None:
    assert parse_eps("8/255") == 8 / 255 and parse_eps(" 0.25 ") == 0.25 and parse_eps(0.5) == 0.5
    for bad in ("abc", "-1", "1/0", "1/2/3", "nan", "inf", "-1/255", ""):
        with pytest.raises(InvalidParameterError, match="'eps' parameter"):
            parse_eps(bad)
    idx = select_examples(100, 10, seed=3)
    assert idx.tolist() == sorted(idx.tolist()) and len(set(idx.tolist())) == 10
    assert torch.equal(idx, select_examples(100, 10, seed=3))
    assert not torch.equal(idx, select_examples(100, 10, seed=4))
    assert torch.equal(select_examples(5, 10, seed=0), torch.arange(5))
    assert torch.equal(select_examples(5, None, seed=0), torch.arange(5))


def _rows(store: ResultsStore, run_id: str) -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = {}
    for r in store.results(run_id):
        if r.probe == "adversarial":
            out.setdefault((r.metric, r.job.get("norm")), []).append(r)
    return out


@pytest.fixture(scope="module")
def scanned(digits_cnn, digits_test, tmp_path_factory):
    """One scan with every job (the fast suite at the headline eps too, to keep it quick; the
    standard suite runs in the CLI test), counting the evaluations it runs."""
    # the package re-exports the function under the module's name: fetch the module itself
    evaluate_module = importlib.import_module("robustlab.adversarial.evaluate")
    calls: list[tuple[str, float, str]] = []
    real = evaluate_module.evaluate

    def counting(model, inputs, labels, **kw):
        if kw.get("attacks") is None:  # the masking checks' own single-attack runs are not counted
            calls.append((kw["norm"], kw["eps"], kw["suite"]))
        return real(model, inputs, labels, **kw)

    out = tmp_path_factory.mktemp("adv-scan")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate_module, "evaluate", counting)
        summary = run_scan(digits_cnn, digits_test, [_probe(suite="fast")], out_dir=out, progress=False)
        first_calls = list(calls)
        calls.clear()
        again = run_scan(digits_cnn, digits_test, [_probe(suite="fast")], out_dir=out, progress=False)
    return out, summary, first_calls, again, calls


def test_scan_rows_and_report(scanned) -> None:
    out, summary, calls, _, _ = scanned
    probe = _probe()
    assert not summary.failed, summary.failed
    # One evaluation per (norm, eps): the curve jobs reuse them (same process, same model).
    assert sorted(calls) == sorted([("linf", 0.05, "fast"), ("linf", 0.2, "fast"),
                                    ("l2", 0.5, "fast"), ("l2", 2.0, "fast")])
    with ResultsStore(out) as store:
        rows = _rows(store, summary.run_id)
        tables = [t for t in store.tables(summary.run_id) if t.probe == "adversarial"]
    for norm, grid in probe.eps.items():
        (clean,) = rows[("clean_accuracy", norm)]
        assert 0.8 <= clean.value <= 1.0  # the trained CNN on a 24-example subset
        robust = {r.job["eps"]: r for r in rows[("robust_accuracy", norm)]}
        assert sorted(robust) == list(grid)
        assert all(r.value <= clean.value for r in robust.values())
        assert robust[grid[-1]].value <= robust[grid[0]].value
        assert [e for e, r in robust.items() if r.headline] == [probe.headline_eps[norm]]
        # the broken counts account for every correctly classified example that is not robust
        for eps, r in robust.items():
            broken = sum(b.value for b in rows[("broken", norm)] if b.job["eps"] == eps)
            assert broken == round(clean.value * NUM_EXAMPLES) - round(r.value * NUM_EXAMPLES)
        # AUAC: trapezoid mean of (0, clean), (eps_i, robust_i) over [0, largest eps]
        xs, ys = [0.0, *grid], [clean.value, *(robust[e].value for e in grid)]
        expected = sum((ys[i] + ys[i + 1]) * (xs[i + 1] - xs[i]) / 2 for i in range(len(xs) - 1)) / xs[-1]
        (area,) = rows[("auac", norm)]
        assert area.value == pytest.approx(expected)
        (warnings_,) = rows[("masking_warnings", norm)]
        checks = rows[("masking_check", norm)]
        assert len(checks) >= 5 and warnings_.value == sum(r.value == 0.0 for r in checks)
        (median,) = rows[("median_minimal_norm", norm)]
        (implied,) = rows[("accuracy_from_minimal_norms", norm)]
        assert median.value > 0.0 and 0.0 <= implied.value <= clean.value
    assert {t.name for t in tables} == {"attacks", "masking"}
    html = (out / "report.html").read_text()
    assert "Adversarial robustness" in html and "robust_accuracy" in html and "auac" in html
    assert "Robust accuracy against linf radius" in html and "Minimal l2 perturbation" in html
    assert "Gradient-masking checks" in html and "Which attack broke" in html


def test_resume_recomputes_nothing(scanned) -> None:
    _, _, _, again, calls = scanned
    assert again.jobs_run == 0 and again.jobs_skipped == len(_probe().jobs()) and calls == []


def test_curve_job_reproduces_the_eps_jobs_without_cache(scanned, digits_cnn, digits_test) -> None:
    """A fresh probe (another worker, or a resume) recomputes the curve with the stored numbers."""
    out, summary, _, _, _ = scanned
    with ResultsStore(out) as store:
        stored = {r.job["eps"]: r.value for r in _rows(store, summary.run_id)[("robust_accuracy", "linf")]}
    fresh = _probe(suite="fast")
    other = torch.Generator().manual_seed(123)  # the job generator is not used for attacks
    curve = fresh.run(digits_cnn, digits_test, job={"norm": "linf", "part": "curve"}, generator=other)
    (table,) = curve.tables
    assert {row[0] for row in table.rows} == set(stored) and {row[1] for row in table.rows} == {"fast"}
    for eps, value in stored.items():
        assert f"{value:.1%} (eps={eps:.4g})" in curve.summary
    assert curve.figures[0].name == "accuracy_curve" and curve.figures[0].svg.startswith("<svg")


def test_data_outside_the_unit_box_is_not_applicable() -> None:
    x = torch.rand(8, 64, generator=torch.Generator().manual_seed(0)) * 255  # raw tabular features
    data = Dataset(x, torch.arange(8) % 10, class_names=[str(i) for i in range(10)])
    result = _probe().run(make_mlp(), data, job={"norm": "linf", "eps": 0.05}, generator=torch.Generator())
    assert result.rows == () and "Not applicable" in result.summary and "[0, 1]" in result.summary
