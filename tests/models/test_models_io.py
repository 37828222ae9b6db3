"""Safe save/load: round trips, atomic writes, corrupt files, unsafe pickles, foreign checkpoints."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from robustlab.errors import CheckpointError, InvalidParameterError, OutputDirError
from robustlab.models import (
    MODELS,
    ModelConfig,
    build_model,
    load_any,
    load_checkpoint,
    load_model,
    save_model,
)


class PickledThing:
    """A custom class: unpickling it would need the code of this module."""

    def __init__(self) -> None:
        self.weight = torch.ones(2)


def _config(**overrides) -> ModelConfig:
    kwargs = dict(name="small-cnn", input_shape=(1, 8, 8), num_classes=3,
                  params={"channels": [4, 8, 8]}, mean=(0.3,), std=(0.2,), class_names=("a", "b", "c"))
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


def _trained_like(config: ModelConfig, seed: int = 0) -> nn.Module:
    """A model with non-default BN statistics, so buffers must round-trip too."""
    model = config.build(seed=seed)
    with torch.no_grad():
        model(torch.rand(16, *config.input_shape, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


def _x(config: ModelConfig, n: int = 5) -> torch.Tensor:
    return torch.rand(n, *config.input_shape, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------ config
def test_config_json_round_trip_and_canonical_params():
    config = _config(params={"channels": (4, 8, 8)})
    assert config.params == {"channels": [4, 8, 8]}  # stored in JSON form
    again = ModelConfig.from_json(config.to_json())
    assert again == config and hash(again) == hash(config)
    assert json.loads(config.to_json())["format"] == "robustlab-model"


def test_config_for_model_takes_build_model_keywords():
    config = ModelConfig.for_model("mlp", (4,), 2, params={"hidden_sizes": (8,), "mean": [0.1] * 4,
                                                            "std": [2.0] * 4})
    assert config.params == {"hidden_sizes": [8]} and config.mean == (0.1,) * 4
    with pytest.raises(InvalidParameterError, match="'mean'"):
        ModelConfig.for_model("mlp", (4,), 2, params={"mean": 0.0}, mean=0.0)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [({"class_names": ("a", "b")}, "'class_names'"), ({"num_classes": 1}, "'num_classes'"),
     ({"mean": (0.1, 0.2)}, "'mean'"), ({"params": {"f": object()}}, "'params'"),
     ({"input_shape": (1, 8)}, "'input_shape'")],
)
def test_config_validates_its_fields(overrides, needle):
    with pytest.raises((InvalidParameterError, TypeError), match=needle):
        _config(**overrides)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"name": "mlp"}', "'input_shape'"),
     ('{"format": "other", "name": "mlp", "input_shape": [4], "num_classes": 2}', "not a robustlab"),
     ('{"format_version": 99, "name": "mlp", "input_shape": [4], "num_classes": 2}', "newer"),
     ('{"name": "mlp", "input_shape": [4], "num_classes": 0}', "'num_classes'")],
)
def test_bad_config_json_is_a_checkpoint_error(text, needle):
    with pytest.raises(CheckpointError, match=needle):
        ModelConfig.from_json(text)


# ------------------------------------------------------------------------ round trip
@pytest.mark.parametrize(
    "config",
    [_config(),
     ModelConfig("mlp", (6,), 4, params={"hidden_sizes": [8]}, mean=(0.0, 1, 2, 3, 4, 5), std=(2.0,) * 6),
     ModelConfig("wide-resnet", (3, 8, 8), 2, params={"depth": 10, "widen_factor": 1, "dropout": 0.1}),
     ModelConfig("preact-resnet18", (1, 8, 8), 3, params={"width": 4})],
    ids=lambda c: c.name,
)
def test_save_load_round_trip_gives_bit_identical_logits(tmp_path, config):
    model = _trained_like(config)
    folder = save_model(model, tmp_path / "m", config)
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    loaded, loaded_config = load_model(folder)
    assert loaded_config == config
    assert not loaded.training
    x = _x(config)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # The weights file alone carries the config, too.
    alone, _ = load_model(folder / "model.safetensors")
    with torch.no_grad():
        assert torch.equal(alone(x), model(x))


def test_round_trip_keeps_float64(tmp_path):
    config = _config()
    model = _trained_like(config).double()
    loaded, _ = load_model(save_model(model, tmp_path / "m", config))
    assert loaded.normalize.mean.dtype == torch.float64
    x = _x(config).double()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_save_refuses_a_config_that_does_not_describe_the_model(tmp_path):
    model = _trained_like(_config())
    with pytest.raises(InvalidParameterError, match="'config'.*shape mismatch"):
        save_model(model, tmp_path / "a", _config(params={"channels": [4, 8, 16]}))
    with pytest.raises(InvalidParameterError, match="'config'.*normalisation"):
        save_model(model, tmp_path / "b", _config(mean=(0.5,)))
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_save_into_a_file_path_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputDirError, match="'path'"):
        save_model(_trained_like(_config()), tmp_path / "f", _config())


def test_data_parallel_wrapper_is_unwrapped_on_save(tmp_path):
    config = _config()
    model = _trained_like(config)
    loaded, _ = load_model(save_model(nn.DataParallel(model), tmp_path / "m", config))
    with torch.no_grad():
        assert torch.equal(loaded(_x(config)), model(_x(config)))


def _tied(input_shape, num_classes, *, mean=None, std=None):
    """A model with a tied (shared) weight, to exercise safetensors' shared-tensor handling."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], input_shape[0]),
                          nn.Linear(input_shape[0], input_shape[0]), nn.Linear(input_shape[0], num_classes))
    model[2].weight = model[1].weight
    return model


def test_shared_tensors_are_saved_once_and_tied_again(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS._items, "tied-test", _tied)
    config = ModelConfig("tied-test", (4,), 2)
    model = config.build(seed=0)
    folder = save_model(model, tmp_path / "m", config)
    loaded, _ = load_model(folder)
    assert loaded[2].weight is loaded[1].weight
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ------------------------------------------------------------------------ atomic save
def test_failure_while_writing_weights_leaves_the_old_model_intact(tmp_path, monkeypatch):
    old_config = _config()
    old = _trained_like(old_config, seed=0)
    folder = save_model(old, tmp_path / "m", old_config)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def half_write_then_crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"__metad")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_write_then_crash)
    with pytest.raises(OSError, match="disk full"):
        save_model(_trained_like(old_config, seed=1), folder, old_config)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temp files left either
    loaded, _ = load_model(folder)
    with torch.no_grad():
        assert torch.equal(loaded(_x(old_config)), old(_x(old_config)))


def test_crash_between_the_two_renames_still_loads_a_consistent_model(tmp_path, monkeypatch):
    config = _config()
    folder = save_model(_trained_like(config, seed=0), tmp_path / "m", config)
    new_config = _config(class_names=("x", "y", "z"))
    new = _trained_like(new_config, seed=1)
    real_replace = os.replace

    def replace_weights_only(src, dst):
        if str(dst).endswith("config.json"):
            raise KeyboardInterrupt  # killed after the weights were moved into place
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_weights_only)
    with pytest.raises(KeyboardInterrupt):
        save_model(new, folder, new_config)
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    with pytest.warns(UserWarning, match="differs from the config stored"):
        loaded, loaded_config = load_model(folder)
    assert loaded_config == new_config  # the copy stored with the weights wins
    with torch.no_grad():
        assert torch.equal(loaded(_x(config)), new(_x(config)))


# ------------------------------------------------------------------------ broken files
@pytest.fixture
def saved(tmp_path) -> Path:
    return save_model(_trained_like(_config()), tmp_path / "m", _config())


def test_truncated_weights_are_a_checkpoint_error_naming_the_file(saved):
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*(corrupt|truncated)") as info:
        load_model(saved)
    assert "\n" not in str(info.value)


def test_garbage_weights_are_a_checkpoint_error(saved):
    (saved / "model.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_model(saved)


def test_corrupt_json_is_a_checkpoint_error_naming_the_file(saved):
    (saved / "config.json").write_text('{"name": "small-cnn", ')
    with pytest.raises(CheckpointError, match=r"config\.json.*not valid JSON") as info:
        load_model(saved)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_missing_file_is_a_checkpoint_error_naming_it(saved, name):
    (saved / name).unlink()
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_model(saved)


def test_load_model_on_a_torch_file_points_to_load_any(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="load_any"):
        load_model(tmp_path / "w.pt")


def test_missing_folder_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "nope")


def test_weights_of_another_architecture_are_a_checkpoint_error(saved):
    other = build_model("small-cnn", (1, 8, 8), 3, seed=0, channels=(4, 8, 16))
    safetensors.torch.save_file(other.state_dict(), str(saved / "model.safetensors"))  # no config inside
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*do not match.*shape mismatch") as info:
        load_model(saved)
    assert "\n" not in str(info.value)


def test_weights_with_missing_keys_are_a_checkpoint_error(saved):
    state = build_model("small-cnn", (1, 8, 8), 3, seed=0, channels=(4, 8, 8)).state_dict()
    del state["classifier.bias"]
    state["extra"] = torch.zeros(1)
    safetensors.torch.save_file(state, str(saved / "model.safetensors"))
    needle = r"missing key\(s\) 'classifier.bias'.*unexpected key\(s\) 'extra'"
    with pytest.raises(CheckpointError, match=needle):
        load_model(saved)


def test_config_that_does_not_build_is_a_checkpoint_error(saved):
    data = json.loads((saved / "config.json").read_text())
    data["name"] = "no-such-model"
    (saved / "config.json").write_text(json.dumps(data))
    safetensors.torch.save_file(_trained_like(_config()).state_dict(), str(saved / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"config\.json.*'no-such-model'"):
        load_model(saved)


# ------------------------------------------------------------------------ foreign checkpoints
def test_pickled_custom_object_is_refused_as_arbitrary_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": PickledThing()}, path)
    with pytest.raises(CheckpointError, match="arbitrary code execution.*refused") as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "PickledThing" in message and "state dict" in message and "\n" not in message
    with pytest.raises(CheckpointError, match="arbitrary code execution"):
        load_any(path, config=_config())


def test_pickled_whole_module_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match="arbitrary code execution"):
        load_checkpoint(path)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "nested"])
def test_state_dict_nesting_and_data_parallel_prefix_are_handled(tmp_path, wrap):
    config = _config()
    model = _trained_like(config)
    prefixed = nn.DataParallel(model).state_dict()
    assert all(k.startswith("module.") for k in prefixed)
    payload = {"plain": prefixed, "state_dict": {"state_dict": prefixed, "epoch": 3},
               "model": {"model": prefixed, "optimizer": {"lr": 0.1}},
               "nested": {"model": {"state_dict": prefixed}}}[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    state = load_checkpoint(path)
    assert set(state) == set(model.state_dict())
    loaded = load_any(path, config=config)
    with torch.no_grad():
        assert torch.equal(loaded(_x(config)), model(_x(config)))


def test_reference_weights_without_normalize_keys_take_the_config_statistics(tmp_path):
    config = _config()
    model = _trained_like(config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    torch.save(state, tmp_path / "ref.pt")
    loaded = load_any(tmp_path / "ref.pt", config=config)
    assert loaded.normalize.mean.flatten().tolist() == pytest.approx([0.3])
    with torch.no_grad():
        assert torch.equal(loaded(_x(config)), model(_x(config)))


def test_bare_weights_need_a_config(tmp_path):
    torch.save(_trained_like(_config()).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="config=ModelConfig"):
        load_any(tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_any(tmp_path / "sd.pt", config=_config(params={"channels": [4, 8, 16]}))


def test_checkpoint_without_tensors_is_a_checkpoint_error(tmp_path):
    torch.save({"epoch": 3, "args": {"lr": 0.1}}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(tmp_path / "meta.pt")


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_torch_checkpoint_is_a_checkpoint_error(tmp_path, legacy):
    path = tmp_path / "ckpt.pt"
    torch.save(_trained_like(_config()).state_dict(), path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*corrupt") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_safetensors_state_dict_through_load_checkpoint(tmp_path):
    state = _trained_like(_config()).state_dict()
    safetensors.torch.save_file({f"module.{k}": v for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    loaded = load_checkpoint(tmp_path / "w.safetensors")
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)


# ------------------------------------------------------------------------ load_any
def test_load_any_detects_a_robustlab_folder_and_weights_file(saved):
    folder_model = load_any(saved)
    file_model = load_any(saved / "model.safetensors")
    x = _x(_config())
    with torch.no_grad():
        assert torch.equal(folder_model(x), file_model(x))


@pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..* is deprecated:DeprecationWarning")
def test_torchscript_model_loads_as_a_black_box(tmp_path):
    config = _config()
    model = _trained_like(config)
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(model, _x(config)), str(path))
    loaded = load_any(path)
    assert isinstance(loaded, torch.jit.ScriptModule) and not loaded.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # detection must not go through torch.load's fallback warning
        loaded = load_any(path)
    x = _x(config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_checkpoint(path)


@pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..* is deprecated:DeprecationWarning")
def test_truncated_torchscript_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Linear(3, 2)), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(CheckpointError, match=r"scripted\.pt"):
        load_any(path)


def test_load_any_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_any(tmp_path / "missing.pt")
