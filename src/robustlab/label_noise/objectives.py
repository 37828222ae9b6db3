"""Loss-based training methods for noisy labels, registered as Trainer objectives.

Each objective is a thin wrapper around a function of :mod:`robustlab.label_noise.losses`: it runs
the model on the batch and averages the per-example loss. Defaults are the papers' values; each
class docstring cites the paper and equation and states any deviation.

=================== ================================ ==========================================
name                class                            defaults
=================== ================================ ==========================================
``label-smoothing`` :class:`LabelSmoothing`          ``label_smoothing=0.1``
``bootstrap-soft``  :class:`BootstrapSoft`           ``beta=0.95``
``bootstrap-hard``  :class:`BootstrapHard`           ``beta=0.8``
``gce``             :class:`GeneralizedCrossEntropy` ``q=0.7``, ``truncation=None``
``sce``             :class:`SymmetricCrossEntropy`   ``alpha=0.1, beta=1.0, log_zero=-4``
``nce``             :class:`NormalizedCrossEntropy`  (no parameter)
``rce``             :class:`ReverseCrossEntropy`     ``log_zero=-4``
``mae``             :class:`MeanAbsoluteError`       (no parameter)
``nce+rce``         :class:`NCERCE`                  ``alpha=1.0, beta=1.0``
``nce+mae``         :class:`NCEMAE`                  ``alpha=1.0, beta=1.0``
``forward``         :class:`ForwardCorrection`       given ``transition`` or anchor estimate
``backward``        :class:`BackwardCorrection`      given ``transition`` or anchor estimate
``logitclip``       :class:`LogitClip`               ``delta=1/1.5, norm="l2"``
``mixup``           :class:`Mixup`                   ``alpha=1.0``
=================== ================================ ==========================================

SAM is not an objective: it is an optimizer option usable with any of them
(``TrainConfig(sam_rho=0.05)``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from robustlab._checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_pred_probs,
    fail,
)
from robustlab._constants import ANCHOR_QUANTILE, BACKWARD_PROB_CLIP, RCE_LOG_ZERO
from robustlab.data.dataset import Batch, Dataset
from robustlab.label_noise import losses as L
from robustlab.label_noise.transition import _anchor_impl, check_transition
from robustlab.training.objective import (
    OBJECTIVES,
    BaseObjective,
    CrossEntropy,
    ObjectiveOutput,
)

if TYPE_CHECKING:
    from robustlab.training.config import TrainConfig

__all__ = [
    "NCEMAE",
    "NCERCE",
    "BackwardCorrection",
    "BootstrapHard",
    "BootstrapSoft",
    "ForwardCorrection",
    "GeneralizedCrossEntropy",
    "LabelSmoothing",
    "LogitClip",
    "MeanAbsoluteError",
    "Mixup",
    "NormalizedCrossEntropy",
    "ReverseCrossEntropy",
    "SymmetricCrossEntropy",
]


class _PerExampleLoss(BaseObjective):
    """Mean over the batch of a per-example loss of the model's logits."""

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        logits = model(batch.inputs)
        return ObjectiveOutput(loss=self._loss(logits, batch.labels).mean(), logits=logits)


def _weight(name: str, value: Any) -> float:
    return check_number(name, value, low=0.0)


def _log_zero(value: Any) -> float:
    return check_number("log_zero", value, high=0.0, high_inclusive=False)


# ---------------------------------------------------------------------- label smoothing
@OBJECTIVES.register("label-smoothing")
class LabelSmoothing(CrossEntropy):
    """Cross entropy with label smoothing (Szegedy et al., 2016), smoothing on by default.

    The same objective as ``ce`` with ``label_smoothing`` (one implementation,
    :func:`torch.nn.functional.cross_entropy`); this name only gives it the paper's default so
    that benchmarks and ``--method label-smoothing`` run it without options.

    Parameters
    ----------
    label_smoothing : float in [0, 1), default 0.1
        ``epsilon``; 0.1 is the paper's value (Sec. 7).

    Notes
    -----
    ``target = (1 - epsilon) e_y + epsilon / K``; ``loss = -sum_k target_k log p_k``.

    References
    ----------
    Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. "Rethinking the Inception architecture for computer
    vision." CVPR 2016, Sec. 7.
    """

    name = "label-smoothing"

    def __init__(self, *, label_smoothing: float = 0.1) -> None:
        super().__init__(label_smoothing=label_smoothing)


# ---------------------------------------------------------------------- bootstrapping
@OBJECTIVES.register("bootstrap-soft")
class BootstrapSoft(_PerExampleLoss):
    """Soft bootstrapping (Reed et al., 2015); see :func:`~robustlab.label_noise.bootstrap_soft_loss`.

    Parameters
    ----------
    beta : float in [0, 1], default 0.95
        The paper's value for the soft variant.
    """

    name = "bootstrap-soft"

    def __init__(self, *, beta: float = 0.95) -> None:
        self.beta = check_number("beta", beta, low=0.0, high=1.0)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return L._bootstrap_soft(logits, labels, self.beta)


@OBJECTIVES.register("bootstrap-hard")
class BootstrapHard(_PerExampleLoss):
    """Hard bootstrapping (Reed et al., 2015); see :func:`~robustlab.label_noise.bootstrap_hard_loss`.

    Parameters
    ----------
    beta : float in [0, 1], default 0.8
        The paper's value for the hard variant.
    """

    name = "bootstrap-hard"

    def __init__(self, *, beta: float = 0.8) -> None:
        self.beta = check_number("beta", beta, low=0.0, high=1.0)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return L._bootstrap_hard(logits, labels, self.beta)


# ---------------------------------------------------------------------- GCE
@OBJECTIVES.register("gce")
class GeneralizedCrossEntropy(_PerExampleLoss):
    """Generalized cross entropy ``L_q`` (Zhang & Sabuncu, 2018, Sec. 3.2); see :func:`~robustlab.label_noise.gce_loss`.

    Parameters
    ----------
    q : float in (0, 1], default 0.7
        The paper's value.
    truncation : float in (0, 1) or None, default None
        ``k`` of the truncated loss (Sec. 3.3; the paper uses 0.5). Applied per step rather than
        through the paper's pruning every 10 epochs — see :func:`~robustlab.label_noise.gce_loss`.
    """

    name = "gce"

    def __init__(self, *, q: float = 0.7, truncation: float | None = None) -> None:
        self.q = check_number("q", q, low=0.0, high=1.0, low_inclusive=False)
        self.truncation = truncation if truncation is None else check_number(
            "truncation", truncation, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return L._gce(logits, labels, self.q, self.truncation)


# ---------------------------------------------------------------------- symmetric / normalised
@OBJECTIVES.register("sce")
class SymmetricCrossEntropy(_PerExampleLoss):
    """Symmetric cross entropy ``alpha CE + beta RCE`` (Wang et al., 2019, Sec. 3).

    Parameters
    ----------
    alpha, beta : float >= 0, defaults 0.1 and 1.0
        The paper's CIFAR-10 values (CIFAR-100: 6.0 and 0.1).
    log_zero : float < 0, default -4.0
        ``A`` (see :func:`~robustlab.label_noise.rce_loss`); the authors' code effectively uses
        ``ln(1e-4)``.
    """

    name = "sce"

    def __init__(self, *, alpha: float = 0.1, beta: float = 1.0, log_zero: float = RCE_LOG_ZERO) -> None:
        self.alpha = _weight("alpha", alpha)
        self.beta = _weight("beta", beta)
        self.log_zero = _log_zero(log_zero)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return L._sce(logits, labels, self.alpha, self.beta, self.log_zero)


@OBJECTIVES.register("nce")
class NormalizedCrossEntropy(_PerExampleLoss):
    """Normalized cross entropy alone (Ma et al., 2020, Sec. 3); see :func:`~robustlab.label_noise.nce_loss`.

    Robust but underfits on its own (the paper's motivation for APL); use ``nce+rce``.
    """

    name = "nce"

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return L._nce(logits, labels)


@OBJECTIVES.register("rce")
class ReverseCrossEntropy(_PerExampleLoss):
    """Reverse cross entropy alone (Wang et al., 2019, Sec. 3); see :func:`~robustlab.label_noise.rce_loss`.

    Parameters
    ----------
    log_zero : float < 0, default -4.0
    """

    name = "rce"

    def __init__(self, *, log_zero: float = RCE_LOG_ZERO) -> None:
        self.log_zero = _log_zero(log_zero)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return L._rce(logits, labels, self.log_zero)


@OBJECTIVES.register("mae")
class MeanAbsoluteError(_PerExampleLoss):
    """Mean absolute error ``2 (1 - p_y)`` (Ghosh et al., 2017); see :func:`~robustlab.label_noise.mae_loss`."""

    name = "mae"

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return L._mae(logits, labels)


@OBJECTIVES.register("nce+rce")
class NCERCE(_PerExampleLoss):
    """Active-Passive Loss ``alpha NCE + beta RCE`` (Ma et al., 2020, Sec. 4).

    Parameters
    ----------
    alpha, beta : float >= 0, defaults 1.0 and 1.0
        The authors' CIFAR-10 configuration (``configs/cifar10/sym/nce+rce.yaml``; CIFAR-100 uses
        10.0 and 0.1).
    log_zero : float < 0, default -4.0
        ``A`` of the RCE term. The authors' code clamps the one-hot at 1e-4 (``A = ln 1e-4``), so
        its RCE is ``9.21 (1 - p_y)`` against our ``4 (1 - p_y)``; pass ``log_zero=math.log(1e-4)``
        to reproduce their runs exactly.
    """

    name = "nce+rce"

    def __init__(self, *, alpha: float = 1.0, beta: float = 1.0, log_zero: float = RCE_LOG_ZERO) -> None:
        self.alpha = _weight("alpha", alpha)
        self.beta = _weight("beta", beta)
        self.log_zero = _log_zero(log_zero)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.alpha * L._nce(logits, labels) + self.beta * L._rce(logits, labels, self.log_zero)


@OBJECTIVES.register("nce+mae")
class NCEMAE(_PerExampleLoss):
    """Active-Passive Loss ``alpha NCE + beta MAE`` (Ma et al., 2020, Sec. 4).

    Parameters
    ----------
    alpha, beta : float >= 0, defaults 1.0 and 1.0
        The authors' CIFAR-10 configuration (``configs/cifar10/sym/nce+mae.yaml``).

    Notes
    -----
    MAE is the paper's ``||p - e_y||_1 = 2 (1 - p_y)``. The authors' code uses the "reduced MAE"
    ``1 - p_y``, so their ``beta`` is twice ours: ``beta=0.5`` here reproduces their runs.
    """

    name = "nce+mae"

    def __init__(self, *, alpha: float = 1.0, beta: float = 1.0) -> None:
        self.alpha = _weight("alpha", alpha)
        self.beta = _weight("beta", beta)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.alpha * L._nce(logits, labels) + self.beta * L._mae(logits, labels)


# ---------------------------------------------------------------------- LogitClip
@OBJECTIVES.register("logitclip")
class LogitClip(_PerExampleLoss):
    """LogitClip: cross entropy on logits clipped to norm ``delta`` (Wei et al., 2023, Sec. 3).

    See :func:`~robustlab.label_noise.logitclip_loss` (including the deviation from the authors'
    code). The returned ``logits`` are the model's unclipped logits (used for accuracy only).

    Parameters
    ----------
    delta : float > 0, default 1/1.5
        Norm bound (``1 / tau`` of the authors' ``--temp tau``; CIFAR-10 example ``tau = 1.5``).
    norm : {"l2", "l1", "linf"}, default "l2"
    """

    name = "logitclip"

    def __init__(self, *, delta: float = 1.0 / 1.5, norm: str = "l2") -> None:
        self.delta = check_number("delta", delta, low=0.0, low_inclusive=False)
        self.norm = check_choice("norm", norm, L.LOGITCLIP_NORMS)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return L._logitclip(logits, labels, self.delta, L.LOGITCLIP_NORMS[self.norm])


# ---------------------------------------------------------------------- mixup
@OBJECTIVES.register("mixup")
class Mixup(BaseObjective):
    """mixup: train on convex combinations of example pairs and of their labels (Zhang et al., 2018).

    Parameters
    ----------
    alpha : float > 0, default 1.0
        ``lambda ~ Beta(alpha, alpha)``. The paper's corrupted-label experiments (Sec. 3.4) use ``alpha`` in {1, 2, 8, 32}; 1 (uniform ``lambda``) is the default here.

    Notes
    -----
    Per batch (one ``lambda`` per batch, pairs by a random permutation ``pi`` of the batch, as in
    the authors' code):

    .. math:: \\tilde x = \\lambda x + (1 - \\lambda) x_{\\pi},\\qquad
              \\ell = \\lambda\\, \\mathrm{CE}(f(\\tilde x), y) + (1 - \\lambda)\\, \\mathrm{CE}(f(\\tilde x), y_{\\pi})

    which equals the cross entropy against the mixed label ``lambda e_y + (1 - lambda) e_{y_pi}``
    (the vicinal distribution of Sec. 2). ``lambda`` and ``pi`` are drawn from the objective's ``generator`` (``lambda`` via a
    NumPy generator seeded from it), so a seed fixes the run and resume is exact.

    The model only sees mixed inputs, so ``compute`` returns ``logits=None``: the Trainer reports
    no training accuracy and ``record_examples`` cannot be used with mixup (use the validation
    accuracy). An extra clean forward pass would change batch-norm statistics and cost time.

    References
    ----------
    Zhang, Cisse, Dauphin, Lopez-Paz. "mixup: Beyond empirical risk minimization." ICLR 2018,
    Sec. 2 (mixup) and Sec. 3.4 (corrupted labels).
    """

    name = "mixup"

    def __init__(self, *, alpha: float = 1.0) -> None:
        self.alpha = check_number("alpha", alpha, low=0.0, low_inclusive=False)
        self._generator: torch.Generator | None = None

    def setup(self, *, model: torch.nn.Module, train: Dataset, config: TrainConfig,
              device: torch.device, generator: torch.Generator) -> None:
        self._generator = generator

    def draw(self, n: int) -> tuple[float, torch.Tensor]:
        """``(lambda, permutation)`` for a batch of ``n`` from the generator given to ``setup``."""
        if self._generator is None:
            fail("generator", "set by setup() before compute() (run mixup through a Trainer)", None)
        seed = int(torch.randint(0, 2**62, (1,), generator=self._generator))
        lam = float(np.random.default_rng(seed).beta(self.alpha, self.alpha))
        return lam, torch.randperm(n, generator=self._generator)

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        lam, perm = self.draw(batch.labels.shape[0])
        perm = perm.to(batch.inputs.device)
        mixed = lam * batch.inputs + (1.0 - lam) * batch.inputs[perm]
        logits = model(mixed)
        loss = lam * F.cross_entropy(logits, batch.labels) + \
            (1.0 - lam) * F.cross_entropy(logits, batch.labels[perm])
        return ObjectiveOutput(loss=loss, logits=None, metrics={"lambda": lam})


# ---------------------------------------------------------------------- loss correction
class _Correction(BaseObjective):
    """Shared settings, transition estimation and state of forward/backward correction."""

    _invertible = False

    def __init__(self, *, transition: Any = None, pred_probs: Any = None, estimate_epochs: int | None = None,
                 holdout: float = 0.1, quantile: float = ANCHOR_QUANTILE, filter_outlier: bool = True) -> None:
        if transition is not None and pred_probs is not None:
            fail("pred_probs", "None when 'transition' is given (T is either given or estimated)",
                 "an array", describe_got=False)
        self.transition = None if transition is None else check_transition(
            "transition", transition, invertible=self._invertible)
        self.pred_probs = None if pred_probs is None else check_pred_probs("pred_probs", pred_probs)
        self.estimate_epochs = estimate_epochs if estimate_epochs is None else check_int(
            "estimate_epochs", estimate_epochs, low=1)
        self.holdout = check_number("holdout", holdout, low=0.0, high=0.5, high_inclusive=False)
        self.quantile = check_number("quantile", quantile, low=0.0, high=1.0, low_inclusive=False)
        self.filter_outlier = check_bool("filter_outlier", filter_outlier)
        self.transition_: torch.Tensor | None = None  # the T in use (given or estimated)
        self._operator: torch.Tensor | None = None  # T, or T^-1 for backward correction
        self._run: dict[str, Any] = {}

    def setup(self, *, model: torch.nn.Module, train: Dataset, config: TrainConfig,
              device: torch.device, generator: torch.Generator) -> None:
        k = train.num_classes
        self._run = {"model": model, "train": train, "config": config, "device": device,
                     "generator": generator}
        self.transition_ = None
        self._operator = None
        if self.transition is not None:
            self._use(check_transition("transition", self.transition, num_classes=k,
                                       invertible=self._invertible))
        elif self.pred_probs is not None:
            check_pred_probs("pred_probs", self.pred_probs, n=len(train), num_classes=k)
            self._use(self._estimate_from(self.pred_probs))

    def on_epoch_start(self, epoch: int) -> None:
        if self.transition_ is None:  # neither given nor restored from a checkpoint: estimate now
            self._use(self._estimate_from(self._warmup_pred_probs()))

    def _estimate_from(self, pred_probs: torch.Tensor) -> torch.Tensor:
        t = _anchor_impl(pred_probs.to(torch.float64), self.quantile, self.filter_outlier)
        if self._invertible:
            t = check_transition("estimated transition", t, invertible=True)
        return t

    def _warmup_pred_probs(self) -> torch.Tensor:
        """Train a CE copy of the model (initial weights), early-stopped on a noisy holdout."""
        from robustlab.models.inference import predict_logits
        from robustlab.training.optim import build_optimizer, build_scheduler

        run = self._run
        config: TrainConfig = run["config"]
        train: Dataset = run["train"]
        device: torch.device = run["device"]
        generator: torch.Generator = run["generator"]
        epochs = self.estimate_epochs or config.epochs
        n = len(train)
        n_holdout = min(max(round(self.holdout * n), 1), n - 1) if self.holdout > 0 and n > 1 else 0
        order = torch.randperm(n, generator=generator)
        fit = train.subset(order[n_holdout:])
        holdout = train.subset(order[:n_holdout]) if n_holdout else None
        warm_config = dataclasses.replace(config, epochs=epochs, sam_rho=None, sam_adaptive=False,
                                          warmup_epochs=min(config.warmup_epochs, epochs - 1),
                                          milestones=tuple(m for m in config.milestones if m < epochs))
        net = copy.deepcopy(run["model"]).to(device)
        params = [p for p in net.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, warm_config)
        scheduler = build_scheduler(optimizer, warm_config, steps_per_epoch=fit.num_batches(config.batch_size))
        shuffle = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        best_accuracy, best_state = -1.0, None
        for _ in range(epochs):
            net.train()
            for batch in fit.batches(config.batch_size, shuffle=True, generator=shuffle):
                x, y = batch.inputs.to(device), batch.labels.to(device)
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
                if config.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip_norm)
                optimizer.step()
                scheduler.step()
            if holdout is not None:
                predicted = predict_logits(net, holdout, device=device).argmax(1).cpu()
                accuracy = float((predicted == holdout.labels).float().mean())
                if accuracy > best_accuracy:
                    best_accuracy = accuracy
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if best_state is not None:
            net.load_state_dict(best_state)
        logits = predict_logits(net, train, device=device)
        return F.softmax(logits.to(torch.float64), dim=1)

    def _use(self, t: torch.Tensor) -> None:
        device = self._run["device"]
        self.transition_ = t.to(dtype=torch.float64, device=device)
        self._operator = self._make_operator(self.transition_)

    def _make_operator(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        if self._operator is None:
            fail("transition", "given, estimated or restored before compute() (run it through a Trainer)",
                 None)
        logits = model(batch.inputs)
        operator = self._operator.to(dtype=logits.dtype)
        return ObjectiveOutput(loss=self._loss(logits, batch.labels, operator).mean(), logits=logits)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"transition": None if self.transition_ is None else self.transition_.detach().cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("transition")
        if saved is not None:
            self._use(check_transition("transition", saved, num_classes=self._run["train"].num_classes))

    def __repr__(self) -> str:
        given = "given" if self.transition is not None else (
            "from pred_probs" if self.pred_probs is not None else "estimated")
        return (f"{type(self).__name__}(transition={given}, estimate_epochs={self.estimate_epochs}, "
                f"holdout={self.holdout}, quantile={self.quantile}, filter_outlier={self.filter_outlier})")


_CORRECTION_DOC = """
    Parameters
    ----------
    transition : (K, K) Tensor, ndarray or path to a .npy file, optional
        Known row-stochastic ``T[i, j] = P(noisy = j | true = i)``.
    pred_probs : (N, K) Tensor or ndarray, optional
        Predicted noisy-label probabilities for the training set (e.g. out-of-sample, from
        cross-validation); T is estimated from them with the anchor-point estimator in ``setup``.
    estimate_epochs : int >= 1 or None, default None
        Epochs of the cross-entropy warm-up when neither ``transition`` nor ``pred_probs`` is given;
        None means ``config.epochs``.
    holdout : float in [0, 0.5), default 0.1
        Fraction of the (noisy) training data held out from the warm-up to pick its best epoch by
        noisy-label accuracy, as the authors' code does (``validation_split=0.1`` and the best
        model kept). 0 uses the last epoch, whose training-set predictions are near one-hot once
        the network memorises the noise, so that ``T_hat`` tends to the identity.
    quantile : float in (0, 1], default 0.97
    filter_outlier : bool, default True
        Settings of :func:`~robustlab.label_noise.estimate_transition_anchor`.

    Notes
    -----
    **Estimated T (neither ``transition`` nor ``pred_probs``).** Patrini et al.'s two-stage
    procedure (the paper's noise estimation and their ``experiment.py``): at the start of the
    first epoch, a random ``holdout`` fraction of the noisy training data is set aside and a copy
    of the model with its *initial* weights is trained with plain cross entropy on the rest for
    ``estimate_epochs`` epochs, using the run's optimizer, learning-rate schedule, batch size and
    gradient clipping (no SAM); the weights of the epoch with the best accuracy on the held-out
    noisy labels are kept. Its softmax on the *whole* training set (eval mode; "use all X_train"
    in their code) gives ``pred_probs``, from which
    :func:`~robustlab.label_noise.estimate_transition_anchor` gives ``T_hat``. Then the model is
    trained from its initial weights with the corrected loss on all the training data. Data
    order, the split and all other randomness come from the objective's generator. ``T_hat`` is
    stored in checkpoints, so a resumed run does not estimate again; it is exposed as
    ``transition_``.
"""


@OBJECTIVES.register("forward")
class ForwardCorrection(_Correction):
    __doc__ = """Forward loss correction ``-log (T^T p)_y`` (Patrini et al., 2017, Theorem 2).

    See :func:`~robustlab.label_noise.forward_corrected_loss`.
    """ + _CORRECTION_DOC + """
    References
    ----------
    Patrini, Rozza, Menon, Nock, Qu. "Making deep neural networks robust to label noise: a loss
    correction approach." CVPR 2017.
    """

    name = "forward"

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
        return L._forward(logits, labels, operator)


@OBJECTIVES.register("backward")
class BackwardCorrection(_Correction):
    __doc__ = """Backward loss correction ``(T^-1 l(p))_y`` (Patrini et al., 2017, Theorem 1).

    See :func:`~robustlab.label_noise.backward_corrected_loss`. ``T`` must be invertible. As written
    in the paper the loss is unbounded below (negative entries of ``T^-1``) and training with an
    estimated ``T`` diverges to chance; like the authors' code, probabilities are clipped to
    ``[prob_clip, 1 - prob_clip]`` before the log (``prob_clip=0`` gives the unclipped formula).
    ``prob_clip`` (float in [0, 0.5), default 1e-7) is the one parameter beyond the ones below.
    """ + _CORRECTION_DOC + """
    References
    ----------
    Patrini et al., CVPR 2017.
    """

    name = "backward"
    _invertible = True

    def __init__(self, *, transition: Any = None, pred_probs: Any = None, estimate_epochs: int | None = None,
                 holdout: float = 0.1, quantile: float = ANCHOR_QUANTILE, filter_outlier: bool = True,
                 prob_clip: float = BACKWARD_PROB_CLIP) -> None:
        super().__init__(transition=transition, pred_probs=pred_probs, estimate_epochs=estimate_epochs,
                         holdout=holdout, quantile=quantile, filter_outlier=filter_outlier)
        self.prob_clip = L.check_backward_prob_clip(prob_clip)

    def _make_operator(self, t: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(t)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
        return L._backward(logits, labels, operator, self.prob_clip)
