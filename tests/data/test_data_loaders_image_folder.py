"""ImageFolder trees: streamed decoding with Pillow, class naming, resizing, modes and bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import robustlab.data._image_folder as image_folder_module
from robustlab.data import Dataset, ImageFolderSource, InputSource, load_image_folder
from robustlab.errors import DataFormatError, DataNotFoundError, InvalidParameterError, UnknownNameError


def _rgb(rng: np.random.Generator, n: int, h: int = 6, w: int = 5) -> list[np.ndarray]:
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in range(n)]


def _chw(array: np.ndarray) -> torch.Tensor:
    array = array[..., None] if array.ndim == 2 else array
    return torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32) / np.float32(255))


@pytest.fixture
def tree(tmp_path, write_images):
    rng = np.random.default_rng(0)
    arrays = {"dog": _rgb(rng, 3), "cat": _rgb(rng, 2)}  # written in unsorted class order
    write_images(tmp_path / "pets", arrays)
    return tmp_path / "pets", arrays


def test_classes_are_sorted_subfolders_with_exact_pixels(tree) -> None:
    root, arrays = tree
    ds = load_image_folder(root)
    assert ds.class_names == ("cat", "dog") and ds.labels.tolist() == [0, 0, 1, 1, 1]
    assert ds.input_shape == (3, 6, 5) and ds.name == "pets" and ds.kind == "image"
    expected = torch.stack([_chw(a) for a in arrays["cat"] + arrays["dog"]])
    assert torch.equal(ds.tensors()[0], expected)


def test_nothing_is_decoded_at_construction(tree, monkeypatch) -> None:
    calls = []
    real = image_folder_module._decode_image
    monkeypatch.setattr(image_folder_module, "_decode_image", lambda *a: calls.append(a[0]) or real(*a))
    ds = load_image_folder(tree[0])
    assert calls == []
    ds.load([3])
    assert [p.name for p in calls] == ["img_001.png"]


def test_source_implements_the_protocol(tree) -> None:
    source = load_image_folder(tree[0]).source
    assert isinstance(source, ImageFolderSource) and isinstance(source, InputSource)


def test_corrupt_image_fails_only_in_its_batch(tree) -> None:
    root, _ = tree
    (root / "dog" / "img_001.png").write_bytes(b"not a png")
    ds = load_image_folder(root)
    assert ds.load([0, 1, 2])[0].shape == (3, 3, 6, 5)
    with pytest.raises(DataFormatError, match="dog/img_001.png.*cannot be decoded") as info:
        ds.load([3])
    assert "\n" not in str(info.value)


def test_truncated_png_is_a_format_error(tree) -> None:
    root, _ = tree
    path = root / "cat" / "img_000.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataFormatError, match="img_000.png"):
        load_image_folder(root, size=(6, 5)).load([0])


def test_corrupt_first_image_fails_when_its_size_is_needed(tree) -> None:
    root, _ = tree
    (root / "cat" / "img_000.png").write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="cat/img_000.png"):
        load_image_folder(root)


def test_resize_matches_pillow_bilinear(tree) -> None:
    root, arrays = tree
    ds = load_image_folder(root, size=(3, 4))
    assert ds.input_shape == (3, 3, 4)
    reference = np.asarray(Image.fromarray(arrays["cat"][1]).resize((4, 3), Image.Resampling.BILINEAR))
    assert torch.equal(ds.load([1])[0][0], _chw(reference))


def test_images_of_other_sizes_are_resized_to_the_first(tmp_path, write_images) -> None:
    rng = np.random.default_rng(1)
    write_images(tmp_path / "t", {"a": _rgb(rng, 1, 6, 5), "b": _rgb(rng, 1, 9, 9)})
    assert load_image_folder(tmp_path / "t").load([0, 1])[0].shape == (2, 3, 6, 5)


def test_greyscale_images_give_one_channel(tmp_path, write_images) -> None:
    rng = np.random.default_rng(2)
    grey = [rng.integers(0, 256, size=(4, 4), dtype=np.uint8) for _ in range(2)]
    write_images(tmp_path / "g", {"x": grey, "y": grey[:1]})
    ds = load_image_folder(tmp_path / "g")
    assert ds.input_shape == (1, 4, 4)
    assert torch.equal(ds.load([1])[0][0], _chw(grey[1]))


def test_forced_mode_l_matches_pillow_convert(tree) -> None:
    root, arrays = tree
    ds = load_image_folder(root, mode="L")
    reference = np.asarray(Image.fromarray(arrays["dog"][2]).convert("L"))
    assert ds.input_shape == (1, 6, 5) and torch.equal(ds.load([4])[0][0], _chw(reference))


def test_jpeg_and_upper_case_extensions(tmp_path, write_images) -> None:
    rng = np.random.default_rng(3)
    write_images(tmp_path / "j", {"a": _rgb(rng, 2)}, ext=".JPG")
    (tmp_path / "j" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "j" / "a" / ".hidden.png").write_bytes(b"junk")
    ds = load_image_folder(tmp_path / "j")
    x = ds.tensors()[0]
    assert len(ds) == 2 and x.shape == (2, 3, 6, 5) and 0 <= float(x.min()) <= float(x.max()) <= 1


def test_nested_files_belong_to_their_top_class(tmp_path, write_images) -> None:
    rng = np.random.default_rng(4)
    write_images(tmp_path / "n", {"a": _rgb(rng, 1), "a/deeper": _rgb(rng, 1), "b": _rgb(rng, 1)})
    ds = load_image_folder(tmp_path / "n", split="all")
    assert ds.class_names == ("a", "b") and ds.labels.tolist() == [0, 0, 1]


def test_train_test_folders_share_class_indices(tmp_path, write_images) -> None:
    rng = np.random.default_rng(5)
    write_images(tmp_path / "s" / "train", {"ant": _rgb(rng, 2), "bee": _rgb(rng, 2), "cow": _rgb(rng, 1)})
    write_images(tmp_path / "s" / "test", {"bee": _rgb(rng, 1), "cow": _rgb(rng, 2)})
    train = load_image_folder(tmp_path / "s", split="train")
    test = load_image_folder(tmp_path / "s", split="test")
    everything = load_image_folder(tmp_path / "s", split="all")
    assert train.class_names == test.class_names == ("ant", "bee", "cow")
    assert train.labels.tolist() == [0, 0, 1, 1, 2] and test.labels.tolist() == [1, 2, 2]
    assert len(everything) == 8


def test_single_tree_train_and_test_are_a_stratified_holdout(tmp_path, write_images) -> None:
    rng = np.random.default_rng(6)
    write_images(tmp_path / "h", {"a": _rgb(rng, 5, 2, 2), "b": _rgb(rng, 5, 2, 2)})
    train = load_image_folder(tmp_path / "h", split="train")
    test = load_image_folder(tmp_path / "h", split="test")
    assert train.class_counts().tolist() == [4, 4] and test.class_counts().tolist() == [1, 1]
    joined = torch.cat([train.tensors()[0], test.tensors()[0]])
    assert len(torch.unique(joined.flatten(1), dim=0)) == 10  # disjoint parts


def test_folder_without_subfolders(tmp_path) -> None:
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataFormatError, match="flat.*no subfolders"):
        load_image_folder(tmp_path / "flat")


def test_subfolders_without_images(tmp_path) -> None:
    (tmp_path / "e" / "a").mkdir(parents=True)
    (tmp_path / "e" / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataFormatError, match="no image files"):
        load_image_folder(tmp_path / "e")


def test_class_folder_without_images_is_named(tree) -> None:
    root, _ = tree
    (root / "emu").mkdir()
    with pytest.raises(DataFormatError, match=r"pets.*no image files in class folder\(s\) \['emu'\]"):
        load_image_folder(root)


def test_missing_root(tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match="absent"):
        load_image_folder(tmp_path / "absent")


def test_deleted_file_is_reported_as_missing(tree) -> None:
    root, _ = tree
    ds = load_image_folder(root)
    (root / "dog" / "img_002.png").unlink()
    with pytest.raises(DataNotFoundError, match="'img_002.png'"):
        ds.load([4])


def test_bad_mode_and_size(tree) -> None:
    with pytest.raises(UnknownNameError, match="'mode'"):
        load_image_folder(tree[0], mode="CMYK")
    with pytest.raises(InvalidParameterError, match="'size'"):
        load_image_folder(tree[0], size=(0, 4))


def test_source_can_be_used_directly(tree) -> None:
    root, arrays = tree
    source = ImageFolderSource([root / "cat" / "img_000.png"], size=(6, 5))
    ds = Dataset(source, torch.tensor([0]))
    assert torch.equal(ds.tensors()[0][0], _chw(arrays["cat"][0]))
