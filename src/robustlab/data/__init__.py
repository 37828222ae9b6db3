"""Datasets: the Dataset container, built-ins and on-disk loaders."""

from robustlab.data.dataset import ArraySource, Batch, Dataset, InputSource, TensorSource

__all__ = ["Dataset", "Batch", "InputSource", "TensorSource", "ArraySource"]
