"""Optimisation-based minimum-distortion attacks: Carlini & Wagner L2 and EAD (elastic net).

Both solve ``min_delta  D(delta) + c * f(x + delta)`` with ``x + delta`` in the box ``[0, 1]``
and ``f`` the margin objective of Carlini & Wagner (their ``f_6``), for a per-example constant
``c`` found by binary search: a success at ``c`` halves the interval ``[lower, upper]``; a failure
raises the lower bound and, while no success has been seen, multiplies ``c`` by 10. Each
binary-search step restarts the optimisation from the clean input, and the attack keeps, per
example, the successful point with the smallest distance seen over all steps.

Threat model: minimum-norm. With ``eps=None`` (default) ``AttackResult.eps`` is ``None`` and
``norms`` reports the distortion found (``"l2"`` for C&W, ``"l1"`` for EAD). With an ``eps``, a
point counts only if its distortion is at most ``eps``: larger ones are replaced by the clean input
(as FAB and AutoAttack do), so the result respects the ball and ``success`` means "broken within
eps". Examples the attack could not break are returned unchanged (zero perturbation, ``success``
False); examples the model already misclassifies (untargeted) or already predicts as the target (targeted) are left unchanged.
Both attacks are deterministic: ``generator`` is accepted for the common signature and unused.

References
----------
.. [1] N. Carlini, D. Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
   Sec. V-A. Reference code: carlini/nn_robust_attacks ``l2_attack.py``.
.. [2] P.-Y. Chen, Y. Sharma, H. Zhang, J. Yi, C.-J. Hsieh, "EAD: Elastic-Net Attacks to Deep
   Neural Networks via Adversarial Examples", AAAI 2018, Alg. 1 and Eq. 9. Reference code:
   IBM/EAD-Attack ``en_attack.py``; ART ``art/attacks/evasion/elastic_net.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from robustlab._checks import check_bool, check_choice, check_int, check_number
from robustlab._constants import (
    CW_ADAM_BETAS,
    CW_ADAM_EPS,
    CW_TANH_SCALE,
    EAD_BETA,
    EAD_LR_DECAY_POWER,
    OPT_ABORT_FRACTION,
    OPT_BINARY_SEARCH_STEPS,
    OPT_C_GROWTH,
    OPT_C_INIT,
    OPT_C_UPPER,
    OPT_C_UPPER_FOUND,
    OPT_LEARNING_RATE,
    OPT_NUM_STEPS,
)
from robustlab.adversarial._core import (
    ATTACKS,
    Attack,
    AttackResult,
    ModelView,
    check_attack_args,
    check_eps,
    finalize,
    flat,
    input_gradient,
    margin,
    model_view,
    perturbation_norms,
)

__all__ = ["CWL2", "EAD", "EAD_DECISION_RULES", "cw_l2", "ead"]

#: EAD's rules for picking the best successful point: elastic-net distance or L1 distance.
EAD_DECISION_RULES: tuple[str, ...] = ("en", "l1")


# --------------------------------------------------------------------------- shared pieces
def _f6(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
        confidence: float) -> torch.Tensor:
    """Carlini & Wagner's ``f_6`` per example (the objective of their L2 attack), to be minimised.

    Targeted: ``max(max_{i != t} Z_i - Z_t, -kappa)``; untargeted: ``max(Z_y - max_{i != y} Z_i,
    -kappa)``. (The reference code writes ``max(0, . + kappa)``, the same up to a constant.)
    """
    m = margin(logits, labels) if targets is None else -margin(logits, targets)
    return m.clamp_min(-confidence)


def _is_adversarial(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
                    confidence: float) -> torch.Tensor:
    """``compare`` of l2_attack.py: adversarial with a margin of at least ``confidence``.

    Untargeted: the argmax after adding ``kappa`` to ``Z_y`` is not ``y``; targeted: the argmax
    after subtracting ``kappa`` from ``Z_t`` is ``t``. With ``kappa = 0`` this is the argmax rule
    :func:`finalize` applies.
    """
    z = logits.detach().clone()
    if targets is None:
        z[torch.arange(z.shape[0], device=z.device), labels] += confidence
        return z.argmax(dim=1) != labels
    z[torch.arange(z.shape[0], device=z.device), targets] -= confidence
    return z.argmax(dim=1) == targets


@dataclass
class _BinarySearch:
    """Per-example binary search over ``c`` (l2_attack.py ``attack_batch``, "adjust the constant")."""

    c: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor

    @classmethod
    def start(cls, c_init: float, like: torch.Tensor) -> _BinarySearch:
        n = like.shape[0]
        return cls(c=torch.full((n,), c_init, dtype=like.dtype, device=like.device),
                   lower=torch.zeros(n, dtype=like.dtype, device=like.device),
                   upper=torch.full((n,), OPT_C_UPPER, dtype=like.dtype, device=like.device))

    def update(self, succeeded: torch.Tensor) -> None:
        self.upper = torch.where(succeeded, torch.minimum(self.upper, self.c), self.upper)
        self.lower = torch.where(succeeded, self.lower, torch.maximum(self.lower, self.c))
        found = self.upper < OPT_C_UPPER_FOUND
        middle = (self.lower + self.upper) / 2
        grown = torch.where(succeeded, self.c, self.c * OPT_C_GROWTH)
        self.c = torch.where(found, middle, grown)


class _Best:
    """The smallest-distance successful point per example, over all binary-search steps."""

    def __init__(self, x: torch.Tensor) -> None:
        self.adv = x.clone()
        self.dist = torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)

    def offer(self, adv: torch.Tensor, dist: torch.Tensor, is_adv: torch.Tensor) -> None:
        better = is_adv & (dist < self.dist)
        self.dist = torch.where(better, dist, self.dist)
        # torch.where, not masked assignment: no host sync per step on a GPU
        mask = better.reshape((-1,) + (1,) * (adv.ndim - 1))
        self.adv = torch.where(mask, adv.detach(), self.adv)


def _check_common(confidence: Any, c_init: Any, binary_search_steps: Any, num_steps: Any,
                  learning_rate: Any, abort_early: Any) -> tuple[float, float, int, int, float, bool]:
    return (
        check_number("confidence", confidence, low=0.0),
        check_number("c_init", c_init, low=0.0, low_inclusive=False),
        check_int("binary_search_steps", binary_search_steps, low=1),
        check_int("num_steps", num_steps, low=1),
        check_number("learning_rate", learning_rate, low=0.0, low_inclusive=False),
        check_bool("abort_early", abort_early),
    )


def _run_on_unbroken(model: Any, inputs: torch.Tensor, labels: torch.Tensor,
                     targets: torch.Tensor | None, norm: str, eps: float | None,
                     attack: Any) -> AttackResult:
    """Attack only the examples not already adversarial; finish with :func:`finalize`.

    ``attack(view, x, labels, targets, index) -> (adv, num_iterations)`` runs on the subset
    ``index`` of the batch. With an ``eps``, points farther than ``eps`` are reverted to the input.
    """
    x = inputs.contiguous()
    with model_view(model, x) as view:
        with torch.no_grad():
            pred = view(x).argmax(dim=1)
        done = pred != labels if targets is None else pred == targets
        index = (~done).nonzero().squeeze(1)
        adv = x.clone()
        iterations = 0
        if index.numel():
            sub_t = None if targets is None else targets[index]
            adv_sub, iterations = attack(view, x[index], labels[index], sub_t, index)
            if eps is not None:
                outside = perturbation_norms(adv_sub - x[index], norm) > eps
                adv_sub = torch.where(outside.reshape((-1,) + (1,) * (x.ndim - 1)), x[index], adv_sub)
            adv[index] = adv_sub
        return finalize(view, x, adv, labels, norm=norm, eps=eps, targets=targets,
                        num_iterations=iterations)


class _Adam:
    """Adam (Kingma & Ba 2015, Alg. 1) on one tensor; element-wise, so examples stay independent.

    Written out rather than ``torch.optim.Adam``: that class imports ``torch._dynamo`` on first
    use (seconds), and the update is four lines.
    """

    def __init__(self, w: torch.Tensor, lr: float) -> None:
        self.w, self.lr, self.t = w, lr, 0
        self.m = torch.zeros_like(w)
        self.v = torch.zeros_like(w)

    def step(self, grad: torch.Tensor) -> torch.Tensor:
        b1, b2 = CW_ADAM_BETAS
        self.t += 1
        self.m = b1 * self.m + (1 - b1) * grad
        self.v = b2 * self.v + (1 - b2) * grad * grad
        m_hat = self.m / (1 - b1 ** self.t)
        v_hat = self.v / (1 - b2 ** self.t)
        self.w = self.w - self.lr * m_hat / (v_hat.sqrt() + CW_ADAM_EPS)
        return self.w


def _abort_check(step: int, num_steps: int) -> bool:
    return step % max(num_steps // 10, 1) == 0


# --------------------------------------------------------------------------- C&W L2
def cw_l2(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    confidence: float = 0.0,
    c_init: float = OPT_C_INIT,
    binary_search_steps: int = OPT_BINARY_SEARCH_STEPS,
    num_steps: int = OPT_NUM_STEPS,
    learning_rate: float = OPT_LEARNING_RATE,
    abort_early: bool = True,
    eps: float | None = None,
    targets: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    r"""Carlini & Wagner's L2 attack: the smallest L2 perturbation found by Adam in tanh space.

    Threat model: minimum-norm L2 (no eps), white box, inputs in ``[0, 1]``. For each example
    it minimises (Sec. V-A, Eq. for the L2 attack)

    .. math:: \|\tfrac12(\tanh w + 1) - x\|_2^2 + c\, f_6\!\left(\tfrac12(\tanh w + 1)\right)

    over ``w`` with Adam, where the change of variables keeps ``x + delta`` in the box, and
    ``f_6 = max(max_{i != t} Z_i - Z_t, -kappa)`` (targeted; untargeted
    ``max(Z_y - max_{i != y} Z_i, -kappa)``) on the logits ``Z``. ``c`` is set per example by
    ``binary_search_steps`` steps of binary search starting at ``c_init`` (x10 while never
    successful); each step restarts Adam from ``w0 = atanh((2x - 1) * 0.999999)``.

    Parameters
    ----------
    model : nn.Module
        Returns logits ``(N, K)``; run in eval mode with frozen parameters (restored afterwards).
    inputs : Tensor (N, ...)
        Values in ``[0, 1]``; never written.
    labels : int64 Tensor (N,)
    confidence : float, default 0.0
        ``kappa``: the margin an example must reach to count as a success.
    c_init : float, default 1e-3
        First ``c`` (l2_attack.py ``INITIAL_CONST``).
    binary_search_steps : int, default 9
        l2_attack.py ``BINARY_SEARCH_STEPS``. With 10 or more, the last step re-runs at the
        upper bound of ``c`` (l2_attack.py ``repeat``).
    num_steps : int, default 100
        Adam steps per binary-search step. The reference uses 10000 (``MAX_ITERATIONS``); 100
        keeps a batch at a few seconds on a CPU. Raise it for minimum-norm figures to report.
    learning_rate : float, default 0.01
        Adam's step size (l2_attack.py ``LEARNING_RATE``).
    abort_early : bool, default True
        Every ``num_steps // 10`` steps, end the current binary-search step when the batch loss
        is above 0.9999 times its value at the previous check (l2_attack.py ``ABORT_EARLY``).
    eps : float, optional
        L2 radius. ``None`` (default): minimum-norm result. Given: a point farther than ``eps``
        is replaced by the clean input, so ``success`` means "broken within eps" (not in the
        paper; the convention of FAB in AutoAttack).
    targets : int64 Tensor (N,), optional
        Target classes (targeted attack); success then means "predicted as the target".
    generator : torch.Generator, optional
        Unused (the attack is deterministic); accepted for the common attack signature.

    Returns
    -------
    AttackResult
        ``norm="l2"`` and ``eps`` as given; ``num_iterations`` is the total number of Adam steps
        over all binary-search steps. Unbroken examples are returned unchanged.

    Notes
    -----
    Deviations from l2_attack.py: distances are measured to ``x`` itself, not to the tanh
    reconstruction of ``x`` (they differ by at most 5e-7 per coordinate); the first early-abort
    reference is ``inf`` rather than ``1e6``. As in the reference, coordinates at exactly 0 or 1
    start where ``tanh`` is flat and move very little within a few hundred steps.

    Examples
    --------
    >>> res = cw_l2(model, x, y, num_steps=200)  # doctest: +SKIP
    >>> res.norms[res.success].median()  # doctest: +SKIP
    """
    inputs, labels, targets = check_attack_args(inputs, labels, targets=targets, generator=generator)
    confidence, c_init, bss, num_steps, learning_rate, abort_early = _check_common(
        confidence, c_init, binary_search_steps, num_steps, learning_rate, abort_early)
    eps = None if eps is None else check_eps(eps)

    def attack(view: ModelView, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None,
               index: torch.Tensor) -> tuple[torch.Tensor, int]:
        return _cw_l2_impl(view, x, y, t, index, confidence=confidence, c_init=c_init,
                           binary_search_steps=bss, num_steps=num_steps,
                           learning_rate=learning_rate, abort_early=abort_early)

    return _run_on_unbroken(model, inputs, labels, targets, "l2", eps, attack)


def _cw_l2_impl(view: ModelView, x: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor | None, index: torch.Tensor, *, confidence: float,
                c_init: float, binary_search_steps: int, num_steps: int, learning_rate: float,
                abort_early: bool) -> tuple[torch.Tensor, int]:
    search = _BinarySearch.start(c_init, x)
    best = _Best(x)
    w0 = torch.atanh((2 * x - 1) * CW_TANH_SCALE)
    total_steps = 0
    for outer in range(binary_search_steps):
        if binary_search_steps >= 10 and outer == binary_search_steps - 1:
            search.c = search.upper.clone()
        w = w0.clone()
        adam = _Adam(w, learning_rate)
        succeeded = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        previous = float("inf")
        for step in range(num_steps):
            with torch.enable_grad():
                w_leaf = w.detach().requires_grad_(True)
                adv = (torch.tanh(w_leaf) + 1) / 2
                logits = view(adv, index)
                l2_sq = flat(adv - x).pow(2).sum(dim=1)
                loss = (l2_sq + search.c * _f6(logits, labels, targets, confidence)).sum()
                grad, = torch.autograd.grad(loss, w_leaf)
            w = adam.step(grad)
            total_steps += 1
            # the point recorded is the one the logits were computed on (before this step)
            is_adv = _is_adversarial(logits, labels, targets, confidence)
            succeeded |= is_adv
            best.offer(adv, l2_sq.detach(), is_adv)
            if abort_early and _abort_check(step, num_steps):
                value = float(loss.detach())
                if value > previous * OPT_ABORT_FRACTION:
                    break
                previous = value
        search.update(succeeded)
    return best.adv, total_steps


# --------------------------------------------------------------------------- EAD
def ead(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    beta: float = EAD_BETA,
    decision_rule: str = "en",
    confidence: float = 0.0,
    c_init: float = OPT_C_INIT,
    binary_search_steps: int = OPT_BINARY_SEARCH_STEPS,
    num_steps: int = OPT_NUM_STEPS,
    learning_rate: float = OPT_LEARNING_RATE,
    abort_early: bool = True,
    eps: float | None = None,
    targets: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    r"""EAD: elastic-net attack, solved by FISTA with projected shrinkage-thresholding.

    Threat model: minimum-norm L1 (elastic net; no eps), white box, inputs in ``[0, 1]``.
    For each example it minimises the elastic-net objective

    .. math:: c\, f_6(x') + \beta \|x' - x\|_1 + \|x' - x\|_2^2, \qquad x' \in [0, 1]^p

    with FISTA (Alg. 1): a gradient step on ``g(x') = c f_6(x') + ||x' - x||_2^2`` at the
    momentum point ``y_k`` with step ``alpha_k = learning_rate * (1 - k / num_steps) ** 0.5``,
    then the projected shrinkage-thresholding ``S_beta`` of Eq. 9, coordinate-wise:

    * ``min(z_i - beta, 1)`` if ``z_i - x_i > beta``,
    * ``x_i`` if ``|z_i - x_i| <= beta``,
    * ``max(z_i + beta, 0)`` if ``z_i - x_i < -beta``,

    and ``y_{k+1} = x_{k+1} + k / (k + 3) (x_{k+1} - x_k)``. ``c`` is binary-searched as in
    :func:`cw_l2`. Among successful iterates ``x_k`` the attack keeps the one with the smallest
    elastic-net distance ``beta ||delta||_1 + ||delta||_2^2`` (``decision_rule="en"``) or
    smallest ``||delta||_1`` (``"l1"``).

    Parameters
    ----------
    model, inputs, labels, targets, generator
        As in :func:`cw_l2` (``generator`` unused: the attack is deterministic).
    beta : float, default 1e-3
        L1 weight (en_attack.py ``BETA``). ``beta = 0`` gives an L2 attack solved by projected
        gradient with FISTA momentum; larger ``beta`` gives sparser perturbations.
    decision_rule : {"en", "l1"}, default "en"
        How the best successful point is chosen (the paper's "EN" and "L1" decision rules).
    confidence, c_init, binary_search_steps, learning_rate, abort_early
        As in :func:`cw_l2` (the EAD reference uses the same defaults and the same early abort on
        the elastic-net loss ``c f_6 + ||delta||_2^2 + beta ||delta||_1``).
    num_steps : int, default 100
        FISTA iterations per binary-search step (ART's default ``max_iter``; en_attack.py uses
        10000 with early abort).
    eps : float, optional
        L1 radius; as in :func:`cw_l2` (``None``: minimum-norm result).

    Returns
    -------
    AttackResult
        ``norm="l1"`` and ``eps`` as given; ``num_iterations`` is the total FISTA iterations over all
        binary-search steps. Each iteration costs two model evaluations (the gradient at ``y_k``
        and the check of ``x_{k+1}``).

    Notes
    -----
    As in the paper and both reference implementations the threshold is ``beta`` itself, not
    ``alpha_k * beta`` as a textbook ISTA step on ``beta ||.||_1`` would use. ART zeroes the
    whole gradient (the L2 term's too) of examples whose margin already exceeds ``kappa``; this
    implementation keeps the L2 term, as the paper's objective does.
    """
    inputs, labels, targets = check_attack_args(inputs, labels, targets=targets, generator=generator)
    beta = check_number("beta", beta, low=0.0)
    decision_rule = check_choice("decision_rule", decision_rule, EAD_DECISION_RULES)
    confidence, c_init, bss, num_steps, learning_rate, abort_early = _check_common(
        confidence, c_init, binary_search_steps, num_steps, learning_rate, abort_early)
    eps = None if eps is None else check_eps(eps)

    def attack(view: ModelView, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None,
               index: torch.Tensor) -> tuple[torch.Tensor, int]:
        return _ead_impl(view, x, y, t, index, beta=beta, decision_rule=decision_rule,
                         confidence=confidence, c_init=c_init, binary_search_steps=bss,
                         num_steps=num_steps, learning_rate=learning_rate,
                         abort_early=abort_early)

    return _run_on_unbroken(model, inputs, labels, targets, "l1", eps, attack)


def _shrink(z: torch.Tensor, x: torch.Tensor, beta: float) -> torch.Tensor:
    """Projected shrinkage-thresholding ``S_beta`` (Chen et al. 2018, Eq. 9)."""
    d = z - x
    up = torch.clamp(z - beta, max=1.0)
    down = torch.clamp(z + beta, min=0.0)
    return torch.where(d > beta, up, torch.where(d < -beta, down, x))


def _ead_impl(view: ModelView, x: torch.Tensor, labels: torch.Tensor,
              targets: torch.Tensor | None, index: torch.Tensor, *, beta: float,
              decision_rule: str, confidence: float, c_init: float, binary_search_steps: int,
              num_steps: int, learning_rate: float, abort_early: bool) -> tuple[torch.Tensor, int]:
    search = _BinarySearch.start(c_init, x)
    best = _Best(x)
    total_steps = 0
    for outer in range(binary_search_steps):
        if binary_search_steps >= 10 and outer == binary_search_steps - 1:
            search.c = search.upper.clone()
        c = search.c

        def objective(logits: torch.Tensor, c: torch.Tensor = c) -> torch.Tensor:
            return c * _f6(logits, labels, targets, confidence)

        x_k, y_k = x.clone(), x.clone()
        succeeded = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        previous = float("inf")
        for k in range(num_steps):
            alpha = learning_rate * (1 - k / num_steps) ** EAD_LR_DECAY_POWER
            grad, _, _ = input_gradient(view, y_k, objective, index=index)
            grad = grad + 2 * (y_k - x)
            x_next = _shrink(y_k - alpha * grad, x, beta)
            y_k = x_next + (k / (k + 3)) * (x_next - x_k)
            x_k = x_next
            total_steps += 1
            with torch.no_grad():
                logits = view(x_k, index)
            delta = flat(x_k - x)
            l1 = delta.abs().sum(dim=1)
            l2_sq = delta.pow(2).sum(dim=1)
            is_adv = _is_adversarial(logits, labels, targets, confidence)
            succeeded |= is_adv
            best.offer(x_k, l2_sq + beta * l1 if decision_rule == "en" else l1, is_adv)
            if abort_early and _abort_check(k, num_steps):
                value = float((c * _f6(logits, labels, targets, confidence) + l2_sq + beta * l1).sum())
                if value > previous * OPT_ABORT_FRACTION:
                    break
                previous = value
        search.update(succeeded)
    return best.adv, total_steps


# --------------------------------------------------------------------------- thin classes
@ATTACKS.register("cw-l2")
class CWL2(Attack):
    """Registered ``"cw-l2"``: stores :func:`cw_l2`'s settings and calls it."""

    function = staticmethod(cw_l2)
    name = "cw-l2"


@ATTACKS.register("ead")
class EAD(Attack):
    """Registered ``"ead"``: stores :func:`ead`'s settings and calls it."""

    function = staticmethod(ead)
    name = "ead"
