"""The ``certified`` scan probe: jobs, determinism, bounds vs clean, not-applicable models, report."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import robustlab.certified.probe  # noqa: F401  (registers the probe)
from robustlab.certified import verified_accuracy
from robustlab.certified.probe import (
    CertifiedProbe,
    bounds_not_applicable,
    max_certifiable_radius,
)
from robustlab.data import Dataset, load_dataset
from robustlab.errors import InvalidParameterError, InvalidTypeError, UnknownNameError
from robustlab.scan import PROBES, ResultsStore, build_probe, run_scan
from train_testkit import fit_adam

GRID = {"linf": [0.03, 0.005, 0.01]}  # unsorted on purpose: the probe sorts each grid
SETTINGS = {"eps": GRID, "sigmas": [0.5, 0.25], "n0": 20, "n": 200, "num_examples": 24, "seed": 1}


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[-1]) ** 0.5 if p.ndim > 1 else 0.0 * p)
    return fit_adam(model, x, y, epochs=epochs, lr=3e-3, generator=g)



@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, Dataset]:
    """A small MLP trained for a second on digits (about 95% test accuracy) and 60 test digits."""
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    x, y = train.tensors()
    model = _train(nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10)), x, y,
                   epochs=8, seed=0)
    xt, yt = test.tensors()
    return model, Dataset(xt[:60].clone(), yt[:60].clone(), name="digits-60")


def _probe(**kw) -> CertifiedProbe:
    return build_probe("certified", **{**SETTINGS, **kw})


def _rows(result) -> dict[tuple[str, str], float]:
    return {(r.metric, repr(sorted(r.params.items()))): r.value for r in result.rows}


def test_registered_jobs_and_params() -> None:
    assert "certified" in PROBES
    probe = _probe()
    assert probe.eps == {"linf": (0.005, 0.01, 0.03)} and probe.headline_eps == {"linf": 0.01}
    assert probe.sigmas == (0.25, 0.5) and probe.headline_method == "crown"
    jobs = probe.jobs()
    assert jobs[:3] == [{"method": "ibp", "norm": "linf", "eps": e} for e in (0.005, 0.01, 0.03)]
    assert len(jobs) == 3 * 3 + 1 + 2 + 1
    assert {"norm": "linf", "part": "bounds_curve"} in jobs and {"part": "smoothing_curve"} in jobs
    assert len(_probe(sigmas=[]).jobs()) == 10 and len(_probe(methods=[]).jobs()) == 3
    assert _probe(methods=["ibp"]).headline_method == "ibp"
    default = build_probe("certified")
    assert default.eps == {"linf": (0.01, 0.02, 0.03)} and default.headline_eps == {"linf": 0.02}
    assert default.methods == ("ibp", "crown-ibp", "crown") and default.sigmas == (0.25,)
    assert (default.n0, default.n, default.alpha, default.num_examples) == (100, 1000, 0.001, 20)
    assert probe.params()["eps"] == {"linf": [0.005, 0.01, 0.03]}


@pytest.mark.parametrize(("settings", "error", "fragment"), [
    ({"eps": {"l1": [0.1]}}, UnknownNameError, "'eps'"),
    ({"eps": {"linf": [-0.1]}}, InvalidParameterError, "'eps'"),
    ({"eps": {"linf": [0.0]}}, InvalidParameterError, "'eps'"),
    ({"eps": {"linf": [0.1, 0.1]}}, InvalidParameterError, "distinct"),
    ({"eps": {"linf": []}}, InvalidTypeError, "'eps'"),
    ({"headline_eps": {"linf": 0.3}}, InvalidParameterError, "'headline_eps'"),
    ({"methods": ["lp"]}, UnknownNameError, "'methods'"),
    ({"methods": "crown"}, InvalidTypeError, "'methods'"),
    ({"methods": [], "sigmas": []}, InvalidParameterError, "'methods'"),
    ({"sigmas": [0.0]}, InvalidParameterError, "'sigmas'"),
    ({"sigmas": [-0.25]}, InvalidParameterError, "'sigmas'"),
    ({"n0": 0}, InvalidParameterError, "'n0'"),
    ({"n": 0}, InvalidParameterError, "'n'"),
    ({"alpha": 0.0}, InvalidParameterError, "'alpha'"),
    ({"alpha": 1.0}, InvalidParameterError, "'alpha'"),
    ({"radii": [-1.0]}, InvalidParameterError, "'radii'"),
    ({"num_examples": 0}, InvalidParameterError, "'num_examples'"),
    ({"seed": -1}, InvalidParameterError, "'seed'"),
])
def test_bad_settings(settings, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        _probe(**settings)


def test_bound_jobs_agree_with_the_library_and_are_ordered(digits) -> None:
    model, data = digits
    probe = _probe()
    g = torch.Generator()
    x, y = data.load(probe._subset(len(data)))
    clean = float((model(x).argmax(1) == y).double().mean())
    acc = {}
    for job in probe.jobs():
        if "method" in job:
            result = probe.run(model, data, job=job, generator=g)
            (value,) = [r.value for r in result.rows if r.metric == "verified_accuracy"]
            acc[job["method"], job["eps"]] = value
            assert value == pytest.approx(verified_accuracy(model, x, y, eps=job["eps"], method=job["method"]))
            headline = [r.headline for r in result.rows if r.metric == "verified_accuracy"]
            assert headline == [job["method"] == "crown" and job["eps"] == 0.01]
    for e in probe.eps["linf"]:
        assert acc["ibp", e] <= acc["crown", e] <= clean  # CROWN is at least as tight as IBP here
        assert acc["ibp", e] <= acc["crown-ibp", e] <= clean
    assert acc["crown", 0.005] > acc["ibp", 0.03]  # the grid shows something
    curve = probe.run(model, data, job={"norm": "linf", "part": "bounds_curve"}, generator=g)
    assert _rows(curve)[("clean_accuracy", "[]")] == pytest.approx(clean)
    (table,) = curve.tables
    assert [row[0] for row in table.rows] == ["ibp", "crown-ibp", "crown"]
    assert all(row[1:] == tuple(round(acc[row[0], e], 6) for e in probe.eps["linf"]) for row in table.rows)
    assert curve.figures[0].name == "verified_accuracy_curve" and curve.figures[0].svg.startswith("<svg")


def test_results_are_deterministic_per_seed(digits) -> None:
    model, data = digits
    first = _probe().run(model, data, job={"sigma": 0.25}, generator=torch.Generator().manual_seed(0))
    # A fresh probe (no cache) and another job generator: the same numbers.
    again = _probe().run(model, data, job={"sigma": 0.25}, generator=torch.Generator().manual_seed(9))
    other = _probe(seed=2).run(model, data, job={"sigma": 0.25}, generator=torch.Generator())
    a, b = _rows(first), _rows(again)
    a.pop(("seconds", "[]")), b.pop(("seconds", "[]"))
    assert a == b
    assert _rows(other) != _rows(first)  # another seed: another subset and other noise
    values = a
    cert = [values[("certified_accuracy", repr([("radius", r)]))] for r in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(x >= y for x, y in itertools.pairwise(cert))  # certified accuracy falls with the radius
    assert cert[0] + values[("abstention_rate", "[]")] <= 1.0 + 1e-12
    assert cert[0] <= values[("clean_accuracy", "[]")] + 0.25  # the smoothed model is no miracle
    assert 0.0 <= values[("average_certified_radius", "[]")] <= max_certifiable_radius(0.25, 200, 0.001)
    assert 0.0 < values[("noisy_accuracy", "[]")] <= 1.0


class _Tanh(nn.Module):
    """An MLP with a layer bound propagation does not support."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.squash = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.squash(self.inner(x)) * 10


def test_unsupported_model_is_not_applicable_and_smoothing_still_runs(digits, tmp_path) -> None:
    model, data = digits
    wrapped = _Tanh(model).eval()
    reason = bounds_not_applicable(wrapped, data.load(torch.arange(2))[0])
    assert reason.startswith("Not applicable: unsupported layer Tanh ('squash')"), reason
    summary = run_scan(wrapped, data, [_probe(sigmas=[0.25])], out_dir=tmp_path, progress=False)
    assert not summary.failed, summary.failed
    with ResultsStore(tmp_path) as store:
        results = [r for r in store.results(summary.run_id) if r.probe == "certified"]
    assert results and all("sigma" in r.job for r in results)  # bound jobs: no rows, no failure
    assert not summary.headline
    html = (tmp_path / "report.html").read_text()
    assert "Not applicable: unsupported layer Tanh" in html and "certified_accuracy" in html
    # a plain callable: smoothing only needs predictions
    assert bounds_not_applicable(lambda t: model(t), data.load(torch.arange(2))[0]).startswith(
        "Not applicable: bound propagation needs a torch.nn.Module")


def test_tabular_data(digits) -> None:
    wine = load_dataset("wine")
    x, y = wine.tensors()
    model = _train(nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, 3)), x, y, epochs=25, seed=0)
    probe = _probe(eps={"linf": [0.01], "l2": [0.05]}, sigmas=[0.1], num_examples=30)
    g = torch.Generator()
    crown = probe.run(model, wine, job={"method": "crown", "norm": "l2", "eps": 0.05}, generator=g)
    assert crown.rows and 0.0 < crown.rows[0].value <= 1.0
    assert probe.run(model, wine, job={"sigma": 0.1}, generator=g).rows
    # features outside [0, 1]: no box for bound propagation, smoothing still applies
    raw = Dataset(x * 10 - 3, y, class_names=wine.class_names)
    result = probe.run(model, raw, job={"method": "ibp", "norm": "linf", "eps": 0.01}, generator=g)
    assert result.rows == () and "[0, 1]" in result.summary
    assert probe.run(model, raw, job={"sigma": 0.1}, generator=g).rows


def test_scan_report_renders_and_resumes(digits, tmp_path) -> None:
    model, data = digits
    probe = _probe(sigmas=[0.25], eps={"linf": [0.005, 0.01]})
    summary = run_scan(model, data, [probe], out_dir=tmp_path, progress=False)
    assert not summary.failed, summary.failed
    (headline,) = summary.headline
    assert headline.metric == "verified_accuracy[eps=0.005, method=crown, norm=linf]"
    html = (tmp_path / "report.html").read_text()
    for text in ("Certified robustness", "Verified accuracy against linf radius", "certified accuracy against L2",
                 "verified_accuracy", "average_certified_radius", "small-n estimate"):
        assert text in html, text
    again = run_scan(model, data, [probe], out_dir=tmp_path, progress=False)
    assert again.jobs_run == 0 and again.jobs_skipped == len(probe.jobs())
