"""Calibration objectives: MaxSup and ACLS ("adaptive-label-smoothing").

Known answers against the formulas written out by hand, alpha = 0 is cross entropy, finite
gradients, one-line errors, the schedule, and a short digits run where the regularised models
are less confident on held-out data than cross entropy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustlab.calibration.training  # noqa: F401  (registers the objectives)
from robustlab.calibration import expected_calibration_error
from robustlab.calibration.training import (
    AdaptiveConditionalLabelSmoothing,
    MaxSup,
    acls_loss,
    maxsup_loss,
)
from robustlab.data import Dataset, load_dataset
from robustlab.data.dataset import Batch
from robustlab.errors import InvalidParameterError
from robustlab.training import OBJECTIVES, TrainConfig, Trainer, build_objective


def _logits() -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.tensor([[3.0, 1.0, -2.0, 0.5],
                      [0.0, 14.0, 1.0, -1.0],   # max > margin 10: both ACLS terms active
                      [2.0, 2.0, 0.0, 0.0],     # a tie for the maximum
                      [-1.0, 0.0, 25.0, 12.0]], dtype=torch.float64)
    return z, torch.tensor([0, 2, 1, 3])


def _maxsup_by_hand(z: torch.Tensor, y: torch.Tensor, alpha: float) -> float:
    total = 0.0
    for i in range(z.shape[0]):
        row = z[i].tolist()
        lse = float(np.log(np.sum(np.exp(row))))
        total += (lse - row[int(y[i])]) + alpha * (max(row) - sum(row) / len(row))
    return total / z.shape[0]


def _acls_by_hand(z: torch.Tensor, y: torch.Tensor, alpha: float, l1: float, l2: float, m: float) -> float:
    n, k = z.shape
    ce = float(F.cross_entropy(z, y))
    pos = neg = 0.0
    for i in range(n):
        row = z[i].tolist()
        top = max(row)
        for v in row:
            if v == top:
                pos += max(top - m, 0.0) ** 2
            else:
                neg += max(top - v - m, 0.0) ** 2
    return ce + alpha * (l1 * pos / n + l2 * neg / (n * (k - 1)))


def test_registered_with_the_papers_defaults() -> None:
    assert {"maxsup", "adaptive-label-smoothing"} <= set(OBJECTIVES.names())
    ms = build_objective("maxsup")
    assert isinstance(ms, MaxSup) and (ms.alpha, ms.alpha_end) == (0.1, 0.2)
    acls = build_objective("adaptive-label-smoothing")
    assert isinstance(acls, AdaptiveConditionalLabelSmoothing)
    assert (acls.alpha, acls.pos_lambda, acls.neg_lambda, acls.margin) == (0.1, 1.0, 0.1, 10.0)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.7])
def test_maxsup_known_answers(alpha: float) -> None:
    z, y = _logits()
    assert float(maxsup_loss(z, y, alpha=alpha)) == pytest.approx(_maxsup_by_hand(z, y, alpha), rel=1e-12)


def test_maxsup_differs_from_label_smoothing_only_where_the_true_logit_is_not_the_largest() -> None:
    # LS = CE + a (z_y - mean z) (the paper's decomposition); MaxSup puts z_max in place of z_y.
    z, y = _logits()
    ls = F.cross_entropy(z, y, reduction="none", label_smoothing=0.3)
    ms = torch.stack([maxsup_loss(z[i:i + 1], y[i:i + 1], alpha=0.3) for i in range(len(y))])
    right = z.gather(1, y[:, None]).squeeze(1) == z.max(1).values  # the true class holds the max
    assert torch.allclose(ls[right], ms[right]) and not torch.isclose(ls[~right], ms[~right]).any()


@pytest.mark.parametrize(("alpha", "l1", "l2", "m"), [(0.1, 1.0, 0.1, 10.0), (0.5, 0.3, 2.0, 1.0),
                                                     (1.0, 1.0, 1.0, 0.0)])
def test_acls_known_answers(alpha, l1, l2, m) -> None:
    z, y = _logits()
    got = float(acls_loss(z, y, alpha=alpha, pos_lambda=l1, neg_lambda=l2, margin=m))
    assert got == pytest.approx(_acls_by_hand(z, y, alpha, l1, l2, m), rel=1e-12)


def test_alpha_zero_is_cross_entropy_and_objectives_match_functions() -> None:
    z, y = _logits()
    ce = F.cross_entropy(z, y)
    assert torch.allclose(maxsup_loss(z, y, alpha=0.0), ce)
    assert torch.allclose(acls_loss(z, y, alpha=0.0), ce)
    model = nn.Identity()
    batch = Batch(inputs=z, labels=y, indices=torch.arange(len(y)))
    assert torch.allclose(MaxSup(alpha=0.0, alpha_end=None).compute(model, batch, epoch=3, step=0).loss, ce)
    assert torch.allclose(MaxSup(alpha=0.4, alpha_end=None).compute(model, batch, epoch=0, step=0).loss,
                          maxsup_loss(z, y, alpha=0.4))
    out = AdaptiveConditionalLabelSmoothing(margin=1.0).compute(model, batch, epoch=0, step=0)
    assert torch.allclose(out.loss, acls_loss(z, y, margin=1.0)) and out.logits is z


def test_maxsup_schedule_is_the_authors_linear_ramp() -> None:
    objective = MaxSup()
    objective.setup(model=nn.Identity(), train=None, config=TrainConfig(epochs=11), device=torch.device("cpu"),
                    generator=torch.Generator())
    assert [round(objective.weight(e), 10) for e in (0, 5, 10)] == [0.1, 0.15, 0.2]
    assert MaxSup(alpha=0.3, alpha_end=None).weight(7) == 0.3


def test_gradients_are_finite_and_push_the_right_way() -> None:
    z, y = _logits()
    for loss_fn in (lambda t: maxsup_loss(t, y, alpha=0.5), lambda t: acls_loss(t, y, alpha=1.0)):
        t = z.clone().requires_grad_(True)
        loss_fn(t).backward()
        assert torch.isfinite(t.grad).all()
    # large logits (x1000): the penalties still give finite gradients that lower the top logit
    big = (z * 1000).requires_grad_(True)
    (acls_loss(big, y, alpha=1.0) - F.cross_entropy(big, y)).backward()
    assert torch.isfinite(big.grad).all() and (big.grad[torch.arange(4), big.argmax(1)] > 0).all()
    x = z.clone().requires_grad_(True)
    (maxsup_loss(x, y, alpha=1.0) - F.cross_entropy(x, y)).backward()
    assert torch.allclose(x.grad.sum(1), torch.zeros(4, dtype=x.dtype))  # z_max - mean: shift invariant


def test_the_trainer_runs_the_schedule_epoch_by_epoch() -> None:
    g = torch.Generator().manual_seed(0)
    data = Dataset(torch.randn(48, 5, generator=g), torch.arange(48) % 3, name="toy")
    model = nn.Linear(5, 3)
    result = Trainer(model, "maxsup", TrainConfig(epochs=3, batch_size=16, seed=0)).fit(data)
    assert [round(row["metrics"]["alpha"], 10) for row in result.history] == [0.1, 0.15, 0.2]


@pytest.mark.parametrize(("build", "fragment"), [
    (lambda: MaxSup(alpha=-0.1), "'alpha'"),
    (lambda: MaxSup(alpha_end=float("nan")), "'alpha_end'"),
    (lambda: AdaptiveConditionalLabelSmoothing(margin=-1), "'margin'"),
    (lambda: AdaptiveConditionalLabelSmoothing(pos_lambda="x"), "'pos_lambda'"),
    (lambda: build_objective("maxsup", beta=1), "'params'"),
    (lambda: maxsup_loss(torch.zeros(2, 3), torch.tensor([0, 3])), "'labels'"),
    (lambda: acls_loss(torch.zeros(2, 1), torch.tensor([0, 0])), "'logits'"),
    (lambda: acls_loss(torch.zeros(2, 3), torch.tensor([0, 1]), neg_lambda=-2), "'neg_lambda'"),
])
def test_bad_parameters_are_one_line_errors(build, fragment) -> None:
    with pytest.raises((InvalidParameterError, TypeError, ValueError), match=fragment) as info:
        build()
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- training on digits
def _mlp(seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * ((2.0 / p.shape[1]) ** 0.5 if p.ndim > 1 else 0.0))
    return model


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[float, float, float]]:
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    x, y = test.tensors()
    config = TrainConfig(epochs=15, batch_size=64, optimizer="adamw", lr=1e-2, weight_decay=0.0,
                         schedule="constant", seed=0)
    out = {}
    for name, params in (("ce", {}), ("maxsup", {"alpha": 0.3, "alpha_end": None}),
                         ("label-smoothing", {}), ("adaptive-label-smoothing", {"margin": 2.0})):
        model = _mlp(0)
        Trainer(model, build_objective(name, **params), config).fit(train)
        model.eval()
        with torch.no_grad():
            p = model(x).softmax(1)
        out[name] = (float(p.max(1).values.mean()), expected_calibration_error(p, y),
                     float((p.argmax(1) == y).double().mean()))
    return out


def test_regularised_models_are_less_confident_than_ce(trained) -> None:
    conf_ce, ece_ce, acc_ce = trained["ce"]
    assert acc_ce > 0.9 and conf_ce > 0.95  # CE drives the held-out confidence to ~1
    for name in ("maxsup", "label-smoothing", "adaptive-label-smoothing"):
        conf, _, acc = trained[name]
        assert acc > 0.9, (name, trained[name])
        assert conf < conf_ce - 0.01, (name, trained[name], trained["ce"])
    assert trained["maxsup"][1] < ece_ce or trained["maxsup"][0] < conf_ce - 0.05
