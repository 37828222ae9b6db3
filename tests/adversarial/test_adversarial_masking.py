"""robustlab.adversarial.masking: a clean model passes; masked/randomised models warn on the right
check (Athalye et al. 2018; Carlini et al. 2019)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adv_testkit import NoisyInputs, SoftmaxOutputs
from robustlab.adversarial.masking import (
    MASKING_CHECKS,
    MaskingReport,
    check_gradient_masking,
)
from robustlab.errors import InvalidParameterError, InvalidTypeError

EPS = 0.1
FAST = {"num_steps": 20, "square_queries": 300}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _Quantised(nn.Module):
    """Input quantisation (``torch.round``) in front of the model: zero gradients everywhere."""

    def __init__(self, inner: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * self.levels) / self.levels)


class _SaturatedLogSoftmax(nn.Module):
    """``log(softmax(T z))`` computed naively: saturates in float32 (zero / NaN gradients)."""

    def __init__(self, inner: nn.Module, temperature: float = 1000.0) -> None:
        super().__init__()
        self.inner, self.temperature = inner, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.softmax(self.temperature * self.inner(x), dim=1))


def test_clean_model_passes(digits_cnn, attack_batch):
    x, y = attack_batch
    report = check_gradient_masking(digits_cnn, x, y, eps=EPS, norm="linf", generator=_gen(0),
                                    num_steps=50, square_queries=1000)
    assert isinstance(report, MaskingReport)
    assert [c.name for c in report.checks] == list(MASKING_CHECKS)
    assert report.passed, [(c.name, c.detail) for c in report.checks if c.status == "warn"]
    assert report["unbounded"].value <= 0.01
    assert all(c.status in ("pass", "warn") for c in report.checks)


def test_quantised_input_warns_zero_gradients(digits_cnn, attack_batch):
    x, y = attack_batch
    report = check_gradient_masking(_Quantised(digits_cnn), x, y, eps=EPS, generator=_gen(),
                                    checks=["zero_gradients", "black_box"], **FAST)
    assert report["zero_gradients"].status == "warn" and report["zero_gradients"].value == 1.0
    # APGD is stuck at its random start while Square still finds adversarial examples
    assert report["black_box"].status == "warn"
    assert not report.passed and set(report.warnings) == {"zero_gradients", "black_box"}


def test_saturated_log_softmax_warns_zero_gradients(digits_cnn, attack_batch):
    x, y = attack_batch
    report = check_gradient_masking(_SaturatedLogSoftmax(digits_cnn), x, y, eps=EPS, generator=_gen(),
                                    checks=["zero_gradients", "probability_outputs"], **FAST)
    assert report["zero_gradients"].status == "warn"
    assert report["probability_outputs"].status == "pass"  # log-probabilities are not probabilities


def test_probability_outputs_warn(digits_cnn, attack_batch):
    x, y = attack_batch
    report = check_gradient_masking(SoftmaxOutputs(digits_cnn), x, y, eps=EPS, generator=_gen(),
                                    checks=["probability_outputs", "randomness"], **FAST)
    assert report["probability_outputs"].status == "warn"
    assert report["randomness"].status == "pass"


def test_randomised_model_warns(digits_cnn, attack_batch):
    x, y = attack_batch
    report = check_gradient_masking(NoisyInputs(digits_cnn), x, y, eps=EPS, generator=_gen(),
                                    checks=["randomness", "zero_gradients", "restarts"], **FAST)
    assert report["randomness"].status == "warn"
    assert report["zero_gradients"].status == "pass"
    assert report["restarts"].status == "warn"  # two APGD runs see different noise


def test_clean_model_forward_checks_pass(digits_cnn, attack_batch):
    x, y = attack_batch
    report = check_gradient_masking(digits_cnn, x, y, eps=EPS, generator=_gen(),
                                    checks=["probability_outputs", "randomness", "zero_gradients"])
    assert report.passed and report["zero_gradients"].value == 0.0
    rows = report.to_rows()
    assert [r["metric"] for r in rows] == ["masking_probability_outputs", "masking_randomness",
                                           "masking_zero_gradients"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": 0.0}, InvalidParameterError, "'eps'"),
        ({"norm": "l0"}, InvalidParameterError, "'norm'"),
        ({"generator": None}, InvalidTypeError, "'generator'"),
        ({"checks": ["nope"]}, InvalidParameterError, "'checks'.*'zero_gradients'"),
        ({"checks": "randomness"}, InvalidTypeError, "'checks'"),
        ({"num_steps": 0}, InvalidParameterError, "'num_steps'"),
        ({"eps_grid": [0.05, 0.2]}, InvalidParameterError, "'eps_grid'"),
    ],
)
def test_bad_arguments(digits_cnn, attack_batch, kwargs, error, match):
    x, y = attack_batch
    args = {"eps": EPS, "generator": _gen()} | kwargs
    with pytest.raises(error, match=match) as info:
        check_gradient_masking(digits_cnn, x, y, **args)
    assert "\n" not in str(info.value)


def test_monotonicity_check_flags_a_rising_curve():
    from robustlab.adversarial.masking import _monotonicity_check

    grid = [0.025, 0.05, 0.1, 0.2, 1.0]
    ok = _monotonicity_check(grid, [0.9, 0.8, 0.5, 0.1, 0.0], n=100)
    assert ok.status == "pass" and ok.value == 0.0
    # one example of noise (1/64 > 2%? no: 1.6%) is tolerated, a 10-point rise is not
    assert _monotonicity_check(grid, [0.9, 0.8, 0.5 + 1 / 64, 0.5 + 1 / 64, 0.0], n=64).status == "pass"
    bad = _monotonicity_check(grid, [0.9, 0.8, 0.5, 0.6, 0.0], n=100)
    assert bad.status == "warn" and bad.value == pytest.approx(0.1)


def test_unbounded_check_flags_a_model_no_attack_can_move(attack_batch):
    """A model predicting class 3 whatever the input (zero gradients, no attack moves it): the
    unbounded check cannot tell this degenerate model from masking, and must warn."""
    x, y = attack_batch

    class Lookup(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            out = nn.functional.one_hot(torch.full((inp.shape[0],), 3), 10).float()
            return out + 0 * self.w + 0 * inp.flatten(1).sum(1, keepdim=True)

    report = check_gradient_masking(Lookup(), x, y, eps=EPS, generator=_gen(), checks=["unbounded"], **FAST)
    # the model predicts class 3 everywhere: robust accuracy = share of 3s at every eps
    assert report["unbounded"].value == pytest.approx(float((y == 3).float().mean()))
    assert report["unbounded"].status == "warn"
