"""Decision-based black-box attacks: HopSkipJump (labels only).

Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack", IEEE S&P
2020 (arXiv:1904.02144). The model is only asked for its *decision*: any callable mapping inputs
``(B, ...)`` to labels ``(B,)`` -- or to scores ``(B, K)``, of which only the argmax is used -- can
be attacked (a deployed classifier behind an API, an ONNX session, a non-differentiable
pipeline). Every call runs under ``torch.no_grad()``.

Reference code read for parameters and edge cases (no code copied): the authors' implementation,
Jianbo-Lab/HSJA ``hsja.py`` (functions ``hsja``, ``approximate_gradient``, ``binary_search_batch``,
``select_delta``, ``geometric_progression_for_stepsize``, ``initialize``), and ART's
``art/attacks/evasion/hop_skip_jump.py`` (defaults ``init_eval=100``, ``max_eval=10000``,
``init_size=100``).

Vectorisation. All examples of the batch move together: each binary-search step, each batch of
sign queries (``B_t`` random directions per example at once, one model call for all of them) and
each step of the geometric step-size search is one batched query of the examples that still need
it. Randomness is per example: every example gets its own ``torch.Generator`` seeded from the
caller's generator, so an example's trajectory does not depend on the other examples of the batch,
and a larger ``max_queries`` continues exactly the trajectory of a smaller one.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robustlab._checks import check_int, check_number, check_tensor, fail
from robustlab._constants import (
    HSJ_FIRST_DELTA,
    HSJ_GAMMA,
    HSJ_INIT_BLEND_THRESHOLD,
    HSJ_INIT_EVALS,
    HSJ_INIT_SIZE,
    HSJ_MAX_EVALS,
    HSJ_MAX_HALVINGS,
    HSJ_QUERY_CHUNK,
)
from robustlab.adversarial._core import (
    ATTACKS,
    Attack,
    AttackResult,
    ModelView,
    check_attack_args,
    check_eps,
    check_norm,
    check_unit_box,
    flat,
    model_view,
    perturbation_norms,
)
from robustlab.errors import ModelOutputError, ShapeError

__all__ = ["HSJ_NORMS", "HopSkipJump", "hop_skip_jump"]

#: Norms HopSkipJump offers (the paper's L2 and Linf versions).
HSJ_NORMS: tuple[str, ...] = ("l2", "linf")


# --------------------------------------------------------------------------- public function
def hop_skip_jump(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str = "l2",
    eps: float | None = None,
    max_queries: int = 5000,
    init_evals: int = HSJ_INIT_EVALS,
    max_evals: int = HSJ_MAX_EVALS,
    gamma: float = HSJ_GAMMA,
    init_size: int = HSJ_INIT_SIZE,
    init_inputs: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """HopSkipJump (Chen, Jordan & Wainwright, S&P 2020): decision-based minimum-norm attack.

    Threat model: the attacker sees only the predicted label. The attack looks for the adversarial
    input closest to ``x`` in ``norm`` (``"l2"`` or ``"linf"``) inside ``[0, 1]``: untargeted,
    predicted label != ``labels``; targeted (``targets`` given), predicted label == ``targets``.

    Parameters
    ----------
    model : callable
        Maps inputs ``(B, ...)`` to labels ``(B,)`` (integer) or scores ``(B, K)`` (argmax taken).
        An ``nn.Module`` is run in eval mode and its state is restored.
    inputs : float Tensor (N, ...)
        Inputs in ``[0, 1]`` (images or tabular).
    labels : int64 Tensor (N,)
        True classes.
    norm : {"l2", "linf"}, default "l2"
    eps : float, optional
        ``None`` (default): minimum-norm attack, ``success`` means "adversarial". Given:
        ``success`` also requires ``norm <= eps``; where the best point found is farther, the
        original input is returned (as AutoAttack's FAB does), and an example stops being queried
        as soon as a point within ``eps`` is found.
    max_queries : int >= 1, default 5000
        Query budget per example, counting every model evaluation of that example: the clean
        pass, the start search, binary searches, sign queries and step-size queries.
        ``queries`` never exceeds it.
    init_evals, max_evals : int, default 100 and 10000
        Sign queries at iteration ``t``: ``B_t = min(init_evals * sqrt(t), max_evals)``
        (Sec. 5 / hsja.py ``num_evals``; ART ``init_eval``, ``max_eval``), fewer when the budget
        left is smaller.
    gamma : float > 0, default 1.0
        Binary-search threshold ``theta = gamma / d^{3/2}`` (L2) or ``gamma / d^2`` (Linf), ``d``
        the input dimension (hsja.py; ART uses ``0.01 / sqrt(d)`` and ``0.01 / d`` instead).
    init_size : int >= 1, default 100
        Random starting points tried per example (ART ``init_size``).
    init_inputs : float Tensor (N, ...), optional
        Starting points (e.g. images of the target class for a targeted attack). Where one is not
        adversarial, the random search is used for that example.
    targets : int64 Tensor (N,), optional
        Target classes (targeted attack). Without ``init_inputs`` the start is searched for among
        uniform random inputs, which rarely land in a given class: pass ``init_inputs`` of the
        target classes for a reliable targeted attack. Examples without a start are failures
        (``adv_inputs`` = ``inputs``).
    generator : torch.Generator
        Required: seeds one generator per example (random starts and sign-query directions).

    Returns
    -------
    AttackResult
        ``adv_inputs``: per example, the adversarial point of smallest ``norm`` distance found
        (a point the model was queried on, so ``success`` comes from that forward pass), or
        ``inputs`` where none was found (or, with ``eps``, none within ``eps``). ``norms`` in
        ``norm``; ``num_iterations``: the largest number of gradient-estimation iterations.

    Notes
    -----
    Start (hsja.py ``initialize``, Foolbox's blended uniform noise): uniform random inputs until
    one is adversarial, then a binary search on the blend ``(1 - a) x + a x_rand`` (threshold
    0.001), then the binary search below.

    Iteration ``t = 1, 2, ...`` (Alg. 2):

    1. Gradient-direction estimate at the boundary point ``x_t`` (Eq. 9 with the baseline of
       Eq. 16): ``B_t`` directions ``u_b`` (Gaussian for L2, uniform in ``[-1, 1]^d`` for Linf),
       normalised to unit L2 norm; ``phi_b = +1`` if ``clip(x_t + delta_t u_b)`` is adversarial,
       else ``-1``; ``g = mean_b (phi_b - mean(phi)) u_b`` (``mean_b phi_b u_b`` when every
       ``phi_b`` agrees). ``delta_1 = 0.1``; then ``delta_t = sqrt(d) theta dist`` (L2) or
       ``d theta dist`` (Linf), ``dist`` the distance of the point before the last binary search
       (hsja.py ``select_delta``).
    2. Update direction ``v = g / ||g||_2`` (L2) or ``sign(g)`` (Linf).
    3. Geometric step-size search (Sec. 4.2): ``xi = ||x_t - x|| / sqrt(t)``, halved until
       ``clip(x_t + xi v)`` is adversarial (at most 30 halvings; then the iteration keeps
       ``x_t``).
    4. Binary search back to the boundary between ``x`` and the new point: on the segment for L2,
       on the Linf radius (clipping to ``[x - r, x + r]``) for Linf, until the bracket is below
       ``theta`` (L2) or ``min(theta, theta * dist)`` (Linf) (hsja.py ``binary_search_batch``).

    Deviation: every adversarial boundary point is compared with the best so far and the closest
    one is returned (the reference returns the last one; both are adversarial), so the returned
    norm never grows with more queries.

    Example
    -------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> x = torch.rand(4, 1, 4, 4)
    >>> y = model(x).argmax(1)
    >>> res = hop_skip_jump(lambda v: model(v).argmax(1), x, y, max_queries=300,
    ...                     generator=torch.Generator().manual_seed(0))
    >>> int(res.queries.max()) <= 300
    True
    """
    inputs, labels, targets = check_attack_args(inputs, labels, targets=targets, generator=generator,
                                                needs_generator=True)
    norm = check_norm(norm, allowed=HSJ_NORMS)
    if eps is not None:
        eps = check_eps(eps)
    max_queries = check_int("max_queries", max_queries, low=1)
    init_evals = check_int("init_evals", init_evals, low=1)
    max_evals = check_int("max_evals", max_evals, low=init_evals)
    gamma = check_number("gamma", gamma, low=0.0, low_inclusive=False)
    init_size = check_int("init_size", init_size, low=1)
    if init_inputs is not None:
        init_inputs = check_tensor("init_inputs", init_inputs)
        if tuple(init_inputs.shape) != tuple(inputs.shape):
            raise ShapeError(
                f"The 'init_inputs' parameter must have the shape of 'inputs' {tuple(inputs.shape)}. "
                f"Got shape {tuple(init_inputs.shape)} instead.",
                expected=tuple(inputs.shape), got=tuple(init_inputs.shape))
        init_inputs = check_unit_box("init_inputs", init_inputs.to(device=inputs.device, dtype=inputs.dtype))
    assert generator is not None  # checked by check_attack_args(needs_generator=True)
    return _hsj_impl(model, inputs, labels, norm=norm, eps=eps, max_queries=max_queries,
                     init_evals=init_evals, max_evals=max_evals, gamma=gamma, init_size=init_size,
                     init_inputs=init_inputs, targets=targets, generator=generator)


@ATTACKS.register("hsj")
class HopSkipJump(Attack):
    """Thin class for :func:`hop_skip_jump` (registered as ``"hsj"``)."""

    function = staticmethod(hop_skip_jump)
    name = "hsj"


# --------------------------------------------------------------------------- the decision oracle
class _Oracle:
    """Asks the model for labels, counts queries per example, enforces the budget."""

    def __init__(self, view: ModelView, labels: torch.Tensor, targets: torch.Tensor | None,
                 max_queries: int) -> None:
        self.view, self.labels, self.targets = view, labels, targets
        self.max_queries = max_queries

    def left(self, idx: torch.Tensor) -> torch.Tensor:
        return self.max_queries - self.view.queries[idx]

    def predict(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Labels for ``x`` (row ``r`` belongs to example ``idx[r]``); adds one query per row."""
        out = [self._labels(chunk) for chunk in x.split(HSJ_QUERY_CHUNK)] if x.shape[0] else []
        self.view.queries.index_add_(0, idx, torch.ones_like(idx))
        return torch.cat(out) if out else idx.new_zeros(0)

    def adversarial(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(is ``x`` adversarial for its example, predicted label)."""
        pred = self.predict(x, idx)
        ok = pred == self.targets[idx] if self.targets is not None else pred != self.labels[idx]
        return ok, pred

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        out = self.view.model(x)
        if not isinstance(out, torch.Tensor):
            fail("model output", "a tensor of labels (N,) or scores (N, K)", out, error=ModelOutputError)
        if out.ndim == 2 and out.shape[0] == x.shape[0] and out.shape[1] >= 1:
            return out.argmax(dim=1).to(torch.int64)
        if out.ndim == 1 and out.shape[0] == x.shape[0] and not out.is_floating_point() \
                and out.dtype != torch.bool:
            return out.to(torch.int64)
        fail("model output", f"integer labels of shape ({x.shape[0]},) or scores of shape "
             f"({x.shape[0]}, K)", out, error=ModelOutputError)


# --------------------------------------------------------------------------- implementation
def _hsj_impl(model: Any, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float | None,
              max_queries: int, init_evals: int, max_evals: int, gamma: float, init_size: int,
              init_inputs: torch.Tensor | None, targets: torch.Tensor | None,
              generator: torch.Generator) -> AttackResult:
    x = x.contiguous()  # one memory layout, so norms and projections round the same way
    n = x.shape[0]
    d = flat(x).shape[1] if n else 1
    theta = gamma / (d * math.sqrt(d)) if norm == "l2" else gamma / d ** 2
    seeds = torch.randint(0, 2 ** 62, (n,), generator=generator, device=generator.device).tolist()
    gens = [torch.Generator(device=generator.device).manual_seed(int(s)) for s in seeds]
    with model_view(model, x, differentiable=False) as view:
        oracle = _Oracle(view, y, targets, max_queries)
        run = _HSJRun(oracle, x, norm=norm, eps=eps, theta=theta, d=d, gens=gens)
        all_idx = torch.arange(n, device=x.device)
        fooled0, pred0 = oracle.adversarial(x, all_idx)
        run.best_pred = pred0.clone()
        run.best_norm = torch.where(fooled0, torch.zeros_like(run.best_norm), run.best_norm)
        run.start(all_idx[~fooled0], init_inputs, init_size)
        iterations = run.iterate(init_evals, max_evals)
        adv, pred = run.best_adv, run.best_pred
        found = torch.isfinite(run.best_norm)
        if eps is not None:
            found &= run.best_norm <= eps
        adv = torch.where(found.reshape((-1,) + (1,) * (x.ndim - 1)), adv, x)
        pred = torch.where(found, pred, pred0)
        success = pred == targets if targets is not None else pred != y
        return AttackResult(
            adv_inputs=adv, success=success, norms=perturbation_norms(adv - x, norm),
            queries=view.queries.clone(), num_iterations=iterations, norm=norm, eps=eps,
            targets=targets,
        )


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


class _HSJRun:
    """State of one attack: boundary points, distances, best points, per example."""

    def __init__(self, oracle: _Oracle, x: torch.Tensor, *, norm: str, eps: float | None,
                 theta: float, d: int, gens: list[torch.Generator]) -> None:
        self.oracle, self.x, self.norm, self.eps = oracle, x, norm, eps
        self.theta, self.d, self.gens = theta, d, gens
        n = x.shape[0]
        self.best_adv = x.clone()
        self.best_norm = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
        self.best_pred = torch.zeros(n, dtype=torch.int64, device=x.device)
        self.boundary = x.clone()  # x_t: adversarial point on the boundary
        self.dist_post = torch.zeros(n, dtype=x.dtype, device=x.device)  # distance before the search
        self.active = torch.zeros(n, dtype=torch.bool, device=x.device)

    # -- helpers -------------------------------------------------------------------------------
    def _dist(self, p: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if idx.numel() == 0:
            return self.x.new_zeros(0)
        return perturbation_norms(p - self.x[idx], self.norm)

    def _draw(self, idx: torch.Tensor, shape: tuple[int, ...], uniform: bool) -> torch.Tensor:
        """Per-example draws ``(len(idx), *shape)`` from each example's own generator."""
        dev = self.gens[0].device if self.gens else self.x.device
        rows = []
        for i in idx.tolist():
            if uniform:
                rows.append(torch.rand(shape, generator=self.gens[i], device=dev, dtype=torch.float32))
            else:
                rows.append(torch.randn(shape, generator=self.gens[i], device=dev, dtype=torch.float32))
        if not rows:
            return self.x.new_zeros((0,) + shape)
        return torch.stack(rows).to(device=self.x.device, dtype=self.x.dtype)

    def _record(self, p: torch.Tensor, pred: torch.Tensor, idx: torch.Tensor) -> None:
        """Keep ``p`` (adversarial, queried) as the best point where it is closer."""
        dist = self._dist(p, idx)
        better = dist < self.best_norm[idx]
        sel = idx[better]
        self.best_adv[sel] = p[better]
        self.best_norm[sel] = dist[better]
        self.best_pred[sel] = pred[better]
        if self.eps is not None:  # within eps: done, stop spending queries on it
            self.active[sel[self.best_norm[sel] <= self.eps]] = False

    def _can_query(self, idx: torch.Tensor) -> torch.Tensor:
        return self.oracle.left(idx) > 0

    # -- start ---------------------------------------------------------------------------------
    def start(self, idx: torch.Tensor, init_inputs: torch.Tensor | None, init_size: int) -> None:
        """Find an adversarial start per example, then project it onto the boundary."""
        x = self.x
        start = x.clone()
        pred = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if init_inputs is not None and idx.numel():
            idx = idx[self._can_query(idx)]
            ok, p = self.oracle.adversarial(init_inputs[idx], idx)
            start[idx[ok]], pred[idx[ok]], found[idx[ok]] = init_inputs[idx[ok]], p[ok], True
            # given starts are used as they are (ART, hsja.py target_image): no blend search
            given = idx[ok]
            idx = idx[~ok]
        else:
            given = idx[:0]
        searching = idx
        for _ in range(init_size):
            searching = searching[self._can_query(searching)]
            if searching.numel() == 0:
                break
            noise = self._draw(searching, tuple(x.shape[1:]), uniform=True)
            ok, p = self.oracle.adversarial(noise, searching)
            start[searching[ok]], pred[searching[ok]], found[searching[ok]] = noise[ok], p[ok], True
            searching = searching[~ok]
        random_found = found.clone()
        random_found[given] = False
        blended = random_found.nonzero().squeeze(1)
        if blended.numel():
            start[blended], pred[blended] = self._blend_search(start[blended], pred[blended], blended)
        ok_idx = found.nonzero().squeeze(1)
        if ok_idx.numel() == 0:
            return
        self.active[ok_idx] = True
        self._record(start[ok_idx], pred[ok_idx], ok_idx)
        self.boundary[ok_idx] = start[ok_idx]
        ok_idx = ok_idx[self.active[ok_idx]]
        if ok_idx.numel():
            self.boundary[ok_idx], _ = self._binary_search(start[ok_idx], ok_idx)

    def _blend_search(self, noise: torch.Tensor, pred: torch.Tensor,
                      idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bisect ``a`` in ``(1 - a) x + a noise`` to 0.001 (hsja.py ``initialize``)."""
        x0 = self.x[idx]
        lo = torch.zeros(idx.numel(), dtype=self.x.dtype, device=self.x.device)
        hi = torch.ones_like(lo)
        best, best_pred = noise.clone(), pred.clone()
        while True:
            go = ((hi - lo) > HSJ_INIT_BLEND_THRESHOLD) & self._can_query(idx)
            rows = go.nonzero().squeeze(1)
            if rows.numel() == 0:
                return best, best_pred
            mid = (hi[rows] + lo[rows]) / 2
            cand = (1 - _bcast(mid, x0)) * x0[rows] + _bcast(mid, x0) * noise[rows]
            ok, p = self.oracle.adversarial(cand, idx[rows])
            hi[rows[ok]], lo[rows[~ok]] = mid[ok], mid[~ok]
            best[rows[ok]], best_pred[rows[ok]] = cand[ok], p[ok]

    # -- binary search to the boundary ---------------------------------------------------------
    def _binary_search(self, points: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boundary points between ``x`` and the adversarial ``points``; returns (points, dists).

        L2: bisect ``a`` on ``(1 - a) x + a p``, ``a`` in ``[0, 1]``, to ``theta``. Linf: bisect the
        radius ``r`` in ``[0, ||p - x||_inf]`` of ``clip(p, x - r, x + r)`` to
        ``min(theta, theta * ||p - x||_inf)`` (hsja.py ``binary_search_batch``, ``project``).
        Every adversarial point queried is offered to the best-point record.
        """
        x0 = self.x[idx]
        dist_pre = self._dist(points, idx)
        self.dist_post[idx] = dist_pre
        if self.norm == "l2":
            hi = torch.ones_like(dist_pre)
            thr = torch.full_like(dist_pre, self.theta)
        else:
            hi = dist_pre.clone()
            thr = torch.clamp(dist_pre * self.theta, max=self.theta)
        lo = torch.zeros_like(hi)
        out = points.clone()
        while True:
            go = ((hi - lo) > thr) & self._can_query(idx) & self.active[idx]
            rows = go.nonzero().squeeze(1)
            if rows.numel() == 0:
                return out, self._dist(out, idx)
            mid = (hi[rows] + lo[rows]) / 2
            cand = self._project(x0[rows], points[rows], mid)
            ok, p = self.oracle.adversarial(cand, idx[rows])
            hi[rows[ok]], lo[rows[~ok]] = mid[ok], mid[~ok]
            out[rows[ok]] = cand[ok]
            self._record(cand[ok], p[ok], idx[rows[ok]])

    def _project(self, x0: torch.Tensor, p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        a = _bcast(a, x0)
        if self.norm == "l2":
            return (1 - a) * x0 + a * p
        return torch.minimum(torch.maximum(p, x0 - a), x0 + a)

    # -- iterations ----------------------------------------------------------------------------
    def iterate(self, init_evals: int, max_evals: int) -> int:
        t = 0
        while True:
            idx = self.active.nonzero().squeeze(1)
            idx = idx[self._can_query(idx)]
            if idx.numel() == 0:
                return t
            t += 1
            if self.norm == "l2":
                delta = math.sqrt(self.d) * self.theta * self.dist_post[idx]
            else:
                delta = self.d * self.theta * self.dist_post[idx]
            if t == 1:
                delta = torch.full_like(delta, HSJ_FIRST_DELTA)
            num_evals = min(int(init_evals * math.sqrt(t)), max_evals)
            direction = self._estimate_direction(idx, delta, num_evals)
            keep = self._can_query(idx)
            idx, direction = idx[keep], direction[keep]
            if idx.numel() == 0:
                return t
            stepped = self._geometric_step(idx, direction, t)
            moved = ~torch.isnan(flat(stepped)[:, 0]) if stepped.numel() else stepped.new_zeros(0, dtype=torch.bool)
            if bool(moved.any()):
                self.boundary[idx[moved]], _ = self._binary_search(stepped[moved], idx[moved])

    def _estimate_direction(self, idx: torch.Tensor, delta: torch.Tensor, num_evals: int) -> torch.Tensor:
        """Eq. 9 with the baseline of Eq. 16: ``B_t`` sign queries per example, batched.

        Examples are processed in groups of at most ``HSJ_QUERY_CHUNK // B_t`` so the probes
        (``B_t`` perturbed copies per example) stay bounded in memory; each example's draws
        come from its own generator, so the grouping does not change the result.
        """
        per = max(1, HSJ_QUERY_CHUNK // num_evals)
        parts = [self._estimate_group(idx[i:i + per], delta[i:i + per], num_evals)
                 for i in range(0, idx.numel(), per)]
        return torch.cat(parts) if parts else self.x.new_zeros((0, *self.x.shape[1:]))

    def _estimate_group(self, idx: torch.Tensor, delta: torch.Tensor, num_evals: int) -> torch.Tensor:
        x_t = self.boundary[idx]
        a, shape = idx.numel(), tuple(self.x.shape[1:])
        u = self._draw(idx, (num_evals,) + shape, uniform=self.norm == "linf")
        if self.norm == "linf":
            u = 2 * u - 1
        u = u / flat(u.reshape(a * num_evals, *shape)).norm(dim=1).reshape(a, num_evals, *([1] * len(shape)))
        dl = delta.reshape((a, 1) + (1,) * len(shape))
        probes = (x_t[:, None] + dl * u).clamp(0.0, 1.0)
        u = (probes - x_t[:, None]) / dl
        # the budget left may be smaller than B_t: use the first b_i directions of example i
        b = torch.clamp(self.oracle.left(idx), max=num_evals)
        valid = torch.arange(num_evals, device=idx.device)[None, :] < b[:, None]
        rows, cols = valid.nonzero(as_tuple=True)
        ok, _ = self.oracle.adversarial(probes[rows, cols], idx[rows])
        phi = torch.zeros(a, num_evals, dtype=self.x.dtype, device=self.x.device)
        phi[rows, cols] = ok.to(self.x.dtype) * 2 - 1
        count = b.clamp_min(1).to(self.x.dtype)
        mean = phi.sum(dim=1) / count
        agree = mean.abs() == 1
        weight = torch.where(agree[:, None], phi, (phi - mean[:, None]) * valid)
        grad = (_bcast_weight(weight, u) * u).sum(dim=1) / _bcast(count, x_t)
        if self.norm == "linf":
            return grad.sign()
        return grad / _bcast(flat(grad).norm(dim=1).clamp_min(torch.finfo(grad.dtype).tiny), grad)

    def _geometric_step(self, idx: torch.Tensor, v: torch.Tensor, t: int) -> torch.Tensor:
        """Halve ``xi = dist / sqrt(t)`` until ``clip(x_t + xi v)`` is adversarial (Sec. 4.2).

        Rows that find no adversarial step (budget or :data:`HSJ_MAX_HALVINGS` exhausted) are NaN.
        """
        x_t = self.boundary[idx]
        xi = self._dist(x_t, idx) / math.sqrt(t)
        out = torch.full_like(x_t, float("nan"))
        pending = torch.ones(idx.numel(), dtype=torch.bool, device=idx.device)
        for _ in range(HSJ_MAX_HALVINGS):
            rows = (pending & self._can_query(idx) & self.active[idx]).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            cand = (x_t[rows] + _bcast(xi[rows], x_t) * v[rows]).clamp(0.0, 1.0)
            ok, p = self.oracle.adversarial(cand, idx[rows])
            out[rows[ok]] = cand[ok]
            self._record(cand[ok], p[ok], idx[rows[ok]])
            pending[rows[ok]] = False
            xi[rows[~ok]] /= 2
        return out


def _bcast_weight(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape + (1,) * (like.ndim - 2))
