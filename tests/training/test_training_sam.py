"""SAM / ASAM as a Trainer option: the ascent step, the two-pass step, determinism, resume, BN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.data import Batch
from robustlab.errors import InvalidParameterError
from robustlab.training import (
    BaseObjective,
    CrossEntropy,
    ObjectiveOutput,
    TrainConfig,
    Trainer,
)
from robustlab.training import trainer as trainer_module
from robustlab.training.optim import sam_perturb, sam_restore


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def _with_grads(model: nn.Module, data) -> list[torch.Tensor]:
    x, y = data.tensors()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return list(model.parameters())


# ---------------------------------------------------------------------- the ascent step
@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_perturbation_has_norm_rho_along_the_gradient(toy_data, make_model, rho):
    params = _with_grads(make_model(0), toy_data)
    before = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]
    originals = sam_perturb(params, rho=rho)
    e = [p.detach() - b for p, b in zip(params, before)]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in e]))
    assert float(norm) == pytest.approx(rho, rel=1e-4)
    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    for t, g in zip(e, grads):  # e = rho g / ||g||
        assert torch.allclose(t, rho * g / grad_norm, atol=1e-6)
    sam_restore(params, originals)
    assert all(torch.equal(p, b) for p, b in zip(params, before))  # bit-exact restore


def test_adaptive_perturbation_has_norm_rho_after_rescaling(toy_data, make_model):
    params = _with_grads(make_model(0), toy_data)
    before = [p.detach().clone() for p in params]
    sam_perturb(params, rho=0.5, adaptive=True, eta=0.01)
    scaled = [(p.detach() - b) / (b.abs() + 0.01) for p, b in zip(params, before)]  # T_w^-1 e
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in scaled]))
    assert float(norm) == pytest.approx(0.5, rel=1e-4)
    # Large weights move more than small ones (scale invariance), unlike plain SAM.
    plain = _with_grads(make_model(0), toy_data)
    assert not all(torch.allclose(p, q) for p, q in zip(params, plain))


def test_tensors_without_gradient_stay_put(make_model):
    model = make_model(0)
    params = list(model.parameters())
    params[0].grad = torch.ones_like(params[0])
    before = [p.detach().clone() for p in params]
    originals = sam_perturb(params, rho=0.1)
    assert originals[1] is None and torch.equal(params[1], before[1])
    assert not torch.equal(params[0], before[0])


def test_bad_sam_settings_name_the_argument():
    for bad in (0.0, -0.05):
        with pytest.raises(InvalidParameterError, match="'sam_rho'"):
            TrainConfig(sam_rho=bad)
    with pytest.raises(InvalidParameterError, match="'sam_adaptive'"):
        TrainConfig(sam_adaptive=True)
    with pytest.raises(InvalidParameterError, match="'rho'"):
        sam_perturb([], rho=0.0)


# ---------------------------------------------------------------------- the Trainer
def _old_step(self, batch: Batch, epoch: int) -> ObjectiveOutput:
    """``_Run._step`` as it was before SAM existed (verbatim), the reference for ``sam_rho=None``."""
    self.model.train()
    out = self.objective.compute(self.model, batch, epoch=epoch, step=self.step)
    trainer_module._check_output(out, batch, self.objective.name, self.train_data.num_classes,
                                 need_logits=self.records is not None)
    self.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if self.config.grad_clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip_norm)
    self.optimizer.step()
    self.scheduler.step()
    self.objective.on_step_end(epoch=epoch, step=self.step)
    self.step += 1
    return out


def test_without_sam_training_is_bit_identical_to_the_loop_before_sam(toy_data, make_model, monkeypatch):
    config = TrainConfig(epochs=2, batch_size=16, grad_clip_norm=5.0)
    assert config.sam_rho is None
    current = make_model(0, dropout=0.3)
    Trainer(current, CrossEntropy(), config).fit(toy_data)
    monkeypatch.setattr(trainer_module._Run, "_step", _old_step)
    reference = make_model(0, dropout=0.3)
    Trainer(reference, CrossEntropy(), config).fit(toy_data)
    assert _same(current, reference)


def test_sam_learns_and_differs_from_plain_training(toy_data, toy_val, make_model):
    config = TrainConfig(epochs=30, batch_size=16, lr=0.1, weight_decay=0.0, sam_rho=0.05)
    model = make_model(0)
    result = Trainer(model, CrossEntropy(), config).fit(toy_data, val=toy_val)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 3
    assert result.final_val_acc >= 0.9
    plain = make_model(0)
    Trainer(plain, CrossEntropy(), TrainConfig(epochs=30, batch_size=16, lr=0.1, weight_decay=0.0)).fit(toy_data)
    assert not _same(model, plain)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_is_deterministic_and_resumes_exactly(toy_data, make_model, tmp_path, adaptive):
    class Crash(Exception):
        pass

    class CrashAt(CrossEntropy):
        def on_epoch_start(self, epoch: int) -> None:
            if epoch == 2:
                raise Crash

    config = TrainConfig(epochs=3, batch_size=16, sam_rho=0.1, sam_adaptive=adaptive)
    straight = make_model(0, dropout=0.3)
    Trainer(straight, CrossEntropy(), config).fit(toy_data)
    again = make_model(0, dropout=0.3)
    Trainer(again, CrossEntropy(), config).fit(toy_data)
    assert _same(straight, again)
    with pytest.raises(Crash):
        Trainer(make_model(0, dropout=0.3), CrashAt(), config).fit(toy_data, run_dir=tmp_path)
    resumed = make_model(5, dropout=0.3)
    Trainer(resumed, CrossEntropy(), config).fit(toy_data, run_dir=tmp_path, resume=True)
    assert _same(straight, resumed)


def test_one_sam_step_uses_the_gradient_at_the_perturbed_weights(toy_data, make_model):
    """Full batch, one step of plain SGD: w1 = w0 - lr * grad L(w0 + e(w0))."""
    lr, rho = 0.5, 0.2
    config = TrainConfig(epochs=1, batch_size=len(toy_data), lr=lr, momentum=0.0, weight_decay=0.0,
                         schedule="constant", sam_rho=rho)
    model = make_model(0)
    expected = make_model(0)
    params = _with_grads(expected, toy_data)
    originals = sam_perturb(params, rho=rho)
    for p in params:
        p.grad = None
    perturbed_grads = [g.detach().clone() for g in torch.autograd.grad(
        torch.nn.functional.cross_entropy(expected(toy_data.tensors()[0]), toy_data.tensors()[1]), params)]
    sam_restore(params, originals)
    Trainer(model, CrossEntropy(), config).fit(toy_data)
    for p, w0, g in zip(model.parameters(), originals, perturbed_grads):
        assert torch.allclose(p, w0 - lr * g, atol=1e-6)


class _BNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 3)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in (self.fc.weight, self.fc.bias, self.out.weight, self.out.bias):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.fc(x))))


def test_batch_norm_statistics_come_from_the_unperturbed_pass_only(toy_data):
    def run(sam_rho):
        model = _BNModel()
        config = TrainConfig(epochs=1, batch_size=len(toy_data), lr=0.5, sam_rho=sam_rho)
        Trainer(model, CrossEntropy(), config).fit(toy_data)
        return model

    with_sam, without = run(0.5), run(None)
    # One full-batch step: the first forward pass is the same in both runs, so are the statistics.
    assert torch.equal(with_sam.bn.running_mean, without.bn.running_mean)
    assert torch.equal(with_sam.bn.running_var, without.bn.running_var)
    assert int(with_sam.bn.num_batches_tracked) == 1
    assert not torch.equal(with_sam.fc.weight, without.fc.weight)


class _Draws(BaseObjective):
    """CE plus a term that depends on a number drawn from the objective generator."""

    name = "draws"

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def setup(self, *, model, train, config, device, generator) -> None:
        self.generator = generator

    def compute(self, model, batch, *, epoch, step):
        u = float(torch.rand((), generator=self.generator))
        self.seen.append((step, u))
        logits = model(batch.inputs)
        return ObjectiveOutput(torch.nn.functional.cross_entropy(logits, batch.labels) * (1 + u), logits)


def test_second_pass_sees_the_same_random_draws_and_step(toy_data, make_model):
    objective = _Draws()
    Trainer(make_model(0), objective, TrainConfig(epochs=1, batch_size=32, sam_rho=0.05)).fit(toy_data)
    steps = len(toy_data) // 32
    assert len(objective.seen) == 2 * steps
    for i in range(steps):
        assert objective.seen[2 * i] == objective.seen[2 * i + 1]
    assert len({u for _, u in objective.seen}) == steps  # the generator advances between steps


def test_checkpoints_from_before_sam_still_resume():
    config = TrainConfig()
    saved = config.to_dict()
    del saved["sam_rho"], saved["sam_adaptive"]
    assert config.differences(saved) == []
    assert TrainConfig(sam_rho=0.05).differences(saved) == ["sam_rho"]


def test_sam_with_a_random_objective_without_logits(toy_data, make_model):
    """mixup draws from the objective generator and returns no logits; SAM works with it."""
    import robustlab.label_noise  # noqa: F401  (registers "mixup")

    config = TrainConfig(epochs=2, batch_size=32, sam_rho=0.05)
    a, b = make_model(0), make_model(0)
    result = Trainer(a, "mixup", config).fit(toy_data)
    Trainer(b, "mixup", config).fit(toy_data)
    assert _same(a, b) and result.history[-1]["train_acc"] is None
