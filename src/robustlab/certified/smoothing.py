"""Randomized smoothing: certified L2 robustness of any classifier (Cohen, Rosenfeld & Kolter, ICML 2019).

The smoothed classifier of a base classifier ``f`` is

.. math::  g(x) = \\arg\\max_c \\; P_{\\varepsilon \\sim N(0, \\sigma^2 I)}\\big(f(x + \\varepsilon) = c\\big).

Theorem 1 of the paper: if the top class ``c_A`` has probability at least ``p_A > 1/2`` under
noise, ``g`` predicts ``c_A`` everywhere in the L2 ball of radius ``sigma * Phi^{-1}(p_A)``
around ``x``. ``g`` cannot be evaluated exactly; :func:`predict` and :func:`certify` are the
Monte Carlo procedures PREDICT and CERTIFY of the paper's Sec. 3.2 ("Pseudocode for
certification and prediction"), which are right with probability at least ``1 - alpha`` over the
noise and abstain (class ``-1``) otherwise.

Differences from the reference implementation (locuslab/smoothing ``code/core.py``), read for
facts only: noise comes from the caller's ``torch.Generator`` (never the global RNG), several
inputs share one forward pass (the reference certifies one input at a time), nothing is
hard-coded to CUDA, the caller's model state is restored, and the confidence bound uses
``scipy.stats.beta`` instead of statsmodels.

Training the base classifier: randomized smoothing needs a base model that is accurate under
``N(0, sigma^2 I)`` noise; train it with the ``"gaussian-augment"`` objective of
:mod:`robustlab.corruptions.augment` (Cohen et al. Sec. 3.2 / 4: train at the sigma you certify
with), e.g. ``robustlab train --method gaussian-augment``.

Dual randomized smoothing (Xia et al., ICLR 2024) is not implemented here; see the module's
report for why.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats

from robustlab._checks import (
    as_tensor,
    check_finite,
    check_generator,
    check_inputs,
    check_int,
    check_labels,
    check_logits,
    check_number,
    fail,
)
from robustlab._constants import (
    SMOOTHING_ABSTAIN,
    SMOOTHING_ALPHA,
    SMOOTHING_BATCH_SIZE,
    SMOOTHING_N,
    SMOOTHING_N0,
)
from robustlab._model_state import eval_mode
from robustlab.errors import InvalidTypeError

__all__ = [
    "ABSTAIN",
    "Certificate",
    "Smooth",
    "average_certified_radius",
    "certified_accuracy_curve",
    "certify",
    "clopper_pearson_lower",
    "predict",
    "sample_counts",
]

#: Predicted class meaning "abstain" (locuslab core.py ``Smooth.ABSTAIN``).
ABSTAIN = SMOOTHING_ABSTAIN


# --------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class Certificate:
    """Output of :func:`certify`: one smoothed prediction and certified L2 radius per input.

    Parameters
    ----------
    predictions : LongTensor of shape (N,)
        ``c_A`` of CERTIFY, or ``-1`` (:data:`ABSTAIN`) where ``pA_lower < 0.5``.
    radius : float64 Tensor of shape (N,)
        Certified L2 radius ``sigma * Phi^{-1}(pA_lower)``; 0 where the prediction abstains.
        With probability at least ``1 - alpha`` (per input, over the noise), the smoothed
        classifier ``g`` predicts ``predictions[i]`` on the whole L2 ball of this radius.
    pA_lower : float64 Tensor of shape (N,)
        One-sided ``(1 - alpha)`` Clopper-Pearson lower bound on ``p_A`` from the estimation
        samples.
    counts : LongTensor of shape (N, K)
        Class counts of the base classifier over the ``n`` estimation samples.
    sigma, alpha : float
    n0, n : int
        The settings the certificate was computed with.
    """

    predictions: torch.Tensor
    radius: torch.Tensor
    pA_lower: torch.Tensor  # the paper's name
    counts: torch.Tensor
    sigma: float
    alpha: float
    n0: int
    n: int

    @property
    def abstained(self) -> torch.Tensor:
        """BoolTensor (N,): inputs where CERTIFY abstained."""
        return self.predictions == ABSTAIN

    @property
    def abstention_rate(self) -> float:
        """Fraction of inputs where CERTIFY abstained (``nan`` for no inputs)."""
        n = self.predictions.numel()
        return float(self.abstained.sum()) / n if n else float("nan")


# --------------------------------------------------------------------------- validation
def _check_model(model: Any) -> Any:
    if not callable(model):
        fail("model", "a torch.nn.Module returning logits, or a callable returning scores (N, K)",
             model, error=InvalidTypeError)
    return model


def _check_common(model: Any, x: Any, sigma: Any, alpha: Any, batch_size: Any, generator: Any,
                  num_classes: Any) -> tuple[torch.Tensor, float, float, int, int | None]:
    _check_model(model)
    x = check_inputs("x", x)
    sigma = check_number("sigma", sigma, low=0.0, low_inclusive=False)
    alpha = check_number("alpha", alpha, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_generator("generator", generator)
    if num_classes is not None:
        num_classes = check_int("num_classes", num_classes, low=1)
    return x, sigma, alpha, batch_size, num_classes


# --------------------------------------------------------------------------- sampling
def sample_counts(
    model: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    x: torch.Tensor,
    *,
    sigma: float,
    num_samples: int,
    batch_size: int = SMOOTHING_BATCH_SIZE,
    generator: torch.Generator,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Count the base classifier's top-1 classes on ``num_samples`` noisy copies of each input.

    Parameters
    ----------
    model : nn.Module or callable
        Base classifier ``f``: maps ``(B, ...)`` inputs to scores ``(B, K)`` (logits or
        probabilities; only the argmax is used). An ``nn.Module`` runs in eval mode and its
        caller's state is restored.
    x : Tensor of shape (N, ...)
        Float inputs; noise is added without clipping (the guarantee needs unclipped noise).
    sigma : float > 0
        Noise standard deviation, in input units.
    num_samples : int >= 1
    batch_size : int >= 1, default 1000
        Noisy copies per forward pass; copies of several inputs share a pass when
        ``num_samples < batch_size``.
    generator : torch.Generator
        Source of the noise (drawn on the generator's device, moved to ``x``'s).
    num_classes : int, optional
        When given, the model's output must have this many columns.

    Returns
    -------
    LongTensor of shape (N, K) on ``x``'s device
        ``counts[i, c]`` = number of copies of ``x[i]`` classified ``c``.

    Notes
    -----
    This is SAMPLEUNDERNOISE of Cohen et al. (2019), Sec. 3.2. Same generator state, same
    ``batch_size``: same counts.
    """
    x, sigma, _, batch_size, num_classes = _check_common(model, x, sigma, 0.5, batch_size, generator,
                                                         num_classes)
    num_samples = check_int("num_samples", num_samples, low=1)
    with _scoring(model):
        return _sample_counts_impl(model, x, sigma, num_samples, batch_size, generator, num_classes)


@contextmanager
def _scoring(model: Any) -> Iterator[None]:
    """Eval mode for the block (caller's state restored) and no autograd graph."""
    state = eval_mode(model) if isinstance(model, torch.nn.Module) else nullcontext()
    with state, torch.no_grad():
        yield


def _sample_counts_impl(model: Any, x: torch.Tensor, sigma: float, num: int, batch_size: int,
                        generator: torch.Generator, num_classes: int | None) -> torch.Tensor:
    from robustlab.adversarial._core import randn

    n_inputs = x.shape[0]
    total = n_inputs * num
    k = num_classes
    counts: torch.Tensor | None = None
    # The (input, sample) grid is walked input-major in chunks of batch_size copies, so one
    # forward pass mixes the copies of consecutive inputs when num < batch_size.
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        owner = torch.arange(start, stop, device=x.device) // num
        noisy = x[owner] + sigma * randn((stop - start, *x.shape[1:]), generator, x)
        scores = check_logits("model output", model(noisy), n=stop - start, num_classes=k)
        if counts is None:
            k = int(scores.shape[1])
            counts = torch.zeros(n_inputs * k, dtype=torch.int64, device=x.device)
        top = scores.argmax(dim=1).to(x.device)
        counts.index_add_(0, owner * k + top, torch.ones_like(top))
    if counts is None:  # no inputs
        return torch.zeros((0, k or 0), dtype=torch.int64, device=x.device)
    return counts.view(n_inputs, int(k))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- statistics
def clopper_pearson_lower(successes: Any, trials: int, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower confidence bound on a binomial proportion.

    Parameters
    ----------
    successes : int or array of int in [0, trials]
    trials : int >= 1
    alpha : float in (0, 1)

    Returns
    -------
    ndarray of float64, the shape of ``successes``
        ``Beta(alpha; k, trials - k + 1)`` quantile, 0 where ``k = 0``. This equals the lower
        end of the two-sided ``1 - 2 alpha`` exact interval, which is what locuslab core.py
        ``_lower_confidence_bound`` computes (``proportion_confint(NA, N, alpha=2*alpha,
        method="beta")[0]``), and of ``scipy.stats.binomtest(k, trials).proportion_ci(
        confidence_level=1 - 2 alpha, method="exact")``.
    """
    trials = check_int("trials", trials, low=1)
    alpha = check_number("alpha", alpha, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    k = np.asarray(successes)
    if k.dtype.kind not in "iu" or (k.size and (k.min() < 0 or k.max() > trials)):
        fail("successes", f"integers in [0, {trials}]", successes)
    return _cp_lower(k, trials, alpha)


def _cp_lower(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    k = k.astype(np.float64)
    safe = np.maximum(k, 1.0)  # Beta(0, .) is undefined; the bound is 0 there
    return np.where(k > 0, stats.beta.ppf(alpha, safe, n - k + 1), 0.0)


# --------------------------------------------------------------------------- predict
def predict(
    model: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    x: torch.Tensor,
    *,
    sigma: float,
    n: int = SMOOTHING_N,
    alpha: float = SMOOTHING_ALPHA,
    batch_size: int = SMOOTHING_BATCH_SIZE,
    generator: torch.Generator,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Smoothed prediction with abstention (PREDICT of Cohen et al. 2019, Sec. 3.2).

    Draws ``n`` noisy copies ``x + N(0, sigma^2 I)`` per input, takes the two most frequent
    base-classifier classes (counts ``n_A >= n_B``) and returns the top one if a two-sided
    binomial test of ``n_A`` out of ``n_A + n_B`` against ``p = 1/2`` has p-value ``<= alpha``;
    otherwise abstains (``-1``).

    Parameters
    ----------
    model : nn.Module or callable
        Base classifier returning scores ``(B, K)``; only its argmax is used.
    x : Tensor of shape (N, ...)
        Float inputs (images ``(N, C, H, W)`` or tabular ``(N, D)``).
    sigma : float > 0
        Noise standard deviation.
    n : int >= 1, default 100,000
        Monte Carlo samples per input (locuslab predict.py ``--N``).
    alpha : float in (0, 1), default 0.001
        Failure probability (locuslab predict.py ``--alpha``).
    batch_size : int >= 1, default 1000
        Noisy copies per forward pass.
    generator : torch.Generator
        Source of the noise.
    num_classes : int, optional
        Checked against the model's output width when given.

    Returns
    -------
    LongTensor of shape (N,)
        Predicted classes, ``-1`` for abstain.

    Notes
    -----
    Guarantee (Cohen et al., Proposition 1, after Hung et al. 2019): for each input, the
    probability that PREDICT returns a class other than ``g(x)`` without abstaining is at most
    ``alpha``.
    """
    x, sigma, alpha, batch_size, num_classes = _check_common(model, x, sigma, alpha, batch_size,
                                                             generator, num_classes)
    n = check_int("n", n, low=1)
    with _scoring(model):
        counts = _sample_counts_impl(model, x, sigma, n, batch_size, generator, num_classes)
    return _predict_from_counts(counts, alpha)


def _predict_from_counts(counts: torch.Tensor, alpha: float) -> torch.Tensor:
    out = torch.full((counts.shape[0],), ABSTAIN, dtype=torch.int64, device=counts.device)
    if counts.shape[0] == 0:
        return out
    c = counts.cpu().numpy()
    if c.shape[1] >= 2:
        order = np.argsort(-c, axis=1, kind="stable")[:, :2]
        n_a = np.take_along_axis(c, order[:, :1], 1)[:, 0]
        n_b = np.take_along_axis(c, order[:, 1:2], 1)[:, 0]
    else:
        order = np.zeros((c.shape[0], 1), dtype=np.int64)
        n_a, n_b = c[:, 0], np.zeros(c.shape[0], dtype=np.int64)
    keep = np.array([stats.binomtest(int(a), int(a + b), 0.5).pvalue <= alpha
                     for a, b in zip(n_a, n_b)], dtype=bool)
    top = torch.as_tensor(order[:, 0], dtype=torch.int64, device=counts.device)
    return torch.where(torch.as_tensor(keep, device=counts.device), top, out)


# --------------------------------------------------------------------------- certify
def certify(
    model: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    x: torch.Tensor,
    *,
    sigma: float,
    n0: int = SMOOTHING_N0,
    n: int = SMOOTHING_N,
    alpha: float = SMOOTHING_ALPHA,
    batch_size: int = SMOOTHING_BATCH_SIZE,
    generator: torch.Generator,
    num_classes: int | None = None,
) -> Certificate:
    """Certified L2 radius of the smoothed classifier (CERTIFY of Cohen et al. 2019, Sec. 3.2).

    Threat model: L2 perturbations of the input; ``x`` may be any float tensor ``(N, ...)``
    (images are smoothed in pixel units, without clipping the noisy copies to [0, 1]).

    Per input: ``n0`` selection samples pick the guess ``c_A`` (most frequent class); ``n``
    fresh estimation samples count ``n_A`` votes for it; ``pA_lower`` is the one-sided
    ``(1 - alpha)`` Clopper-Pearson lower bound on ``p_A`` from ``(n_A, n)``. If
    ``pA_lower < 1/2`` the input abstains (radius 0); otherwise the radius is
    ``sigma * Phi^{-1}(pA_lower)`` (Theorem 1 with ``p_B = 1 - p_A``).

    Parameters
    ----------
    model : nn.Module or callable
        Base classifier returning scores ``(B, K)``; only its argmax is used. An ``nn.Module``
        runs in eval mode under ``torch.no_grad``; its caller's state is restored.
    x : Tensor of shape (N, ...)
    sigma : float > 0
        Noise standard deviation (Cohen et al. use 0.12, 0.25, 0.5, 1.0 on [0, 1] pixels).
    n0 : int >= 1, default 100
        Selection samples (locuslab certify.py ``--N0``).
    n : int >= 1, default 100,000
        Estimation samples (certify.py ``--N``). The largest certifiable radius with
        ``n_A = n`` is ``sigma * Phi^{-1}(alpha^{1/n})``.
    alpha : float in (0, 1), default 0.001
        Failure probability per input (certify.py ``--alpha``).
    batch_size : int >= 1, default 1000
        Noisy copies per forward pass (certify.py ``--batch``); copies of several inputs share
        a pass when ``n0`` or ``n`` is smaller.
    generator : torch.Generator
        Source of the noise; same seed, same ``batch_size``: same certificate.
    num_classes : int, optional
        Checked against the model's output width when given.

    Returns
    -------
    Certificate

    Notes
    -----
    Guarantee (Cohen et al., Proposition 2): for each input, with probability at least
    ``1 - alpha`` over the noise, if CERTIFY returns class ``c_A`` and radius ``R`` then the
    smoothed classifier ``g`` predicts ``c_A`` on the whole L2 ball of radius ``R`` around ``x``.

    Loop version (the test oracle)::

        for i in range(N):
            c_A = argmax(counts(x[i], n0))
            n_A = counts(x[i], n)[c_A]
            p = beta.ppf(alpha, n_A, n - n_A + 1)
            pred[i], radius[i] = (c_A, sigma * norm.ppf(p)) if p >= 0.5 else (-1, 0.0)

    References
    ----------
    J. Cohen, E. Rosenfeld, J. Z. Kolter. "Certified Adversarial Robustness via Randomized
    Smoothing", ICML 2019, Theorem 1 and Sec. 3.2.

    Examples
    --------
    >>> import torch
    >>> from robustlab.certified.smoothing import certify
    >>> model = torch.nn.Linear(2, 2)
    >>> cert = certify(model, torch.zeros(3, 2), sigma=0.25, n=200,
    ...                generator=torch.Generator().manual_seed(0))
    >>> cert.radius.shape
    torch.Size([3])
    """
    x, sigma, alpha, batch_size, num_classes = _check_common(model, x, sigma, alpha, batch_size,
                                                             generator, num_classes)
    n0 = check_int("n0", n0, low=1)
    n = check_int("n", n, low=1)
    return _certify_impl(model, x, sigma, n0, n, alpha, batch_size, generator, num_classes)


def _certify_impl(model: Any, x: torch.Tensor, sigma: float, n0: int, n: int, alpha: float,
                  batch_size: int, generator: torch.Generator, num_classes: int | None) -> Certificate:
    with _scoring(model):
        selection = _sample_counts_impl(model, x, sigma, n0, batch_size, generator, num_classes)
        counts = _sample_counts_impl(model, x, sigma, n, batch_size, generator,
                                     num_classes if num_classes is not None else
                                     (selection.shape[1] if x.shape[0] else None))
    c_a = selection.argmax(dim=1) if x.shape[0] else torch.zeros(0, dtype=torch.int64, device=x.device)
    n_a = counts.gather(1, c_a[:, None])[:, 0] if x.shape[0] else c_a
    p_lower = _cp_lower(n_a.cpu().numpy(), n, alpha)
    certified = p_lower >= 0.5
    radius = np.where(certified, sigma * stats.norm.ppf(np.where(certified, p_lower, 0.5)), 0.0)
    dev = x.device
    certified_t = torch.as_tensor(certified, device=dev)
    return Certificate(
        predictions=torch.where(certified_t, c_a, torch.full_like(c_a, ABSTAIN)),
        radius=torch.as_tensor(radius, dtype=torch.float64, device=dev),
        pA_lower=torch.as_tensor(p_lower, dtype=torch.float64, device=dev),
        counts=counts,
        sigma=sigma, alpha=alpha, n0=n0, n=n,
    )


# --------------------------------------------------------------------------- metrics
def _check_certificate(certificate: Any) -> Certificate:
    if not isinstance(certificate, Certificate):
        fail("certificate", "a robustlab.certified.smoothing.Certificate (from certify)", certificate,
             error=InvalidTypeError)
    return certificate


def certified_accuracy_curve(certificate: Certificate, labels: Any, radii: Any) -> tuple[np.ndarray, np.ndarray]:
    """Certified accuracy at each radius: fraction of inputs certified correct with radius >= r.

    Parameters
    ----------
    certificate : Certificate
    labels : int64 Tensor of shape (N,)
        True classes.
    radii : float or 1-D array of floats >= 0
        The radii to report.

    Returns
    -------
    (radii, accuracy) : two float64 ndarrays of shape (R,)
        ``accuracy[j] = mean(predictions == labels and radius >= radii[j])`` (abstentions count
        as wrong), as in Cohen et al.'s ``analyze.py`` / their Fig. 7 and Table 1.
    """
    certificate = _check_certificate(certificate)
    labels = check_labels("labels", labels, n=certificate.predictions.shape[0])
    r = as_tensor("radii", radii, dtype=torch.float64).reshape(-1) if not isinstance(radii, numbers.Real) \
        else torch.tensor([float(radii)], dtype=torch.float64)
    check_finite("radii", r)
    if r.numel() and float(r.min()) < 0:
        fail("radii", "non-negative radii", f"a minimum of {float(r.min()):.4g}", describe_got=False)
    correct = (certificate.predictions.cpu() == labels.cpu()).numpy()
    radius = certificate.radius.cpu().numpy()
    rr = r.numpy()
    if correct.size == 0:
        return rr, np.full(rr.shape, np.nan)
    acc = (correct[None, :] & (radius[None, :] >= rr[:, None])).mean(axis=1)
    return rr, acc.astype(np.float64)


def average_certified_radius(certificate: Certificate, labels: Any) -> float:
    """Mean certified radius over inputs, counting wrong or abstained inputs as radius 0 (ACR).

    ACR as defined by Zhai et al. (MACER, ICLR 2020, Sec. 4).
    """
    certificate = _check_certificate(certificate)
    labels = check_labels("labels", labels, n=certificate.predictions.shape[0])
    correct = certificate.predictions.cpu() == labels.cpu()
    if correct.numel() == 0:
        return float("nan")
    return float((certificate.radius.cpu() * correct).mean())


# --------------------------------------------------------------------------- thin class
class Smooth:
    """A smoothed classifier: stores the base model, ``num_classes`` and ``sigma``.

    Parameters
    ----------
    base_classifier : nn.Module or callable
        Maps ``(B, ...)`` inputs to scores ``(B, num_classes)``.
    num_classes : int >= 1
    sigma : float > 0

    Methods :meth:`predict` and :meth:`certify` call the functions of this module with the
    stored settings (the shape of locuslab core.py's ``Smooth``, without its hidden state).
    """

    def __init__(self, base_classifier: Any, num_classes: int, sigma: float) -> None:
        self.base_classifier = _check_model(base_classifier)
        self.num_classes = check_int("num_classes", num_classes, low=1)
        self.sigma = check_number("sigma", sigma, low=0.0, low_inclusive=False)

    def predict(self, x: torch.Tensor, *, n: int = SMOOTHING_N, alpha: float = SMOOTHING_ALPHA,
                batch_size: int = SMOOTHING_BATCH_SIZE, generator: torch.Generator) -> torch.Tensor:
        """See :func:`predict`."""
        return predict(self.base_classifier, x, sigma=self.sigma, n=n, alpha=alpha,
                       batch_size=batch_size, generator=generator, num_classes=self.num_classes)

    def certify(self, x: torch.Tensor, *, n0: int = SMOOTHING_N0, n: int = SMOOTHING_N,
                alpha: float = SMOOTHING_ALPHA, batch_size: int = SMOOTHING_BATCH_SIZE,
                generator: torch.Generator) -> Certificate:
        """See :func:`certify`."""
        return certify(self.base_classifier, x, sigma=self.sigma, n0=n0, n=n, alpha=alpha,
                       batch_size=batch_size, generator=generator, num_classes=self.num_classes)

    def __repr__(self) -> str:
        return f"Smooth(num_classes={self.num_classes}, sigma={self.sigma})"
