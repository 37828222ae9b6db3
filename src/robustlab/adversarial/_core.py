"""What every attack shares: the result type, input checks, the model view, norms and projections.

Threat model and input contract (DESIGN.md): inputs are float tensors with a batch dimension and
values in ``[0, 1]`` (images ``(N, C, H, W)`` or tabular ``(N, D)`` scaled to the unit box); a
perturbed input ``x_adv`` must satisfy ``||x_adv - x||_p <= eps`` (for eps-bounded attacks) and
``0 <= x_adv <= 1``. ``norm`` is one of ``"linf"``, ``"l2"``, ``"l1"``; norms are taken per example
over all non-batch dimensions.

Every attack is a function ``attack(model, inputs, labels, *, ..., targets=None, generator=...)``
returning an :class:`AttackResult`; a thin class (:class:`Attack`) stores the settings and calls it.
The model is any ``nn.Module`` returning logits (white-box attacks differentiate through it with
its parameters frozen and in eval mode, restored afterwards) or, for black-box attacks, any callable
returning scores or labels.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from robustlab._checks import (
    check_choice,
    check_generator,
    check_inputs,
    check_labels,
    check_logits,
    check_number,
    fail,
)
from robustlab._constants import ATTACK_PROBABILITY_ATOL, IMAGE_RANGE_ATOL
from robustlab._model_state import frozen_params
from robustlab._registry import Registry
from robustlab.errors import InvalidParameterError, InvalidTypeError

__all__ = [
    "NORMS",
    "AttackResult",
    "Attack",
    "ATTACKS",
    "BUILTIN_ATTACK_MODULES",
    "ModelView",
    "model_view",
    "check_attack_args",
    "check_eps",
    "check_norm",
    "check_target_ranks",
    "check_targets",
    "check_unit_box",
    "perturbation_norms",
    "project",
    "project_l1",
    "normalize_direction",
    "random_in_ball",
    "rand",
    "randn",
    "randint",
    "ce_loss",
    "dlr_loss",
    "margin",
    "input_gradient",
    "finalize",
    "flat",
]

#: The norms every eps-bounded attack offers (an attack may offer fewer; it says so).
NORMS: tuple[str, ...] = ("linf", "l2", "l1")

#: Modules that register the built-in attacks, imported on the first read of :data:`ATTACKS`.
#: A new attack family appends its module here.
BUILTIN_ATTACK_MODULES: tuple[str, ...] = (
    "robustlab.adversarial.gradient",
    "robustlab.adversarial.apgd",
    "robustlab.adversarial.fab",
    "robustlab.adversarial.minimum_norm",
    "robustlab.adversarial.optimization",
    "robustlab.adversarial.square",
    "robustlab.adversarial.decision",
    "robustlab.adversarial.universal",
)

#: name -> :class:`Attack` subclass; ``robustlab attack`` and the evaluation suites look names up here.
ATTACKS: Registry[type[Attack]] = Registry("attack", builtin_modules=lambda: BUILTIN_ATTACK_MODULES)


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class AttackResult:
    """What an attack returns.

    Attributes
    ----------
    adv_inputs : Tensor, same shape/dtype/device as the inputs
        The perturbed inputs. Where the attack failed this is its best (highest-loss or last)
        point, never outside the threat model.
    success : bool Tensor (N,)
        Computed from one forward pass on ``adv_inputs``: the prediction differs from the label
        (untargeted) or equals the target (targeted). Examples the model already misclassifies
        count as successes with a zero perturbation where the attack keeps them unchanged.
    norms : float Tensor (N,)
        ``||adv_inputs - inputs||`` in the attack's ``norm``, per example.
    queries : int64 Tensor (N,)
        Model evaluations (forward passes) spent on each example; a gradient step counts one.
    num_iterations : int
        Iterations the attack ran (the largest over examples and restarts).
    norm : str
        ``"linf"``, ``"l2"`` or ``"l1"``: the norm ``norms`` is measured in.
    eps : float or None
        The radius for eps-bounded attacks, ``None`` for minimum-norm attacks.
    targets : int64 Tensor (N,) or None
        Target classes of a targeted attack.
    """

    adv_inputs: torch.Tensor
    success: torch.Tensor
    norms: torch.Tensor
    queries: torch.Tensor
    num_iterations: int
    norm: str
    eps: float | None = None
    targets: torch.Tensor | None = None

    @property
    def success_rate(self) -> float:
        """Fraction of examples the attack succeeded on."""
        return float(self.success.float().mean()) if self.success.numel() else float("nan")

    @property
    def robust(self) -> torch.Tensor:
        """``~success``: the examples the attack could not break."""
        return ~self.success


# --------------------------------------------------------------------------- thin classes
class Attack:
    """Thin wrapper: ``__init__`` stores settings, ``__call__`` runs :attr:`function` with them.

    Subclasses set ``function`` (the functional attack) and ``name`` (its registry name)::

        @ATTACKS.register("pgd")
        class PGD(Attack):
            function = staticmethod(pgd)

    Settings are validated when the attack runs, by the function itself.
    """

    function: ClassVar[Callable[..., AttackResult]]
    name: ClassVar[str] = ""

    def __init__(self, **settings: Any) -> None:
        self.settings = dict(settings)

    def __call__(self, model: Any, inputs: torch.Tensor, labels: torch.Tensor, *,
                 targets: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        kwargs = dict(self.settings)
        if targets is not None:
            kwargs["targets"] = targets
        return type(self).function(model, inputs, labels, generator=generator, **kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{type(self).__name__}({args})"


# --------------------------------------------------------------------------- validation
def check_norm(norm: Any, *, allowed: tuple[str, ...] = NORMS) -> str:
    """``norm`` is one of ``allowed`` (an attack passes the subset it offers)."""
    return check_choice("norm", norm, allowed)


def check_eps(eps: Any, *, name: str = "eps", allow_zero: bool = True) -> float:
    """``eps`` is a finite non-negative real (fractions such as ``8/255`` are plain floats)."""
    value = check_number(name, eps, low=0.0, low_inclusive=allow_zero)
    return value


def check_unit_box(name: str, x: torch.Tensor) -> torch.Tensor:
    """Inputs of an attack lie in ``[0, 1]`` (the box every attack keeps)."""
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < -IMAGE_RANGE_ATOL or hi > 1 + IMAGE_RANGE_ATOL:
            raise InvalidParameterError(
                f"The '{name}' parameter must hold values in [0, 1] (attacks perturb unnormalised "
                f"inputs; normalisation is a layer inside the model). Got values in "
                f"[{lo:.4g}, {hi:.4g}] instead."
            )
    return x


def check_targets(targets: Any, labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Targets of a targeted attack: int64 ``(N,)``, never equal to the label."""
    targets = check_labels("targets", targets, num_classes=num_classes, n=labels.shape[0])
    targets = targets.to(labels.device)
    same = targets == labels
    if bool(same.any()):
        i = int(same.nonzero()[0, 0])
        fail("targets", "different from 'labels' for every example (a targeted attack needs a "
             "class other than the true one)", f"target == label == {int(labels[i])} at index {i}",
             describe_got=False)
    return targets


def check_target_ranks(ranks: Any, num_classes: int) -> tuple[int, ...]:
    """Target ranks of APGD-T / FAB-T: distinct ints in ``[1, num_classes - 1]`` (rank ``r`` = the
    ``r``-th highest-scoring class other than the top one of the clean logits), at least one."""
    expected = f"a non-empty sequence of distinct integers in [1, {num_classes - 1}] (ranks of wrong classes)"
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Sequence) or not ranks:
        fail("target_ranks", expected, ranks, error=InvalidTypeError)
    if any(isinstance(r, bool) or not isinstance(r, numbers.Integral) for r in ranks):
        fail("target_ranks", expected, ranks, error=InvalidTypeError)
    out = tuple(int(r) for r in ranks)
    if len(set(out)) != len(out) or not all(1 <= r <= num_classes - 1 for r in out):
        fail("target_ranks", expected, list(out))
    return out


def check_attack_args(
    inputs: Any,
    labels: Any,
    *,
    targets: Any = None,
    generator: Any = None,
    needs_generator: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate the arguments every attack takes; return ``(inputs, labels, targets)``.

    ``inputs`` keeps its dtype and device (non-contiguous inputs are fine; the attack never writes
    into them); ``labels``/``targets`` become int64 on the inputs' device.
    """
    inputs = check_inputs("inputs", inputs)
    check_unit_box("inputs", inputs)
    labels = check_labels("labels", labels, n=inputs.shape[0]).to(inputs.device)
    if targets is not None:
        targets = check_targets(targets, labels)
    if needs_generator or generator is not None:
        check_generator("generator", generator)
    return inputs, labels, targets


# --------------------------------------------------------------------------- model view
class ModelView:
    """Calls the model for an attack: validates outputs, counts queries, warns on probabilities.

    Use through :func:`model_view`. ``view(x)`` returns logits ``(B, K)``; ``view(x, index)`` also
    adds one query to each example in ``index`` (a LongTensor into the attacked batch, or ``None``
    for "every example", in which case ``x`` must hold the whole batch).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], n: int, device: torch.device,
                 *, differentiable: bool) -> None:
        self.model = model
        self.differentiable = differentiable
        self.queries = torch.zeros(n, dtype=torch.int64, device=device)
        self.num_classes: int | None = None
        self._checked = False

    def __call__(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(x)
        if not self._checked:
            self._check_first_output(out, x)
        elif out.shape != (x.shape[0], self.num_classes):
            check_logits("model output", out, n=x.shape[0], num_classes=self.num_classes)
        if index is None:
            self.queries += 1
        else:
            self.queries.index_add_(0, index, torch.ones_like(index))
        return out

    def _check_first_output(self, out: Any, x: torch.Tensor) -> None:
        out = check_logits("model output", out, n=x.shape[0])
        self.num_classes = int(out.shape[1])
        self._checked = True
        if out.numel() and out.is_floating_point():
            with torch.no_grad():
                looks_like_probs = bool((out >= 0).all()) and float(
                    (out.sum(dim=1) - 1).abs().max()) <= ATTACK_PROBABILITY_ATOL
            if looks_like_probs:
                warnings.warn(
                    "The model's outputs are non-negative and sum to 1 per row: it seems to return "
                    "probabilities, not logits. Gradients through a softmax saturate (a gradient-"
                    "masking risk); pass a model that returns logits for a reliable evaluation.",
                    UserWarning, stacklevel=4,
                )


@contextmanager
def model_view(model: Any, inputs: torch.Tensor, *, differentiable: bool = True) -> Iterator[ModelView]:
    """Yield a :class:`ModelView` of ``model`` for attacking ``inputs``.

    An ``nn.Module`` is put in eval mode with ``requires_grad=False`` on its parameters for the
    block (gradients flow to the inputs only) and its caller's state is restored afterwards. Any
    other callable is used as it is; ``differentiable=False`` (black-box attacks) runs it under
    ``torch.no_grad()``.
    """
    if not callable(model):
        fail("model", "a torch.nn.Module returning logits, or a callable returning scores", model,
             error=InvalidTypeError)
    ctx = frozen_params(model) if isinstance(model, torch.nn.Module) else nullcontext(model)
    grad_ctx = nullcontext() if differentiable else torch.no_grad()
    with ctx, grad_ctx:
        yield ModelView(model, inputs.shape[0], inputs.device, differentiable=differentiable)


# --------------------------------------------------------------------------- norms & projections
def flat(x: torch.Tensor) -> torch.Tensor:
    """``(N, ...) -> (N, D)`` view (or copy for non-contiguous inputs)."""
    return x.reshape(x.shape[0], -1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def perturbation_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of ``delta`` over all non-batch dimensions, shape ``(N,)``."""
    d = flat(delta)
    if norm == "linf":
        return d.abs().amax(dim=1) if d.shape[1] else d.new_zeros(d.shape[0])
    if norm == "l2":
        return d.norm(p=2, dim=1)
    if norm == "l1":
        return d.abs().sum(dim=1)
    check_norm(norm)
    raise AssertionError("unreachable")


def project_l1(delta: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    """Euclidean projection of each example's ``delta`` onto the L1 ball of radius ``eps``.

    Sort-based algorithm of Duchi et al., "Efficient Projections onto the l1-Ball for Learning in
    High Dimensions" (ICML 2008), Fig. 1: find the threshold ``theta`` with
    ``sum(max(|v| - theta, 0)) = eps`` and soft-threshold. Examples already inside are unchanged.
    """
    d = flat(delta)
    n = d.shape[0]
    eps_t = torch.as_tensor(eps, dtype=d.dtype, device=d.device).expand(n)
    a = d.abs()
    inside = a.sum(dim=1) <= eps_t
    if bool(inside.all()):
        return delta
    mu = a.sort(dim=1, descending=True).values
    cums = mu.cumsum(dim=1) - eps_t[:, None]
    ks = torch.arange(1, d.shape[1] + 1, device=d.device, dtype=d.dtype)
    cond = mu - cums / ks > 0
    rho = (cond * ks).argmax(dim=1)  # last index where cond holds (cond[:, 0] always does)
    theta = cums.gather(1, rho[:, None]).squeeze(1) / (rho + 1).to(d.dtype)
    theta = theta.clamp_min(0)
    out = d.sign() * (a - theta[:, None]).clamp_min(0)
    out = torch.where(inside[:, None], d, out)
    return out.reshape(delta.shape)


def project(delta: torch.Tensor, norm: str, eps: torch.Tensor | float) -> torch.Tensor:
    """Project each example's perturbation onto the ``norm`` ball of radius ``eps``.

    ``eps`` is a float or a per-example tensor ``(N,)``. The box ``[0, 1]`` is not applied here:
    clamp ``x + delta`` afterwards (clamping after projecting keeps the point in the ball for every
    norm: with ``x`` in the box, clamping never increases any coordinate's ``|delta_i|``).
    """
    if norm == "linf":
        e = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device)
        if e.ndim:
            e = _bcast(e, delta)
        return torch.maximum(torch.minimum(delta, e), -e)
    if norm == "l2":
        e = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device).expand(delta.shape[0])
        norms = flat(delta).norm(p=2, dim=1)
        factor = torch.where(norms > e, e / norms.clamp_min(torch.finfo(delta.dtype).tiny),
                             torch.ones_like(norms))
        return delta * _bcast(factor, delta)
    if norm == "l1":
        return project_l1(delta, eps)
    check_norm(norm)
    raise AssertionError("unreachable")


def normalize_direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit ``norm`` for gradient ``g``.

    Linf: ``sign(g)``; L2: ``g / ||g||_2``; L1: the single largest-|g| coordinate per example
    (its sign). Zero gradients give a zero direction.
    """
    if norm == "linf":
        return g.sign()
    if norm == "l2":
        n = flat(g).norm(p=2, dim=1).clamp_min(torch.finfo(g.dtype).tiny)
        return g / _bcast(n, g)
    if norm == "l1":
        f = flat(g)
        idx = f.abs().argmax(dim=1, keepdim=True)
        out = torch.zeros_like(f).scatter_(1, idx, f.gather(1, idx).sign())
        return out.reshape(g.shape)
    check_norm(norm)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- randomness
# Draws come from the caller's generator on the generator's device, then move to the inputs'
# device/dtype, so the same seed gives the same perturbation on CPU and GPU inputs.
def rand(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Uniform ``[0, 1)`` draws shaped ``shape`` on ``like``'s device and dtype."""
    out = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return out.to(device=like.device, dtype=like.dtype)


def randn(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws shaped ``shape`` on ``like``'s device and dtype."""
    out = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return out.to(device=like.device, dtype=like.dtype)


def randint(low: int, high: int, shape: tuple[int, ...], generator: torch.Generator,
            device: torch.device) -> torch.Tensor:
    """Integer draws in ``[low, high)`` on ``device``."""
    out = torch.randint(low, high, shape, generator=generator, device=generator.device)
    return out.to(device)


def random_in_ball(x: torch.Tensor, norm: str, eps: torch.Tensor | float,
                   generator: torch.Generator) -> torch.Tensor:
    """A random start ``delta`` inside the ``norm`` ball (not clamped to the box).

    Linf: uniform in the cube (Madry et al. 2018). L2: uniform direction, radius ``eps * u^(1/D)``
    (uniform in the ball). L1: a Laplace direction scaled to radius ``eps * u^(1/D)``.
    """
    n = x.shape[0]
    e = _bcast(torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(n), x)
    if norm == "linf":
        return (2 * rand(tuple(x.shape), generator, x) - 1) * e
    d = flat(x).shape[1]
    if norm == "l2":
        v = randn(tuple(x.shape), generator, x)
    elif norm == "l1":
        u = rand(tuple(x.shape), generator, x).clamp_min(torch.finfo(x.dtype).tiny)
        v = -u.log() * (2 * (rand(tuple(x.shape), generator, x) < 0.5).to(x.dtype) - 1)
    else:
        check_norm(norm)
        raise AssertionError("unreachable")
    v = v / _bcast(perturbation_norms(v, norm).clamp_min(torch.finfo(x.dtype).tiny), x)
    r = rand((n,), generator, x) ** (1.0 / max(d, 1))
    return v * _bcast(r, x) * e


# --------------------------------------------------------------------------- losses
def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy ``(N,)``."""
    return torch.nn.functional.cross_entropy(logits, labels, reduction="none")


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per example: negative iff misclassified."""
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return z_y - other


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020, Eq. 6 untargeted, Eq. 7 targeted), ``(N,)``.

    Untargeted: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``; targeted:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, ``pi`` sorting logits in decreasing order.
    Both are to be maximised. Needs ``K >= 3`` (untargeted) / ``K >= 4`` (targeted); for fewer
    classes the denominator falls back to ``z_pi1 - z_piK``.
    """
    srt = logits.sort(dim=1, descending=True).values
    k = logits.shape[1]
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    tiny = 1e-12
    if targets is None:
        other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
        denom = srt[:, 0] - srt[:, min(2, k - 1)]
        return -(z_y - other) / (denom + tiny)
    z_t = logits.gather(1, targets[:, None]).squeeze(1)
    denom = srt[:, 0] - 0.5 * (srt[:, min(2, k - 1)] + srt[:, min(3, k - 1)])
    return -(z_y - z_t) / (denom + tiny)


def input_gradient(
    view: ModelView,
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    index: torch.Tensor | None = None,
    eot_iter: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of ``loss_fn(logits).sum()`` w.r.t. ``x``, averaged over ``eot_iter`` passes.

    Expectation over Transformation (Athalye et al., "Synthesizing Robust Adversarial Examples",
    ICML 2018): for a randomised model the gradient of the expected loss is estimated by averaging
    gradients over ``eot_iter`` forward passes. Returns ``(grad, loss_per_example, logits)`` where
    loss and logits are those of the last pass (averaged loss over passes for ``eot_iter > 1``).
    """
    grad = torch.zeros_like(x)
    loss_sum = None
    logits = None
    for _ in range(eot_iter):
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = view(xg, index)
            loss = loss_fn(logits)
            g, = torch.autograd.grad(loss.sum(), xg)
        grad += g
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    assert logits is not None and loss_sum is not None
    if eot_iter > 1:
        grad /= eot_iter
        loss_sum = loss_sum / eot_iter
    return grad, loss_sum, logits.detach()


# --------------------------------------------------------------------------- finishing
def finalize(
    view: ModelView,
    inputs: torch.Tensor,
    adv_inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str,
    eps: float | None,
    targets: torch.Tensor | None,
    num_iterations: int,
    predictions: torch.Tensor | None = None,
) -> AttackResult:
    """Build the :class:`AttackResult`; ``success`` comes from one forward pass on ``adv_inputs``.

    Pass ``predictions`` only when they were computed on exactly ``adv_inputs`` (saves a pass).
    """
    adv = adv_inputs.detach()
    if predictions is None:
        with torch.no_grad():
            predictions = view(adv).argmax(dim=1)
    success = predictions == targets if targets is not None else predictions != labels
    norms = perturbation_norms(adv - inputs, norm)
    return AttackResult(
        adv_inputs=adv, success=success, norms=norms, queries=view.queries.clone(),
        num_iterations=int(num_iterations), norm=norm, eps=eps, targets=targets,
    )
