"""Square Attack: the shared battery, exact query accounting, known properties, torchattacks."""

from __future__ import annotations

import attack_battery
import pytest
import torch
from adv_testkit import linear_min_norms
from attack_battery import AttackCase

from robustlab.adversarial import ATTACKS
from robustlab.adversarial._core import margin
from robustlab.adversarial.square import Square, _eta, _SquareRun, p_selection, square
from robustlab.errors import InvalidParameterError, RobustlabError, ShapeError

CASES = [
    AttackCase("square-linf", square, {"eps": 0.15, "norm": "linf", "max_queries": 150}, min_success=0.6),
    AttackCase("square-l2", square, {"eps": 1.0, "norm": "l2", "max_queries": 150}, min_success=0.6),
    AttackCase("square-linf-targeted", square, {"eps": 0.2, "norm": "linf", "max_queries": 150, "loss": "ce"},
               targeted=True, min_success=0.6),
    AttackCase("square-l2-targeted-margin", square, {"eps": 1.5, "norm": "l2", "max_queries": 150},
               targeted=True, min_success=0.6),
]


@pytest.mark.parametrize("check", attack_battery.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_battery(case, check, digits_mlp, attack_batch):
    check(case, digits_mlp, *attack_batch)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.75)])
def test_queries_counted_exactly_and_bounded(norm, eps, digits_mlp, attack_batch):
    """Every model row is one query of one example; unbroken examples spend exactly the budget."""
    x, y = attack_batch
    rows = []

    def scores(v: torch.Tensor) -> torch.Tensor:  # a plain callable, not an nn.Module
        rows.append(v.shape[0])
        return digits_mlp(v)

    res = square(scores, x, y, eps=eps, norm=norm, max_queries=60, generator=_gen())
    assert int(res.queries.sum()) == sum(rows)
    assert int(res.queries.max()) <= 60 and int(res.queries.min()) >= 1
    clean_wrong = digits_mlp(x).argmax(1) != y
    assert bool((res.queries[clean_wrong] == 1).all())
    assert bool((res.adv_inputs[clean_wrong] == x[clean_wrong]).all())
    assert bool((res.queries[~res.success] == 60).all()) and bool((~res.success).any())
    # broken examples stopped being queried: fewer than the budget for most of them
    assert bool((res.queries[res.success & ~clean_wrong] < 60).any())


@pytest.mark.parametrize("norm, eps", [("linf", 0.08), ("l2", 0.6)])
def test_margin_never_rises_above_the_start(norm, eps, digits_mlp, attack_batch):
    """The search only accepts improving candidates: final margin <= margin at the start point."""
    x, y = attack_batch
    start = square(digits_mlp, x, y, eps=eps, norm=norm, max_queries=2, generator=_gen(3))
    final = square(digits_mlp, x, y, eps=eps, norm=norm, max_queries=200, generator=_gen(3))
    with torch.no_grad():
        m0, m1 = margin(digits_mlp(start.adv_inputs), y), margin(digits_mlp(final.adv_inputs), y)
    assert bool((m1 <= m0 + 1e-6).all())
    assert float((m0 - m1).mean()) > 0.5  # and the search did lower it


def test_linear_model_known_answer(linear_problem):
    """Linf on a linear model: success exactly where the minimal perturbation fits in the ball.

    Soundness always holds (a point in the ball cannot cross a boundary farther than eps); the
    examples whose minimal Linf norm is below 0.97 eps are all found within 500 queries (the
    optimum is a vertex of the cube, where Square's updates live).
    """
    model, x, labels, w, b = linear_problem
    exact = linear_min_norms(w, b, x, labels, "linf")
    eps = float(exact.median())
    res = square(model, x, labels, eps=eps, norm="linf", max_queries=500, generator=_gen(0))
    assert not bool((res.success & (exact > eps * (1 + 1e-9))).any())
    assert bool(res.success[exact < 0.97 * eps].all()) and bool((exact < 0.97 * eps).any())


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
@pytest.mark.parametrize("shape", [(3, 8, 12), (1, 3, 20), (1, 4, 4)], ids=str)
def test_non_square_and_tiny_images(shape, norm, eps):
    """Windows and the L2 start tiles fit any H x W (fra31 assumes H == W for the L2 start)."""
    torch.manual_seed(0)  # test-model weights only
    d = shape[0] * shape[1] * shape[2]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 5))
    x = torch.rand((16, *shape), generator=_gen(1))
    with torch.no_grad():
        y = net(x).argmax(1)
    res = square(net, x, y, eps=eps, norm=norm, max_queries=100, generator=_gen(2))
    assert float(res.norms.max()) <= eps * (1 + 1e-5) + 1e-6
    assert res.success_rate > 0.3 and int(res.queries.max()) <= 100


def test_score_callable_equals_module(digits_mlp, attack_batch):
    x, y = attack_batch
    a = square(digits_mlp, x, y, eps=0.1, max_queries=80, generator=_gen(1))
    b = square(lambda v: digits_mlp(v), x, y, eps=0.1, max_queries=80, generator=_gen(1))
    assert torch.equal(a.adv_inputs, b.adv_inputs) and torch.equal(a.queries, b.queries)


def test_restarts_only_rerun_unbroken_and_respect_budget(digits_mlp, attack_batch):
    x, y = attack_batch
    one = square(digits_mlp, x, y, eps=0.08, max_queries=40, generator=_gen(2))
    three = square(digits_mlp, x, y, eps=0.08, max_queries=40, restarts=3, generator=_gen(2))
    assert int(three.queries.max()) <= 1 + 3 * 39
    assert three.success_rate >= one.success_rate
    assert bool((three.queries[~three.success] == 1 + 3 * 39).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linf_fast_candidate_equals_window_construction(dtype):
    """The Linf loop's window tables and precomputed corners give bit-for-bit the candidate of the
    direct construction (window masks from positions, ``clip(x + eps * sign)`` inside)."""
    g = _gen(4)
    x = torch.rand(6, 2, 5, 7, generator=g, dtype=dtype)
    run = _SquareRun(None, x, torch.zeros(6, dtype=torch.long), None, torch.arange(6), eps=0.3,
                     norm="linf", loss="margin", p_init=0.8, max_queries=10, generator=g, windows="paper")
    x_best = (x + 0.3 * torch.rand(x.shape, generator=g, dtype=dtype).sign()).clamp(0, 1)
    lo, hi = (x - 0.3).clamp(0.0, 1.0), (x + 0.3).clamp(0.0, 1.0)
    act = torch.arange(6)
    for s in range(1, 6):
        r, c, signs = torch.randint(0, 5 - s + 1, (6,), generator=g), torch.randint(0, 7 - s + 1, (6,), generator=g), \
            torch.where(torch.rand(6, 2, generator=g) < 0.5, -1.0, 1.0).to(dtype)
        expected = run._candidate(x, x_best, act, (s, r, c, signs))
        rows, cols = run._in_window(s)
        mask = rows[r][:, None, :, None] & cols[c][:, None, None, :]
        fast = torch.where(mask, torch.where((signs > 0)[:, :, None, None], hi, lo), x_best)
        assert torch.equal(fast, expected)
        assert int(mask.sum()) == 6 * s * s


def test_p_schedule_and_eta_pattern():
    # fra31 p_selection with rescaling: halvings after 10, 50, 200, ... of 10000 queries
    assert p_selection(0.8, 0, 10000) == 0.8
    assert p_selection(0.8, 11, 10000) == 0.4
    assert p_selection(0.8, 50, 10000) == 0.4 and p_selection(0.8, 51, 10000) == 0.2
    assert p_selection(0.8, 9000, 10000) == 0.8 / 512
    assert p_selection(0.8, 100, 1000) == 0.8 / 16  # 100 / 1000 * 10000 = 1000 -> (500, 1000]
    eta = _eta(5, torch.zeros(1, dtype=torch.float64))
    assert eta.shape == (5, 5)
    torch.testing.assert_close(eta.square().sum(), torch.tensor(1.0, dtype=torch.float64))
    # two halves of opposite sign, each peaked at its centre: top 2 rows > 0, bottom 3 rows < 0
    assert bool((eta[:2] > 0).all()) and bool((eta[2:] < 0).all())
    assert float(eta[3, 2].abs()) == float(eta[2:].abs().max())
    # concentric weights: sum_{k >= m} 1/(k+1)^2 for ring m of the 3x5 bottom block (K = 3)
    ring = eta[2:].abs() / eta[3, 2].abs()
    expect_ring1 = (1 / 4 + 1 / 9) / (1 + 1 / 4 + 1 / 9)
    torch.testing.assert_close(ring[0, 2], torch.tensor(expect_ring1, dtype=torch.float64))


def test_thin_class_equals_function(digits_mlp, attack_batch):
    x, y = attack_batch
    a = Square(eps=0.1, max_queries=30)(digits_mlp, x, y, generator=_gen(4))
    b = square(digits_mlp, x, y, eps=0.1, max_queries=30, generator=_gen(4))
    assert torch.equal(a.adv_inputs, b.adv_inputs)


def test_registered():
    assert ATTACKS.get("square") is Square


def test_bad_input(digits_mlp, attack_batch):
    x, y = attack_batch
    g = _gen()
    with pytest.raises(InvalidParameterError, match="'max_queries'"):
        square(digits_mlp, x, y, eps=0.1, max_queries=0, generator=g)
    for p in (0.0, 1.5, -0.2):
        with pytest.raises(InvalidParameterError, match="'p_init'"):
            square(digits_mlp, x, y, eps=0.1, p_init=p, generator=g)
    with pytest.raises(ShapeError, match="'inputs'") as err:
        square(lambda v: v @ torch.ones(64, 10), x.flatten(1), y, eps=0.1, generator=g)
    assert "\n" not in str(err.value)
    with pytest.raises(RobustlabError, match="'loss'"):
        square(digits_mlp, x, y, eps=0.1, loss="dlr", generator=g)
    with pytest.raises(RobustlabError, match="'norm'"):
        square(digits_mlp, x, y, eps=0.1, norm="l1", generator=g)
    with pytest.raises(InvalidParameterError, match="'restarts'"):
        square(digits_mlp, x, y, eps=0.1, restarts=0, generator=g)
    with pytest.raises(RobustlabError, match="'generator'"):
        square(digits_mlp, x, y, eps=0.1)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.75)])
def test_matches_torchattacks_square(norm, eps, digits_split, digits_mlp):
    """Robust accuracy vs torchattacks.Square (a port of fra31's) on 128 digits, 500 queries.

    ``windows="fra31"`` reproduces fra31's window range: robust counts agree within 4 of 128
    (seed-to-seed spread of either attack is 2-4 examples); the mean queries per broken example
    agree within a factor 1.5. The paper's range (default) is the stronger attack on 8x8 images.
    """
    torchattacks = pytest.importorskip("torchattacks")
    _, _, xte, yte = digits_split
    x, y = xte[:128], yte[:128]
    model = digits_mlp
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    ours = square(model, x, y, eps=eps, norm=norm, max_queries=500, windows="fra31", generator=_gen(0))
    paper = square(model, x, y, eps=eps, norm=norm, max_queries=500, generator=_gen(0))
    ref = torchattacks.Square(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, n_queries=500,
                              seed=0)
    ref.init_hyperparam(x)
    with torch.random.fork_rng():  # torchattacks draws from the global RNG
        torch.manual_seed(0)
        ref_queries, ref_adv = ref.attack_single_run(x[ok], y[ok])
    with torch.no_grad():
        ref_broken = model(ref_adv).argmax(1) != y[ok]
    ref_robust = int((~ref_broken).sum())
    ours_robust = int((~ours.success).sum())
    assert abs(ours_robust - ref_robust) <= 4, (ours_robust, ref_robust)
    assert int((~paper.success).sum()) <= ref_robust
    # queries per broken example: ours count the clean pass too, fra31's do not
    q_ours = float((ours.queries[ours.success & ok] - 1).float().mean())
    q_ref = float(ref_queries[ref_broken].float().mean())
    assert 1 / 1.5 <= q_ours / q_ref <= 1.5, (q_ours, q_ref)
