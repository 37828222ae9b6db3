"""The ``calibration`` scan probe: its numbers equal the library's on the same examples,
determinism, tabular data, a scan with its report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import robustlab.calibration.probe as cal_probe
from robustlab._constants import ADV_PROBE_NUM_EXAMPLES
from robustlab.adversarial import apgd
from robustlab.adversarial.probe import select_examples
from robustlab.calibration import (
    TemperatureScaling,
    brier_score,
    classwise_calibration_error,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    risk_coverage_curve,
)
from robustlab.corruptions.image import corrupt
from robustlab.data import Dataset, load_dataset
from robustlab.errors import InvalidParameterError, InvalidTypeError, UnknownNameError
from robustlab.scan import PROBES, ResultsStore, build_probe, run_scan
from robustlab.scan.probe import seeded_generator
from train_testkit import fit_adam

SMALL = {"num_examples": 120, "num_attack_examples": 24, "attack_steps": 10, "seed": 3,
         "corruptions": ("gaussian_noise", "contrast")}



@pytest.fixture(scope="module")
def digits():
    """(model, test Dataset): a small MLP trained for about a second on the built-in digits."""
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    x, y = train.tensors()
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * ((2.0 / p.shape[1]) ** 0.5 if p.ndim > 1 else 0.0))
    fit_adam(model, x, y, epochs=10, lr=1e-2, generator=g)
    return model, test


def _g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _values(result) -> dict[tuple[str, tuple], float]:
    return {(r.metric, tuple(sorted(r.params.items()))): r.value for r in result.rows}


def _key(metric: str, **params) -> tuple[str, tuple]:
    return metric, tuple(sorted(params.items()))


def _library(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    conf, pred = probs.max(1)
    return {"ece": expected_calibration_error(probs, labels),
            "ace": expected_calibration_error(probs, labels, binning="mass"),
            "mce": maximum_calibration_error(probs, labels),
            "classwise_ece": classwise_calibration_error(probs, labels),
            "brier": brier_score(probs, labels), "nll": negative_log_likelihood(probs, labels),
            "aurc": risk_coverage_curve(probs, labels).aurc,
            "accuracy": float((pred == labels).double().mean()), "mean_confidence": float(conf.mean())}


@pytest.fixture(scope="module")
def results(digits):
    model, test = digits
    probe = build_probe("calibration", **SMALL)
    return {job["part"]: probe.run(model, test, job=job, generator=_g()) for job in probe.jobs()}


# --------------------------------------------------------------------------- settings
def test_registered_defaults_and_params() -> None:
    assert "calibration" in PROBES
    probe = build_probe("calibration")
    assert [j["part"] for j in probe.jobs()] == ["clean", "corrupted", "adversarial", "summary"]
    assert probe.eps == 0.1  # the adversarial probe's headline linf radius
    assert probe.num_attack_examples == ADV_PROBE_NUM_EXAMPLES and probe.severity == 3
    params = probe.params()
    assert params["corruptions"] == ["gaussian_noise", "defocus_blur", "brightness", "contrast"]
    assert params["n_bins"] == 15 and params["seed"] == 0


@pytest.mark.parametrize(("settings", "error", "fragment"), [
    ({"num_examples": 1}, InvalidParameterError, "'num_examples'"),
    ({"n_bins": 0}, InvalidParameterError, "'n_bins'"),
    ({"corruptions": ["fogg"]}, UnknownNameError, "'corruptions'"),
    ({"corruptions": "fog"}, InvalidTypeError, "'corruptions'"),
    ({"corruptions": ["fog", "fog"]}, InvalidParameterError, "distinct"),
    ({"severity": 6}, InvalidParameterError, "'severity'"),
    ({"preset": "x"}, UnknownNameError, "'preset'"),
    ({"eps": 0.0}, InvalidParameterError, "'eps'"),
    ({"attack_steps": 0}, InvalidParameterError, "'attack_steps'"),
    ({"seed": -1}, InvalidParameterError, "'seed'"),
])
def test_bad_settings(settings, error, fragment) -> None:
    with pytest.raises(error, match=fragment) as info:
        build_probe("calibration", **settings)
    assert "\n" not in str(info.value)


def test_bad_job_and_data(digits) -> None:
    model, test = digits
    probe = build_probe("calibration", **SMALL)
    with pytest.raises(UnknownNameError, match="part"):
        probe.run(model, test, job={"part": "x"}, generator=_g())
    with pytest.raises(InvalidTypeError, match="'data'"):
        probe.run(model, torch.zeros(3, 64), job={"part": "clean"}, generator=_g())


def test_split_is_stratified_disjoint_and_seeded() -> None:
    labels = torch.tensor([0] * 7 + [1] * 4 + [2])
    fit, held = cal_probe.split_halves(labels, seed=1)
    assert sorted(fit.tolist() + held.tolist()) == list(range(12))
    assert torch.bincount(labels[fit], minlength=3).tolist() == [3, 2, 0]
    assert torch.equal(fit, cal_probe.split_halves(labels, seed=1)[0])
    assert not torch.equal(fit, cal_probe.split_halves(labels, seed=2)[0])


# --------------------------------------------------------------------------- numbers
def test_clean_numbers_equal_the_library_on_the_same_examples(digits, results) -> None:
    model, test = digits
    idx = select_examples(len(test), SMALL["num_examples"], SMALL["seed"])
    x, y = test.load(idx)
    with torch.no_grad():
        logits = model(x).double()
    values = _values(results["clean"])
    for metric, expected in _library(logits.softmax(1), y).items():
        assert values[_key(metric, data="clean", scaling="none")] == pytest.approx(expected, abs=1e-9), metric
    fit, held = cal_probe.split_halves(y, seed=SMALL["seed"])
    ts = TemperatureScaling().fit(logits[fit], y[fit])
    assert values[_key("temperature", data="clean")] == pytest.approx(ts.temperature_, rel=1e-9)
    for metric, expected in _library((logits[held] / ts.temperature_).softmax(1), y[held]).items():
        assert values[_key(metric, data="clean", scaling="temperature", subset="held_out")] == \
            pytest.approx(expected, abs=1e-9), metric
    raw_held = _library(logits[held].softmax(1), y[held])
    assert values[_key("ece", data="clean", scaling="none", subset="held_out")] == pytest.approx(raw_held["ece"])
    heads = [r for r in results["clean"].rows if r.headline]
    assert [(h.metric, h.params) for h in heads] == [("ece", {"data": "clean", "scaling": "none"})]
    assert [f.name for f in results["clean"].figures] == ["reliability_clean"]


def test_corrupted_numbers_equal_the_library(digits, results) -> None:
    model, test = digits
    x, y = test.load(select_examples(len(test), SMALL["num_examples"], SMALL["seed"]))
    values = _values(results["corrupted"])
    eces = []
    for name in SMALL["corruptions"]:
        xc = corrupt(x, name, 3, generator=seeded_generator(SMALL["seed"], "calibration", "corruption", name), preset="mnist")
        with torch.no_grad():
            probs = model(xc).double().softmax(1)
        expected = _library(probs, y)
        eces.append(expected["ece"])
        for metric in ("ece", "accuracy", "mean_confidence", "nll"):
            got = values[_key(metric, data="corrupted", severity=3, corruption=name, scaling="none")]
            assert got == pytest.approx(expected[metric], abs=1e-9), (name, metric)
    mean = values[_key("ece", data="corrupted", severity=3, corruption="mean", scaling="none")]
    assert mean == pytest.approx(np.mean(eces))
    assert ("ece", (("corruption", "mean"), ("data", "corrupted"), ("scaling", "temperature"), ("severity", 3),
                    ("subset", "held_out"))) in values


def test_adversarial_numbers_are_apgd_ce_on_the_adversarial_probes_subset(digits, results) -> None:
    model, test = digits
    idx = select_examples(len(test), SMALL["num_attack_examples"], SMALL["seed"])
    x, y = test.load(idx)
    res = apgd(model, x, y, eps=0.1, norm="linf", loss="ce", num_steps=SMALL["attack_steps"],
               generator=seeded_generator(SMALL["seed"], "calibration", "attack", 0.1))
    with torch.no_grad():
        probs = model(res.adv_inputs).double().softmax(1)
    expected = _library(probs, y)
    values = _values(results["adversarial"])
    for metric, value in expected.items():
        assert values[_key(metric, data="adversarial", eps=0.1, norm="linf", scaling="none")] == \
            pytest.approx(value, abs=1e-9), metric
    clean = _values(results["clean"])
    assert expected["accuracy"] < clean[_key("accuracy", data="clean", scaling="none")]
    assert "APGD-CE at linf eps=0.1 on 24 examples (each broken" in results["adversarial"].summary


def test_summary_job_has_the_overlay_and_the_table(results) -> None:
    summary = results["summary"]
    assert [f.name for f in summary.figures] == ["reliability_overlay"]
    (table,) = summary.tables
    assert [r[:2] for r in table.rows] == [("clean", "clean"), ("corrupted", "gaussian_noise"),
                                           ("corrupted", "contrast"), ("adversarial", "adversarial")]
    clean_ece = _values(results["clean"])[_key("ece", data="clean", scaling="none")]
    assert table.rows[0][table.columns.index("ECE")] == pytest.approx(clean_ece, abs=1e-6)


def test_deterministic_per_seed(digits, results) -> None:
    model, test = digits
    again = cal_probe.CalibrationProbe(**SMALL)
    for part in ("clean", "corrupted", "adversarial"):
        other = again.run(model, test, job={"part": part}, generator=torch.Generator().manual_seed(9))
        assert _values(other) == _values(results[part]), part
    seeded = cal_probe.CalibrationProbe(**{**SMALL, "seed": 4}).run(model, test, job={"part": "corrupted"},
                                                                   generator=_g())
    shared = set(_values(seeded)) & set(_values(results["corrupted"]))
    assert any(_values(seeded)[k] != _values(results["corrupted"])[k] for k in shared)


def test_tabular_data() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.rand(3, 6, generator=g)
    y = torch.arange(90) % 3
    x = (means[y] + 0.1 * torch.randn(90, 6, generator=g)).clamp(0, 1)
    model = nn.Linear(6, 3)
    with torch.no_grad():
        model.weight.copy_(means * 20)
        model.bias.copy_(-10 * (means ** 2).sum(1))
    data = Dataset(x, y, name="tabular")
    probe = build_probe("calibration", num_attack_examples=30, attack_steps=10)
    parts = {job["part"]: probe.run(model, data, job=job, generator=_g()) for job in probe.jobs()}
    assert not parts["corrupted"].rows and "image corruptions" in parts["corrupted"].summary
    assert any(r.metric == "ece" and r.headline for r in parts["clean"].rows)
    assert any(r.params.get("data") == "adversarial" for r in parts["adversarial"].rows)
    assert [r[0] for r in parts["summary"].tables[0].rows] == ["clean", "adversarial"]
    # outside [0, 1] the attack is skipped, as in the adversarial probe
    far = Dataset(x * 10 - 5, y, name="tabular-wide")
    out = probe.run(model, far, job={"part": "adversarial"}, generator=_g())
    assert not out.rows and "inputs in [0, 1]" in out.summary


def test_in_a_scan_with_its_report(digits, tmp_path: Path) -> None:
    model, test = digits
    small = test.subset(torch.arange(80))
    probe = build_probe("calibration", **SMALL)
    summary = run_scan(model, small, [probe], out_dir=tmp_path, progress=False, model_info={"name": "mlp"})
    assert not summary.failed, summary.failed
    with ResultsStore(tmp_path) as store:
        rows = [r for r in store.results(summary.run_id) if r.probe == "calibration"]
    assert [r.metric for r in rows if r.headline] == ["ece"]
    html = (tmp_path / "report.html").read_text()
    assert "Calibration" in html and "Reliability on clean, corrupted and adversarial inputs" in html
    assert "Calibration per set of inputs" in html
