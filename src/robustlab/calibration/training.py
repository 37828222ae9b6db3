"""Training-time calibration: Trainer objectives that keep a classifier from becoming over-confident.

=============================== ============================================ ==========================================
name                            class                                        defaults
=============================== ============================================ ==========================================
``maxsup``                      :class:`MaxSup`                              ``alpha=0.1, alpha_end=0.2`` (linear ramp)
``adaptive-label-smoothing``    :class:`AdaptiveConditionalLabelSmoothing`   ``alpha=0.1, pos_lambda=1, neg_lambda=0.1,
                                                                             margin=10`` (ACLS)
=============================== ============================================ ==========================================

Related objectives that live elsewhere (one implementation each): plain label smoothing is
``"label-smoothing"`` (:class:`robustlab.label_noise.objectives.LabelSmoothing`, Szegedy et al.
2016) and mixup is ``"mixup"`` (:class:`robustlab.label_noise.objectives.Mixup`, Zhang et al. 2018).

Which "adaptive / conditional label smoothing". Several papers use the words; the one implemented
here is ACLS (Park et al., ICCV 2023), whose name is "Adaptive and Conditional Label Smoothing":
its regulariser acts on each logit by how far it lies from the example's largest logit
(*adaptive*: the strength depends on the model's own confidence in that example) and differently
for the predicted class and the others (*conditional*). It is one method, so there is no separate
``conditional-label-smoothing`` objective. Methods that need extra inputs (object sizes in
Krothapalli & Abbott 2020) or learn class-wise multipliers with an augmented Lagrangian (CALS,
Liu et al. 2023) are not implemented.

The loss functions are public (:func:`maxsup_loss`, :func:`acls_loss`) and validate their inputs;
the objectives call their trusted cores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from robustlab._checks import check_labels, check_logits, check_number, fail
from robustlab._constants import (
    ACLS_ALPHA,
    ACLS_MARGIN,
    ACLS_NEG_LAMBDA,
    ACLS_POS_LAMBDA,
    MAXSUP_ALPHA,
    MAXSUP_ALPHA_END,
)
from robustlab.data.dataset import Batch, Dataset
from robustlab.training.objective import OBJECTIVES, BaseObjective, ObjectiveOutput

if TYPE_CHECKING:
    from robustlab.training.config import TrainConfig

__all__ = ["AdaptiveConditionalLabelSmoothing", "MaxSup", "acls_loss", "maxsup_loss"]


def _validated(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    z = check_logits("logits", logits)
    y = check_labels("labels", labels, num_classes=z.shape[1], n=z.shape[0])
    return z, y.to(z.device)


# --------------------------------------------------------------------------- MaxSup
def maxsup_loss(logits: Any, labels: Any, *, alpha: float = MAXSUP_ALPHA) -> torch.Tensor:
    """Cross entropy plus Max Suppression (Zhou et al., 2025), averaged over the batch.

    Parameters
    ----------
    logits : Tensor of shape (N, K)
    labels : int Tensor of shape (N,)
    alpha : float >= 0, default 0.1
        Weight of the suppression term (the authors' start value, see :class:`MaxSup`).

    Returns
    -------
    Tensor, shape ()
        ``mean_i [CE(z_i, y_i) + alpha * (max_k z_ik - mean_k z_ik)]``; differentiable.

    Notes
    -----
    Label smoothing with strength ``alpha`` equals ``CE + alpha * (z_y - mean_k z_k)`` (the
    paper's decomposition of label smoothing); MaxSup replaces the true-class logit ``z_y`` by the largest
    logit ``z_max``, so the penalty also falls on confident *wrong* predictions.

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[2.0, 0.0, -2.0]])
    >>> float(maxsup_loss(z, torch.tensor([1]), alpha=0.5) - torch.nn.functional.cross_entropy(z, torch.tensor([1])))
    1.0
    """
    z, y = _validated(logits, labels)
    alpha = check_number("alpha", alpha, low=0.0)
    return _maxsup_impl(z, y, alpha).mean()


def _maxsup_impl(z: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    ce = F.cross_entropy(z, y, reduction="none")
    return ce + alpha * (z.max(dim=1).values - z.mean(dim=1))


@OBJECTIVES.register("maxsup")
class MaxSup(BaseObjective):
    """Max Suppression (MaxSup): cross entropy plus ``alpha * (z_max - mean_k z_k)`` on the logits.

    Parameters
    ----------
    alpha : float >= 0, default 0.1
        Weight of the suppression term at the first epoch.
    alpha_end : float >= 0 or None, default 0.2
        Weight at the last epoch; in between it grows linearly with the epoch,
        ``alpha_e = alpha + (alpha_end - alpha) * e / max(1, epochs - 1)``. ``None`` keeps
        ``alpha`` constant. The ramp 0.1 -> 0.2 is the authors' (ZhouYuxuanYX/Maximum-Suppression-
        Regularization: ``LT/loss/MAXsupLoss.py`` uses exactly this schedule; ``Conv/ffcv/losses.py``
        uses ``e / epochs``, which stops one step short of 0.2).

    Notes
    -----
    Per example, with logits :math:`z` over :math:`K` classes (the paper's MaxSup loss, also
    written out in the authors' README):

    .. math:: \\ell = \\mathrm{CE}(z, y) + \\alpha \\Big(\\max_k z_k - \\frac1K \\sum_k z_k\\Big)

    Outside a Trainer (``compute`` without ``setup``) the weight is ``alpha``. ``alpha = 0``
    (and ``alpha_end`` 0 or None) is plain cross entropy.

    References
    ----------
    Y. Zhou, H. Li, Z.-Q. Cheng, X. Yan, Y. Dong, M. Fritz, M. Keuper. "MaxSup: Overcoming
    Representation Collapse in Label Smoothing." arXiv:2502.15798, 2025.
    """

    name = "maxsup"

    def __init__(self, *, alpha: float = MAXSUP_ALPHA, alpha_end: float | None = MAXSUP_ALPHA_END) -> None:
        self.alpha = check_number("alpha", alpha, low=0.0)
        self.alpha_end = None if alpha_end is None else check_number("alpha_end", alpha_end, low=0.0)
        self._epochs = 1

    def setup(self, *, model: torch.nn.Module, train: Dataset, config: TrainConfig,
              device: torch.device, generator: torch.Generator) -> None:
        self._epochs = int(config.epochs)

    def weight(self, epoch: int) -> float:
        """The suppression weight used in ``epoch`` (0-based)."""
        if self.alpha_end is None:
            return self.alpha
        return self.alpha + (self.alpha_end - self.alpha) * min(epoch, self._epochs - 1) / max(1, self._epochs - 1)

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        logits = model(batch.inputs)
        alpha = self.weight(epoch)
        loss = _maxsup_impl(logits, batch.labels, alpha).mean()
        return ObjectiveOutput(loss=loss, logits=logits, metrics={"alpha": alpha})


# --------------------------------------------------------------------------- ACLS
def acls_loss(logits: Any, labels: Any, *, alpha: float = ACLS_ALPHA, pos_lambda: float = ACLS_POS_LAMBDA,
              neg_lambda: float = ACLS_NEG_LAMBDA, margin: float = ACLS_MARGIN) -> torch.Tensor:
    """Cross entropy plus the ACLS regulariser (Park et al., ICCV 2023), averaged over the batch.

    Parameters
    ----------
    logits : Tensor of shape (N, K), K >= 2
    labels : int Tensor of shape (N,)
    alpha : float >= 0, default 0.1
        Weight of the regulariser.
    pos_lambda : float >= 0, default 1.0
        Weight of the term on the largest logit (:math:`\\lambda_1`).
    neg_lambda : float >= 0, default 0.1
        Weight of the term on the other logits (:math:`\\lambda_2`).
    margin : float >= 0, default 10.0
        Margin :math:`m`.

    Returns
    -------
    Tensor, shape ()

    Notes
    -----
    With :math:`z_{\\max} = \\max_k z_k` and :math:`\\bar z_{\\max}` the same value with no gradient,

    .. math:: R = \\lambda_1 \\frac1N \\sum_i \\sum_{j: z_{ij} = z_{i\\max}} \\mathrm{ReLU}(z_{i\\max} - m)^2
              + \\lambda_2 \\frac{1}{N(K-1)} \\sum_i \\sum_{j: z_{ij} < z_{i\\max}}
              \\mathrm{ReLU}(\\bar z_{i\\max} - z_{ij} - m)^2

    and the loss is :math:`\\mathrm{CE} + \\alpha R`. The largest logit is pulled down once it
    exceeds :math:`m`; another logit is pulled up once it trails the largest by more than
    :math:`m` -- both with a strength that grows with the distance (adaptive), and by different
    rules for the predicted class and the rest (conditional). As in the authors' code
    (cvlab-yonsei/ACLS ``calibrate/losses/acls.py``; defaults from ``configs/loss/acls.yaml``),
    "the largest logit" is every logit equal to the row maximum (ties all count as positives)
    and the normalisers are :math:`N` and :math:`N(K-1)`. The labels enter only through the
    cross entropy.

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[12.0, 0.0, -1.0]])
    >>> ce = torch.nn.functional.cross_entropy(z, torch.tensor([0]))
    >>> round(float(acls_loss(z, torch.tensor([0])) - ce), 4)  # 0.1 * (1 * 2**2 + 0.1 * (2**2 + 3**2) / 2)
    0.465
    """
    z, y = _validated(logits, labels)
    if z.shape[1] < 2:
        fail("logits", "scores for at least 2 classes", f"shape {tuple(z.shape)}", describe_got=False)
    alpha = check_number("alpha", alpha, low=0.0)
    pos_lambda = check_number("pos_lambda", pos_lambda, low=0.0)
    neg_lambda = check_number("neg_lambda", neg_lambda, low=0.0)
    margin = check_number("margin", margin, low=0.0)
    return _acls_impl(z, y, alpha, pos_lambda, neg_lambda, margin)


def _acls_impl(z: torch.Tensor, y: torch.Tensor, alpha: float, pos_lambda: float, neg_lambda: float,
               margin: float) -> torch.Tensor:
    n, k = z.shape
    z_max = z.max(dim=1, keepdim=True).values
    is_max = (z.detach() == z_max.detach()).to(z.dtype)
    pos = is_max * F.relu(z_max - margin).pow(2)
    neg = (1.0 - is_max) * F.relu(z_max.detach() - z - margin).pow(2)
    reg = pos_lambda * pos.sum() / max(n, 1) + neg_lambda * neg.sum() / max(n * (k - 1), 1)
    return F.cross_entropy(z, y) + alpha * reg


@OBJECTIVES.register("adaptive-label-smoothing")
class AdaptiveConditionalLabelSmoothing(BaseObjective):
    """ACLS: adaptive and conditional label smoothing (Park et al., ICCV 2023).

    Cross entropy plus a regulariser on the logits whose strength adapts to each logit's
    distance from the example's largest one and that treats the predicted class and the others
    differently; see :func:`acls_loss` for the formula. The paper shows that existing
    calibration regularisers (label smoothing, margin-based label smoothing, logit penalties)
    are label-smoothing variants that are adaptive *or* conditional, and ACLS combines both
    while avoiding their failure modes. Registered as ``"adaptive-label-smoothing"`` (the
    contract name for this family; why ACLS was chosen is in the module notes).

    Parameters
    ----------
    alpha : float >= 0, default 0.1
    pos_lambda : float >= 0, default 1.0
    neg_lambda : float >= 0, default 0.1
    margin : float >= 0, default 10.0
        Defaults of the authors' configuration (cvlab-yonsei/ACLS ``configs/loss/acls.yaml``).
        ``alpha = 0`` is plain cross entropy.

    References
    ----------
    H. Park, J. Noh, Y. Oh, D. Baek, B. Ham. "ACLS: Adaptive and Conditional Label Smoothing for
    Network Calibration." ICCV 2023, pp. 3936-3945 (arXiv:2308.11911).
    """

    name = "adaptive-label-smoothing"

    def __init__(self, *, alpha: float = ACLS_ALPHA, pos_lambda: float = ACLS_POS_LAMBDA,
                 neg_lambda: float = ACLS_NEG_LAMBDA, margin: float = ACLS_MARGIN) -> None:
        self.alpha = check_number("alpha", alpha, low=0.0)
        self.pos_lambda = check_number("pos_lambda", pos_lambda, low=0.0)
        self.neg_lambda = check_number("neg_lambda", neg_lambda, low=0.0)
        self.margin = check_number("margin", margin, low=0.0)

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        logits = model(batch.inputs)
        loss = _acls_impl(logits, batch.labels, self.alpha, self.pos_lambda, self.neg_lambda, self.margin)
        return ObjectiveOutput(loss=loss, logits=logits)
