"""Adaptive smoothing: mix a standard and a robust classifier's probabilities (Bai et al.).

Bai, Anderson, Kim & Sojoudi, "Improving the accuracy-robustness trade-off of classifiers via
adaptive smoothing", SIMODS 2024 (arXiv:2301.12554), and Bai, Anderson & Sojoudi, "Mixing
classifiers to alleviate the accuracy-robustness trade-off", L4DC 2024. With a standard classifier
``g`` (accurate, not robust) and a robust classifier ``h``, the mixed classifier outputs

.. math:: h_\\alpha(x) = \\log\\big((1 - \\alpha(x))\\,\\sigma(g(x)) + \\alpha(x)\\,\\sigma(h(x))\\big),

``sigma`` the softmax: a convex combination of the two models' probabilities, returned as logits
(its softmax is the mixture, since the mixture sums to one). ``alpha`` is a fixed coefficient, or
``alpha(x) = sigmoid(gamma(x))`` from a small *mixing network* fed with intermediate features,
trained as an adversarial-input detector (``alpha -> 1`` on attacked inputs, ``-> 0`` on clean
ones) with the two base models frozen. The reference implementation is Bai-YT/AdaptiveSmoothing
(``models/comp_model.py``: the mixture of softmaxes and its log; ``adaptive_smoothing/losses.py``:
the composite loss).

:class:`MixedClassifier` is an ``nn.Module`` that maps inputs to those logits, so every attack and
:func:`robustlab.adversarial.evaluate` evaluate the mixed model end to end; with a mixing network
the attack's gradient flows through ``alpha(x)`` too (an adaptive attack, the reference's
``policy_graph=True``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustlab._checks import (
    check_choice,
    check_generator,
    check_inputs,
    check_int,
    check_labels,
    check_number,
    check_probability,
    fail,
)
from robustlab._constants import (
    ADAPTIVE_ATTACK_STEPS,
    ADAPTIVE_BATCH_SIZE,
    ADAPTIVE_EPOCHS,
    ADAPTIVE_FEATURE_STD_FLOOR,
    ADAPTIVE_HIDDEN_SIZE,
    ADAPTIVE_LOSS_BCE,
    ADAPTIVE_LOSS_CE,
    ADAPTIVE_LOSS_PROD,
    ADAPTIVE_LR,
    ADAPTIVE_WEIGHT_DECAY,
    PENULTIMATE,
)
from robustlab.errors import InvalidParameterError, InvalidTypeError

__all__ = ["MixedClassifier", "MixingFit", "MixingNetwork", "fit_mixing_network", "mixed_log_probs"]


# ----------------------------------------------------------------------------- functional core
def mixed_log_probs(standard_logits: torch.Tensor, robust_logits: torch.Tensor,
                    alpha: float | torch.Tensor) -> torch.Tensor:
    """``log((1 - alpha) * softmax(standard_logits) + alpha * softmax(robust_logits))``.

    Parameters
    ----------
    standard_logits, robust_logits : Tensor (N, K)
    alpha : float in [0, 1] or Tensor (N,) of values in [0, 1]

    Returns
    -------
    Tensor (N, K)
        Log-probabilities of the mixture; ``alpha = 0`` (``1``) returns the standard (robust)
        log-softmax exactly. Computed as a log-sum-exp of ``log(1 - alpha) + log_softmax(g)`` and
        ``log(alpha) + log_softmax(h)``, so it stays finite where a softmax underflows.
    """
    if standard_logits.ndim != 2 or robust_logits.shape != standard_logits.shape:
        fail("robust_logits", f"logits of the standard model's shape {tuple(standard_logits.shape)} "
             "(N, K)", robust_logits)
    if isinstance(alpha, torch.Tensor):
        a = alpha.to(standard_logits.dtype).reshape(-1, 1)
        return _mix_log(standard_logits, robust_logits, torch.log1p(-a), torch.log(a))
    alpha = check_probability("alpha", alpha)
    return _mix_fixed(standard_logits, robust_logits, alpha)


def _mix_fixed(s: torch.Tensor, r: torch.Tensor, alpha: float) -> torch.Tensor:
    if alpha == 0.0:
        return torch.log_softmax(s, dim=1)
    if alpha == 1.0:
        return torch.log_softmax(r, dim=1)
    return _mix_log(s, r, math.log1p(-alpha), math.log(alpha))


def _mix_log(s: torch.Tensor, r: torch.Tensor, log_1m_alpha: Any, log_alpha: Any) -> torch.Tensor:
    both = torch.stack((log_1m_alpha + torch.log_softmax(s, dim=1), log_alpha + torch.log_softmax(r, dim=1)))
    return torch.logsumexp(both, dim=0)


# ----------------------------------------------------------------------------- mixing network
class MixingNetwork(nn.Module):
    """``gamma(f)``: a two-layer perceptron on standardised features; ``alpha = sigmoid(gamma)``.

    Parameters
    ----------
    in_features : int
        Width of the concatenated, channel-pooled features it reads.
    hidden_size : int, default 64
    feature_mean, feature_std : Tensor (in_features,), optional
        Fixed standardisation of the input (buffers; zeros / ones when omitted).
        :func:`fit_mixing_network` sets them from the clean training features. The reference
        standardises the network's *output* with a BatchNorm instead (``models/comp_model.py``);
        fixed statistics keep the mixed model deterministic and independent of the batch.
    generator : torch.Generator, optional
        Draws the initial weights (He-uniform, as ``nn.Linear``'s default); without it the weights
        start at zero and must be loaded.
    """

    def __init__(self, in_features: int, hidden_size: int = ADAPTIVE_HIDDEN_SIZE, *,
                 feature_mean: torch.Tensor | None = None, feature_std: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        in_features = check_int("in_features", in_features, low=1)
        hidden_size = check_int("hidden_size", hidden_size, low=1)
        self.register_buffer("feature_mean", torch.zeros(in_features) if feature_mean is None
                             else feature_mean.detach().reshape(in_features).clone())
        self.register_buffer("feature_std", torch.ones(in_features) if feature_std is None
                             else feature_std.detach().reshape(in_features).clone())
        self.hidden = nn.Linear(in_features, hidden_size)
        self.out = nn.Linear(hidden_size, 1)
        with torch.no_grad():
            for layer in (self.hidden, self.out):
                if generator is None:
                    layer.weight.zero_()
                    layer.bias.zero_()
                    continue
                bound = 1.0 / math.sqrt(layer.in_features)
                for p in (layer.weight, layer.bias):
                    p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.feature_mean.shape[0]:
            fail("mixing_network", f"a network that reads {features.shape[-1]} features (the "
                 "concatenated pooled features of the chosen layers)",
                 f"a MixingNetwork built for {self.feature_mean.shape[0]}", describe_got=False)
        z = (features - self.feature_mean) / self.feature_std
        return self.out(torch.relu(self.hidden(z))).squeeze(-1)


# ----------------------------------------------------------------------------- mixed model
class MixedClassifier(nn.Module):
    """The adaptive-smoothing mixture of a standard and a robust classifier, as logits.

    ``forward(x) = log((1 - alpha(x)) * softmax(standard(x)) + alpha(x) * softmax(robust(x)))``
    (Bai et al., SIMODS 2024: a fixed ``alpha``, or ``alpha(x)`` from the mixing network;
    reference code Bai-YT/AdaptiveSmoothing ``models/comp_model.py``).

    Parameters
    ----------
    standard : nn.Module
        The accurate, non-robust classifier ``g`` (inputs -> logits).
    robust : nn.Module
        The robust classifier ``h``, same inputs and classes.
    alpha : float in [0, 1], optional
        A fixed mixing coefficient (the closed form): ``0`` is ``standard``'s log-softmax exactly,
        ``1`` is ``robust``'s, and the other model is then not run.
    mixing_network : nn.Module, optional
        Maps the features named by ``layers`` / ``standard_layers`` (concatenated, ``(N, F)``) to
        ``gamma (N,)`` or ``(N, 1)``; ``alpha(x) = low + (high - low) * sigmoid(gamma)``.
        Exactly one of ``alpha`` and ``mixing_network`` is given.
    layers : sequence of str, default ("penultimate",)
        Layers of ``robust`` whose outputs feed the mixing network: module names of
        ``robust.named_modules()`` or ``"penultimate"`` (the input of its last ``nn.Linear``);
        feature maps are average-pooled per channel (``robustlab.detection``'s convention).
    standard_layers : sequence of str, default ()
        Layers of ``standard`` fed too. The reference code feeds intermediate features of both
        models; by default only the robust model's are used: the standard model's features can be
        moved freely inside the threat model, which makes the detector easier to fool.
    alpha_range : (float, float), default (0.0, 1.0)
        ``(low, high)`` with ``0 <= low <= high <= 1``: the range of ``alpha(x)`` (the reference's
        ``alpha_bias`` and ``alpha_scale = high - low``; its CIFAR-10 setting is (0.84, 0.99)).

    Notes
    -----
    The base models are referenced, not copied: they are submodules, and a forward pass runs them
    in eval mode (restored afterwards) so it never updates a BatchNorm's running statistics.
    :meth:`train` switches only the mixing network. Gradients reach the inputs through both
    models and the mixing network (no detaching, so attacks are adaptive).
    """

    def __init__(self, standard: nn.Module, robust: nn.Module, *, alpha: float | None = None,
                 mixing_network: nn.Module | None = None, layers: Sequence[str] = (PENULTIMATE,),
                 standard_layers: Sequence[str] = (), alpha_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        for name, model in (("standard", standard), ("robust", robust)):
            if not isinstance(model, nn.Module):
                fail(name, "a torch.nn.Module mapping inputs to logits", model, error=InvalidTypeError)
        if (alpha is None) == (mixing_network is None):
            fail("alpha", "given when no mixing_network is (exactly one of 'alpha' and "
                 "'mixing_network')", "alpha=None" if alpha is None else
                 f"alpha={alpha!r} and a mixing_network", describe_got=False)
        if mixing_network is not None and not isinstance(mixing_network, nn.Module):
            fail("mixing_network", "a torch.nn.Module mapping features (N, F) to gamma (N,)",
                 mixing_network, error=InvalidTypeError)
        self.standard = standard
        self.robust = robust
        self.alpha = None if alpha is None else check_probability("alpha", alpha)
        self.mixing_network = mixing_network
        self.alpha_range = _check_alpha_range(alpha_range)
        self.layers = _check_layer_names("layers", layers)
        self.standard_layers = _check_layer_names("standard_layers", standard_layers)
        if mixing_network is not None and not self.layers and not self.standard_layers:
            fail("layers", "at least one layer for the mixing network to read", "()",
                 describe_got=False)
        if mixing_network is not None:
            from robustlab.detection._features import resolve_layers

            self._resolved_robust = resolve_layers(robust, self.layers)
            self._resolved_standard = resolve_layers(standard, self.standard_layers)

    def train(self, mode: bool = True) -> MixedClassifier:
        """Switch the mixing network only; the base models keep their own modes."""
        self.training = bool(mode)
        if self.mixing_network is not None:
            self.mixing_network.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0]

    def mixing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``alpha(x)``, shape ``(N,)``: the weight of the robust model's probabilities."""
        return self._forward(x)[2]

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(mixed logits, gamma or None, alpha (N,))."""
        if self.mixing_network is None:
            alpha = self.alpha
            ones = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
            if alpha == 0.0:
                return torch.log_softmax(_run(self.standard, x), dim=1), None, ones * 0.0
            if alpha == 1.0:
                return torch.log_softmax(_run(self.robust, x), dim=1), None, ones
            s, r = _run(self.standard, x), _run(self.robust, x)
            return _mix_fixed(s, r, alpha), None, ones * alpha
        s, feats_s = _run_features(self.standard, x, self._resolved_standard)
        r, feats_r = _run_features(self.robust, x, self._resolved_robust)
        gamma = self.mixing_network(torch.cat([*feats_r, *feats_s], dim=1))
        if gamma.ndim == 2 and gamma.shape[1] == 1:
            gamma = gamma[:, 0]
        if gamma.shape != (x.shape[0],):
            fail("mixing_network", "a module returning gamma of shape (N,) or (N, 1)",
                 f"an output of shape {tuple(gamma.shape)}", describe_got=False)
        log_alpha, log_1m_alpha = self._log_alphas(gamma.to(s.dtype))
        out = _mix_log(s, r, log_1m_alpha.unsqueeze(1), log_alpha.unsqueeze(1))
        return out, gamma, log_alpha.exp()

    def _log_alphas(self, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log(alpha), log(1 - alpha) for alpha = low + (high - low) sigmoid(gamma), without underflow."""
        low, high = self.alpha_range
        width = high - low
        neg_inf = torch.tensor(-math.inf, device=gamma.device, dtype=gamma.dtype)

        def log_or_inf(v: float) -> torch.Tensor:
            return neg_inf if v <= 0 else torch.tensor(math.log(v), device=gamma.device, dtype=gamma.dtype)

        sig = torch.nn.functional.logsigmoid
        if width == 0:
            return log_or_inf(low).expand_as(gamma), log_or_inf(1 - low).expand_as(gamma)
        log_alpha = torch.logaddexp(log_or_inf(low), math.log(width) + sig(gamma))
        log_1m_alpha = torch.logaddexp(log_or_inf(1 - high), math.log(width) + sig(-gamma))
        return log_alpha, log_1m_alpha

    def extra_repr(self) -> str:
        if self.mixing_network is None:
            return f"alpha={self.alpha}"
        return f"layers={self.layers}, standard_layers={self.standard_layers}, alpha_range={self.alpha_range}"


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if any(m.training for m in model.modules()):
        from robustlab._model_state import eval_mode

        with eval_mode(model):
            return model(x)
    return model(x)


def _run_features(model: nn.Module, x: torch.Tensor, resolved: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    from robustlab.detection._features import forward_features

    if not resolved:
        return _run(model, x), []
    with ExitStack() as stack:
        if any(m.training for m in model.modules()):
            from robustlab._model_state import eval_mode

            stack.enter_context(eval_mode(model))
        return forward_features(model, x, resolved)


def _check_alpha_range(value: Any) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        fail("alpha_range", "a pair (low, high) with 0 <= low <= high <= 1", value, error=InvalidTypeError)
    low = check_probability("alpha_range", value[0])
    high = check_probability("alpha_range", value[1])
    if low > high:
        fail("alpha_range", "a pair (low, high) with 0 <= low <= high <= 1", value)
    return (low, high)


def _check_layer_names(name: str, layers: Any) -> tuple[str, ...]:
    if isinstance(layers, str):
        layers = (layers,)
    if not isinstance(layers, Sequence) or not all(isinstance(v, str) for v in layers):
        fail(name, "a sequence of layer names", layers, error=InvalidTypeError)
    return tuple(layers)


# ----------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class MixingFit:
    """A trained mixing network and what its training did.

    Attributes
    ----------
    classifier : MixedClassifier
        The mixed model (eval mode) holding ``mixing_network`` and the caller's base models.
    mixing_network : MixingNetwork
    losses : tuple of float
        Mean composite loss of each epoch (over clean and adversarial halves).
    clean_alpha : float
        Mean ``alpha(x)`` on the clean training inputs after training.
    adversarial_alpha : float
        Mean ``alpha(x)`` on adversarial training inputs (made against the final mixed model).
    """

    classifier: MixedClassifier
    mixing_network: MixingNetwork
    losses: tuple[float, ...]
    clean_alpha: float
    adversarial_alpha: float


def fit_mixing_network(
    standard: nn.Module,
    robust: nn.Module,
    train_data: Any,
    *,
    eps: float,
    norm: str = "linf",
    layers: Sequence[str] = (PENULTIMATE,),
    standard_layers: Sequence[str] = (),
    hidden_size: int = ADAPTIVE_HIDDEN_SIZE,
    epochs: int = ADAPTIVE_EPOCHS,
    batch_size: int = ADAPTIVE_BATCH_SIZE,
    lr: float = ADAPTIVE_LR,
    weight_decay: float = ADAPTIVE_WEIGHT_DECAY,
    attack_steps: int = ADAPTIVE_ATTACK_STEPS,
    loss_weights: tuple[float, float, float] = (ADAPTIVE_LOSS_BCE, ADAPTIVE_LOSS_CE, ADAPTIVE_LOSS_PROD),
    alpha_range: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator,
) -> MixingFit:
    """Train the mixing network of adaptive smoothing (Bai et al., SIMODS 2024).

    Both base models are frozen (eval mode, no parameter gradients; their state is restored).
    Every batch pairs ``B`` clean inputs with ``B`` adversarial ones made by PGD *against the current
    mixed model* (an adaptive attack through the mixing network, as the reference trainer attacks
    its composite model), and minimises the composite loss of ``adaptive_smoothing/losses.py``

    .. math:: c_{bce}\\,\\mathrm{BCE}(\\gamma, s) + c_{ce}\\,\\mathrm{CE}(h_\\alpha, y)
              + c_{prod}\\,\\mathrm{BCE}(\\gamma, s)\\,\\mathrm{CE}(h_\\alpha, y),

    with ``s = 0`` on clean and ``1`` on adversarial inputs (use the standard model on clean inputs,
    the robust one under attack) and ``(c_bce, c_ce, c_prod) = (1.5, 0, 0.3)`` from the reference
    configuration ``configs/cifar10_edm_apgd.yaml``.

    Parameters
    ----------
    standard, robust : nn.Module
        The base classifiers (never changed).
    train_data : (inputs, labels) or Dataset
        Training inputs in ``[0, 1]`` and int64 labels, or an object with ``.tensors()``
        (:class:`robustlab.data.Dataset`).
    eps : float > 0
        Radius of the training attack.
    norm : {"linf", "l2", "l1"}, default "linf"
    layers, standard_layers : sequence of str
        Features fed to the mixing network (see :class:`MixedClassifier`).
    hidden_size : int, default 64
    epochs : int, default 10
    batch_size : int, default 64
        Clean inputs per batch (the loss sees twice as many with the adversarial half).
    lr, weight_decay : float
        AdamW settings (reference optimiser: AdamW, weight decay 1e-5).
    attack_steps : int, default 10
        PGD steps (step size ``2.5 * eps / attack_steps``, random start).
    loss_weights : (float, float, float), default (1.5, 0.0, 0.3)
        ``(c_bce, c_ce, c_prod)``, each >= 0, not all zero.
    alpha_range : (float, float), default (0.0, 1.0)
        Range of ``alpha(x)`` (see :class:`MixedClassifier`).
    generator : torch.Generator
        Initial weights, batch order and attack random starts. Same generator state, same result.

    Returns
    -------
    MixingFit

    Notes
    -----
    Deviations from the reference: PGD instead of its randomised APGD (random eps and step
    counts), no BatchNorm on ``gamma`` (the input features are standardised with the clean training
    set's statistics instead), and the same ``alpha_range`` in training and evaluation (the
    reference rescales ``gamma`` differently for evaluation).
    """
    from robustlab._model_state import frozen_params
    from robustlab.adversarial import NORMS, pgd

    for name, model in (("standard", standard), ("robust", robust)):
        if not isinstance(model, nn.Module):
            fail(name, "a torch.nn.Module mapping inputs to logits", model, error=InvalidTypeError)
    x, y = _unpack_data(train_data)
    eps = check_number("eps", eps, low=0.0, low_inclusive=False)
    check_choice("norm", norm, NORMS)
    hidden_size = check_int("hidden_size", hidden_size, low=1)
    epochs = check_int("epochs", epochs, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    lr = check_number("lr", lr, low=0.0, low_inclusive=False)
    weight_decay = check_number("weight_decay", weight_decay, low=0.0)
    attack_steps = check_int("attack_steps", attack_steps, low=1)
    weights = _check_loss_weights(loss_weights)
    alpha_range = _check_alpha_range(alpha_range)
    generator = check_generator("generator", generator)
    layers = _check_layer_names("layers", layers)
    standard_layers = _check_layer_names("standard_layers", standard_layers)

    with frozen_params(standard), frozen_params(robust):
        probe = MixedClassifier(standard, robust, mixing_network=nn.Identity(), layers=layers,
                                standard_layers=standard_layers, alpha_range=alpha_range)
        feats = _features(probe, x, batch_size)
        mean, std = feats.mean(dim=0), feats.std(dim=0, unbiased=False).clamp_min(ADAPTIVE_FEATURE_STD_FLOOR)
        init = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        net = MixingNetwork(feats.shape[1], hidden_size, feature_mean=mean.cpu(), feature_std=std.cpu(),
                            generator=init).to(device=x.device, dtype=x.dtype)
        clf = MixedClassifier(standard, robust, mixing_network=net, layers=layers,
                              standard_layers=standard_layers, alpha_range=alpha_range)
        losses = _train_loop(clf, net, x, y, eps=eps, norm=norm, epochs=epochs, batch_size=batch_size,
                             lr=lr, weight_decay=weight_decay, attack_steps=attack_steps, weights=weights,
                             generator=generator, pgd=pgd)
        clf.eval()
        with torch.no_grad():
            clean_alpha = float(_alphas(clf, x, batch_size).mean())
        adv = torch.cat([pgd(clf, x[i:i + batch_size], y[i:i + batch_size], eps=eps, norm=norm,
                             num_steps=attack_steps, step_size=2.5 * eps / attack_steps,
                             generator=generator).adv_inputs for i in range(0, x.shape[0], batch_size)])
        with torch.no_grad():
            adv_alpha = float(_alphas(clf, adv, batch_size).mean())
    return MixingFit(classifier=clf, mixing_network=net, losses=tuple(losses), clean_alpha=clean_alpha,
                     adversarial_alpha=adv_alpha)


def _train_loop(clf: MixedClassifier, net: MixingNetwork, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                norm: str, epochs: int, batch_size: int, lr: float, weight_decay: float, attack_steps: int,
                weights: tuple[float, float, float], generator: torch.Generator, pgd: Any) -> list[float]:
    c_bce, c_ce, c_prod = weights
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).to(x.device)
        total, count = 0.0, 0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            clf.eval()
            x_adv = pgd(clf, xb, yb, eps=eps, norm=norm, num_steps=attack_steps,
                        step_size=2.5 * eps / attack_steps, generator=generator).adv_inputs.detach()
            clf.train()
            logits, gamma, _ = clf._forward(torch.cat((xb, x_adv)))
            target = torch.cat((torch.zeros_like(gamma[:len(idx)]), torch.ones_like(gamma[len(idx):])))
            bce = nn.functional.binary_cross_entropy_with_logits(gamma, target, reduction="none")
            ce = nn.functional.cross_entropy(logits, torch.cat((yb, yb)), reduction="none")
            loss = (c_bce * bce + c_ce * ce + c_prod * bce * ce).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        losses.append(total / count)
    clf.eval()
    return losses


def _features(probe: MixedClassifier, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            _, fs = _run_features(probe.standard, xb, probe._resolved_standard)
            _, fr = _run_features(probe.robust, xb, probe._resolved_robust)
            out.append(torch.cat([*fr, *fs], dim=1))
    return torch.cat(out)


def _alphas(clf: MixedClassifier, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([clf.mixing_weights(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def _unpack_data(train_data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(train_data, "tensors") and callable(train_data.tensors):
        train_data = train_data.tensors()
    if not isinstance(train_data, (tuple, list)) or len(train_data) != 2:
        fail("train_data", "a pair (inputs, labels) or a robustlab Dataset", train_data,
             error=InvalidTypeError)
    x = check_inputs("train_data", train_data[0])
    if x.shape[0] == 0:
        fail("train_data", "at least one example", x)
    y = check_labels("train_data", train_data[1], n=x.shape[0]).to(x.device)
    return x, y


def _check_loss_weights(value: Any) -> tuple[float, float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        fail("loss_weights", "a triple (c_bce, c_ce, c_prod) of numbers >= 0", value, error=InvalidTypeError)
    out = tuple(check_number("loss_weights", v, low=0.0) for v in value)
    if not any(out):
        raise InvalidParameterError(
            "The 'loss_weights' parameter must have at least one positive weight. Got (0, 0, 0) instead.")
    return out  # type: ignore[return-value]
