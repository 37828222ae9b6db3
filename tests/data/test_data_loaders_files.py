"""Single-file formats: .npz arrays and CSV tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.data import load_csv, load_npz
from robustlab.errors import DataFormatError, DataNotFoundError, UnknownNameError


def _u8(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _scaled(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / np.float32(255))


# ------------------------------------------------------------------ .npz
def test_npz_nchw_uint8(tmp_path) -> None:
    x, y = _u8((6, 3, 4, 5)), np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_npz(tmp_path / "d.npz")
    assert ds.input_shape == (3, 4, 5) and ds.name == "d" and ds.kind == "image"
    assert torch.equal(ds.tensors()[0], _scaled(x)) and ds.labels.tolist() == y.tolist()


def test_npz_nhwc_is_detected_and_transposed(tmp_path) -> None:
    x = _u8((4, 6, 5, 3))
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]))
    ds = load_npz(tmp_path / "d.npz")
    assert ds.input_shape == (3, 6, 5)
    assert torch.equal(ds.tensors()[0], _scaled(x.transpose(0, 3, 1, 2)))


def test_npz_explicit_layout_overrides_detection(tmp_path) -> None:
    x = _u8((4, 3, 5, 3))  # ambiguous: auto reads NCHW
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(4, dtype=np.int64))
    assert load_npz(tmp_path / "d.npz").input_shape == (3, 5, 3)
    ds = load_npz(tmp_path / "d.npz", layout="nhwc")
    assert ds.input_shape == (3, 3, 5) and torch.equal(ds.tensors()[0], _scaled(x.transpose(0, 3, 1, 2)))


def test_npz_greyscale_three_dimensional(tmp_path) -> None:
    x = _u8((3, 4, 4))
    np.savez(tmp_path / "g.npz", x=x, y=np.array([1, 0, 1]))
    ds = load_npz(tmp_path / "g.npz")
    assert ds.input_shape == (1, 4, 4) and torch.equal(ds.tensors()[0], _scaled(x[:, None]))


def test_npz_float_images_and_stored_class_names(tmp_path) -> None:
    x = np.random.default_rng(1).random((4, 1, 2, 2))
    np.savez(tmp_path / "f.npz", x=x, y=np.array([0, 1, 1, 0]), class_names=np.array(["neg", "pos", "other"]))
    ds = load_npz(tmp_path / "f.npz")
    assert ds.class_names == ("neg", "pos", "other")
    assert torch.equal(ds.tensors()[0], torch.from_numpy(x.astype(np.float32)))


def test_npz_string_labels_map_to_sorted_names(tmp_path) -> None:
    np.savez(tmp_path / "s.npz", x=np.zeros((4, 2)), y=np.array(["zebra", "ant", "zebra", "bee"]))
    ds = load_npz(tmp_path / "s.npz")
    assert ds.class_names == ("ant", "bee", "zebra") and ds.labels.tolist() == [2, 0, 2, 1]


def test_npz_tabular_keeps_raw_values(tmp_path) -> None:
    x = np.array([[1.5, -200.0], [3.0, 7.0]])
    np.savez(tmp_path / "t.npz", x=x, y=np.array([0, 1]))
    ds = load_npz(tmp_path / "t.npz")
    assert ds.kind == "tabular" and ds.tensors()[0].tolist() == [[1.5, -200.0], [3.0, 7.0]]


def test_npz_with_train_and_test_arrays(tmp_path) -> None:
    x_train, x_test = _u8((5, 4, 4), 1), _u8((2, 4, 4), 2)
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=np.arange(5), x_test=x_test, y_test=np.array([4, 1]))
    train = load_npz(tmp_path / "mnist.npz", split="train")
    test = load_npz(tmp_path / "mnist.npz", split="test")
    both = load_npz(tmp_path / "mnist.npz")
    assert torch.equal(test.tensors()[0], _scaled(x_test[:, None])) and test.labels.tolist() == [4, 1]
    assert len(train) == 5 and len(both) == 7
    assert torch.equal(both.tensors()[0], _scaled(np.concatenate([x_train, x_test])[:, None]))


def test_npz_single_set_split_is_a_holdout(tmp_path) -> None:
    np.savez(tmp_path / "h.npz", x=np.arange(20.0).reshape(10, 2), y=np.arange(10) % 2)
    train, test = load_npz(tmp_path / "h.npz", split="train"), load_npz(tmp_path / "h.npz", split="test")
    assert len(train) == 8 and len(test) == 2 and test.class_counts().tolist() == [1, 1]
    ids = train.tensors()[0][:, 0].tolist() + test.tensors()[0][:, 0].tolist()
    assert sorted(ids) == list(np.arange(0.0, 20.0, 2.0))


def test_npz_without_x(tmp_path) -> None:
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 2)), y=np.zeros(2, dtype=np.int64))
    with pytest.raises(DataFormatError, match=r"'x' and 'y'.*bad.npz.*\['images', 'y'\]"):
        load_npz(tmp_path / "bad.npz")


def test_npz_with_object_array_is_refused(tmp_path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2, dtype=np.int64))
    with pytest.raises(DataFormatError, match="obj.npz.*Python objects"):
        load_npz(tmp_path / "obj.npz")


def test_truncated_npz(tmp_path) -> None:
    np.savez(tmp_path / "cut.npz", x=_u8((50, 3, 8, 8)), y=np.zeros(50, dtype=np.int64))
    data = (tmp_path / "cut.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="cut.npz.*cannot be read") as info:
        load_npz(tmp_path / "cut.npz")
    assert "\n" not in str(info.value)


def test_text_file_named_npz(tmp_path) -> None:
    (tmp_path / "fake.npz").write_text("hello")
    with pytest.raises(DataFormatError, match="fake.npz"):
        load_npz(tmp_path / "fake.npz")


def test_npy_content_named_npz(tmp_path) -> None:
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npz").write_bytes((tmp_path / "single.npy").read_bytes())
    with pytest.raises(DataFormatError, match="single.npz.*not an .npz archive"):
        load_npz(tmp_path / "single.npz")


def test_missing_npz(tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match=f"'absent.npz' in '{tmp_path}'"):
        load_npz(tmp_path / "absent.npz")


@pytest.mark.parametrize("y, match", [
    (np.array([0.0, 1.0, 1.0]), "'y' has dtype float64"),
    (np.array([0, 1]), r"'y' is .*\(2,\).*for 3 examples"),
    (np.array([0, -1, 1]), r"\[-1, 1\]"),
])
def test_npz_bad_labels(tmp_path, y, match) -> None:
    np.savez(tmp_path / "y.npz", x=np.zeros((3, 2)), y=y)
    with pytest.raises(DataFormatError, match=f"y.npz.*{match}"):
        load_npz(tmp_path / "y.npz")


def test_npz_label_beyond_stored_class_names(tmp_path) -> None:
    np.savez(tmp_path / "n.npz", x=np.zeros((2, 2)), y=np.array([0, 2]), class_names=np.array(["a", "b"]))
    with pytest.raises(DataFormatError, match=r"n.npz.*\[0, 1\]"):
        load_npz(tmp_path / "n.npz")


@pytest.mark.parametrize("x, match", [
    (np.full((2, 1, 2, 2), 2.0), r"values in \[2, 2\]"),
    (np.full((2, 1, 2, 2), np.nan), "NaN"),
    (np.zeros((2, 1, 2, 2), dtype=np.int32), "dtype int32"),
    (np.zeros((2, 1, 1, 2, 2), dtype=np.uint8), "'x' is an array of shape"),
])
def test_npz_bad_images(tmp_path, x, match) -> None:
    np.savez(tmp_path / "x.npz", x=x, y=np.array([0, 1]))
    with pytest.raises(DataFormatError, match=f"x.npz.*{match}"):
        load_npz(tmp_path / "x.npz")


def test_npz_bad_layout(tmp_path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2)), y=np.array([0, 1]))
    with pytest.raises(UnknownNameError, match="'layout'"):
        load_npz(tmp_path / "d.npz", layout="chw")


# ------------------------------------------------------------------ CSV
def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_numeric_labels(tmp_path) -> None:
    path = _write(tmp_path / "t.csv", "a,label,b\n1.5,0,2\n-3,2,4e2\n0,1,0\n")
    ds = load_csv(path)
    assert ds.tensors()[0].tolist() == [[1.5, 2.0], [-3.0, 400.0], [0.0, 0.0]]
    assert ds.labels.tolist() == [0, 2, 1] and ds.class_names == ("0", "1", "2")
    assert ds.kind == "tabular" and ds.name == "t"


def test_csv_string_labels_map_to_sorted_class_names(tmp_path) -> None:
    path = _write(tmp_path / "s.csv", "x,species\n1,setosa\n2,virginica\n3,setosa\n4,versicolor\n")
    ds = load_csv(path, label_column="species")
    assert ds.class_names == ("setosa", "versicolor", "virginica") and ds.labels.tolist() == [0, 2, 0, 1]


def test_csv_float_written_integer_labels(tmp_path) -> None:
    path = _write(tmp_path / "f.csv", "x,label\n1,10.0\n2,2.0\n")
    ds = load_csv(path)
    assert ds.labels.tolist() == [10, 2] and ds.num_classes == 11


def test_csv_delimiter_and_bom(tmp_path) -> None:
    (tmp_path / "b.csv").write_bytes("\ufefflabel;x;y\n1;0.5;2\n0;1;3\n".encode("utf-8"))
    ds = load_csv(tmp_path / "b.csv", delimiter=";")
    assert ds.labels.tolist() == [1, 0] and ds.tensors()[0].tolist() == [[0.5, 2.0], [1.0, 3.0]]


def test_csv_without_label_column_lists_columns(tmp_path) -> None:
    path = _write(tmp_path / "n.csv", "x,y,target\n1,2,0\n")
    with pytest.raises(DataFormatError, match=r"n.csv.*\['x', 'y', 'target'\]"):
        load_csv(path)


def test_csv_non_numeric_feature_names_row_and_column(tmp_path) -> None:
    path = _write(tmp_path / "bad.csv", "x,y,label\n1,2,0\n3,abc,1\n")
    with pytest.raises(DataFormatError, match=r"bad.csv.*row 3, column 'y' holds 'abc'"):
        load_csv(path)


@pytest.mark.parametrize("value", ["nan", "inf", ""])
def test_csv_non_finite_or_empty_feature(tmp_path, value) -> None:
    path = _write(tmp_path / "v.csv", f"x,label\n1,0\n{value},1\n")
    with pytest.raises(DataFormatError, match="v.csv.*row 3"):
        load_csv(path)


def test_csv_ragged_row(tmp_path) -> None:
    path = _write(tmp_path / "r.csv", "x,y,label\n1,2,0\n3,1\n")
    with pytest.raises(DataFormatError, match="r.csv.*row 3 has 2 fields, the header 3"):
        load_csv(path)


@pytest.mark.parametrize("text, match", [("", "empty"), ("x,label\n", "only a header"),
                                         ("label\n1\n", "only column is 'label'"), ("x,label\n1,\n", "empty label"),
                                         ("x,label\n1,-2\n", r"\[-2, -2\]")])
def test_csv_degenerate_files(tmp_path, text, match) -> None:
    path = _write(tmp_path / "d.csv", text)
    with pytest.raises(DataFormatError, match=f"d.csv.*{match}"):
        load_csv(path)


def test_csv_not_utf8(tmp_path) -> None:
    (tmp_path / "l.csv").write_bytes(b"x,label\n\xff\xfe,1\n")
    with pytest.raises(DataFormatError, match="l.csv.*UTF-8"):
        load_csv(tmp_path / "l.csv")


def test_missing_csv(tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match="'nope.csv'"):
        load_csv(tmp_path / "nope.csv")
