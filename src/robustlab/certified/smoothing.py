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

Dual randomized smoothing (Xia et al., ICLR 2024): :func:`dual_certify` splits each image into
two down-sampled sub-images (:func:`checkerboard_split`), smooths each with its own base
classifier and certifies the sum of the two smoothed class probabilities; see its Notes for the
radius we prove and how it relates to the reference code.
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
    check_tensor,
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
    "checkerboard_split",
    "clopper_pearson_lower",
    "dual_certify",
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


# --------------------------------------------------------------------------- dual smoothing
def checkerboard_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split images into two down-sampled sub-images along a checkerboard.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), W even

    Returns
    -------
    (x1, x2) : two Tensors of shape (N, C, H, W // 2)
        ``x1[..., i, j] = x[..., i, 2j + (i mod 2)]`` (pixels with even ``row + column``) and
        ``x2[..., i, j] = x[..., i, 2j + 1 - (i mod 2)]`` (odd ``row + column``): in every 2x2
        block the diagonal goes to ``x1`` and the anti-diagonal to ``x2``. Every pixel lands in
        exactly one sub-image, so ``||x1||^2 + ||x2||^2 = ||x||^2``, which the dual certificate
        needs. This is the 2x2-pixel-index down-sampling of Xia et al. (ICLR 2024, Sec. 4, Fig. 1a);
        the reference code (xiasong0501/DRS ``core1_lowres_2.py``, ``get_res_index``) builds its
        two pixel sets with an index loop and feeds masked full-size images to its models; we
        give the models the compact (H, W/2) sub-images.
    """
    x = check_tensor("x", x, ndim=4, dims="N, C, H, W")
    if x.shape[-1] % 2:
        fail("x", "images with an even width (W) for the checkerboard split", x)
    rows = torch.arange(x.shape[-2], device=x.device) % 2
    cols = 2 * torch.arange(x.shape[-1] // 2, device=x.device)
    idx1 = (cols[None, :] + rows[:, None]).expand(*x.shape[:-1], -1)
    idx2 = (cols[None, :] + 1 - rows[:, None]).expand(*x.shape[:-1], -1)
    return x.gather(-1, idx1), x.gather(-1, idx2)


def dual_certify(
    models: tuple[Any, Any],
    x: torch.Tensor,
    *,
    sigma: float,
    split: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = checkerboard_split,
    n0: int = SMOOTHING_N0,
    n: int = SMOOTHING_N,
    alpha: float = SMOOTHING_ALPHA,
    batch_size: int = SMOOTHING_BATCH_SIZE,
    generator: torch.Generator,
    num_classes: int | None = None,
) -> Certificate:
    """Dual randomized smoothing certificate (after Xia et al., ICLR 2024), L2 threat model.

    ``split`` cuts each input into two sub-inputs ``x1, x2`` made of disjoint sets of
    coordinates; base classifier ``models[i]`` sees ``x_i + N(0, sigma^2 I)``. The smoothed
    classifier is ``G(x) = argmax_c p1_c(x1) + p2_c(x2)`` with ``p_i`` the class probabilities
    of the smoothed sub-classifiers. CERTIFY as in :func:`certify`, per sub-classifier: ``n0``
    selection samples of each pick ``c_A`` from the summed counts, ``n`` fresh samples of each
    give Clopper-Pearson lower bounds ``pA1_lower``, ``pA2_lower`` at level ``alpha / 2`` each
    (a union bound, so the certificate holds with probability ``1 - alpha``); with
    ``z = Phi^{-1}(pA1_lower) + Phi^{-1}(pA2_lower)`` the input is certified when ``z > 0``, with
    radius ``sigma * z / sqrt(2)``; otherwise it abstains.

    Parameters
    ----------
    models : pair of nn.Module or callables
        Base classifiers of the two sub-inputs (the same model may be passed twice).
    x : Tensor of shape (N, ...)
        Inputs in the shape ``split`` expects (images ``(N, C, H, W)`` for the default).
    sigma : float > 0
        Noise std on every coordinate of both sub-inputs.
    split : callable, default :func:`checkerboard_split`
        ``x -> (x1, x2)``; must put every coordinate of ``x`` in exactly one sub-input
        (a coordinate in both, or scaled, voids the guarantee).
    n0, n, alpha, batch_size, generator, num_classes
        As in :func:`certify`; ``n0`` and ``n`` are per sub-classifier.

    Returns
    -------
    Certificate
        ``pA_lower`` holds the two bounds averaged on the probit scale,
        ``Phi(z / 2)``, so that ``radius = sigma * sqrt(2) * Phi^{-1}(pA_lower)`` and abstention
        is ``pA_lower <= 1/2`` as in :func:`certify`; ``counts`` holds the summed estimation
        counts of both sub-classifiers.

    Notes
    -----
    Why the radius holds (our derivation; it needs only that ``Phi^{-1}(p_c)`` of a Gaussian-
    smoothed classifier is ``1/sigma``-Lipschitz, Salman et al. 2019 Lemma 2 / Cohen et al.
    Theorem 1): for a perturbation ``delta = (delta1, delta2)`` let ``t_i = ||delta_i|| / sigma``
    and ``a_i = Phi^{-1}(pA_i)``. Then ``p_iA(x_i + delta_i) >= Phi(a_i - t_i)``, and ``c_A`` stays
    the argmax of ``p1 + p2`` whenever ``p1A + p2A > 1`` (every other class has
    ``p1B + p2B <= 2 - p1A - p2A``). ``Phi(a1 - t1) + Phi(a2 - t2) > 1`` iff ``t1 + t2 < a1 + a2``,
    and ``t1 + t2 <= sqrt(2) ||delta|| / sigma``; so ``||delta|| < sigma (a1 + a2) / sqrt(2)``
    suffices. The radius is exact for linear base classifiers (see the tests). Its growth with
    the input dimension follows each sub-input's own ``Phi^{-1}`` term, the
    ``1/sqrt(m) + 1/sqrt(n)`` behaviour of the paper's abstract.

    Deviations from the reference code (xiasong0501/DRS ``core1_lowres_2.py``, ``Smooth.certify``),
    read for facts only: it certifies ``sqrt(R1^2 + R2^2)`` with ``R_i = sigma Phi^{-1}(pA_i_lower)``
    (0 when below 1/2) and spends ``alpha`` on each bound. That equals our radius when
    ``a1 = a2`` and exceeds it otherwise; we could not pin down from the paper which decision
    rule that radius is meant for, so we certify the one we can prove for ``G`` above, and split
    ``alpha`` between the two bounds.

    References
    ----------
    S. Xia, Y. Yu, X. Jiang, H. Ding. "Mitigating the Curse of Dimensionality for Certified
    Robustness via Dual Randomized Smoothing", ICLR 2024.
    """
    if not isinstance(models, (tuple, list)) or len(models) != 2:
        fail("models", "a pair (model_1, model_2) of base classifiers", models, error=InvalidTypeError)
    _check_model(models[1])
    x, sigma, alpha, batch_size, num_classes = _check_common(models[0], x, sigma, alpha, batch_size,
                                                             generator, num_classes)
    if not callable(split):
        fail("split", "a callable x -> (x1, x2)", split, error=InvalidTypeError)
    n0 = check_int("n0", n0, low=1)
    n = check_int("n", n, low=1)
    parts = split(x)
    if not (isinstance(parts, tuple) and len(parts) == 2):
        fail("split", "a callable returning a pair (x1, x2)", parts, error=InvalidTypeError)
    numel = sum(p[0].numel() for p in parts) if x.shape[0] else x[0:1].numel()
    if x.shape[0] and numel != x[0].numel():
        fail("split", f"a split whose sub-inputs hold the {x[0].numel()} coordinates of an input "
             "exactly once", f"{numel} coordinates", describe_got=False)
    return _dual_certify_impl(models, parts, sigma, n0, n, alpha, batch_size, generator, num_classes)


def _dual_certify_impl(models: Any, parts: tuple[torch.Tensor, torch.Tensor], sigma: float, n0: int,
                       n: int, alpha: float, batch_size: int, generator: torch.Generator,
                       num_classes: int | None) -> Certificate:
    selection, estimation = [], []
    for model, part in zip(models, parts):
        with _scoring(model):
            sel = _sample_counts_impl(model, part, sigma, n0, batch_size, generator, num_classes)
            k = num_classes if num_classes is not None else (sel.shape[1] if part.shape[0] else None)
            est = _sample_counts_impl(model, part, sigma, n, batch_size, generator, k)
        num_classes = k
        selection.append(sel)
        estimation.append(est)
    if selection[0].shape != selection[1].shape:
        fail("models", "two classifiers with the same number of classes",
             f"outputs of {selection[0].shape[1]} and {selection[1].shape[1]} columns", describe_got=False)
    dev = parts[0].device
    if parts[0].shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.float64, device=dev)
        return Certificate(torch.zeros(0, dtype=torch.int64, device=dev), empty, empty,
                           estimation[0] + estimation[1], sigma, alpha, n0, n)
    c_a = (selection[0] + selection[1]).argmax(dim=1)
    z = np.zeros(c_a.shape[0])
    for est in estimation:
        n_a = est.gather(1, c_a[:, None])[:, 0].cpu().numpy()
        z = z + stats.norm.ppf(_cp_lower(n_a, n, alpha / 2))  # -inf when n_a = 0
    certified = z > 0
    radius = np.where(certified, sigma * np.where(certified, z, 0.0) / np.sqrt(2.0), 0.0)
    certified_t = torch.as_tensor(certified, device=dev)
    return Certificate(
        predictions=torch.where(certified_t, c_a, torch.full_like(c_a, ABSTAIN)),
        radius=torch.as_tensor(radius, dtype=torch.float64, device=dev),
        pA_lower=torch.as_tensor(stats.norm.cdf(z / 2), dtype=torch.float64, device=dev),
        counts=estimation[0] + estimation[1],
        sigma=sigma, alpha=alpha, n0=n0, n=n,
    )
