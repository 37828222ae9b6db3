"""Input corruptions: image (ImageNet-C / CIFAR-C / MNIST-C), frequency-band and tabular; metrics."""

__all__: list[str] = []

# --- ImageNet-C family image corruptions (image.py) ---------------------------------------------
from robustlab.corruptions.image import (  # noqa: E402
    BENCHMARK_CORRUPTIONS,
    CORRUPTION_CATEGORIES,
    EXTRA_CORRUPTIONS,
    IMAGE_CORRUPTIONS,
    IMAGE_PRESETS,
    corrupt,
    preset_for,
)

__all__ += [
    "corrupt", "preset_for", "IMAGE_CORRUPTIONS", "CORRUPTION_CATEGORIES", "BENCHMARK_CORRUPTIONS",
    "EXTRA_CORRUPTIONS", "IMAGE_PRESETS",
]

# --- MNIST-C, frequency-band noise, tabular corruptions, metrics, CIFAR-10-C files, AugMix -------
from robustlab.corruptions.augment import (  # noqa: E402  (registers the training objectives)
    AUGMIX_ALL_OPERATIONS,
    AUGMIX_OPERATIONS,
    AugMix,
    CorruptionAugmentation,
    GaussianAugmentation,
    augmix,
    gaussian_augment,
    jensen_shannon,
)
from robustlab.corruptions.cifar_c import CorruptedWriteSummary, load_cifar_c, write_corrupted  # noqa: E402
from robustlab.corruptions.frequency import (  # noqa: E402
    FrequencyProfile,
    band_noise,
    default_center_frequencies,
    frequency_band_noise,
    spatial_frequency_profile,
)
from robustlab.corruptions.metrics import ALEXNET_ERRORS, CorruptionReport, evaluate_corruptions  # noqa: E402
from robustlab.corruptions.mnist_c import MNIST_C_CORRUPTIONS, corrupt_mnist_c  # noqa: E402
from robustlab.corruptions.tabular import (  # noqa: E402
    IMPUTATIONS,
    TABULAR_CORRUPTIONS,
    categorical_flip,
    corrupt_tabular,
    feature_shuffle,
    missing_values,
    tabular_gaussian_noise,
)

__all__ += [
    "MNIST_C_CORRUPTIONS", "corrupt_mnist_c",
    "band_noise", "frequency_band_noise", "FrequencyProfile", "spatial_frequency_profile",
    "default_center_frequencies",
    "TABULAR_CORRUPTIONS", "IMPUTATIONS", "corrupt_tabular", "tabular_gaussian_noise", "missing_values",
    "feature_shuffle", "categorical_flip",
    "CorruptionReport", "evaluate_corruptions", "ALEXNET_ERRORS",
    "load_cifar_c", "write_corrupted", "CorruptedWriteSummary",
    "augmix", "jensen_shannon", "gaussian_augment", "AugMix", "GaussianAugmentation",
    "CorruptionAugmentation", "AUGMIX_OPERATIONS", "AUGMIX_ALL_OPERATIONS",
]
