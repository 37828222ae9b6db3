"""The shared validation helpers: one message format, the right exception types."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab import _checks as C
from robustlab._model_state import eval_mode, frozen_params, preserve_state
from robustlab._registry import Registry
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    ModelOutputError,
    OutputDirError,
    RobustlabError,
    ShapeError,
    UnknownNameError,
)

BAD_NUMBERS = [
    (dict(low=0.0, high=1.0), -0.1, InvalidParameterError),
    (dict(low=0.0, high=1.0), 1.5, InvalidParameterError),
    (dict(low=0.0, low_inclusive=False), 0.0, InvalidParameterError),
    (dict(), float("nan"), InvalidParameterError),
    (dict(), float("inf"), InvalidParameterError),
    (dict(), "0.1", InvalidTypeError),
    (dict(), True, InvalidTypeError),
    (dict(), None, InvalidTypeError),
]


@pytest.mark.parametrize(("bounds", "value", "error"), BAD_NUMBERS)
def test_check_number_rejects_with_named_argument(bounds, value, error):
    with pytest.raises(error, match=r"^The 'eps' parameter must be .* Got .* instead\.$"):
        C.check_number("eps", value, **bounds)


def test_errors_are_builtin_subclasses():
    assert issubclass(InvalidParameterError, ValueError)
    assert issubclass(InvalidTypeError, TypeError)
    assert issubclass(UnknownNameError, RobustlabError)


def test_check_number_accepts_bounds_and_numpy_scalars():
    assert C.check_number("eps", 0, low=0, high=1) == 0.0
    assert C.check_number("eps", np.float32(0.5), low=0, high=1) == 0.5
    assert C.check_int("n", np.int64(3), low=1) == 3
    with pytest.raises(InvalidTypeError):
        C.check_int("n", 3.0)


def test_check_choice_lists_valid_names_sorted():
    with pytest.raises(UnknownNameError, match=r"one of \{'a', 'b', 'c'\}. Got 'z'"):
        C.check_choice("method", "z", ["c", "a", "b"])


@pytest.mark.parametrize(
    ("x", "error", "fragment"),
    [
        (torch.rand(2, 8, 8), ShapeError, "N, C, H, W"),
        (torch.randint(0, 255, (2, 1, 4, 4), dtype=torch.uint8), InvalidTypeError, "divide uint8"),
        (torch.full((2, 1, 4, 4), 1.5), InvalidParameterError, "values in \\[0, 1\\]"),
        (torch.tensor([[[[float("nan")]]]]), InvalidParameterError, "NaN/inf"),
        ("not a tensor", InvalidTypeError, "torch.Tensor or numpy.ndarray"),
    ],
)
def test_check_images_bad_input(x, error, fragment):
    with pytest.raises(error, match=fragment) as info:
        C.check_images("x", x)
    assert "'x'" in str(info.value)
    assert "\n" not in str(info.value)


def test_check_images_accepts_numpy_and_noncontiguous():
    x = np.random.default_rng(0).random((2, 4, 4, 3), dtype=np.float32).transpose(0, 3, 1, 2)
    out = C.check_images("x", x)
    assert out.shape == (2, 3, 4, 4)


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "fragment"),
    [
        (torch.tensor([0, 1, 5]), dict(num_classes=3), InvalidParameterError, r"\[0, 2\]. Got values in \[0, 5\]"),
        (torch.tensor([-1, 0]), dict(), InvalidParameterError, "class indices"),
        (torch.tensor([0.0, 1.0]), dict(), InvalidTypeError, "not float"),
        (torch.tensor([0.5, 1.0]), dict(), InvalidTypeError, "integer"),
        (torch.tensor([[0, 1]]), dict(), ShapeError, "N"),
        (torch.tensor([0, 1]), dict(n=3), ShapeError, "3 entries"),
    ],
)
def test_check_labels_bad_input(labels, kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        C.check_labels("labels", labels, **kwargs)


def test_check_labels_returns_int64():
    out = C.check_labels("labels", np.array([0, 2, 1], dtype=np.int32), num_classes=3)
    assert out.dtype == torch.int64 and out.tolist() == [0, 2, 1]


def test_check_logits_and_pred_probs():
    with pytest.raises(ModelOutputError, match="3 columns"):
        C.check_logits("model output", torch.zeros(4, 2), n=4, num_classes=3)
    with pytest.raises(ModelOutputError, match=r"\(N, K\)"):
        C.check_logits("model output", torch.zeros(4), n=4)
    with pytest.raises(InvalidParameterError, match="rows summing to 1"):
        C.check_pred_probs("pred_probs", torch.full((2, 3), 0.5))
    with pytest.raises(InvalidParameterError, match="non-negative"):
        C.check_pred_probs("pred_probs", torch.tensor([[1.5, -0.5]]))
    p = C.check_pred_probs("pred_probs", torch.tensor([[0.25, 0.75]]))
    assert p.shape == (1, 2)


def test_generators_are_required():
    with pytest.raises(InvalidTypeError, match="torch.Generator"):
        C.check_generator("generator", None)
    with pytest.raises(InvalidTypeError, match="numpy.random.Generator"):
        C.check_rng("rng", np.random.RandomState(0))
    assert isinstance(C.check_generator("generator", torch.Generator()), torch.Generator)


def test_check_writable_dir(tmp_path):
    assert C.check_writable_dir("out", tmp_path / "a" / "b").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match="'out'"):
        C.check_writable_dir("out", blocker)
    with pytest.raises(OutputDirError, match="'out'"):
        C.check_writable_dir("out", blocker / "sub")


def test_registry_unknown_and_duplicate():
    reg: Registry[int] = Registry("probe")
    reg.register("clean", 1)
    reg.register("audit")(2)
    assert reg.names() == ["audit", "clean"] and reg.get("audit") == 2
    with pytest.raises(UnknownNameError, match=r"'probe' parameter must be one of \{'audit', 'clean'\}"):
        reg.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("clean", 3)


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5), torch.nn.Linear(3, 2))


def test_model_state_restored_even_on_error():
    net = _net().train()
    net[2].weight.requires_grad_(False)
    with pytest.raises(RuntimeError):
        with frozen_params(net):
            assert not net.training and not any(p.requires_grad for p in net.parameters())
            raise RuntimeError("boom")
    assert net.training and net[1].training
    assert net[0].weight.requires_grad and not net[2].weight.requires_grad
    net.eval()
    net[1].train()  # mixed modes survive too
    with eval_mode(net):
        assert not net[1].training
    assert net[1].training and not net[0].training
    with preserve_state(net):
        net.train()
    assert not net[0].training
