"""robustlab.adversarial.curves: AUAC (known answers), accuracy curves (monotone, reuse of breaks),
minimal-norm distributions (closed-form linear model)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from adv_testkit import linear_min_norms

import robustlab.adversarial.curves as curves_mod
from robustlab.adversarial.curves import (
    accuracy_curve,
    accuracy_from_norms,
    auac,
    minimal_norm_distribution,
)
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- AUAC
def test_auac_hand_computed():
    # trapezoids: 0.05 * (0.9 + 0.7) / 2 + 0.05 * (0.7 + 0.4) / 2 + 0.1 * (0.4 + 0.1) / 2
    #           = 0.04 + 0.0275 + 0.025 = 0.0925, over the range 0.2 -> 0.4625
    assert auac([0.0, 0.05, 0.1, 0.2], [0.9, 0.7, 0.4, 0.1]) == pytest.approx(0.4625, abs=1e-12)
    # a grid not starting at 0: normalised by its own range
    assert auac([0.1, 0.3], [0.8, 0.4]) == pytest.approx(0.6)


def test_auac_constant_curve_is_that_accuracy():
    assert auac([0.0, 0.01, 0.5, 1.0], [0.37] * 4) == pytest.approx(0.37)


@pytest.mark.parametrize(
    ("eps", "acc", "error", "match"),
    [
        ([0.0, 0.2, 0.1], [1, 1, 1], InvalidParameterError, "strictly increasing"),
        ([-0.1, 0.2], [1, 1], InvalidParameterError, ">= 0"),
        ([0.0, 0.1], [1.2, 1.0], InvalidParameterError, r"\[0, 1\]"),
        ([0.0, 0.1], [1.0], ShapeError, "2 entries"),
        ([0.1], [1.0], InvalidParameterError, "at least two"),
        ("0.1", [1.0], InvalidTypeError, "'eps'"),
    ],
)
def test_auac_bad_input(eps, acc, error, match):
    with pytest.raises(error, match=match) as info:
        auac(eps, acc)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- accuracy_from_norms
def test_accuracy_from_norms_closed_ball():
    norms = torch.tensor([0.0, 0.1, 0.1, 0.25, math.inf])
    # robust at eps iff norm > eps (a perturbation of norm exactly eps is allowed)
    assert accuracy_from_norms(norms, [0.0, 0.1, 0.2, 0.3]) == (0.8, 0.4, 0.4, 0.2)
    with pytest.raises(InvalidParameterError, match="'norms'"):
        accuracy_from_norms([-1.0, 0.2], [0.1])


# --------------------------------------------------------------------------- accuracy_curve
GRID = [0.0, 0.05, 0.1, 0.2]


def test_accuracy_curve_monotone_and_reuses_breaks(digits_cnn, attack_batch, monkeypatch):
    x, y = attack_batch[0][:32], attack_batch[1][:32]  # APGD-T on the survivors dominates the cost
    calls: list[int] = []
    real = curves_mod.evaluate

    def spy(model, inputs, labels, **kwargs):
        calls.append(inputs.shape[0])
        return real(model, inputs, labels, **kwargs)

    monkeypatch.setattr(curves_mod, "evaluate", spy)
    curve = accuracy_curve(digits_cnn, x, y, eps_grid=GRID, generator=_gen(0))
    acc = curve.accuracy
    with torch.no_grad():
        clean = float((digits_cnn(x).argmax(1) == y).float().mean())
    assert acc[0] == pytest.approx(clean) == pytest.approx(curve.clean_accuracy)
    assert all(a >= b for a, b in itertools.pairwise(acc)), acc
    assert acc[-1] < acc[0]  # the attacks do break something on this grid
    # rows nested: once broken, broken at every larger eps
    r = curve.robust
    assert r.shape == (len(GRID), x.shape[0])
    assert not bool((r[1:] & ~r[:-1]).any())
    # each radius only attacked the survivors of the previous one (eps=0 attacks nothing)
    survivors = [int(row.sum()) for row in r]
    assert calls == [survivors[i - 1] for i in range(1, len(GRID)) if survivors[i - 1]]
    # broken_at is the first radius that broke each example
    for j in range(x.shape[0]):
        if not bool(r[0, j]):
            assert curve.broken_at[j] == 0.0
        elif bool(r[-1, j]):
            assert math.isinf(float(curve.broken_at[j]))
        else:
            first = next(i for i in range(len(GRID)) if not bool(r[i, j]))
            assert float(curve.broken_at[j]) == GRID[first]
    assert curve.auac == pytest.approx(auac(GRID, acc))
    rows = curve.to_rows()
    assert [row["metric"] for row in rows][-1] == "auac" and len(rows) == len(GRID) + 1


def test_accuracy_curve_bad_grid(digits_cnn, attack_batch):
    x, y = attack_batch
    with pytest.raises(InvalidParameterError, match="'eps_grid'.*strictly increasing"):
        accuracy_curve(digits_cnn, x, y, eps_grid=[0.1, 0.05], generator=_gen())
    with pytest.raises(InvalidTypeError, match="'generator'"):
        accuracy_curve(digits_cnn, x, y, eps_grid=[0.1], generator=None)
    with pytest.raises(InvalidParameterError, match="'suite'"):
        accuracy_curve(digits_cnn, x, y, eps_grid=[0.1], suite="nope", generator=_gen())


# --------------------------------------------------------------------------- minimal norms
@pytest.mark.parametrize("attack", ["fab", "fmn"])
def test_minimal_norms_match_linear_closed_form(linear_problem, attack):
    model, x, labels, w, b = linear_problem
    res = minimal_norm_distribution(model, x, labels, norm="l2", attack=attack, generator=_gen())
    exact = linear_min_norms(w, b, x, labels, "l2")
    found = res.norms
    assert bool(torch.isfinite(found).all())
    # an attack finds an upper bound; on a linear model it should be (nearly) tight
    assert bool((found >= exact * (1 - 1e-4)).all())
    assert bool((found <= exact * 1.10 + 1e-6).all()), (found / exact)
    assert res.quantiles[0.5] == pytest.approx(res.median)
    # quantiles are empirical (inverted CDF): at the p-quantile, at most 1 - p stay robust
    for p, q in res.quantiles.items():
        assert accuracy_from_norms(found, [q])[0] <= 1 - p + 1e-12


def test_minimal_norms_bad_attack(linear_problem):
    model, x, labels, _, _ = linear_problem
    with pytest.raises(InvalidParameterError, match="'attack'.*'fab', 'fmn'"):
        minimal_norm_distribution(model, x, labels, attack="cw", generator=_gen())
