"""The check battery every attack passes (STYLE.md rule 5).

Each attack's test file lists :class:`AttackCase` s and runs every check on each::

    CASES = [AttackCase("pgd-linf", pgd, dict(eps=0.1, norm="linf", num_steps=10), min_success=0.5)]

    @pytest.mark.parametrize("check", attack_battery.CHECKS, ids=lambda c: c.__name__)
    @pytest.mark.parametrize("case", CASES, ids=str)
    def test_battery(case, check, digits_mlp, attack_batch):
        check(case, digits_mlp, *attack_batch)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from robustlab._constants import ATTACK_BALL_ATOL
from robustlab.adversarial._core import AttackResult, perturbation_norms
from robustlab.errors import InvalidParameterError, RobustlabError, ShapeError


@dataclass
class AttackCase:
    """One attack configuration under test.

    ``eps`` is read from ``kwargs["eps"]`` (``None`` for minimum-norm attacks); ``norm`` from
    ``kwargs["norm"]`` unless the attack has a fixed one (``norm=`` here). ``randomized`` attacks
    get a generator and must be deterministic per generator; ``targeted`` cases also run the
    targeted checks. ``min_success`` is the success rate the attack must reach on the batch.
    """

    name: str
    fn: Callable[..., AttackResult]
    kwargs: dict[str, Any] = field(default_factory=dict)
    norm: str | None = None
    randomized: bool = True
    targeted: bool = False
    min_success: float = 0.0
    ball_atol: float = ATTACK_BALL_ATOL

    def __str__(self) -> str:
        return self.name

    @property
    def eps(self) -> float | None:
        return self.kwargs.get("eps")

    @property
    def threat_norm(self) -> str:
        return self.norm or self.kwargs.get("norm", "linf")

    def run(self, model: Any, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0,
            targets: torch.Tensor | None = None, **override: Any) -> AttackResult:
        kwargs = {**self.kwargs, **override}
        if targets is not None:
            kwargs["targets"] = targets
        g = torch.Generator().manual_seed(seed)
        return self.fn(model, x, y, generator=g, **kwargs)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x).argmax(dim=1)
    model.train(was)
    return out


def check_threat_model(case: AttackCase, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Adversarial inputs stay in the box and (for eps attacks) in the ball; ``norms`` is right."""
    res = case.run(model, x, y)
    assert res.adv_inputs.shape == x.shape
    assert float(res.adv_inputs.min()) >= 0.0 and float(res.adv_inputs.max()) <= 1.0
    norms = perturbation_norms(res.adv_inputs - x, case.threat_norm)
    torch.testing.assert_close(res.norms, norms, rtol=1e-5, atol=1e-6)
    assert res.norm == case.threat_norm
    if case.eps is not None:
        assert float(norms.max()) <= case.eps * (1 + 1e-5) + case.ball_atol, (float(norms.max()), case.eps)
    assert res.queries.shape == (x.shape[0],) and int(res.queries.min()) >= 1
    assert res.num_iterations >= 0


def check_success_consistent(case: AttackCase, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """``success`` equals what the model predicts on ``adv_inputs``; the attack reaches ``min_success``."""
    res = case.run(model, x, y)
    pred = _predict(model, res.adv_inputs)
    assert torch.equal(res.success, pred != y)
    assert res.success_rate >= case.min_success, (res.success_rate, case.min_success)
    # clean mistakes are never "repaired" by an attack that keeps them unchanged
    assert res.success.dtype == torch.bool


def check_deterministic(case: AttackCase, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """The same generator seed gives bit-identical results."""
    a, b = case.run(model, x, y, seed=7), case.run(model, x, y, seed=7)
    assert torch.equal(a.adv_inputs, b.adv_inputs)
    assert torch.equal(a.success, b.success) and torch.equal(a.queries, b.queries)


def check_model_state_unchanged(case: AttackCase, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Train/eval flags, requires_grad, parameter values and .grad are exactly as before."""
    m = copy.deepcopy(model)
    m.train()
    params = [p.detach().clone() for p in m.parameters()]
    case.run(m, x, y)
    assert all(mod.training for mod in m.modules())
    assert all(p.requires_grad for p in m.parameters())
    assert all(p.grad is None for p in m.parameters())
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), params))
    m.eval()
    case.run(m, x, y)
    assert not any(mod.training for mod in m.modules())


def check_inputs_untouched_and_noncontiguous(case: AttackCase, model: nn.Module, x: torch.Tensor,
                                             y: torch.Tensor) -> None:
    """Inputs are never written; a non-contiguous view gives the same result as a contiguous copy."""
    x_nc = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not x_nc.is_contiguous()
    before = x_nc.clone()
    res_nc = case.run(model, x_nc, y)
    assert torch.equal(x_nc, before)
    res = case.run(model, x.contiguous(), y)
    torch.testing.assert_close(res_nc.adv_inputs, res.adv_inputs, rtol=1e-5, atol=1e-6)
    assert torch.equal(res_nc.success, res.success)


def check_dtype_device(case: AttackCase, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """float64 inputs with a float64 model give float64 results on the same device."""
    m = copy.deepcopy(model).double()
    res = case.run(m, x.double(), y)
    assert res.adv_inputs.dtype == torch.float64 and res.adv_inputs.device == x.device
    assert res.norms.dtype == torch.float64 and res.success.device == x.device


def check_bad_input(case: AttackCase, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """One-line errors naming the argument: negative eps, inputs outside [0, 1], label mismatch."""
    if case.eps is not None:
        with pytest.raises(InvalidParameterError, match="'eps'"):
            case.run(model, x, y, eps=-0.1)
    with pytest.raises(InvalidParameterError, match="'inputs'"):
        case.run(model, x * 2 - 0.5, y)
    with pytest.raises(ShapeError, match="'labels'"):
        case.run(model, x, y[:-1])
    if "norm" in case.kwargs:
        with pytest.raises(RobustlabError, match="'norm'"):
            case.run(model, x, y, norm="l7")


def check_targeted(case: AttackCase, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Targeted: success means "predicted as the target"; target-class loss goes down; target == label refused."""
    if not case.targeted:
        pytest.skip("untargeted attack")
    targets = (y + 1) % 10
    res = case.run(model, x, y, targets=targets)
    pred = _predict(model, res.adv_inputs)
    assert torch.equal(res.success, pred == targets)
    assert res.targets is not None and torch.equal(res.targets, targets)
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        before = nn.functional.cross_entropy(m(x), targets)
        after = nn.functional.cross_entropy(m(res.adv_inputs), targets)
    assert float(after) < float(before)
    with pytest.raises(InvalidParameterError, match="'targets'"):
        case.run(model, x, y, targets=y)


CHECKS: list[Callable[..., None]] = [
    check_threat_model,
    check_success_consistent,
    check_deterministic,
    check_model_state_unchanged,
    check_inputs_untouched_and_noncontiguous,
    check_dtype_device,
    check_bad_input,
    check_targeted,
]
