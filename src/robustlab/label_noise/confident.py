"""Confident learning, counting part: thresholds, confident joint, noise matrices, number of issues.

Same answers as cleanlab 2.x (``cleanlab.count``) for the same ``(labels, pred_probs)``; the
differential tests in ``tests/label_noise/test_audit_cl_*.py`` check it on random inputs with empty
classes and ties. The implementation is independent and vectorised: one chunked pass over
``pred_probs`` for all row statistics, ``bincount`` for the counts, no per-class loop over N.

Orientation (as in cleanlab): ``confident_joint[i, j]`` counts examples whose **given** label is
``i`` and whose **true** label is confidently ``j``; rows are given labels, columns true labels.
``noise_matrix[i, j] = P(given = i | true = j)`` (columns sum to 1) and
``inverse_noise_matrix[j, i] = P(true = j | given = i)`` (columns sum to 1).

Inputs may be NumPy arrays or torch tensors (on any device); they are converted once and every
result is a NumPy array.

References
----------
Northcutt, Jiang, Chuang. "Confident Learning: Estimating Uncertainty in Dataset Labels."
JAIR 70 (2021). Sec. 3.1 (confident joint, Eq. 1-2; calibration, Eq. 3), Sec. 3.2 (noise matrices).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from robustlab._checks import check_bool, check_choice, fail
from robustlab._constants import (
    CL_CLIPPING_LOWER_BOUND,
    CL_CONVERGE_INNER_ITERATIONS,
    CL_CONVERGE_OUTER_ITERATIONS,
    CL_CONVERGED_PRIOR_LOWER_BOUND,
    CL_MAX_NOISE_RATE,
    CL_TINY_VALUE,
)
from robustlab.errors import InvalidParameterError, ShapeError
from robustlab.label_noise._cl_helpers import (
    Prepared,
    as_numpy,
    check_filter_labels,
    confident_counts,
    round_preserving_row_totals,
    row_stats,
    to_numpy,
    validate_confident_joint,
)

__all__ = [
    "NUM_ISSUES_METHODS",
    "PY_METHODS",
    "NoiseEstimate",
    "calibrate_confident_joint",
    "compute_confident_joint",
    "estimate_joint",
    "estimate_latent",
    "estimate_noise",
    "num_label_issues",
    "per_class_thresholds",
]

#: How the latent prior p(true label) is computed (cleanlab.internal.latent_algebra.compute_py).
PY_METHODS = ("cnt", "eqn", "marginal", "marginal_ps")

#: How ``num_label_issues`` counts (cleanlab.count.num_label_issues).
NUM_ISSUES_METHODS = ("off_diagonal", "off_diagonal_calibrated", "off_diagonal_custom")


@dataclass(frozen=True)
class NoiseEstimate:
    """Everything confident learning estimates about the label noise of a dataset.

    Attributes
    ----------
    confident_joint : ndarray of int, shape (K, K)
        Calibrated confident joint: ``[i, j]`` = count of examples with given label ``i`` and
        true label ``j``; row sums equal the given-label counts, total N.
    joint : ndarray of float, shape (K, K)
        ``confident_joint / N``, the estimate of P(given = i, true = j).
    noise_matrix : ndarray of float, shape (K, K)
        P(given = i | true = j); columns sum to 1.
    inverse_noise_matrix : ndarray of float, shape (K, K)
        ``[j, i]`` = P(true = j | given = i); columns sum to 1.
    prior : ndarray of float, shape (K,)
        P(true = j), the latent class prior ("py").
    noise_rate : float
        ``1 - trace(joint)``, the estimated fraction of wrong labels.
    num_label_issues : int
        :func:`num_label_issues` with ``estimation_method="off_diagonal"``.
    """

    confident_joint: np.ndarray
    joint: np.ndarray
    noise_matrix: np.ndarray
    inverse_noise_matrix: np.ndarray
    prior: np.ndarray
    noise_rate: float
    num_label_issues: int


# --- public API ---------------------------------------------------------------------------------


def per_class_thresholds(labels: Any, pred_probs: Any) -> np.ndarray:
    """Per-class confident thresholds: the mean self-confidence of each class.

    Parameters
    ----------
    labels : array_like of int, shape (N,)
        Given (possibly wrong) labels in ``[0, K)``.
    pred_probs : array_like of float, shape (N, K)
        Out-of-sample predicted probabilities; rows sum to 1 (tolerance ``PROB_SUM_ATOL``).

    Returns
    -------
    ndarray, shape (K,)
        ``t_j``; same dtype promotion as cleanlab (float32 for float32 ``pred_probs`` when every
        class has an example, else float64).

    Notes
    -----
    ``t_j = mean_{i: labels_i = j} pred_probs[i, j]`` (Northcutt et al. 2021, Eq. 2), 2 for a
    class no example carries (no row can pass it), clipped below at 2e-6.
    Same as ``cleanlab.count.get_confident_thresholds``.

    Examples
    --------
    >>> import numpy as np
    >>> per_class_thresholds(np.array([0, 0, 1]), np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]]))
    array([0.8, 0.8])
    """
    return Prepared.from_user(labels, pred_probs).thresholds


def compute_confident_joint(
    labels: Any,
    pred_probs: Any,
    *,
    thresholds: Any = None,
    calibrate: bool = True,
) -> np.ndarray:
    """Confident joint: counts of (given label, confidently-true label) pairs.

    Parameters
    ----------
    labels : array_like of int, shape (N,)
        Given labels in ``[0, K)``.
    pred_probs : array_like of float, shape (N, K)
        Out-of-sample predicted probabilities.
    thresholds : array_like of float, shape (K,) or (K, 1), optional
        Per-class thresholds; default :func:`per_class_thresholds`.
    calibrate : bool, default True
        Rescale rows to the given-label counts and the total to N (:func:`calibrate_confident_joint`).

    Returns
    -------
    ndarray of int, shape (K, K)
        Rows: given label; columns: true label (cleanlab's orientation).

    Notes
    -----
    Example ``x`` with given label ``i`` is counted in ``[i, j]`` where ``j`` is the only class
    with ``p_j(x) >= t_j - 1e-6``, or ``argmax_k p_k(x)`` when several classes pass; rows where
    none passes are not counted (Northcutt et al. 2021, Sec. 3.1, Eq. 1). Diagonal entries are
    raised to at least 1 before calibration. Same as ``cleanlab.count.compute_confident_joint``.
    """
    calibrate = check_bool("calibrate", calibrate)
    prep = Prepared.from_user(labels, pred_probs)
    custom = None if thresholds is None else _check_thresholds(thresholds, prep.num_classes)
    return _confident_joint_impl(prep, thresholds=custom, calibrate=calibrate)


def calibrate_confident_joint(confident_joint: Any, labels: Any) -> np.ndarray:
    """Rescale a confident joint so rows sum to the given-label counts and the total is N.

    Parameters
    ----------
    confident_joint : array_like, shape (K, K)
        Counts, rows given label, columns true label.
    labels : array_like of int, shape (N,)
        Given labels in ``[0, K)``.

    Returns
    -------
    ndarray of int, shape (K, K)
        Calibrated counts; row ``i`` sums to ``count(labels == i)`` up to rounding that keeps the
        row totals.

    Notes
    -----
    ``C~[i, j] = C[i, j] / sum_j C[i, j] * n_i``, then scaled to total N and rounded per row
    preserving row sums (Northcutt et al. 2021, Eq. 3). Same as
    ``cleanlab.count.calibrate_confident_joint``.
    """
    cj = validate_confident_joint(confident_joint, _matrix_size(confident_joint))
    y = check_filter_labels(labels, cj.shape[0])
    return _calibrate_impl(cj, np.bincount(y, minlength=cj.shape[0]))


def estimate_joint(labels: Any, pred_probs: Any, *, confident_joint: Any = None) -> np.ndarray:
    """Estimate the joint distribution P(given = i, true = j).

    Parameters
    ----------
    labels, pred_probs
        As in :func:`compute_confident_joint`.
    confident_joint : array_like, shape (K, K), optional
        Use this (it is calibrated first) instead of computing one from ``pred_probs``.

    Returns
    -------
    ndarray of float, shape (K, K)
        Sums to 1; row ``i`` sums to the fraction of examples labelled ``i``.

    Notes
    -----
    ``Q[i, j] = C~[i, j] / sum C~`` with ``C~`` the calibrated confident joint
    (Northcutt et al. 2021, Eq. 3). Same as ``cleanlab.count.estimate_joint``.
    """
    prep = Prepared.from_user(labels, pred_probs)
    if confident_joint is None:
        calibrated = _confident_joint_impl(prep, thresholds=None, calibrate=True)
    else:
        cj = validate_confident_joint(confident_joint, prep.num_classes)
        calibrated = _calibrate_impl(cj, prep.label_counts)
    return _joint_from_calibrated(calibrated)


def estimate_latent(
    confident_joint: Any,
    labels: Any,
    *,
    py_method: str = "cnt",
    converge_latent_estimates: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent prior, noise matrix and inverse noise matrix from a confident joint.

    Parameters
    ----------
    confident_joint : array_like, shape (K, K)
        Rows given label, columns true label (usually calibrated).
    labels : array_like of int, shape (N,)
        Given labels in ``[0, K)``.
    py_method : {"cnt", "eqn", "marginal", "marginal_ps"}, default "cnt"
        How the prior P(true = j) is computed (see Notes).
    converge_latent_estimates : bool, default False
        Iterate the closed-form relations between the three estimates until they agree
        (5 inner x 3 outer iterations, as cleanlab).

    Returns
    -------
    (py, noise_matrix, inverse_noise_matrix) : tuple of ndarray, shapes (K,), (K, K), (K, K)
        ``noise_matrix[i, j] = P(given = i | true = j)``; ``inverse_noise_matrix[j, i] =
        P(true = j | given = i)``.

    Notes
    -----
    ``NM = C / colsum(C)``, ``INV = C^T / rowsum(C)``; off-diagonal rates clipped to
    [0, 0.9999] and columns renormalised. Prior: ``cnt``: ``diag(INV) / diag(NM) * ps``;
    ``eqn``: ``NM^-1 ps``; ``marginal``: ``colsum(C) / sum(C)``; ``marginal_ps``: ``INV ps``;
    then clipped to [1e-6, 1] and renormalised (Northcutt et al. 2021, Sec. 3.2). Same as
    ``cleanlab.count.estimate_latent``.
    """
    cj = validate_confident_joint(confident_joint, _matrix_size(confident_joint))
    y = check_filter_labels(labels, cj.shape[0])
    py_method = check_choice("py_method", py_method, PY_METHODS)
    converge = check_bool("converge_latent_estimates", converge_latent_estimates)
    return _latent_impl(cj, np.bincount(y, minlength=cj.shape[0]), py_method=py_method,
                        converge=converge)


def estimate_noise(
    labels: Any,
    pred_probs: Any,
    *,
    py_method: str = "cnt",
    converge_latent_estimates: bool = True,
) -> NoiseEstimate:
    """Estimate the label noise of a dataset: joint, noise matrices, prior, rate, count.

    Parameters
    ----------
    labels : array_like of int, shape (N,)
        Given labels in ``[0, K)``.
    pred_probs : array_like of float, shape (N, K)
        Out-of-sample predicted probabilities (e.g. from K-fold cross-validation).
    py_method : {"cnt", "eqn", "marginal", "marginal_ps"}, default "cnt"
        See :func:`estimate_latent`.
    converge_latent_estimates : bool, default True
        As in ``cleanlab.count.estimate_py_and_noise_matrices_from_probabilities`` (whose defaults
        these are; note :func:`estimate_latent` defaults to False, like cleanlab's).

    Returns
    -------
    NoiseEstimate
        Fields as documented on :class:`NoiseEstimate`.

    Notes
    -----
    One pass over ``pred_probs`` serves every field. ``noise_matrix``, ``inverse_noise_matrix``,
    ``prior`` and ``confident_joint`` equal cleanlab's
    ``estimate_py_and_noise_matrices_from_probabilities``; ``joint`` equals
    ``estimate_joint``; ``num_label_issues`` equals ``num_label_issues`` (``off_diagonal``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 3, 300)
    >>> pred_probs = np.full((300, 3), 0.1); pred_probs[np.arange(300), labels] = 0.8
    >>> est = estimate_noise(labels, pred_probs)
    >>> float(est.noise_rate), int(est.num_label_issues)
    (0.0, 0)
    """
    py_method = check_choice("py_method", py_method, PY_METHODS)
    converge = check_bool("converge_latent_estimates", converge_latent_estimates)
    prep = Prepared.from_user(labels, pred_probs)
    calibrated = _confident_joint_impl(prep, thresholds=None, calibrate=True)
    joint = _joint_from_calibrated(calibrated)
    py, nm, inv = _latent_impl(calibrated, prep.label_counts, py_method=py_method, converge=converge)
    return NoiseEstimate(
        confident_joint=calibrated,
        joint=joint,
        noise_matrix=nm,
        inverse_noise_matrix=inv,
        prior=py,
        noise_rate=float(1.0 - joint.trace()),
        num_label_issues=_num_issues_off_diagonal(prep),
    )


def num_label_issues(
    labels: Any,
    pred_probs: Any,
    *,
    confident_joint: Any = None,
    estimation_method: str = "off_diagonal",
) -> int:
    """Estimated number of wrong labels in the dataset.

    Parameters
    ----------
    labels, pred_probs
        As in :func:`compute_confident_joint`.
    confident_joint : array_like, shape (K, K), optional
        Only with ``estimation_method="off_diagonal_custom"`` (required there, refused otherwise).
    estimation_method : {"off_diagonal", "off_diagonal_calibrated", "off_diagonal_custom"}
        ``off_diagonal``: examples in the off-diagonal of the uncalibrated confident joint, minus
        those whose given label is (within 1e-6) the argmax; equals
        ``find_label_issues(filter_by="confident_learning").sum()``.
        ``off_diagonal_calibrated``: ``rint((1 - trace(Q)) * N)`` with ``Q`` from
        :func:`estimate_joint`. ``off_diagonal_custom``: the same with the given ``confident_joint``.

    Returns
    -------
    int

    Notes
    -----
    Same as ``cleanlab.count.num_label_issues``, except that a ``confident_joint`` the chosen
    method would ignore is an error here (cleanlab warns and ignores it).
    """
    method = check_choice("estimation_method", estimation_method, NUM_ISSUES_METHODS)
    prep = Prepared.from_user(labels, pred_probs)
    if method == "off_diagonal_custom":
        if confident_joint is None:
            fail("confident_joint", "given when estimation_method='off_diagonal_custom'", None)
        cj = validate_confident_joint(confident_joint, prep.num_classes)
        joint = _joint_from_calibrated(_calibrate_impl(cj, prep.label_counts))
        return _count_from_joint(joint, prep.labels.shape[0])
    if confident_joint is not None:
        fail("confident_joint", f"None with estimation_method={method!r} (it is recomputed from "
             "labels and pred_probs; use 'off_diagonal_custom' to use yours)", "an array",
             describe_got=False)
    if method == "off_diagonal":
        return _num_issues_off_diagonal(prep)
    joint = _joint_from_calibrated(_confident_joint_impl(prep, thresholds=None, calibrate=True))
    return _count_from_joint(joint, prep.labels.shape[0])


# --- private implementations (trust their inputs) -----------------------------------------------


def _matrix_size(confident_joint: Any) -> int:
    shape = np.shape(to_numpy(confident_joint) if hasattr(confident_joint, "detach") else confident_joint)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 2:
        raise ShapeError(
            f"The 'confident_joint' parameter must be a square (K, K) matrix with K >= 2. "
            f"Got shape {tuple(shape)} instead.", expected="(K, K)", got=tuple(shape))
    return int(shape[0])


def _check_thresholds(thresholds: Any, num_classes: int) -> np.ndarray:
    t = as_numpy(thresholds)
    if t.dtype.kind not in "iuf" or t.size != num_classes or t.ndim not in (1, 2) \
            or (t.ndim == 2 and t.shape[1] != 1):
        fail("thresholds", f"a float array of shape ({num_classes},) or ({num_classes}, 1)", t,
             error=ShapeError)
    t = t.reshape(num_classes)
    if not np.isfinite(t).all():
        fail("thresholds", "finite", "NaN/inf entries", describe_got=False)
    return t


def _confident_joint_impl(prep: Prepared, *, thresholds: np.ndarray | None,
                          calibrate: bool) -> np.ndarray:
    stats = prep.stats if thresholds is None else row_stats(prep.pred_probs, thresholds)
    cj = confident_counts(prep.labels, stats.guess, prep.num_classes)
    # cleanlab raises empty diagonal cells to 1 before calibrating (count.py, compute_confident_joint).
    np.fill_diagonal(cj, np.maximum(cj.diagonal(), 1))
    return _calibrate_impl(cj, prep.label_counts) if calibrate else cj


def _calibrate_impl(cj: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    # Operation order and memory layout follow cleanlab.count.calibrate_confident_joint (rows scaled
    # through a transpose, so the total is summed in the same order): the result is rounded, and a
    # last-bit difference could move a count across .5.
    row_sums = np.clip(cj.sum(axis=1), a_min=CL_TINY_VALUE, a_max=None)
    scaled = (cj.T / row_sums * label_counts).T
    scaled = scaled / np.clip(np.sum(scaled), a_min=CL_TINY_VALUE, a_max=None) * int(label_counts.sum())
    return round_preserving_row_totals(scaled)


def _joint_from_calibrated(calibrated: np.ndarray) -> np.ndarray:
    return calibrated / np.clip(float(np.sum(calibrated)), a_min=CL_TINY_VALUE, a_max=None)


def _count_from_joint(joint: np.ndarray, n: int) -> int:
    return int(np.rint((1.0 - joint.trace()) * n))


def _off_diagonal_mask(prep: Prepared) -> np.ndarray:
    """Rows counted off the diagonal of the confident joint (cleanlab's ``cl_error_indices``)."""
    guess = prep.stats.guess
    return (guess >= 0) & (guess != prep.labels)


def _num_issues_off_diagonal(prep: Prepared) -> int:
    return int(np.count_nonzero(_off_diagonal_mask(prep) & ~prep.reduce_mask()))


def _clip_noise_rates(matrix: np.ndarray) -> np.ndarray:
    """Clip off-diagonal rates to [0, 0.9999], keep the diagonal, renormalise columns."""
    clipped = np.clip(matrix, 0, CL_MAX_NOISE_RATE)
    np.fill_diagonal(clipped, np.diagonal(matrix))
    return clipped / np.clip(clipped.sum(axis=0), a_min=CL_TINY_VALUE, a_max=None)


def _clip_values(x: np.ndarray, low: float, high: float, new_sum: float) -> np.ndarray:
    x = np.clip(x, low, high)
    return x * new_sum / np.clip(np.sum(x), a_min=CL_TINY_VALUE, a_max=None)


def _prior(ps: np.ndarray, nm: np.ndarray, inv: np.ndarray, py_method: str,
           true_counts: np.ndarray | None) -> np.ndarray:
    if py_method == "cnt":
        py = inv.diagonal() / np.clip(nm.diagonal(), a_min=CL_TINY_VALUE, a_max=None) * ps
    elif py_method == "eqn":
        try:
            py = np.linalg.inv(nm).dot(ps)
        except np.linalg.LinAlgError:
            raise InvalidParameterError(
                "The 'py_method' parameter 'eqn' needs an invertible noise matrix. Got a singular "
                "one instead (use 'cnt')."
            ) from None
    elif py_method == "marginal":
        py = true_counts / np.clip(float(true_counts.sum()), a_min=CL_TINY_VALUE, a_max=None)
    else:
        py = np.dot(inv, ps)
    return _clip_values(py, CL_CLIPPING_LOWER_BOUND, 1.0, 1.0)


def _latent_impl(cj: np.ndarray, label_counts: np.ndarray, *, py_method: str,
                 converge: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # cleanlab.count.estimate_latent and count._converge_estimates / internal/latent_algebra.py.
    ps = label_counts / float(label_counts.sum())
    given_counts = cj.sum(axis=1).astype(float)
    true_counts = cj.sum(axis=0).astype(float)
    nm = cj / np.clip(true_counts, a_min=CL_TINY_VALUE, a_max=None)
    inv = cj.T / np.clip(given_counts, a_min=CL_TINY_VALUE, a_max=None)
    py = _prior(ps, nm, inv, py_method, true_counts)
    nm = _clip_noise_rates(nm)
    inv = _clip_noise_rates(inv)
    if converge:
        for _ in range(CL_CONVERGE_OUTER_ITERATIONS):
            for _ in range(CL_CONVERGE_INNER_ITERATIONS):
                # P(true=j | given=i) = P(given=i | true=j) P(true=j) / P(given=i)
                inv = _clip_noise_rates((nm * py).T / np.clip(ps, a_min=CL_TINY_VALUE, a_max=None))
                py = _prior(ps, nm, inv, "cnt", None)
            # P(given=i | true=j) = P(true=j | given=i) P(given=i) / P(true=j)
            nm = _clip_noise_rates((inv * ps).T / np.clip(py, a_min=CL_TINY_VALUE, a_max=None))
        py = _clip_values(py, CL_CONVERGED_PRIOR_LOWER_BOUND, 1.0, 1.0)
        nm = _clip_noise_rates(nm)
        inv = _clip_noise_rates(inv)
    return py, nm, inv
