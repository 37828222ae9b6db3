"""Noise-robust losses as plain functions: ``(logits, labels) -> per-example loss``.

Every public function validates its inputs, then calls a private ``_impl`` that trusts them; the
training objectives in :mod:`robustlab.label_noise.objectives` call the ``_impl`` functions so no
device synchronisation happens per step. All losses are computed from ``log_softmax`` (never from
a clamped softmax), so they and their gradients stay finite when ``p_y -> 0`` or ``p_y -> 1``.

Notation: ``z`` logits ``(N, K)``, ``p = softmax(z)``, ``y`` the given (possibly noisy) label,
``e_y`` its one-hot vector, ``T`` a transition matrix with ``T[i, j] = P(noisy = j | true = i)``.

* :func:`bootstrap_soft_loss` — ``-sum_k (beta e_y + (1 - beta) p)_k log p_k`` (Reed et al., 2015)
* :func:`bootstrap_hard_loss` — ``-beta log p_y - (1 - beta) log p_argmax`` (Reed et al., 2015)
* :func:`gce_loss` — ``(1 - p_y^q) / q``, optionally truncated (Zhang & Sabuncu, 2018)
* :func:`sce_loss` — ``alpha CE + beta RCE`` (Wang et al., 2019)
* :func:`nce_loss` — ``log p_y / sum_k log p_k`` (Ma et al., 2020)
* :func:`rce_loss` — ``-sum_k p_k log clip(e_y)_k = -A (1 - p_y)`` (Wang et al., 2019)
* :func:`mae_loss` — ``||p - e_y||_1 = 2 (1 - p_y)`` (Ghosh et al., 2017)
* :func:`forward_corrected_loss` — ``-log (T^T p)_y`` (Patrini et al., 2017)
* :func:`backward_corrected_loss` — ``sum_k (T^-1)_{y,k} (-log p_k)`` (Patrini et al., 2017)
* :func:`logitclip_loss` — ``CE(clip_delta(z), y)`` (Wei et al., 2023)

References name the section of each paper (and the theorem where the paper states the result
as one).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from robustlab._checks import (
    check_choice,
    check_labels,
    check_logits,
    check_number,
    fail,
)
from robustlab._constants import BACKWARD_PROB_CLIP, LOGITCLIP_NORM_EPS, RCE_LOG_ZERO
from robustlab.errors import InvalidTypeError, ShapeError
from robustlab.label_noise.transition import check_transition

__all__ = [
    "LOGITCLIP_NORMS",
    "backward_corrected_loss",
    "bootstrap_hard_loss",
    "bootstrap_soft_loss",
    "clip_logits",
    "forward_corrected_loss",
    "gce_loss",
    "logitclip_loss",
    "mae_loss",
    "nce_loss",
    "rce_loss",
    "sce_loss",
]

#: Norms accepted by :func:`logitclip_loss` (the ``p`` of the logit p-norm).
LOGITCLIP_NORMS: dict[str, float] = {"l1": 1.0, "l2": 2.0, "linf": math.inf}


# ---------------------------------------------------------------------- validation helpers
def _checked(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(logits, torch.Tensor):
        fail("logits", "a float tensor of shape (N, K)", logits, error=InvalidTypeError)
    logits = check_logits("logits", logits, error=ShapeError)
    if not logits.is_floating_point():
        fail("logits", "a float tensor", logits, error=InvalidTypeError)
    labels = check_labels("labels", labels, num_classes=logits.shape[1], n=logits.shape[0])
    return logits, labels.to(logits.device)


def _check_weight(name: str, value: Any) -> float:
    return check_number(name, value, low=0.0)


def _check_log_zero(value: Any) -> float:
    return check_number("log_zero", value, high=0.0, high_inclusive=False)


def _log_p_y(log_p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return log_p.gather(1, labels[:, None]).squeeze(1)


# ---------------------------------------------------------------------- bootstrapping
def bootstrap_soft_loss(logits: torch.Tensor, labels: torch.Tensor, *, beta: float = 0.95) -> torch.Tensor:
    """Soft bootstrapping loss (Reed et al., 2015), per example.

    Parameters
    ----------
    logits : Tensor of shape (N, K)
    labels : int Tensor of shape (N,)
    beta : float in [0, 1], default 0.95
        Weight of the given label; ``1 - beta`` goes to the model's own prediction. 0.95 is the
        paper's value for soft bootstrapping. ``beta = 1`` is cross entropy.

    Returns
    -------
    Tensor of shape (N,)

    Notes
    -----
    .. math:: \\ell = -\\sum_k (\\beta\\, e_{y,k} + (1 - \\beta)\\, p_k) \\log p_k

    The gradient flows through both occurrences of ``p`` (the target is not detached), as in the
    paper's formulation ("soft" variant) and in Patrini et al.'s ``boot_soft``.

    References
    ----------
    Reed, Lee, Anguelov, Szegedy, Erhan, Rabinovich. "Training deep neural networks on noisy labels
    with bootstrapping." ICLR Workshop 2015 (the soft bootstrapping objective).
    """
    logits, labels = _checked(logits, labels)
    return _bootstrap_soft(logits, labels, check_number("beta", beta, low=0.0, high=1.0))


def _bootstrap_soft(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=1)
    ce = -_log_p_y(log_p, labels)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return beta * ce + (1.0 - beta) * entropy


def bootstrap_hard_loss(logits: torch.Tensor, labels: torch.Tensor, *, beta: float = 0.8) -> torch.Tensor:
    """Hard bootstrapping loss (Reed et al., 2015), per example.

    Parameters
    ----------
    logits : Tensor of shape (N, K)
    labels : int Tensor of shape (N,)
    beta : float in [0, 1], default 0.8
        Weight of the given label; ``1 - beta`` goes to the model's arg-max class. 0.8 is the
        paper's value for hard bootstrapping. ``beta = 1`` is cross entropy.

    Returns
    -------
    Tensor of shape (N,)

    Notes
    -----
    .. math:: \\ell = -\\beta \\log p_y - (1 - \\beta) \\log p_{\\hat y},\\quad \\hat y = \\arg\\max_k p_k

    References
    ----------
    Reed et al., ICLR Workshop 2015 (the hard bootstrapping objective).
    """
    logits, labels = _checked(logits, labels)
    return _bootstrap_hard(logits, labels, check_number("beta", beta, low=0.0, high=1.0))


def _bootstrap_hard(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=1)
    predicted = logits.detach().argmax(dim=1)
    return -beta * _log_p_y(log_p, labels) - (1.0 - beta) * _log_p_y(log_p, predicted)


# ---------------------------------------------------------------------- GCE
def gce_loss(logits: torch.Tensor, labels: torch.Tensor, *, q: float = 0.7,
             truncation: float | None = None) -> torch.Tensor:
    """Generalized cross entropy ``L_q`` (Zhang & Sabuncu, 2018), optionally truncated, per example.

    Parameters
    ----------
    logits : Tensor of shape (N, K)
    labels : int Tensor of shape (N,)
    q : float in (0, 1], default 0.7
        The paper's value for its experiments. ``q -> 0`` gives cross entropy, ``q = 1`` gives
        ``1 - p_y`` (half the MAE, :func:`mae_loss`).
    truncation : float in (0, 1) or None, default None
        ``k`` of the truncated loss ``L_trunc``; the paper uses ``k = 0.5``.

    Returns
    -------
    Tensor of shape (N,)

    Notes
    -----
    .. math:: L_q = \\frac{1 - p_y^q}{q}

    .. math:: L_{trunc} = L_q(k) \\text{ if } p_y \\le k \\text{ else } L_q(p_y)

    ``p_y^q`` is computed as ``exp(q log p_y)``, finite with a finite gradient for any logits.

    **Deviation.** The paper optimises ``L_trunc`` by alternating convex search: every 10 epochs
    (from epoch 40) it prunes the examples with ``p_y <= k`` through weights ``w_i`` (alternating convex search, Sec. 3.3).
    Here the truncation is applied per step to the current prediction, which is the same loss
    with the pruning refreshed every step (pruned examples contribute the constant ``L_q(k)``
    and no gradient).

    References
    ----------
    Zhang, Sabuncu. "Generalized cross entropy loss for training deep neural networks with noisy
    labels." NeurIPS 2018, Sec. 3.2 (L_q) and Sec. 3.3 (truncated L_q).

    Examples
    --------
    >>> import torch
    >>> z = torch.log(torch.tensor([[1.0, 2.0, 3.0]]))  # p = [1/6, 1/3, 1/2]
    >>> gce_loss(z, torch.tensor([2]))  # (1 - 0.5 ** 0.7) / 0.7
    tensor([0.5492])
    """
    logits, labels = _checked(logits, labels)
    q = check_number("q", q, low=0.0, high=1.0, low_inclusive=False)
    if truncation is not None:
        truncation = check_number("truncation", truncation, low=0.0, high=1.0, low_inclusive=False,
                                  high_inclusive=False)
    return _gce(logits, labels, q, truncation)


def _gce(logits: torch.Tensor, labels: torch.Tensor, q: float, truncation: float | None) -> torch.Tensor:
    log_p_y = _log_p_y(F.log_softmax(logits, dim=1), labels)
    loss = (1.0 - torch.exp(q * log_p_y)) / q
    if truncation is not None:
        floor = (1.0 - truncation ** q) / q
        loss = torch.where(log_p_y > math.log(truncation), loss, torch.full_like(loss, floor))
    return loss


# ---------------------------------------------------------------------- symmetric / normalised
def rce_loss(logits: torch.Tensor, labels: torch.Tensor, *, log_zero: float = RCE_LOG_ZERO) -> torch.Tensor:
    """Reverse cross entropy (Wang et al., 2019), per example.

    Parameters
    ----------
    logits : Tensor of shape (N, K)
    labels : int Tensor of shape (N,)
    log_zero : float < 0, default -4.0
        ``A``, the value substituted for ``log 0`` in the one-hot label (the paper's ``A = -4``).
        The authors' code clamps the one-hot at ``1e-4``, i.e. ``A = ln(1e-4) ~ -9.21``.

    Returns
    -------
    Tensor of shape (N,)

    Notes
    -----
    .. math:: \\ell_{rce} = -\\sum_k p_k \\log q_k = -A (1 - p_y),\\quad q = e_y,\\ \\log 0 := A

    Symmetric (Ma et al., 2020, Sec. 3): ``sum_j rce(z, j) = -A (K - 1)`` for every ``z``.

    References
    ----------
    Wang, Ma, Chen, Luo, Yi, Bailey. "Symmetric cross entropy for robust learning with noisy
    labels." ICCV 2019, Sec. 3 (RCE and the constant ``A``).
    """
    logits, labels = _checked(logits, labels)
    return _rce(logits, labels, _check_log_zero(log_zero))


def _rce(logits: torch.Tensor, labels: torch.Tensor, log_zero: float) -> torch.Tensor:
    p_y = _log_p_y(F.log_softmax(logits, dim=1), labels).exp()
    return -log_zero * (1.0 - p_y)


def sce_loss(logits: torch.Tensor, labels: torch.Tensor, *, alpha: float = 0.1, beta: float = 1.0,
             log_zero: float = RCE_LOG_ZERO) -> torch.Tensor:
    """Symmetric cross entropy ``alpha * CE + beta * RCE`` (Wang et al., 2019), per example.

    Parameters
    ----------
    logits : Tensor of shape (N, K)
    labels : int Tensor of shape (N,)
    alpha, beta : float >= 0, defaults 0.1 and 1.0
        The paper's CIFAR-10 values (CIFAR-100 uses 6.0 and 0.1).
    log_zero : float < 0, default -4.0
        ``A`` of the reverse cross entropy, see :func:`rce_loss`.

    Returns
    -------
    Tensor of shape (N,)

    Notes
    -----
    .. math:: \\ell_{sl} = \\alpha\\, \\ell_{ce} + \\beta\\, \\ell_{rce}

    References
    ----------
    Wang et al., ICCV 2019, Sec. 3.
    """
    logits, labels = _checked(logits, labels)
    return _sce(logits, labels, _check_weight("alpha", alpha), _check_weight("beta", beta),
                _check_log_zero(log_zero))


def _sce(logits: torch.Tensor, labels: torch.Tensor, alpha: float, beta: float, log_zero: float) -> torch.Tensor:
    log_p_y = _log_p_y(F.log_softmax(logits, dim=1), labels)
    return alpha * (-log_p_y) + beta * (-log_zero) * (1.0 - log_p_y.exp())


def nce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Normalized cross entropy (Ma et al., 2020), per example, in ``[0, 1]``.

    Parameters
    ----------
    logits : Tensor of shape (N, K)
    labels : int Tensor of shape (N,)

    Returns
    -------
    Tensor of shape (N,)

    Notes
    -----
    .. math:: \\ell_{nce} = \\frac{-\\log p_y}{-\\sum_{k=1}^{K} \\log p_k}

    Normalised losses are symmetric: ``sum_j nce(z, j) = 1`` for every ``z`` (Ma et al., Sec. 3), hence
    robust to symmetric noise below ``(K - 1) / K`` (Ghosh et al., 2017, Theorem 1).

    References
    ----------
    Ma, Huang, Wang, Romano, Erfani, Bailey. "Normalized loss functions for deep learning with
    noisy labels." ICML 2020, Sec. 3.

    Examples
    --------
    >>> import torch
    >>> z = torch.log(torch.tensor([[1.0, 2.0, 3.0]]))  # p = [1/6, 1/3, 1/2]
    >>> nce_loss(z, torch.tensor([2]))  # log(1/2) / log(1/36)
    tensor([0.1934])
    """
    logits, labels = _checked(logits, labels)
    return _nce(logits, labels)


def _nce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=1)
    return _log_p_y(log_p, labels) / log_p.sum(dim=1)


def mae_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between ``p`` and the one-hot label (Ghosh et al., 2017), per example.

    Parameters
    ----------
    logits : Tensor of shape (N, K)
    labels : int Tensor of shape (N,)

    Returns
    -------
    Tensor of shape (N,)
        Values in ``[0, 2]``.

    Notes
    -----
    .. math:: \\ell_{mae} = \\sum_k |p_k - e_{y,k}| = 2 (1 - p_y)

    Symmetric: ``sum_j mae(z, j) = 2 (K - 1)``. The APL authors' code uses the "reduced" MAE
    ``1 - p_y`` (half of this), see :class:`~robustlab.label_noise.objectives.NCEMAE`.

    References
    ----------
    Ghosh, Kumar, Sastry. "Robust loss functions under label noise for deep neural networks."
    AAAI 2017. Ma et al., ICML 2020, Sec. 4 (MAE as a passive loss).
    """
    logits, labels = _checked(logits, labels)
    return _mae(logits, labels)


def _mae(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    p_y = _log_p_y(F.log_softmax(logits, dim=1), labels).exp()
    return 2.0 * (1.0 - p_y)


# ---------------------------------------------------------------------- loss correction
def forward_corrected_loss(logits: torch.Tensor, labels: torch.Tensor, transition: Any) -> torch.Tensor:
    """Forward-corrected cross entropy (Patrini et al., 2017), per example.

    Parameters
    ----------
    logits : Tensor of shape (N, K)
        The model's scores for the *clean* class.
    labels : int Tensor of shape (N,)
        Noisy labels.
    transition : Tensor or ndarray of shape (K, K)
        Row-stochastic ``T[i, j] = P(noisy = j | true = i)``.

    Returns
    -------
    Tensor of shape (N,)

    Notes
    -----
    .. math:: \\ell^{\\rightarrow} = -\\log\\, (T^\\top p)_y = -\\log \\sum_i p_i T_{i y}
              \\qquad (\\text{Theorem 2})

    The noisy-class probability is floored at the smallest positive float before the log, so a
    zero entry in ``T`` cannot produce an infinite loss (the authors' code clips at 1e-7).

    References
    ----------
    Patrini, Rozza, Menon, Nock, Qu. "Making deep neural networks robust to label noise: a loss
    correction approach." CVPR 2017, Sec. 3 (Theorem 2).
    """
    logits, labels = _checked(logits, labels)
    t = check_transition("transition", transition, num_classes=logits.shape[1])
    return _forward(logits, labels, t.to(device=logits.device, dtype=logits.dtype))


def _forward(logits: torch.Tensor, labels: torch.Tensor, transition: torch.Tensor) -> torch.Tensor:
    noisy = F.softmax(logits, dim=1) @ transition
    p_y = noisy.gather(1, labels[:, None]).squeeze(1)
    return -torch.log(p_y.clamp_min(torch.finfo(p_y.dtype).tiny))


def backward_corrected_loss(logits: torch.Tensor, labels: torch.Tensor, transition: Any, *,
                            prob_clip: float = BACKWARD_PROB_CLIP) -> torch.Tensor:
    """Backward-corrected cross entropy (Patrini et al., 2017), per example.

    Parameters
    ----------
    logits : Tensor of shape (N, K)
    labels : int Tensor of shape (N,)
        Noisy labels.
    transition : Tensor or ndarray of shape (K, K)
        Row-stochastic and invertible.
    prob_clip : float in [0, 0.5), default 1e-7
        Probabilities are clipped to ``[prob_clip, 1 - prob_clip]`` before the log, as in the
        authors' code (giorgiop/loss-correction ``loss.py``, ``robust('backward')``: Keras
        ``K.clip(y_pred, K.epsilon(), 1 - K.epsilon())``, epsilon 1e-7). Without it the loss is
        unbounded below wherever ``T^-1`` has a negative entry (driving that class's ``p_k`` to 0
        sends the loss to ``-inf``), and training diverges to chance; with it the loss is bounded
        below by ``sum_k min((T^-1)_{yk}, 0) * (-log prob_clip)``. ``0`` disables clipping
        (the paper's formula as written).

    Returns
    -------
    Tensor of shape (N,)
        May be negative: ``T^-1`` has negative entries.

    Notes
    -----
    .. math:: \\ell^{\\leftarrow}(p, y) = \\big(T^{-1} \\boldsymbol\\ell(p)\\big)_y
              = \\sum_k (T^{-1})_{y k}\\, (-\\log p_k)  \\qquad (\\text{Theorem 1})

    where ``l(p)_k = -log p_k`` is the cross entropy of ``p`` for label ``k``. Unbiased: its
    expectation over the noisy label equals the clean cross entropy.

    References
    ----------
    Patrini et al., CVPR 2017, Sec. 3 (Theorem 1).
    """
    logits, labels = _checked(logits, labels)
    t = check_transition("transition", transition, num_classes=logits.shape[1], invertible=True)
    prob_clip = check_backward_prob_clip(prob_clip)
    inverse = torch.linalg.inv(t.to(torch.float64)).to(device=logits.device, dtype=logits.dtype)
    return _backward(logits, labels, inverse, prob_clip)


def check_backward_prob_clip(prob_clip: Any) -> float:
    return check_number("prob_clip", prob_clip, low=0.0, high=0.5, high_inclusive=False)


def _backward(logits: torch.Tensor, labels: torch.Tensor, inverse: torch.Tensor,
              prob_clip: float = BACKWARD_PROB_CLIP) -> torch.Tensor:
    if prob_clip > 0:
        log_p = F.softmax(logits, dim=1).clamp(prob_clip, 1.0 - prob_clip).log()
    else:
        log_p = F.log_softmax(logits, dim=1)
    return (inverse[labels] * -log_p).sum(dim=1)


# ---------------------------------------------------------------------- LogitClip
def clip_logits(logits: torch.Tensor, *, delta: float, norm: str = "l2") -> torch.Tensor:
    """Scale each row of ``logits`` down to norm ``delta`` when its norm exceeds ``delta``.

    .. math:: \\mathrm{clip}_\\delta(z) = \\delta\\, z / \\|z\\|_p \\text{ if } \\|z\\|_p > \\delta
              \\text{ else } z
    """
    if not isinstance(logits, torch.Tensor):
        fail("logits", "a float tensor of shape (N, K)", logits, error=InvalidTypeError)
    logits = check_logits("logits", logits, error=ShapeError)
    delta = check_number("delta", delta, low=0.0, low_inclusive=False)
    check_choice("norm", norm, LOGITCLIP_NORMS)
    return _clip_logits(logits, delta, LOGITCLIP_NORMS[norm])


def _clip_logits(logits: torch.Tensor, delta: float, p: float) -> torch.Tensor:
    norms = torch.linalg.vector_norm(logits, ord=p, dim=1, keepdim=True)
    scaled = logits * (delta / (norms + LOGITCLIP_NORM_EPS))
    return torch.where(norms > delta, scaled, logits)


def logitclip_loss(logits: torch.Tensor, labels: torch.Tensor, *, delta: float = 1.0 / 1.5,
                   norm: str = "l2") -> torch.Tensor:
    """LogitClip: cross entropy on norm-clipped logits (Wei et al., 2023), per example.

    Parameters
    ----------
    logits : Tensor of shape (N, K)
    labels : int Tensor of shape (N,)
    delta : float > 0, default 1/1.5
        Upper bound on the logit norm. The authors' code takes ``--temp tau`` and clips to
        ``delta = 1 / tau``; their README runs CIFAR-10 with ``tau = 1.5``, our default.
    norm : {"l2", "l1", "linf"}, default "l2"
        Norm of the logit vector (the code's ``--lp 2``).

    Returns
    -------
    Tensor of shape (N,)

    Notes
    -----
    .. math:: \\ell_{LC}(z, y) = \\ell_{ce}(\\mathrm{clip}_\\delta(z), y),\\quad
              \\mathrm{clip}_\\delta(z) = \\delta\\, z / \\|z\\|_p \\text{ if } \\|z\\|_p > \\delta

    With the l2 norm, ``z_k - z_y <= sqrt(2) delta`` after clipping, so the loss is bounded by
    ``log(1 + (K - 1) exp(sqrt(2) delta))``: a wrong label cannot pull without limit.

    **Deviation.** The authors' code (``algorithms/clip.py``) tests ``||z|| > tau`` but rescales to
    ``1 / tau``; the two agree only for ``tau = 1``. We test against the bound we rescale to,
    ``||z|| > delta``, as the paper's definition does.

    References
    ----------
    Wei, Zhuang, Xie, Feng, Niu, An, Li. "Mitigating memorization of noisy labels by clipping the
    model prediction." ICML 2023, Sec. 3 (the LogitClip definition).
    """
    logits, labels = _checked(logits, labels)
    delta = check_number("delta", delta, low=0.0, low_inclusive=False)
    check_choice("norm", norm, LOGITCLIP_NORMS)
    return _logitclip(logits, labels, delta, LOGITCLIP_NORMS[norm])


def _logitclip(logits: torch.Tensor, labels: torch.Tensor, delta: float, p: float) -> torch.Tensor:
    return F.cross_entropy(_clip_logits(logits, delta, p), labels, reduction="none")
