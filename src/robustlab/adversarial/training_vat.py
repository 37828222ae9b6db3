"""Virtual adversarial training (Miyato et al. 2018), supervised and semi-supervised.

Registered as ``vat`` in :data:`robustlab.training.OBJECTIVES`; documented in
:mod:`robustlab.adversarial.training`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustlab._checks import as_tensor, check_int, check_number, fail
from robustlab._constants import VAT_ALPHA, VAT_POWER_ITERATIONS, VAT_XI
from robustlab._model_state import preserve_state
from robustlab.adversarial._core import _bcast, flat, randn
from robustlab.adversarial.training_core import (
    batch_stats_frozen,
    check_threat_model,
    check_trainable,
    kl_per_example,
)
from robustlab.data.dataset import Batch
from robustlab.errors import InvalidTypeError
from robustlab.training.objective import OBJECTIVES, BaseObjective, ObjectiveOutput

__all__ = ["VirtualAdversarialTraining"]


def _normalized(d: torch.Tensor) -> torch.Tensor:
    """vat_tf ``get_normalized_vector``: divide by the max |d|, then by ``sqrt(1e-6 + sum d^2)``."""
    d = d / _bcast(1e-12 + flat(d).abs().amax(dim=1), d)
    return d / _bcast(torch.sqrt(1e-6 + flat(d).pow(2).sum(dim=1)), d)


@OBJECTIVES.register("vat")
class VirtualAdversarialTraining(BaseObjective):
    """Virtual adversarial training: CE on labelled examples plus ``alpha`` times the local
    distributional smoothness (LDS) penalty on every example.

    Parameters
    ----------
    eps : float > 0
        L2 radius of the virtual adversarial perturbation (required: it depends on the input
        scale; the reference ``vat_tf`` flag default is 8.0 on ZCA-whitened CIFAR-10, far too
        large for inputs in [0, 1] — e.g. 0.5-2 for ``digits``).
    xi : float > 0, default 1e-6
        Finite-difference scale of the power iteration (``vat_tf``: ``--xi 1e-6``).
    num_power_iterations : int >= 1, default 1
        The paper finds one iteration enough (Sec. 3.3).
    alpha : float >= 0, default 1.0
        Weight of the LDS term (the paper uses 1).
    unlabeled : sequence of int, bool array/tensor of shape (N,), or None, default None
        Semi-supervised VAT: the training examples whose labels are *unknown*. They contribute
        only the LDS term. robustlab's data contract does not allow a label of -1 (labels are
        class indices in [0, K), checked by :class:`~robustlab.data.Dataset`), so unlabelled
        examples keep any valid placeholder label (e.g. 0) and are listed here, by index into
        the training set or as a boolean mask. The Trainer's ``train_acc`` still counts the
        placeholders; ``labeled_acc`` in the metrics does not.

    Notes
    -----
    Miyato et al. 2018, Eq. 5-7 and Alg. 1: with ``p = f(x)`` held fixed (no gradient),
    ``d ~ N(0, I)``, repeat ``num_power_iterations`` times
    ``d <- normalize(grad_r KL(p || f(x + r)) at r = xi * d)``; then ``r_adv = eps * d`` and
    ``LDS = KL(p || f(x + r_adv))`` averaged over the batch. ``loss = CE(labelled) + alpha *
    LDS``. All passes run in train mode; the perturbed passes do not update batch-norm running
    statistics (the reference's ``update_batch_stats=False``).

    Deviation: ``x + r_adv`` is clipped to ``[0, 1]`` (robustlab's input contract; the paper
    does not clip), so ``||x_adv - x||_2 <= eps`` still holds.

    References
    ----------
    T. Miyato, S. Maeda, M. Koyama, S. Ishii. Virtual Adversarial Training: A Regularization
    Method for Supervised and Semi-Supervised Learning. IEEE TPAMI 41(8), 2018.
    """

    name = "vat"
    #: The threat model's norm (read by ``robustlab train`` for the robust-accuracy curve).
    norm = "l2"

    def __init__(self, *, eps: float, xi: float = VAT_XI, num_power_iterations: int = VAT_POWER_ITERATIONS,
                 alpha: float = VAT_ALPHA, unlabeled: Any = None) -> None:
        self.eps, _, _, _ = check_threat_model(eps, "l2", 1, None, allowed_norms=("l2",))
        if self.eps == 0:
            fail("eps", "a positive L2 radius", eps)
        self.xi = check_number("xi", xi, low=0.0, low_inclusive=False)
        self.num_power_iterations = check_int("num_power_iterations", num_power_iterations, low=1)
        self.alpha = check_number("alpha", alpha, low=0.0)
        if unlabeled is not None and not isinstance(unlabeled, (torch.Tensor, np.ndarray, list, tuple, range)):
            fail("unlabeled", "None, a sequence of example indices or a boolean mask", unlabeled,
                 error=InvalidTypeError)
        self.unlabeled = unlabeled
        self._mask: torch.Tensor | None = None
        self._generator: torch.Generator | None = None

    def setup(self, *, model: torch.nn.Module, train: Any, config: Any, device: torch.device,
              generator: torch.Generator) -> None:
        check_trainable(model, self.name)
        self._generator = generator
        self._mask = None if self.unlabeled is None else _unlabeled_mask(self.unlabeled, len(train)).to(device)

    def _generator_or_fail(self) -> torch.Generator:
        if self._generator is None:
            fail("generator", "set by setup() (use the objective through a Trainer)", None)
        return self._generator

    def virtual_adversarial_inputs(self, model: torch.nn.Module, x: torch.Tensor, clean_logits: torch.Tensor
                                   ) -> torch.Tensor:
        """``clip(x + r_adv)`` by the power iteration (parameters frozen, train mode kept)."""
        p = clean_logits.detach()
        d = _normalized(randn(tuple(x.shape), self._generator_or_fail(), x))
        with preserve_state(model), batch_stats_frozen(model):
            for q in model.parameters():
                q.requires_grad_(False)
            for _ in range(self.num_power_iterations):
                r = (self.xi * d).requires_grad_(True)
                with torch.enable_grad():
                    dist = kl_per_example(p, model(x + r)).mean()
                    grad, = torch.autograd.grad(dist, r)
                d = _normalized(grad.detach())
        return (x + self.eps * d).clamp(0, 1).detach()

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        x, y = batch.inputs, batch.labels
        logits = model(x)
        labeled = torch.ones_like(y, dtype=torch.bool) if self._mask is None else ~self._mask[batch.indices]
        ce = (F.cross_entropy(logits[labeled], y[labeled]) if bool(labeled.any())
              else logits.sum() * 0.0)
        metrics: dict[str, Any] = {"ce": ce.detach()}
        if self.alpha == 0:
            return ObjectiveOutput(loss=ce, logits=logits, metrics=metrics)
        x_adv = self.virtual_adversarial_inputs(model, x, logits)
        with batch_stats_frozen(model):
            logits_adv = model(x_adv)
        lds = kl_per_example(logits.detach(), logits_adv).mean()
        metrics["lds"] = lds.detach()
        if bool(labeled.any()):
            metrics["labeled_acc"] = (logits.detach()[labeled].argmax(1) == y[labeled]).float().mean()
        return ObjectiveOutput(loss=ce + self.alpha * lds, logits=logits, metrics=metrics)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


def _unlabeled_mask(unlabeled: Any, n: int) -> torch.Tensor:
    values = as_tensor("unlabeled", unlabeled)
    if values.ndim != 1:
        fail("unlabeled", "a 1-d sequence of indices or a boolean mask", values, error=InvalidTypeError)
    if values.dtype == torch.bool:
        if values.shape[0] != n:
            fail("unlabeled", f"a boolean mask with one entry per training example ({n})",
                 f"{values.shape[0]} entries", describe_got=False)
        return values.clone()
    if values.is_floating_point():
        fail("unlabeled", "integer example indices or a boolean mask", values, error=InvalidTypeError)
    values = values.long()
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= n):
        fail("unlabeled", f"indices in [0, {n - 1}]", f"values in [{int(values.min())}, {int(values.max())}]",
             describe_got=False)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[values] = True
    return mask
