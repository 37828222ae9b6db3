"""AugMix + JSD, Gaussian augmentation and corruption augmentation as Trainer objectives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from robustlab.corruptions import (
    AUGMIX_ALL_OPERATIONS,
    AUGMIX_OPERATIONS,
    augmix,
    gaussian_augment,
    jensen_shannon,
)
from robustlab.corruptions.augment import _equalize, _posterize, _solarize
from robustlab.data import Batch, Dataset
from robustlab.errors import InvalidParameterError, UnknownNameError
from robustlab.models import build_model
from robustlab.training import OBJECTIVES, TrainConfig, Trainer, build_objective


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def toy() -> Dataset:
    g = _g(0)
    labels = torch.arange(32) % 2
    x = torch.rand(32, 3, 8, 8, generator=g) * 0.5
    x[labels == 1, :, :4] += 0.5  # class 1: bright top half
    return Dataset(x.clamp(0, 1), labels, name="toy")


def test_default_operations_exclude_the_test_corruptions() -> None:
    assert set(AUGMIX_OPERATIONS) == {"autocontrast", "equalize", "posterize", "rotate", "solarize",
                                      "shear_x", "shear_y", "translate_x", "translate_y"}
    assert not {"contrast", "color", "brightness", "sharpness"} & set(AUGMIX_OPERATIONS)
    assert build_objective("augmix").operations == AUGMIX_OPERATIONS


def test_augmix_battery(toy: Dataset) -> None:
    x, _ = toy.tensors()
    y = augmix(x, generator=_g())
    assert y.shape == x.shape and y.dtype == x.dtype and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y, augmix(x, generator=_g()))
    assert not torch.equal(y, augmix(x, generator=_g(1)))
    assert float((y - x).abs().mean()) > 1e-3
    for op in AUGMIX_ALL_OPERATIONS:
        z = augmix(x, generator=_g(), operations=[op], width=1, depth=1)
        assert float(z.min()) >= 0 and float(z.max()) <= 1


def test_pil_operations_match_pil() -> None:
    g = _g(3)
    x = torch.round(torch.rand(6, 3, 16, 16, generator=g) ** 2 * 255) / 255
    eq = _equalize(x, 3.0, _g())
    for i in range(6):
        img = Image.fromarray((x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        ref = np.asarray(ImageOps.equalize(img)).astype(np.float32) / 255
        assert np.abs(ref - eq[i].permute(1, 2, 0).numpy()).max() < 1e-6
    # posterize keeps the top bits (4 at severity < 2.5), solarize inverts above a threshold >= 180
    post = _posterize(x, 2.0, _g())
    assert torch.equal(torch.round(post * 255).long() % 16, torch.zeros_like(post, dtype=torch.long))
    sol = _solarize(x, 3.0, _g())
    v = torch.round(x * 255)
    assert torch.equal(sol[v < 180], x[v < 180])


def test_jsd_is_zero_for_equal_views_and_positive_otherwise() -> None:
    z = torch.randn(5, 7, generator=_g())
    assert float(jensen_shannon(z, z, z)) == pytest.approx(0.0, abs=1e-7)
    assert float(jensen_shannon(z, z + torch.randn(5, 7, generator=_g(1)))) > 1e-3
    # bounded by log(k) for k distributions
    far = [torch.eye(3) * 50, torch.eye(3).roll(1, 0) * 50, torch.eye(3).roll(2, 0) * 50]
    assert float(jensen_shannon(*far)) == pytest.approx(np.log(3), rel=1e-3)


def _setup(name: str, toy: Dataset, **params: object) -> tuple[object, torch.nn.Module]:
    model = build_model("mlp", toy.input_shape, toy.num_classes, seed=0)
    objective = build_objective(name, **params)
    objective.setup(model=model, train=toy, config=TrainConfig(epochs=1), device=torch.device("cpu"),
                    generator=_g())
    return objective, model


@pytest.mark.parametrize("name,params", [("augmix", {}), ("gaussian-augment", {"sigma": 0.1}),
                                         ("corruption-augment", {"corruptions": ["fog", "contrast"],
                                                                 "probability": 1.0})])
def test_one_step_reduces_the_loss(toy: Dataset, name: str, params: dict[str, object]) -> None:
    objective, model = _setup(name, toy, **params)
    x, y = toy.tensors()
    x, y = x[:12], y[:12]
    batch = Batch(x, y, torch.arange(len(y)))
    state = objective._generator.get_state()  # the same augmented views before and after the step
    loss0 = objective.compute(model, batch, epoch=0, step=0).loss
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss0.backward()
    opt.step()
    objective._generator.set_state(state)
    with torch.no_grad():
        loss1 = objective.compute(model, batch, epoch=0, step=1).loss
    assert float(loss1) < float(loss0.detach())


def test_augmix_loss_is_ce_plus_weighted_jsd(toy: Dataset) -> None:
    objective, model = _setup("augmix", toy, jsd_weight=12.0)
    x, y = toy.tensors()
    out = objective.compute(model.eval(), Batch(x, y, torch.arange(len(y))), epoch=0, step=0)
    assert out.logits is not None and out.logits.shape == (32, 2)
    assert float(out.loss.detach()) == pytest.approx(float(out.metrics["ce"] + 12.0 * out.metrics["jsd"]), rel=1e-5)
    assert float(out.metrics["ce"]) == pytest.approx(float(torch.nn.functional.cross_entropy(model(x), y).detach()),
                                                     rel=1e-5)


def test_trainer_runs_augmix(toy: Dataset) -> None:
    model = build_model("small-cnn", toy.input_shape, toy.num_classes, seed=0)
    result = Trainer(model, "augmix", TrainConfig(epochs=2, batch_size=16, seed=0)).fit(toy)
    assert len(result.history) == 2 and "jsd" in result.history[-1]["metrics"]


def test_gaussian_augment_statistics_and_no_clipping() -> None:
    x = torch.full((200, 1, 8, 8), 0.5)
    y = gaussian_augment(x, 0.25, generator=_g())
    assert abs(float((y - x).std()) - 0.25) < 0.01 and float(y.max()) > 1.0
    assert torch.equal(y, gaussian_augment(x, 0.25, generator=_g()))
    clipped = gaussian_augment(x, 0.25, generator=_g(), clip=True)
    assert float(clipped.max()) <= 1 and float(clipped.min()) >= 0


def test_registry_and_bad_settings() -> None:
    assert {"augmix", "gaussian-augment", "corruption-augment"} <= set(OBJECTIVES.names())
    with pytest.raises(UnknownNameError, match="autocontrast"):
        build_objective("augmix", operations=["blur"])
    with pytest.raises(InvalidParameterError, match="depth"):
        build_objective("augmix", depth=0)
    with pytest.raises(InvalidParameterError, match="exclude"):
        build_objective("corruption-augment", corruptions=["fog"], exclude=["fog"])
    pool = build_objective("corruption-augment", exclude=["fog", "snow"]).corruptions
    assert "fog" not in pool and "snow" not in pool and len(pool) == 17
