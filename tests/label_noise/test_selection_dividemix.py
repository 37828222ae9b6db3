"""DivideMix pieces: GMM division, sharpening, augmentation, co-divide and label refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab.data import Batch, Dataset, make_synthetic
from robustlab.errors import RobustlabError
from robustlab.label_noise.dividemix import (
    DivideMix,
    _gmm_clean_probability,
    augment,
    gmm_clean_probability,
    sharpen,
)
from robustlab.models import build_model
from robustlab.training import TrainConfig

CPU = torch.device("cpu")


def test_gmm_separates_clean_from_noisy_losses():
    rng = np.random.default_rng(0)
    clean = np.abs(rng.normal(0.05, 0.05, 700))  # memorisation not reached: noisy losses stay high
    noisy = rng.normal(2.5, 0.6, 300).clip(0.5)
    prob = gmm_clean_probability(np.concatenate([clean, noisy]), rng=np.random.default_rng(1))
    is_clean = np.r_[np.ones(700, bool), np.zeros(300, bool)]
    assert prob.shape == (1000,) and prob.min() >= 0 and prob.max() <= 1
    assert ((prob > 0.5) == is_clean).mean() > 0.98
    assert prob[:700].mean() > 0.95 and prob[700:].mean() < 0.05


def test_gmm_is_invariant_to_loss_scale_and_seeded():
    losses = np.r_[np.linspace(0, 0.3, 50), np.linspace(2, 3, 20)]
    a = gmm_clean_probability(losses, rng=np.random.default_rng(3))
    b = gmm_clean_probability(10 * losses + 7, rng=np.random.default_rng(3))  # min-max normalised inside
    assert np.allclose(a, b, atol=1e-6)
    assert np.array_equal(gmm_clean_probability(np.full(5, 0.7), rng=np.random.default_rng(0)), np.ones(5))


def test_gmm_bad_input():
    with pytest.raises(RobustlabError, match="'losses'"):
        gmm_clean_probability(np.array([0.1, np.nan]), rng=np.random.default_rng(0))
    with pytest.raises(RobustlabError, match="'rng'"):
        gmm_clean_probability(np.array([0.1, 0.2]), rng=0)


def test_sharpen_known_values_and_properties():
    p = torch.tensor([[0.2, 0.8], [0.5, 0.5]])
    out = sharpen(p, 0.5)
    assert torch.allclose(out[0], torch.tensor([0.04, 0.64]) / 0.68)
    assert torch.allclose(out[1], torch.tensor([0.5, 0.5]))
    assert torch.allclose(sharpen(p, 1.0), p)
    q = torch.softmax(torch.randn(20, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    s = sharpen(q, 0.5)
    assert torch.allclose(s.sum(1), torch.ones(20))
    assert torch.equal(s.argmax(1), q.argmax(1))
    entropy = lambda r: -(r * r.log()).sum(1)
    assert bool((entropy(s) <= entropy(q) + 1e-6).all())
    with pytest.raises(RobustlabError, match="'temperature'"):
        sharpen(p, 0.0)


def test_augment_shifts_images_by_at_most_s_pixels_and_is_seeded():
    x = torch.zeros(50, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0  # one bright pixel per image
    out = augment(x, generator=torch.Generator().manual_seed(0))  # s = 1 on 8x8
    again = augment(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and out.shape == x.shape
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 8, pos % 8
    assert bool(((rows - 3).abs() <= 1).all()) and bool(((cols - 4).abs() <= 1).all())
    assert len({(int(r), int(c)) for r, c in zip(rows, cols)}) > 4  # several different shifts drawn
    assert torch.allclose(out.sum((1, 2, 3)), torch.ones(50))  # nothing lost away from the border
    tab = augment(torch.zeros(4000, 3), generator=torch.Generator().manual_seed(0), noise_std=0.05)
    assert abs(float(tab.std()) - 0.05) < 0.003


def _divided(model_seed=0):
    data = make_synthetic(60, num_classes=3, dim=4, generator=torch.Generator().manual_seed(0)).dataset
    model = build_model("mlp", (4,), 3, hidden_sizes=(16,), seed=model_seed)
    dm = DivideMix(warmup_epochs=0)
    generator = torch.Generator().manual_seed(0)
    dm.setup(model=model, train=data, config=TrainConfig(epochs=2, batch_size=60), device=CPU, generator=generator)
    return data, model, dm, generator


def test_each_network_is_divided_by_its_own_losses():
    data, model, dm, generator = _divided()
    seeds = torch.Generator().set_state(generator.get_state())
    dm.on_epoch_start(0)
    w1, w2 = dm.clean_probability
    x, y = data.tensors()
    for net, w in ((model, w1), (dm.peer, w2)):
        net.eval()
        losses = F.cross_entropy(net(x), y, reduction="none").detach().double().numpy()
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=seeds))
        assert np.allclose(w.numpy(), _gmm_clean_probability(losses, seed), atol=1e-5)
    assert not torch.allclose(w1, w2)


def test_co_divide_trains_each_network_with_the_other_networks_split():
    data, model, dm, _ = _divided()
    dm.on_epoch_start(0)
    n = len(data)
    # Network 1 sees all examples as clean, network 2 none: the division used for network 1 must be
    # network 2's (nothing labelled) and vice versa.
    dm._clean_prob = [torch.ones(n), torch.zeros(n)]
    x, y = data.tensors()
    out = dm.compute(model, Batch(x, y, torch.arange(n)), epoch=0, step=0)
    assert out.metrics["labelled_fraction_1"] == 0.0 and out.metrics["labelled_fraction_2"] == 1.0
    dm._clean_prob = [torch.zeros(n), torch.ones(n)]
    out = dm.compute(model, Batch(x, y, torch.arange(n)), epoch=0, step=0)
    assert out.metrics["labelled_fraction_1"] == 1.0 and out.metrics["labelled_fraction_2"] == 0.0
    assert torch.isfinite(out.loss) and out.loss.requires_grad


def test_label_refinement_and_co_guessing_targets():
    data, model, dm, _ = _divided()
    x, y = data.tensors()
    onehot = F.one_hot(y[:10], 3).float()
    views = [x[:10], x[:10]]
    # w = 1: the refined label is the (sharpened) given label; w = 0: the sharpened prediction.
    tx, tu = dm._targets(model, dm.peer, views, [x[10:20]] * 2, onehot, torch.ones(10, 1))
    assert torch.allclose(tx, onehot)
    model.train()
    with torch.no_grad():
        p = F.softmax(model(x[:10]), dim=1)
        expected_u = sharpen((F.softmax(model(x[10:20]), 1) + _eval(dm.peer, x[10:20])) / 2, 0.5)
    tx, tu = dm._targets(model, dm.peer, views, [x[10:20]] * 2, onehot, torch.zeros(10, 1))
    assert torch.allclose(tx, sharpen(p, 0.5), atol=1e-6)
    assert torch.allclose(tu, expected_u, atol=1e-6)
    assert dm.peer.training  # the peer is put back in train mode after guessing in eval mode


def _eval(net, x):
    mode = net.training
    net.eval()
    out = F.softmax(net(x), dim=1)
    net.train(mode)
    return out


def test_warmup_is_cross_entropy_of_both_networks():
    data = make_synthetic(30, num_classes=3, dim=4, generator=torch.Generator().manual_seed(0)).dataset
    model = build_model("mlp", (4,), 3, hidden_sizes=(16,), seed=0)
    dm = DivideMix(warmup_epochs=1)
    dm.setup(model=model, train=data, config=TrainConfig(epochs=3), device=CPU, generator=torch.Generator())
    dm.on_epoch_start(0)
    assert dm.clean_probability is None
    x, y = data.tensors()
    out = dm.compute(model, Batch(x, y, torch.arange(30)), epoch=0, step=0)
    assert torch.allclose(out.loss, F.cross_entropy(model(x), y) + F.cross_entropy(dm.peer(x), y))


def test_default_warmup_is_capped_for_short_runs():
    data = Dataset(torch.rand(20, 4), torch.arange(20) % 2)
    model = build_model("mlp", (4,), 2, hidden_sizes=(8,), seed=0)
    for epochs, expected in [(4, 2), (100, 10)]:
        dm = DivideMix()
        dm.setup(model=model, train=data, config=TrainConfig(epochs=epochs), device=CPU, generator=torch.Generator())
        assert dm._warmup == expected
