"""APGD-CE / APGD-DLR / APGD-T: battery, schedule, known answers vs torchattacks and linear models."""

from __future__ import annotations

import math

import attack_battery
import pytest
import torch
from adv_testkit import linear_min_norms
from attack_battery import AttackCase

from robustlab.adversarial import ATTACKS
from robustlab.adversarial.apgd import (
    APGDCE,
    APGDDLR,
    APGDT,
    apgd,
    apgd_targeted,
    checkpoints,
    largereps_schedule,
)
from robustlab.adversarial.gradient import pgd
from robustlab.errors import RobustlabError

CASES = [
    AttackCase("apgd-ce-linf", apgd, {"eps": 0.1, "norm": "linf", "num_steps": 10}, targeted=True, min_success=0.6),
    AttackCase("apgd-dlr-linf", apgd, {"eps": 0.1, "norm": "linf", "loss": "dlr", "num_steps": 10}, targeted=True,
               min_success=0.6),
    AttackCase("apgd-ce-l2", apgd, {"eps": 1.0, "norm": "l2", "num_steps": 10, "restarts": 2}, targeted=True,
               min_success=0.5),
    AttackCase("apgd-ce-l1", apgd, {"eps": 4.0, "norm": "l1", "num_steps": 10}, targeted=True, min_success=0.5),
    AttackCase("apgd-ce-l1-largereps", apgd, {"eps": 4.0, "norm": "l1", "num_steps": 10, "use_largereps": True},
               min_success=0.5),
    AttackCase("apgd-t-linf", apgd_targeted, {"eps": 0.1, "norm": "linf", "num_steps": 10, "num_target_classes": 3},
               min_success=0.6),
    AttackCase("apgd-t-l1", apgd_targeted, {"eps": 4.0, "norm": "l1", "num_steps": 10, "num_target_classes": 2,
                                                "loss": "ce"}, min_success=0.5),
]


@pytest.mark.parametrize("check", attack_battery.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_battery(case, check, digits_mlp, attack_batch):
    check(case, digits_mlp, *attack_batch)


def test_checkpoints_follow_the_paper_recurrence():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); w_j = ceil(p_j N)
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    w = [round(q * 100) for q in p[1:]]
    assert [c + 1 for c in checkpoints(100)] == w == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == (0,) and checkpoints(100, "l1") == tuple(range(3, 100, 4))


def l1_min_in_box(w: torch.Tensor, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Exact minimal L1 perturbation of a linear model inside the box [0, 1].

    Crossing the hyperplane to class j is a fractional knapsack: lower the margin gap by moving
    the coordinates with the largest |w_y - w_j| first, each up to the box, against sign(dw).
    """
    f = x.flatten(1) @ w.T
    out = []
    for i in range(x.shape[0]):
        xi, best = x[i].flatten(), float("inf")
        for j in range(w.shape[0]):
            if j == int(labels[i]):
                continue
            dw = w[labels[i]] - w[j]
            need, cost = float(f[i, labels[i]] - f[i, j]), 0.0
            room = torch.where(dw > 0, xi, 1 - xi)
            for k in dw.abs().argsort(descending=True).tolist():
                gain = float(dw[k].abs() * room[k])
                if gain >= need:
                    cost, need = cost + need / float(dw[k].abs()), 0.0
                    break
                cost, need = cost + float(room[k]), need - gain
            if need <= 0:
                best = min(best, cost)
        out.append(best)
    return torch.tensor(out, dtype=x.dtype)


@pytest.mark.parametrize("attack", ["apgd", "pgd"])
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_linear_model_known_boundary(attack, norm, linear_problem):
    model, x, labels, w, b = linear_problem
    # the L1 optimum concentrates on few coordinates and meets the box: use the box-aware answer
    dist = l1_min_in_box(w, x, labels) if norm == "l1" else linear_min_norms(w, b, x, labels, norm)
    # APGD-L1 (like fra31's, checked: 9/12 at 1.03 for both) needs some slack to find the
    # 2-coordinate optimum from its dense start; the other attacks get 3%
    above = 1.1 if (norm, attack) == ("l1", "apgd") else 1.03
    fn = apgd if attack == "apgd" else pgd
    for scale, expect in ((0.97, False), (above, True)):
        for i in range(x.shape[0]):  # per-example radii
            res = fn(model, x[i:i + 1], labels[i:i + 1], eps=float(dist[i] * scale), norm=norm,
                     num_steps=30, generator=torch.Generator().manual_seed(0))
            assert bool(res.success[0]) is expect, (norm, i, scale)


def test_largereps_schedule_and_radius(digits_mlp, attack_batch):
    assert largereps_schedule(1.0, 100) == ((3.0, 30), (2.0, 30), (1.0, 40))
    assert sum(n for _, n in largereps_schedule(0.5, 7)) == 7
    x, y = attack_batch
    res = apgd(digits_mlp, x, y, eps=1.5, norm="l1", num_steps=9, use_largereps=True,
               generator=torch.Generator().manual_seed(0))
    # the 3 eps / 2 eps stages never leak into the result: everything is in the eps ball
    assert float(res.norms.max()) <= 1.5 + 1e-5 and res.success_rate > 0.1
    g = torch.Generator().manual_seed(0)
    with pytest.raises(RobustlabError, match="'use_largereps'"):
        apgd(digits_mlp, x, y, eps=0.1, norm="linf", use_largereps=True, generator=g)
    with pytest.raises(RobustlabError, match="'num_steps'"):
        apgd_targeted(digits_mlp, x, y, eps=1.0, norm="l1", num_steps=2, use_largereps=True, generator=g)


def test_matches_torchattacks_apgd(digits_cnn, attack_batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = attack_batch
    for norm, eps, loss in (("linf", 0.08, "ce"), ("l2", 0.6, "dlr")):
        ta = torchattacks.APGD(digits_cnn, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=30,
                               n_restarts=1, loss=loss, seed=0)
        ta_adv = ta(x, y)
        with torch.no_grad():
            ta_robust = int((digits_cnn(ta_adv).argmax(1) == y).sum())
        res = apgd(digits_cnn, x, y, eps=eps, norm=norm, loss=loss, num_steps=30,
                   generator=torch.Generator().manual_seed(0))
        ours = int((~res.success).sum())
        assert 5 <= ta_robust <= x.shape[0] - 5
        assert abs(ours - ta_robust) <= 2, (norm, loss, ours, ta_robust)


def test_apgd_t_matches_torchattacks_and_beats_pgd(digits_cnn, attack_batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = attack_batch
    ta_adv = torchattacks.APGDT(digits_cnn, eps=0.08, steps=20, n_restarts=1, n_classes=3, seed=0)(x, y)
    with torch.no_grad():
        ta_robust = int((digits_cnn(ta_adv).argmax(1) == y).sum())
    res = apgd_targeted(digits_cnn, x, y, eps=0.08, num_steps=20, num_target_classes=2,
                        generator=torch.Generator().manual_seed(0))
    assert abs(int((~res.success).sum()) - ta_robust) <= 2
    pgd_robust = int((~pgd(digits_cnn, x, y, eps=0.08, num_steps=10,
                           generator=torch.Generator().manual_seed(0)).success).sum())
    ce_robust = int((~apgd(digits_cnn, x, y, eps=0.08, num_steps=20,
                           generator=torch.Generator().manual_seed(0)).success).sum())
    assert int((~res.success).sum()) <= pgd_robust + 1 and ce_robust <= pgd_robust + 1


def test_more_steps_and_restarts_help(digits_cnn, attack_batch):
    x, y = attack_batch
    g = lambda: torch.Generator().manual_seed(3)
    one = apgd(digits_cnn, x, y, eps=0.05, num_steps=10, generator=g())
    two = apgd(digits_cnn, x, y, eps=0.05, num_steps=10, restarts=2, generator=g())
    assert bool((two.success | ~one.success).all())  # the first restart is the same run
    rates = [apgd(digits_cnn, x, y, eps=e, num_steps=10, generator=g()).success_rate for e in (0.0, 0.03, 0.06, 0.2)]
    assert rates == sorted(rates) and rates[0] < 0.1 and rates[-1] > 0.9


def test_broken_examples_leave_the_batch(digits_cnn, attack_batch):
    x, y = attack_batch
    res = apgd(digits_cnn, x, y, eps=0.15, num_steps=20, generator=torch.Generator().manual_seed(0))
    # clean forward + initial point + 20 steps + finalize for the robust ones; far fewer when broken
    assert int(res.queries[~res.success].max()) == 1 + 1 + 20 + 1
    assert float(res.queries[res.success].float().mean()) < 12


def test_apgd_t_targets_are_the_runner_up_classes(linear_problem):
    model, x, labels, _, _ = linear_problem
    with torch.no_grad():
        second = model(x).argsort(dim=1, descending=True)[:, 1]
    big = apgd_targeted(model, x, labels, eps=0.5, num_target_classes=1, num_steps=10,
                        generator=torch.Generator().manual_seed(0))
    assert bool(big.success.all())
    with torch.no_grad():  # one target class: the adversarial class is the runner-up (a linear model)
        assert torch.equal(model(big.adv_inputs).argmax(1), second)


def test_bad_settings(digits_mlp, attack_batch):
    x, y = attack_batch
    g = torch.Generator().manual_seed(0)
    for kwargs, name in [({"num_steps": 0}, "num_steps"), ({"restarts": 0}, "restarts"),
                         ({"rho": 1.5}, "rho"), ({"loss": "margin"}, "loss"), ({"eot_iter": 0}, "eot_iter")]:
        with pytest.raises(RobustlabError, match=f"'{name}'") as info:
            apgd(digits_mlp, x, y, eps=0.1, generator=g, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(RobustlabError, match="'num_target_classes'"):
        apgd_targeted(digits_mlp, x, y, eps=0.1, num_target_classes=0, generator=g)
    with pytest.raises(RobustlabError, match="'generator'"):
        apgd(digits_mlp, x, y, eps=0.1)
    with pytest.warns(UserWarning, match="num_target_classes"):
        apgd_targeted(digits_mlp, x[:4], y[:4], eps=0.1, num_target_classes=12, num_steps=1, generator=g)


def test_registry_and_thin_classes(digits_mlp, attack_batch):
    x, y = attack_batch
    assert ATTACKS.get("apgd-ce") is APGDCE and ATTACKS.get("apgd-dlr") is APGDDLR
    assert ATTACKS.get("apgd-t") is APGDT
    a = APGDDLR(eps=0.1, num_steps=5)(digits_mlp, x, y, generator=torch.Generator().manual_seed(1))
    b = apgd(digits_mlp, x, y, eps=0.1, loss="dlr", num_steps=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.adv_inputs, b.adv_inputs)
    assert not math.isnan(a.success_rate)
