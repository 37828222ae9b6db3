"""Learning through label noise with state: ELR, Co-teaching, Co-teaching+, Adaptive-k.

Each method is a registered Trainer objective (``Trainer(model, "elr")``, ``--method elr``):

* ``"elr"`` — Early-Learning Regularization (Liu et al., 2020): per-example temporal-ensemble
  targets and the regulariser ``log(1 - <p, t>)``.
* ``"coteaching"`` — Co-teaching (Han et al., 2018): two networks, each picks its small-loss
  examples for the other, with the forget-rate schedule ``R(T)``.
* ``"coteaching+"`` — Co-teaching+ (Yu et al., 2019): the same exchange restricted to the
  examples on which the two networks disagree.
* ``"adaptive-k"`` — Adaptive-k (Dedeoglu et al., 2023): train on the examples of a batch whose
  loss is below a threshold tracked by Adam-style moments of the batch mean loss.

The multi-network methods build their second network (the *peer*) in ``setup`` with
:func:`peer_network`, train it through ``extra_parameters`` (the one optimizer updates both) and
checkpoint its weights in ``state_dict``; the logits they return (accuracy, records, validation)
are those of the first network, the model handed to the Trainer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab._checks import check_generator, check_int, check_number, fail
from robustlab._constants import (
    ADAPTIVE_K_BETA1,
    ADAPTIVE_K_BETA2,
    ADAPTIVE_K_EPS,
    ADAPTIVE_K_WARMUP_FRACTION,
    COTEACHING_FORGET_RATE,
    COTEACHING_NUM_GRADUAL,
    ELR_BETA,
    ELR_CLAMP,
    ELR_LAMBDA,
)
from robustlab.data.dataset import Batch, Dataset
from robustlab.errors import InvalidTypeError
from robustlab.training.objective import (
    OBJECTIVES,
    BaseObjective,
    ObjectiveOutput,
    ParamSpec,
)

if TYPE_CHECKING:
    from robustlab.training.config import TrainConfig

__all__ = [
    "ELR",
    "AdaptiveK",
    "CoTeaching",
    "CoTeachingPlus",
    "coteaching_forget_rate",
    "num_remembered",
    "peer_network",
]


# ---------------------------------------------------------------------- shared pieces
def peer_network(model: nn.Module, *, generator: torch.Generator) -> nn.Module:
    """A second network with the architecture of ``model`` and a fresh, seeded initialisation.

    A deep copy of ``model`` (same layers, buffers and normalisation statistics), moved to the CPU,
    re-initialised, and moved back to the device of ``model``'s first parameter. Re-initialisation
    calls every submodule's ``reset_parameters()`` (PyTorch's default initialiser of that layer;
    batch-norm running statistics are reset too) and then the model's own ``_reset_parameters()``
    when it defines one (robustlab's wide-resnet does), under torch's global CPU generator forked
    and seeded with one draw from ``generator`` — so the peer depends only on ``generator`` and
    the caller's global RNG is untouched.

    Parameters
    ----------
    model : nn.Module
        The first network; not modified.
    generator : torch.Generator
        CPU generator; one 63-bit seed is drawn from it.

    Returns
    -------
    nn.Module
        In the training mode of ``model``.
    """
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module", model, error=InvalidTypeError)
    check_generator("generator", generator)
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    peer = copy.deepcopy(model).to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        for module in peer.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        own = getattr(peer, "_reset_parameters", None)
        if callable(own):
            own()
    return peer.to(device)


def coteaching_forget_rate(epoch: int, *, forget_rate: float, num_gradual: int) -> float:
    """Fraction of a batch dropped at 0-based ``epoch``: ``tau * min(T / T_k, 1)``, ``T = epoch + 1``.

    ``R(T) = 1 - min(T tau / T_k, tau)`` is the fraction kept (Han et al., 2018, Algorithm 1,
    step 5, with ``T`` the 1-based epoch of the algorithm's loop); this returns ``1 - R(T)``.
    The authors' code instead uses ``linspace(0, tau, T_k)`` for epochs ``0 .. T_k - 1``; both
    reach ``tau`` at epoch ``T_k - 1`` (0-based), the paper's formula starts at ``tau / T_k``
    instead of 0.
    """
    check_int("epoch", epoch, low=0)
    check_number("forget_rate", forget_rate, low=0.0, high=1.0, high_inclusive=False)
    check_int("num_gradual", num_gradual, low=1)
    return forget_rate * min((epoch + 1) / num_gradual, 1.0)


def num_remembered(n: int, forget_rate: float) -> int:
    """How many of ``n`` examples a small-loss selection keeps: ``floor((1 - forget_rate) n)``.

    ``int(remember_rate * n)`` as in the Co-teaching code, computed with a 1e-9 guard against
    float error (``0.7 * 10`` must give 7), and at least 1 when ``n >= 1`` so that a batch never
    yields an empty (NaN) mean.
    """
    check_int("n", n, low=0)
    check_number("forget_rate", forget_rate, low=0.0, high=1.0, high_inclusive=False)
    if n == 0:
        return 0
    return max(1, min(n, math.floor((1.0 - forget_rate) * n + 1e-9)))


def _small_loss(losses: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` smallest losses (stable order, so ties are deterministic)."""
    return torch.argsort(losses, stable=True)[:keep]


def _zero_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero loss still attached to the graph (the Trainer needs one that requires grad)."""
    return sum(t.sum() for t in tensors) * 0.0  # type: ignore[return-value]


class _PeerObjective(BaseObjective):
    """Base of the two-network methods: builds, trains and checkpoints the peer network."""

    _peer: nn.Module | None = None

    def setup(self, *, model: nn.Module, train: Dataset, config: TrainConfig,
              device: torch.device, generator: torch.Generator) -> None:
        self._peer = peer_network(model, generator=generator).to(device)

    @property
    def peer(self) -> nn.Module:
        """The second network (after ``setup``); e.g. to ensemble both networks at test time."""
        if self._peer is None:
            raise RuntimeError(f"The {self.name!r} objective has no peer network before setup().")
        return self._peer

    def extra_parameters(self) -> Iterable[ParamSpec]:
        return [p for p in self.peer.parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, Any]:
        return {"peer": self.peer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.peer.load_state_dict(state["peer"])  # copies in place: the optimizer keeps its tensors


# ---------------------------------------------------------------------- ELR
@OBJECTIVES.register("elr")
class ELR(BaseObjective):
    """Early-Learning Regularization (ELR): cross entropy plus a pull towards ensemble targets.

    Parameters
    ----------
    lam : float >= 0, default 3.0
        Weight ``lambda`` of the regulariser (the paper's CIFAR-10 value; CIFAR-100 uses 7).
    beta : float in [0, 1), default 0.7
        Momentum of the temporal ensemble (CIFAR-10 value; CIFAR-100 uses 0.9).

    Notes
    -----
    For example ``i`` seen in a batch with softmax ``p_i`` (clamped to ``[1e-4, 1 - 1e-4]``),
    the target is first updated with the detached, renormalised prediction,

    .. math:: t_i \\leftarrow \\beta\\, t_i + (1 - \\beta)\\, \\frac{p_i}{\\sum_k p_{ik}},

    (targets start at 0), then the loss of the batch ``B`` is

    .. math:: \\mathcal{L} = \\frac{1}{|B|} \\sum_{i \\in B} \\Big[ -\\log p_{i, y_i}
              + \\lambda \\log\\big(1 - \\langle p_i, t_i \\rangle\\big) \\Big].

    Minimising ``log(1 - <p, t>)`` pushes ``p_i`` towards ``t_i``; its gradient cancels the pull of
    a wrong label once early learning has made ``t_i`` point to the true class. The targets
    (``(N, K)``, indexed by ``Batch.indices``) are checkpointed, so a resumed run is exact.

    This is ELR, not ELR+: no weight averaging, second network or mixup (which ELR+ adds).

    References
    ----------
    Liu, Niles-Weed, Razavian, Fernandez-Granda. "Early-Learning Regularization Prevents
    Memorization of Noisy Labels", NeurIPS 2020 — Sec. 4.2 (the regularised loss
    ``L_CE + (lambda / n) sum_i log(1 - <p[i], t[i]>)``) and Sec. 4.3 (targets by temporal
    ensembling, ``t(k) = beta t(k-1) + (1 - beta) p(k)``); clamping and renormalisation as in the
    authors' code (github.com/shengliu66/ELR, ``elr_loss``), values from its CIFAR-10 config.

    Examples
    --------
    >>> from robustlab.training import build_objective
    >>> build_objective("elr", lam=3.0, beta=0.7)
    ELR(lam=3.0, beta=0.7)
    """

    name = "elr"

    def __init__(self, *, lam: float = ELR_LAMBDA, beta: float = ELR_BETA) -> None:
        self.lam = check_number("lam", lam, low=0.0)
        self.beta = check_number("beta", beta, low=0.0, high=1.0, high_inclusive=False)
        self._targets: torch.Tensor | None = None

    def setup(self, *, model: nn.Module, train: Dataset, config: TrainConfig,
              device: torch.device, generator: torch.Generator) -> None:
        self._targets = torch.zeros(len(train), train.num_classes, device=device)

    @property
    def targets(self) -> torch.Tensor:
        """The ensemble targets ``t``, shape ``(N, K)`` (after ``setup``)."""
        if self._targets is None:
            raise RuntimeError("The 'elr' objective has no targets before setup().")
        return self._targets

    def compute(self, model: nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        logits = model(batch.inputs)
        probs = F.softmax(logits.float(), dim=1).clamp(ELR_CLAMP, 1.0 - ELR_CLAMP)
        idx = batch.indices.to(self.targets.device)
        with torch.no_grad():
            p = probs.detach()
            self.targets[idx] = self.beta * self.targets[idx] + (1.0 - self.beta) * p / p.sum(1, keepdim=True)
        ce = F.cross_entropy(logits, batch.labels)
        reg = torch.log(1.0 - (self.targets[idx] * probs).sum(dim=1)).mean()
        return ObjectiveOutput(loss=ce + self.lam * reg, logits=logits,
                               metrics={"ce": ce.detach(), "elr_reg": reg.detach()})

    def state_dict(self) -> dict[str, Any]:
        return {"targets": self.targets.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.targets.copy_(state["targets"])


# ---------------------------------------------------------------------- Co-teaching
@OBJECTIVES.register("coteaching")
class CoTeaching(_PeerObjective):
    """Co-teaching: two networks, each trained on the small-loss examples selected by the other.

    Parameters
    ----------
    forget_rate : float in [0, 1), default 0.2
        ``tau``, the fraction of each batch finally dropped. The paper sets it to the noise rate
        (assumed known or estimated); set it to your estimate.
    num_gradual : int >= 1, default 10
        ``T_k``, the number of epochs over which the dropped fraction grows linearly to ``tau``.

    Notes
    -----
    At epoch ``T`` (1-based) each network keeps the ``R(T) = 1 - min(T tau / T_k, tau)`` fraction
    of the batch with the smallest cross entropy (``floor(R(T) B)`` examples, at least one; see
    :func:`num_remembered`): ``D_f`` for network ``f`` and ``D_g`` for the peer ``g``. Then ``f``
    is updated on ``D_g`` and ``g`` on ``D_f``:
    ``loss = mean_{D_g} CE(f) + mean_{D_f} CE(g)`` — one optimizer over both networks gives the
    same gradients as the paper's two updates since the networks share no parameters.

    The peer is built by :func:`peer_network` (a deep copy of the model re-initialised from the
    objective's generator), trained in train mode alongside the model, and checkpointed.
    Metrics: ``forget_rate`` (current) and ``kept_fraction``.

    References
    ----------
    Han, Yao, Yu, Niu, Xu, Hu, Tsang, Sugiyama. "Co-teaching: Robust Training of Deep Neural
    Networks with Extremely Noisy Labels", NeurIPS 2018 — Algorithm 1 (steps 4-8) and the
    schedule ``R(T)`` of Sec. 3 (``T_k = 10``, ``tau`` = noise rate in Sec. 4).
    """

    name = "coteaching"

    def __init__(self, *, forget_rate: float = COTEACHING_FORGET_RATE,
                 num_gradual: int = COTEACHING_NUM_GRADUAL) -> None:
        self.forget_rate = check_number("forget_rate", forget_rate, low=0.0, high=1.0, high_inclusive=False)
        self.num_gradual = check_int("num_gradual", num_gradual, low=1)

    def current_forget_rate(self, epoch: int) -> float:
        """``1 - R(T)`` at 0-based ``epoch``."""
        return coteaching_forget_rate(epoch, forget_rate=self.forget_rate, num_gradual=self.num_gradual)

    def compute(self, model: nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        self.peer.train()
        logits1, logits2 = model(batch.inputs), self.peer(batch.inputs)
        forget = self.current_forget_rate(epoch)
        loss, kept = _exchange(logits1, logits2, batch.labels, forget)
        return ObjectiveOutput(loss=loss, logits=logits1,
                               metrics={"forget_rate": forget, "kept_fraction": kept / len(batch.labels)})


def _exchange(logits1: torch.Tensor, logits2: torch.Tensor, labels: torch.Tensor,
              forget: float) -> tuple[torch.Tensor, int]:
    """Co-teaching's cross update on one set of examples; returns the loss and how many were kept."""
    loss1 = F.cross_entropy(logits1, labels, reduction="none")
    loss2 = F.cross_entropy(logits2, labels, reduction="none")
    keep = num_remembered(len(labels), forget)
    chosen_by_1 = _small_loss(loss1.detach(), keep)
    chosen_by_2 = _small_loss(loss2.detach(), keep)
    return loss1[chosen_by_2].mean() + loss2[chosen_by_1].mean(), keep


@OBJECTIVES.register("coteaching+")
class CoTeachingPlus(CoTeaching):
    """Co-teaching+: Co-teaching restricted to the examples on which the networks disagree.

    Parameters
    ----------
    forget_rate : float in [0, 1), default 0.2
        ``tau`` (as in :class:`CoTeaching`).
    num_gradual : int >= 1, default 10
        ``T_k`` (as in :class:`CoTeaching`).
    init_epochs : int >= 0, default 0
        Epochs of plain Co-teaching before the disagreement step starts. The authors' code uses
        0 for MNIST, 20 for CIFAR-10 and 5 for CIFAR-100 (``init_epoch``).
    fallback_steps : int >= 0, default 0
        While ``step < fallback_steps``, a batch on which the networks agree everywhere trains
        both on the whole batch with cross entropy (the authors' code, with 5000). The default 0
        follows the paper: no update. The fallback keeps two networks that collapsed to the same
        prediction from staying stuck (see docs/benchmarks/label_noise.md).

    Notes
    -----
    After ``init_epochs``, per batch: the disagreement set
    ``D' = {i : argmax f(x_i) != argmax g(x_i)}``; each network keeps the ``R(T)`` fraction of
    ``D'`` with its smallest losses, and the peer is updated on it (the Co-teaching exchange on
    ``D'``). A batch where the networks agree everywhere gives no update (zero loss).

    Deviations from the authors' code, stated: their ``loss_coteaching_plus`` applies
    ``cross_entropy`` to softmax outputs (a double softmax); here it takes logits, as the paper's
    loss does. When no example disagrees their code still trains on the whole batch for the first
    5000 iterations; here, by default, as in the paper's Algorithm 1, there is no update
    (``fallback_steps=5000`` gives their behaviour). The forget-rate
    schedule is Co-teaching's, as in their code. Metric ``disagree_fraction`` is logged.

    References
    ----------
    Yu, Han, Yao, Niu, Tsang, Sugiyama. "How does Disagreement Help Generalization against Label
    Corruption?", ICML 2019 — Algorithm 1 (steps 4-8).
    """

    name = "coteaching+"

    def __init__(self, *, forget_rate: float = COTEACHING_FORGET_RATE,
                 num_gradual: int = COTEACHING_NUM_GRADUAL, init_epochs: int = 0,
                 fallback_steps: int = 0) -> None:
        super().__init__(forget_rate=forget_rate, num_gradual=num_gradual)
        self.init_epochs = check_int("init_epochs", init_epochs, low=0)
        self.fallback_steps = check_int("fallback_steps", fallback_steps, low=0)

    def compute(self, model: nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        if epoch < self.init_epochs:
            out = super().compute(model, batch, epoch=epoch, step=step)
            return ObjectiveOutput(loss=out.loss, logits=out.logits,
                                   metrics={**out.metrics, "disagree_fraction": 1.0})
        self.peer.train()
        logits1, logits2 = model(batch.inputs), self.peer(batch.inputs)
        forget = self.current_forget_rate(epoch)
        disagree = torch.nonzero(logits1.detach().argmax(1) != logits2.detach().argmax(1)).squeeze(1)
        n = len(batch.labels)
        if disagree.numel() == 0 and step < self.fallback_steps:
            loss = F.cross_entropy(logits1, batch.labels) + F.cross_entropy(logits2, batch.labels)
            kept = n
        elif disagree.numel() == 0:
            loss, kept = _zero_loss(logits1, logits2), 0
        else:
            loss, kept = _exchange(logits1[disagree], logits2[disagree], batch.labels[disagree], forget)
        return ObjectiveOutput(loss=loss, logits=logits1, metrics={
            "forget_rate": forget, "kept_fraction": kept / n, "disagree_fraction": disagree.numel() / n})


# ---------------------------------------------------------------------- Adaptive-k
@OBJECTIVES.register("adaptive-k")
class AdaptiveK(BaseObjective):
    """Adaptive-k: update on the examples whose loss is below an adaptive threshold.

    Parameters
    ----------
    warmup_epochs : int >= 0 or None, default None
        Epochs of plain cross entropy on the whole batch before selection starts. ``None`` uses
        the reference's proportion, ``round(3/8 * epochs)`` (30 of 80 epochs). Must be smaller
        than the run's ``epochs`` (checked in ``setup``).
    beta1, beta2 : float in [0, 1), defaults 0.9 and 0.999
        Decay rates of the first and second moments of the batch mean loss.
    eps : float > 0, default 1e-8

    Notes
    -----
    After warm-up, for each batch with per-example cross entropies ``l_i`` and mean
    ``mu = mean_i l_i``, with ``m = v = 0`` at the first selecting step and carried across
    batches and epochs:

    .. math:: m \\leftarrow \\beta_1 m + (1 - \\beta_1)\\,\\mu, \\quad
              v \\leftarrow \\beta_2 v + (1 - \\beta_2)\\,\\mu^2, \\quad
              \\theta = \\frac{m}{\\sqrt{v} + \\epsilon},

    and the loss is the mean cross entropy over ``{i : l_i <= theta}`` (the number kept, ``k``,
    adapts to the batch). No example under the threshold: no update (zero loss). As in the
    reference there is no bias correction of ``m`` and ``v``. Metrics: ``threshold``,
    ``kept_fraction``.

    References
    ----------
    Dedeoglu, Kesgin, Amasyali. "A robust optimization method for label noisy datasets based on
    adaptive threshold: Adaptive-k", Frontiers of Computer Science 18(4), 2024 (arXiv:2203.14165),
    Sec. 3; the rule exactly as in the authors' reference notebook
    (github.com/enesdedeoglu-TR/Adaptive-k, ``MNIST.ipynb``, ``train``).
    """

    name = "adaptive-k"

    def __init__(self, *, warmup_epochs: int | None = None, beta1: float = ADAPTIVE_K_BETA1,
                 beta2: float = ADAPTIVE_K_BETA2, eps: float = ADAPTIVE_K_EPS) -> None:
        self.warmup_epochs = None if warmup_epochs is None else check_int("warmup_epochs", warmup_epochs, low=0)
        self.beta1 = check_number("beta1", beta1, low=0.0, high=1.0, high_inclusive=False)
        self.beta2 = check_number("beta2", beta2, low=0.0, high=1.0, high_inclusive=False)
        self.eps = check_number("eps", eps, low=0.0, low_inclusive=False)
        self._warmup = 0
        self._m = 0.0
        self._v = 0.0

    def setup(self, *, model: nn.Module, train: Dataset, config: TrainConfig,
              device: torch.device, generator: torch.Generator) -> None:
        if self.warmup_epochs is None:
            self._warmup = round(ADAPTIVE_K_WARMUP_FRACTION * config.epochs)
        else:
            self._warmup = check_int("warmup_epochs", self.warmup_epochs, low=0, high=config.epochs - 1)
        self._m = 0.0
        self._v = 0.0

    def compute(self, model: nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        logits = model(batch.inputs)
        if epoch < self._warmup:
            return ObjectiveOutput(loss=F.cross_entropy(logits, batch.labels), logits=logits,
                                   metrics={"kept_fraction": 1.0})
        losses = F.cross_entropy(logits, batch.labels, reduction="none")
        mu = float(losses.detach().mean())
        self._m = self.beta1 * self._m + (1.0 - self.beta1) * mu
        self._v = self.beta2 * self._v + (1.0 - self.beta2) * mu * mu
        threshold = self._m / (math.sqrt(self._v) + self.eps)
        keep = losses.detach() <= threshold
        n_keep = int(keep.sum())
        loss = losses[keep].mean() if n_keep else _zero_loss(logits)
        return ObjectiveOutput(loss=loss, logits=logits,
                               metrics={"threshold": threshold, "kept_fraction": n_keep / len(losses)})

    def state_dict(self) -> dict[str, Any]:
        return {"m": self._m, "v": self._v}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._m, self._v = float(state["m"]), float(state["v"])
