"""Tabular corruptions: Gaussian noise scaled by feature std, missing values, feature shuffles,
categorical flips.

Inputs are float ``(N, D)`` tensors (one row per example). Every function takes an explicit
``generator`` and returns a new tensor on the input's device and dtype; the input is never changed.
Statistics (feature std, imputation values, category sets) come from ``reference`` data when
given (the training set, as a deployed model would see it) and otherwise from the batch itself.

Severities 1-5 of :func:`corrupt_tabular` map to the strengths in
``robustlab._constants.TABULAR_*``. There is no published tabular counterpart of ImageNet-C's
parameter tables; these values are robustlab's and are stated, not borrowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from robustlab._checks import (
    check_choice,
    check_generator,
    check_inputs,
    check_int,
    check_number,
    check_probability,
    fail,
)
from robustlab._constants import (
    TABULAR_FLIP_RATES,
    TABULAR_MISSING_RATES,
    TABULAR_NOISE_SCALES,
    TABULAR_SHUFFLE_FRACTIONS,
)
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError

__all__ = [
    "IMPUTATIONS",
    "TABULAR_CORRUPTIONS",
    "categorical_flip",
    "corrupt_tabular",
    "feature_shuffle",
    "missing_values",
    "tabular_gaussian_noise",
]

TABULAR_CORRUPTIONS = ("gaussian_noise", "missing_values", "feature_shuffle", "categorical_flip")
IMPUTATIONS = ("mean", "median", "zero")


def _check_table(name: str, x: Any) -> torch.Tensor:
    x = check_inputs(name, x)
    if x.ndim != 2:
        raise ShapeError(f"The '{name}' parameter must have shape (N, D) (tabular rows). Got "
                         f"shape {tuple(x.shape)} instead.", expected="(N, D)", got=tuple(x.shape))
    return x


def _check_reference(reference: Any, x: torch.Tensor) -> torch.Tensor:
    if reference is None:
        return x
    ref = _check_table("reference", reference)
    if ref.shape[1] != x.shape[1] or ref.shape[0] == 0:
        raise ShapeError(f"The 'reference' parameter must have at least one row and {x.shape[1]} columns "
                         f"(like 'x'). Got shape {tuple(ref.shape)} instead.",
                         expected=(None, x.shape[1]), got=tuple(ref.shape))
    return ref.to(device=x.device, dtype=x.dtype)


def _check_columns(columns: Any, d: int, *, name: str = "columns") -> torch.Tensor:
    if columns is None:
        return torch.arange(d)
    if isinstance(columns, (str, bytes)) or not isinstance(columns, Sequence):
        fail(name, "a sequence of column indices", columns, error=InvalidTypeError)
    idx = [check_int(name, c, low=0, high=d - 1) for c in columns]
    if len(set(idx)) != len(idx):
        fail(name, "distinct column indices", list(columns))
    return torch.tensor(idx, dtype=torch.int64)


def _uniform(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    # Drawn on the generator's device, then moved: same numbers on CPU and GPU for a CPU generator.
    return torch.rand(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


# --------------------------------------------------------------------------- Gaussian noise
def tabular_gaussian_noise(x: Any, *, scale: float, generator: torch.Generator, reference: Any = None,
                           columns: Sequence[int] | None = None) -> torch.Tensor:
    """Add Gaussian noise whose std is ``scale`` times each feature's std.

    Parameters
    ----------
    x : Tensor of shape (N, D)
    scale : float >= 0
        Noise std in units of the feature's std.
    generator : torch.Generator
    reference : Tensor of shape (M, D), optional
        Data the feature std is estimated on (population std, ``unbiased=False``); default ``x``.
    columns : sequence of int, optional
        Columns to corrupt (default all); e.g. only the continuous ones.

    Returns
    -------
    Tensor of shape (N, D)

    Notes
    -----
    ``x'_{ij} = x_{ij} + scale * sd_j * z_{ij}``, ``z ~ N(0, 1)``, for the chosen columns ``j``.
    A constant feature (``sd_j = 0``) is left unchanged.
    """
    x = _check_table("x", x)
    scale = check_number("scale", scale, low=0.0)
    check_generator("generator", generator)
    ref = _check_reference(reference, x)
    cols = _check_columns(columns, x.shape[1]).to(x.device)
    return _noise_impl(x, scale, generator, ref, cols)


def _noise_impl(x: torch.Tensor, scale: float, generator: torch.Generator, ref: torch.Tensor,
                cols: torch.Tensor) -> torch.Tensor:
    std = ref.std(dim=0, unbiased=False) if ref.shape[0] > 1 else torch.zeros_like(ref[0])
    z = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)
    mask = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    mask[cols] = 1
    return x + scale * std * mask * z


# --------------------------------------------------------------------------- missing values
def missing_values(x: Any, *, rate: float, generator: torch.Generator, imputation: str = "mean",
                   reference: Any = None, columns: Sequence[int] | None = None) -> torch.Tensor:
    """Remove entries completely at random (MCAR) and fill them with a stated imputation.

    Parameters
    ----------
    x : Tensor of shape (N, D)
    rate : float in [0, 1]
        Probability that each entry (of the chosen columns) goes missing, independently.
    generator : torch.Generator
    imputation : {"mean", "median", "zero"}, default "mean"
        Value written into a missing entry: the column's mean or median (``torch.median``, the
        lower of the two middle values for an even count) or 0.
    reference : Tensor of shape (M, D), optional
        Data the imputation statistics come from (typically the training set). Default: the
        *observed* (not removed) entries of each column of ``x``, as an imputer fitted on the
        corrupted data would see them; a column with no observed entry is filled with 0.
    columns : sequence of int, optional

    Returns
    -------
    Tensor of shape (N, D)
        Imputed data (no NaN), so any model can consume it. To get the NaN mask, compare with
        the input or call with ``imputation="zero"`` on shifted data.
    """
    x = _check_table("x", x)
    rate = check_probability("rate", rate)
    check_generator("generator", generator)
    check_choice("imputation", imputation, IMPUTATIONS)
    ref = None if reference is None else _check_reference(reference, x)
    cols = _check_columns(columns, x.shape[1]).to(x.device)
    return _missing_impl(x, rate, generator, imputation, ref, cols)


def _missing_impl(x: torch.Tensor, rate: float, generator: torch.Generator, imputation: str,
                  ref: torch.Tensor | None, cols: torch.Tensor) -> torch.Tensor:
    col_mask = torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
    col_mask[cols] = True
    missing = (_uniform(tuple(x.shape), generator, x) < rate) & col_mask
    if imputation == "zero":
        fill = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    elif ref is not None:
        fill = ref.mean(dim=0) if imputation == "mean" else ref.median(dim=0).values
    else:
        fill = _observed_statistic(x, missing, imputation)
    return torch.where(missing, fill.expand_as(x), x)


def _observed_statistic(x: torch.Tensor, missing: torch.Tensor, imputation: str) -> torch.Tensor:
    observed = torch.where(missing, torch.full_like(x, float("nan")), x)
    stat = observed.nanmean(dim=0) if imputation == "mean" else observed.nanmedian(dim=0).values
    return torch.nan_to_num(stat, nan=0.0)


# --------------------------------------------------------------------------- feature shuffle
def feature_shuffle(x: Any, *, fraction: float, generator: torch.Generator,
                    columns: Sequence[int] | None = None) -> torch.Tensor:
    """Permute randomly chosen feature columns across rows (breaks their link with the label).

    Parameters
    ----------
    x : Tensor of shape (N, D)
    fraction : float in [0, 1]
        Fraction of the candidate columns to shuffle: ``max(1, round(fraction * D_c))`` of them
        when ``fraction > 0``, chosen uniformly without replacement; each gets its own
        permutation of the rows.
    generator : torch.Generator
    columns : sequence of int, optional
        Candidate columns (default all).

    Returns
    -------
    Tensor of shape (N, D)
        Every column keeps its multiset of values; rows are unchanged for other columns.
    """
    x = _check_table("x", x)
    fraction = check_probability("fraction", fraction)
    check_generator("generator", generator)
    cols = _check_columns(columns, x.shape[1])
    return _shuffle_impl(x, fraction, generator, cols)


def _shuffle_impl(x: torch.Tensor, fraction: float, generator: torch.Generator,
                  cols: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    k = 0 if fraction == 0 else max(1, round(fraction * len(cols)))
    chosen = cols[torch.randperm(len(cols), generator=generator, device=generator.device).cpu()[:k]]
    n = x.shape[0]
    for j in chosen.tolist():
        perm = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
        out[:, j] = x[perm, j]
    return out


# --------------------------------------------------------------------------- categorical flips
def categorical_flip(x: Any, *, rate: float, categorical: Sequence[int] | Mapping[int, Sequence[float]],
                     generator: torch.Generator, reference: Any = None) -> torch.Tensor:
    """Replace entries of categorical columns by a *different* category, uniformly at random.

    Parameters
    ----------
    x : Tensor of shape (N, D)
        Categorical columns hold their category codes (any float values).
    rate : float in [0, 1]
        Probability that each categorical entry is flipped.
    categorical : sequence of int, or mapping of int to sequence of float
        The categorical columns; with a mapping, the categories of each column. Otherwise the
        categories are the distinct values of the column in ``reference`` (default ``x``).
    generator : torch.Generator
    reference : Tensor of shape (M, D), optional

    Returns
    -------
    Tensor of shape (N, D)
        A flipped entry takes one of the column's other categories with equal probability; a
        column with a single category (or an entry outside the category set) stays unchanged.
    """
    x = _check_table("x", x)
    rate = check_probability("rate", rate)
    check_generator("generator", generator)
    ref = _check_reference(reference, x)
    if isinstance(categorical, Mapping):
        cols = _check_columns(list(categorical), x.shape[1], name="categorical").tolist()
        cats = {}
        for j in cols:
            values = torch.as_tensor(list(categorical[j]), dtype=x.dtype, device=x.device).unique()
            if values.numel() == 0:
                fail("categorical", f"at least one category for column {j}", list(categorical[j]))
            cats[j] = values
    else:
        cols = _check_columns(categorical, x.shape[1], name="categorical").tolist()
        cats = {j: ref[:, j].unique() for j in cols}
    if not cols:
        raise InvalidParameterError("The 'categorical' parameter must name at least one column. Got none instead.")
    return _flip_impl(x, rate, generator, cats)


def _flip_impl(x: torch.Tensor, rate: float, generator: torch.Generator,
               cats: Mapping[int, torch.Tensor]) -> torch.Tensor:
    out = x.clone()
    n = x.shape[0]
    for j, values in cats.items():
        k = values.numel()
        flip = _uniform((n,), generator, x) < rate
        offset = (_uniform((n,), generator, x) * (k - 1)).floor().long().clamp(max=max(k - 2, 0)) + 1
        if k < 2:
            continue
        # Position of each entry in the sorted category list; entries not in the set stay as they are.
        pos = torch.searchsorted(values, x[:, j].contiguous()).clamp(max=k - 1)
        known = values[pos] == x[:, j]
        new = values[(pos + offset) % k]
        out[:, j] = torch.where(flip & known, new, x[:, j])
    return out


# --------------------------------------------------------------------------- by name
def corrupt_tabular(x: Any, name: str, severity: int, *, generator: torch.Generator,
                    reference: Any = None, categorical: Sequence[int] | None = None,
                    imputation: str = "mean") -> torch.Tensor:
    """Apply the tabular corruption ``name`` at ``severity`` (1-5).

    Parameters
    ----------
    x : Tensor of shape (N, D)
    name : {"gaussian_noise", "missing_values", "feature_shuffle", "categorical_flip"}
    severity : int in [1, 5]
        Noise scale (times feature std) 0.1/0.25/0.5/0.75/1.0; missing rate 0.05/0.1/0.2/0.3/0.5
        (mean imputation by default); shuffled column fraction 0.1/0.2/0.3/0.5/0.7; categorical
        flip rate 0.05/0.1/0.2/0.3/0.5.
    generator : torch.Generator
    reference : Tensor of shape (M, D), optional
        Statistics source (feature std, imputation values, categories); default ``x``.
    categorical : sequence of int, optional
        Categorical columns. Gaussian noise skips them; ``"categorical_flip"`` requires them.
    imputation : {"mean", "median", "zero"}, default "mean"

    Returns
    -------
    Tensor of shape (N, D)
    """
    check_choice("name", name, TABULAR_CORRUPTIONS)
    s = check_int("severity", severity, low=1, high=5) - 1
    x = _check_table("x", x)
    d = x.shape[1]
    cat = [] if categorical is None else _check_columns(categorical, d, name="categorical").tolist()
    continuous = [j for j in range(d) if j not in set(cat)]
    if name == "gaussian_noise":
        return tabular_gaussian_noise(x, scale=TABULAR_NOISE_SCALES[s], generator=generator,
                                      reference=reference, columns=continuous)
    if name == "missing_values":
        return missing_values(x, rate=TABULAR_MISSING_RATES[s], generator=generator, imputation=imputation,
                              reference=reference)
    if name == "feature_shuffle":
        return feature_shuffle(x, fraction=TABULAR_SHUFFLE_FRACTIONS[s], generator=generator)
    if not cat:
        fail("categorical", "the categorical column indices for 'categorical_flip'", categorical)
    return categorical_flip(x, rate=TABULAR_FLIP_RATES[s], categorical=cat, generator=generator,
                            reference=reference)
