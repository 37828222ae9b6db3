"""CIFAR-10N / CIFAR-100N loader on files written here (the released layout), and malformed files."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from robustlab.errors import DataFormatError, DataNotFoundError
from robustlab.label_noise import NoisyLabels, dawid_skene, load_cifar_n

N = 500


def _cifar10n(rng: np.random.Generator) -> dict[str, np.ndarray]:
    clean = rng.integers(0, 10, N)
    out = {"clean_label": clean}
    for key, rate in (("random_label1", 0.17), ("random_label2", 0.18), ("random_label3", 0.18)):
        flip = rng.random(N) < rate
        out[key] = np.where(flip, (clean + rng.integers(1, 10, N)) % 10, clean)
    votes = np.stack([out[f"random_label{i}"] for i in (1, 2, 3)], 1)
    out["aggre_label"] = np.array([np.bincount(v, minlength=10).argmax() for v in votes])
    wrong = votes != clean[:, None]
    out["worse_label"] = np.where(wrong.any(1), votes[np.arange(N), wrong.argmax(1)], clean)
    return out


@pytest.fixture()
def c10(tmp_path) -> tuple[os.PathLike, dict[str, np.ndarray]]:
    labels = _cifar10n(np.random.default_rng(0))
    path = tmp_path / "CIFAR-10_human.pt"
    torch.save(labels, path)  # the release stores NumPy arrays in a torch-saved dict
    return path, labels


def test_cifar10n_pt_with_numpy_arrays(c10):
    path, labels = c10
    out = load_cifar_n(path)
    assert out.variant == "cifar10n" and out.num_classes == 10
    assert set(out.labels) == set(labels)
    for k, v in labels.items():
        assert out.labels[k].dtype == torch.int64 and np.array_equal(out.labels[k].numpy(), v)
    rates = out.noise_rates()
    assert rates["worse_label"] >= rates["random_label1"] >= 0.1
    assert rates["aggre_label"] < rates["random_label1"]
    noisy = out.as_noisy_labels("worse_label")
    assert isinstance(noisy, NoisyLabels)
    assert torch.equal(noisy.noise_mask, out.labels["worse_label"] != out.clean)
    annotations = out.annotations()
    assert annotations.shape == (N, 3)
    ds = dawid_skene(annotations, 10)
    assert float((ds.labels == out.clean).double().mean()) > 0.9
    # a folder holding the released name works too
    assert load_cifar_n(path.parent).variant == "cifar10n"


def test_cifar100n_tensors_npy_and_npz(tmp_path):
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 100, N)
    data = {"clean_label": clean, "noisy_label": (clean + (rng.random(N) < 0.4)) % 100,
            "clean_coarse_label": clean // 5, "noisy_coarse_label": clean // 5}
    torch.save({k: torch.from_numpy(v) for k, v in data.items()}, tmp_path / "CIFAR-100_human.pt")
    out = load_cifar_n(tmp_path / "CIFAR-100_human.pt", num_examples=N)
    assert out.variant == "cifar100n" and out.num_classes == 100
    assert out.noise_rates()["noisy_label"] == pytest.approx(float(np.mean(data["noisy_label"] != clean)))
    np.save(tmp_path / "labels.npy", data)  # dict pickled inside a .npy (a common re-packaging)
    assert np.array_equal(load_cifar_n(tmp_path / "labels.npy").labels["noisy_label"].numpy(),
                          data["noisy_label"])
    np.savez(tmp_path / "labels.npz", **data)
    assert load_cifar_n(tmp_path / "labels.npz").variant == "cifar100n"


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_refuses_code_execution(tmp_path, c10):
    _, labels = c10
    bad = dict(labels, clean_label=_Exploit())
    torch.save(bad, tmp_path / "evil.pt")
    with pytest.raises(DataFormatError, match="code execution") as info:
        load_cifar_n(tmp_path / "evil.pt")
    assert "\n" not in str(info.value) and "evil.pt" in str(info.value)
    arr = np.empty((), dtype=object)
    arr[()] = bad
    with open(tmp_path / "evil.npy", "wb") as fh:
        np.lib.format.write_array(fh, arr, allow_pickle=True)
    with pytest.raises(DataFormatError, match="code execution"):
        load_cifar_n(tmp_path / "evil.npy")
    with open(tmp_path / "raw.pt", "wb") as fh:  # a plain (non-zip) pickle naming os.system
        pickle.dump(bad, fh)
    with pytest.raises(DataFormatError):
        load_cifar_n(tmp_path / "raw.pt")


@pytest.mark.parametrize("mutate, text", [
    (lambda d: d.pop("aggre_label"), "missing key 'aggre_label'"),
    (lambda d: d.__setitem__("random_label2", d["random_label2"][:-3]), "key 'random_label2'"),
    (lambda d: d.__setitem__("worse_label", d["worse_label"] + 10), "outside \\[0, 9\\] under key 'worse_label'"),
    (lambda d: d.__setitem__("clean_label", d["clean_label"].astype(np.float32)), "key 'clean_label'"),
    (lambda d: d.__setitem__("random_label1", d["random_label1"].reshape(20, -1)), "key 'random_label1'"),
])
def test_malformed_files_name_file_and_key(tmp_path, c10, mutate, text):
    _, labels = c10
    data = {k: v.copy() for k, v in labels.items()}
    mutate(data)
    path = tmp_path / "bad.pt"
    torch.save(data, path)
    with pytest.raises(DataFormatError, match=text) as info:
        load_cifar_n(path)
    assert "bad.pt" in str(info.value) and "\n" not in str(info.value)


def test_other_failures(tmp_path, c10):
    path, _ = c10
    with pytest.raises(DataFormatError, match="num_examples"):
        load_cifar_n(path, num_examples=50_000)
    with pytest.raises(DataFormatError, match="missing key 'noisy_label'"):
        load_cifar_n(path, variant="cifar100n")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_cifar_n(tmp_path / "nope.pt")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataNotFoundError, match="CIFAR-100_human.pt"):
        load_cifar_n(tmp_path / "empty_dir")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataFormatError, match="garbage.pt"):
        load_cifar_n(tmp_path / "garbage.pt")
    torch.save({"labels": np.arange(3)}, tmp_path / "other.pt")
    with pytest.raises(DataFormatError, match="neither CIFAR-10N keys"):
        load_cifar_n(tmp_path / "other.pt")
    np.save(tmp_path / "plain.npy", np.arange(5))
    with pytest.raises(DataFormatError, match="not a dict"):
        load_cifar_n(tmp_path / "plain.npy")
