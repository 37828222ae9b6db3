"""Adversarial training as Trainer objectives: PGD-AT, TRADES, MART (+ AWP, eps ramp-up, GAIRAT
reweighting), Fast AT with GradAlign and catastrophic-overfitting detection, and VAT.

Registered in :data:`robustlab.training.OBJECTIVES` (``robustlab train --method pgd-at``):

============  ==========================================================================
``pgd-at``    :class:`PGDAdversarialTraining` — Madry et al. 2018
``trades``    :class:`TRADES` — Zhang et al. 2019
``mart``      :class:`MART` — Wang et al. 2020
``fast-at``   :class:`~robustlab.adversarial.training_fast.FastAdversarialTraining` — Wong
              et al. 2020 (FGSM + random start), GradAlign (Andriushchenko & Flammarion 2020)
``vat``       :class:`~robustlab.adversarial.training_vat.VirtualAdversarialTraining` —
              Miyato et al. 2018, supervised and semi-supervised
============  ==========================================================================

Gaussian-noise augmentation is ``gaussian-augment`` in :mod:`robustlab.corruptions.augment`.
Adversarial fine-tuning of a pretrained model (Jeddi et al. 2020) is any of these objectives with
the ``"linear-decay"`` schedule and a long warm-up (``TrainConfig(schedule="linear-decay",
warmup_epochs=...)``; ``robustlab train --init MODEL``).

Threat model: inputs in ``[0, 1]``; every adversarial example built during training satisfies
``||x_adv - x||_p <= eps`` (the current, possibly ramped, eps) and ``0 <= x_adv <= 1``.
Randomness (random starts) comes from the generator the Trainer hands to ``setup``; runs are
bit-reproducible per seed on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from robustlab._checks import check_bool, check_choice, check_int, check_number, fail
from robustlab._constants import (
    ADV_TRAIN_NUM_STEPS,
    GAIR_LAMBDA,
    MART_BCE_OFFSET,
    MART_LAMBDA,
    MART_LOG_EPS,
    MART_WEIGHT_OFFSET,
    TRADES_BETA,
    TRADES_INIT_STD,
)
from robustlab.adversarial.training_core import (
    attack_mode_of,
    awp_parameters,
    awp_perturbation,
    check_mode,
    check_threat_model,
    check_trainable,
    check_training_data,
    default_step_size,
    eps_at,
    gair_weights,
    inner_maximize,
    kl_per_example,
    perturbed_model,
    robust_accuracy_metric,
)
from robustlab.adversarial.training_fast import (
    FastAdversarialTraining,
    detect_catastrophic_overfitting,
)
from robustlab.adversarial.training_vat import VirtualAdversarialTraining
from robustlab.data.dataset import Batch
from robustlab.training.objective import OBJECTIVES, BaseObjective, ObjectiveOutput

__all__ = [
    "MART",
    "TRADES",
    "FastAdversarialTraining",
    "PGDAdversarialTraining",
    "VirtualAdversarialTraining",
    "detect_catastrophic_overfitting",
    "gair_weights",
    "robust_accuracy_metric",
]

Forward = Callable[[torch.Tensor], torch.Tensor]

#: ``reweight`` options of PGD-AT.
REWEIGHT_OPTIONS: tuple[str, ...] = ("none", "gair")


class _AdversarialObjective(BaseObjective):
    """Settings and state every PGD-style objective shares (eps ramp, AWP, inner attack)."""

    #: Start of the inner maximisation and the model's mode during it (subclasses override).
    _start: str = "uniform"

    def __init__(self, *, eps: float, norm: str, num_steps: int, step_size: float | None,
                 eps_warmup_epochs: int, attack_mode: str, awp_gamma: float, awp_warmup_epochs: int) -> None:
        self.eps, self.norm, self.num_steps, self.step_size = check_threat_model(eps, norm, num_steps, step_size)
        self.eps_warmup_epochs = check_int("eps_warmup_epochs", eps_warmup_epochs, low=0)
        self.attack_mode = check_mode(attack_mode)
        self.awp_gamma = check_number("awp_gamma", awp_gamma, low=0.0)
        self.awp_warmup_epochs = check_int("awp_warmup_epochs", awp_warmup_epochs, low=0)
        self._generator: torch.Generator | None = None
        self._steps_per_epoch = 1

    def setup(self, *, model: torch.nn.Module, train: Any, config: Any, device: torch.device,
              generator: torch.Generator) -> None:
        check_trainable(model, self.name)
        check_training_data(train, self.name)
        if self.awp_gamma > 0 and not awp_parameters(model):
            fail("awp_gamma", f"0 for a model without weight matrices or kernels (AWP perturbs the "
                 f"multi-dimensional weights of the {self.name!r} model)", self.awp_gamma)
        self._generator = generator
        self._steps_per_epoch = train.num_batches(config.batch_size)

    # ------------------------------------------------------------------ helpers
    def _generator_or_fail(self) -> torch.Generator:
        if self._generator is None:
            fail("generator", "set by setup() (use the objective through a Trainer)", None)
        return self._generator

    def current_eps(self, step: int) -> float:
        """The radius used at optimizer step ``step`` (after the linear ramp-up)."""
        return eps_at(self.eps, warmup_epochs=self.eps_warmup_epochs, step=step,
                      steps_per_epoch=self._steps_per_epoch)

    def _attack(self, model: torch.nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                eps: float, *, labels_for_kappa: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        step_size = default_step_size(eps) if self.step_size is None else self.step_size * (eps / self.eps
                                                                                             if self.eps else 0.0)
        return inner_maximize(model, x, loss_fn, eps=eps, norm=self.norm, num_steps=self.num_steps,
                              step_size=step_size, start=self._start, generator=self._generator_or_fail(),
                              mode=self.attack_mode, normal_std=TRADES_INIT_STD,
                              labels_for_kappa=labels_for_kappa)

    def _forward_for_step(self, model: torch.nn.Module, epoch: int,
                          awp_loss: Callable[[Forward], torch.Tensor]) -> tuple[Forward, dict[str, Any]]:
        """The forward function of the outer minimisation: the model, or the model at ``w + v`` (AWP)."""
        if self.awp_gamma == 0 or epoch < self.awp_warmup_epochs:
            return model, {}
        v = awp_perturbation(model, awp_loss, self.awp_gamma)
        return perturbed_model(model, v), {"awp_layers": float(len(v))}


@OBJECTIVES.register("pgd-at")
class PGDAdversarialTraining(_AdversarialObjective):
    """PGD adversarial training (Madry et al. 2018): minimise the CE at a PGD point of the eps ball.

    Parameters
    ----------
    eps : float >= 0
        Radius of the threat model (required; e.g. 8/255 for CIFAR-10 linf, 0.3 for MNIST).
    norm : {"linf", "l2", "l1"}, default "linf"
    num_steps : int >= 1, default 10
        Inner PGD steps (Madry et al. use 7 on CIFAR-10 and 40 on MNIST; 10 follows Rice et al.
        2020 and the TRADES/MART/AWP reference code).
    step_size : float > 0 or None, default None
        Inner step size at the full ``eps``; ``None`` is ``eps / 4`` (2/255 for 8/255). During
        an eps ramp-up the step shrinks in proportion to the current eps.
    random_start : bool, default True
        Start from a uniform point of the ball (Madry et al. 2018, Sec. 5), else from ``x``.
    eps_warmup_epochs : int >= 0, default 0
        Linear ramp of eps from ~0 to ``eps`` over the first this-many epochs (per step).
    attack_mode : {"train", "eval"}, default "train"
        The model's mode during the inner maximisation. ``"train"`` follows the reference code
        of Madry et al. (cifar10_challenge builds the attack on the training graph) and Rice et
        al. 2020 (``train_cifar.py`` attacks after ``model.train()``): batch-norm layers use the
        batch's statistics, and their running averages also see the attack's passes. ``"eval"``
        uses the running statistics (as TRADES/MART's code does).
    awp_gamma : float >= 0, default 0
        Adversarial weight perturbation (Wu et al. 2020) of relative size ``gamma`` per layer;
        5e-3 is the paper's value. 0 disables AWP.
    awp_warmup_epochs : int >= 0, default 0
        Epochs trained without AWP first (AT-AWP's ``--awp-warmup`` default is 0).
    reweight : {"none", "gair"}, default "none"
        ``"gair"``: geometry-aware instance reweighting (GAIRAT, Zhang et al. 2021): the CE of
        each adversarial example is weighted by :func:`gair_weights` of its geometry value
        (how many PGD iterates it survived).
    gair_lambda : float, default -1.0
        GAIRAT's ``Lambda`` (``GAIRAT.py`` default, Tanh weight function).
    reweight_start_epoch : int >= 0 or None, default None
        First epoch of reweighting; ``None`` is half the run (GAIRAT starts at epoch 60 of 120,
        "--begin_epoch 60").

    Notes
    -----
    Madry et al. 2018, Eq. 2.1: ``min_theta E[ max_{||delta|| <= eps} L(theta, x + delta, y) ]``;
    the inner max is approximated by ``num_steps`` of projected steepest ascent on the CE
    (sign steps for linf), clipped to ``[0, 1]``. With AWP (Wu et al. 2020, Eq. 6-8), the outer
    loss is evaluated at weights ``w + v`` where ``v`` is one normalised ascent step on the
    same loss (see :func:`~robustlab.adversarial.training_core.awp_perturbation`); the model's
    weights themselves are never moved (the loss is computed with
    :func:`torch.func.functional_call`), so the optimizer steps from ``w`` with the gradient
    at ``w + v`` exactly as the reference's perturb/restore does, and no exception can leave the
    model perturbed. The returned ``logits`` are ``None`` (PGD-AT never evaluates the clean
    batch); the metric ``adv_acc`` is the accuracy on the training adversarial examples.

    References
    ----------
    A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. Towards Deep Learning Models
    Resistant to Adversarial Attacks. ICLR 2018. D. Wu, S.-T. Xia, Y. Wang. Adversarial Weight
    Perturbation Helps Robust Generalization. NeurIPS 2020. J. Zhang, J. Zhu, G. Niu, B. Han,
    M. Sugiyama, M. Kankanhalli. Geometry-aware Instance-reweighted Adversarial Training. ICLR 2021.
    """

    name = "pgd-at"

    def __init__(self, *, eps: float, norm: str = "linf", num_steps: int = ADV_TRAIN_NUM_STEPS,
                 step_size: float | None = None, random_start: bool = True, eps_warmup_epochs: int = 0,
                 attack_mode: str = "train", awp_gamma: float = 0.0, awp_warmup_epochs: int = 0,
                 reweight: str = "none", gair_lambda: float = GAIR_LAMBDA,
                 reweight_start_epoch: int | None = None) -> None:
        super().__init__(eps=eps, norm=norm, num_steps=num_steps, step_size=step_size,
                         eps_warmup_epochs=eps_warmup_epochs, attack_mode=attack_mode, awp_gamma=awp_gamma,
                         awp_warmup_epochs=awp_warmup_epochs)
        self.random_start = check_bool("random_start", random_start)
        self._start = "uniform" if self.random_start else "zero"
        self.reweight = check_choice("reweight", reweight, REWEIGHT_OPTIONS)
        self.gair_lambda = check_number("gair_lambda", gair_lambda)
        self.reweight_start_epoch = (None if reweight_start_epoch is None
                                     else check_int("reweight_start_epoch", reweight_start_epoch, low=0))
        self._epochs = 1

    def setup(self, *, model: torch.nn.Module, train: Any, config: Any, device: torch.device,
              generator: torch.Generator) -> None:
        super().setup(model=model, train=train, config=config, device=device, generator=generator)
        self._epochs = config.epochs

    def _reweighting(self, epoch: int) -> bool:
        if self.reweight == "none":
            return False
        start = self._epochs // 2 if self.reweight_start_epoch is None else self.reweight_start_epoch
        return epoch >= start

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        x, y = batch.inputs, batch.labels
        eps = self.current_eps(step)
        reweight = self._reweighting(epoch)
        x_adv, kappa = self._attack(model, x, lambda z: F.cross_entropy(z, y, reduction="none"), eps,
                                    labels_for_kappa=y if reweight else None)
        forward, metrics = self._forward_for_step(
            model, epoch, lambda f: F.cross_entropy(f(x_adv), y))
        logits_adv = forward(x_adv)
        per_example = F.cross_entropy(logits_adv, y, reduction="none")
        if kappa is not None:
            weights = gair_weights(kappa, self.num_steps, self.gair_lambda)
            loss = (per_example * weights).mean()
            metrics["gair_weight_max"] = weights.max().detach()
        else:
            loss = per_example.mean()
        metrics.update({"eps": eps, "adv_acc": (logits_adv.detach().argmax(1) == y).float().mean()})
        return ObjectiveOutput(loss=loss, logits=None, metrics=metrics)


@OBJECTIVES.register("trades")
class TRADES(_AdversarialObjective):
    """TRADES (Zhang et al. 2019): clean CE plus ``beta`` times the KL to a worst-case neighbour.

    Parameters
    ----------
    eps : float >= 0
        Radius (required; the paper uses 0.031 on CIFAR-10 and 0.3 on MNIST, linf).
    beta : float >= 0, default 6.0
        Weight of the robust term (``1/lambda`` in the paper; 6 is the paper's CIFAR-10 value and
        ``train_trades_cifar10.py``'s default). ``beta = 0`` is plain cross entropy (no attack
        is run).
    norm : {"linf", "l2", "l1"}, default "linf"
    num_steps : int >= 1, default 10
    step_size : float > 0 or None, default None
        ``None`` is ``eps / 4`` (the reference's 0.007 for 0.031).
    eps_warmup_epochs, awp_gamma, awp_warmup_epochs
        As in :class:`PGDAdversarialTraining` (TRADES-AWP: ``--awp-gamma 0.005``,
        ``--awp-warmup 10``; the default here is 0 = no warm-up).
    attack_mode : {"eval", "train"}, default "eval"
        ``trades.py`` calls ``model.eval()`` while it builds ``x'``.

    Notes
    -----
    Zhang et al. 2019, Eq. 5 (the training objective of Sec. 4)::

        min_f E[ CE(f(x), y) + beta * max_{x' in B(x, eps)} KL(f(x) || f(x')) ]

    with ``f`` the softmax output. The inner max starts at ``x + 0.001 * N(0, I)`` and takes
    ``num_steps`` steepest-ascent steps on ``KL(f(x) || f(x'))`` with ``f(x)`` fixed (computed
    in the attack's mode). The outer loss evaluates ``f(x)`` and ``f(x')`` in two train-mode
    passes (as ``trades.py``), KL averaged over the batch (``reduction="batchmean"``);
    gradients flow through both distributions, as in the reference.

    References
    ----------
    H. Zhang, Y. Yu, J. Jiao, E. P. Xing, L. El Ghaoui, M. I. Jordan. Theoretically Principled
    Trade-off between Robustness and Accuracy. ICML 2019.
    """

    name = "trades"
    _start = "normal"

    def __init__(self, *, eps: float, beta: float = TRADES_BETA, norm: str = "linf",
                 num_steps: int = ADV_TRAIN_NUM_STEPS, step_size: float | None = None,
                 eps_warmup_epochs: int = 0, attack_mode: str = "eval", awp_gamma: float = 0.0,
                 awp_warmup_epochs: int = 0) -> None:
        super().__init__(eps=eps, norm=norm, num_steps=num_steps, step_size=step_size,
                         eps_warmup_epochs=eps_warmup_epochs, attack_mode=attack_mode, awp_gamma=awp_gamma,
                         awp_warmup_epochs=awp_warmup_epochs)
        self.beta = check_number("beta", beta, low=0.0)

    def _adversarial(self, model: torch.nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
        with torch.no_grad(), attack_mode_of(model, self.attack_mode):
            clean = model(x).detach()
        x_adv, _ = self._attack(model, x, lambda z: kl_per_example(clean, z), eps)
        return x_adv

    def _loss(self, forward: Forward, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        logits = forward(x)
        ce = F.cross_entropy(logits, y)
        if x_adv is None:
            return ce, logits, None
        kl = kl_per_example(logits, forward(x_adv)).mean()
        return ce + self.beta * kl, logits, kl

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        x, y = batch.inputs, batch.labels
        if self.beta == 0:
            loss, logits, _ = self._loss(model, x, None, y)
            return ObjectiveOutput(loss=loss, logits=logits)
        eps = self.current_eps(step)
        x_adv = self._adversarial(model, x, eps)
        forward, metrics = self._forward_for_step(model, epoch, lambda f: self._loss(f, x, x_adv, y)[0])
        loss, logits, kl = self._loss(forward, x, x_adv, y)
        assert kl is not None
        metrics.update({"eps": eps, "kl": kl.detach()})
        return ObjectiveOutput(loss=loss, logits=logits, metrics=metrics)


@OBJECTIVES.register("mart")
class MART(_AdversarialObjective):
    """MART (Wang et al. 2020): boosted CE on the adversarial example plus a KL term weighted by
    how badly the clean example is classified.

    Parameters
    ----------
    eps : float >= 0
        Radius (required; the paper: 8/255 on CIFAR-10, linf).
    lam : float >= 0, default 6.0
        ``lambda`` of Eq. 9 (``mart.py``: ``beta=6.0``).
    norm, num_steps, step_size, eps_warmup_epochs
        As in :class:`PGDAdversarialTraining`.
    attack_mode : {"eval", "train"}, default "eval"
        ``mart.py`` attacks in eval mode.

    Notes
    -----
    Wang et al. 2020, Eq. 9 (per example, averaged over the batch)::

        BCE(p(x'), y) + lambda * KL(p(x) || p(x')) * (1 - p_y(x))
        BCE(p(x'), y) = -log p_y(x') - log(1 - max_{k != y} p_k(x'))

    ``x'`` maximises the CE (PGD from ``x + 0.001 * N(0, I)``, as ``mart.py``). Numerical guards
    follow ``mart.py``: ``log(1.0001 - p + 1e-12)``, ``log(p' + 1e-12)`` inside the KL and
    ``1.0000001 - p_y``. The ``1 - p_y(x)`` weight is not detached (as in the reference).

    References
    ----------
    Y. Wang, D. Zou, J. Yi, J. Bailey, X. Ma, Q. Gu. Improving Adversarial Robustness Requires
    Revisiting Misclassified Examples. ICLR 2020.
    """

    name = "mart"
    _start = "normal"

    def __init__(self, *, eps: float, lam: float = MART_LAMBDA, norm: str = "linf",
                 num_steps: int = ADV_TRAIN_NUM_STEPS, step_size: float | None = None,
                 eps_warmup_epochs: int = 0, attack_mode: str = "eval") -> None:
        super().__init__(eps=eps, norm=norm, num_steps=num_steps, step_size=step_size,
                         eps_warmup_epochs=eps_warmup_epochs, attack_mode=attack_mode, awp_gamma=0.0,
                         awp_warmup_epochs=0)
        self.lam = check_number("lam", lam, low=0.0)

    @staticmethod
    def mart_loss(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, lam: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, bce, weighted_kl)`` of Eq. 9 from clean and adversarial logits."""
        adv_probs = F.softmax(logits_adv, dim=1)
        others = adv_probs.scatter(1, y[:, None], float("-inf"))
        top_other = others.argmax(dim=1)
        bce = F.cross_entropy(logits_adv, y) + F.nll_loss(
            torch.log(MART_BCE_OFFSET - adv_probs + MART_LOG_EPS), top_other)
        nat_probs = F.softmax(logits, dim=1)
        true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
        kl = (nat_probs * (torch.log(nat_probs + MART_LOG_EPS) - torch.log(adv_probs + MART_LOG_EPS))).sum(1)
        weighted = (kl * (MART_WEIGHT_OFFSET - true_probs)).mean()
        return bce + lam * weighted, bce, weighted

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        x, y = batch.inputs, batch.labels
        eps = self.current_eps(step)
        x_adv, _ = self._attack(model, x, lambda z: F.cross_entropy(z, y, reduction="none"), eps)
        logits = model(x)
        logits_adv = model(x_adv)
        loss, bce, weighted = self.mart_loss(logits, logits_adv, y, self.lam)
        return ObjectiveOutput(loss=loss, logits=logits,
                               metrics={"eps": eps, "bce": bce.detach(), "weighted_kl": weighted.detach()})
