"""FAB, the Fast Adaptive Boundary attack, untargeted and targeted (FAB-T).

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020. FAB looks for the smallest ``norm`` perturbation that changes the decision: at each
step it linearises the classifier, projects the current point *and* the original onto the
closest linearised decision hyperplane (a box-constrained projection, Sec. 3.1), moves to a convex
combination of the two projections biased toward the original (Eq. 11), extrapolates a little
past the hyperplane and, once adversarial, steps back toward the original.

Threat model: ``norm`` in ``{"linf", "l2", "l1"}``, inputs in ``[0, 1]``. With ``eps=None`` FAB is
a minimum-norm attack (the result's ``norms`` are the smallest adversarial norms found); with an
``eps`` it counts a success only within the ``eps`` ball, as AutoAttack does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from robustlab._checks import check_bool, check_int, check_number, fail
from robustlab._constants import (
    FAB_ALPHA_MAX,
    FAB_BETA,
    FAB_DIST_EPS,
    FAB_ETA,
    FAB_NORM_FLOOR,
    FAB_NUM_TARGET_CLASSES,
    FAB_RESTART_RADIUS,
    FAB_RESTART_SCALE,
    FAB_ZERO_WEIGHT,
)
from robustlab.adversarial._core import (
    ATTACKS,
    Attack,
    AttackResult,
    ModelView,
    check_attack_args,
    check_eps,
    check_norm,
    check_target_ranks,
    finalize,
    flat,
    model_view,
    perturbation_norms,
    random_in_ball,
)

__all__ = ["FAB", "FABTargeted", "box_hyperplane_step", "fab", "logit_difference_grads"]

#: Dual exponent per norm: distances to a hyperplane ``w.z = b`` are ``|.| / ||w||_dual``.
_DUAL = {"linf": 1.0, "l2": 2.0, "l1": float("inf")}


# --------------------------------------------------------------------------- gradients
def logit_difference_grads(
    view: ModelView,
    x: torch.Tensor,
    labels: torch.Tensor,
    classes: torch.Tensor,
    index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, the differences ``f_c(x) - f_y(x)`` and their input gradients, for ``M`` classes each.

    ``classes`` is ``(B, M)`` (per example the classes to compare with the label). One forward
    pass (one query per example) and one vectorised backward (``is_grads_batched``: the ``M``
    vector-Jacobian products run as one batched backward), falling back to ``M`` backward passes
    for models whose operations have no batching rule.

    Returns ``(logits (B, K), df (B, M), dg (B, M, D))`` with ``D`` the flattened input size.
    """
    b, m = classes.shape
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = view(xg, index)
        df = logits.gather(1, classes) - logits.gather(1, labels[:, None])
        if m == 1:
            g = torch.autograd.grad(df.sum(), xg)[0][None]
        else:
            basis = torch.eye(m, dtype=df.dtype, device=df.device)[:, None, :].expand(m, b, m)
            try:
                g = torch.autograd.grad(df, xg, grad_outputs=basis, is_grads_batched=True)[0]
            except RuntimeError:  # an operation without a vmap rule: one backward per class
                g = torch.stack([torch.autograd.grad(df[:, j].sum(), xg, retain_graph=j < m - 1)[0]
                                 for j in range(m)])
    dg = g.reshape(m, b, -1).transpose(0, 1)
    return logits.detach(), df.detach(), dg


# --------------------------------------------------------------------------- projection
def box_hyperplane_step(t: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: str) -> torch.Tensor:
    """Smallest ``norm`` step ``delta`` with ``<w, delta> = r`` that keeps ``t + delta`` in ``[0, 1]``.

    Rows are independent: ``t`` and ``w`` are ``(B, D)``, ``r`` is ``(B,)``. This is FAB's
    projection onto a hyperplane intersected with the box (Croce & Hein 2020, Sec. 3.1). Where the
    box cannot reach the hyperplane, the step is the box corner that gets closest (every useful
    coordinate at its bound), as in fra31/auto-attack fab_projections.py.

    Notes
    -----
    With ``v = sign(r) w`` each coordinate moves by ``sign(v_i) * s_i``, ``0 <= s_i <= m_i`` where
    ``m_i`` is its room to the box face in that direction, and must give ``sum |v_i| s_i = |r|``:

    * L1: fill the coordinates in decreasing ``|v_i|`` (most progress per unit of norm) up to
      their room; the first one that reaches ``|r|`` is filled partly.
    * Linf: ``s_i = min(lam, m_i)``; L2: ``s_i = min(lam |v_i|, m_i)`` (the KKT point). The progress
      is piecewise linear, concave and increasing in ``lam``, with breakpoints ``m_i`` resp.
      ``m_i / |v_i|``. From ``lam_0 = |r| / sum(rate)`` (no coordinate saturated), each round
      saturates the coordinates whose breakpoint is below ``lam`` and solves the linear piece:
      ``lam = (|r| - sum_sat cap) / sum_free rate``. This never overshoots the solution and stops,
      exact, when no new coordinate saturates (a few rounds in practice).

    The reference code sorts the breakpoints and bisects over them; the sort dominated the cost
    of FAB-T on small models (CPU sorts of short rows are slow), the rounds above need none.
    """
    v = w * r.sign()[:, None]
    v = torch.where(v.abs() > FAB_ZERO_WEIGHT, v, 0.0)
    need = r.abs()
    room = torch.where(v > 0, 1 - t, t).clamp_min_(0)
    a, s = v.abs(), v.sign()
    d = t.shape[1]
    tiny = torch.finfo(t.dtype).tiny
    if norm == "l1":
        order = a.argsort(dim=1, descending=True)
        a_s, cap_s = a.gather(1, order), (a * room).gather(1, order)
        gained = cap_s.cumsum(dim=1)
        k = (gained < need[:, None]).sum(dim=1)  # first coordinate not filled completely
        kk = k.clamp(max=d - 1)[:, None]
        before = gained.gather(1, kk) - cap_s.gather(1, kk)
        part = ((need[:, None] - before) / a_s.gather(1, kk).clamp_min(tiny)).clamp_min(0)
        pos = torch.arange(d, device=t.device)[None, :]
        steps = torch.where(pos < k[:, None], room.gather(1, order), torch.zeros_like(a_s))
        steps = torch.where((pos == kk) & (k[:, None] < d), part, steps)
        return s * torch.zeros_like(steps).scatter(1, order, steps)
    if norm == "linf":
        key, rate, factor = room, a, None
    else:  # l2
        key = torch.where(a > 0, room / a.clamp_min(tiny), 0.0)
        rate, factor = a * a, a
    cap = a * room
    feasible = cap.sum(dim=1) >= need
    # Active-set iteration on lam: start from "nothing saturated" and saturate every coordinate
    # whose breakpoint lies below lam. lam only grows and never passes the solution, and when no
    # new coordinate saturates the progress is exactly |r|; no sort over the D coordinates needed.
    sat = torch.zeros_like(key, dtype=torch.bool)
    lam = need / rate.sum(dim=1).clamp_min(tiny)
    for _ in range(d):
        grown = sat | (key <= lam[:, None])
        if torch.equal(grown, sat):
            break
        sat = grown
        free = torch.where(sat, 0.0, rate).sum(dim=1)
        done = torch.where(sat, cap, 0.0).sum(dim=1)
        lam = torch.maximum(lam, (need - done) / free.clamp_min(tiny))
    # Linf: the step is lam itself (factor 1)
    move = lam[:, None] if factor is None else lam[:, None] * factor
    steps = torch.where(sat, room, torch.minimum(move, room))
    steps = torch.where(feasible[:, None], steps, room)  # else: the corner
    return s * steps


# --------------------------------------------------------------------------- one run
def _fab_run(
    view: ModelView,
    x0: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor | None,
    start: torch.Tensor,
    index: torch.Tensor,
    *,
    hit_target: bool,
    norm: str,
    eps: float | None,
    num_steps: int,
    alpha_max: float,
    eta: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One FAB run from ``start`` (fab_base.py ``attack_single_run``, L163-251).

    Returns ``(best_adv, best_norm, steps)``; ``best_norm`` is ``inf`` where no adversarial point
    was found. ``targets`` selects FAB-T's single hyperplane ``f_t - f_y``; ``hit_target`` makes
    success "predicted as the target" instead of "misclassified". In eps mode an example stops as
    soon as it has an adversarial point within ``eps`` (its verdict cannot change any more).
    """
    n = x0.shape[0]
    best_adv = x0.clone()
    best_norm = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
    act = torch.arange(n, device=x0.device)
    if targets is None:
        k = int(view.num_classes or 0)
        grid = torch.arange(k, device=x0.device).expand(n, k)
        classes = grid[grid != labels[:, None]].reshape(n, k - 1)
    else:
        classes = targets[:, None]
    # The active examples' state is kept compacted (iterate, original, label, classes, query
    # index, hit target, best norm) and only shrunk when an example leaves (eps mode).
    xa, x0a, ya, ca, ia = start, x0, labels, classes, index
    ta = targets if hit_target and targets is not None else None
    bna = best_norm.clone()
    single = classes.shape[1] == 1  # FAB-T: the target's hyperplane is the only one
    steps = 0
    for steps in range(1, num_steps + 1):
        b = xa.shape[0]
        _, df, dg = logit_difference_grads(view, xa, ya, ca, ia)
        # the closest linearised hyperplane (Sec. 3.1, the distance in the dual norm)
        if single:
            w, c = dg[:, 0], df[:, 0]
        else:
            dist = df.abs() / (dg.norm(p=_DUAL[norm], dim=2) + FAB_DIST_EPS)
            j = dist.argmin(dim=1)
            rows = torch.arange(b, device=x0.device)
            w, c = dg[rows, j], df[rows, j]
        xaf, x0af = flat(xa), flat(x0a)
        # hyperplane f_j - f_y = 0 linearised at xa: c + <w, z - xa> = 0
        r1, r0 = -c, -(c + (w * (x0af - xaf)).sum(dim=1))
        d = box_hyperplane_step(torch.cat((xaf, x0af)), torch.cat((w, w)), torch.cat((r1, r0)), norm)
        d1, d0 = d[:b], d[b:]
        a = perturbation_norms(d, norm).clamp_min_(FAB_NORM_FLOOR)
        a1, a0 = a[:b], a[b:]
        alpha = (a1 / (a1 + a0)).clamp_(0, alpha_max)[:, None]  # Eq. 11
        # (1 - alpha)(x + eta d1) + alpha (x0 + eta d0), clipped to the box
        xn = (d1 * eta).add_(xaf).mul_(1 - alpha).add_((d0 * eta).add_(x0af).mul_(alpha))
        xn = xn.clamp_(0, 1).reshape(xa.shape)
        with torch.no_grad():
            pred = view(xn, ia).argmax(dim=1)
        adv = pred == ta if ta is not None else pred != ya
        dist_adv = perturbation_norms(xn - x0a, norm)
        better = adv & (dist_adv < bna)
        if bool(better.any()):
            best_norm[act[better]] = dist_adv[better]
            best_adv[act[better]] = xn[better]
            bna = torch.where(better, dist_adv, bna)
        # backward step toward the original once adversarial (Sec. 3.2, beta)
        xa = torch.where(adv.reshape((-1,) + (1,) * (xn.ndim - 1)), x0a + beta * (xn - x0a), xn)
        if eps is not None:
            keep = bna > eps
            if not bool(keep.all()):
                act, xa, x0a, ya, ca, ia, bna = (t[keep] for t in (act, xa, x0a, ya, ca, ia, bna))
                ta = None if ta is None else ta[keep]
                if act.numel() == 0:
                    break
    return best_adv, best_norm, steps


# --------------------------------------------------------------------------- attack
def _restart_start(x0: torch.Tensor, best_norm: torch.Tensor, norm: str, eps: float | None,
                   generator: torch.Generator) -> torch.Tensor:
    """Random start in the ``norm`` ball of radius ``0.5 * min(best_norm, eps)`` around ``x0``."""
    default = dict(FAB_RESTART_RADIUS)[norm] if eps is None else eps
    radius = torch.where(torch.isfinite(best_norm), best_norm, torch.full_like(best_norm, default))
    if eps is not None:
        radius = radius.clamp(max=eps)
    delta = random_in_ball(x0, norm, FAB_RESTART_SCALE * radius, generator)
    return (x0 + delta).clamp(0, 1)


def _fab_impl(model: Any, inputs: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None, *,
              norm: str, eps: float | None, num_steps: int, restarts: int, targeted: bool,
              num_target_classes: int, alpha_max: float, eta: float, beta: float,
              generator: torch.Generator | None, target_ranks: Sequence[int] | None = None) -> AttackResult:
    with model_view(model, inputs) as view:
        with torch.no_grad():
            logits = view(inputs)
        k = logits.shape[1]
        if targets is None and targeted and target_ranks is None and not 1 <= num_target_classes <= k - 1:
            fail("num_target_classes", f"an integer in [1, {k - 1}] (the model has {k} classes)",
                 num_target_classes)
        n = inputs.shape[0]
        attacked = logits.argmax(dim=1) == labels  # clean mistakes stay unchanged
        best_norm = torch.full((n,), math.inf, dtype=inputs.dtype, device=inputs.device)
        best_adv = inputs.clone()
        if targets is not None:
            target_sets: list[torch.Tensor | None] = [targets]
        elif targeted:  # FAB-T: the 2nd, 3rd, ... highest clean logits (fab_base.py L111-114, L303)
            ranked = logits.argsort(dim=1, descending=True)
            ranks = (range(1, num_target_classes + 1) if target_ranks is None
                     else check_target_ranks(target_ranks, k))
            target_sets = [ranked[:, i] for i in ranks]
        else:
            target_sets = [None]
        iterations = 0
        for tgt in target_sets:
            for restart in range(restarts):
                live = attacked if eps is None else attacked & (best_norm > eps)
                idx = live.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                x0 = inputs[idx]
                start = x0 if restart == 0 else _restart_start(x0, best_norm[idx], norm, eps, generator)
                adv, found, steps = _fab_run(
                    view, x0, labels[idx], None if tgt is None else tgt[idx], start, idx,
                    hit_target=targets is not None, norm=norm, eps=eps, num_steps=num_steps,
                    alpha_max=alpha_max, eta=eta, beta=beta)
                iterations = max(iterations, steps)
                better = found < best_norm[idx]
                best_norm[idx[better]] = found[better]
                best_adv[idx[better]] = adv[better]
        keep = torch.isfinite(best_norm) if eps is None else best_norm <= eps
        adv_inputs = torch.where(keep.reshape((-1,) + (1,) * (inputs.ndim - 1)), best_adv, inputs)
        return finalize(view, inputs, adv_inputs, labels, norm=norm, eps=eps, targets=targets,
                        num_iterations=iterations)


def fab(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str = "linf",
    eps: float | None = None,
    num_steps: int = 100,
    restarts: int = 1,
    targeted: bool = False,
    num_target_classes: int = FAB_NUM_TARGET_CLASSES,
    alpha_max: float = FAB_ALPHA_MAX,
    eta: float = FAB_ETA,
    beta: float = FAB_BETA,
    targets: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    target_ranks: Sequence[int] | None = None,
) -> AttackResult:
    """Fast Adaptive Boundary attack (Croce & Hein, ICML 2020): minimal ``norm`` adversarial examples.

    Parameters
    ----------
    model : nn.Module
        Returns logits ``(N, K)``; differentiated w.r.t. its input (eval mode, frozen parameters,
        its state restored afterwards).
    inputs : Tensor (N, ...)
        Values in ``[0, 1]``; never modified.
    labels : int64 Tensor (N,)
    norm : {"linf", "l2", "l1"}, default "linf"
        The norm that is minimised.
    eps : float or None, default None
        ``None``: minimum-norm mode, ``norms`` are the smallest adversarial norms found and
        ``success`` means misclassified. A radius: success only when the norm found is at most
        ``eps``; elsewhere the original input is returned (fab_base.py L292-296, AutoAttack's
        rule). ``eps`` also bounds the radius of random restarts.
    num_steps : int, default 100
        Iterations per run (fab_base.py L41).
    restarts : int, default 1
        Runs per target; runs after the first start at a random point of the ball of radius
        ``0.5 * min(best norm so far, eps)`` (fab_base.py L130-161). ``restarts > 1`` needs a
        ``generator``.
    targeted : bool, default False
        FAB-T (AutoAttack's targeted FAB): one run per target class, the targets being the
        ``num_target_classes`` highest-scoring non-true classes of the clean logits; each run
        follows only the hyperplane ``f_t = f_y`` (fab_pt.py L100-114). Success still means
        "misclassified", as in AutoAttack.
    num_target_classes : int, default 9
        Targets tried by FAB-T (fab_base.py L51); at most ``K - 1``.
    alpha_max : float in [0, 1], default 0.1
        Largest bias of the step toward the original (Eq. 11; fab_base.py L43).
    eta : float >= 1, default 1.05
        Extrapolation past the linearised boundary (Sec. 3.2; fab_base.py L44).
    beta : float in (0, 1), default 0.9
        Backward step toward the original once adversarial (Sec. 3.2; fab_base.py L45).
    targets : int64 Tensor (N,), optional
        Explicit targets (an extension over AutoAttack): each run follows ``f_t = f_y`` and
        success means "predicted as the target"; ``targeted`` and ``num_target_classes`` are then
        unused.
    generator : torch.Generator, optional
        Draws the random restarts; required when ``restarts > 1``, unused otherwise.
    target_ranks : sequence of int, optional
        FAB-T's targets by rank among the non-true classes ordered by clean logit (1 = the
        highest-scoring wrong class), in the order given; overrides ``num_target_classes``
        (ranks ``1, ..., num_target_classes``). Needs ``targeted=True``.

    Returns
    -------
    AttackResult
        ``eps`` is the given radius (``None`` in minimum-norm mode). Examples the model already
        misclassifies are returned unchanged; so are examples FAB could not break (norm 0).

    Notes
    -----
    One step (Sec. 3.2, fab_base.py L163-251), with ``x0`` the original and ``x`` the iterate:
    linearise ``f_c - f_y`` at ``x`` for every class ``c != y`` (untargeted; one batched backward
    for all ``K - 1`` gradients) or for the target only (FAB-T); take the hyperplane
    ``c`` with the smallest ``|f_c - f_y| / ||grad(f_c - f_y)||_q`` (``q`` the dual norm);
    project ``x`` and ``x0`` onto it within the box (:func:`box_hyperplane_step`), giving steps
    ``d`` and ``d0``; ``alpha = min(||d|| / (||d|| + ||d0||), alpha_max)`` (Eq. 11);
    ``x <- clip((1 - alpha)(x + eta d) + alpha (x0 + eta d0))``; if ``x`` is adversarial, keep it
    when its norm is the smallest so far and set ``x <- x0 + beta (x - x0)``.

    On a linear model started inside the box the first projection of ``x0`` is the exact minimal
    perturbation; the iterates then close in on the boundary geometrically.

    Deviations: in eps mode an example stops iterating once it has an adversarial point within
    ``eps`` (AutoAttack keeps shrinking its norm; the verdict is the same, the returned point
    may be larger). Restart points are drawn uniformly in the ball of radius
    ``0.5 * min(best, eps)`` (:func:`~robustlab.adversarial._core.random_in_ball`); the
    reference draws on that sphere. Targets may also be given explicitly.

    References
    ----------
    F. Croce and M. Hein. Minimally distorted adversarial examples with a fast adaptive boundary
    attack. ICML 2020. Reference code: fra31/auto-attack ``fab_base.py``, ``fab_pt.py``,
    ``fab_projections.py``.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x, y = torch.rand(2, 4), torch.tensor([0, 1])
    >>> res = fab(model, x, y, norm="l2", num_steps=10)
    >>> res.norms.shape
    torch.Size([2])
    """
    norm = check_norm(norm)
    if eps is not None:
        eps = check_eps(eps)
    num_steps = check_int("num_steps", num_steps, low=1)
    restarts = check_int("restarts", restarts, low=1)
    targeted = check_bool("targeted", targeted)
    num_target_classes = check_int("num_target_classes", num_target_classes, low=1)
    alpha_max = check_number("alpha_max", alpha_max, low=0.0, high=1.0)
    eta = check_number("eta", eta, low=1.0)
    beta = check_number("beta", beta, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    inputs, labels, targets = check_attack_args(inputs, labels, targets=targets, generator=generator,
                                                needs_generator=restarts > 1)
    if target_ranks is not None and not targeted:
        fail("target_ranks", "given only with targeted=True (they pick FAB-T's targets)", target_ranks)
    return _fab_impl(model, inputs, labels, targets, norm=norm, eps=eps, num_steps=num_steps,
                     restarts=restarts, targeted=targeted, num_target_classes=num_target_classes,
                     alpha_max=alpha_max, eta=eta, beta=beta, generator=generator, target_ranks=target_ranks)


@ATTACKS.register("fab")
class FAB(Attack):
    """Thin class for :func:`fab` (settings stored, validated when called)."""

    function = staticmethod(fab)
    name = "fab"


@ATTACKS.register("fab-t")
class FABTargeted(Attack):
    """FAB-T: :func:`fab` with ``targeted=True`` (AutoAttack's targeted FAB)."""

    function = staticmethod(fab)
    name = "fab-t"

    def __init__(self, **settings: Any) -> None:
        super().__init__(**{"targeted": True, **settings})
