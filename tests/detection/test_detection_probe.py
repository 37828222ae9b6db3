"""The ``detection`` scan probe (and Mahalanobis' automatic layers / eps that it uses).

Numbers equal the library's on the same split, determinism, tabular data, models whose features
cannot be read, a scan with its report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import robustlab.detection.probe as det_probe
from robustlab.adversarial import fgsm
from robustlab.data import Dataset, load_dataset
from robustlab.detection import (
    Mahalanobis,
    auto_layers,
    detection_metrics,
    evaluate_detector,
)
from robustlab.detection.probe import fit_eval_split, make_ood_sets
from robustlab.errors import InvalidParameterError, InvalidTypeError, UnknownNameError
from robustlab.scan import PROBES, ResultsStore, build_probe, run_scan
from train_testkit import fit_adam

NUM_EXAMPLES = 120
SMALL = {"num_examples": NUM_EXAMPLES, "num_attack_examples": 24, "seed": 3}



def _cnn() -> nn.Module:
    # names: "0" conv, "1" relu, "2" conv, "3" relu, "4" pool, "5" flatten, "6" linear head
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def digits():
    """(model, test Dataset): a small CNN trained for a few seconds on the built-in digits."""
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    x, y = train.tensors()
    g = torch.Generator().manual_seed(0)
    model = _cnn()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * ((2.0 / p[0].numel()) ** 0.5 if p.ndim > 1 else 0.0))
    fit_adam(model, x, y, epochs=8, lr=1e-2, generator=g)
    return model, test


def _g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _values(result) -> dict[tuple[str, tuple], float]:
    return {(r.metric, tuple(sorted(r.params.items()))): r.value for r in result.rows}


@pytest.fixture(scope="module")
def digits_result(digits):
    model, test = digits
    return det_probe.DetectionProbe(**SMALL).run(model, test, job={}, generator=_g())


# --------------------------------------------------------------------------- settings
def test_registered_defaults_and_params() -> None:
    assert "detection" in PROBES
    probe = build_probe("detection")
    assert probe.detectors == ("msp", "energy", "knn", "mahalanobis")
    assert probe.eps == 0.1  # the adversarial probe's headline linf radius on digits
    assert probe.attack == "apgd-ce" and probe.mahalanobis_layers == "auto" and probe.mahalanobis_eps == "auto"
    assert probe.jobs() == [{}]
    params = build_probe("detection", mahalanobis_layers=["a", "b"], mahalanobis_eps=0.0).params()
    assert params["mahalanobis_layers"] == ["a", "b"] and params["mahalanobis_eps"] == 0.0


@pytest.mark.parametrize(("settings", "error", "fragment"), [
    ({"detectors": ["odin"]}, UnknownNameError, "'detectors'"),
    ({"detectors": []}, InvalidTypeError, "'detectors'"),
    ({"detectors": ["msp", "msp"]}, InvalidParameterError, "distinct"),
    ({"eps": 0.0}, InvalidParameterError, "'eps'"),
    ({"attack": "fab"}, UnknownNameError, "'attack'"),
    ({"num_examples": 0}, InvalidParameterError, "'num_examples'"),
    ({"corruption": "rain"}, UnknownNameError, "'corruption'"),
    ({"knn_k": 0}, InvalidParameterError, "'knn_k'"),
    ({"mahalanobis_layers": "last"}, InvalidParameterError, "'mahalanobis_layers'"),
    ({"mahalanobis_eps": -1.0}, InvalidParameterError, "'mahalanobis_eps'"),
    ({"seed": -1}, InvalidParameterError, "'seed'"),
])
def test_bad_settings(settings, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        build_probe("detection", **settings)


def test_split_is_stratified_disjoint_and_seeded() -> None:
    y = torch.tensor([0] * 7 + [1] * 4 + [2] * 1)
    fit, held = fit_eval_split(y, seed=0)
    assert sorted(fit.tolist() + held.tolist()) == list(range(12))
    assert torch.bincount(y[fit], minlength=3).tolist() == [3, 2, 0]
    assert torch.equal(fit, fit_eval_split(y, seed=0)[0])
    assert not all(torch.equal(fit, fit_eval_split(y, seed=s)[0]) for s in range(1, 4))


def test_ood_sets_keep_what_they_promise() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=g)
    sets, skipped = make_ood_sets(x, x, is_image=True, seed=0)
    assert set(sets) == {"uniform_noise", "permuted_pixels", "corrupted"} and not skipped
    # permuted pixels: each image keeps its own per-channel histogram, and channels move together
    perm = sets["permuted_pixels"]
    assert torch.equal(perm.flatten(2).sort(2).values, x.flatten(2).sort(2).values)
    assert not torch.equal(perm, x)
    hits = (perm[:, 0].flatten(1)[:, :, None] == x[:, 0].flatten(1)[:, None, :])
    for i in range(6):  # a pixel's R value moved to position j brings its G value along
        j, k = torch.nonzero(hits[i], as_tuple=True)
        assert torch.equal(perm[i, 1].flatten()[j], x[i, 1].flatten()[k])
    assert sets["uniform_noise"].min() >= 0 and sets["uniform_noise"].max() <= 1
    t = torch.randn(50, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 1.0])
    tab, _ = make_ood_sets(t, t, is_image=False, seed=0)
    # shuffled features: every column keeps its values (the marginals), rows are mixed
    shuffled = tab["shuffled_features"]
    assert torch.equal(shuffled.sort(0).values, t.sort(0).values) and not torch.equal(shuffled, t)
    shift = tab["gaussian_shift"].mean(0) - t.mean(0)
    assert torch.all(shift > 0.5 * t.std(0))  # moved by 2 std (sampling noise well inside)


# --------------------------------------------------------------------------- numbers
def test_numbers_equal_the_library_on_the_same_split(digits, digits_result) -> None:
    model, test = digits
    probe = det_probe.DetectionProbe(**SMALL)
    values = _values(digits_result)
    x, y = test.load(det_probe.select_examples(len(test), NUM_EXAMPLES, SMALL["seed"]))
    fit, held = fit_eval_split(y, seed=SMALL["seed"])
    assert f"({len(fit)} examples, seed 3)" in digits_result.summary
    x_fit, y_fit, x_eval, y_eval = x[fit], y[fit], x[held], y[held]
    ood, _ = make_ood_sets(x_fit, x_eval, is_image=True, seed=SMALL["seed"])
    val_out = fgsm(model, x_fit, y_fit, eps=probe.eps).adv_inputs
    maha = Mahalanobis(layers="auto", eps="auto").fit(model, x_fit, y_fit, val_in=x_fit, val_out=val_out)
    assert values[("mahalanobis_eps", ())] == maha.eps_
    dets = det_probe.build_detectors(["msp", "energy", "knn"], knn_k=10, mahalanobis_layers="auto",
                                     mahalanobis_eps="auto", batch_size=512)
    dets = {n: d.fit(model, x_fit, y_fit) for n, d in dets.items()}
    dets["mahalanobis"] = maha
    adv = probe._adversarial_set(model, x_eval, y_eval)
    for name, det in dets.items():
        aurocs = []
        for out, xo in ood.items():
            m = evaluate_detector(det, model, x_eval, xo)
            key = (("detector", name), ("out", out))
            assert values[("auroc", key)] == m.auroc and values[("fpr_at_95_tpr", key)] == m.fpr_at_95_tpr
            assert values[("aupr_in", key)] == m.aupr_in and values[("aupr_out", key)] == m.aupr_out
            aurocs.append(m.auroc)
        assert values[("mean_ood_auroc", (("detector", name),))] == pytest.approx(np.mean(aurocs))
        m = evaluate_detector(det, model, adv.x_in, adv.x_out)
        assert values[("auroc", (("detector", name), ("out", "adversarial")))] == m.auroc
    assert values[("num_out", (("out", "adversarial"),))] == adv.x_out.shape[0] <= 24
    means = [v for (metric, _), v in values.items() if metric == "mean_ood_auroc"]
    (headline,) = [r for r in digits_result.rows if r.headline]
    assert headline.metric == "best_mean_ood_auroc" and headline.value == max(means)
    # a trained CNN's Mahalanobis features separate uniform noise from digits
    assert values[("auroc", (("detector", "mahalanobis"), ("out", "uniform_noise")))] > 0.9


def test_adversarial_set_is_correct_and_broken_examples(digits) -> None:
    model, test = digits
    probe = det_probe.DetectionProbe(**SMALL)
    x, y = test.tensors()
    adv = probe._adversarial_set(model, x[:30], y[:30])
    # which of the 30 examples each in input is (rows are distinct digits)
    source = [int(torch.nonzero((x[:30] == xi).flatten(1).all(1))[0]) for xi in adv.x_in]
    with torch.no_grad():
        assert torch.equal(model(adv.x_in).argmax(1), y[source])  # classified correctly ...
        assert (model(adv.x_out).argmax(1) != y[source]).all()  # ... and broken by the attack
    assert (adv.x_out - adv.x_in).abs().max() <= probe.eps + 1e-6 and len(source) >= 2


def test_deterministic_per_seed(digits, digits_result) -> None:
    model, test = digits
    again = det_probe.DetectionProbe(**SMALL).run(model, test, job={}, generator=torch.Generator().manual_seed(9))
    assert _values(again) == _values(digits_result)
    other = det_probe.DetectionProbe(**{**SMALL, "seed": 4}, adversarial=False).run(model, test, job={},
                                                                                   generator=_g())
    shared = set(_values(other)) & set(_values(digits_result))
    assert any(_values(other)[k] != _values(digits_result)[k] for k in shared)


def test_tabular_data(synthetic_problem) -> None:
    model, _, _, x_test, _ = synthetic_problem
    g = torch.Generator().manual_seed(0)
    labels = model(x_test).argmax(1).detach()
    data = Dataset(x_test[:200].clone(), labels[:200].clone(), name="gauss-mixture")
    result = build_probe("detection", seed=1).run(model, data, job={}, generator=g)
    values = _values(result)
    outs = {dict(k[1]).get("out") for k in values if k[0] == "auroc"}
    assert outs == {"gaussian_shift", "shuffled_features"}
    assert "Skipped out set adversarial: attacks need inputs in [0, 1]" in result.summary
    assert "Mahalanobis uses the penultimate layer with eps=0" in result.summary
    assert values[("mahalanobis_eps", ())] == 0.0
    # shifted by 2 std with twice the spread: far from the fitted class Gaussians
    assert values[("auroc", (("detector", "mahalanobis"), ("out", "gaussian_shift")))] > 0.9


class _NoHead(nn.Module):
    """Logits from a conv and a global pool: no nn.Linear, so no 'penultimate' layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 10, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x)).mean(dim=(2, 3))


def test_detectors_that_cannot_read_features_are_skipped(digits) -> None:
    model, test = digits
    small = test.subset(torch.arange(60))
    settings = {**SMALL, "adversarial": False}
    result = build_probe("detection", **settings).run(lambda x: model(x), small, job={}, generator=_g())
    detectors = {dict(k[1]).get("detector") for k in _values(result) if k[0] == "auroc"}
    assert detectors == {"msp", "energy"}
    assert "Skipped detector knn: needs a torch.nn.Module" in result.summary
    assert "Skipped detector mahalanobis" in result.summary
    no_head = build_probe("detection", **settings).run(_NoHead(), small, job={}, generator=_g())
    detectors = {dict(k[1]).get("detector") for k in _values(no_head) if k[0] == "auroc"}
    assert detectors == {"msp", "energy", "mahalanobis"}  # kNN reads the (missing) penultimate layer
    assert "Skipped detector knn: The 'layers' parameter" in no_head.summary


def test_in_a_scan_with_its_report(digits, tmp_path: Path) -> None:
    model, test = digits
    small = test.subset(torch.arange(80))
    probe = build_probe("detection", **{**SMALL, "num_attack_examples": 12})
    summary = run_scan(model, small, [probe], out_dir=tmp_path, progress=False, model_info={"name": "cnn"})
    assert not summary.failed, summary.failed
    with ResultsStore(tmp_path) as store:
        rows = [r for r in store.results(summary.run_id) if r.probe == "detection"]
    assert any(r.metric == "best_mean_ood_auroc" and r.headline for r in rows)
    html = (tmp_path / "report.html").read_text()
    assert "OOD and adversarial-input detection" in html and "best_mean_ood_auroc" in html
    assert "ROC curves per detector" in html and "Detection metrics per detector" in html


# --------------------------------------------------------------------------- Mahalanobis "auto"
def test_auto_layers_are_block_ends_without_the_copy_of_the_penultimate(digits) -> None:
    model, test = digits
    x, _ = test.tensors()
    # "3" (the last ReLU) pooled per channel IS the penultimate feature: left out
    assert auto_layers(model, x[:4], max_layers=4) == ("1", "penultimate")
    assert auto_layers(_NoHead(), x[:4], max_layers=4) == ("act",)
    deep = nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(4, 4), nn.ReLU())], nn.Linear(4, 2))
    names = auto_layers(deep, torch.zeros(3, 4), max_layers=3)
    assert names == ("1", "5", "9", "penultimate")  # ReLUs 1-9 (11 is the copy): 3 evenly spaced
    with pytest.raises(InvalidParameterError, match="'layers' parameter"):
        auto_layers(nn.Conv2d(1, 2, 3), x[:2], max_layers=4)


def test_auto_eps_is_lee_et_al_validation_choice(digits) -> None:
    model, test = digits
    x, y = test.tensors()
    x_fit, y_fit, x_val = x[:100], y[:100], x[100:160]
    val_out = fgsm(model, x_val, y[100:160], eps=0.1).adv_inputs
    auto = Mahalanobis(layers="auto", eps="auto").fit(model, x_fit, y_fit, val_in=x_val, val_out=val_out)
    assert auto.layers_ == ("1", "penultimate")
    # the rule: per grid eps, fit on the first halves, score the second halves, lowest FPR@95 wins
    keys = {}
    for e in (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005):
        half = Mahalanobis(layers=auto.layers_, eps=e).fit(model, x_fit, y_fit, val_in=x_val[:30],
                                                           val_out=val_out[:30])
        m = detection_metrics(half.score(model, x_val[30:]), half.score(model, val_out[30:]))
        keys[e] = (m.fpr_at_95_tpr, -m.auroc, e)
    assert auto.eps_ == min(keys.values())[2]
    # then the ensemble is refit on every validation input at that eps
    fixed = Mahalanobis(layers=auto.layers_, eps=auto.eps_).fit(model, x_fit, y_fit, val_in=x_val, val_out=val_out)
    torch.testing.assert_close(auto.score(model, x[160:200]), fixed.score(model, x[160:200]))
    with pytest.raises(InvalidParameterError, match="'eps' parameter"):
        Mahalanobis(eps="auto").fit(model, x_fit, y_fit)
    with pytest.raises(InvalidParameterError, match="'val_out' parameter"):
        Mahalanobis(eps="auto").fit(model, x_fit, y_fit, val_in=x_val, val_out=val_out[:3])
    with pytest.raises(InvalidTypeError, match="'layers' parameter"):
        Mahalanobis(layers="last").fit(model, x_fit, y_fit)
