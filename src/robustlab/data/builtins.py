"""Built-in datasets that need no download, registered by name.

* ``digits`` — scikit-learn's 8x8 handwritten digits as images ``(1797, 1, 8, 8)`` in [0, 1].
* ``wine``, ``breast-cancer`` — scikit-learn's tabular sets, ``(N, D)`` float32, min-max scaled to
  [0, 1] per feature by default (see :func:`tabular_scaling`).
* ``synthetic`` — a Gaussian mixture whose Bayes-optimal classifier and accuracy are known exactly
  (see :func:`make_synthetic`).

:func:`load_builtin` loads any of them by name; an unknown name lists the valid ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab._checks import (
    check_bool,
    check_choice,
    check_generator,
    check_int,
    check_number,
    check_tensor,
    fail,
)
from robustlab._constants import DEFAULT_SEED, DIGITS_SHAPE
from robustlab._registry import Registry
from robustlab.data._files import call_with_options
from robustlab.data.dataset import Dataset
from robustlab.errors import ShapeError

__all__ = [
    "builtin_names",
    "load_builtin",
    "load_digits",
    "load_wine",
    "load_breast_cancer",
    "tabular_scaling",
    "MinMaxScaling",
    "make_synthetic",
    "SyntheticTask",
]

_BUILTINS: Registry[Callable[..., Dataset]] = Registry("dataset")

#: Pixel values of scikit-learn's digits are counts of set pixels in a 4x4 block: 0..16.
_DIGITS_MAX = 16.0


def builtin_names() -> list[str]:
    """Names accepted by :func:`load_builtin`, sorted."""
    return _BUILTINS.names()


def load_builtin(name: str, **kwargs: Any) -> Dataset:
    """Load a built-in dataset by name.

    Parameters
    ----------
    name : str
        One of :func:`builtin_names` (``"breast-cancer"``, ``"digits"``, ``"synthetic"``, ``"wine"``).
    **kwargs
        Options of that dataset's loader (e.g. ``scale=False`` for tabular sets; ``num_examples``,
        ``num_classes``, ``dim``, ``separation``, ``std``, ``seed`` for ``"synthetic"``).

    Returns
    -------
    Dataset
        The whole dataset (no train/test split; :func:`robustlab.data.load_dataset` makes one).

    Raises
    ------
    UnknownNameError
        ``name`` is not a built-in; the message lists the valid names.
    InvalidParameterError
        An option the loader does not take.

    Examples
    --------
    >>> ds = load_builtin("digits")
    >>> ds.input_shape, ds.num_classes
    ((1, 8, 8), 10)
    """
    return call_with_options(_BUILTINS.get(name), (), kwargs, f"built-in dataset {name!r}")


# ---------------------------------------------------------------------------------------- digits
@_BUILTINS.register("digits")
def load_digits() -> Dataset:
    """scikit-learn's handwritten digits as images.

    Returns
    -------
    Dataset
        1797 float32 images ``(N, 1, 8, 8)`` in [0, 1] (scikit-learn's 0..16 pixel counts divided
        by 16), int64 labels, class names ``"0"`` .. ``"9"``, name ``"digits"``.
    """
    from sklearn.datasets import load_digits as sk_digits  # slow import; only when used

    bunch = sk_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / np.float32(_DIGITS_MAX))
    images = images.reshape(-1, *DIGITS_SHAPE)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return Dataset(images, labels, class_names=[str(int(c)) for c in bunch.target_names],
                   name="digits", kind="image")


# ---------------------------------------------------------------------------------------- tabular
@dataclass(frozen=True, eq=False)
class MinMaxScaling:
    """Per-feature min-max scaling ``x -> (x - low) / (high - low)`` of a tabular built-in.

    Attributes
    ----------
    feature_names : tuple of str, length D
    low, high : Tensor, float64, shape (D,)
        Per-feature minimum and maximum of the raw data (the whole built-in set). A constant
        feature (``high == low``) is mapped to 0.
    """

    feature_names: tuple[str, ...]
    low: torch.Tensor
    high: torch.Tensor

    def transform(self, x: Any) -> torch.Tensor:
        """Raw features ``(N, D)`` -> scaled features ``(N, D)`` (dtype of ``x`` if floating)."""
        x = self._check("x", x)
        return ((x.to(torch.float64) - self.low.to(x.device)) / self._span(x.device)).to(x.dtype)

    def inverse_transform(self, x: Any) -> torch.Tensor:
        """Scaled features ``(N, D)`` -> raw features ``(N, D)``."""
        x = self._check("x", x)
        return (x.to(torch.float64) * self._span(x.device) + self.low.to(x.device)).to(x.dtype)

    def _span(self, device: torch.device) -> torch.Tensor:
        span = (self.high - self.low).to(device)
        return torch.where(span > 0, span, torch.ones_like(span))

    def _check(self, name: str, x: Any) -> torch.Tensor:
        x = check_tensor(name, x, ndim=2, dims="N, D")
        if x.shape[1] != len(self.feature_names):
            raise ShapeError(
                f"The '{name}' parameter must have {len(self.feature_names)} features (columns). "
                f"Got {x.shape[1]} instead.", expected=len(self.feature_names), got=tuple(x.shape))
        return x if x.is_floating_point() else x.to(torch.float32)


_TABULAR_LOADERS = {"wine": "load_wine", "breast-cancer": "load_breast_cancer"}


def _sklearn_tabular(name: str) -> Any:
    import sklearn.datasets  # slow import; only when used

    return getattr(sklearn.datasets, _TABULAR_LOADERS[name])()


def tabular_scaling(name: str) -> MinMaxScaling:
    """The scaling that :func:`load_wine` / :func:`load_breast_cancer` apply by default.

    Parameters
    ----------
    name : {"wine", "breast-cancer"}

    Returns
    -------
    MinMaxScaling
        Its ``inverse_transform`` maps the built-in's scaled features back to raw units.
    """
    bunch = _sklearn_tabular(check_choice("name", name, _TABULAR_LOADERS))
    return _scaling_of(bunch)


def _scaling_of(bunch: Any) -> MinMaxScaling:
    raw = torch.from_numpy(np.asarray(bunch.data, dtype=np.float64))
    return MinMaxScaling(tuple(str(f) for f in bunch.feature_names), raw.min(dim=0).values,
                         raw.max(dim=0).values)


def _load_tabular(name: str, scale: bool) -> Dataset:
    scale = check_bool("scale", scale)
    bunch = _sklearn_tabular(name)
    raw = torch.from_numpy(np.asarray(bunch.data, dtype=np.float64))
    features = _scaling_of(bunch).transform(raw) if scale else raw
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return Dataset(features.to(torch.float32), labels, class_names=[str(c) for c in bunch.target_names],
                   name=name, kind="tabular")


@_BUILTINS.register("wine")
def load_wine(*, scale: bool = True) -> Dataset:
    """scikit-learn's wine recognition data: 178 examples, 13 features, 3 classes.

    Parameters
    ----------
    scale : bool, default True
        Min-max scale every feature to [0, 1] using the whole set's minimum and maximum (recorded
        in :func:`tabular_scaling`), so that perturbation sizes (``eps``) mean the same for every
        feature. ``False`` keeps the raw values (e.g. proline ranges up to 1680).

    Returns
    -------
    Dataset
        float32 ``(178, 13)``, kind ``"tabular"``, class names ``"class_0"`` .. ``"class_2"``.
    """
    return _load_tabular("wine", scale)


@_BUILTINS.register("breast-cancer")
def load_breast_cancer(*, scale: bool = True) -> Dataset:
    """scikit-learn's Wisconsin breast cancer data: 569 examples, 30 features, 2 classes.

    Parameters
    ----------
    scale : bool, default True
        Min-max scale every feature to [0, 1] as in :func:`load_wine`; ``False`` keeps raw values.

    Returns
    -------
    Dataset
        float32 ``(569, 30)``, kind ``"tabular"``, class names ``"malignant"``, ``"benign"``.
    """
    return _load_tabular("breast-cancer", scale)


# ---------------------------------------------------------------------------------------- synthetic
@dataclass(frozen=True, eq=False)
class SyntheticTask:
    """A Gaussian-mixture task whose Bayes-optimal classifier is known.

    Attributes
    ----------
    dataset : Dataset
        The sampled examples, float32 ``(N, dim)``, kind ``"tabular"``, name ``"synthetic"``.
    means : Tensor, float32, shape (num_classes, dim)
        Class means, every pair at distance ``separation``.
    std : float
        Standard deviation of the isotropic Gaussian noise around each mean.
    bayes_accuracy : float
        Exact accuracy of the Bayes-optimal classifier (see Notes of :func:`make_synthetic`).
    """

    dataset: Dataset
    means: torch.Tensor
    std: float
    bayes_accuracy: float

    def bayes_predict(self, x: Any) -> torch.Tensor:
        """Bayes-optimal labels for inputs ``x`` ``(N, dim)``: the index of the nearest mean, int64 ``(N,)``."""
        x = check_tensor("x", x, ndim=2, dims="N, D")
        if x.shape[1] != self.means.shape[1]:
            raise ShapeError(f"The 'x' parameter must have {self.means.shape[1]} features (columns). "
                             f"Got {x.shape[1]} instead.", expected=self.means.shape[1], got=tuple(x.shape))
        means = self.means.to(device=x.device, dtype=torch.float64)
        return torch.cdist(x.to(torch.float64), means).argmin(dim=1)

    def sample(self, num_examples: int, *, generator: torch.Generator) -> Dataset:
        """Draw a new dataset (e.g. a test set) from the same mixture, with balanced classes."""
        num_examples = check_int("num_examples", num_examples, low=1)
        return _sample_mixture(self.means, self.std, num_examples, check_generator("generator", generator))


def make_synthetic(
    num_examples: int = 1000,
    *,
    num_classes: int = 3,
    dim: int = 8,
    separation: float = 3.0,
    std: float = 1.0,
    generator: torch.Generator,
) -> SyntheticTask:
    """Sample a Gaussian mixture with a known Bayes-optimal classifier.

    Classes have equal priors (exactly balanced counts, shuffled) and isotropic Gaussian noise of
    the same ``std``, so the Bayes classifier is the nearest-mean rule. The ``num_classes`` means
    are the vertices of a regular simplex with edge ``separation``, rotated at random into ``dim``
    dimensions.

    Parameters
    ----------
    num_examples : int, default 1000
    num_classes : int >= 2, default 3
    dim : int >= num_classes - 1, default 8
        Number of features.
    separation : float > 0, default 3.0
        Distance between any two class means.
    std : float > 0, default 1.0
        Noise standard deviation (per feature).
    generator : torch.Generator
        Source of all randomness (means and samples). Required.

    Returns
    -------
    SyntheticTask
        The dataset, the means, ``std`` and the exact Bayes accuracy.

    Notes
    -----
    With ``a = separation / (std * sqrt(2))`` the Bayes accuracy is that of orthogonal signalling
    with ``K`` classes (the simplex is a translated orthogonal set with the same pairwise distances):

    .. math:: P_c = \\int \\varphi(z)\\, \\Phi(z + a)^{K - 1}\\, dz,

    computed by numerical quadrature. For ``K = 2`` it is ``Phi(separation / (2 std))``.

    Examples
    --------
    >>> import torch
    >>> task = make_synthetic(200, num_classes=2, dim=4, generator=torch.Generator().manual_seed(0))
    >>> round(task.bayes_accuracy, 4), task.dataset.input_shape
    (0.9332, (4,))
    """
    num_examples = check_int("num_examples", num_examples, low=1)
    num_classes = check_int("num_classes", num_classes, low=2)
    dim = check_int("dim", dim, low=1)
    if dim < num_classes - 1:
        fail("dim", f"at least num_classes - 1 = {num_classes - 1} (room for equidistant means)", dim)
    separation = check_number("separation", separation, low=0.0, low_inclusive=False)
    std = check_number("std", std, low=0.0, low_inclusive=False)
    generator = check_generator("generator", generator)
    means = _simplex_means(num_classes, dim, separation, generator)
    dataset = _sample_mixture(means, std, num_examples, generator)
    return SyntheticTask(dataset, means, std, _bayes_accuracy(num_classes, separation, std))


def _simplex_means(k: int, dim: int, separation: float, generator: torch.Generator) -> torch.Tensor:
    # Rows of the centred identity are a regular simplex with edge sqrt(2), spanning k - 1 dimensions.
    centred = torch.eye(k, dtype=torch.float64) - 1.0 / k
    basis, _ = torch.linalg.qr(centred[:, : k - 1])
    rotation, _ = torch.linalg.qr(torch.randn(dim, k - 1, generator=generator, dtype=torch.float64))
    means = (centred @ basis) @ rotation.T * (separation / math.sqrt(2.0))
    return means.to(torch.float32)


def _sample_mixture(means: torch.Tensor, std: float, n: int, generator: torch.Generator) -> Dataset:
    k, dim = means.shape
    labels = (torch.arange(n) % k)[torch.randperm(n, generator=generator)]
    noise = torch.randn(n, dim, generator=generator, dtype=torch.float32)
    inputs = means.index_select(0, labels) + std * noise
    return Dataset(inputs, labels, class_names=[str(c) for c in range(k)], name="synthetic",
                   kind="tabular")


def _bayes_accuracy(k: int, separation: float, std: float) -> float:
    from scipy import integrate, special, stats  # slow imports; only when used

    a = separation / (std * math.sqrt(2.0))
    value, _ = integrate.quad(lambda z: stats.norm.pdf(z) * special.ndtr(z + a) ** (k - 1),
                              -np.inf, np.inf)
    return float(value)


@_BUILTINS.register("synthetic")
def _load_synthetic(
    *,
    num_examples: int = 1000,
    num_classes: int = 3,
    dim: int = 8,
    separation: float = 3.0,
    std: float = 1.0,
    seed: int = DEFAULT_SEED,
) -> Dataset:
    """Name-based entry (CLI ``--data synthetic``): :func:`make_synthetic` seeded with ``seed``."""
    generator = torch.Generator().manual_seed(check_int("seed", seed, low=0))
    return make_synthetic(num_examples, num_classes=num_classes, dim=dim, separation=separation,
                          std=std, generator=generator).dataset
