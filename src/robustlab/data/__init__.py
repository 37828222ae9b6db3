"""Datasets: the Dataset container, built-ins and on-disk loaders.

* :class:`Dataset` — inputs behind an input source (in-memory tensor, uint8 array or memmap, image
  files decoded per batch), int64 labels, class names.
* Built-ins (no download): :func:`load_builtin` with ``"digits"``, ``"wine"``, ``"breast-cancer"``,
  ``"synthetic"`` (:func:`make_synthetic` gives the Bayes-optimal classifier too).
* Loaders: :func:`load_dataset` detects CIFAR-10/100, MNIST IDX, ImageFolder, .npz and CSV.
* Splits: :func:`train_test_split`, :func:`stratified_kfold` (scikit-learn on indices).
"""

from robustlab.data.builtins import (
    MinMaxScaling,
    SyntheticTask,
    builtin_names,
    load_breast_cancer,
    load_builtin,
    load_digits,
    load_wine,
    make_synthetic,
    tabular_scaling,
)
from robustlab.data.dataset import (
    ArraySource,
    Batch,
    Dataset,
    InputSource,
    TensorSource,
)
from robustlab.data.loaders import (
    ImageFolderSource,
    detect_format,
    has_test_split,
    load_cifar10,
    load_cifar100,
    load_csv,
    load_dataset,
    load_image_folder,
    load_mnist,
    load_npz,
)
from robustlab.data.split import stratified_halves, stratified_kfold, train_test_split

__all__ = [
    "Dataset",
    "Batch",
    "InputSource",
    "TensorSource",
    "ArraySource",
    "ImageFolderSource",
    "builtin_names",
    "load_builtin",
    "load_digits",
    "load_wine",
    "load_breast_cancer",
    "tabular_scaling",
    "MinMaxScaling",
    "make_synthetic",
    "SyntheticTask",
    "load_dataset",
    "detect_format",
    "has_test_split",
    "load_cifar10",
    "load_cifar100",
    "load_mnist",
    "load_image_folder",
    "load_npz",
    "load_csv",
    "stratified_halves",
    "train_test_split",
    "stratified_kfold",
]
