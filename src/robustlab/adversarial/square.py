"""Square Attack: score-based black-box random search in the Linf and L2 balls.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020 (arXiv:1912.00049). The model is only *queried*: any callable
mapping images ``(N, C, H, W)`` in ``[0, 1]`` to scores ``(N, K)`` (logits, or any scores whose
argmax is the prediction) can be attacked, e.g. an ONNX session or a remote service. No gradient
is ever taken; every call runs under ``torch.no_grad()``.

Random search (Alg. 1): from a starting point, draw a candidate that differs from the current best
point in one square window, query the model, keep the candidate if it lowers the loss (or already
fools the model), repeat until the example is broken or its query budget is spent. The window side
shrinks with the iteration through the paper's piecewise-constant schedule for ``p`` (the fraction
of pixels the window covers).

Implementation notes (reference read: fra31/auto-attack ``autoattack/square.py``; no code copied):

* Every example draws its own window position, signs and (L2) pattern orientation at every
  iteration; fra31 draws one window for the whole batch (``random_int`` with shape ``[1]``,
  lines 257-258 and 346-354) and the paper's Alg. 2/3 draw per example. The draws for iteration
  ``i`` always have the shape of the whole attacked batch, so an example's trajectory does not
  depend on which other examples are still being queried (the ``p`` schedule is rescaled to
  ``max_queries``, so different budgets give different trajectories).
* Window positions are uniform over ``{0, ..., H - s}`` as in the paper (Alg. 2, "r, s ~ U")
  by default. fra31 (``random_int(0, h - s)``, lines 257-258 and 346-354; torchattacks' port
  too) draws from ``{0, ..., H - s - 1}``, so its update windows never touch the last row and
  column; on small images that makes it markedly weaker (8x8 digits, small MLP, Linf eps 0.1,
  500-1000 queries: about 18 points higher robust accuracy than the paper's range). ``windows="fra31"`` reproduces that range
  for comparisons with AutoAttack numbers.
* The window side is ``s = round(sqrt(p * H * W))`` (at least 1 for Linf, at least 3 and odd for
  L2, at most ``min(H, W)``) -- fra31 lines 255-256 and 341-344.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robustlab._checks import check_choice, check_int, check_number, check_tensor
from robustlab._constants import (
    SQUARE_L2_INIT_TILES,
    SQUARE_L2_MIN_WINDOW,
    SQUARE_P_SCHEDULE_BOUNDS,
    SQUARE_P_SCHEDULE_QUERIES,
)
from robustlab.adversarial._core import (
    ATTACKS,
    Attack,
    AttackResult,
    ModelView,
    ce_loss,
    check_attack_args,
    check_eps,
    check_norm,
    finalize,
    margin,
    model_view,
    rand,
    randint,
)

__all__ = ["SQUARE_LOSSES", "SQUARE_NORMS", "SQUARE_WINDOWS", "Square", "p_selection", "square"]

#: Norms Square Attack offers (the paper's Linf and L2 versions).
SQUARE_NORMS: tuple[str, ...] = ("linf", "l2")

#: Losses the random search minimises (see :func:`square`).
SQUARE_LOSSES: tuple[str, ...] = ("margin", "ce")

#: Ranges of the update windows' positions (see :func:`square`, ``windows``).
SQUARE_WINDOWS: tuple[str, ...] = ("paper", "fra31")

_TINY = 1e-12  # keeps window normalisations finite (fra31 uses the same guard, square.py l. 368)


def p_selection(p_init: float, iteration: int, max_queries: int) -> float:
    """Fraction ``p`` of the image a square window covers at ``iteration`` (0-based).

    The paper's schedule (Sec. 4 and its App. A.3) halves ``p`` at iterations 10, 50, 200, 500,
    1000, 2000, 4000, 6000 and 8000 of a 10,000-query budget; as in fra31 (``p_selection``,
    square.py lines 192-219, ``resc_schedule=True``) the iteration is first rescaled to that budget,
    ``int(iteration / max_queries * 10000)``, so the whole schedule runs for any ``max_queries``.
    """
    it = int(iteration / max_queries * SQUARE_P_SCHEDULE_QUERIES)
    halvings = sum(it > b for b in SQUARE_P_SCHEDULE_BOUNDS)
    return p_init / 2 ** halvings


# --------------------------------------------------------------------------- public function
def square(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    max_queries: int = 5000,
    p_init: float = 0.8,
    restarts: int = 1,
    loss: str = "margin",
    targets: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    windows: str = "paper",
) -> AttackResult:
    """Square Attack (Andriushchenko et al., ECCV 2020): score-based black-box attack.

    Threat model: ``||x_adv - x||_p <= eps`` with ``p`` = ``norm`` (``"linf"`` or ``"l2"``) and
    ``0 <= x_adv <= 1``. Untargeted: make the prediction differ from ``labels``; targeted (with
    ``targets``): make it equal ``targets``.

    Parameters
    ----------
    model : callable
        Any callable mapping images ``(B, C, H, W)`` to scores ``(B, K)``; only queried, never
        differentiated. An ``nn.Module`` is run in eval mode and its state is restored.
    inputs : float Tensor (N, C, H, W)
        Images in ``[0, 1]``. Square Attack is defined for images only (its updates are square
        windows); other shapes are refused.
    labels : int64 Tensor (N,)
        True classes.
    eps : float
        Radius of the ``norm`` ball.
    norm : {"linf", "l2"}, default "linf"
    max_queries : int >= 1, default 5000
        Query budget per example and restart, counting every model evaluation of that example:
        the clean forward pass (which finds examples already misclassified), the starting point
        and one query per random-search iteration. With ``restarts=1`` no example is queried more
        than ``max_queries`` times; with ``R`` restarts at most ``1 + R * (max_queries - 1)``
        (the clean pass is shared). AutoAttack's default is 5000 (fra31 ``autoattack.py``).
    p_init : float in (0, 1], default 0.8
        Initial fraction of pixels a window covers (the paper's Linf value; AutoAttack uses 0.8
        for both norms).
    restarts : int >= 1, default 1
        Independent runs, each from a fresh random start, on the examples not yet broken.
    loss : {"margin", "ce"}, default "margin"
        The loss the search lowers. Untargeted: ``"margin"`` is ``z_y - max_{j != y} z_j`` (the
        paper's choice), ``"ce"`` is ``-CE(z, y)``. Targeted: ``"ce"`` is ``CE(z, t)`` (the
        paper's and fra31's choice for targeted attacks, square.py line 86 -- pass ``loss="ce"``
        to reproduce it), ``"margin"`` is ``max_{j != t} z_j - z_t``.
    targets : int64 Tensor (N,), optional
        Target classes (targeted attack); never equal to ``labels``.
    generator : torch.Generator
        Required: the source of every random draw (start, windows, signs).
    windows : {"paper", "fra31"}, default "paper"
        Range of the update windows' top-left corners: ``{0, ..., H - s}`` (the paper's Alg. 2)
        or fra31/torchattacks' ``{0, ..., H - s - 1}`` (never the last row/column when
        ``s < H``), to reproduce AutoAttack's Square exactly in distribution.

    Returns
    -------
    AttackResult
        ``adv_inputs`` holds, per example, the first point found that fools the model, or the
        lowest-loss point of all restarts. ``queries`` counts the model evaluations of each
        example exactly (examples are only queried while they are not yet broken).
        ``num_iterations`` is the largest number of search iterations any restart ran.

    Notes
    -----
    Start (Sec. 3.1, Linf): vertical stripes, ``x + eps * s`` with one random sign per channel
    and column, clipped to ``[0, 1]`` (fra31 lines 233-235). Linf update (Alg. 2): a window of
    side ``s`` is set to ``x + eps * sign`` (one random sign per channel), clipped to the box.

    Start (Sec. 3.2, L2): the image is tiled with windows of side ``min(H, W) // 5`` (the paper's
    and fra31's, lines 306-320), each filled with the pseudo-Gaussian pattern ``eta`` (two halves
    of opposite sign, concentric squares weighted ``1 / (k + 1)^2``) in a random orientation
    times a random sign per channel; the sum is rescaled to L2 norm ``eps``. fra31 uses side
    ``H // 5`` and offsets both axes by ``(H - 5 s) // 2`` (square images; side 0 below 5
    pixels); here each axis gets its own offset and the side is at least 1. L2 update (Alg. 3): two windows ``W1``, ``W2``
    of side ``s``; the perturbation inside ``W1 u W2`` is replaced by ``eta`` (random sign and
    orientation) plus the old ``W1`` content (normalised), rescaled so that the whole perturbation
    would have norm ``eps`` before clipping -- fra31 lines 339-379. A candidate is accepted if its
    loss is lower than the best loss so far, or if it fools the model (fra31 lines 271-287).

    Example
    -------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> res = square(model, x, y, eps=0.1, max_queries=50, generator=torch.Generator().manual_seed(0))
    >>> bool((res.adv_inputs - x).abs().max() <= 0.1 + 1e-6), int(res.queries.max()) <= 50
    (True, True)
    """
    inputs, labels, targets = check_attack_args(inputs, labels, targets=targets, generator=generator,
                                                needs_generator=True)
    check_tensor("inputs", inputs, ndim=4, dims="N, C, H, W")
    eps = check_eps(eps)
    norm = check_norm(norm, allowed=SQUARE_NORMS)
    max_queries = check_int("max_queries", max_queries, low=1)
    p_init = check_number("p_init", p_init, low=0.0, high=1.0, low_inclusive=False)
    restarts = check_int("restarts", restarts, low=1)
    loss = check_choice("loss", loss, SQUARE_LOSSES)
    windows = check_choice("windows", windows, SQUARE_WINDOWS)
    assert generator is not None  # checked by check_attack_args(needs_generator=True)
    return _square_impl(model, inputs, labels, eps=eps, norm=norm, max_queries=max_queries,
                        p_init=p_init, restarts=restarts, loss=loss, targets=targets,
                        generator=generator, windows=windows)


@ATTACKS.register("square")
class Square(Attack):
    """Thin class for :func:`square` (registered as ``"square"``)."""

    function = staticmethod(square)
    name = "square"


# --------------------------------------------------------------------------- implementation
def _loss_and_done(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
                   loss: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss to minimise, fooled?, prediction) per example."""
    pred = logits.argmax(dim=1)
    if targets is None:
        value = margin(logits, labels) if loss == "margin" else -ce_loss(logits, labels)
        return value, pred != labels, pred
    value = -margin(logits, targets) if loss == "margin" else ce_loss(logits, targets)
    return value, pred == targets, pred


def _square_impl(model: Any, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str,
                 max_queries: int, p_init: float, restarts: int, loss: str,
                 targets: torch.Tensor | None, generator: torch.Generator,
                 windows: str = "paper") -> AttackResult:
    x = x.contiguous()  # one memory layout, so reductions (window norms) round the same way
    n = x.shape[0]
    with model_view(model, x, differentiable=False) as view:
        logits = view(x)
        pred = logits.argmax(dim=1)
        done = pred == targets if targets is not None else pred != y
        adv = x.clone()
        best_loss = torch.full((n,), float("inf"), dtype=logits.dtype, device=x.device)
        iterations = 0
        for _ in range(restarts):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0 or max_queries < 2:
                break
            t_idx = targets[idx] if targets is not None else None
            run = _SquareRun(view, x[idx], y[idx], t_idx, idx, eps=eps, norm=norm, loss=loss,
                             p_init=p_init, max_queries=max_queries, generator=generator,
                             windows=windows)
            x_run, loss_run, pred_run, done_run, its = run.search()
            iterations = max(iterations, its)
            keep = done_run | (loss_run < best_loss[idx])
            sel = idx[keep]
            adv[sel] = x_run[keep]
            best_loss[sel] = loss_run[keep]
            pred[sel] = pred_run[keep]
            done[sel] = done_run[keep]
        return finalize(view, x, adv, y, norm=norm, eps=eps, targets=targets,
                        num_iterations=iterations, predictions=pred)


class _SquareRun:
    """One restart of the random search on the examples ``index`` of the attacked batch."""

    def __init__(self, view: ModelView, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None,
                 index: torch.Tensor, *, eps: float, norm: str, loss: str, p_init: float,
                 max_queries: int, generator: torch.Generator, windows: str) -> None:
        self.view, self.x, self.y, self.t, self.index = view, x, y, t, index
        self.eps, self.norm, self.loss, self.p_init = eps, norm, loss, p_init
        self.max_queries, self.generator = max_queries, generator
        self.last_excluded = windows == "fra31"
        self.m, self.c, self.h, self.w = x.shape
        dev = x.device
        self.rows = torch.arange(self.h, device=dev)
        self.cols = torch.arange(self.w, device=dev)
        self._eta_cache: dict[int, torch.Tensor] = {}
        self._window_tables: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- random draws: always shaped by the whole run (see the module notes) -----------------
    def _signs(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.where(rand(shape, self.generator, self.x) < 0.5, -1.0, 1.0).to(self.x.dtype)

    def _positions(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        dev, cut = self.x.device, int(self.last_excluded)
        return (randint(0, max(self.h - s + 1 - cut, 1), (self.m,), self.generator, dev),
                randint(0, max(self.w - s + 1 - cut, 1), (self.m,), self.generator, dev))

    def _window(self, r: torch.Tensor, c: torch.Tensor, s: int) -> tuple[torch.Tensor, ...]:
        """Boolean masks (B, 1, H, W) of the windows at (r, c), and the in-window offsets."""
        dr = self.rows[None, :] - r[:, None]
        dc = self.cols[None, :] - c[:, None]
        in_r, in_c = (dr >= 0) & (dr < s), (dc >= 0) & (dc < s)
        mask = (in_r[:, :, None] & in_c[:, None, :])[:, None]
        return mask, dr.clamp(0, s - 1), dc.clamp(0, s - 1)

    # -- the search ---------------------------------------------------------------------------
    def _query(self, x_new: torch.Tensor, act: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        index = self.index if act is None else self.index[act]
        logits = self.view(x_new, index)
        y = self.y if act is None else self.y[act]
        t = None if self.t is None else (self.t if act is None else self.t[act])
        return _loss_and_done(logits, y, t, self.loss)

    def search(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        x_best = self._start()
        loss_best, done, pred = self._query(x_best, None)
        # The examples still searching are kept compacted (act, and their x, x_best, loss, pred,
        # query indices, labels and, for Linf, the two corners lo/hi of each coordinate's
        # interval) and only shrunk on iterations where one of them is fooled. While no example
        # has left (``full``), the per-iteration draws need no indexing.
        act = (~done).nonzero().squeeze(1)
        linf = self.norm == "linf"
        xa, xba, la, pa = self.x[act], x_best[act], loss_best[act], pred[act]
        ia, ya = self.index[act], self.y[act]
        ta = None if self.t is None else self.t[act]
        lo = hi = xa
        if linf:  # x_best + 2 eps * sign projected onto the eps cube is x + eps * sign (fra31 l. 259-266)
            lo, hi = (xa - self.eps).clamp(0.0, 1.0), (xa + self.eps).clamp(0.0, 1.0)
        full = act.numel() == self.m
        its = 0
        sides: dict[float, int] = {}
        # the clean pass and the start used 2 of the budget
        for i in range(self.max_queries - 2):
            if act.numel() == 0:
                break
            p = p_selection(self.p_init, i, self.max_queries)
            if linf:
                s = sides.get(p)
                if s is None:
                    s = sides[p] = self._side(p)
                r, c = self._positions(s)
                up = rand((self.m, self.c), self.generator, self.x) >= 0.5  # the sign is +1
                if not full:
                    r, c, up = r[act], c[act], up[act]
                rows, cols = self._in_window(s)
                mask = rows[r][:, None, :, None] & cols[c][:, None, None, :]
                x_new = torch.where(mask, torch.where(up[:, :, None, None], hi, lo), xba)
            else:
                x_new = self._candidate(xa, xba, act, self._candidate_draws(p))
            logits = self.view(x_new, ia)
            value, fooled, pred_new = _loss_and_done(logits, ya, ta, self.loss)
            better = (value < la) | fooled
            xba = torch.where(better[:, None, None, None], x_new, xba)
            la = torch.where(better, value, la)
            pa = torch.where(better, pred_new, pa)
            its = i + 1
            if bool(fooled.any()):
                x_best[act], loss_best[act], pred[act], done[act] = xba, la, pa, fooled
                keep = ~fooled
                act, xa, xba, la, pa = act[keep], xa[keep], xba[keep], la[keep], pa[keep]
                ia, ya, lo, hi = ia[keep], ya[keep], lo[keep], hi[keep]
                ta = None if ta is None else ta[keep]
                full = False
        x_best[act], loss_best[act], pred[act] = xba, la, pa
        return x_best, loss_best, pred, done, its

    def _in_window(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables ``rows[r, i] = r <= i < r + s`` (H, H) and ``cols[c, j]`` (W, W) for side ``s``."""
        if s not in self._window_tables:
            def table(k: torch.Tensor) -> torch.Tensor:
                d = k[None, :] - k[:, None]
                return (d >= 0) & (d < s)
            self._window_tables[s] = (table(self.rows), table(self.cols))
        return self._window_tables[s]

    # -- starting points -----------------------------------------------------------------------
    def _start(self) -> torch.Tensor:
        if self.norm == "linf":
            stripes = self._signs((self.m, self.c, 1, self.w))  # one sign per channel and column
            return (self.x + self.eps * stripes).clamp(0.0, 1.0)
        delta = self._l2_tiles()
        norms = delta.reshape(self.m, -1).norm(dim=1).clamp_min(_TINY)
        return (self.x + self.eps * delta / norms[:, None, None, None]).clamp(0.0, 1.0)

    def _l2_tiles(self) -> torch.Tensor:
        """The paper's L2 start: a grid of ``eta`` windows with random signs (fra31 l. 306-318)."""
        h, w = self.h, self.w
        s = max(min(h, w) // SQUARE_L2_INIT_TILES, 1)
        starts_h = [max((h - SQUARE_L2_INIT_TILES * s) // 2, 0) + k * s for k in range(h // s)]
        starts_w = [max((w - SQUARE_L2_INIT_TILES * s) // 2, 0) + k * s for k in range(w // s)]
        tiles = [(r, c) for r in starts_h for c in starts_w if r < h and c < w]
        signs = self._signs((self.m, self.c, len(tiles)))
        flips = rand((self.m, len(tiles)), self.generator, self.x) < 0.5
        eta = self._eta(s)
        delta = torch.zeros_like(self.x)
        for k, (r, c) in enumerate(tiles):
            hh, ww = min(s, h - r), min(s, w - c)
            pattern = torch.where(flips[:, k, None, None], eta.T, eta)[:, None, :hh, :ww]
            delta[:, :, r:r + hh, c:c + ww] += pattern * signs[:, :, k, None, None]
        return delta

    # -- candidates ----------------------------------------------------------------------------
    def _side(self, p: float) -> int:
        s = round(math.sqrt(p * self.h * self.w))
        if self.norm == "linf":
            s = max(s, 1)
        else:
            s = max(s, SQUARE_L2_MIN_WINDOW)
            s += 1 - s % 2  # odd, so the pattern has a centre
        return min(s, self.h, self.w)

    def _candidate_draws(self, p: float) -> tuple[Any, ...]:
        s = self._side(p)
        if self.norm == "linf":
            r, c = self._positions(s)
            return s, r, c, self._signs((self.m, self.c))
        r1, c1 = self._positions(s)
        r2, c2 = self._positions(s)
        flips = rand((self.m,), self.generator, self.x) < 0.5
        return s, r1, c1, r2, c2, flips, self._signs((self.m, self.c))

    def _candidate(self, x: torch.Tensor, x_best: torch.Tensor, act: torch.Tensor,
                   draws: tuple[Any, ...]) -> torch.Tensor:
        if self.norm == "linf":
            s, r, c, signs = draws
            mask, _, _ = self._window(r[act], c[act], s)
            # x_best + 2 eps * sign projected onto the eps cube is x + eps * sign (fra31 l. 259-266)
            corner = (x + self.eps * signs[act][:, :, None, None]).clamp(0.0, 1.0)
            return torch.where(mask, corner, x_best)
        return self._l2_candidate(x, x_best, act, draws)

    def _l2_candidate(self, x: torch.Tensor, x_best: torch.Tensor, act: torch.Tensor,
                      draws: tuple[Any, ...]) -> torch.Tensor:
        """Alg. 3: refill windows W1 u W2 with ``eta`` + the old W1 content, rescaled (fra31 l. 339-379).

        Per example and channel: ``new = eta * sign + d_W1 / ||d_W1||``, rescaled to
        ``sqrt(max(eps^2 - ||d||^2, 0) / C + ||d_{W1 u W2}||^2)``; ``d`` is zeroed on ``W2`` and
        set to ``new`` on ``W1``; the result is scaled to norm ``eps`` and clipped to the box.
        Window sums are masked sums, and ``||new||`` is expanded analytically (``||eta|| = 1``), so each full-size tensor is touched a few times.
        """
        s, r1, c1, r2, c2, flips, signs = draws
        b, ch, hw = x.shape[0], self.c, self.h * self.w
        delta = x_best - x
        m1, dr, dc = self._window(r1[act], c1[act], s)
        m2, _, _ = self._window(r2[act], c2[act], s)
        union = m1 | m2
        eta = self._eta(s)
        both = torch.stack((eta, eta.T)).reshape(-1)  # orientation chosen per example
        at = (flips[act].long() * (s * s))[:, None, None] + dr[:, :, None] * s + dc[:, None, :]
        pattern = (both.take(at)[:, None] * m1).reshape(b, 1, hw)  # eta placed on W1, (B, 1, HW)
        dv = delta.reshape(b, ch, hw)
        sq = dv.square()
        n1_sq = (sq * m1.reshape(b, 1, hw)).sum(dim=2)  # ||d_W1||^2, (B, C)
        nu_sq = (sq * union.reshape(b, 1, hw)).sum(dim=2)  # ||d_{W1 u W2}||^2
        img_sq = sq.sum(dim=(1, 2))
        cross = (dv * pattern).sum(dim=2)  # <eta, d_W1>
        sign = signs[act]
        inv1 = 1.0 / (_TINY + n1_sq.sqrt())
        new_sq = 1.0 + n1_sq * inv1.square() + 2.0 * sign * cross * inv1  # ||eta sign + d_W1/||d_W1||||^2
        budget = ((self.eps ** 2 - img_sq).clamp_min(0.0)[:, None] / ch + nu_sq).sqrt()
        scale = budget / (_TINY + new_sq.clamp_min(0.0).sqrt())  # (B, C)
        keep = (~union).reshape(b, 1, hw).to(x.dtype) + m1.reshape(b, 1, hw) * (inv1 * scale)[:, :, None]
        out = dv * keep + pattern * (sign * scale)[:, :, None]
        total = out.square().sum(dim=(1, 2)).sqrt()
        out = out * (self.eps / (total + _TINY))[:, None, None]
        return (x + out.reshape(x.shape)).clamp(0.0, 1.0)

    def _eta(self, s: int) -> torch.Tensor:
        if s not in self._eta_cache:
            self._eta_cache[s] = _eta(s, self.x)
        return self._eta_cache[s]


def _concentric(a: int, b: int, like: torch.Tensor) -> torch.Tensor:
    """``a x b`` block of concentric squares around ``(a // 2, b // 2)`` weighted ``1 / (k+1)^2``.

    Entry ``(i, j)`` is ``sum_{k = m}^{K - 1} 1 / (k + 1)^2`` with ``m = max(|i - a//2|,
    |j - b//2|)`` and ``K = max(a // 2, b // 2) + 1`` (the paper's Sec. 3.2 ``M(r, s)``), then the
    block is scaled to unit L2 norm.
    """
    if a == 0:
        return like.new_zeros((0, b))
    k_max = max(a // 2, b // 2) + 1
    weights = 1.0 / torch.arange(1, k_max + 1, dtype=like.dtype, device=like.device).square()
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[m] = sum_{k >= m} w_k
    i = (torch.arange(a, device=like.device) - a // 2).abs()
    j = (torch.arange(b, device=like.device) - b // 2).abs()
    block = tail[torch.maximum(i[:, None], j[None, :])]
    return block / block.square().sum().sqrt()


def _eta(s: int, like: torch.Tensor) -> torch.Tensor:
    """The paper's L2 window pattern (Sec. 3.2): top half ``+M``, bottom half ``-M``, unit norm."""
    top = _concentric(s // 2, s, like)
    bottom = -_concentric(s - s // 2, s, like)
    eta = torch.cat((top, bottom), dim=0)
    return eta / eta.square().sum().sqrt()
