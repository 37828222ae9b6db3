"""Loss-based objectives: registry, one step reduces the loss, mixup, loss correction, robustness."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.data import Batch, Dataset, make_synthetic
from robustlab.errors import InvalidParameterError, ShapeError
from robustlab.label_noise import (
    BackwardCorrection,
    ForwardCorrection,
    Mixup,
    estimate_transition_anchor,
)
from robustlab.models import build_model, predict_logits
from robustlab.training import (
    OBJECTIVES,
    CrossEntropy,
    TrainConfig,
    Trainer,
    build_objective,
)

LOSS_METHODS = ["label-smoothing", "bootstrap-soft", "bootstrap-hard", "gce", "sce", "nce", "rce", "mae",
                "nce+rce", "nce+mae", "forward", "backward", "logitclip", "mixup"]
K = 3
T3 = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])


def _data(n: int = 96, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, :3] + 0.3 * torch.randn(n, 3, generator=g)).argmax(1)
    return Dataset(x, y)


def _model(seed: int = 0) -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, K))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _build(name: str):
    return build_objective(name, transition=T3) if name in ("forward", "backward") else build_objective(name)


def _setup(objective, model: nn.Module, data: Dataset, seed: int = 0) -> None:
    objective.setup(model=model, train=data, config=TrainConfig(epochs=1), device=torch.device("cpu"),
                    generator=torch.Generator().manual_seed(seed))


def test_every_method_is_registered_and_builds_with_defaults():
    for name in LOSS_METHODS:
        assert name in OBJECTIVES.names()
        objective = _build(name)
        assert objective.name == name


def test_registry_loads_the_methods_on_first_lookup_in_a_fresh_process():
    code = ("from robustlab.training import build_objective; "
            "print(type(build_objective('nce+rce', alpha=2.0)).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "NCERCE"


def test_label_smoothing_is_ce_with_its_default():
    objective = build_objective("label-smoothing")
    assert isinstance(objective, CrossEntropy) and objective.label_smoothing == 0.1
    data = _data()
    x, y = data.tensors()
    out = objective.compute(_model(), Batch(x, y, torch.arange(len(y))), epoch=0, step=0)
    assert torch.allclose(out.loss, F.cross_entropy(_model()(x), y, label_smoothing=0.1))


@pytest.mark.parametrize("name", LOSS_METHODS)
def test_one_step_reduces_the_objectives_own_loss(name):
    data = _data()
    x, y = data.tensors()
    batch = Batch(x, y, torch.arange(len(y)))
    model = _model()
    objective = _build(name)
    _setup(objective, model, data)
    state = torch.Generator().manual_seed(5).get_state()
    if isinstance(objective, Mixup):  # same lambda and pairs before and after the step
        objective._generator.set_state(state)
    before = objective.compute(model, batch, epoch=0, step=0).loss
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    before.backward()
    optimizer.step()
    if isinstance(objective, Mixup):
        objective._generator.set_state(state)
    with torch.no_grad():
        after = objective.compute(model, batch, epoch=0, step=1).loss
    before = float(before.detach())
    assert float(after) < before - 1e-4, (before, float(after))


@pytest.mark.parametrize("name", ["gce", "nce+rce", "nce+mae", "sce", "logitclip"])
def test_objective_is_the_mean_of_the_loss_function(name):
    from robustlab.label_noise import (
        gce_loss,
        logitclip_loss,
        mae_loss,
        nce_loss,
        rce_loss,
        sce_loss,
    )

    functions = {"gce": gce_loss, "sce": sce_loss, "logitclip": logitclip_loss,
                 "nce+rce": lambda z, y: nce_loss(z, y) + rce_loss(z, y),
                 "nce+mae": lambda z, y: nce_loss(z, y) + mae_loss(z, y)}
    data = _data()
    x, y = data.tensors()
    model = _model()
    out = _build(name).compute(model, Batch(x, y, torch.arange(len(y))), epoch=0, step=0)
    assert torch.allclose(out.loss, functions[name](model(x), y).mean())
    assert torch.equal(out.logits, model(x))


def test_mixup_loss_is_the_mixed_cross_entropy():
    data = _data()
    x, y = data.tensors()
    model = _model()
    objective = Mixup(alpha=0.4)
    _setup(objective, model, data, seed=3)
    state = objective._generator.get_state()
    lam, perm = objective.draw(len(y))
    objective._generator.set_state(state)
    out = objective.compute(model, Batch(x, y, torch.arange(len(y))), epoch=0, step=0)
    logits = model(lam * x + (1 - lam) * x[perm])
    expected = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
    assert 0.0 < lam < 1.0 and not torch.equal(perm, torch.arange(len(y)))
    assert torch.allclose(out.loss, expected) and out.logits is None


def test_mixup_lambda_follows_beta_alpha_alpha():
    objective = Mixup(alpha=0.2)
    _setup(objective, _model(), _data())
    lams = np.array([objective.draw(4)[0] for _ in range(2000)])
    # Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 1/5.6; mostly near 0 or 1.
    assert abs(lams.mean() - 0.5) < 0.03
    assert abs(lams.var() - 1 / 5.6) < 0.015


def test_mixup_is_deterministic_per_seed():
    data = _data()

    def run(seed: int) -> list[torch.Tensor]:
        model = _model()
        Trainer(model, "mixup", TrainConfig(epochs=2, batch_size=32, seed=seed)).fit(data)
        return [p.detach().clone() for p in model.parameters()]

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


def test_forward_with_identity_trains_exactly_like_ce():
    data = _data()
    config = TrainConfig(epochs=2, batch_size=32, seed=0)
    ce, fw = _model(), _model()
    Trainer(ce, CrossEntropy(), config).fit(data)
    Trainer(fw, ForwardCorrection(transition=np.eye(K)), config).fit(data)
    for p, q in zip(ce.parameters(), fw.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def _flip(labels: torch.Tensor, t: np.ndarray, g: torch.Generator) -> torch.Tensor:
    rows = torch.tensor(t, dtype=torch.float64)[labels]
    return torch.multinomial(rows, 1, generator=g).squeeze(1)


def test_estimated_transition_from_a_warm_up_and_exact_resume(tmp_path):
    g = torch.Generator().manual_seed(0)
    task = make_synthetic(600, num_classes=K, dim=4, separation=5.0, generator=g)
    x, y = task.dataset.tensors()
    data = Dataset(x, _flip(y, T3, g))
    config = TrainConfig(epochs=3, batch_size=64, optimizer="adamw", lr=1e-2, weight_decay=0.0, seed=0)

    def model() -> nn.Module:
        return build_model("mlp", (4,), K, seed=0, hidden_sizes=(32,))

    objective = ForwardCorrection(estimate_epochs=8)
    full = model()
    Trainer(full, objective, config).fit(data, run_dir=tmp_path / "full")
    estimate = objective.transition_
    assert estimate.shape == (K, K) and torch.allclose(estimate.sum(1), torch.ones(K, dtype=estimate.dtype))
    # Well-separated classes: the warm-up network finds near-anchors and T_hat is close to T.
    assert float((estimate - torch.tensor(T3)).abs().max()) < 0.12

    class Stop(Exception):
        pass

    class StopAt(ForwardCorrection):
        def on_epoch_end(self, epoch: int) -> None:
            if epoch == 1:
                raise Stop

    resumed = model()
    with pytest.raises(Stop):
        Trainer(resumed, StopAt(estimate_epochs=8), config).fit(data, run_dir=tmp_path / "resumed")
    second = ForwardCorrection(estimate_epochs=8)
    second._warmup_pred_probs = None  # type: ignore[assignment]  # resume must not estimate again
    resumed = model()
    Trainer(resumed, second, config).fit(data, run_dir=tmp_path / "resumed", resume=True)
    assert torch.equal(second.transition_, estimate)
    assert all(torch.equal(p, q) for p, q in zip(full.parameters(), resumed.parameters()))


def test_transition_from_pred_probs():
    data = _data()
    rng = np.random.default_rng(0)
    pred_probs = rng.dirichlet(np.ones(K), size=len(data))
    objective = BackwardCorrection(pred_probs=pred_probs)
    _setup(objective, _model(), data)
    assert torch.allclose(objective.transition_, estimate_transition_anchor(pred_probs))
    with pytest.raises(ShapeError, match="'pred_probs'"):
        _setup(BackwardCorrection(pred_probs=pred_probs[:10]), _model(), data)


@pytest.mark.parametrize(
    ("name", "params", "argument"),
    [
        ("gce", {"q": 0.0}, "q"),
        ("gce", {"q": 1.01}, "q"),
        ("sce", {"alpha": -1.0}, "alpha"),
        ("nce+rce", {"beta": -0.5}, "beta"),
        ("nce+mae", {"alpha": -0.5}, "alpha"),
        ("bootstrap-soft", {"beta": 2.0}, "beta"),
        ("logitclip", {"delta": -1.0}, "delta"),
        ("mixup", {"alpha": 0.0}, "alpha"),
        ("label-smoothing", {"label_smoothing": 1.0}, "label_smoothing"),
        ("forward", {"transition": np.full((3, 3), 0.2)}, "transition"),
        ("forward", {"transition": np.ones((3, 2))}, "transition"),
        ("forward", {"estimate_epochs": 0}, "estimate_epochs"),
        ("forward", {"holdout": 0.5}, "holdout"),
        ("backward", {"transition": np.full((2, 2), 0.5)}, "transition"),
        ("forward", {"transition": np.eye(3), "pred_probs": np.full((4, 3), 1 / 3)}, "pred_probs"),
    ],
)
def test_bad_method_parameters_name_the_argument(name, params, argument):
    with pytest.raises(InvalidParameterError, match=f"'{argument}'") as info:
        build_objective(name, **params)
    assert "\n" not in str(info.value)


def test_transition_of_the_wrong_size_for_the_data():
    objective = ForwardCorrection(transition=np.eye(4))
    with pytest.raises(ShapeError, match=r"'transition'.*\(3, 3\)"):
        _setup(objective, _model(), _data())


# ---------------------------------------------------------------------- the key test
def _symmetric_noise(labels: torch.Tensor, k: int, rate: float, g: torch.Generator) -> torch.Tensor:
    """Flip a fraction ``rate`` (in expectation) to a uniformly drawn *other* class."""
    flip = torch.rand(labels.shape, generator=g) < rate
    other = (labels + torch.randint(1, k, labels.shape, generator=g)) % k
    return torch.where(flip, other, labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_robust_losses_beat_ce_under_40_percent_symmetric_noise(seed):
    """Synthetic 4-class task, 40% symmetric noise, an MLP that can memorise the noise.

    Over seeds 0-7 (measured while writing this test) CE reached 0.50-0.58 clean test accuracy,
    GCE 0.63-0.74 (margin >= 0.12) and NCE+RCE 0.71-0.78 (margin >= 0.19); Bayes accuracy 0.85.
    """
    g = torch.Generator().manual_seed(seed)
    task = make_synthetic(2500, num_classes=4, dim=10, separation=3.0, generator=g)
    x, y = task.dataset.tensors()
    train = Dataset(x[:500], _symmetric_noise(y[:500], 4, 0.4, g))
    test = Dataset(x[500:], y[500:])
    config = TrainConfig(epochs=30, batch_size=100, optimizer="adamw", lr=1e-2, weight_decay=0.0,
                         schedule="constant", seed=seed)
    accuracy = {}
    for method in ("ce", "gce", "nce+rce"):
        model = build_model("mlp", (10,), 4, seed=seed, hidden_sizes=(128, 128))
        Trainer(model, method, config).fit(train)
        accuracy[method] = float((predict_logits(model, test).argmax(1) == test.labels).float().mean())
    assert accuracy["gce"] >= accuracy["ce"] + 0.08, accuracy
    assert accuracy["nce+rce"] >= accuracy["ce"] + 0.12, accuracy
