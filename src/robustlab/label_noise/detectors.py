"""Label-issue detectors beyond K-fold confident learning, with one return type: :class:`LabelIssues`.

* From a single training run, read from the Trainer's per-example records
  (``TrainConfig(record_examples=True)``): area under the margin with threshold samples
  (:func:`aum_threshold_issues`, Pleiss et al., 2020), the plain AUM cut (:func:`aum_issues`),
  small-loss / loss-trajectory scores (:func:`small_loss_issues`) and forgetting events
  (:func:`forgetting_issues`, Toneva et al., 2019).
* From features or embeddings only: k-nearest-neighbour label consistency
  (:func:`knn_issues`, SimiFeat, Zhu et al., 2022).
* From repeated cross-validation: ReCoV (:func:`recov_issues`, Chen et al., 2023).
* Multi-label data: one-vs-rest confident learning (:func:`multilabel_issues`).
* Any of them from ``pred_probs``: confident learning (:func:`confident_learning_issues`).
* Several combined by rank: :func:`combine_by_rank`.

Convention (cleanlab's): ``scores`` are label-quality scores, *lower* means more likely
mislabelled; ``ranked_indices`` lists the flagged examples, worst first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from robustlab._checks import (
    as_tensor,
    check_choice,
    check_finite,
    check_int,
    check_labels,
    check_number,
    check_probability,
    check_tensor,
    fail,
)
from robustlab._constants import (
    AUDIT_DEFAULT_FOLDS,
    AUM_THRESHOLD_PERCENTILE,
    AUM_THRESHOLD_RUNS,
    KNN_CHUNK_ELEMENTS,
    KNN_NEIGHBOURS,
    MULTILABEL_EMA_ALPHA,
    RECOV_ALPHA,
    RECOV_REPEATS,
)
from robustlab._progress import progress as progress_bar
from robustlab.data.dataset import Dataset
from robustlab.data.split import stratified_kfold
from robustlab.errors import InvalidTypeError, ShapeError
from robustlab.label_noise.oof import (
    _TorchSpec,
    check_folds,
    derived_seed,
    resolve_model,
)

__all__ = [
    "LabelIssues",
    "aum_issues",
    "aum_threshold_issues",
    "combine_by_rank",
    "confident_learning_issues",
    "forgetting_issues",
    "knn_issues",
    "knn_label_distribution",
    "multilabel_issues",
    "multilabel_quality_scores",
    "normalized_ranks",
    "recov_issues",
    "small_loss_issues",
    "train_with_records",
]

logger = logging.getLogger("robustlab.label_noise")


# --------------------------------------------------------------------------- result type
@dataclass(frozen=True, eq=False)
class LabelIssues:
    """Which examples a detector flags, and how suspicious every example is.

    Attributes
    ----------
    mask : ndarray of bool, shape (N,)
        ``True`` for examples flagged as likely mislabelled.
    scores : ndarray of float64, shape (N,)
        Label-quality score of every example; lower is more suspicious. The scale depends on
        ``method`` (documented by each detector); only the order is comparable across detectors.
    ranked_indices : ndarray of int64, shape (num_issues,)
        Indices of the flagged examples, most suspicious first.
    method : str
        Detector name, e.g. ``"aum"``, ``"knn-vote"``.
    suggested_labels : ndarray of int64, shape (N,), or None
        The label the detector believes in (e.g. the kNN vote), when it has one.
    threshold : float or None
        Cut-off on ``scores`` used for ``mask`` when the detector has a single one.
    details : dict
        Detector-specific extras (e.g. ``{"thresholds": [...]}`` for AUM runs).
    """

    mask: np.ndarray
    scores: np.ndarray
    ranked_indices: np.ndarray
    method: str
    suggested_labels: np.ndarray | None = None
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def num_issues(self) -> int:
        return int(self.mask.sum())

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def __repr__(self) -> str:
        return (f"LabelIssues(method={self.method!r}, num_issues={self.num_issues}, "
                f"n={len(self)})")


def _issues(mask: np.ndarray, scores: np.ndarray, method: str, *, tiebreak: np.ndarray | None = None,
            suggested: np.ndarray | None = None, threshold: float | None = None,
            details: dict[str, Any] | None = None) -> LabelIssues:
    mask = np.asarray(mask, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    flagged = np.flatnonzero(mask)
    # lexsort sorts by the last key first: score, then the tiebreak, then the index.
    if tiebreak is None:
        order = np.lexsort((flagged, scores[flagged]))
    else:
        order = np.lexsort((flagged, np.asarray(tiebreak)[flagged], scores[flagged]))
    ranked = flagged[order].astype(np.int64)
    for arr in (mask, scores, ranked):
        arr.setflags(write=False)
    if suggested is not None:
        suggested = np.asarray(suggested, dtype=np.int64)
        suggested.setflags(write=False)
    return LabelIssues(mask=mask, scores=scores, ranked_indices=ranked, method=method,
                       suggested_labels=suggested, threshold=threshold, details=dict(details or {}))


# --------------------------------------------------------------------------- confident learning
def confident_learning_issues(
    labels: Any,
    pred_probs: Any,
    *,
    filter_by: str = "prune_by_noise_rate",
    rank_by: str = "self_confidence",
) -> LabelIssues:
    """Confident learning (Northcutt et al., 2021) as a :class:`LabelIssues`.

    ``mask`` is :func:`robustlab.label_noise.find_label_issues` with ``filter_by``; ``scores``
    are :func:`robustlab.label_noise.get_label_quality_scores` with ``method=rank_by``;
    ``suggested_labels`` is ``argmax pred_probs``. Same validation as those functions.

    References
    ----------
    .. [1] Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset
       Labels", JAIR 70, 2021.
    """
    from robustlab.label_noise import find_label_issues, get_label_quality_scores

    mask = np.asarray(find_label_issues(labels, pred_probs, filter_by=filter_by))
    scores = np.asarray(get_label_quality_scores(labels, pred_probs, method=rank_by), dtype=np.float64)
    p = np.asarray(as_tensor("pred_probs", pred_probs).cpu().double().numpy())
    return _issues(mask, scores, f"confident-learning[{filter_by}]", suggested=p.argmax(axis=1),
                   details={"filter_by": filter_by, "rank_by": rank_by})


# --------------------------------------------------------------------------- training dynamics
def train_with_records(
    data: Dataset,
    model: Any,
    *,
    seed: int,
    train_config: Any = None,
) -> Any:
    """Train one model on all of ``data`` with per-example records; return the ``TrainResult``.

    Parameters
    ----------
    data : Dataset
    model : str or ModelConfig
        A robustlab architecture (see :func:`~robustlab.label_noise.cross_val_pred_probs`).
    seed : int
        Seeds the model initialisation.
    train_config : TrainConfig, optional
        Default: the architecture's recipe (:func:`~robustlab.label_noise.oof.default_train_config`).
        ``record_examples`` is switched on whatever it says.

    Returns
    -------
    TrainResult
        ``.records`` holds loss, margin and correctness of every example at every epoch.
    """
    import dataclasses

    spec = resolve_model(data, model, train_config)
    if not isinstance(spec, _TorchSpec):
        fail("model", "an architecture name or a robustlab ModelConfig (training dynamics need the "
             "Trainer)", model, error=InvalidTypeError)
    seed = check_int("seed", seed, low=0)
    config = dataclasses.replace(spec.train_config, record_examples=True)
    return spec.fit(data, seed=seed, config=config)


def _check_records(records: Any) -> Any:
    from robustlab.training import TrainingRecords

    if not isinstance(records, TrainingRecords):
        fail("records", "robustlab.training.TrainingRecords (TrainResult.records of a run with "
             "record_examples=True)", records, error=InvalidTypeError)
    return records


def aum_issues(records: Any, *, threshold: float = 0.0, start: int = 0, end: int | None = None) -> LabelIssues:
    """Area under the margin (AUM) from one run's records, flagged below a fixed ``threshold``.

    Parameters
    ----------
    records : TrainingRecords
        ``(epochs, N)`` margins of the given labels.
    threshold : float, default 0.0
        Examples with ``AUM < threshold`` are flagged (0: the given label is, on average over
        training, not the top logit). :func:`aum_threshold_issues` learns it from threshold
        samples instead.
    start, end : int
        Epoch range ``[start, end)`` averaged (default: all).

    Returns
    -------
    LabelIssues
        ``scores`` are the AUM values (low = suspicious).

    Notes
    -----
    ``AUM_i = (1/T) sum_t (z_{t,i,y_i} - max_{k != y_i} z_{t,i,k})`` over the recorded epochs
    (Pleiss et al., 2020, Eq. 1-2).

    References
    ----------
    .. [1] Pleiss, Zhang, Elenberg & Weinberger, "Identifying Mislabeled Data using the Area Under
       the Margin Ranking", NeurIPS 2020.
    """
    records = _check_records(records)
    threshold = check_number("threshold", threshold)
    aum = records.aum(start=start, end=end).double().numpy()
    return _issues(aum < threshold, aum, "aum", threshold=threshold)


def aum_threshold_issues(
    data: Dataset,
    model: Any,
    *,
    seed: int,
    train_config: Any = None,
    num_runs: int = AUM_THRESHOLD_RUNS,
    percentile: float = AUM_THRESHOLD_PERCENTILE,
    progress: bool | None = None,
) -> LabelIssues:
    """AUM with threshold samples: the full procedure of Pleiss et al. (2020), trained with the Trainer.

    Parameters
    ----------
    data : Dataset
        ``N`` examples, ``K`` classes.
    model : str or ModelConfig
        Architecture trained (with ``K + 1`` outputs) in each run.
    seed : int
        Seeds the choice of threshold samples and each run's initialisation.
    train_config : TrainConfig, optional
        Default: the architecture's recipe. ``record_examples`` is switched on.
    num_runs : int >= 2, default 2
        Training runs, each with a disjoint random set of ``floor(N / (K + 1))`` threshold samples.
        ``num_runs * N / (K + 1)`` must not exceed ``N``.
    percentile : float in (0, 100], default 99
        Percentile of the threshold samples' AUM taken as the cut-off ``alpha``.
    progress : bool, optional
        Progress bar over runs.

    Returns
    -------
    LabelIssues
        ``scores`` = mean over the runs in which the example kept its label of
        ``AUM_r(i) - alpha_r`` (so the cut-off is 0); ``mask = scores <= 0``;
        ``details["thresholds"]`` lists ``alpha_r``.

    Notes
    -----
    Procedure (Pleiss et al., 2020, Sec. 3): pick ``N / (K + 1)`` examples, relabel them to an
    extra fake class ``K`` (they are mislabelled by construction), train a ``K + 1``-class network
    on all the data recording margins, and take ``alpha`` = the 99th percentile of the threshold
    samples' AUM: a real example whose AUM is at most ``alpha`` is flagged. Threshold samples are
    not scored in their own run; repeating with a disjoint set (here ``num_runs`` times) scores
    every example at least once.

    References
    ----------
    .. [1] Pleiss, Zhang, Elenberg & Weinberger, "Identifying Mislabeled Data using the Area Under
       the Margin Ranking", NeurIPS 2020, Sec. 3 ("threshold samples").
    """
    import dataclasses

    spec = resolve_model(data, model, train_config)
    if not isinstance(spec, _TorchSpec):
        fail("model", "an architecture name or a robustlab ModelConfig (AUM needs the Trainer)", model,
             error=InvalidTypeError)
    seed = check_int("seed", seed, low=0)
    n, k = len(data), data.num_classes
    num_runs = check_int("num_runs", num_runs, low=2)
    percentile = check_number("percentile", percentile, low=0.0, high=100.0, low_inclusive=False)
    m = n // (k + 1)
    if m < 1 or num_runs * m > n:
        fail("num_runs", f"at most {n // max(m, 1)} (disjoint sets of N/(K+1) = {m} threshold samples "
             f"among {n} examples)", num_runs)
    perm = np.random.default_rng(seed).permutation(n)
    config = dataclasses.replace(spec.train_config, record_examples=True)
    labels = data.labels
    diff_sum = np.zeros(n)
    counted = np.zeros(n)
    thresholds = []
    with progress_bar("AUM threshold runs", total=num_runs, enabled=progress) as bar:
        for r in range(num_runs):
            chosen = np.sort(perm[r * m:(r + 1) * m])
            relabelled = labels.clone()
            relabelled[torch.from_numpy(chosen)] = k
            fake = Dataset(data.source, relabelled, class_names=(*data.class_names, _fake_class_name(data)),
                           name=data.name, kind=data.kind, validate=False)
            run_model = spec.build(fake, seed=derived_seed(seed, r), num_classes=k + 1)
            from robustlab.training import CrossEntropy, Trainer

            records = Trainer(run_model, CrossEntropy(), config).fit(fake).records
            aum = records.aum().double().numpy()
            alpha = float(np.percentile(aum[chosen], percentile))
            thresholds.append(alpha)
            real = np.ones(n, dtype=bool)
            real[chosen] = False
            diff_sum[real] += aum[real] - alpha
            counted[real] += 1
            bar.advance()
    scores = diff_sum / counted
    return _issues(scores <= 0, scores, "aum-threshold", threshold=0.0,
                   details={"thresholds": thresholds, "num_threshold_samples": m, "percentile": percentile})


def _fake_class_name(data: Dataset) -> str:
    name = "threshold-samples"
    while name in data.class_names:
        name += "_"
    return name


def small_loss_issues(records: Any, *, start: int = 0, end: int | None = None,
                      num_issues: int | None = None) -> LabelIssues:
    """Small-loss / loss-trajectory detector: the mean training loss of each example over epochs.

    Parameters
    ----------
    records : TrainingRecords
    start, end : int
        Epoch range ``[start, end)`` averaged (default: all).
    num_issues : int, optional
        Flag exactly this many highest-loss examples. Default: fit a two-component 1-D Gaussian
        mixture to the mean losses and flag the examples more likely under the high-loss
        component (Arazo et al., 2019; Li et al., 2020).

    Returns
    -------
    LabelIssues
        ``scores`` = minus the mean cross-entropy of the given label over the epochs.

    Notes
    -----
    Networks fit clean examples before memorising noisy ones, so the loss of a mislabelled
    example stays high for longer (the small-loss criterion of co-teaching, Han et al., 2018).
    Averaging over the trajectory rather than reading one epoch makes the score stable. The
    mean losses are min-max scaled to [0, 1] and fitted with scikit-learn's
    ``GaussianMixture(n_components=2, max_iter=20, tol=1e-2, reg_covar=5e-4)`` — DivideMix's
    settings with twice its 10 iterations — and ``random_state=0``, so the result is deterministic.

    References
    ----------
    .. [1] Han et al., "Co-teaching: Robust Training of Deep Neural Networks with Extremely Noisy
       Labels", NeurIPS 2018.
    .. [2] Arazo et al., "Unsupervised Label Noise Modeling and Loss Correction", ICML 2019, Sec. 3.
    .. [3] Li, Socher & Hoi, "DivideMix", ICLR 2020, Sec. 3.1.
    """
    records = _check_records(records)
    check_int("start", start, low=0, high=records.num_epochs - 1)
    if end is not None:
        check_int("end", end, low=start + 1, high=records.num_epochs)
    rows = records.loss[start:end]
    if bool(torch.isnan(rows).any()):
        fail("end", "an epoch range that has been trained", f"[{start}, {end})", describe_got=False)
    loss = rows.double().mean(dim=0).numpy()
    n = loss.shape[0]
    if num_issues is not None:
        num_issues = check_int("num_issues", num_issues, low=0, high=n)
        mask = np.zeros(n, dtype=bool)
        mask[np.lexsort((np.arange(n), -loss))[:num_issues]] = True
        return _issues(mask, -loss, "small-loss")
    return _issues(_gmm_high_component(loss), -loss, "small-loss")


def _gmm_high_component(values: np.ndarray) -> np.ndarray:
    """Flag values more likely under the higher-mean component of a 2-component 1-D GMM."""
    from sklearn.mixture import GaussianMixture

    if values.shape[0] < 2 or float(values.max() - values.min()) <= 0:
        return np.zeros(values.shape[0], dtype=bool)
    x = ((values - values.min()) / (values.max() - values.min()))[:, None]
    gmm = GaussianMixture(n_components=2, max_iter=20, tol=1e-2, reg_covar=5e-4, random_state=0).fit(x)
    high = int(np.argmax(gmm.means_[:, 0]))
    return gmm.predict_proba(x)[:, high] > 0.5


def forgetting_issues(records: Any, *, min_events: int | None = None) -> LabelIssues:
    """Forgetting events (Toneva et al., 2019): examples the network keeps forgetting or never learns.

    Parameters
    ----------
    records : TrainingRecords
    min_events : int >= 1, optional
        Also flag examples with at least this many forgetting events. Default: flag only
        examples never learned (never classified as their given label in any epoch).

    Returns
    -------
    LabelIssues
        ``scores`` = minus the number of forgetting events; never-learned examples count as
        forgotten ``T`` times (more than the ``floor(T/2)`` events possible in ``T`` epochs), the
        paper's "forgotten infinitely often" made finite so the ranking stays usable.
        ``details["events"]`` holds the raw counts.

    Notes
    -----
    A forgetting event of example ``i`` is an epoch ``t`` with ``correct_{t-1, i}`` and not
    ``correct_{t, i}`` (Toneva et al., 2019, Sec. 3); mislabelled examples are forgotten often
    or never learned (Sec. 4). Ties are ranked by mean training loss (higher first).

    References
    ----------
    .. [1] Toneva et al., "An Empirical Study of Example Forgetting during Deep Neural Network
       Learning", ICLR 2019.
    """
    records = _check_records(records)
    events = records.forgetting_events().numpy()
    never = ~records.correct.any(dim=0).numpy()
    t = records.num_epochs
    count = np.where(never, t, events).astype(np.float64)
    mask = never.copy()
    if min_events is not None:
        min_events = check_int("min_events", min_events, low=1)
        mask |= events >= min_events
    loss = records.loss.double().nanmean(dim=0).numpy()
    return _issues(mask, -count, "forgetting", tiebreak=-loss,
                   threshold=None, details={"events": events.tolist(), "never_learned": int(never.sum())})


# --------------------------------------------------------------------------- kNN consistency
def _check_features(features: Any, n: int | None = None) -> torch.Tensor:
    x = check_tensor("features", features, ndim=2, dims="N, F")
    if not x.is_floating_point():
        x = x.double()
    check_finite("features", x)
    if n is not None and x.shape[0] != n:
        raise ShapeError(f"The 'features' parameter must have one row per label ({n}). Got "
                         f"{x.shape[0]} rows instead.", expected=n, got=x.shape[0])
    return x


def nearest_neighbours(features: torch.Tensor, k: int, *, metric: str = "cosine") -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(N, k)`` and similarities (cosine) or distances (euclidean) of each row's k neighbours.

    Self excluded; exact (brute force), computed in chunks of rows on the features' device so at
    most ``KNN_CHUNK_ELEMENTS`` similarities are held at once. Neighbours are ordered nearest
    first.
    """
    x = features.float()
    n = x.shape[0]
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    else:
        sq = (x * x).sum(dim=1)
    idx_out = torch.empty(n, k, dtype=torch.int64, device=x.device)
    val_out = torch.empty(n, k, dtype=x.dtype, device=x.device)
    rows_per_chunk = max(1, KNN_CHUNK_ELEMENTS // max(1, n))
    for s in range(0, n, rows_per_chunk):
        block = x[s:s + rows_per_chunk]
        rows = torch.arange(s, s + block.shape[0], device=x.device)
        if metric == "cosine":
            sim = block @ x.T
        else:  # negative squared distance, so larger is nearer in both cases
            sim = -(sq[s:s + block.shape[0], None] - 2 * block @ x.T + sq[None, :]).clamp_min(0)
        sim[torch.arange(block.shape[0], device=x.device), rows] = -math.inf
        vals, idx = torch.topk(sim, k, dim=1, sorted=True)
        idx_out[s:s + block.shape[0]] = idx
        val_out[s:s + block.shape[0]] = vals if metric == "cosine" else (-vals).sqrt()
    return idx_out, val_out


def knn_label_distribution(features: Any, labels: Any, *, k: int = KNN_NEIGHBOURS,
                           num_classes: int | None = None) -> np.ndarray:
    """Share of each class among every example's ``k`` nearest neighbours (cosine), ``(N, K)``.

    Self excluded. Rows sum to 1; usable as ``pred_probs`` for confident learning.
    """
    labels_t = check_labels("labels", labels, num_classes=num_classes)
    x = _check_features(features, labels_t.shape[0])
    k = check_int("k", k, low=1, high=max(1, labels_t.shape[0] - 1))
    kk = int(labels_t.max()) + 1 if num_classes is None else num_classes
    idx, _ = nearest_neighbours(x, k)
    neigh = labels_t.to(idx.device)[idx]
    counts = torch.zeros(labels_t.shape[0], kk, dtype=torch.float64, device=idx.device)
    counts.scatter_add_(1, neigh, torch.ones_like(neigh, dtype=torch.float64))
    return (counts / k).cpu().numpy()


def knn_issues(
    features: Any,
    labels: Any,
    *,
    k: int = KNN_NEIGHBOURS,
    method: str = "vote",
    num_classes: int | None = None,
) -> LabelIssues:
    """k-nearest-neighbour label consistency on features or embeddings (SimiFeat, Zhu et al., 2022).

    Parameters
    ----------
    features : Tensor or ndarray, shape (N, F)
        Embeddings (e.g. penultimate features of a pretrained or cross-validated model, or
        flattened inputs). Compared by cosine similarity.
    labels : int array, shape (N,)
    k : int, default 10
        Neighbours per example (self excluded).
    method : {"vote", "rank"}, default "vote"
        * ``"vote"`` (SimiFeat-V): flag an example when a class other than its given label
          gets strictly more of its ``k`` neighbours' votes than the given label.
        * ``"rank"`` (SimiFeat-R style): score every example by the share of neighbours sharing
          its label and flag, per class, as many lowest-scored examples as confident learning
          estimates are mislabelled in that class — ``find_label_issues(labels,
          knn_label_distribution, filter_by="prune_by_noise_rate")``.
    num_classes : int, optional
        Default: ``max(labels) + 1``.

    Returns
    -------
    LabelIssues
        ``scores`` = share of the ``k`` neighbours with the example's given label (in [0, 1]);
        ``suggested_labels`` = the neighbours' majority label (ties: lowest class index).

    Notes
    -----
    SimiFeat relies on *k-NN label clusterability*: an example and its nearest neighbours in a
    good feature space share their true label, so the neighbours' noisy labels vote on it.
    Differences from the paper: no random feature augmentation rounds (one round), and the
    ranking variant takes its per-class counts from confident learning on the kNN label
    distribution rather than from the HOC estimate of the noise transition matrix.

    References
    ----------
    .. [1] Zhu, Dong & Liu, "Detecting Corrupted Labels Without Training a Model to Predict",
       ICML 2022, Sec. 3 (SimiFeat-V: Alg. 1 voting; SimiFeat-R: ranking).
    """
    check_choice("method", method, ("vote", "rank"))
    labels_t = check_labels("labels", labels, num_classes=num_classes)
    dist = knn_label_distribution(features, labels_t, k=k, num_classes=num_classes)
    y = labels_t.numpy()
    n = y.shape[0]
    share = dist[np.arange(n), y]
    vote = dist.argmax(axis=1)
    if method == "vote":
        mask = dist.max(axis=1) > share
    else:
        from robustlab.label_noise import find_label_issues

        mask = np.asarray(find_label_issues(y, _smoothed(dist), filter_by="prune_by_noise_rate"))
    return _issues(mask, share, f"knn-{method}", suggested=vote, details={"k": k})


def _smoothed(dist: np.ndarray) -> np.ndarray:
    """Tiny uniform smoothing so every row is a valid probability vector with no exact ties at zero."""
    k = dist.shape[1]
    eps = 1e-6
    return (dist + eps) / (1 + k * eps)


# --------------------------------------------------------------------------- ReCoV
def recov_issues(
    data: Dataset,
    model: Any,
    *,
    seed: int,
    n_splits: int = AUDIT_DEFAULT_FOLDS,
    num_repeats: int = RECOV_REPEATS,
    metric: str = "log_loss",
    alpha: float = RECOV_ALPHA,
    train_config: Any = None,
    progress: bool | None = None,
) -> LabelIssues:
    """ReCoV: repeated cross-validation, counting how often each example sits in the worst fold.

    Parameters
    ----------
    data : Dataset
    model : str, ModelConfig or scikit-learn-style estimator
        As in :func:`~robustlab.label_noise.cross_val_pred_probs`. ReCoV trains
        ``num_repeats * n_splits`` models: a fast estimator is the usual choice.
    seed : int
        Seeds every repetition's folds and models.
    n_splits : int >= 2, default 5
    num_repeats : int >= 1, default 50
        The signal grows with the square root of the repetitions (the paper uses hundreds to
        thousands with fast models).
    metric : {"log_loss", "accuracy"}, default "log_loss"
        Held-out fold performance; the worst fold has the highest mean cross-entropy (or the
        lowest accuracy; ties: the first fold).
    alpha : float in (0, 1), default 0.01
        Flag example ``i`` when ``P(Binomial(R, 1/n_splits) >= c_i) < alpha``, i.e. it sat in
        the worst fold more often than chance explains.
    train_config : TrainConfig, optional
    progress : bool, optional

    Returns
    -------
    LabelIssues
        ``scores`` = minus the fraction of repetitions in which the example was in the worst fold
        (``details["counts"]`` holds the counts ``c_i``); ties are ranked by the mean
        out-of-sample probability of the given label (lower first).

    Notes
    -----
    Each repetition draws new stratified folds; the fold whose held-out performance is worst
    contributes its examples to the *noise histogram*. Noisy labels concentrate in bad folds,
    so their counts exceed the ``R / n_splits`` expected of a clean example (Chen et al., 2023,
    Sec. 2, Alg. 1). The paper reads the histogram by three rules; robustlab uses the one-sided
    binomial test above, which needs no noise-rate guess.

    References
    ----------
    .. [1] Chen, Ramanathan, Xu & Martel, "Detecting Noisy Labels with Repeated
       Cross-Validations", MICCAI 2023 (arXiv:2306.13990).
    """
    from scipy.stats import binom

    spec = resolve_model(data, model, train_config)
    seed = check_int("seed", seed, low=0, high=2**32 - 1)
    num_repeats = check_int("num_repeats", num_repeats, low=1)
    check_choice("metric", metric, ("log_loss", "accuracy"))
    alpha = check_probability("alpha", alpha, allow_zero=False, allow_one=False)
    check_folds(data, n_splits)  # validate before any training
    n = len(data)
    y = data.labels.numpy()
    counts = np.zeros(n, dtype=np.int64)
    p_given = np.zeros(n)
    with progress_bar("ReCoV", total=num_repeats * n_splits, enabled=progress) as bar:
        for r in range(num_repeats):
            rseed = derived_seed(seed, r)
            folds = list(stratified_kfold(data, n_splits=n_splits, seed=rseed))
            perf = []
            for f, (train_idx, test_idx) in enumerate(folds):
                probs, _ = spec.fit_predict(data, train_idx, test_idx, seed=derived_seed(rseed, f),
                                            features=False)
                idx = test_idx.numpy()
                pg = probs[np.arange(idx.shape[0]), y[idx]]
                p_given[idx] += pg
                perf.append(float(np.mean(np.log(np.clip(pg, 1e-12, None)))) if metric == "log_loss"
                            else float(np.mean(probs.argmax(axis=1) == y[idx])))
                bar.advance()
            worst = int(np.argmin(perf))  # lowest mean log-likelihood / accuracy
            counts[folds[worst][1].numpy()] += 1
    pvalue = binom.sf(counts - 1, num_repeats, 1.0 / n_splits)
    mask = pvalue < alpha
    return _issues(mask, -counts / num_repeats, "recov", tiebreak=p_given / num_repeats,
                   details={"counts": counts.tolist(), "num_repeats": num_repeats, "n_splits": n_splits})


# --------------------------------------------------------------------------- multi-label
def _check_multilabel(labels: Any, pred_probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y = check_tensor("labels", labels, ndim=2, dims="N, K")
    if y.is_complex() or not bool(((y == 0) | (y == 1)).all()):
        fail("labels", "a 0/1 matrix (N, K) of given labels", y)
    y = y.to(torch.int64)
    p = check_tensor("pred_probs", pred_probs, ndim=2, dims="N, K")
    if not p.is_floating_point():
        fail("pred_probs", "a float matrix of per-class probabilities", p, error=InvalidTypeError)
    check_finite("pred_probs", p)
    if p.shape != y.shape:
        raise ShapeError(f"The 'pred_probs' parameter must have the shape of 'labels' {tuple(y.shape)}. "
                         f"Got {tuple(p.shape)} instead.", expected=tuple(y.shape), got=tuple(p.shape))
    if p.numel() and (float(p.min()) < 0 or float(p.max()) > 1):
        fail("pred_probs", "per-class probabilities in [0, 1] (one sigmoid output per class)",
             f"values in [{float(p.min()):.4g}, {float(p.max()):.4g}]", describe_got=False)
    return y.cpu().numpy(), p.cpu().double().numpy()


def multilabel_quality_scores(labels: Any, pred_probs: Any, *, alpha: float = MULTILABEL_EMA_ALPHA) -> np.ndarray:
    """Per-example label quality of multi-label data, ``(N,)`` in [0, 1]; lower is worse.

    Parameters
    ----------
    labels : 0/1 int array, shape (N, K)
        ``labels[i, k] = 1`` when class ``k`` is among example ``i``'s given labels.
    pred_probs : float array, shape (N, K)
        Independent per-class probabilities (sigmoid outputs; rows need not sum to 1),
        out-of-sample.
    alpha : float in [0, 1], default 0.8

    Notes
    -----
    One-vs-rest: the per-class quality is the self-confidence of the binary problem,
    ``s_{ik} = p_{ik}`` if ``y_{ik} = 1`` else ``1 - p_{ik}``. The ``K`` scores are sorted in
    descending order and aggregated by the exponential moving average
    ``EMA_1 = s_(1), EMA_t = alpha s_(t) + (1 - alpha) EMA_{t-1}``, which weights the worst
    classes most — cleanlab's ``multilabel_classification.get_label_quality_scores`` defaults.

    References
    ----------
    .. [1] Thyagarajan, Snorrason, Northcutt & Mueller, "Identifying Incorrect Annotations in
       Multi-Label Classification Data", ICLR 2023 workshop (arXiv:2211.13895), Sec. 3.
    """
    y, p = _check_multilabel(labels, pred_probs)
    alpha = check_probability("alpha", alpha)
    s = np.where(y == 1, p, 1.0 - p)
    s_sorted = -np.sort(-s, axis=1)
    ema = s_sorted[:, 0].copy()
    for t in range(1, s_sorted.shape[1]):
        ema = alpha * s_sorted[:, t] + (1 - alpha) * ema
    return ema


def multilabel_issues(labels: Any, pred_probs: Any, *, filter_by: str = "prune_by_noise_rate",
                      alpha: float = MULTILABEL_EMA_ALPHA) -> LabelIssues:
    """Label issues in multi-label data: one-vs-rest confident learning per class.

    Parameters
    ----------
    labels : 0/1 int array, shape (N, K)
    pred_probs : float array, shape (N, K)
        Independent per-class probabilities, out-of-sample.
    filter_by : str, default "prune_by_noise_rate"
        Passed to :func:`robustlab.label_noise.find_label_issues` for each binary problem.
    alpha : float, default 0.8
        EMA weight of :func:`multilabel_quality_scores`.

    Returns
    -------
    LabelIssues
        ``mask[i]`` is True when any class of example ``i`` is flagged by its binary problem
        (``details["per_class"]`` is the ``(N, K)`` boolean matrix); ``scores`` from
        :func:`multilabel_quality_scores`.

    Notes
    -----
    For class ``k`` the binary task has labels ``y_{:,k}`` and ``pred_probs = [1 - p_{:,k},
    p_{:,k}]``; confident learning runs on it unchanged. This is how
    ``cleanlab.multilabel_classification.find_label_issues`` works.

    References
    ----------
    .. [1] Thyagarajan et al., arXiv:2211.13895, Sec. 3.
    """
    from robustlab.label_noise import find_label_issues

    y, p = _check_multilabel(labels, pred_probs)
    scores = multilabel_quality_scores(y, p, alpha=alpha)
    n, k = y.shape
    per_class = np.zeros((n, k), dtype=bool)
    for c in range(k):
        if y[:, c].min() == y[:, c].max():
            continue  # a class always on (or off) has no binary problem to audit
        binary = np.stack([1.0 - p[:, c], p[:, c]], axis=1)
        per_class[:, c] = np.asarray(find_label_issues(y[:, c], binary, filter_by=filter_by))
    return _issues(per_class.any(axis=1), scores, "multilabel-confident-learning",
                   details={"per_class": per_class, "filter_by": filter_by})


# --------------------------------------------------------------------------- ensemble
def normalized_ranks(scores: Any) -> np.ndarray:
    """Rank of each score scaled to [0, 1]: 0 for the lowest (most suspicious), 1 for the highest.

    Ties get their average rank (``scipy.stats.rankdata(method="average")``);
    ``(rank - 1) / (N - 1)``, and 0.5 for every example when ``N = 1``.
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0]
    if n == 1:
        return np.full(1, 0.5)
    return (rankdata(s, method="average") - 1.0) / (n - 1.0)


def combine_by_rank(
    issues: Mapping[str, LabelIssues] | Sequence[LabelIssues],
    *,
    weights: Sequence[float] | None = None,
    num_issues: int | None = None,
) -> LabelIssues:
    """Ensemble of detectors: weighted mean of their normalised score ranks.

    Parameters
    ----------
    issues : mapping name -> LabelIssues, or sequence of LabelIssues
        Results of different detectors on the same ``N`` examples.
    weights : sequence of float >= 0, optional
        One per detector (default: equal). At least one must be positive.
    num_issues : int, optional
        Flag this many lowest combined scores. Default: the median of the detectors'
        ``num_issues`` (rounded half up), so the ensemble flags as many as a typical member.

    Returns
    -------
    LabelIssues
        ``scores[i] = sum_d w_d r_d(i) / sum_d w_d`` with ``r_d`` the normalised rank of
        detector ``d``'s score (:func:`normalized_ranks`; 0 = most suspicious). Ties in the
        combined score go to the lower index. ``suggested_labels`` is the first member's that
        has them; ``details["members"]`` names the members.

    Notes
    -----
    Ranks make scores of different scales comparable (AUM in logits, kNN shares, CL
    probabilities) and are robust to any monotone rescaling of a detector — the usual rank
    aggregation (Borda count) of ensemble outlier detection.
    """
    if isinstance(issues, Mapping):
        names, members = list(issues), list(issues.values())
    elif isinstance(issues, Sequence) and not isinstance(issues, (str, bytes)):
        members = list(issues)
        names = [getattr(m, "method", str(i)) for i, m in enumerate(members)]
    else:
        fail("issues", "a dict or list of LabelIssues", issues, error=InvalidTypeError)
    if not members or any(not isinstance(m, LabelIssues) for m in members):
        fail("issues", "a non-empty dict or list of LabelIssues", issues, error=InvalidTypeError)
    n = len(members[0])
    if any(len(m) != n for m in members):
        fail("issues", f"results on the same {n} examples", [len(m) for m in members])
    if weights is None:
        w = np.ones(len(members))
    else:
        w = np.asarray([check_number("weights", v, low=0.0) for v in weights], dtype=np.float64)
        if w.shape[0] != len(members) or w.sum() <= 0:
            fail("weights", f"{len(members)} non-negative numbers, not all zero", list(weights))
    ranks = np.stack([normalized_ranks(m.scores) for m in members])
    combined = (w[:, None] * ranks).sum(axis=0) / w.sum()
    if num_issues is None:
        num_issues = math.floor(float(np.median([m.num_issues for m in members])) + 0.5)
    num_issues = check_int("num_issues", num_issues, low=0, high=n)
    mask = np.zeros(n, dtype=bool)
    mask[np.lexsort((np.arange(n), combined))[:num_issues]] = True
    suggested = next((m.suggested_labels for m in members if m.suggested_labels is not None), None)
    return _issues(mask, combined, "ensemble", suggested=suggested,
                   details={"members": names, "weights": w.tolist()})

