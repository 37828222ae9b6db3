"""predict_logits: output validation and the caller's model state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.data import Dataset
from robustlab.errors import ModelOutputError
from robustlab.models import build_model, predict_logits


def _digits_like(n=10, num_classes=4) -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % num_classes,
                   class_names=[str(i) for i in range(num_classes)])


class _Fixed(nn.Module):
    """Returns a tensor of a chosen per-example shape."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape
        self.dummy = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], *self.shape)


def test_logits_of_a_built_model_match_a_direct_call_in_eval_mode():
    data = _digits_like()
    model = build_model("small-cnn", (1, 8, 8), 4, seed=0, channels=(4, 4, 4))
    logits = predict_logits(model, data, batch_size=3)
    model.eval()
    with torch.no_grad():
        expected = model(data.tensors()[0])
    assert logits.shape == (10, 4)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("shape", [(3,), (5,), ()])
def test_wrong_output_shape_raises_model_output_error(shape):
    with pytest.raises(ModelOutputError) as info:
        predict_logits(_Fixed(*shape), _digits_like())
    assert "\n" not in str(info.value)


def test_class_count_mismatch_names_the_expected_number():
    with pytest.raises(ModelOutputError, match="4 columns"):
        predict_logits(_Fixed(3), _digits_like())


def test_model_failing_on_the_input_shape_is_a_model_output_error():
    model = build_model("mlp", (20,), 4, seed=0)
    with pytest.raises(ModelOutputError, match=r"\(10, 1, 8, 8\)"):
        predict_logits(model, _digits_like())


@pytest.mark.parametrize("training", [True, False])
def test_train_mode_is_restored(training):
    model = build_model("small-cnn", (1, 8, 8), 4, seed=0, channels=(4, 4, 4)).train(training)
    model.features[1].eval()  # a mixed state must come back exactly
    modes = [m.training for m in model.modules()]
    running = model.features[1].running_mean.clone()
    predict_logits(model, _digits_like())
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model.features[1].running_mean, running)  # eval mode: BN stats untouched


def test_train_mode_is_restored_after_an_error():
    model = _Fixed(3).train()
    with pytest.raises(ModelOutputError):
        predict_logits(model, _digits_like())
    assert model.training and model.dummy.training
