"""Simulate label noise: class-conditional, instance-dependent, confusion-biased, dilution, controls.

Every generator takes clean ``labels`` (int tensor or array, shape ``(N,)``), ``num_classes`` and a
required :class:`torch.Generator`, never changes its input, and returns a :class:`NoisyLabels`:
the new labels, the mask of labels that changed, the transition matrix used (when the noise is
class-conditional), the realised flip rate and the exact parameters.

What "rate" means differs between kinds and is stated in each docstring. In short:

==========================  =================================================  ===============
kind                        ``rate`` is ...                                    valid range
==========================  =================================================  ===============
symmetric (exclusive)       P(noisy != true); target uniform over the K-1      [0, 1]
                            other classes
symmetric (inclusive)       P(label is redrawn uniformly over all K classes);  [0, 1]
                            P(noisy != true) = rate (K-1)/K
pair                        P(class i -> i+1 mod K)                            [0, 1)
class map                   P(class s -> mapping[s]) for mapped classes s;     [0, 1]
                            other classes untouched
instance-dependent (IDN)    mean of the truncated normal N(rate, 0.1^2) on     [0, 1)
                            [0, 1] the per-instance flip rates are drawn from
confusion-biased            P(noisy != true); target drawn proportional to     [0, 1]
                            the off-diagonal confusion row of the true class
==========================  =================================================  ===============

Random draws happen on the generator's device, so a CPU generator gives the same labels whatever
device the labels live on; results are returned on the labels' device.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab._checks import (
    check_bool,
    check_choice,
    check_finite,
    check_generator,
    check_inputs,
    check_int,
    check_labels,
    check_number,
    check_probability,
    check_tensor,
    fail,
)
from robustlab._constants import CIFAR10_ASYMMETRIC_MAP, IDN_FLIP_STD
from robustlab.errors import (
    DataFormatError,
    DataNotFoundError,
    InvalidParameterError,
    InvalidTypeError,
    ShapeError,
)

__all__ = [
    "NOISE_SPEC_KINDS",
    "RANDOM_INPUT_KINDS",
    "Diluted",
    "NoiseSpec",
    "NoisyLabels",
    "apply_noise_spec",
    "check_transition_matrix",
    "cifar10_asymmetric_noise",
    "class_map_noise",
    "class_map_transition",
    "confusion_from_model",
    "confusion_from_predictions",
    "confusion_noise",
    "dilute",
    "instance_dependent_noise",
    "pair_flip_noise",
    "pair_flip_transition",
    "parse_noise_spec",
    "random_inputs",
    "random_labels",
    "symmetric_noise",
    "symmetric_transition",
    "transition_noise",
]


@dataclass(frozen=True, eq=False)
class NoisyLabels:
    """Result of a label-noise generator.

    Attributes
    ----------
    labels : Tensor of int64, shape (N,)
        The noisy labels (a new tensor; the clean labels are never modified).
    noise_mask : Tensor of bool, shape (N,)
        ``True`` where the noisy label differs from the clean one.
    transition : Tensor of float64, shape (K, K), or None
        The class-conditional transition matrix ``T[i, j] = P(noisy = j | true = i)`` that was
        sampled from; ``None`` when the noise is not class-conditional (instance-dependent,
        dilution's appended copies are described by ``params``).
    realised_rate : float
        Fraction of labels that changed, ``noise_mask.float().mean()`` (0.0 for empty data).
    kind : str
        Which generator made the labels (``"symmetric"``, ``"pair"``, ...).
    params : dict
        The generator's parameters (rate, mapping, ...) and derived facts such as the expected
        flip rate.
    clean_labels : Tensor of int64, shape (N,), optional
        The clean labels the noise was applied to (for dilution: the labels of each example's
        source).
    flip_prob : Tensor of float64, shape (N,), optional
        Per-example probability that the label was changed (``1 - T[y, y]`` for class-conditional
        noise; the instance's own flip rate for instance-dependent noise).
    """

    labels: torch.Tensor
    noise_mask: torch.Tensor
    transition: torch.Tensor | None
    realised_rate: float
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    clean_labels: torch.Tensor | None = None
    flip_prob: torch.Tensor | None = None

    @property
    def num_flipped(self) -> int:
        """Number of labels that changed."""
        return int(self.noise_mask.sum())

    @property
    def expected_rate(self) -> float | None:
        """Expected flip rate given the clean labels (mean of ``flip_prob``), if known."""
        if self.flip_prob is None or self.flip_prob.numel() == 0:
            return None
        return float(self.flip_prob.mean())


# ----------------------------------------------------------------------------- shared internals
def _check_labels_k(labels: Any, num_classes: Any) -> tuple[torch.Tensor, int]:
    k = check_int("num_classes", num_classes, low=2)
    y = check_labels("labels", labels, num_classes=k)
    return y, k


def _rand(n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device, dtype=torch.float64).to(device)


def _randint(low: int, high: int, n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=g, device=g.device).to(device)


def _hits(n: int, rate: float, g: torch.Generator, device: torch.device, exact: bool) -> torch.Tensor:
    """Which examples the noise touches: independently with probability ``rate``, or (``exact``)
    a uniformly random subset of exactly ``round(rate * n)`` examples."""
    if not exact:
        return _rand(n, g, device) < rate
    chosen = torch.randperm(n, generator=g, device=g.device)[:round(rate * n)].to(device)
    hit = torch.zeros(n, dtype=torch.bool, device=device)
    hit[chosen] = True
    return hit


def _result(y: torch.Tensor, noisy: torch.Tensor, transition: torch.Tensor | None, kind: str,
            params: dict[str, Any], flip_prob: torch.Tensor | None) -> NoisyLabels:
    mask = noisy != y
    rate = float(mask.double().mean()) if mask.numel() else 0.0
    return NoisyLabels(labels=noisy, noise_mask=mask, transition=transition, realised_rate=rate,
                       kind=kind, params=params, clean_labels=y.clone(), flip_prob=flip_prob)


def _flip_prob_from_t(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (1.0 - t.diagonal()).to(y.device).index_select(0, y)


def _check_mapping(name: str, mapping: Any, k: int) -> dict[int, int]:
    if not isinstance(mapping, Mapping) or not mapping:
        fail(name, "a non-empty dict {source class: target class}", mapping, error=InvalidTypeError)
    out: dict[int, int] = {}
    for src, dst in mapping.items():
        for v in (src, dst):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= int(v) < k:
                fail(name, f"a dict of class indices in [0, {k - 1}]", f"entry {src!r}: {dst!r}",
                     describe_got=False)
        if int(src) == int(dst):
            fail(name, "a dict mapping each class to a different class", f"entry {src!r}: {dst!r}",
                 describe_got=False)
        out[int(src)] = int(dst)
    return out


# ----------------------------------------------------------------------------- transition matrices
def check_transition_matrix(name: str, t: Any, *, num_classes: int | None = None) -> torch.Tensor:
    """Validate a row-stochastic transition matrix and return it as float64 with exact row sums.

    ``t`` must be a square ``(K, K)`` matrix (``K >= 2``, equal to ``num_classes`` when given),
    finite, non-negative, with every row summing to 1 within ``TRANSITION_ROW_ATOL``; the checks
    are those of :func:`robustlab.label_noise.transition.check_transition`. Each failure is a
    one-line :class:`~robustlab.errors.InvalidParameterError` naming ``name``.
    """
    from robustlab.label_noise.transition import check_transition

    t = check_transition(name, t, num_classes=num_classes).to(torch.float64)
    if t.shape[0] < 2:
        fail(name, "a (K, K) matrix with K >= 2 classes", t, error=ShapeError)
    return t / t.sum(dim=1, keepdim=True)


def symmetric_transition(num_classes: int, rate: float, *, include_true: bool = False) -> torch.Tensor:
    """Transition matrix of symmetric noise, float64 ``(K, K)``.

    Exclusive (default): ``T = (1 - rate) I + rate / (K - 1) (11^T - I)``.
    Inclusive: ``T = (1 - rate) I + rate / K 11^T``.
    """
    k = check_int("num_classes", num_classes, low=2)
    rate = check_probability("rate", rate)
    include_true = check_bool("include_true", include_true)
    return _symmetric_t(k, rate, include_true)


def _symmetric_t(k: int, rate: float, include_true: bool) -> torch.Tensor:
    eye = torch.eye(k, dtype=torch.float64)
    if include_true:
        return (1 - rate) * eye + rate / k
    return (1 - rate) * eye + rate / (k - 1) * (1 - eye)


def pair_flip_transition(num_classes: int, rate: float) -> torch.Tensor:
    """Transition matrix of pair-flip noise: ``T[i, i] = 1 - rate``, ``T[i, (i+1) mod K] = rate``."""
    k = check_int("num_classes", num_classes, low=2)
    rate = check_probability("rate", rate, allow_one=False)
    return _pair_t(k, rate)


def _pair_t(k: int, rate: float) -> torch.Tensor:
    t = (1 - rate) * torch.eye(k, dtype=torch.float64)
    idx = torch.arange(k)
    t[idx, (idx + 1) % k] += rate
    return t


def class_map_transition(num_classes: int, mapping: Mapping[int, int], rate: float) -> torch.Tensor:
    """Transition matrix of a class map: row ``s`` moves ``rate`` of its mass to ``mapping[s]``."""
    k = check_int("num_classes", num_classes, low=2)
    m = _check_mapping("mapping", mapping, k)
    rate = check_probability("rate", rate)
    return _map_t(k, m, rate)


def _map_t(k: int, mapping: dict[int, int], rate: float) -> torch.Tensor:
    t = torch.eye(k, dtype=torch.float64)
    for src, dst in mapping.items():
        t[src, src] = 1 - rate
        t[src, dst] = rate
    return t


# ----------------------------------------------------------------------------- class-conditional
def symmetric_noise(labels: Any, num_classes: int, rate: float, *, generator: torch.Generator,
                    include_true: bool = False, exact: bool = False) -> NoisyLabels:
    """Symmetric (uniform) label noise, in its two conventions.

    Parameters
    ----------
    labels : Tensor or ndarray of int, shape (N,)
        Clean labels in ``[0, num_classes)``; never modified.
    num_classes : int
        ``K >= 2``.
    rate : float in [0, 1]
        *Exclusive* (``include_true=False``, default): the probability that a label is changed;
        the new label is uniform over the ``K - 1`` other classes, so the realised flip rate is
        ``rate``. *Inclusive* (``include_true=True``): the probability that a label is redrawn
        uniformly over all ``K`` classes (possibly landing on the true class), so the realised
        flip rate is ``rate (K - 1) / K``.
    generator : torch.Generator
        Required source of randomness.
    include_true : bool, default False
        Choose the inclusive convention.
    exact : bool, default False
        Touch a uniformly random subset of exactly ``round(rate * N)`` examples instead of each
        example independently with probability ``rate`` (the DivideMix / Co-teaching code
        convention). The expected transition is the same; the count no longer varies.

    Returns
    -------
    NoisyLabels
        ``kind`` is ``"symmetric"`` or ``"symmetric-inclusive"``; ``transition`` is the ``T`` of
        :func:`symmetric_transition`.

    Notes
    -----
    Exclusive: ``T = (1 - r) I + r / (K - 1) (11^T - I)`` — the convention of Patrini et al.
    (2017), Han et al. (2018, co-teaching) and Ma et al. (2020, APL). Inclusive:
    ``T = (1 - r) I + (r / K) 11^T`` — Zhang et al. (2017) "corrupted labels" and the code of
    Zhang & Sabuncu (2018, GCE) and Li et al. (2020, DivideMix), where "40% symmetric noise" means
    36% wrong labels for CIFAR-10. Papers using the two conventions are not directly comparable.
    Labels beyond ``rate > (K-1)/K`` (exclusive) carry negative information about the class.

    References
    ----------
    .. [1] Patrini et al., "Making deep neural networks robust to label noise: a loss correction
       approach", CVPR 2017, Sec. 5.
    .. [2] Zhang & Sabuncu, "Generalized cross entropy loss for training deep neural networks with
       noisy labels", NeurIPS 2018, Sec. 4.
    .. [3] Zhang et al., "Understanding deep learning requires rethinking generalization", ICLR
       2017, Sec. 2.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> out = symmetric_noise(torch.arange(10).repeat(100), 10, 0.4, generator=g)
    >>> abs(out.realised_rate - 0.4) < 0.06
    True
    """
    y, k = _check_labels_k(labels, num_classes)
    rate = check_probability("rate", rate)
    include_true = check_bool("include_true", include_true)
    exact = check_bool("exact", exact)
    g = check_generator("generator", generator)
    return _symmetric_impl(y, k, rate, g, include_true, exact=exact)


def _symmetric_impl(y: torch.Tensor, k: int, rate: float, g: torch.Generator,
                    include_true: bool, kind: str | None = None, exact: bool = False) -> NoisyLabels:
    n = y.numel()
    hit = _hits(n, rate, g, y.device, exact)
    if include_true:
        noisy = torch.where(hit, _randint(0, k, n, g, y.device), y)
    else:  # an offset in 1..K-1 is uniform over the other classes
        noisy = torch.where(hit, (y + _randint(1, k, n, g, y.device)) % k, y)
    t = _symmetric_t(k, rate, include_true)
    kind = kind or ("symmetric-inclusive" if include_true else "symmetric")
    params = {"rate": rate, "num_classes": k, "include_true": include_true, "exact": exact,
              "expected_rate": rate * (k - 1) / k if include_true else rate}
    return _result(y, noisy, t, kind, params, _flip_prob_from_t(y, t))


def pair_flip_noise(labels: Any, num_classes: int, rate: float, *,
                    generator: torch.Generator, exact: bool = False) -> NoisyLabels:
    """Pair-flip noise: each label of class ``i`` becomes ``(i + 1) mod K`` with probability ``rate``.

    Parameters
    ----------
    labels : Tensor or ndarray of int, shape (N,)
    num_classes : int
    rate : float in [0, 1)
        Probability that a label is flipped to the next class; the realised rate is ``rate``.
        At ``rate >= 0.5`` class ``i + 1`` holds more examples of class ``i`` than of itself and
        the noise is no longer identifiable (a warning is issued); ``rate = 1`` would be a
        relabelling, not noise, and is refused.
    generator : torch.Generator
    exact : bool, default False
        Flip exactly ``round(rate * N)`` examples (a uniformly random subset), as in the
        co-teaching code, instead of each independently with probability ``rate``.

    Notes
    -----
    ``T = (1 - r) I + r P`` with ``P`` the cyclic shift ``P[i, (i+1) mod K] = 1``.

    References
    ----------
    .. [1] Han et al., "Co-teaching: robust training of deep neural networks with extremely noisy
       labels", NeurIPS 2018, Sec. 4 ("pair flipping", Fig. 3).
    """
    y, k = _check_labels_k(labels, num_classes)
    rate = check_probability("rate", rate, allow_one=False)
    g = check_generator("generator", generator)
    if rate >= 0.5:
        warnings.warn(f"pair-flip rate {rate} >= 0.5: the flipped class outnumbers the true one and "
                      "the noise is not identifiable.", stacklevel=2)
    return _pair_impl(y, k, rate, g, check_bool("exact", exact))


def _pair_impl(y: torch.Tensor, k: int, rate: float, g: torch.Generator, exact: bool) -> NoisyLabels:
    hit = _hits(y.numel(), rate, g, y.device, exact)
    noisy = torch.where(hit, (y + 1) % k, y)
    t = _pair_t(k, rate)
    return _result(y, noisy, t, "pair", {"rate": rate, "num_classes": k, "exact": exact,
                                         "expected_rate": rate},
                   _flip_prob_from_t(y, t))


def class_map_noise(labels: Any, num_classes: int, mapping: Mapping[int, int], rate: float, *,
                    generator: torch.Generator) -> NoisyLabels:
    """Flip labels along a fixed class map: class ``s`` becomes ``mapping[s]`` with probability ``rate``.

    Parameters
    ----------
    labels : Tensor or ndarray of int, shape (N,)
    num_classes : int
    mapping : dict {int: int}
        Source class -> target class (distinct). Classes not in the keys are never touched. The
        map is applied to the *clean* labels, so swaps such as ``{3: 5, 5: 3}`` work.
    rate : float in [0, 1]
        Probability that an example of a mapped class is flipped. The overall realised rate is
        ``rate`` times the fraction of examples in mapped classes.
    generator : torch.Generator

    Notes
    -----
    ``T[s, s] = 1 - r``, ``T[s, mapping[s]] = r`` for mapped ``s``; identity rows elsewhere.
    """
    y, k = _check_labels_k(labels, num_classes)
    m = _check_mapping("mapping", mapping, k)
    rate = check_probability("rate", rate)
    g = check_generator("generator", generator)
    return _class_map_impl(y, k, m, rate, g, "class-map")


def _class_map_impl(y: torch.Tensor, k: int, mapping: dict[int, int], rate: float,
                    g: torch.Generator, kind: str) -> NoisyLabels:
    lut = torch.arange(k, device=y.device)
    for src, dst in mapping.items():
        lut[src] = dst
    hit = _rand(y.numel(), g, y.device) < rate
    noisy = torch.where(hit, lut[y], y)
    t = _map_t(k, mapping, rate)
    flip_prob = _flip_prob_from_t(y, t)
    params = {"rate": rate, "num_classes": k, "mapping": dict(mapping),
              "expected_rate": float(flip_prob.mean()) if flip_prob.numel() else 0.0}
    return _result(y, noisy, t, kind, params, flip_prob)


def cifar10_asymmetric_noise(labels: Any, rate: float, *, generator: torch.Generator) -> NoisyLabels:
    """CIFAR-10 asymmetric noise of Patrini et al. (2017): truck -> automobile, bird -> airplane,
    deer -> horse, cat <-> dog, each with probability ``rate``.

    ``labels`` use the CIFAR-10 class order (0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer,
    5 dog, 6 frog, 7 horse, 8 ship, 9 truck). ``rate`` in [0, 1] is the flip probability of the
    five source classes; on balanced CIFAR-10 the overall realised rate is about ``rate / 2``.

    References
    ----------
    .. [1] Patrini et al., "Making deep neural networks robust to label noise: a loss correction
       approach", CVPR 2017, Sec. 5 ("asymmetric noise" for CIFAR-10).
    """
    y, k = _check_labels_k(labels, 10)
    rate = check_probability("rate", rate)
    g = check_generator("generator", generator)
    return _class_map_impl(y, k, dict(CIFAR10_ASYMMETRIC_MAP), rate, g, "cifar10-asym")


def transition_noise(labels: Any, transition: Any, *, generator: torch.Generator) -> NoisyLabels:
    """Class-conditional noise from any row-stochastic transition matrix.

    Parameters
    ----------
    labels : Tensor or ndarray of int, shape (N,)
        Clean labels in ``[0, K)``.
    transition : Tensor or ndarray of float, shape (K, K)
        ``T[i, j] = P(noisy = j | true = i)``; validated by :func:`check_transition_matrix`
        (square, ``K >= 2``, finite, non-negative, rows summing to 1 within 1e-4; rows are then
        renormalised exactly).
    generator : torch.Generator

    Returns
    -------
    NoisyLabels
        ``kind="transition"``; there is no ``rate``: the expected flip rate is
        ``mean_n (1 - T[y_n, y_n])`` (``params["expected_rate"]``).

    Notes
    -----
    Each noisy label is an independent draw from the categorical distribution ``T[y_n, :]``, by
    inverse CDF: ``noisy_n = min{j : u_n < sum_{l <= j} T[y_n, l]}`` with ``u_n ~ U[0, 1)``.
    """
    t = check_transition_matrix("transition", transition)
    y = check_labels("labels", labels, num_classes=t.shape[0])
    g = check_generator("generator", generator)
    return _transition_impl(y, t, g, "transition", {})


def _sample_rows(t: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Draw ``noisy_n ~ Categorical(T[y_n, :])`` for every ``n`` by inverse CDF.

    One uniform per example (drawn in example order, so the result does not depend on how the
    work is grouped); examples are grouped by class with one stable sort, and each group is
    looked up in its class's CDF. The CDF is pinned above 1 from a row's last non-zero entry on,
    so rounding can never select a class of probability 0. ``O(N log N + K^2)`` time, ``O(N + K^2)``
    memory (a dense ``(N, K)`` CDF would not fit for ImageNet-size data).
    """
    k = t.shape[0]
    t = t.detach().to("cpu", torch.float64)
    cdf = t.cumsum(dim=1)
    last = k - 1 - (t.flip(1) > 0).to(torch.int64).argmax(dim=1)  # last non-zero column per row
    cdf = torch.where(torch.arange(k).unsqueeze(0) >= last.unsqueeze(1), torch.full_like(cdf, 2.0), cdf)
    y_cpu = y.cpu()
    u = torch.rand(y_cpu.numel(), generator=g, device=g.device, dtype=torch.float64).cpu()
    order = torch.argsort(y_cpu, stable=True)
    counts = torch.bincount(y_cpu, minlength=k).tolist()
    noisy = torch.empty_like(y_cpu)
    start = 0
    for c, n_c in enumerate(counts):
        if n_c:
            seg = order[start:start + n_c]
            noisy[seg] = torch.searchsorted(cdf[c], u[seg], right=True)
            start += n_c
    return noisy.to(y.device)


def _transition_impl(y: torch.Tensor, t: torch.Tensor, g: torch.Generator, kind: str,
                     params: dict[str, Any]) -> NoisyLabels:
    t_cpu = t.detach().to("cpu", torch.float64)
    noisy = _sample_rows(t_cpu, y, g)
    flip_prob = _flip_prob_from_t(y, t_cpu)
    params = {"num_classes": t_cpu.shape[0], **params,
              "expected_rate": float(flip_prob.mean()) if flip_prob.numel() else 0.0}
    return _result(y, noisy, t_cpu, kind, params, flip_prob)


# ----------------------------------------------------------------------------- instance-dependent
def instance_dependent_noise(inputs: Any, labels: Any, num_classes: int, rate: float, *,
                             generator: torch.Generator, flip_std: float = IDN_FLIP_STD,
                             standardize: bool = True) -> NoisyLabels:
    """Instance-dependent label noise (IDN) of Xia et al. (2020), the generator of their Algorithm 2.

    Parameters
    ----------
    inputs : Tensor, shape (N, ...)
        Float inputs (images or tabular); each example is flattened to ``S`` features.
    labels : Tensor or ndarray of int, shape (N,)
    num_classes : int
    rate : float in [0, 1)
        The noise rate ``tau``: per-instance flip rates ``q_n`` are drawn from the normal
        ``N(tau, flip_std^2)`` truncated to [0, 1]. The expected realised rate is the mean of that
        truncated normal (``params["expected_rate"]``), equal to ``tau`` within 1e-3 for
        ``tau`` in [0.3, 0.7] and above ``tau`` near 0 (0.129 for ``tau = 0.1``). ``rate = 0``
        returns the clean labels (all ``q_n = 0``).
    generator : torch.Generator
    flip_std : float > 0, default 0.1
        Standard deviation of the flip-rate distribution (``norm_std`` in the reference code).
    standardize : bool, default True
        Z-score every feature over the data set before projecting (the reference code projects
        mean/std-normalised images; raw [0, 1] pixels are all positive, which makes the
        projections of all images of a class nearly collinear).

    Returns
    -------
    NoisyLabels
        ``kind="instance"``, ``transition=None``, ``flip_prob`` the per-instance ``q_n`` — the exact
        probability that example ``n`` changed label.

    Notes
    -----
    Algorithm 2 of Xia et al. (2020), supplementary material:

    1. ``q_n ~ TN(tau, flip_std^2; [0, 1])`` for each example ``n``;
    2. ``W_k ~ N(0, 1)^{S x K}`` independently for each class ``k``;
    3. ``p_n = x_n W_{y_n}`` (``1 x K``); ``p_n[y_n] = -inf``; ``p_n = q_n softmax(p_n)``;
       ``p_n[y_n] = 1 - q_n``;
    4. ``noisy_n ~ Categorical(p_n)``.

    So ``P(noisy_n != y_n) = q_n`` exactly, and which wrong class is chosen depends on the input
    through the random projection ``W_{y_n}``. Truncated-normal draws use the inverse CDF with the
    given generator; the mean of ``TN`` is ``tau + s (phi(a) - phi(b)) / (Phi(b) - Phi(a))`` with
    ``a = -tau / s``, ``b = (1 - tau) / s``.

    References
    ----------
    .. [1] Xia et al., "Part-dependent label noise: towards instance-dependent label noise",
       NeurIPS 2020, Sec. 4 and supplementary Algorithm 2; code github.com/xiaoboxia/
       Part-dependent-label-noise, ``tools.get_instance_noisy_label``.
    """
    y, k = _check_labels_k(labels, num_classes)
    x = check_inputs("inputs", inputs)
    if x.shape[0] != y.shape[0]:
        raise ShapeError(f"The 'inputs' parameter must have one row per label ({y.shape[0]}). Got "
                         f"{x.shape[0]} instead.", expected=y.shape[0], got=x.shape[0])
    rate = check_probability("rate", rate, allow_one=False)
    flip_std = check_number("flip_std", flip_std, low=0.0, low_inclusive=False)
    standardize = check_bool("standardize", standardize)
    g = check_generator("generator", generator)
    return _idn_impl(x, y, k, rate, flip_std, standardize, g)


def _truncnorm_mean(mu: float, s: float) -> float:
    a, b = (0.0 - mu) / s, (1.0 - mu) / s
    phi = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    big_phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return mu + s * (phi(a) - phi(b)) / (big_phi(b) - big_phi(a))


def _feature_moments(feats: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and (population) std, accumulated in float64 over row chunks (bounded
    memory, and much faster than a column-wise ``std`` of a wide matrix; within a chunk the sums
    run through a matrix product in the input's precision)."""
    s1 = torch.zeros(feats.shape[1], dtype=torch.float64, device=feats.device)
    s2 = torch.zeros_like(s1)
    for start in range(0, feats.shape[0], chunk):
        block = feats[start:start + chunk]
        ones = torch.ones(1, block.shape[0], dtype=block.dtype, device=block.device)
        s1 += (ones @ block).squeeze(0).double()  # column sums through BLAS
        s2 += (ones @ (block * block)).squeeze(0).double()
    n = max(feats.shape[0], 1)
    mean = s1 / n
    return mean, (s2 / n - mean * mean).clamp_min(0).sqrt()


def _idn_impl(x: torch.Tensor, y: torch.Tensor, k: int, rate: float, s: float, standardize: bool,
              g: torch.Generator) -> NoisyLabels:
    n = y.numel()
    params = {"rate": rate, "num_classes": k, "flip_std": s, "standardize": standardize}
    if rate == 0.0 or n == 0:
        q = torch.zeros(n, dtype=torch.float64, device=y.device)
        return _result(y, y.clone(), None, "instance", params | {"expected_rate": 0.0}, q)
    # 1. per-instance flip rates, truncated normal by inverse CDF
    lo = torch.special.ndtr(torch.tensor((0.0 - rate) / s, dtype=torch.float64))
    hi = torch.special.ndtr(torch.tensor((1.0 - rate) / s, dtype=torch.float64))
    u = torch.rand(n, generator=g, device=g.device, dtype=torch.float64).cpu()
    q = (rate + s * torch.special.ndtri(lo + u * (hi - lo))).clamp(0.0, 1.0)
    # 2. one S x K projection per class
    feats = x.detach().reshape(n, -1)
    if not feats.is_floating_point() or feats.dtype in (torch.float16, torch.bfloat16):
        feats = feats.float()
    w = torch.randn(k, feats.shape[1], k, generator=g, device=g.device,
                    dtype=torch.float32).to(feats.device, feats.dtype)
    bias = torch.zeros(k, k, dtype=feats.dtype, device=feats.device)
    if standardize:
        # ((x - mu) / sigma) W_c = x (W_c / sigma) - (mu / sigma) W_c: the z-scored copy of the
        # inputs is never materialised.
        mean, std = _feature_moments(feats)
        inv = torch.where(std > 0, 1.0 / std, torch.ones_like(std)).to(feats.dtype)
        w = w * inv.view(1, -1, 1)
        bias = -torch.einsum("s,csk->ck", mean.to(feats.dtype), w)
    # 3. per-instance noisy-label distributions
    logits = torch.empty(n, k, dtype=feats.dtype, device=feats.device)
    for c in range(k):
        idx = (y == c).nonzero().flatten().to(feats.device)
        if idx.numel():
            logits[idx] = feats.index_select(0, idx) @ w[c] + bias[c]
    y_dev = y.to(logits.device)
    logits[torch.arange(n, device=logits.device), y_dev] = -math.inf
    probs = torch.softmax(logits.double(), dim=1) * q.to(logits.device).unsqueeze(1)
    probs[torch.arange(n, device=probs.device), y_dev] = 1.0 - q.to(probs.device)
    # 4. sample
    noisy = torch.multinomial(probs.to(g.device), 1, generator=g).squeeze(1).to(y.device)
    params["expected_rate"] = _truncnorm_mean(rate, s)
    return _result(y, noisy, None, "instance", params, q.to(y.device))


# ----------------------------------------------------------------------------- confusion-biased
def confusion_from_predictions(labels: Any, predictions: Any, num_classes: int, *,
                               soft: bool = False) -> torch.Tensor:
    """Confusion matrix ``C[i, j]`` = number of examples of true class ``i`` predicted as ``j``.

    Parameters
    ----------
    labels : Tensor or ndarray of int, shape (N,)
    predictions : Tensor, shape (N,) of class indices, or (N, K) of logits / probabilities
        Scores are reduced by ``argmax`` unless ``soft=True``.
    num_classes : int
    soft : bool, default False
        With ``(N, K)`` probabilities, add each row of probabilities instead of a one-hot vote
        (an expected confusion matrix).

    Returns
    -------
    Tensor of float64, shape (K, K), on CPU.
    """
    y, k = _check_labels_k(labels, num_classes)
    soft = check_bool("soft", soft)
    p = check_tensor("predictions", predictions, ndim=(1, 2), dims="N or N, K")
    if p.shape[0] != y.shape[0]:
        raise ShapeError(f"The 'predictions' parameter must have one entry per label ({y.shape[0]}). "
                         f"Got {p.shape[0]} instead.", expected=y.shape[0], got=p.shape[0])
    y = y.cpu()
    if p.ndim == 2:
        if p.shape[1] != k:
            fail("predictions", f"an (N, {k}) matrix of scores", p, error=ShapeError)
        if not p.is_floating_point():
            fail("predictions", "float scores", p, error=InvalidTypeError)
        check_finite("predictions", p)
        if soft:
            if float(p.min()) < 0:
                fail("predictions", "probabilities (non-negative) when soft=True",
                     f"minimum {float(p.min()):.4g}", describe_got=False)
            conf = torch.zeros(k, k, dtype=torch.float64)
            return conf.index_add_(0, y, p.detach().cpu().double())
        p = p.argmax(dim=1)
    elif soft:
        fail("predictions", "an (N, K) matrix of probabilities when soft=True", p, error=ShapeError)
    pred = check_labels("predictions", p, num_classes=k).cpu()
    return torch.bincount(y * k + pred, minlength=k * k).reshape(k, k).double()


def confusion_from_model(model: Any, data: Any, *, batch_size: int | None = None) -> torch.Tensor:
    """Confusion matrix of ``model`` on a :class:`~robustlab.data.Dataset` (argmax predictions).

    The model's train/eval mode is restored (see :func:`robustlab.models.predict_logits`).
    Returns float64 ``(K, K)`` counts, rows = true class.
    """
    from robustlab.data import Dataset
    from robustlab.models import predict_logits

    if not isinstance(data, Dataset):
        fail("data", "a robustlab.data.Dataset", data, error=InvalidTypeError)
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    logits = predict_logits(model, data, num_classes=data.num_classes, **kwargs)
    return confusion_from_predictions(data.labels, logits, data.num_classes)


def confusion_noise(labels: Any, num_classes: int, rate: float, *, confusion: Any,
                    generator: torch.Generator) -> NoisyLabels:
    """Noise biased towards confusing classes: flip with probability ``rate`` to a class drawn in
    proportion to the off-diagonal confusion of a trained model.

    Parameters
    ----------
    labels : Tensor or ndarray of int, shape (N,)
    num_classes : int
    rate : float in [0, 1]
        Probability that a label is changed (exclusive: the new label is never the true one), so
        the realised rate is ``rate``.
    confusion : Tensor or ndarray, shape (K, K)
        Non-negative confusion counts or rates, ``C[i, j]`` = how often true class ``i`` is
        predicted as ``j`` (e.g. :func:`confusion_from_predictions` or
        :func:`confusion_from_model` on held-out data). The diagonal is ignored. A row without
        off-diagonal mass falls back to uniform over the other classes (listed in
        ``params["uniform_rows"]``).
    generator : torch.Generator

    Notes
    -----
    ``Q[i, j] = C[i, j] / sum_{l != i} C[i, l]`` for ``j != i``, ``Q[i, i] = 0``, and
    ``T = (1 - rate) I + rate Q``. Human labelling errors concentrate on visually similar classes
    (Wei et al. 2022, CIFAR-N; Northcutt et al. 2021), which a model's confusion captures.

    References
    ----------
    .. [1] Wei et al., "Learning with noisy labels revisited: a study using real-world human
       annotations", ICLR 2022, Sec. 3 (noise concentrates on similar classes).
    .. [2] Northcutt, Athalye & Mueller, "Pervasive label errors in test sets destabilize machine
       learning benchmarks", NeurIPS 2021 Datasets and Benchmarks.
    """
    y, k = _check_labels_k(labels, num_classes)
    rate = check_probability("rate", rate)
    c = check_tensor("confusion", confusion, ndim=2, dims="K, K")
    if tuple(c.shape) != (k, k):
        raise ShapeError(f"The 'confusion' parameter must have shape ({k}, {k}). Got "
                         f"{tuple(c.shape)} instead.", expected=(k, k), got=tuple(c.shape))
    c = check_finite("confusion", c.double() if not c.is_floating_point() else c).double().cpu()
    if float(c.min()) < 0:
        fail("confusion", "non-negative counts or rates", f"minimum {float(c.min()):.4g}",
             describe_got=False)
    g = check_generator("generator", generator)
    off = c * (1 - torch.eye(k, dtype=torch.float64))
    mass = off.sum(1, keepdim=True)
    empty = (mass.squeeze(1) <= 0).nonzero().flatten().tolist()
    uniform = (1 - torch.eye(k, dtype=torch.float64)) / (k - 1)
    q = torch.where(mass > 0, off / mass.clamp_min(1e-300), uniform)
    t = (1 - rate) * torch.eye(k, dtype=torch.float64) + rate * q
    return _transition_impl(y, t, g, "confusion", {"rate": rate, "uniform_rows": empty})


# ----------------------------------------------------------------------------- dilution, controls
@dataclass(frozen=True, eq=False)
class Diluted:
    """Result of :func:`dilute`.

    Attributes
    ----------
    data : Dataset or Tensor
        The clean examples followed by the appended copies (a Dataset when a Dataset was given —
        sharing its storage — else the inputs tensor of shape ``(N (1 + m), ...)``).
    noisy : NoisyLabels
        Labels of ``data``: the first ``N`` are the clean labels, the rest random;
        ``noisy.clean_labels`` holds each example's source label.
    source_indices : Tensor of int64, shape (N (1 + m),)
        Index of the clean example each row copies (``arange(N)`` for the first ``N``).
    """

    data: Any
    noisy: NoisyLabels
    source_indices: torch.Tensor


def dilute(data: Any, labels: Any = None, num_classes: int | None = None, m: int = 1, *,
           generator: torch.Generator, include_true: bool = True) -> Diluted:
    """Dilute a clean training set with ``m`` randomly-labelled copies of every example.

    Parameters
    ----------
    data : Dataset or Tensor of shape (N, ...)
        The clean examples. With a Dataset, ``labels`` and ``num_classes`` default to its own.
    labels : Tensor or ndarray of int, shape (N,), optional
        Clean labels (required when ``data`` is a tensor).
    num_classes : int, optional
        Required when ``data`` is a tensor.
    m : int >= 0
        Noisy copies per clean example (Rolnick et al.'s ``alpha``); the result has ``N (1 + m)``
        examples, ``N`` of them clean.
    generator : torch.Generator
    include_true : bool, default True
        Draw the copies' labels uniformly over all ``K`` classes (Rolnick et al.'s "uniform
        label noise", so a copy keeps its true label with probability ``1/K``); ``False`` draws
        among the ``K - 1`` other classes.

    Returns
    -------
    Diluted

    Notes
    -----
    The fraction of correctly labelled examples is ``(1 + m/K) / (1 + m)`` (inclusive). Rolnick
    et al. report that deep networks still learn from e.g. ``alpha = 100`` noisy examples per
    clean one on MNIST, given a large enough batch.

    References
    ----------
    .. [1] Rolnick, Veit, Belongie & Shavit, "Deep learning is robust to massive label noise",
       arXiv:1705.10694, 2017, Sec. 3 ("uniform label noise").
    """
    from robustlab.data import Dataset

    m = check_int("m", m, low=0)
    include_true = check_bool("include_true", include_true)
    g = check_generator("generator", generator)
    if isinstance(data, Dataset):
        y = data.labels if labels is None else labels
        k = data.num_classes if num_classes is None else num_classes
        y, k = _check_labels_k(y, k)
        if y.shape[0] != len(data):
            fail("labels", f"{len(data)} labels (one per example of 'data')", y, error=ShapeError)
    else:
        x = check_inputs("data", data)
        if labels is None or num_classes is None:
            fail("labels", "given (with 'num_classes') when 'data' is a tensor", labels)
        y, k = _check_labels_k(labels, num_classes)
        if y.shape[0] != x.shape[0]:
            fail("labels", f"{x.shape[0]} labels (one per row of 'data')", y, error=ShapeError)
    n = y.shape[0]
    src = torch.cat([torch.arange(n), torch.arange(n).repeat(m)])
    y_src = y.index_select(0, src.to(y.device))
    copies = y_src[n:]
    if include_true:
        new = _randint(0, k, copies.numel(), g, y.device)
    else:
        new = (copies + _randint(1, k, copies.numel(), g, y.device)) % k
    noisy_y = torch.cat([y.clone(), new])
    p_flip = (k - 1) / k if include_true else 1.0
    flip_prob = torch.cat([torch.zeros(n, dtype=torch.float64),
                           torch.full((copies.numel(),), p_flip, dtype=torch.float64)]).to(y.device)
    params = {"m": m, "num_classes": k, "include_true": include_true, "num_clean": n,
              "expected_rate": (m * p_flip) / (1 + m) if n else 0.0}
    noisy = _result(y_src, noisy_y, None, "dilution", params, flip_prob)
    if isinstance(data, Dataset):
        out = data.subset(src, name=f"{data.name}-diluted{m}").with_labels(noisy_y.cpu())
    else:
        out = data.index_select(0, src.to(data.device))
    return Diluted(data=out, noisy=noisy, source_indices=src)


def random_labels(labels: Any, num_classes: int, *, generator: torch.Generator,
                  corrupt_prob: float = 1.0) -> NoisyLabels:
    """Zhang et al.'s random-labels control: each label is replaced, with probability
    ``corrupt_prob``, by a class drawn uniformly from all ``K`` (the inclusive convention).

    ``corrupt_prob = 1`` ("random labels") makes labels independent of inputs; the realised flip
    rate is ``corrupt_prob (K - 1) / K``. ``kind`` is ``"random-labels"``.

    References
    ----------
    .. [1] Zhang, Bengio, Hardt, Recht & Vinyals, "Understanding deep learning requires rethinking
       generalization", ICLR 2017, Sec. 2 ("random labels", "partially corrupted labels").
    """
    y, k = _check_labels_k(labels, num_classes)
    p = check_probability("corrupt_prob", corrupt_prob)
    g = check_generator("generator", generator)
    return _symmetric_impl(y, k, p, g, True, kind="random-labels")


#: Input controls of :func:`random_inputs`.
RANDOM_INPUT_KINDS = ("gaussian", "shuffled-pixels", "random-pixels")


def random_inputs(inputs: Any, *, generator: torch.Generator, kind: str = "gaussian") -> torch.Tensor:
    """Zhang et al.'s input controls: destroy the input structure while keeping the labels.

    Parameters
    ----------
    inputs : Tensor, shape (N, C, H, W) or (N, D)
        Never modified.
    generator : torch.Generator
    kind : {"gaussian", "shuffled-pixels", "random-pixels"}
        ``"shuffled-pixels"``: one random permutation of the pixel positions (all channels of a
        pixel move together), the same for every image; for tabular data, of the features.
        ``"random-pixels"``: an independent permutation for each example.
        ``"gaussian"``: i.i.d. normal values with the mean and standard deviation of the data, per
        channel for images (per feature for tabular data); images are clipped to [0, 1] to keep
        the image contract, which shrinks the variance slightly.

    Returns
    -------
    Tensor of the same shape, dtype and device.

    References
    ----------
    .. [1] Zhang et al., "Understanding deep learning requires rethinking generalization",
       ICLR 2017, Sec. 2 ("shuffled pixels", "random pixels", "Gaussian").
    """
    x = check_inputs("inputs", inputs)
    if x.ndim not in (2, 4):
        fail("inputs", "images (N, C, H, W) or tabular data (N, D)", x, error=ShapeError)
    check_choice("kind", kind, RANDOM_INPUT_KINDS)
    g = check_generator("generator", generator)
    n = x.shape[0]
    flat = x.reshape(n, x.shape[1], -1) if x.ndim == 4 else x.unsqueeze(1)  # (N, C, P)
    p = flat.shape[2]
    if kind == "gaussian":
        mean = flat.mean(dim=(0, 2), keepdim=True) if x.ndim == 4 else flat.mean(0, keepdim=True)
        std = flat.std(dim=(0, 2), keepdim=True, unbiased=False) if x.ndim == 4 \
            else flat.std(0, keepdim=True, unbiased=False)
        z = torch.randn(flat.shape, generator=g, device=g.device, dtype=x.dtype).to(x.device)
        out = mean + std * z
        if x.ndim == 4:
            out = out.clamp(0.0, 1.0)
    elif kind == "shuffled-pixels":
        perm = torch.randperm(p, generator=g, device=g.device).to(x.device)
        out = flat.index_select(2, perm)
    else:
        perms = torch.rand(n, p, generator=g, device=g.device).argsort(dim=1).to(x.device)
        out = flat.gather(2, perms.unsqueeze(1).expand(-1, flat.shape[1], -1))
    return out.reshape(x.shape).contiguous()


# ----------------------------------------------------------------------------- CLI spec
#: Kinds accepted by :func:`parse_noise_spec` (``KIND:RATE``; ``transition:PATH.npy``).
NOISE_SPEC_KINDS = ("symmetric", "symmetric-inclusive", "pair", "cifar10-asym", "instance",
                    "transition")


@dataclass(frozen=True)
class NoiseSpec:
    """A parsed ``--label-noise`` value: ``kind`` and ``rate``, or ``path`` for ``transition``."""

    kind: str
    rate: float | None = None
    path: Path | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.path if self.kind == 'transition' else self.rate}"


_SPEC_RATE_RANGE = {  # kind -> (allow_one)
    "symmetric": True, "symmetric-inclusive": True, "pair": False, "cifar10-asym": True,
    "instance": False,
}


def parse_noise_spec(text: str, *, name: str = "label_noise") -> NoiseSpec:
    """Parse ``"KIND:RATE"`` (e.g. ``"symmetric:0.4"``) or ``"transition:PATH.npy"``.

    Kinds: ``symmetric`` (exclusive, rate in [0, 1]), ``symmetric-inclusive`` ([0, 1]), ``pair``
    ([0, 1)), ``cifar10-asym`` ([0, 1], 10 classes), ``instance`` ([0, 1)), ``transition`` (a
    ``.npy`` file holding a ``(K, K)`` row-stochastic matrix). Errors name ``name`` and list the
    valid kinds.
    """
    kinds = ", ".join(NOISE_SPEC_KINDS)
    if not isinstance(text, str) or ":" not in text:
        fail(name, f"KIND:RATE with KIND one of {{{kinds}}} (e.g. symmetric:0.4), or "
             "transition:PATH.npy", text)
    kind, _, value = text.partition(":")
    kind, value = kind.strip(), value.strip()
    if kind not in NOISE_SPEC_KINDS:
        fail(name, f"KIND:RATE with KIND one of {{{kinds}}}", text)
    if kind == "transition":
        if not value:
            fail(name, "transition:PATH with PATH a .npy file holding a (K, K) matrix", text)
        return NoiseSpec(kind=kind, path=Path(value))
    try:
        rate = float(value)
    except ValueError:
        fail(name, f"{kind}:RATE with RATE a number", text)
    allow_one = _SPEC_RATE_RANGE[kind]
    if not math.isfinite(rate) or rate < 0 or rate > 1 or (rate == 1 and not allow_one):
        fail(name, f"{kind}:RATE with RATE in [0, 1{']' if allow_one else ')'}", text)
    return NoiseSpec(kind=kind, rate=rate)


def _load_transition_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataNotFoundError(f"The transition matrix file '{path}' does not exist "
                                f"(looked at {path.resolve()}).")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataFormatError(f"The transition matrix file '{path}' is not a readable .npy array "
                              f"without pickled objects ({exc}).") from None


def apply_noise_spec(spec: NoiseSpec | str, dataset: Any, *,
                     generator: torch.Generator) -> tuple[Any, NoisyLabels]:
    """Apply a :class:`NoiseSpec` (or its text) to a Dataset; return the noisy Dataset and the labels.

    The returned Dataset shares the inputs of ``dataset`` and carries the noisy labels; the input
    Dataset is unchanged.
    """
    from robustlab.data import Dataset

    if isinstance(spec, str):
        spec = parse_noise_spec(spec)
    if not isinstance(spec, NoiseSpec):
        fail("spec", "a NoiseSpec or a 'KIND:RATE' string", spec, error=InvalidTypeError)
    if not isinstance(dataset, Dataset):
        fail("dataset", "a robustlab.data.Dataset", dataset, error=InvalidTypeError)
    g = check_generator("generator", generator)
    y, k = dataset.labels, dataset.num_classes
    if spec.kind == "symmetric":
        noisy = symmetric_noise(y, k, spec.rate, generator=g)
    elif spec.kind == "symmetric-inclusive":
        noisy = symmetric_noise(y, k, spec.rate, generator=g, include_true=True)
    elif spec.kind == "pair":
        noisy = pair_flip_noise(y, k, spec.rate, generator=g)
    elif spec.kind == "cifar10-asym":
        if k != 10:
            raise InvalidParameterError(f"The 'label_noise' parameter 'cifar10-asym' needs data with 10 "
                                        f"classes in CIFAR-10 order. Got {k} classes instead.")
        noisy = cifar10_asymmetric_noise(y, spec.rate, generator=g)
    elif spec.kind == "instance":
        inputs, _ = dataset.tensors()
        noisy = instance_dependent_noise(inputs, y, k, spec.rate, generator=g)
    else:
        t = _load_transition_file(spec.path)
        t = check_transition_matrix("label_noise", t, num_classes=k)
        noisy = transition_noise(y, t, generator=g)
    return dataset.with_labels(noisy.labels.cpu(), name=f"{dataset.name}-{spec.kind}"), noisy
