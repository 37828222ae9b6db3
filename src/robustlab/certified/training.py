r"""Certified training as Trainer objectives: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020).

Registered in :data:`robustlab.training.OBJECTIVES` (``robustlab train --method ibp --eps 0.1``):

=============  =========================================================================
``ibp``        :class:`IBPTraining` — Gowal et al. 2018, "On the effectiveness of interval
               bound propagation for training verifiably robust models"
``crown-ibp``  :class:`CROWNIBPTraining` — Zhang et al. 2020 (ICLR), "Towards stable and
               efficient training of verifiably robust neural networks"
=============  =========================================================================

Both minimise a mixture of the clean cross entropy and the cross entropy of the *worst-case
logits* given by a sound lower bound on the margins ``m_j = z_y - z_j`` (``j != y``) over the
threat model ``{x' : ||x' - x|| <= eps_t} ∩ [0, 1]^d``::

    loss = kappa_t * CE(z(x), y) + (1 - kappa_t) * CE([0, -lb_1, ..., -lb_{K-1}], 0)

The second term is Gowal et al.'s verified loss (Sec. 3: the cross entropy of the worst-case
logits ``\hat z``, with the specification ``C`` of the margins merged into the last layer, their
"elision"): since ``lb_j <= z_y - z_j`` at every point,
the worst case of the softmax cross entropy is at most ``log(1 + sum_j exp(-lb_j))``. The lower
bounds come from :func:`robustlab.certified.bounds.differentiable_bounds` with ``C =``
:func:`~robustlab.certified.bounds.margin_spec` (which merges ``C`` into the last linear layer).
At ``eps_t = 0`` the bound *is* the clean margin, so the robust term equals the clean CE and
the loss is the clean CE whatever ``kappa_t``; the bounds are then not computed at all (as
auto_LiRPA's ``examples/vision/cifar_training.py`` switches to "natural" for ``eps < 1e-50``).

Schedules (per optimizer step ``t``; ``S`` steps per epoch)
-----------------------------------------------------------
- **Warm-up**: ``t < warmup_epochs * S``: ``eps_t = 0`` (plain training; Gowal et al. Sec. 4,
  deepmind/interval-bound-propagation ``examples/train.py`` ``--warmup_steps``).
- **Ramp**: over the next ``ramp_epochs * S`` steps ``eps_t`` grows from 0 to ``eps_train``
  (:func:`eps_schedule`), then stays there. ``"linear"`` is the reference codes'
  ``linear_schedule`` (deepmind ``interval_bound_propagation/src/utils.py``; CROWN-IBP
  ``eps_scheduler.py``) evaluated after the step: ``eps_t = eps_train * clip((t + 1 - t0) /
  (t1 - t0), 0, 1)`` with ``t0 = warmup_epochs * S``, ``t1 = t0 + ramp_epochs * S``.
  ``"smoothed"`` is their ``smooth_schedule`` (auto_LiRPA ``SmoothedScheduler``, the schedule
  Shi et al. 2021 train with), also evaluated after the step: ``alpha * (t + 1 - t0)^p`` up to
  the point ``t0 + mid * (t1 - t0)``, then linear, with ``alpha`` chosen so both pieces meet
  with the same slope (``mid = 0.25``, ``p = 4`` are the reference defaults). The one-step shift
  is a deviation from the references (see :func:`eps_schedule`).
- **kappa and beta** follow the ramp's progress ``r_t = eps_t / eps_train`` in ``[0, 1]``:
  ``kappa_t = kappa_start + (kappa_end - kappa_start) * r_t``, likewise ``beta_t``. This is
  CROWN-IBP's ``train.py`` (``kappa = (max_eps - eps * (1 - final_kappa)) / max_eps``, the
  same for beta) and auto_LiRPA's ``factor = (max_eps - eps) / max_eps``; with the linear
  schedule it is also deepmind's step-linear ``build_loss_schedule`` (nominal weight 1 -> 0.5,
  verified weight 0 -> 0.5, i.e. ``kappa`` 1 -> 0.5).

``warmup_epochs = W, ramp_epochs = R`` is auto_LiRPA's ``--scheduler_opts start=W+1,length=R``
(its epochs count from 1) and CROWN-IBP's ``schedule_start = W, schedule_length = R + 1``.

``eps`` vs ``eps_train``
------------------------
``eps`` is the radius the model is meant to be verified at (the per-epoch verified-error
estimate uses it); ``eps_train`` (default ``eps``) is the radius of the training bound, which
the references often take larger: deepmind ``examples/train.py`` ``--epsilon .3
--epsilon_train .33`` (1.1x), CROWN-IBP ``config/mnist_dm-large_0.4.json`` (train 0.4,
evaluate 0.3), ``mnist_dm-large_0.2.json`` (train 0.2, evaluate 0.1),
``cifar_dm-large_8_255.json`` (train 0.03451 = 1.1 x 8/255).

Requirements on the model
-------------------------
The model must be traceable by the bound propagation of :mod:`robustlab.certified.bounds`
(Linear, Conv2d, ReLU/LeakyReLU, BatchNorm, average pooling, Flatten, Normalize, additions: the
``mlp`` and ``small-cnn`` architectures); :meth:`setup` checks this on one training batch in
training mode and raises one error otherwise (e.g. Dropout in training mode, max pooling).
BatchNorm layers in training mode normalise the bounds with the clean batch's statistics (see
:func:`~robustlab.certified.bounds.differentiable_bounds`), as the IBP and auto_LiRPA
reference code do. Traceable is not the same as trainable: on digits, ``small-cnn``
(BatchNorm, average pooling) stays almost entirely unverified after a short IBP run where
``mlp`` and the reference papers' plain CNNs train well (docs/benchmarks/certified.md); the
IBP initialisation of Shi et al. 2021 is not implemented.

History
-------
Per step (epoch means in ``history[e]["metrics"]``): ``robust_ce`` (the bound's cross entropy
at ``eps_t``) and ``train_verified_err`` (fraction of the batch whose training bound does not
prove every margin positive at ``eps_t``; at ``eps_t = 0`` the clean error). Per epoch
(:meth:`epoch_metrics`): ``eps``, ``kappa`` (and ``beta`` for CROWN-IBP) at the epoch's last
step, and ``ibp_verified_err`` (``crown_ibp_verified_err`` too for CROWN-IBP): the verified
error at ``eps`` of the model in eval mode on the first ``verify_examples`` training examples,
by :func:`robustlab.certified.bounds.verified` — a training-set estimate; use
:func:`verified_accuracy_metric` as the Trainer's ``val_metrics`` for held-out numbers.

Deviations: none in the objectives. The IBP and CROWN-IBP reference code also offer hinge and
softplus verified losses and the "runner-up only" specification; only the cross entropy over all
``K - 1`` margins (their default) is implemented.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from robustlab._checks import check_choice, check_int, check_number, fail
from robustlab._constants import (
    CERT_TRAIN_BETA_END,
    CERT_TRAIN_BETA_START,
    CERT_TRAIN_BETA_TINY,
    CERT_TRAIN_CROWN_IBP_KAPPA_END,
    CERT_TRAIN_CROWN_IBP_KAPPA_START,
    CERT_TRAIN_IBP_KAPPA_END,
    CERT_TRAIN_IBP_KAPPA_START,
    CERT_TRAIN_RAMP_EXPONENT,
    CERT_TRAIN_RAMP_FRACTION,
    CERT_TRAIN_RAMP_MID,
    CERT_TRAIN_SCHEDULES,
    CERT_TRAIN_VERIFY_EXAMPLES,
    CERT_TRAIN_WARMUP_EPOCHS,
    CERTIFIED_NORMS,
)
from robustlab._model_state import preserve_state
from robustlab.data.dataset import Batch, Dataset
from robustlab.errors import RobustlabError
from robustlab.training.objective import OBJECTIVES, BaseObjective, ObjectiveOutput

__all__ = [
    "CROWNIBPTraining",
    "IBPTraining",
    "eps_schedule",
    "ramp_value",
    "robust_cross_entropy",
    "verified_accuracy_metric",
]


# --------------------------------------------------------------------------- schedules
def eps_schedule(step: int, *, eps: float, warmup_steps: int, ramp_steps: int, kind: str = "linear",
                 mid: float = CERT_TRAIN_RAMP_MID, exponent: float = CERT_TRAIN_RAMP_EXPONENT) -> float:
    """Training radius at optimizer step ``step`` (0-based): 0 during warm-up, then a ramp to ``eps``.

    Parameters
    ----------
    step : int >= 0
    eps : float >= 0
        Final radius (``eps_train``).
    warmup_steps : int >= 0
        Steps ``t < warmup_steps`` have radius 0; the ramp's first step is ``t0 = warmup_steps``.
    ramp_steps : int >= 0
        Steps ``t0 .. t1 - 1`` with ``t1 = warmup_steps + ramp_steps`` ramp up, the last one at
        ``eps``; 0 jumps to ``eps`` at ``t0``.
    kind : {"linear", "smoothed"}, default "linear"
    mid : float in [0, 1], default 0.25
        ``"smoothed"``: fraction of the ramp spent on the polynomial part.
    exponent : float >= 2, default 4.0
        ``"smoothed"``: its power.

    Returns
    -------
    float in [0, eps]

    Notes
    -----
    Both shapes are the reference schedules ``f(u)`` evaluated at ``u = t + 1`` (the number of
    steps taken once this one is done), for ``t >= t0``. ``"linear"``:
    ``f(u) = eps * clip((u - t0) / (t1 - t0), 0, 1)`` (deepmind/interval-bound-propagation
    ``interval_bound_propagation/src/utils.py`` ``linear_schedule``). ``"smoothed"``
    (``smooth_schedule`` there; auto_LiRPA ``eps_scheduler.py`` ``SmoothedScheduler``): with
    ``tm = t0 + floor(mid * (t1 - t0))`` and
    ``alpha = eps / ((t1 - tm) * p * (tm - t0)^(p - 1) + (tm - t0)^p)``, ``f(u)`` is
    ``alpha * (u - t0)^p`` for ``t0 < u < tm`` and the line from ``(tm, alpha (tm - t0)^p)`` to
    ``(t1, eps)`` afterwards, so value and slope are continuous at ``tm``.

    Deviation: the references evaluate ``f`` at ``u = t``, so their first ramp step still
    trains at radius 0 and the last step of the ramp's last epoch at ``eps * (1 - 1/(t1 - t0))``
    (full ``eps`` only from the next epoch). Here the ``t1 - t0`` steps of the ramp epochs run
    at ``eps / (t1 - t0), ..., eps``, so a ramp ending with the run's last epoch still reaches
    ``eps`` — the same convention as robustlab's adversarial eps ramp-up
    (:func:`robustlab.adversarial.training_core.eps_at`).

    Examples
    --------
    >>> eps_schedule(14, eps=0.4, warmup_steps=10, ramp_steps=10)
    0.2
    """
    if step < warmup_steps:
        return 0.0
    if ramp_steps <= 0:
        return float(eps)
    t0, t1 = warmup_steps, warmup_steps + ramp_steps
    u = step + 1
    if u >= t1:
        return float(eps)
    if kind == "linear":
        return float(eps) * (u - t0) / ramp_steps
    tm = t0 + int(ramp_steps * mid)
    if tm <= t0:  # no polynomial part: the line from (t0, 0)
        return float(eps) * (u - t0) / ramp_steps
    span = float(tm - t0)
    alpha = eps / ((t1 - tm) * exponent * span ** (exponent - 1) + span ** exponent)
    if u < tm:
        return float(alpha * float(u - t0) ** exponent)
    mid_value = alpha * span ** exponent
    return float(mid_value + (eps - mid_value) * (u - tm) / (t1 - tm))


def ramp_value(progress: float, start: float, end: float) -> float:
    """``start + (end - start) * progress``: kappa / beta at ramp progress ``eps_t / eps_train``."""
    return float(start + (end - start) * progress)


# --------------------------------------------------------------------------- loss
def robust_cross_entropy(lower: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    r"""Cross entropy of the worst-case logits from lower bounds on the margins ``z_y - z_j``.

    Parameters
    ----------
    lower : Tensor, shape (N, K - 1)
        Lower bounds on ``z_y - z_j`` for the ``K - 1`` classes ``j != y`` (e.g. from
        :func:`~robustlab.certified.bounds.differentiable_bounds` with ``C = margin_spec(y, K)``).
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    Tensor
        ``log(1 + sum_j exp(-lower_j))`` per example (reduced): an upper bound on
        ``max CE(z(x'), y)`` over the set the bounds hold on (Gowal et al. 2018, Sec. 3, with
        the elided specification; the IBP and CROWN-IBP reference code compute it as the
        cross entropy of ``[0, -lower]`` with label 0).
    """
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    padded = torch.cat([lower.new_zeros((lower.shape[0], 1)), -lower], dim=1)
    target = torch.zeros(lower.shape[0], dtype=torch.long, device=lower.device)
    return F.cross_entropy(padded, target, reduction=reduction)


# --------------------------------------------------------------------------- checks
def _check_eps(name: str, eps: Any, norm: str, *, method: str | None = None) -> float:
    if eps is None and method is not None:  # required; a missing radius is one line, not a TypeError
        fail(name, f"given for the {method!r} method (the radius to certify, e.g. --eps 0.1 on "
             "[0, 1] inputs)", None)
    eps = check_number(name, eps, low=0.0)
    if norm == "linf" and eps > 1:
        fail(name, "at most 1 for the linf norm (inputs lie in [0, 1])", eps)
    return eps


def _check_weight(name: str, value: Any) -> float:
    return check_number(name, value, low=0.0, high=1.0)


def _check_model_traceable(model: torch.nn.Module, train: Dataset, method: str, norm: str) -> None:
    """One training-mode bound pass on a few examples: an unsupported model fails here, in one line."""
    from robustlab.certified.bounds import differentiable_bounds

    if not any(p.requires_grad for p in model.parameters()):
        fail("model", f"a model with trainable parameters for the {method!r} method", "a model without any",
             describe_got=False)
    first = next(iter(train.batches(min(len(train), 8))))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = first.inputs.to(device)
    try:
        with preserve_state(model), torch.no_grad():
            model.train()
            differentiable_bounds(model, x, eps=0.0, norm=norm, methods=("ibp",))
    except RobustlabError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise type(exc)(f"The {method!r} method needs a model that bound propagation can handle in "
                        f"training mode (mlp, small-cnn): {reason}") from None


# --------------------------------------------------------------------------- objectives
class _CertifiedObjective(BaseObjective):
    """What IBP and CROWN-IBP training share: threat model, schedules, metrics."""

    _methods_for_estimate: tuple[str, ...] = ("ibp",)

    def __init__(self, *, eps: float | None, norm: str, eps_train: float | None, warmup_epochs: int,
                 ramp_epochs: int | None, schedule: str, ramp_mid: float, ramp_exponent: float,
                 kappa_start: float, kappa_end: float, verify_examples: int) -> None:
        self.norm = check_choice("norm", norm, CERTIFIED_NORMS)
        self.eps = _check_eps("eps", eps, self.norm, method=self.name)
        self.eps_train = None if eps_train is None else _check_eps("eps_train", eps_train, self.norm)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, low=0)
        self.ramp_epochs = None if ramp_epochs is None else check_int("ramp_epochs", ramp_epochs, low=0)
        self.schedule = check_choice("schedule", schedule, CERT_TRAIN_SCHEDULES)
        self.ramp_mid = check_number("ramp_mid", ramp_mid, low=0.0, high=1.0)
        self.ramp_exponent = check_number("ramp_exponent", ramp_exponent, low=2.0)
        self.kappa_start = _check_weight("kappa_start", kappa_start)
        self.kappa_end = _check_weight("kappa_end", kappa_end)
        self.verify_examples = check_int("verify_examples", verify_examples, low=0)
        self._steps_per_epoch = 1
        self._ramp_epochs = 0 if self.ramp_epochs is None else self.ramp_epochs
        self._model: torch.nn.Module | None = None
        self._estimate: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_step = -1
        self._epoch_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ setup
    @property
    def target_eps(self) -> float:
        """The training radius at the end of the ramp (``eps_train``, or ``eps`` when not given)."""
        return self.eps if self.eps_train is None else self.eps_train

    def resolved_ramp_epochs(self, epochs: int) -> int:
        """``ramp_epochs``, or its default for a run of ``epochs`` epochs (``None``: 60% of the
        epochs after warm-up, as CROWN-IBP's ``config/mnist_crown.json``: 60 of 100 epochs; at least
        one epoch, at most the epochs left after warm-up)."""
        if self.ramp_epochs is not None:
            return self.ramp_epochs
        left = max(0, epochs - self.warmup_epochs)
        return min(left, max(1, round(CERT_TRAIN_RAMP_FRACTION * left)))

    def setup(self, *, model: torch.nn.Module, train: Any, config: Any, device: torch.device,
              generator: torch.Generator) -> None:
        epochs = int(config.epochs)
        if self.warmup_epochs >= epochs and self.target_eps > 0:
            fail("warmup_epochs", f"less than the run's {epochs} epochs (no epoch would train at eps > 0)",
                 self.warmup_epochs)
        ramp = self.resolved_ramp_epochs(epochs)
        if self.warmup_epochs + ramp > epochs:
            fail("ramp_epochs", f"at most epochs - warmup_epochs = {epochs - self.warmup_epochs} (the ramp "
                 f"to eps_train must end by the last of the {epochs} epochs)", ramp)
        first = next(iter(train.batches(min(len(train), 256))))
        if first.inputs.numel() and (float(first.inputs.min()) < 0 or float(first.inputs.max()) > 1):
            fail("train", f"inputs in [0, 1] for the {self.name!r} method (normalisation is a layer "
                 "inside the model)", f"values in [{float(first.inputs.min()):.4g}, "
                 f"{float(first.inputs.max()):.4g}]", describe_got=False)
        _check_model_traceable(model, train, self.name, self.norm)
        self._ramp_epochs = ramp
        self._steps_per_epoch = train.num_batches(config.batch_size)
        self._model = model
        self._estimate = None
        if self.verify_examples > 0:
            n = min(self.verify_examples, len(train))
            subset = next(iter(train.subset(torch.arange(n)).batches(n)))
            self._estimate = (subset.inputs.to(device), subset.labels.to(device))
        self._last_step = -1
        self._epoch_metrics = {}

    # ------------------------------------------------------------------ schedules
    def current_eps(self, step: int) -> float:
        """Training radius ``eps_t`` at optimizer step ``step`` (see :func:`eps_schedule`)."""
        return eps_schedule(step, eps=self.target_eps, warmup_steps=self.warmup_epochs * self._steps_per_epoch,
                            ramp_steps=self._ramp_epochs * self._steps_per_epoch, kind=self.schedule,
                            mid=self.ramp_mid, exponent=self.ramp_exponent)

    def progress(self, step: int) -> float:
        """Ramp progress ``eps_t / eps_train`` in [0, 1] (1 when ``eps_train = 0`` after warm-up)."""
        if self.target_eps == 0:
            return 0.0 if step < self.warmup_epochs * self._steps_per_epoch else 1.0
        return min(1.0, self.current_eps(step) / self.target_eps)

    def current_kappa(self, step: int) -> float:
        """Weight of the clean cross entropy at ``step``."""
        return ramp_value(self.progress(step), self.kappa_start, self.kappa_end)

    def schedule_values(self, step: int) -> dict[str, float]:
        return {"eps": self.current_eps(step), "kappa": self.current_kappa(step)}

    # ------------------------------------------------------------------ loss
    def _lower_margins(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                       eps: float, step: int) -> torch.Tensor:
        raise NotImplementedError

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        x, y = batch.inputs, batch.labels
        self._last_step = max(self._last_step, step)
        logits = model(x)
        clean_ce = F.cross_entropy(logits, y)
        eps = self.current_eps(step)
        if eps == 0 or logits.shape[1] < 2:
            # The bound at eps 0 is the clean margin: the robust term equals the clean CE exactly.
            wrong = (logits.detach().argmax(dim=1) != y).float().mean()
            return ObjectiveOutput(loss=clean_ce, logits=logits,
                                   metrics={"robust_ce": clean_ce.detach(), "train_verified_err": wrong})
        lower = self._lower_margins(model, x, y, logits.shape[1], eps, step)
        robust_ce = robust_cross_entropy(lower)
        kappa = self.current_kappa(step)
        loss = kappa * clean_ce + (1.0 - kappa) * robust_ce
        unverified = (lower.detach() <= 0).any(dim=1).float().mean()
        return ObjectiveOutput(loss=loss, logits=logits,
                               metrics={"robust_ce": robust_ce.detach(), "train_verified_err": unverified})

    # ------------------------------------------------------------------ per-epoch metrics
    def on_epoch_start(self, epoch: int) -> None:
        self._epoch_metrics = {}

    def on_epoch_end(self, epoch: int) -> None:
        last = self._last_step if self._last_step >= 0 else (epoch + 1) * self._steps_per_epoch - 1
        metrics = self.schedule_values(last)
        if self._estimate is not None and self._model is not None:
            from robustlab.certified.bounds import verified

            x, y = self._estimate
            for method in self._methods_for_estimate:
                ok = verified(self._model, x, y, eps=self.eps, norm=self.norm, method=method)
                metrics[f"{method.replace('-', '_')}_verified_err"] = 1.0 - float(ok.float().mean())
        self._epoch_metrics = metrics

    def epoch_metrics(self) -> Mapping[str, float]:
        return dict(self._epoch_metrics)


@OBJECTIVES.register("ibp")
class IBPTraining(_CertifiedObjective):
    """IBP certified training (Gowal et al. 2018): clean CE mixed with the CE of IBP worst-case logits.

    Parameters
    ----------
    eps : float >= 0
        Radius the model should be verified at (required: ``None`` raises; Gowal et al.: 0.1-0.4 on MNIST, 2/255
        and 8/255 on CIFAR-10, linf). Used for the per-epoch verified-error estimate and as the
        training radius unless ``eps_train`` is given.
    norm : {"linf", "l2"}, default "linf"
    eps_train : float >= 0 or None, default None
        Radius of the training bound at the end of the ramp; ``None`` is ``eps``. Gowal et al.
        train above the test radius (1.1x in ``examples/train.py``; 0.4 for 0.3 on MNIST).
    warmup_epochs : int >= 0, default 1
        Epochs of plain training (``eps_t = 0``) first. CROWN-IBP's MNIST configs use 1
        (``schedule_start``), auto_LiRPA's ``simple_training.py`` 2 (``start=3``), deepmind's
        ``train.py`` 2000 steps.
    ramp_epochs : int >= 0 or None, default None
        Length of the ramp of ``eps_t`` (and ``kappa``) to its final value; ``None`` is 60% of
        the epochs after warm-up (CROWN-IBP ``mnist_crown.json``: 60 of 100 epochs, auto_LiRPA
        ``simple_training.py``: ``length=60`` of 100). ``warmup_epochs + ramp_epochs`` must not
        exceed the run's epochs (checked in :meth:`setup`).
    schedule : {"linear", "smoothed"}, default "linear"
        Shape of the eps ramp (:func:`eps_schedule`); Gowal et al. and CROWN-IBP ramp linearly;
        ``"smoothed"`` is the schedule of auto_LiRPA's examples and Shi et al. 2021.
    ramp_mid : float in [0, 1], default 0.25
    ramp_exponent : float >= 2, default 4.0
        Shape of the ``"smoothed"`` ramp (deepmind ``smooth_schedule`` defaults; auto_LiRPA's
        CIFAR example uses ``mid=0.4``).
    kappa_start, kappa_end : float in [0, 1], default 1.0 and 0.5
        Weight of the clean CE at the start and the end of the ramp (Gowal et al. Sec. 4 and
        ``train.py`` ``--nominal_xent_init 1 --nominal_xent_final 0.5``).
    verify_examples : int >= 0, default 256
        Training examples (the first ones) on which the per-epoch IBP verified error at ``eps``
        is estimated (eval mode); 0 turns the estimate off.

    Notes
    -----
    Gowal et al. 2018, Sec. 3: ``L = kappa * CE(z(x), y) + (1 - kappa) * CE(z_hat(x, eps), y)``
    with ``z_hat`` the worst-case logits of the IBP bound on the margins (see the module
    docstring and :func:`robust_cross_entropy`). The returned ``logits`` are the clean training
    logits.

    References
    ----------
    S. Gowal, K. Dvijotham, R. Stanforth, R. Bunel, C. Qin, J. Uesato, R. Arandjelovic, T. Mann,
    P. Kohli. On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
    Models. arXiv:1810.12715, 2018.
    """

    name = "ibp"

    def __init__(self, *, eps: float | None = None, norm: str = "linf", eps_train: float | None = None,
                 warmup_epochs: int = CERT_TRAIN_WARMUP_EPOCHS, ramp_epochs: int | None = None,
                 schedule: str = "linear", ramp_mid: float = CERT_TRAIN_RAMP_MID,
                 ramp_exponent: float = CERT_TRAIN_RAMP_EXPONENT, kappa_start: float = CERT_TRAIN_IBP_KAPPA_START,
                 kappa_end: float = CERT_TRAIN_IBP_KAPPA_END,
                 verify_examples: int = CERT_TRAIN_VERIFY_EXAMPLES) -> None:
        super().__init__(eps=eps, norm=norm, eps_train=eps_train, warmup_epochs=warmup_epochs,
                         ramp_epochs=ramp_epochs, schedule=schedule, ramp_mid=ramp_mid,
                         ramp_exponent=ramp_exponent, kappa_start=kappa_start, kappa_end=kappa_end,
                         verify_examples=verify_examples)

    def _lower_margins(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                       eps: float, step: int) -> torch.Tensor:
        from robustlab.certified.bounds import differentiable_bounds, margin_spec

        C = margin_spec(y, num_classes).to(dtype=x.dtype)
        return differentiable_bounds(model, x, eps=eps, norm=self.norm, methods=("ibp",), C=C)["ibp"][0]


@OBJECTIVES.register("crown-ibp")
class CROWNIBPTraining(_CertifiedObjective):
    """CROWN-IBP certified training (Zhang et al. 2020): a mix of the CROWN-IBP and IBP margin bounds.

    Parameters
    ----------
    eps, norm, eps_train, warmup_epochs, ramp_epochs, schedule, ramp_mid, ramp_exponent, verify_examples
        As in :class:`IBPTraining` (the per-epoch estimate also reports the CROWN-IBP verified
        error).
    kappa_start, kappa_end : float in [0, 1], default 0.0 and 0.0
        Weight of the clean CE. The reference configurations train CROWN-IBP on the bound's CE
        alone (``"method": "robust"`` in CROWN-IBP's ``config/mnist_crown.json``,
        ``cifar_crown.json``, ``cifar_dm-large_8_255.json``; auto_LiRPA ``cifar_training.py``);
        the paper also reports ``kappa`` 1 -> 0.5 (Gowal et al.'s schedule; CROWN-IBP's
        ``mnist_dm-large_*.json`` use ``"robust_natural"`` with ``final-kappa`` 0.5). During
        warm-up (``eps_t = 0``) the loss is the clean CE whatever ``kappa``.
    beta_start, beta_end : float in [0, 1], default 1.0 and 0.0
        Weight of the CROWN-IBP bound at the start and the end of the ramp: Zhang et al. 2020
        (Sec. 3) decrease beta from 1 to 0 during the ramp — the tighter CROWN-IBP bound while
        eps is small, IBP at the end (CROWN-IBP ``defaults.json`` ``final-beta`` 0).

    Notes
    -----
    Zhang et al. 2020, Sec. 3 (the CROWN-IBP training objective)::

        min E[ kappa * CE(z(x), y) + (1 - kappa) * CE(-((1 - beta) m_IBP + beta m_CROWN-IBP), y) ]

    with ``m_IBP`` and ``m_CROWN-IBP`` the lower bounds on the margins (both sound, so their
    convex combination is). ``m_CROWN-IBP`` uses IBP pre-activation bounds and one CROWN
    backward pass from the margin specification (:func:`~robustlab.certified.bounds.bounds`,
    ``method="crown-ibp"``); both share one IBP pass. When ``beta_t`` falls below 1e-5 only the
    IBP bound is computed (as ``train.py``), and at ``beta_t = 1`` only CROWN-IBP's.

    References
    ----------
    H. Zhang, H. Chen, C. Xiao, S. Gowal, R. Stanforth, B. Li, D. Boning, C.-J. Hsieh. Towards
    Stable and Efficient Training of Verifiably Robust Neural Networks. ICLR 2020.
    """

    name = "crown-ibp"
    _methods_for_estimate = ("ibp", "crown-ibp")

    def __init__(self, *, eps: float | None = None, norm: str = "linf", eps_train: float | None = None,
                 warmup_epochs: int = CERT_TRAIN_WARMUP_EPOCHS, ramp_epochs: int | None = None,
                 schedule: str = "linear", ramp_mid: float = CERT_TRAIN_RAMP_MID,
                 ramp_exponent: float = CERT_TRAIN_RAMP_EXPONENT,
                 kappa_start: float = CERT_TRAIN_CROWN_IBP_KAPPA_START,
                 kappa_end: float = CERT_TRAIN_CROWN_IBP_KAPPA_END, beta_start: float = CERT_TRAIN_BETA_START,
                 beta_end: float = CERT_TRAIN_BETA_END, verify_examples: int = CERT_TRAIN_VERIFY_EXAMPLES) -> None:
        super().__init__(eps=eps, norm=norm, eps_train=eps_train, warmup_epochs=warmup_epochs,
                         ramp_epochs=ramp_epochs, schedule=schedule, ramp_mid=ramp_mid,
                         ramp_exponent=ramp_exponent, kappa_start=kappa_start, kappa_end=kappa_end,
                         verify_examples=verify_examples)
        self.beta_start = _check_weight("beta_start", beta_start)
        self.beta_end = _check_weight("beta_end", beta_end)

    def current_beta(self, step: int) -> float:
        """Weight of the CROWN-IBP bound at ``step``."""
        return ramp_value(self.progress(step), self.beta_start, self.beta_end)

    def schedule_values(self, step: int) -> dict[str, float]:
        return {**super().schedule_values(step), "beta": self.current_beta(step)}

    def _lower_margins(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                       eps: float, step: int) -> torch.Tensor:
        from robustlab.certified.bounds import differentiable_bounds, margin_spec

        beta = self.current_beta(step)
        C = margin_spec(y, num_classes).to(dtype=x.dtype)
        if beta < CERT_TRAIN_BETA_TINY:
            methods: tuple[str, ...] = ("ibp",)
        elif beta >= 1.0:
            methods = ("crown-ibp",)
        else:
            methods = ("ibp", "crown-ibp")
        out = differentiable_bounds(model, x, eps=eps, norm=self.norm, methods=methods, C=C)
        if methods == ("ibp",):
            return out["ibp"][0]
        if methods == ("crown-ibp",):
            return out["crown-ibp"][0]
        return beta * out["crown-ibp"][0] + (1.0 - beta) * out["ibp"][0]


# --------------------------------------------------------------------------- validation hook
def verified_accuracy_metric(
    *,
    eps: float,
    norm: str = "linf",
    methods: Any = ("ibp",),
    max_examples: int | None = CERT_TRAIN_VERIFY_EXAMPLES * 2,
    batch_size: int = 256,
) -> Callable[[torch.nn.Module, Dataset], dict[str, float]]:
    """A ``val_metrics`` callable for :meth:`robustlab.training.Trainer.fit`: verified accuracy.

    Each call runs :func:`robustlab.certified.bounds.verified` (eval mode, state untouched) on the
    first ``max_examples`` validation examples and returns ``{"<method>_verified_acc": fraction}``
    for each method (stored as ``val_ibp_verified_acc``, ``val_crown_ibp_verified_acc``, ...).

    Parameters
    ----------
    eps : float >= 0
    norm : {"linf", "l2"}, default "linf"
    methods : sequence of {"ibp", "crown-ibp", "crown"}, default ("ibp",)
    max_examples : int >= 1 or None, default 512
        ``None`` verifies every validation example.
    batch_size : int >= 1, default 256
    """
    from robustlab._constants import CERTIFIED_METHODS

    norm = check_choice("norm", norm, CERTIFIED_NORMS)
    eps = _check_eps("eps", eps, norm)
    if isinstance(methods, str):
        methods = (methods,)
    if not isinstance(methods, (list, tuple)) or not methods:
        fail("methods", f"a non-empty sequence of names from {list(CERTIFIED_METHODS)}", methods)
    methods = tuple(dict.fromkeys(check_choice("methods", m, CERTIFIED_METHODS) for m in methods))
    if max_examples is not None:
        max_examples = check_int("max_examples", max_examples, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)

    def metric(model: torch.nn.Module, val: Dataset) -> dict[str, float]:
        from robustlab.certified.bounds import verified

        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        n = len(val) if max_examples is None else min(len(val), max_examples)
        counts = dict.fromkeys(methods, 0)
        for batch in val.subset(torch.arange(n)).batches(batch_size):
            x, y = batch.inputs.to(device), batch.labels.to(device)
            for m in methods:
                counts[m] += int(verified(model, x, y, eps=eps, norm=norm, method=m).sum())
        return {f"{m.replace('-', '_')}_verified_acc": counts[m] / max(n, 1) for m in methods}

    return metric
