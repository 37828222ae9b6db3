"""Multiple noisy annotators: simulate them, aggregate their votes (majority vote, Dawid-Skene EM).

Annotations are an int64 matrix ``(N, R)``: entry ``[n, r]`` is annotator ``r``'s label for example
``n``, or ``-1`` (``MISSING_ANNOTATION``) when annotator ``r`` did not label it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from robustlab._checks import (
    check_choice,
    check_generator,
    check_int,
    check_labels,
    check_number,
    check_probability,
    check_tensor,
    fail,
)
from robustlab._constants import (
    DAWID_SKENE_MAX_ITER,
    DAWID_SKENE_SMOOTHING,
    DAWID_SKENE_TOL,
    MISSING_ANNOTATION,
)
from robustlab.errors import InvalidParameterError, InvalidTypeError, ShapeError
from robustlab.label_noise.simulate import (
    _sample_rows,
    _symmetric_t,
    check_transition_matrix,
)

__all__ = [
    "TIE_BREAKS",
    "DawidSkeneResult",
    "annotator_transitions",
    "check_annotations",
    "dawid_skene",
    "majority_vote",
    "simulate_annotators",
]

#: How :func:`majority_vote` resolves ties.
TIE_BREAKS = ("random", "lowest", "abstain")


def annotator_transitions(num_annotators: int, num_classes: int, *, generator: torch.Generator,
                          accuracy: tuple[float, float] = (0.6, 0.9)) -> torch.Tensor:
    """Draw one symmetric transition matrix per annotator, float64 ``(R, K, K)``.

    Annotator ``r``'s accuracy ``a_r`` is uniform on ``accuracy = (low, high)``; its matrix is the
    exclusive symmetric ``T_r = a_r I + (1 - a_r) / (K - 1) (11^T - I)``.
    """
    r = check_int("num_annotators", num_annotators, low=1)
    k = check_int("num_classes", num_classes, low=2)
    if not isinstance(accuracy, (tuple, list)) or len(accuracy) != 2:
        fail("accuracy", "a pair (low, high) of probabilities", accuracy, error=InvalidTypeError)
    low = check_probability("accuracy", accuracy[0])
    high = check_probability("accuracy", accuracy[1])
    if low > high:
        fail("accuracy", "a pair (low, high) with low <= high", accuracy)
    g = check_generator("generator", generator)
    acc = low + (high - low) * torch.rand(r, generator=g, device=g.device, dtype=torch.float64).cpu()
    return torch.stack([_symmetric_t(k, 1.0 - float(a), False) for a in acc])


def simulate_annotators(labels: Any, transitions: Any, *, generator: torch.Generator,
                        num_classes: int | None = None, missing_rate: float = 0.0,
                        accuracy: tuple[float, float] = (0.6, 0.9)) -> torch.Tensor:
    """Simulate ``R`` annotators, each labelling every example through its own transition matrix.

    Parameters
    ----------
    labels : Tensor or ndarray of int, shape (N,)
        True labels.
    transitions : sequence of (K, K) matrices, Tensor (R, K, K), or int
        Annotator ``r`` reports ``j`` for true class ``i`` with probability ``T_r[i, j]`` (each
        validated as row-stochastic). An int ``R`` draws ``R`` symmetric annotators with
        :func:`annotator_transitions` (``num_classes`` is then required, ``accuracy`` used).
    generator : torch.Generator
    num_classes : int, optional
        Only needed when ``transitions`` is an int.
    missing_rate : float in [0, 1), default 0
        Each annotation is independently missing (``-1``) with this probability.
    accuracy : (float, float), default (0.6, 0.9)
        Range of annotator accuracies when ``transitions`` is an int.

    Returns
    -------
    Tensor of int64, shape (N, R), on the labels' device; ``-1`` marks a missing annotation.
    """
    g = check_generator("generator", generator)
    if isinstance(transitions, int) and not isinstance(transitions, bool):
        if num_classes is None:
            fail("num_classes", "given when 'transitions' is a number of annotators", num_classes)
        t_all = annotator_transitions(transitions, num_classes, generator=g, accuracy=accuracy)
    else:
        if isinstance(transitions, torch.Tensor) and transitions.ndim == 3:
            items: Sequence[Any] = list(transitions)
        elif isinstance(transitions, (list, tuple)) and transitions:
            items = transitions
        else:
            fail("transitions", "a non-empty list of (K, K) transition matrices, an (R, K, K) tensor "
                 "or a number of annotators", transitions, error=InvalidTypeError)
        first = check_transition_matrix("transitions[0]", items[0], num_classes=num_classes)
        t_all = torch.stack([first] + [
            check_transition_matrix(f"transitions[{i}]", t, num_classes=first.shape[0])
            for i, t in enumerate(items) if i > 0])
    k = t_all.shape[1]
    y = check_labels("labels", labels, num_classes=k)
    missing_rate = check_probability("missing_rate", missing_rate, allow_one=False)
    n, r = y.shape[0], t_all.shape[0]
    y_cpu = y.cpu()
    out = torch.empty(n, r, dtype=torch.int64)
    for a in range(r):
        out[:, a] = _sample_rows(t_all[a], y_cpu, g)
    if missing_rate > 0:
        drop = torch.rand(n, r, generator=g, device=g.device).cpu() < missing_rate
        out[drop] = MISSING_ANNOTATION
    return out.to(y.device)


def check_annotations(name: str, annotations: Any, num_classes: int) -> torch.Tensor:
    """Validate an ``(N, R)`` annotation matrix: integers in ``[0, K)`` or ``-1`` (missing)."""
    a = check_tensor(name, annotations, ndim=2, dims="N, R")
    if a.is_floating_point() or a.dtype == torch.bool or a.is_complex():
        fail(name, "an integer (N, R) matrix of class indices (-1 for missing)", a,
             error=InvalidTypeError)
    if a.shape[1] < 1:
        fail(name, "an (N, R) matrix with at least one annotator", a, error=ShapeError)
    a = a.to(torch.int64)
    if a.numel():
        lo, hi = int(a.min()), int(a.max())
        if lo < MISSING_ANNOTATION or hi >= num_classes:
            raise InvalidParameterError(
                f"The '{name}' parameter must hold class indices in [0, {num_classes - 1}] or "
                f"{MISSING_ANNOTATION} for a missing annotation. Got values in [{lo}, {hi}] instead.")
    return a


def _vote_counts(a: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, K)`` float64 number of votes per class (missing entries ignored)."""
    n = a.shape[0]
    present = a >= 0
    rows = torch.arange(n, device=a.device).unsqueeze(1).expand_as(a)[present]
    counts = torch.zeros(n * k, dtype=torch.float64, device=a.device)
    counts.index_add_(0, rows * k + a[present], torch.ones(rows.numel(), dtype=torch.float64,
                                                           device=a.device))
    return counts.reshape(n, k)


def majority_vote(annotations: Any, num_classes: int, *, tie_break: str = "random",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Most frequent label per example.

    Parameters
    ----------
    annotations : Tensor or ndarray of int, shape (N, R)
        ``-1`` marks a missing annotation (ignored).
    num_classes : int
    tie_break : {"random", "lowest", "abstain"}, default "random"
        Among the classes with the most votes: pick one uniformly at random (needs
        ``generator``), the lowest class index, or return ``-1``. An example without any
        annotation is a tie among all ``K`` classes.
    generator : torch.Generator, optional
        Required for ``tie_break="random"``.

    Returns
    -------
    Tensor of int64, shape (N,).

    Examples
    --------
    >>> import torch
    >>> votes = torch.tensor([[0, 0, 1], [2, 1, -1]])
    >>> majority_vote(votes, 3, tie_break="lowest").tolist()
    [0, 1]
    >>> majority_vote(votes, 3, tie_break="abstain").tolist()
    [0, -1]
    """
    k = check_int("num_classes", num_classes, low=2)
    a = check_annotations("annotations", annotations, k)
    check_choice("tie_break", tie_break, TIE_BREAKS)
    if tie_break == "random":
        g = check_generator("generator", generator)
    counts = _vote_counts(a, k)
    top = counts.max(dim=1, keepdim=True).values
    winners = counts == top
    if tie_break == "lowest":
        return winners.to(torch.int64).argmax(dim=1)
    if tie_break == "abstain":
        out = winners.to(torch.int64).argmax(dim=1)
        return torch.where(winners.sum(1) > 1, torch.full_like(out, MISSING_ANNOTATION), out)
    # random: a uniform key per (example, class); the winner with the largest key is uniform
    keys = torch.rand(counts.shape, generator=g, device=g.device, dtype=torch.float64).to(a.device)
    return torch.where(winners, keys, torch.full_like(keys, -1.0)).argmax(dim=1)


@dataclass(frozen=True, eq=False)
class DawidSkeneResult:
    """Result of :func:`dawid_skene`.

    Attributes
    ----------
    labels : Tensor of int64, shape (N,)
        ``argmax`` of the posteriors.
    posteriors : Tensor of float64, shape (N, K)
        ``P(true class = k | annotations)`` for each example.
    confusions : Tensor of float64, shape (R, K, K)
        ``confusions[r, i, j] = P(annotator r says j | true class i)``.
    priors : Tensor of float64, shape (K,)
        Class priors.
    num_iter : int
        EM iterations run.
    converged : bool
        Whether the mean log-likelihood changed by less than ``tol`` before ``max_iter``.
    log_likelihood : float
        Final mean (per example) marginal log-likelihood of the annotations.
    """

    labels: torch.Tensor
    posteriors: torch.Tensor
    confusions: torch.Tensor
    priors: torch.Tensor
    num_iter: int
    converged: bool
    log_likelihood: float


def dawid_skene(annotations: Any, num_classes: int, *, max_iter: int = DAWID_SKENE_MAX_ITER,
                tol: float = DAWID_SKENE_TOL,
                smoothing: float = DAWID_SKENE_SMOOTHING) -> DawidSkeneResult:
    """Aggregate noisy annotations by the EM algorithm of Dawid & Skene (1979).

    Parameters
    ----------
    annotations : Tensor or ndarray of int, shape (N, R)
        ``-1`` marks a missing annotation.
    num_classes : int
    max_iter : int >= 1, default 100
    tol : float >= 0, default 1e-7
        Stop when the mean log-likelihood improves by less than ``tol``.
    smoothing : float >= 0, default 0.01
        Dirichlet pseudo-count added to every confusion and prior cell in the M-step (a MAP
        estimate; 0 gives the plain maximum-likelihood updates of the paper, where a cell never
        observed has probability 0 and its log is ``-inf``).

    Returns
    -------
    DawidSkeneResult

    Notes
    -----
    Latent true class ``z_n`` with prior ``pi``; annotator ``r`` reports ``j`` for class ``i``
    with probability ``theta_r[i, j]``. Initialised with the majority-vote soft counts
    ``T_nk = votes_nk / sum_k votes_nk`` (uniform for examples without annotations), then:

    * M-step: ``pi_k ∝ sum_n T_nk + s``;
      ``theta_r[i, j] ∝ sum_n T_ni [a_nr = j] + s`` (missing annotations do not count);
    * E-step: ``log T_nk = log pi_k + sum_r log theta_r[k, a_nr] - log Z_n``;

    the marginal log-likelihood ``sum_n log Z_n`` never decreases (for ``s = 0``; with ``s > 0``
    the log-posterior does). Work is ``O(M K)`` per iteration for ``M`` observed annotations, so
    sparse crowd matrices with many annotators stay cheap.

    References
    ----------
    .. [1] Dawid & Skene, "Maximum likelihood estimation of observer error-rates using the EM
       algorithm", Journal of the Royal Statistical Society C 28(1), 1979, Sec. 2-3.

    Examples
    --------
    Two reliable annotators and one who always answers ``(true + 1) mod 3``: majority vote
    cannot tell who to trust, Dawid-Skene learns the third annotator's confusion and uses it.

    >>> import torch
    >>> truth = torch.arange(3).repeat(50)
    >>> g = torch.Generator().manual_seed(0)
    >>> good = torch.where(torch.rand(150, generator=g) < 0.7, truth, (truth + 2) % 3)
    >>> votes = torch.stack([truth, good, (truth + 1) % 3], dim=1)
    >>> result = dawid_skene(votes, 3)
    >>> bool((result.labels == truth).all())
    True
    >>> [round(float(p), 2) for p in result.confusions[2, 0]]
    [0.0, 1.0, 0.0]
    """
    k = check_int("num_classes", num_classes, low=2)
    a = check_annotations("annotations", annotations, k).cpu()
    max_iter = check_int("max_iter", max_iter, low=1)
    tol = check_number("tol", tol, low=0.0)
    smoothing = check_number("smoothing", smoothing, low=0.0)
    return _dawid_skene_impl(a, k, max_iter, tol, smoothing)


def _dawid_skene_impl(a: torch.Tensor, k: int, max_iter: int, tol: float,
                      s: float) -> DawidSkeneResult:
    n, r = a.shape
    present = a >= 0
    ex, ann = present.nonzero(as_tuple=True)  # the M observed (example, annotator) pairs
    lab = a[ex, ann]
    votes = _vote_counts(a, k)
    total = votes.sum(1, keepdim=True)
    post = torch.where(total > 0, votes / total.clamp_min(1), torch.full_like(votes, 1.0 / k))
    prev_ll = -math.inf
    converged = False
    ll = -math.inf
    it = 0
    for it in range(1, max_iter + 1):
        # M-step
        priors = post.sum(0) + s
        priors = priors / priors.sum()
        counts = torch.zeros(r * k, k, dtype=torch.float64)  # row (annotator, said j), col true i
        counts.index_add_(0, ann * k + lab, post.index_select(0, ex))
        conf = counts.reshape(r, k, k).transpose(1, 2) + s  # (R, true i, said j)
        conf = conf / conf.sum(2, keepdim=True).clamp_min(1e-300)
        # E-step
        log_conf = conf.clamp_min(1e-300).log()
        log_post = priors.clamp_min(1e-300).log().expand(n, k).clone()
        log_post.index_add_(0, ex, log_conf[ann, :, lab])
        log_z = torch.logsumexp(log_post, dim=1)
        post = (log_post - log_z.unsqueeze(1)).exp()
        ll = float(log_z.mean()) if n else 0.0
        if abs(ll - prev_ll) < tol:
            converged = True
            break
        prev_ll = ll
    return DawidSkeneResult(labels=post.argmax(1), posteriors=post, confusions=conf, priors=priors,
                            num_iter=it, converged=converged, log_likelihood=ll)
