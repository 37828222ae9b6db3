"""Label noise: simulate it, audit labels (find label issues, estimate noise), learn through it."""

__all__: list[str] = []

# --- robust losses, loss correction, transition estimation (losses.py, objectives.py, transition.py)
from robustlab.label_noise.losses import (  # noqa: E402
    backward_corrected_loss,
    bootstrap_hard_loss,
    bootstrap_soft_loss,
    clip_logits,
    forward_corrected_loss,
    gce_loss,
    logitclip_loss,
    mae_loss,
    nce_loss,
    rce_loss,
    sce_loss,
)
from robustlab.label_noise.objectives import (  # noqa: E402  (registers the objectives)
    NCEMAE,
    NCERCE,
    BackwardCorrection,
    BootstrapHard,
    BootstrapSoft,
    ForwardCorrection,
    GeneralizedCrossEntropy,
    LabelSmoothing,
    LogitClip,
    MeanAbsoluteError,
    Mixup,
    NormalizedCrossEntropy,
    ReverseCrossEntropy,
    SymmetricCrossEntropy,
)
from robustlab.label_noise.transition import check_transition, estimate_transition_anchor  # noqa: E402

__all__ += [
    "bootstrap_soft_loss", "bootstrap_hard_loss", "gce_loss", "sce_loss", "nce_loss", "rce_loss",
    "mae_loss", "forward_corrected_loss", "backward_corrected_loss", "logitclip_loss", "clip_logits",
    "LabelSmoothing", "BootstrapSoft", "BootstrapHard", "GeneralizedCrossEntropy",
    "SymmetricCrossEntropy", "NormalizedCrossEntropy", "ReverseCrossEntropy", "MeanAbsoluteError",
    "NCERCE", "NCEMAE", "ForwardCorrection", "BackwardCorrection", "LogitClip", "Mixup",
    "check_transition", "estimate_transition_anchor",
]

# --- simulate label noise (simulate.py, annotators.py, cifarn.py, imbalance.py)
from robustlab.label_noise.annotators import (  # noqa: E402
    DawidSkeneResult,
    annotator_transitions,
    dawid_skene,
    majority_vote,
    simulate_annotators,
)
from robustlab.label_noise.cifarn import CifarNLabels, load_cifar_n  # noqa: E402
from robustlab.label_noise.imbalance import long_tail_counts, long_tail_indices  # noqa: E402
from robustlab.label_noise.simulate import (  # noqa: E402
    NOISE_SPEC_KINDS,
    Diluted,
    NoiseSpec,
    NoisyLabels,
    apply_noise_spec,
    check_transition_matrix,
    cifar10_asymmetric_noise,
    class_map_noise,
    class_map_transition,
    confusion_from_model,
    confusion_from_predictions,
    confusion_noise,
    dilute,
    instance_dependent_noise,
    pair_flip_noise,
    pair_flip_transition,
    parse_noise_spec,
    random_inputs,
    random_labels,
    symmetric_noise,
    symmetric_transition,
    transition_noise,
)

__all__ += [
    "NoisyLabels", "symmetric_noise", "symmetric_transition", "pair_flip_noise",
    "pair_flip_transition", "class_map_noise", "class_map_transition", "cifar10_asymmetric_noise",
    "transition_noise", "check_transition_matrix", "instance_dependent_noise", "confusion_noise",
    "confusion_from_predictions", "confusion_from_model", "Diluted", "dilute", "random_labels",
    "random_inputs", "NoiseSpec", "NOISE_SPEC_KINDS", "parse_noise_spec", "apply_noise_spec",
    "simulate_annotators", "annotator_transitions", "majority_vote", "dawid_skene",
    "DawidSkeneResult", "CifarNLabels", "load_cifar_n", "long_tail_counts", "long_tail_indices",
]

# --- confident learning, same answers as cleanlab 2.x (confident.py, filter.py, rank.py)
from robustlab.label_noise.confident import (  # noqa: E402
    NoiseEstimate,
    calibrate_confident_joint,
    compute_confident_joint,
    estimate_joint,
    estimate_latent,
    estimate_noise,
    num_label_issues,
    per_class_thresholds,
)
from robustlab.label_noise.filter import FILTER_METHODS, find_label_issues, find_label_issues_ranked  # noqa: E402
from robustlab.label_noise.rank import (  # noqa: E402
    SCORE_METHODS,
    get_confidence_weighted_entropy_for_each_label,
    get_label_quality_scores,
    get_normalized_margin_for_each_label,
    get_self_confidence_for_each_label,
    order_label_issues,
)

__all__ += [
    "per_class_thresholds", "compute_confident_joint", "calibrate_confident_joint", "estimate_joint",
    "estimate_latent", "estimate_noise", "NoiseEstimate", "num_label_issues", "find_label_issues",
    "find_label_issues_ranked", "FILTER_METHODS", "get_label_quality_scores",
    "get_self_confidence_for_each_label", "get_normalized_margin_for_each_label",
    "get_confidence_weighted_entropy_for_each_label", "order_label_issues", "SCORE_METHODS",
]

# --- label audit beyond confident learning (oof.py, detectors.py, health.py; probe.py registers
# the scan probe "audit" and is imported by the scan, not here)
from robustlab.label_noise.detectors import (  # noqa: E402
    LabelIssues,
    aum_issues,
    aum_threshold_issues,
    combine_by_rank,
    confident_learning_issues,
    forgetting_issues,
    knn_issues,
    knn_label_distribution,
    multilabel_issues,
    multilabel_quality_scores,
    normalized_ranks,
    recov_issues,
    small_loss_issues,
    train_with_records,
)
from robustlab.label_noise.health import DatasetHealth, dataset_health  # noqa: E402
from robustlab.label_noise.oof import CrossValOutputs, cross_val_outputs, cross_val_pred_probs  # noqa: E402

__all__ += [
    "cross_val_pred_probs", "cross_val_outputs", "CrossValOutputs", "LabelIssues",
    "confident_learning_issues", "train_with_records", "aum_issues", "aum_threshold_issues",
    "small_loss_issues", "forgetting_issues", "knn_label_distribution", "knn_issues", "recov_issues",
    "multilabel_quality_scores", "multilabel_issues", "combine_by_rank", "normalized_ranks",
    "DatasetHealth", "dataset_health",
]

# --- learning with state: sample selection and two-network methods (selection.py, dividemix.py)
from robustlab.label_noise.dividemix import DivideMix, augment, gmm_clean_probability, sharpen  # noqa: E402
from robustlab.label_noise.selection import (  # noqa: E402
    ELR,
    AdaptiveK,
    CoTeaching,
    CoTeachingPlus,
    coteaching_forget_rate,
    num_remembered,
    peer_network,
)

__all__ += [
    "ELR", "CoTeaching", "CoTeachingPlus", "AdaptiveK", "DivideMix", "peer_network",
    "coteaching_forget_rate", "num_remembered", "gmm_clean_probability", "sharpen", "augment",
]
