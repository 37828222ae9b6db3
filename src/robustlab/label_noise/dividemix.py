"""DivideMix (Li, Socher, Hoi, ICLR 2020) as a Trainer objective, and its pieces.

Pieces, each usable and tested on its own:

* :func:`gmm_clean_probability` — two-component GMM on min-max normalised per-example losses; the
  posterior of the low-mean component is the probability that a label is clean.
* :func:`sharpen` — temperature sharpening ``p^(1/T) / sum p^(1/T)``.
* :func:`augment` — the random augmentation used for the ``M`` views (shift for images, Gaussian
  noise for tabular data).
* :class:`DivideMix` — the ``"dividemix"`` objective: warm-up, co-divide, label co-refinement and
  co-guessing, MixMatch with mixup, and the uniform-prior regulariser.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustlab._checks import (
    as_tensor,
    check_bool,
    check_generator,
    check_int,
    check_number,
    check_rng,
    fail,
)
from robustlab._constants import (
    DIVIDEMIX_ALPHA,
    DIVIDEMIX_GMM_MAX_ITER,
    DIVIDEMIX_GMM_REG_COVAR,
    DIVIDEMIX_GMM_TOL,
    DIVIDEMIX_LAMBDA_U,
    DIVIDEMIX_NUM_AUGMENTATIONS,
    DIVIDEMIX_P_THRESHOLD,
    DIVIDEMIX_RAMPUP_EPOCHS,
    DIVIDEMIX_SHIFT_FRACTION,
    DIVIDEMIX_TABULAR_NOISE_STD,
    DIVIDEMIX_TEMPERATURE,
    DIVIDEMIX_WARMUP_EPOCHS,
)
from robustlab._model_state import eval_mode
from robustlab.data.dataset import Batch, Dataset
from robustlab.label_noise.selection import _PeerObjective, _zero_loss
from robustlab.models.inference import predict_logits
from robustlab.training.objective import OBJECTIVES, ObjectiveOutput

if TYPE_CHECKING:
    from robustlab.training.config import TrainConfig

__all__ = ["DivideMix", "augment", "gmm_clean_probability", "sharpen"]


# ---------------------------------------------------------------------- pieces
def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature sharpening of probability rows: ``p_k^(1/T) / sum_j p_j^(1/T)``.

    Parameters
    ----------
    probs : Tensor of shape (N, K)
        Rows of non-negative numbers (probabilities).
    temperature : float > 0
        ``T``; ``T < 1`` sharpens, ``T = 1`` only renormalises, ``T -> 0`` tends to one-hot.

    Returns
    -------
    Tensor of shape (N, K), rows summing to 1, same dtype and device.

    References
    ----------
    Berthelot et al. "MixMatch", NeurIPS 2019, Eq. (7); DivideMix Sec. 3.3, Eq. (3)-(4).
    """
    probs = as_tensor("probs", probs)
    if probs.ndim != 2 or not probs.is_floating_point() or bool((probs < 0).any()):
        fail("probs", "a float tensor (N, K) of non-negative probabilities", probs)
    temperature = check_number("temperature", temperature, low=0.0, low_inclusive=False)
    return _sharpen(probs, temperature)


def _sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    powered = probs ** (1.0 / temperature)
    return powered / powered.sum(dim=1, keepdim=True)


def gmm_clean_probability(losses: Any, *, rng: np.random.Generator) -> np.ndarray:
    """Probability that each example's label is clean, from a 2-component GMM on its loss.

    Parameters
    ----------
    losses : array-like of shape (N,)
        Per-example losses (cross entropy of the given label), finite.
    rng : numpy.random.Generator
        Seeds scikit-learn's k-means initialisation (one integer is drawn).

    Returns
    -------
    ndarray of shape (N,), float64 in [0, 1]
        Posterior of the component with the smaller mean. All ones when every loss is equal (or
        there are fewer than 2 examples): nothing separates them.

    Notes
    -----
    Losses are min-max normalised, ``l' = (l - min l) / (max l - min l)``, then
    ``sklearn.mixture.GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)`` is
    fitted and ``w_i = p(g | l'_i)`` for ``g = argmin_g mu_g`` (DivideMix Sec. 3.1, Eq. (1)-(2);
    settings as in the authors' ``eval_train``).
    """
    check_rng("rng", rng)
    values = np.asarray(as_tensor("losses", losses).detach().cpu().double().numpy())
    if values.ndim != 1 or not np.isfinite(values).all():
        fail("losses", "a 1-D array of finite per-example losses", values)
    return _gmm_clean_probability(values, int(rng.integers(0, 2**31 - 1)))


def _gmm_clean_probability(losses: np.ndarray, random_state: int) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    span = float(losses.max() - losses.min()) if losses.size else 0.0
    if losses.size < 2 or span <= 0.0:
        return np.ones(losses.shape, dtype=np.float64)
    normalised = ((losses - losses.min()) / span).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=DIVIDEMIX_GMM_MAX_ITER, tol=DIVIDEMIX_GMM_TOL,
                          reg_covar=DIVIDEMIX_GMM_REG_COVAR, random_state=random_state)
    with warnings.catch_warnings():
        # max_iter=10 is the paper's setting; not converging within it is expected, not a problem.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(normalised)
    posterior = gmm.predict_proba(normalised)
    return posterior[:, int(np.argmin(gmm.means_.ravel()))].astype(np.float64)


def augment(inputs: torch.Tensor, *, generator: torch.Generator, shift_fraction: float = DIVIDEMIX_SHIFT_FRACTION,
            noise_std: float = DIVIDEMIX_TABULAR_NOISE_STD) -> torch.Tensor:
    """One random augmentation of a batch (a fresh draw per example).

    Images ``(N, C, H, W)``: translation by up to ``s = max(1, round(shift_fraction * min(H, W)))``
    pixels in each direction with zero fill — the random crop with padding ``s`` used for CIFAR
    (``s = 4`` of 32) scaled to the image (``s = 1`` for 8x8 digits). No flip: whether a flip
    keeps the class depends on the data (it does not for digits). ``shift_fraction=0`` disables
    it. Tabular ``(N, D)``: ``x + noise_std * eps``, ``eps ~ N(0, I)``.

    Parameters
    ----------
    inputs : Tensor of shape (N, C, H, W) or (N, D)
    generator : torch.Generator
        CPU generator; the draws are made on the CPU and moved to the inputs' device.
    shift_fraction : float in [0, 0.5), default 0.125
    noise_std : float >= 0, default 0.05

    Returns
    -------
    Tensor of the same shape, dtype and device.
    """
    inputs = as_tensor("inputs", inputs)
    if inputs.ndim not in (2, 4) or not inputs.is_floating_point():
        fail("inputs", "a float tensor (N, C, H, W) or (N, D)", inputs)
    check_generator("generator", generator)
    shift_fraction = check_number("shift_fraction", shift_fraction, low=0.0, high=0.5, high_inclusive=False)
    noise_std = check_number("noise_std", noise_std, low=0.0)
    return _augment(inputs, generator, shift_fraction, noise_std)


def _augment(x: torch.Tensor, generator: torch.Generator, shift_fraction: float, noise_std: float) -> torch.Tensor:
    if x.ndim == 2:
        noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        return x + noise_std * noise
    n, c, h, w = x.shape
    if shift_fraction == 0.0 or n == 0:
        return x.clone()
    s = max(1, round(shift_fraction * min(h, w)))
    offsets = torch.randint(0, 2 * s + 1, (n, 2), generator=generator).to(x.device)
    padded = F.pad(x, (s, s, s, s))
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (N, W)
    ni = torch.arange(n, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[ni, ci, rows[:, None, :, None], cols[:, None, None, :]]


# ---------------------------------------------------------------------- the objective
@OBJECTIVES.register("dividemix")
class DivideMix(_PeerObjective):
    """DivideMix: co-divide by a loss GMM, then semi-supervised MixMatch training of two networks.

    Parameters
    ----------
    lambda_u : float >= 0, default 25.0
        Weight of the unlabelled loss (paper, CIFAR-10: 0 at 20% noise, 25 at 50%, 25/50 at 80%,
        150 at 90%; 0 for 40% asymmetric).
    p_threshold : float in (0, 1), default 0.5
        ``tau``: an example is labelled for a network when the *other* network's clean
        probability exceeds it.
    temperature : float > 0, default 0.5
        Sharpening temperature ``T``.
    alpha : float > 0, default 4.0
        Mixup ``Beta(alpha, alpha)`` parameter.
    warmup_epochs : int >= 0 or None, default None
        Epochs of plain cross entropy on all examples before dividing. ``None``: the paper's 10
        (CIFAR-10), capped at ``epochs // 2`` so short runs still divide. Must be ``< epochs``.
    rampup_epochs : int >= 1, default 16
        The weight of the unlabelled loss ramps linearly from 0 to ``lambda_u`` over this many
        epochs after warm-up (authors' ``linear_rampup``).
    num_augmentations : int >= 1, default 2
        ``M``, the augmented views used for label co-refinement and co-guessing.
    confidence_penalty : bool, default False
        Add the negative entropy ``sum_k p_k log p_k`` to the warm-up loss (the paper uses it for
        asymmetric noise, Sec. 3.1).
    shift_fraction, noise_std : float
        Augmentation settings, see :func:`augment`.

    Notes
    -----
    **Warm-up** (epochs ``< warmup_epochs``): both networks minimise cross entropy (plus the
    optional confidence penalty).

    **Co-divide** (each later epoch, in ``on_epoch_start``): each network scores the *whole*
    training set in eval mode; per-example cross entropies go through
    :func:`gmm_clean_probability`, giving clean probabilities ``w^(1), w^(2)`` (Eq. (1)-(2)).
    Network 1 is trained with the division of network 2 (labelled: ``w^(2)_i > tau``), network 2
    with that of network 1.

    **Per batch, for each network** ``theta`` **with peer** ``theta'`` **and the peer's** ``w``:
    with ``M`` augmented views of the labelled part ``x`` and unlabelled part ``u`` of the batch,

    * label co-refinement (Eq. (3)): ``p_x = mean_m softmax(theta(x_m))``,
      ``y_bar = w y + (1 - w) p_x``, ``y_hat = Sharpen(y_bar, T)`` (Eq. (4));
    * co-guessing: ``q_u = Sharpen(mean_m [softmax(theta(u_m)) + softmax(theta'(u_m))] / 2, T)``,
      the peer in eval mode;
    * MixMatch (Eq. (5)-(7)): ``l ~ Beta(alpha, alpha)``, ``l' = max(l, 1 - l)``, every view and
      its target mixed with a random permutation of all views;
      ``L_X = -mean_x sum_k y_k log p_k``, ``L_U = mean over u and classes (q - p)^2`` (Eq. (8)-(9));
    * regulariser with a uniform prior ``pi_k = 1/K`` on the mean prediction of the mixed batch
      (Eq. (10)): ``L_reg = sum_k pi_k log(pi_k / mean_b p_bk)``;
    * ``L = L_X + lambda_u r(t) L_U + L_reg`` (Eq. (11)), ``r`` the linear ramp-up.

    The two networks' losses are summed and minimised by the one optimizer (they share no
    parameters, so this equals the paper's two updates).

    Deviations, stated:

    * **Batching.** The Trainer's batch (each example once per epoch) is split into its labelled
      and unlabelled parts by the division, instead of drawing a labelled batch of size ``B`` and
      an unlabelled batch of size ``B`` (the paper's epoch runs over the labelled set and cycles
      the unlabelled one). MixMatch pools both parts as in the paper.
    * **Both networks per step**, not one network per half-epoch: network 1 is updated against
      network 2's weights of the same step.
    * **Augmentation** is :func:`augment` (shift / Gaussian noise), not CIFAR crop + flip.
    * **Prediction** is by network 1 alone (the model given to the Trainer); the paper averages
      both networks at test time — use :attr:`peer` to do so.
    * The CIFAR-100 variant averaging the loss over the last 5 epochs before the GMM is not
      implemented. The GMM's k-means initialisation is seeded from the objective's generator
      (the authors' code leaves it unseeded).

    Metrics: ``labelled_fraction_1``/``_2`` (share of the batch labelled for each network),
    ``lx``, ``lu``, ``lambda_u``. A checkpoint holds the peer network only: the division is
    recomputed from both networks at every epoch start.

    References
    ----------
    Li, Socher, Hoi. "DivideMix: Learning with Noisy Labels as Semi-supervised Learning",
    ICLR 2020 — Algorithm 1, Sec. 3.1-3.3, Eq. (1)-(11); settings of Sec. 4.1 and the authors' code
    (github.com/LiJunnan1992/DivideMix, ``Train_cifar.py``).
    """

    name = "dividemix"

    def __init__(self, *, lambda_u: float = DIVIDEMIX_LAMBDA_U, p_threshold: float = DIVIDEMIX_P_THRESHOLD,
                 temperature: float = DIVIDEMIX_TEMPERATURE, alpha: float = DIVIDEMIX_ALPHA,
                 warmup_epochs: int | None = None, rampup_epochs: int = DIVIDEMIX_RAMPUP_EPOCHS,
                 num_augmentations: int = DIVIDEMIX_NUM_AUGMENTATIONS, confidence_penalty: bool = False,
                 shift_fraction: float = DIVIDEMIX_SHIFT_FRACTION,
                 noise_std: float = DIVIDEMIX_TABULAR_NOISE_STD) -> None:
        self.lambda_u = check_number("lambda_u", lambda_u, low=0.0)
        self.p_threshold = check_number("p_threshold", p_threshold, low=0.0, high=1.0,
                                        low_inclusive=False, high_inclusive=False)
        self.temperature = check_number("temperature", temperature, low=0.0, low_inclusive=False)
        self.alpha = check_number("alpha", alpha, low=0.0, low_inclusive=False)
        self.warmup_epochs = None if warmup_epochs is None else check_int("warmup_epochs", warmup_epochs, low=0)
        self.rampup_epochs = check_int("rampup_epochs", rampup_epochs, low=1)
        self.num_augmentations = check_int("num_augmentations", num_augmentations, low=1)
        self.confidence_penalty = check_bool("confidence_penalty", confidence_penalty)
        self.shift_fraction = check_number("shift_fraction", shift_fraction, low=0.0, high=0.5,
                                           high_inclusive=False)
        self.noise_std = check_number("noise_std", noise_std, low=0.0)
        self._train: Dataset | None = None
        self._model: nn.Module | None = None
        self._generator: torch.Generator | None = None
        self._device = torch.device("cpu")
        self._warmup = 0
        self._steps_per_epoch = 1
        self._clean_prob: list[torch.Tensor] | None = None  # [w from net 1, w from net 2], (N,)

    def setup(self, *, model: nn.Module, train: Dataset, config: TrainConfig,
              device: torch.device, generator: torch.Generator) -> None:
        super().setup(model=model, train=train, config=config, device=device, generator=generator)
        if self.warmup_epochs is None:
            self._warmup = min(DIVIDEMIX_WARMUP_EPOCHS, config.epochs // 2)
        else:
            self._warmup = check_int("warmup_epochs", self.warmup_epochs, low=0, high=config.epochs - 1)
        self._train, self._model, self._generator, self._device = train, model, generator, device
        self._steps_per_epoch = train.num_batches(config.batch_size)
        self._clean_prob = None

    @property
    def clean_probability(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(w from network 1, w from network 2)``, each ``(N,)``, of the current epoch; None in warm-up."""
        return None if self._clean_prob is None else (self._clean_prob[0], self._clean_prob[1])

    # ------------------------------------------------------------------ co-divide
    def on_epoch_start(self, epoch: int) -> None:
        if epoch < self._warmup:
            self._clean_prob = None
            return
        assert self._model is not None and self._train is not None and self._generator is not None
        labels = self._train.labels
        probs = []
        for net in (self._model, self.peer):
            logits = predict_logits(net, self._train, device=self._device)
            losses = F.cross_entropy(logits.float(), labels, reduction="none").double().numpy()
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator))
            probs.append(torch.from_numpy(_gmm_clean_probability(losses, seed)).float().to(self._device))
        self._clean_prob = probs

    # ------------------------------------------------------------------ loss
    def compute(self, model: nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        peer = self.peer
        peer.train()
        if epoch < self._warmup or self._clean_prob is None:
            logits1, logits2 = model(batch.inputs), peer(batch.inputs)
            loss = self._warmup_loss(logits1, batch.labels) + self._warmup_loss(logits2, batch.labels)
            return ObjectiveOutput(loss=loss, logits=logits1)
        progress = epoch + (step - epoch * self._steps_per_epoch) / self._steps_per_epoch
        ramp = min(max((progress - self._warmup) / self.rampup_epochs, 0.0), 1.0)
        weight_u = self.lambda_u * ramp
        w1, w2 = self._clean_prob
        idx = batch.indices.to(self._device)
        loss1, m1 = self._semi_loss(model, peer, batch, w2[idx], weight_u)  # net 1 with net 2's division
        loss2, m2 = self._semi_loss(peer, model, batch, w1[idx], weight_u)  # and the other way round
        with torch.no_grad(), eval_mode(model):
            logits = model(batch.inputs)
        metrics = {"labelled_fraction_1": m1["labelled"], "labelled_fraction_2": m2["labelled"],
                   "lx": (m1["lx"] + m2["lx"]) / 2, "lu": (m1["lu"] + m2["lu"]) / 2, "lambda_u": weight_u}
        return ObjectiveOutput(loss=loss1 + loss2, logits=logits, metrics=metrics)

    def _warmup_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, labels)
        if self.confidence_penalty:
            probs = F.softmax(logits, dim=1)
            loss = loss + (probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        return loss

    def _views(self, x: torch.Tensor) -> list[torch.Tensor]:
        assert self._generator is not None
        return [_augment(x, self._generator, self.shift_fraction, self.noise_std)
                for _ in range(self.num_augmentations)]

    def _semi_loss(self, net: nn.Module, other: nn.Module, batch: Batch, w: torch.Tensor,
                   weight_u: float) -> tuple[torch.Tensor, dict[str, Any]]:
        """Loss of ``net`` on one batch given the clean probabilities ``w`` from ``other``."""
        assert self._generator is not None
        num_classes = self._train.num_classes if self._train is not None else int(batch.labels.max()) + 1
        labelled = w > self.p_threshold
        x, u = batch.inputs[labelled], batch.inputs[~labelled]
        onehot = F.one_hot(batch.labels[labelled], num_classes).to(x.dtype)
        wx = w[labelled].to(x.dtype)[:, None]
        xs, us = self._views(x), self._views(u)
        targets_x, targets_u = self._targets(net, other, xs, us, onehot, wx)
        m = self.num_augmentations
        inputs = torch.cat(xs + us)
        targets = torch.cat([targets_x] * m + [targets_u] * m)
        lam = self._beta()
        perm = torch.randperm(inputs.shape[0], generator=self._generator).to(inputs.device)
        mixed_inputs = lam * inputs + (1.0 - lam) * inputs[perm]
        mixed_targets = lam * targets + (1.0 - lam) * targets[perm]
        logits = net(mixed_inputs)
        n_x = m * x.shape[0]
        zero = _zero_loss(logits)
        lx = -(F.log_softmax(logits[:n_x], dim=1) * mixed_targets[:n_x]).sum(dim=1).mean() if n_x else zero
        lu = ((F.softmax(logits[n_x:], dim=1) - mixed_targets[n_x:]) ** 2).mean() if n_x < len(logits) else zero
        prior = torch.full((num_classes,), 1.0 / num_classes, device=logits.device, dtype=logits.dtype)
        pred_mean = F.softmax(logits, dim=1).mean(dim=0)
        penalty = (prior * torch.log(prior / pred_mean)).sum()
        loss = lx + weight_u * lu + penalty
        return loss, {"labelled": float(labelled.float().mean()), "lx": lx.detach(), "lu": lu.detach()}

    @torch.no_grad()
    def _targets(self, net: nn.Module, other: nn.Module, xs: list[torch.Tensor], us: list[torch.Tensor],
                 onehot: torch.Tensor, wx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Label co-refinement for the labelled part, co-guessing for the unlabelled part."""
        m = self.num_augmentations
        if xs[0].shape[0]:
            px = sum(F.softmax(net(v), dim=1) for v in xs) / m  # net in train mode, as the authors' code
            targets_x = _sharpen(wx * onehot + (1.0 - wx) * px, self.temperature)
        else:
            targets_x = onehot
        if us[0].shape[0]:
            pu = sum(F.softmax(net(v), dim=1) for v in us)
            with eval_mode(other):
                pu = pu + sum(F.softmax(other(v), dim=1) for v in us)
            targets_u = _sharpen(pu / (2 * m), self.temperature)
        else:
            targets_u = onehot[:0]
        return targets_x.detach(), targets_u.detach()

    def _beta(self) -> float:
        """``max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)``, drawn from the objective's generator."""
        assert self._generator is not None
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=self._generator))
        lam = float(np.random.default_rng(seed).beta(self.alpha, self.alpha))
        return max(lam, 1.0 - lam)
