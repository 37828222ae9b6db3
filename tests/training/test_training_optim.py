"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab.training import TrainConfig, build_optimizer, build_scheduler, lr_factor


def _lrs(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    """Learning rate used at every optimizer step of a run."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([param], config)
    sched = build_scheduler(opt, config, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(config.epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_constant_schedule_keeps_lr():
    assert _lrs(TrainConfig(epochs=3, lr=0.05, schedule="constant"), 2) == [0.05] * 6


def test_step_schedule_changes_lr_at_epoch_milestones():
    config = TrainConfig(epochs=5, lr=1.0, schedule="step", milestones=(2, 4), gamma=0.5)
    per_epoch = _lrs(config, 3)[::3]
    assert per_epoch == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25])
    # Constant within an epoch even though the scheduler steps every iteration.
    assert _lrs(config, 3)[6:9] == pytest.approx([0.5] * 3)


def test_cosine_schedule_follows_formula_per_iteration():
    config = TrainConfig(epochs=4, lr=0.2, schedule="cosine")
    total = 4 * 5
    expected = [0.2 * 0.5 * (1 + math.cos(math.pi * t / total)) for t in range(total)]
    lrs = _lrs(config, 5)
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(0.2) and all(a > b for a, b in zip(lrs, lrs[1:]))


def test_cosine_with_linear_warmup():
    config = TrainConfig(epochs=4, lr=1.0, schedule="cosine", warmup_epochs=1)
    lrs = _lrs(config, 4)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # Cosine runs over the 12 iterations after warm-up, starting from the peak.
    assert lrs[4:] == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 12)) for t in range(12)])


def test_warmup_applies_to_step_schedule():
    config = TrainConfig(epochs=3, lr=1.0, schedule="step", warmup_epochs=1, milestones=(2,), gamma=0.1)
    assert _lrs(config, 2) == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1])


def test_lr_factor_matches_scheduler():
    config = TrainConfig(epochs=3, schedule="cosine", warmup_epochs=1)
    lrs = _lrs(config, 7)
    assert [config.lr * lr_factor(config, t, steps_per_epoch=7) for t in range(21)] == pytest.approx(lrs)


def test_sgd_settings_from_config():
    config = TrainConfig(optimizer="sgd", lr=0.3, momentum=0.8, nesterov=True, weight_decay=1e-3)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], config)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.3, 0.8, True, 1e-3)


def test_adamw_and_parameter_group_overrides():
    config = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05)
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([a, {"params": [b], "weight_decay": 0.0}], config)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert opt.param_groups[0]["params"][0] is a and opt.param_groups[1]["params"][0] is b


def test_weight_decay_shrinks_weights():
    param = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([param], TrainConfig(lr=0.1, momentum=0.0, weight_decay=0.5))
    param.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(param.detach(), torch.full((3,), 1 - 0.1 * 0.5))


def test_no_parameters_is_an_error():
    with pytest.raises(ValueError, match="'params'"):
        build_optimizer([], TrainConfig())
