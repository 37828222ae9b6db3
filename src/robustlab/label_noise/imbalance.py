"""Long-tailed class imbalance: choose which examples to keep so class sizes follow a profile.

Combine with any noise generator by subsetting first and adding noise second::

    keep = long_tail_indices(ds.labels, ds.num_classes, 10, generator=g)
    lt = ds.subset(keep)
    noisy_ds, noisy = apply_noise_spec("symmetric:0.4", lt, generator=g)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robustlab._checks import (
    check_choice,
    check_generator,
    check_int,
    check_labels,
    check_number,
    fail,
)
from robustlab.errors import InvalidParameterError

__all__ = ["IMBALANCE_PROFILES", "long_tail_counts", "long_tail_indices"]

#: Profiles of :func:`long_tail_indices`.
IMBALANCE_PROFILES = ("exp", "step")


def long_tail_counts(num_classes: int, imbalance_ratio: float, n_max: int, *,
                     profile: str = "exp") -> torch.Tensor:
    """Target examples per class, int64 ``(K,)``, class 0 the largest.

    ``"exp"``: ``n_k = floor(n_max * ratio^(-k / (K - 1)))`` (Cao et al. 2019, Cui et al. 2019).
    ``"step"``: the first ``floor(K/2)`` classes keep ``n_max``, the rest ``floor(n_max / ratio)``
    (Buda et al. 2018, as used by Cao et al. 2019). Every class keeps at least one example.

    Examples
    --------
    >>> long_tail_counts(10, 100, 5000).tolist()  # CIFAR-10-LT, imbalance ratio 100
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    k = check_int("num_classes", num_classes, low=2)
    ratio = check_number("imbalance_ratio", imbalance_ratio, low=1.0)
    n_max = check_int("n_max", n_max, low=1)
    check_choice("profile", profile, IMBALANCE_PROFILES)
    return _counts(k, ratio, n_max, profile)


def _counts(k: int, ratio: float, n_max: int, profile: str) -> torch.Tensor:
    if profile == "exp":
        # a tiny epsilon so that exact products (e.g. 100 * 0.1) are not floored one below
        vals = [math.floor(n_max * ratio ** (-c / (k - 1)) + 1e-9) for c in range(k)]
    else:
        vals = [n_max if c < k // 2 else math.floor(n_max / ratio + 1e-9) for c in range(k)]
    return torch.tensor([max(1, v) for v in vals], dtype=torch.int64)


def long_tail_indices(labels: Any, num_classes: int, imbalance_ratio: float, *,
                      generator: torch.Generator, profile: str = "exp", n_max: int | None = None,
                      class_order: Any = None) -> torch.Tensor:
    """Indices of a long-tailed subset of a (roughly balanced) labelled set.

    Parameters
    ----------
    labels : Tensor or ndarray of int, shape (N,)
    num_classes : int
    imbalance_ratio : float >= 1
        ``n_max / n_min``, the size of the largest class over the smallest (1 = balanced).
    generator : torch.Generator
        Chooses which examples of each class are kept.
    profile : {"exp", "step"}, default "exp"
        See :func:`long_tail_counts`.
    n_max : int, optional
        Size of the head class. Defaults to the smallest class count of ``labels``, so every
        class can supply its target; a larger value that some class cannot supply is an error.
    class_order : sequence of int, optional
        A permutation of the classes from head to tail; default ``0, 1, ..., K-1``.

    Returns
    -------
    Tensor of int64, shape (sum_k n_k,)
        Sorted indices into ``labels`` (use with ``Dataset.subset``).

    Notes
    -----
    Exponential profile: ``n_k = n_max mu^k`` with ``mu = ratio^(-1/(K-1))``, so ``n_0 = n_max``
    and ``n_{K-1} = n_max / ratio``; this is how CIFAR-10/100-LT are built.

    References
    ----------
    .. [1] Cao et al., "Learning imbalanced datasets with label-distribution-aware margin loss",
       NeurIPS 2019, Sec. 4 (long-tailed and step imbalance).
    .. [2] Cui et al., "Class-balanced loss based on effective number of samples", CVPR 2019, Sec. 5.
    .. [3] Buda, Maki & Mazurowski, "A systematic study of the class imbalance problem in
       convolutional neural networks", Neural Networks 2018 (step imbalance).
    """
    k = check_int("num_classes", num_classes, low=2)
    y = check_labels("labels", labels, num_classes=k).cpu()
    ratio = check_number("imbalance_ratio", imbalance_ratio, low=1.0)
    check_choice("profile", profile, IMBALANCE_PROFILES)
    g = check_generator("generator", generator)
    available = torch.bincount(y, minlength=k)
    if class_order is None:
        order = list(range(k))
    else:
        order = [int(c) for c in torch.as_tensor(class_order).reshape(-1).tolist()]
        if sorted(order) != list(range(k)):
            fail("class_order", f"a permutation of 0..{k - 1}", class_order)
    if n_max is None:
        n_max = int(available.min())
        if n_max < 1:
            empty = int((available == 0).nonzero()[0])
            raise InvalidParameterError(f"The 'labels' parameter must hold every class to build a "
                                        f"long tail. Got no example of class {empty} instead.")
    else:
        n_max = check_int("n_max", n_max, low=1)
    targets = _counts(k, ratio, n_max, profile)
    keep = []
    for rank, c in enumerate(order):
        want = int(targets[rank])
        if want > int(available[c]):
            raise InvalidParameterError(f"The 'n_max' parameter must let class {c} supply its {want} "
                                        f"examples. Got only {int(available[c])} examples of class {c}.")
        idx = (y == c).nonzero().flatten()
        perm = torch.randperm(idx.numel(), generator=g, device=g.device).cpu()
        keep.append(idx[perm[:want]])
    return torch.cat(keep).sort().values
