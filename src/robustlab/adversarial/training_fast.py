"""Fast adversarial training: FGSM with a random start (Wong et al. 2020), GradAlign
(Andriushchenko & Flammarion 2020) and catastrophic-overfitting detection.

Registered as ``fast-at`` in :data:`robustlab.training.OBJECTIVES`; documented in
:mod:`robustlab.adversarial.training`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from robustlab._checks import check_bool, check_choice, check_int, check_number, fail
from robustlab._constants import (
    CO_ACCURACY_DROP,
    CO_CHECK_STEP_FRACTION,
    CO_CHECK_STEPS,
    FAST_AT_STEP_FACTOR,
)
from robustlab._model_state import preserve_state
from robustlab.adversarial._core import (
    flat,
    normalize_direction,
    project,
    random_in_ball,
)
from robustlab.adversarial.training_core import (
    attack_mode_of,
    check_mode,
    check_threat_model,
    check_trainable,
    check_training_data,
    eps_at,
    inner_maximize,
)
from robustlab.data.dataset import Batch
from robustlab.errors import InvalidTypeError
from robustlab.training.objective import OBJECTIVES, BaseObjective, ObjectiveOutput

__all__ = ["ON_OVERFITTING", "FastAdversarialTraining", "detect_catastrophic_overfitting"]

#: What :class:`FastAdversarialTraining` does when it detects catastrophic overfitting.
ON_OVERFITTING: tuple[str, ...] = ("warn", "stop", "rollback")


def detect_catastrophic_overfitting(
    history: Sequence[Any],
    *,
    drop: float = CO_ACCURACY_DROP,
    key: str = "co_check_pgd_acc",
) -> int | None:
    """First epoch whose PGD robust accuracy fell by more than ``drop`` since the previous epoch.

    Parameters
    ----------
    history : sequence of float, or sequence of dict
        Per-epoch robust accuracies, or a Trainer history (``TrainResult.history`` /
        ``history.json`` rows) from which ``key`` is read — in the row itself (e.g.
        ``"val_robust_acc"``) or in its ``"metrics"`` (e.g. ``"co_check_pgd_acc"`` written by
        ``fast-at``). Rows without the key are skipped.
    drop : float in (0, 1], default 0.2
        Wong et al.'s threshold (``train_fgsm.py --early-stop``:
        ``robust_acc - prev_robust_acc < -0.2``).
    key : str, default "co_check_pgd_acc"

    Returns
    -------
    int or None
        The 0-based epoch (its position in ``history``) at which the collapse is first seen,
        or None.

    Examples
    --------
    >>> detect_catastrophic_overfitting([0.30, 0.38, 0.41, 0.02, 0.00])
    3
    """
    drop = check_number("drop", drop, low=0.0, high=1.0, low_inclusive=False)
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        fail("history", "a sequence of accuracies or of history rows", history, error=InvalidTypeError)
    previous: float | None = None
    for epoch, row in enumerate(history):
        value = _accuracy_of(row, key)
        if value is None:
            continue
        if previous is not None and value - previous < -drop:
            return epoch
        previous = value
    return None


def _accuracy_of(row: Any, key: str) -> float | None:
    if isinstance(row, Mapping):
        value = row.get(key)
        if value is None and isinstance(row.get("metrics"), Mapping):
            value = row["metrics"].get(key)
        return None if value is None else float(value)
    if isinstance(row, bool) or not isinstance(row, (int, float)):
        fail("history", "a sequence of accuracies (floats) or of history rows (dicts)", row,
             error=InvalidTypeError)
    return float(row)


@OBJECTIVES.register("fast-at")
class FastAdversarialTraining(BaseObjective):
    """FGSM adversarial training with a random start ("Fast is better than free"), optionally
    with GradAlign, and a catastrophic-overfitting watchdog.

    Parameters
    ----------
    eps : float >= 0
        Radius (required; 8/255 on CIFAR-10 in the paper).
    norm : {"linf", "l2"}, default "linf"
        Wong et al. use linf (sign step); ``"l2"`` takes a normalised-gradient step.
    step_factor : float > 0, default 1.25
        FGSM step ``alpha = step_factor * eps`` (Wong et al. 2020, Sec. 4: 1.25 eps, 10/255 for
        8/255 in ``train_fgsm.py``).
    random_start : bool, default True
        Uniform start in the ball (FGSM-RS); ``False`` is zero-init FGSM (which overfits
        catastrophically much sooner).
    grad_align_lambda : float >= 0, default 0
        GradAlign regulariser weight (Andriushchenko & Flammarion 2020, Eq. 6). The paper's
        remedy against catastrophic overfitting; its README uses 0.2 for CIFAR-10 at 8/255 and
        larger values for larger eps. 0 disables it (one forward/backward less per step: with
        it, each step costs two extra double-backprop passes).
    eps_warmup_epochs : int >= 0, default 0
        Linear eps ramp-up (also scales the step).
    attack_mode : {"train", "eval"}, default "train"
        ``train_fgsm.py`` computes the FGSM gradient in train mode.
    check_overfitting : bool, default True
        After every epoch, run PGD (5 steps of ``eps/4``, uniform start, eval mode) on the
        epoch's first training batch (as ``train_fgsm.py --early-stop``) and store its
        robust accuracy as ``co_check_pgd_acc`` in the epoch's metrics.
    overfit_drop : float in (0, 1], default 0.2
        A fall of more than this in that accuracy from one epoch to the next is reported as
        catastrophic overfitting: a ``UserWarning`` and ``catastrophic_overfitting = 1`` in the
        epoch's metrics.
    on_overfitting : {"warn", "stop", "rollback"}, default "warn"
        ``"stop"`` ends training after the epoch (keeping the collapsed weights); ``"rollback"``
        restores the weights of the epoch with the best check accuracy so far (the rule of
        tml-epfl/understanding-fast-adv-training ``train.py``; Wong et al. keep the previous
        epoch's) and ends training. The stored epoch is ``rolled_back_to`` in the metrics.

    Notes
    -----
    Wong et al. 2020, Alg. 3: ``delta ~ U(-eps, eps)``; ``delta <- delta + alpha *
    sign(grad_delta CE(f(x + delta), y))``; ``delta <- clip_[-eps, eps](delta)`` (and into the
    ``[0, 1]`` box); minimise ``CE(f(x + delta), y)``.

    GradAlign (Andriushchenko & Flammarion 2020, Eq. 6) adds
    ``lambda * E[1 - cos(grad_x CE(x, y), grad_x CE(x + eta, y))]`` with ``eta ~ U(-eps, eps)``;
    both input gradients are kept in the graph (double backpropagation). As in the reference
    ``train.py``, the first gradient is the FGSM gradient at the random start and pairs with a
    zero gradient are left out of the mean.

    Differences from ``train_fgsm.py``: the overfitting check runs in eval mode (the reference
    leaves the model in train mode), and "rollback" keeps the best rather than the previous epoch.

    References
    ----------
    E. Wong, L. Rice, J. Z. Kolter. Fast is Better than Free: Revisiting Adversarial Training.
    ICLR 2020. M. Andriushchenko, N. Flammarion. Understanding and Improving Fast Adversarial
    Training. NeurIPS 2020.
    """

    name = "fast-at"

    def __init__(self, *, eps: float, norm: str = "linf", step_factor: float = FAST_AT_STEP_FACTOR,
                 random_start: bool = True, grad_align_lambda: float = 0.0, eps_warmup_epochs: int = 0,
                 attack_mode: str = "train", check_overfitting: bool = True,
                 overfit_drop: float = CO_ACCURACY_DROP, on_overfitting: str = "warn") -> None:
        self.eps, self.norm, _, _ = check_threat_model(eps, norm, 1, None, allowed_norms=("linf", "l2"))
        self.step_factor = check_number("step_factor", step_factor, low=0.0, low_inclusive=False)
        self.random_start = check_bool("random_start", random_start)
        self.grad_align_lambda = check_number("grad_align_lambda", grad_align_lambda, low=0.0)
        self.eps_warmup_epochs = check_int("eps_warmup_epochs", eps_warmup_epochs, low=0)
        self.attack_mode = check_mode(attack_mode)
        self.check_overfitting = check_bool("check_overfitting", check_overfitting)
        self.overfit_drop = check_number("overfit_drop", overfit_drop, low=0.0, high=1.0, low_inclusive=False)
        self.on_overfitting = check_choice("on_overfitting", on_overfitting, ON_OVERFITTING)
        self._generator: torch.Generator | None = None
        self._model: torch.nn.Module | None = None
        self._steps_per_epoch = 1
        self._reset()

    def _reset(self) -> None:
        self._check_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._previous_acc: float | None = None
        self._best_acc: float | None = None
        self._best_epoch: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self._stopped = False
        self._epoch_metrics: dict[str, float] = {}

    def setup(self, *, model: torch.nn.Module, train: Any, config: Any, device: torch.device,
              generator: torch.Generator) -> None:
        check_trainable(model, self.name)
        check_training_data(train, self.name)
        self._generator = generator
        self._model = model
        self._steps_per_epoch = train.num_batches(config.batch_size)
        self._reset()

    # ------------------------------------------------------------------ training step
    def _generator_or_fail(self) -> torch.Generator:
        if self._generator is None:
            fail("generator", "set by setup() (use the objective through a Trainer)", None)
        return self._generator

    def _random_delta(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        delta = random_in_ball(x, self.norm, eps, self._generator_or_fail())
        return (x + delta).clamp(0, 1) - x

    def _input_gradient(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor,
                        *, create_graph: bool) -> torch.Tensor:
        delta = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(x + delta), y)
            grad, = torch.autograd.grad(loss, delta, create_graph=create_graph)
        return grad

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        x, y = batch.inputs, batch.labels
        if self.check_overfitting and self._check_batch is None:
            self._check_batch = (x.detach().clone(), y.detach().clone())  # the epoch's first batch
        eps = eps_at(self.eps, warmup_epochs=self.eps_warmup_epochs, step=step,
                     steps_per_epoch=self._steps_per_epoch)
        delta0 = self._random_delta(x, eps) if self.random_start else torch.zeros_like(x)
        align = self.grad_align_lambda > 0 and eps > 0
        if align:  # the FGSM gradient stays in the graph for GradAlign's cosine
            with preserve_state(model):
                model.train(self.attack_mode == "train")
                grad1 = self._input_gradient(model, x, y, delta0, create_graph=True)
        else:
            with attack_mode_of(model, self.attack_mode):
                grad1 = self._input_gradient(model, x, y, delta0, create_graph=False)
        delta = delta0 + self.step_factor * eps * normalize_direction(grad1.detach(), self.norm)
        delta = project(delta, self.norm, eps)
        x_adv = ((x + delta).clamp(0, 1)).detach()
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        metrics: dict[str, Any] = {"eps": eps, "adv_acc": (logits_adv.detach().argmax(1) == y).float().mean()}
        if align:
            with preserve_state(model):
                model.train(self.attack_mode == "train")
                grad2 = self._input_gradient(model, x, y, self._random_delta(x, eps), create_graph=True)
            cos = _cosine(grad1, grad2)
            reg = self.grad_align_lambda * (1.0 - cos)
            loss = loss + reg
            metrics["grad_cos"] = cos.detach()
        return ObjectiveOutput(loss=loss, logits=None, metrics=metrics)

    # ------------------------------------------------------------------ overfitting watchdog
    def on_epoch_start(self, epoch: int) -> None:
        self._check_batch = None
        self._epoch_metrics = {}

    def on_epoch_end(self, epoch: int) -> None:
        if not self.check_overfitting or self._check_batch is None or self._model is None:
            return
        acc = self._check_accuracy(self._model, *self._check_batch)
        metrics = {"co_check_pgd_acc": acc, "catastrophic_overfitting": 0.0}
        collapsed = self._previous_acc is not None and acc - self._previous_acc < -self.overfit_drop
        if collapsed:
            metrics["catastrophic_overfitting"] = 1.0
            warnings.warn(
                f"Catastrophic overfitting in epoch {epoch + 1}: PGD robust accuracy on the check batch fell "
                f"from {self._previous_acc:.3f} to {acc:.3f}. Remedies: grad_align_lambda (GradAlign), a "
                f"smaller step_factor, or on_overfitting='rollback'.", UserWarning, stacklevel=2)
            if self.on_overfitting == "rollback" and self._best_state is not None:
                self._model.load_state_dict(self._best_state)
                metrics["rolled_back_to"] = float(self._best_epoch if self._best_epoch is not None else -1)
            self._stopped = self.on_overfitting in ("stop", "rollback")
        elif self._best_acc is None or acc > self._best_acc:
            self._best_acc, self._best_epoch = acc, epoch
            if self.on_overfitting == "rollback":
                self._best_state = {k: v.detach().clone() for k, v in self._model.state_dict().items()}
        self._previous_acc = acc
        self._epoch_metrics = metrics

    def _check_accuracy(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        x_adv, _ = inner_maximize(model, x, lambda z: F.cross_entropy(z, y, reduction="none"), eps=self.eps,
                                  norm=self.norm, num_steps=CO_CHECK_STEPS,
                                  step_size=CO_CHECK_STEP_FRACTION * self.eps, start="uniform",
                                  generator=self._generator_or_fail(), mode="eval")
        with torch.no_grad(), attack_mode_of(model, "eval"):
            return float((model(x_adv).argmax(dim=1) == y).float().mean())

    def epoch_metrics(self) -> Mapping[str, float]:
        return dict(self._epoch_metrics)

    def should_stop(self) -> bool:
        return self._stopped

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"previous_acc": self._previous_acc, "best_acc": self._best_acc, "best_epoch": self._best_epoch,
                "best_state": self._best_state, "stopped": self._stopped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._previous_acc = state.get("previous_acc")
        self._best_acc = state.get("best_acc")
        self._best_epoch = state.get("best_epoch")
        best = state.get("best_state")
        self._best_state = None if best is None else dict(best)
        self._stopped = bool(state.get("stopped", False))


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of per-example gradients, over pairs where both are non-negligible.

    Each gradient is divided by its own norm before the dot product (as the reference
    ``train.py``): the product of two norms underflows for the very small input gradients of
    confidently classified examples (seen on breast-cancer: norms of 1e-20) and its reciprocal
    then blows up the double-backprop gradient. Pairs with a norm below ``sqrt(finfo.tiny)``
    (whose squared norm is already subnormal) are left out, like the reference's zero norms.
    """
    fa, fb = flat(a), flat(b)
    na, nb = fa.norm(dim=1), fb.norm(dim=1)
    floor = torch.finfo(fa.dtype).tiny ** 0.5
    keep = (na > floor) & (nb > floor)
    if not bool(keep.any()):
        return fa.new_ones(())
    ua = fa[keep] / na[keep, None]
    ub = fb[keep] / nb[keep, None]
    return (ua * ub).sum(dim=1).mean()
