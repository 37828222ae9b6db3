"""Label-noise generators: realised rates, transition matrices, determinism, no mutation, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustlab.data import Dataset, load_digits
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    RobustlabError,
    ShapeError,
)
from robustlab.label_noise import (
    NoiseSpec,
    apply_noise_spec,
    cifar10_asymmetric_noise,
    class_map_noise,
    confusion_from_predictions,
    confusion_noise,
    dilute,
    instance_dependent_noise,
    pair_flip_noise,
    pair_flip_transition,
    parse_noise_spec,
    random_inputs,
    random_labels,
    symmetric_noise,
    symmetric_transition,
    transition_noise,
)

K = 10
N = 20_000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    return torch.randint(0, K, (N,), generator=gen(123))


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


def within_binomial(realised: float, p: float, n: int, sigmas: float = 4.0) -> bool:
    sd = math.sqrt(max(p * (1 - p), 1e-12) / n)
    return abs(realised - p) <= sigmas * sd + 1e-12


def empirical_transition(clean: torch.Tensor, noisy: torch.Tensor, k: int) -> torch.Tensor:
    counts = torch.bincount(clean * k + noisy, minlength=k * k).reshape(k, k).double()
    return counts / counts.sum(1, keepdim=True)


def assert_matches_t(clean, noisy, t, sigmas=4.5):
    emp = empirical_transition(clean, noisy, t.shape[0])
    n_i = torch.bincount(clean, minlength=t.shape[0]).double().unsqueeze(1)
    sd = (t * (1 - t) / n_i).sqrt()
    bad = (emp - t).abs() > sigmas * sd + 1e-9
    assert not bool(bad.any()), f"cells off: {bad.nonzero().tolist()[:5]}; emp={emp}, T={t}"


# ----------------------------------------------------------------------------- generators table
def _dense_confusion() -> torch.Tensor:
    c = torch.rand(K, K, generator=gen(5)) + torch.eye(K) * 20
    c[3, 5] = 30.0  # cat mostly confused with dog
    return c


GENERATORS = {
    "symmetric": (lambda y, g, r: symmetric_noise(y, K, r, generator=g), lambda r: r),
    "symmetric-inclusive": (lambda y, g, r: symmetric_noise(y, K, r, generator=g, include_true=True),
                            lambda r: r * (K - 1) / K),
    "pair": (lambda y, g, r: pair_flip_noise(y, K, r, generator=g), lambda r: r),
    "class-map": (lambda y, g, r: class_map_noise(y, K, {0: 1, 4: 2}, r, generator=g), None),
    "cifar10-asym": (lambda y, g, r: cifar10_asymmetric_noise(y, r, generator=g), None),
    "transition": (lambda y, g, r: transition_noise(y, symmetric_transition(K, r), generator=g),
                   lambda r: r),
    "confusion": (lambda y, g, r: confusion_noise(y, K, r, confusion=_dense_confusion(), generator=g),
                  lambda r: r),
    "random-labels": (lambda y, g, r: random_labels(y, K, generator=g, corrupt_prob=r),
                      lambda r: r * (K - 1) / K),
}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
@pytest.mark.parametrize("rate", [0.2, 0.45])
def test_realised_rate_within_binomial_tolerance(labels, kind, rate):
    fn, expected = GENERATORS[kind]
    out = fn(labels, gen(1), rate)
    if expected is None:  # class maps: rate times the fraction of mapped examples
        p = float(out.flip_prob.mean())
        assert p < rate  # only some classes are touched
    else:
        p = expected(rate)
    assert out.labels.dtype == torch.int64 and out.noise_mask.dtype == torch.bool
    assert out.labels.shape == labels.shape
    assert torch.equal(out.noise_mask, out.labels != labels)
    assert out.realised_rate == pytest.approx(float(out.noise_mask.double().mean()))
    assert within_binomial(out.realised_rate, p, N), (out.realised_rate, p)
    assert torch.equal(out.clean_labels, labels)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_empirical_transition_matches_t(labels, kind):
    fn, _ = GENERATORS[kind]
    out = fn(labels, gen(2), 0.35)
    assert out.transition is not None
    t = out.transition
    assert torch.allclose(t.sum(1), torch.ones(K, dtype=torch.float64))
    assert_matches_t(labels, out.labels, t)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_deterministic_per_generator_and_input_untouched(labels, kind):
    fn, _ = GENERATORS[kind]
    y = labels.clone()
    y_np = labels.numpy().copy()
    a = fn(y, gen(7), 0.3)
    b = fn(y, gen(7), 0.3)
    c = fn(y, gen(8), 0.3)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)
    assert torch.equal(y, labels)  # never mutated
    arr = labels.numpy().copy()
    d = fn(arr, gen(7), 0.3)  # numpy input: same answer, array untouched
    assert torch.equal(d.labels, a.labels)
    assert np.array_equal(arr, y_np)


def test_symmetric_conventions_have_the_documented_transition():
    ex = symmetric_transition(4, 0.6)
    inc = symmetric_transition(4, 0.6, include_true=True)
    assert torch.allclose(ex.diagonal(), torch.full((4,), 0.4, dtype=torch.float64))
    assert torch.allclose(ex[0, 1:], torch.full((3,), 0.2, dtype=torch.float64))
    assert torch.allclose(inc.diagonal(), torch.full((4,), 0.4 + 0.15, dtype=torch.float64))
    assert torch.allclose(inc[0, 1:], torch.full((3,), 0.15, dtype=torch.float64))
    # exclusive noise never "flips" to the true class: every flagged label differs
    y = torch.arange(4).repeat(500)
    out = symmetric_noise(y, 4, 1.0, generator=gen())
    assert bool(out.noise_mask.all())


def test_pair_flip_maps_exactly_to_next_class(labels):
    out = pair_flip_noise(labels, K, 0.4, generator=gen(3))
    changed = out.noise_mask
    assert torch.equal(out.labels[changed], (labels[changed] + 1) % K)
    t = pair_flip_transition(K, 0.4)
    assert t[K - 1, 0] == pytest.approx(0.4) and t[2, 3] == pytest.approx(0.4)


def test_class_map_touches_only_mapped_classes(labels):
    mapping = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    out = class_map_noise(labels, K, mapping, 0.5, generator=gen(4))
    untouched = ~torch.isin(labels, torch.tensor(list(mapping)))
    assert not bool(out.noise_mask[untouched].any())
    for src, dst in mapping.items():
        sel = (labels == src) & out.noise_mask
        assert sel.any() and bool((out.labels[sel] == dst).all())
    # cat <-> dog is a swap applied to the clean labels, not a chain
    asym = cifar10_asymmetric_noise(labels, 0.5, generator=gen(4))
    assert torch.equal(asym.labels, out.labels)
    assert asym.kind == "cifar10-asym"


def test_confusion_noise_follows_the_confusion_rows(labels):
    out = confusion_noise(labels, K, 0.4, confusion=_dense_confusion(), generator=gen(9))
    cat_flips = out.labels[(labels == 3) & out.noise_mask]
    share_dog = float((cat_flips == 5).double().mean())
    expected = 30.0 / (30.0 + float(_dense_confusion()[3].sum() - 30.0 - _dense_confusion()[3, 3]))
    assert share_dog == pytest.approx(expected, abs=0.05)
    assert not bool((out.labels[out.noise_mask] == labels[out.noise_mask]).any())


def test_confusion_row_without_errors_falls_back_to_uniform():
    c = torch.eye(3) * 5
    c[0, 1] = 1.0
    out = confusion_noise(torch.arange(3).repeat(200), 3, 0.5, confusion=c, generator=gen())
    assert out.params["uniform_rows"] == [1, 2]
    assert out.transition[0, 2] == 0 and out.transition[1, 0] == pytest.approx(0.25)


def test_confusion_from_predictions_counts_and_soft():
    y = torch.tensor([0, 0, 1, 2])
    pred = torch.tensor([0, 1, 1, 0])
    c = confusion_from_predictions(y, pred, 3)
    assert c.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    probs = torch.tensor([[0.5, 0.5, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    assert confusion_from_predictions(y, probs, 3, soft=True)[0].tolist() == [1.5, 0.5, 0]
    assert confusion_from_predictions(y, probs, 3)[0].tolist() == [2, 0, 0]


# ----------------------------------------------------------------------------- instance-dependent
def test_idn_mean_rate_and_instance_dependence(digits):
    x, y = digits.tensors()
    reps = []
    for seed in range(3):
        out = instance_dependent_noise(x, y, 10, 0.4, generator=gen(seed))
        reps.append(out.realised_rate)
        assert out.transition is None and out.kind == "instance"
        q = out.flip_prob
        # per-instance flip rates: truncated normal around 0.4 with std ~0.1 -> they vary
        assert float(q.std()) == pytest.approx(0.1, abs=0.02)
        assert float(q.min()) >= 0 and float(q.max()) <= 1
        assert within_binomial(out.realised_rate, float(q.mean()), len(y), sigmas=4)
    assert np.mean(reps) == pytest.approx(0.4, abs=0.02)
    # instances with a high flip rate really flip more often (the mask depends on q)
    hi, lo = q > q.median(), q <= q.median()
    assert float(out.noise_mask[hi].double().mean()) > float(out.noise_mask[lo].double().mean()) + 0.05


def test_idn_targets_depend_on_the_input(digits):
    """Duplicated inputs share their noisy-label distribution; distinct examples of the same class do
    not — so duplicates agree on the wrong label far more often (a class-conditional T would give
    both the same agreement rate)."""
    x, y = digits.tensors()
    n = len(y)
    out = instance_dependent_noise(torch.cat([x, x]), torch.cat([y, y]), 10, 0.9,
                                   generator=gen(11), flip_std=1e-3)
    first, second = out.labels[:n], out.labels[n:]
    both = out.noise_mask[:n] & out.noise_mask[n:]
    dup_agree = float((first[both] == second[both]).double().mean())
    perm = torch.randperm(n, generator=gen(12))
    other = torch.empty(n, dtype=torch.long)
    for c in range(10):  # pair each example with another random example of its class
        idx = (y == c).nonzero().flatten()
        other[idx] = idx[torch.randperm(idx.numel(), generator=gen(c))]
    flipped = out.noise_mask[:n] & out.noise_mask[:n][other]
    rand_agree = float((first[flipped] == first[other][flipped]).double().mean())
    assert dup_agree > rand_agree + 0.2, (dup_agree, rand_agree)
    assert len(torch.unique(first[(y == 0) & out.noise_mask[:n]])) >= 3  # several wrong classes
    del perm


def test_idn_truncation_bias_is_reported():
    x = torch.rand(4000, 8, generator=gen())
    y = torch.randint(0, 4, (4000,), generator=gen(1))
    out = instance_dependent_noise(x, y, 4, 0.1, generator=gen(2))
    assert out.params["expected_rate"] == pytest.approx(0.1288, abs=1e-3)
    assert within_binomial(out.realised_rate, out.params["expected_rate"], 4000, sigmas=4)
    clean = instance_dependent_noise(x, y, 4, 0.0, generator=gen(2))
    assert clean.num_flipped == 0


# ----------------------------------------------------------------------------- dilution, controls
def test_dilution_sizes_and_label_distribution():
    x = torch.rand(300, 4, generator=gen())
    y = torch.arange(3).repeat(100)
    m = 20
    out = dilute(x, y, 3, m, generator=gen(1))
    assert out.data.shape == (300 * (1 + m), 4)
    assert torch.equal(out.data[300:], x.repeat(m, 1))
    noisy = out.noisy
    assert torch.equal(noisy.labels[:300], y) and not bool(noisy.noise_mask[:300].any())
    copies = noisy.labels[300:]
    counts = torch.bincount(copies, minlength=3).double() / copies.numel()
    assert torch.allclose(counts, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)
    assert within_binomial(noisy.realised_rate, m * (2 / 3) / (1 + m), 300 * (1 + m))
    assert torch.equal(noisy.clean_labels, y.repeat(1 + m))
    exclusive = dilute(x, y, 3, 2, generator=gen(1), include_true=False)
    assert bool(exclusive.noisy.noise_mask[300:].all())


def test_dilution_of_a_dataset_shares_inputs():
    ds = Dataset(torch.rand(12, 1, 4, 4, generator=gen()), torch.arange(3).repeat(4))
    out = dilute(ds, m=3, generator=gen(2))
    assert len(out.data) == 48 and out.data.num_classes == 3
    xs, ys = out.data.tensors()
    assert torch.equal(xs[12:24], ds.tensors()[0])
    assert torch.equal(ys, out.noisy.labels)
    assert torch.equal(ds.labels, torch.arange(3).repeat(4))


def _position_images(n: int) -> torch.Tensor:
    """Images whose pixel values encode (position, image, channel): a permutation can be read back."""
    pos = torch.arange(36, dtype=torch.float32) / 36 * 0.5
    img = torch.arange(n, dtype=torch.float32).view(n, 1, 1) * 1e-3
    ch = torch.tensor([0.0, 0.1, 0.2]).view(1, 3, 1)
    return (pos.view(1, 1, 36) + img + ch).view(n, 3, 6, 6)


def _read_perm(out: torch.Tensor, i: int, c: int) -> torch.Tensor:
    vals = out[i, c].flatten() - 1e-3 * i - 0.1 * c
    return (vals / 0.5 * 36).round().long()


@pytest.mark.parametrize("kind", ["shuffled-pixels", "random-pixels"])
def test_random_inputs_pixel_permutations(kind):
    x = _position_images(6)
    before = x.clone()
    out = random_inputs(x, generator=gen(1), kind=kind)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.equal(x, before)
    perms = [_read_perm(out, i, 0) for i in range(6)]
    for i in range(6):
        assert sorted(perms[i].tolist()) == list(range(36))
        assert torch.equal(_read_perm(out, i, 2), perms[i])  # channels of a pixel move together
    same = all(torch.equal(p, perms[0]) for p in perms)
    assert same == (kind == "shuffled-pixels")
    assert not torch.equal(perms[0], torch.arange(36))
    assert torch.equal(out, random_inputs(x, generator=gen(1), kind=kind))


def test_random_inputs_gaussian_images_match_channel_moments():
    x = torch.rand(400, 3, 6, 6, generator=gen()) * torch.tensor([0.2, 0.5, 0.6]).view(1, 3, 1, 1) + 0.2
    out = random_inputs(x, generator=gen(1), kind="gaussian")
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.allclose(out.mean(dim=(0, 2, 3)), x.mean(dim=(0, 2, 3)), atol=0.01)
    assert torch.allclose(out.std(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)), rtol=0.05)


def test_random_inputs_tabular_gaussian_matches_moments():
    x = torch.randn(5000, 3, generator=gen()) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([0, 3.0, -1])
    out = random_inputs(x, generator=gen(1), kind="gaussian")
    assert torch.allclose(out.mean(0), x.mean(0), atol=0.1)
    assert torch.allclose(out.std(0), x.std(0), rtol=0.05)


# ----------------------------------------------------------------------------- spec
def test_parse_and_apply_spec_on_digits(digits):
    ds = digits
    before = ds.labels
    spec = parse_noise_spec("pair:0.3")
    assert spec == NoiseSpec("pair", 0.3) and str(spec) == "pair:0.3"
    noisy_ds, noisy = apply_noise_spec(spec, ds, generator=gen())
    assert torch.equal(noisy_ds.labels, noisy.labels) and torch.equal(ds.labels, before)
    assert not torch.equal(noisy.labels, before)
    assert noisy.kind == "pair"
    _, inst = apply_noise_spec("instance:0.4", ds, generator=gen())
    assert inst.kind == "instance"


def test_transition_spec_from_npy(tmp_path, digits):
    t = symmetric_transition(10, 0.5).numpy()
    np.save(tmp_path / "t.npy", t)
    _, out = apply_noise_spec(f"transition:{tmp_path / 't.npy'}", digits, generator=gen())
    assert out.kind == "transition" and 0.4 < out.realised_rate < 0.6
    np.save(tmp_path / "t3.npy", symmetric_transition(3, 0.5).numpy())
    with pytest.raises(ShapeError, match="must be a \\(10, 10\\)"):
        apply_noise_spec(f"transition:{tmp_path / 't3.npy'}", digits, generator=gen())


# ----------------------------------------------------------------------------- bad input
y4 = torch.tensor([0, 1, 2, 3])
BAD = [
    ("symmetric rate > 1", lambda: symmetric_noise(y4, 4, 1.1, generator=gen()), InvalidParameterError, "'rate'"),
    ("symmetric rate < 0", lambda: symmetric_noise(y4, 4, -0.1, generator=gen()), InvalidParameterError, "'rate'"),
    ("pair rate = 1", lambda: pair_flip_noise(y4, 4, 1.0, generator=gen()), InvalidParameterError, "'rate'"),
    ("map rate nan", lambda: class_map_noise(y4, 4, {0: 1}, float("nan"), generator=gen()), InvalidParameterError, "'rate'"),
    ("idn rate = 1", lambda: instance_dependent_noise(torch.rand(4, 2), y4, 4, 1.0, generator=gen()), InvalidParameterError, "'rate'"),
    ("num_classes < 2", lambda: symmetric_noise(torch.zeros(4, dtype=torch.long), 1, 0.1, generator=gen()), InvalidParameterError, "'num_classes'"),
    ("labels out of range", lambda: symmetric_noise(y4, 3, 0.1, generator=gen()), InvalidParameterError, "'labels'"),
    ("negative label", lambda: pair_flip_noise(torch.tensor([0, -1]), 3, 0.1, generator=gen()), InvalidParameterError, "'labels'"),
    ("float labels", lambda: symmetric_noise(torch.tensor([0.0, 1.0]), 3, 0.1, generator=gen()), InvalidTypeError, "'labels'"),
    ("no generator", lambda: symmetric_noise(y4, 4, 0.1, generator=None), InvalidTypeError, "'generator'"),
    ("T not square", lambda: transition_noise(y4, torch.ones(4, 3) / 3, generator=gen()), ShapeError, "'transition'"),
    ("T rows", lambda: transition_noise(y4, torch.full((4, 4), 0.3), generator=gen()), InvalidParameterError, "row"),
    ("T negative", lambda: transition_noise(y4, torch.tensor([[1.5, -0.5], [0.0, 1.0]]), generator=gen()), InvalidParameterError, "non-negative"),
    ("T too small", lambda: transition_noise(y4, symmetric_transition(3, 0.1), generator=gen()), InvalidParameterError, "'labels'"),
    ("T 1x1", lambda: transition_noise(torch.zeros(3, dtype=torch.long), torch.ones(1, 1), generator=gen()), ShapeError, "K >= 2"),
    ("map to itself", lambda: class_map_noise(y4, 4, {1: 1}, 0.2, generator=gen()), InvalidParameterError, "'mapping'"),
    ("map out of range", lambda: class_map_noise(y4, 4, {1: 7}, 0.2, generator=gen()), InvalidParameterError, "'mapping'"),
    ("idn length", lambda: instance_dependent_noise(torch.rand(3, 2), y4, 4, 0.2, generator=gen()), ShapeError, "'inputs'"),
    ("confusion shape", lambda: confusion_noise(y4, 4, 0.2, confusion=torch.ones(3, 3), generator=gen()), ShapeError, "'confusion'"),
    ("confusion negative", lambda: confusion_noise(y4, 4, 0.2, confusion=-torch.ones(4, 4), generator=gen()), InvalidParameterError, "'confusion'"),
    ("dilute m", lambda: dilute(torch.rand(4, 2), y4, 4, -1, generator=gen()), InvalidParameterError, "'m'"),
    ("random inputs kind", lambda: random_inputs(torch.rand(4, 2), generator=gen(), kind="noise"), InvalidParameterError, "'kind'"),
    ("spec kind", lambda: parse_noise_spec("uniform:0.2"), InvalidParameterError, "symmetric-inclusive"),
    ("spec no rate", lambda: parse_noise_spec("symmetric"), InvalidParameterError, "KIND:RATE"),
    ("spec rate text", lambda: parse_noise_spec("pair:high"), InvalidParameterError, "RATE a number"),
    ("spec pair 1", lambda: parse_noise_spec("pair:1"), InvalidParameterError, r"\[0, 1\)"),
    ("asym not 10", lambda: apply_noise_spec("cifar10-asym:0.2", Dataset(torch.rand(4, 2), y4), generator=gen()), InvalidParameterError, "10 classes"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_one_line_error(case):
    _, call, error, text = case
    with pytest.raises(error, match=text) as info:
        call()
    assert isinstance(info.value, RobustlabError)
    assert "\n" not in str(info.value)


def test_pair_rate_above_half_warns():
    with pytest.warns(UserWarning, match="not identifiable"):
        pair_flip_noise(y4, 4, 0.6, generator=gen())


# ----------------------------------------------------------------------------- differential: cleanlab
def test_same_transition_as_cleanlab_generator(labels):
    """cleanlab's benchmarking generator takes the *column*-stochastic noise matrix
    P(label = i | true = j) and realises it exactly; ours samples the row-stochastic T = noise_matrix^T.
    Both must give the same empirical transition (ours within binomial tolerance)."""
    noise_generation = pytest.importorskip("cleanlab.benchmarking.noise_generation")
    nm = noise_generation.generate_noise_matrix_from_trace(K, 0.6 * K, py=np.full(K, 1 / K),
                                                           valid_noise_matrix=True, seed=3)
    theirs = torch.from_numpy(noise_generation.generate_noisy_labels(labels.numpy(), nm))
    ours = transition_noise(labels, torch.from_numpy(nm.T.copy()), generator=gen(3))
    t = torch.from_numpy(nm.T.copy())
    # cleanlab rounds counts with the global prior, so its realisation is exact only to ~1e-2
    assert torch.allclose(empirical_transition(labels, theirs, K), t, atol=1e-2)
    assert_matches_t(labels, ours.labels, t)
    their_rate = float((theirs != labels).double().mean())
    assert within_binomial(ours.realised_rate, their_rate, N)


def test_zero_probability_classes_are_never_drawn():
    t = torch.tensor([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 0.3, 0.7, 0], [0.2, 0, 0.8, 0.0]],
                     dtype=torch.float64)
    y = torch.arange(4).repeat(25_000)
    out = transition_noise(y, t, generator=gen(1))
    counts = torch.bincount(y * 4 + out.labels, minlength=16).reshape(4, 4)
    assert bool((counts[t == 0] == 0).all()), counts
    assert_matches_t(y, out.labels, t)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_follows_labels_and_cpu_generator_gives_same_labels(labels):
    dev = torch.device("cuda")
    for fn, _ in GENERATORS.values():
        a = fn(labels, gen(5), 0.3)
        b = fn(labels.to(dev), gen(5), 0.3)
        assert b.labels.device.type == "cuda" and torch.equal(a.labels, b.labels.cpu())
    x = torch.rand(200, 6)
    y = labels[:200]
    a = instance_dependent_noise(x, y, K, 0.4, generator=gen())
    b = instance_dependent_noise(x.to(dev), y.to(dev), K, 0.4, generator=gen())
    assert b.labels.device.type == "cuda"


def test_exact_count_variant(labels):
    a = symmetric_noise(labels, K, 0.37, generator=gen(1), exact=True)
    assert a.num_flipped == round(0.37 * N)
    b = pair_flip_noise(labels, K, 0.2, generator=gen(1), exact=True)
    assert b.num_flipped == round(0.2 * N)
    assert torch.equal(b.labels[b.noise_mask], (labels[b.noise_mask] + 1) % K)
    inc = symmetric_noise(labels, K, 0.5, generator=gen(2), exact=True, include_true=True)
    assert within_binomial(inc.realised_rate, 0.5 * (K - 1) / K, round(0.5 * N))
    assert_matches_t(labels, a.labels, a.transition, sigmas=5)


def test_confusion_from_model_restores_mode_and_counts():
    from robustlab.label_noise import confusion_from_model

    class Constant(torch.nn.Module):  # always predicts class 2; dropout shows the mode is restored
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, x):
            out = torch.zeros(x.shape[0], 3)
            out[:, 2] = 1.0
            return self.drop(out) + out

    ds = Dataset(torch.rand(9, 2), torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2]))
    model = Constant().train()
    c = confusion_from_model(model, ds)
    assert model.training
    assert c.tolist() == [[0, 0, 2], [0, 0, 3], [0, 0, 4]]
    out = confusion_noise(ds.labels, 3, 1.0, confusion=c, generator=gen())
    assert out.labels.tolist()[:5] == [2, 2, 2, 2, 2]  # everything flips towards the confused class
