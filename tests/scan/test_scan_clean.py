"""The clean probe on hand-made models and data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

from robustlab.errors import ModelOutputError
from robustlab.scan import build_probe
from scan_testkit import PredictInput, WrongOutput, predicted_dataset

PREDS = [0, 1, 2, 1, 0, 2, 2, 1]
LABELS = [0, 1, 2, 2, 0, 1, 2, 1]  # 6 of 8 right: accuracy exactly 0.75


def _run(model, data):
    return build_probe("clean").run(model, data, job={}, generator=torch.Generator().manual_seed(0))


def _rows(result):
    return {(r.metric, tuple(sorted(r.params.items()))): r for r in result.rows}


def test_known_accuracy_and_confusion_matrix():
    data = predicted_dataset(PREDS, LABELS, class_names=["cat", "dog", "eel"])
    result = _run(PredictInput(3), data)
    rows = _rows(result)
    assert rows[("accuracy", ())].value == 0.75
    assert rows[("accuracy", ())].headline
    assert rows[("num_examples", ())].value == 8
    per_class = {name: rows[("class_accuracy", (("class", name),))].value for name in ("cat", "dog", "eel")}
    assert per_class == {"cat": 1.0, "dog": 2 / 3, "eel": 2 / 3}
    assert rows[("balanced_accuracy", ())].value == pytest.approx(balanced_accuracy_score(LABELS, PREDS))
    assert rows[("macro_f1", ())].value == pytest.approx(f1_score(LABELS, PREDS, average="macro"))
    (table,) = result.tables
    assert table.columns == ("true \\ predicted", "cat", "dog", "eel")
    assert table.rows == (("cat", 2, 0, 0), ("dog", 0, 2, 1), ("eel", 0, 1, 2))
    expected = confusion_matrix(LABELS, PREDS)
    assert np.array_equal(np.array([r[1:] for r in table.rows]), expected)
    assert "6 of 8" in result.summary


def test_timing_rows_are_positive_and_consistent():
    rows = _rows(_run(PredictInput(3), predicted_dataset(PREDS, LABELS)))
    ms, throughput = rows[("time_per_example", ())], rows[("throughput", ())]
    assert ms.unit == "ms" and throughput.unit == "examples/s"
    assert ms.value > 0 and throughput.value > 0
    assert ms.value * throughput.value == pytest.approx(1000.0, rel=1e-6)


def test_class_without_examples_is_nan_and_left_out_of_balanced_accuracy():
    preds, labels = [0, 1, 1, 0], [0, 1, 0, 0]
    rows = _rows(_run(PredictInput(3), predicted_dataset(preds, labels, class_names=["a", "b", "c"])))
    assert math.isnan(rows[("class_accuracy", (("class", "c"),))].value)
    assert rows[("balanced_accuracy", ())].value == pytest.approx((2 / 3 + 1) / 2)


def test_figure_escapes_class_names():
    evil = "<script>alert(1)</script>"
    result = _run(PredictInput(3), predicted_dataset(PREDS, LABELS, class_names=["a", evil, "c"]))
    (figure,) = result.figures
    assert figure.svg.startswith("<svg")
    assert "<script" not in figure.svg.lower()
    assert "&lt;script&gt;" in figure.svg


@pytest.mark.parametrize("k, match", [(5, "3 columns"), (None, r"shape \(N, K\)")])
def test_wrong_model_output_raises_one_line_model_output_error(k, match):
    with pytest.raises(ModelOutputError, match=match) as info:
        _run(WrongOutput(k), predicted_dataset(PREDS, LABELS))
    assert "\n" not in str(info.value)


def test_model_mode_is_restored():
    model = PredictInput(3).train()
    _run(model, predicted_dataset(PREDS, LABELS))
    assert model.training
