"""Tabular data in CSV files with a header row and a label column."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch

from robustlab._constants import CSV_LABEL_COLUMN
from robustlab.data._files import as_path, bad_file, check_file_labels, check_split, holdout, missing
from robustlab.data.dataset import Dataset


def load_csv(
    path: str | os.PathLike[str],
    *,
    split: str = "all",
    label_column: str = CSV_LABEL_COLUMN,
    delimiter: str = ",",
    name: str | None = None,
) -> Dataset:
    """A tabular dataset from a CSV file with a header row.

    Parameters
    ----------
    path : str or path
        UTF-8 text; the first row names the columns.
    split : {"train", "test", "all"}, default "all"
        ``"train"``/``"test"``: the hold-out of the module docstring.
    label_column : str, default "label"
        Column holding the class. Integer labels (``3``, ``3.0``) are class indices (class names
        ``"0"`` .. ``str(max)``); any other text maps to class names sorted as strings.
    delimiter : str, default ","
    name : str, optional
        Default: the file name without ``.csv``.

    Returns
    -------
    Dataset
        Every other column is a numeric feature, float32 ``(N, D)`` kept as written (not scaled),
        kind ``"tabular"``.
    """
    split = check_split(split)
    path = as_path("path", path)
    if not path.is_file():
        missing("path", "an existing CSV file", path)
    header, rows = _read_csv_rows(path, delimiter)
    if label_column not in header:
        bad_file("path", f"a CSV file with a label column {label_column!r}", path,
                 f"its columns are {header[:20]}{' ...' if len(header) > 20 else ''}")
    if len(header) < 2:
        bad_file("path", "a CSV file with at least one feature column besides the label", path,
                 f"its only column is {header[0]!r}")
    label_at = header.index(label_column)
    features = _csv_features(path, header, rows, label_at)
    labels, class_names = _csv_labels(path, [row[label_at] for row in rows], label_column)
    dataset = Dataset(features, labels, class_names=class_names, name=name or path.stem, kind="tabular")
    return holdout(dataset, split)


def _read_csv_rows(path: Path, delimiter: str) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            table = [row for row in csv.reader(fh, delimiter=delimiter) if row]
    except UnicodeDecodeError as exc:
        bad_file("path", "a UTF-8 CSV file", path, f"not UTF-8 text: {exc.reason} at byte {exc.start}")
    except (OSError, csv.Error) as exc:
        bad_file("path", "a readable CSV file", path, f"cannot be parsed: {exc}")
    if not table:
        bad_file("path", "a CSV file with a header row", path, "empty")
    header = [h.strip() for h in table[0]]
    for line, row in enumerate(table[1:], start=2):
        if len(row) != len(header):
            bad_file("path", "a CSV file whose rows all have as many fields as the header", path,
                     f"row {line} has {len(row)} fields, the header {len(header)}")
    if len(table) == 1:
        bad_file("path", "a CSV file with at least one data row", path, "only a header")
    return header, table[1:]


def _csv_features(path: Path, header: list[str], rows: list[list[str]], label_at: int) -> torch.Tensor:
    columns = [j for j in range(len(header)) if j != label_at]
    values = np.empty((len(rows), len(columns)), dtype=np.float64)
    for i, row in enumerate(rows):
        for k, j in enumerate(columns):
            values[i, k] = _csv_number(path, row[j], i + 2, header[j])
    return torch.from_numpy(values.astype(np.float32))


def _csv_number(path: Path, text: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        bad_file("path", "a CSV file whose feature columns are finite numbers", path,
                 f"row {line}, column {column!r} holds {text!r}")
    return value


def _csv_labels(path: Path, texts: list[str], column: str) -> tuple[torch.Tensor, tuple[str, ...]]:
    texts = [t.strip() for t in texts]
    if any(t == "" for t in texts):
        line = texts.index("") + 2
        bad_file("path", f"a CSV file with a label in every row of column {column!r}", path,
                 f"row {line} has an empty label")
    indices = [_integer_or_none(t) for t in texts]
    if all(i is not None for i in indices):
        labels = np.asarray(indices, dtype=np.int64)
        check_file_labels("path", "a CSV file with non-negative integer or text labels", path, labels,
                          int(labels.max()) + 1)
        return torch.from_numpy(labels), tuple(str(c) for c in range(int(labels.max()) + 1))
    class_names = sorted(set(texts))
    lookup = {c: i for i, c in enumerate(class_names)}
    return torch.tensor([lookup[t] for t in texts], dtype=torch.int64), tuple(class_names)


def _integer_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None
