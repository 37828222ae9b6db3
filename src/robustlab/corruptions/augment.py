"""Training against corruptions: AugMix (+ Jensen-Shannon consistency), Gaussian noise
augmentation and corruption augmentation, as Trainer objectives.

Registered in :data:`robustlab.training.OBJECTIVES` as ``"augmix"``, ``"gaussian-augment"`` and
``"corruption-augment"`` (``robustlab train --method augmix``). The augmentations themselves
are public functions (:func:`augmix`, :func:`gaussian_augment`) so other packages (randomized
smoothing) and user code can reuse them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustlab._checks import (
    check_choice,
    check_generator,
    check_images,
    check_int,
    check_number,
    check_probability,
    fail,
)
from robustlab._constants import (
    AUGMIX_ALPHA,
    AUGMIX_JSD_WEIGHT,
    AUGMIX_MAX_DEPTH,
    AUGMIX_SEVERITY,
    AUGMIX_WIDTH,
    CORRUPTION_SEVERITIES,
)
from robustlab.corruptions.mnist_c import _eye, _warp
from robustlab.data.dataset import Batch
from robustlab.errors import InvalidTypeError
from robustlab.training.objective import OBJECTIVES, BaseObjective, ObjectiveOutput

__all__ = [
    "AUGMIX_ALL_OPERATIONS",
    "AUGMIX_OPERATIONS",
    "AugMix",
    "CorruptionAugmentation",
    "GaussianAugmentation",
    "augmix",
    "gaussian_augment",
    "jensen_shannon",
]

#: AugMix's default operations (``augmentations.augmentations`` in the official code): those that
#: do not overlap the ImageNet-C / CIFAR-C test corruptions.
AUGMIX_OPERATIONS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
                     "translate_x", "translate_y")
#: ``augmentations_all`` of the official code adds the four that overlap the test corruptions
#: (contrast, colour/saturation, brightness, sharpness/blur). Never the default.
AUGMIX_ALL_OPERATIONS = AUGMIX_OPERATIONS + ("color", "contrast", "brightness", "sharpness")

_MAX_LEVEL = 10.0


# --------------------------------------------------------------------------- helpers
def _require_generator(generator: torch.Generator | None) -> torch.Generator:
    """The generator an objective got in ``setup()``; fails if it was never set up."""
    if generator is None:
        fail("generator", "set by setup() (use the objective through a Trainer)", None)
    return generator


def _uniform(n: int, g: torch.Generator, like: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    u = torch.rand((n,), generator=g, device=g.device, dtype=torch.float64).to(like.device)
    return low + (high - low) * u


def _levels(n: int, severity: float, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``sample_level``: U(0.1, severity), on AugMix's 0-10 scale."""
    return _uniform(n, g, like, 0.1, severity)


def _signs(n: int, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.where(_uniform(n, g, like) < 0.5, -1.0, 1.0).to(torch.float64)


def _to_uint8_levels(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255)


def _autocontrast(x: torch.Tensor, severity: float, g: torch.Generator) -> torch.Tensor:
    # PIL ImageOps.autocontrast (cutoff 0): stretch each channel's [min, max] to [0, 1].
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, 1.0 / (hi - lo).clamp_min(1e-12), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x)


def _equalize(x: torch.Tensor, severity: float, g: torch.Generator) -> torch.Tensor:
    # PIL ImageOps.equalize per channel: lut[i] = (step // 2 + #pixels below i) // step with
    # step = (#pixels - #pixels in the highest occupied level) // 255; identity if step == 0.
    n, c, h, w = x.shape
    v = _to_uint8_levels(x).long().reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, v, torch.ones_like(v))
    top = 255 - torch.argmax((hist.flip(1) > 0).long(), dim=1)
    last = hist.gather(1, top[:, None])[:, 0]
    step = (h * w - last) // 255
    below = torch.cumsum(hist, 1) - hist
    safe = step.clamp_min(1)[:, None]
    lut = ((step[:, None] // 2 + below) // safe).clamp(max=255)
    lut = torch.where(step[:, None] > 0, lut, torch.arange(256, device=x.device).expand(n * c, 256))
    return (lut.gather(1, v).to(x.dtype) / 255).reshape(n, c, h, w)


def _posterize(x: torch.Tensor, severity: float, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    bits = 4 - torch.floor(_levels(n, severity, g, x) * 4 / _MAX_LEVEL).long()
    shift = (8 - bits)[:, None, None, None]
    v = _to_uint8_levels(x).long()
    return ((v >> shift) << shift).to(x.dtype) / 255


def _solarize(x: torch.Tensor, severity: float, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    threshold = 256 - torch.floor(_levels(n, severity, g, x) * 256 / _MAX_LEVEL)
    v = _to_uint8_levels(x)
    return torch.where(v >= threshold[:, None, None, None].to(x.dtype), 1 - x, x)


def _affine(x: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return _warp(x, m, t).to(x.dtype)


def _rotate(x: torch.Tensor, severity: float, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    degrees = torch.floor(_levels(n, severity, g, x) * 30 / _MAX_LEVEL) * _signs(n, g, x)
    r = degrees * math.pi / 180
    m = torch.stack([torch.stack([torch.cos(r), torch.sin(r)], 1),
                     torch.stack([-torch.sin(r), torch.cos(r)], 1)], 1)
    return _affine(x, m, torch.zeros(n, 2, dtype=torch.float64, device=x.device))


def _shear(x: torch.Tensor, severity: float, g: torch.Generator, axis: int) -> torch.Tensor:
    # PIL AFFINE (1, s, 0, 0, 1, 0) shears about the image's top-left corner, not its centre.
    n, _, h, w = x.shape
    s = _levels(n, severity, g, x) * 0.3 / _MAX_LEVEL * _signs(n, g, x)
    m = _eye(n, x)
    t = torch.zeros(n, 2, dtype=torch.float64, device=x.device)
    if axis == 0:
        m[:, 0, 1] = s
        t[:, 0] = s * h / 2
    else:
        m[:, 1, 0] = s
        t[:, 1] = s * w / 2
    return _affine(x, m, t)


def _translate(x: torch.Tensor, severity: float, g: torch.Generator, axis: int) -> torch.Tensor:
    n, _, h, w = x.shape
    size = w if axis == 0 else h
    pixels = torch.floor(_levels(n, severity, g, x) * (size / 3) / _MAX_LEVEL) * _signs(n, g, x)
    m = _eye(n, x)
    t = torch.zeros(n, 2, dtype=torch.float64, device=x.device)
    t[:, axis] = pixels
    return _affine(x, m, t)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    wts = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * wts).sum(1, keepdim=True)


def _enhance(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL ImageEnhance: blend with a degenerate image, factor in [0.1, 1.9].
    f = factor.to(x.dtype)[:, None, None, None]
    return degenerate + f * (x - degenerate)


def _factor(n: int, severity: float, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return _levels(n, severity, g, like) * 1.8 / _MAX_LEVEL + 0.1


def _color(x: torch.Tensor, severity: float, g: torch.Generator) -> torch.Tensor:
    return _enhance(x, _grey(x).expand_as(x), _factor(x.shape[0], severity, g, x))


def _contrast(x: torch.Tensor, severity: float, g: torch.Generator) -> torch.Tensor:
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
    return _enhance(x, mean, _factor(x.shape[0], severity, g, x))


def _brightness(x: torch.Tensor, severity: float, g: torch.Generator) -> torch.Tensor:
    return _enhance(x, torch.zeros_like(x), _factor(x.shape[0], severity, g, x))


def _sharpness(x: torch.Tensor, severity: float, g: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    k = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    smooth = F.conv2d(F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3))
    smooth = smooth.reshape(n, c, h, w)
    return _enhance(x, smooth, _factor(n, severity, g, x))


_OPS: Mapping[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "posterize": _posterize,
    "rotate": _rotate,
    "solarize": _solarize,
    "shear_x": lambda x, s, g: _shear(x, s, g, 0),
    "shear_y": lambda x, s, g: _shear(x, s, g, 1),
    "translate_x": lambda x, s, g: _translate(x, s, g, 0),
    "translate_y": lambda x, s, g: _translate(x, s, g, 1),
    "color": _color,
    "contrast": _contrast,
    "brightness": _brightness,
    "sharpness": _sharpness,
}


# --------------------------------------------------------------------------- AugMix
def augmix(
    x: Any,
    *,
    generator: torch.Generator,
    width: int = AUGMIX_WIDTH,
    depth: int = -1,
    severity: float = AUGMIX_SEVERITY,
    alpha: float = AUGMIX_ALPHA,
    operations: Sequence[str] = AUGMIX_OPERATIONS,
) -> torch.Tensor:
    """AugMix one augmented view of each image (Hendrycks et al. 2020, Algorithm 1).

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), float in [0, 1]
    generator : torch.Generator
    width : int, default 3
        Number of augmentation chains mixed.
    depth : int, default -1
        Operations per chain; ``-1`` draws it uniformly from {1, 2, 3} per chain and image.
    severity : float in (0.1, 10], default 3
        Operation strength on AugMix's 0-10 scale; each operation draws its level from
        ``U(0.1, severity)``.
    alpha : float > 0, default 1
        Concentration of the Dirichlet chain weights and of the Beta skip-connection weight.
    operations : sequence of str, default :data:`AUGMIX_OPERATIONS`
        The default excludes operations that overlap the test corruptions (keep it so when
        measuring corruption robustness); :data:`AUGMIX_ALL_OPERATIONS` lists every option.

    Returns
    -------
    Tensor of shape (N, C, H, W), in [0, 1]

    Notes
    -----
    ``w ~ Dirichlet(alpha, ..., alpha)``, ``m ~ Beta(alpha, alpha)``, per image;
    ``x_aug = (1 - m) x + m sum_i w_i chain_i(x)``, each chain a composition of ``depth``
    operations drawn uniformly from ``operations``. Mixing happens in [0, 1] pixel space; the
    official code mixes normalised tensors, which gives the same image since the weights sum to
    one and normalisation is affine. Operation magnitudes follow the official
    ``augmentations.py`` (rotate up to 30 deg, shear up to 0.3, translate up to a third of the
    image, posterize to 4-``level`` bits, solarize threshold 256 - 25.6 ``level``; integer
    truncation where the reference uses ``int``); the PIL operations are re-implemented in
    batched torch (bilinear affine warps with black fill as PIL's ``BILINEAR``).

    References
    ----------
    D. Hendrycks, N. Mu, E. D. Cubuk, B. Zoph, J. Gilmer, B. Lakshminarayanan. AugMix: A Simple
    Data Processing Method to Improve Robustness and Uncertainty. ICLR 2020.
    """
    x = check_images("x", x)
    check_generator("generator", generator)
    width = check_int("width", width, low=1)
    depth = check_int("depth", depth, low=-1)
    if depth == 0:
        fail("depth", "-1 (random in 1-3) or a positive integer", depth)
    severity = check_number("severity", severity, low=0.1, high=_MAX_LEVEL, low_inclusive=False)
    alpha = check_number("alpha", alpha, low=0.0, low_inclusive=False)
    ops = _check_operations(operations)
    return _augmix_impl(x, generator, width, depth, severity, alpha, ops)


def _check_operations(operations: Any) -> tuple[str, ...]:
    if isinstance(operations, str) or not isinstance(operations, Sequence) or not operations:
        fail("operations", "a non-empty sequence of operation names", operations, error=InvalidTypeError)
    return tuple(check_choice("operations", op, AUGMIX_ALL_OPERATIONS) for op in operations)


def _augmix_impl(x: torch.Tensor, g: torch.Generator, width: int, depth: int, severity: float,
                 alpha: float, ops: tuple[str, ...]) -> torch.Tensor:
    n = x.shape[0]
    if n == 0:
        return x.clone()
    # Dirichlet/Beta need gamma draws, which torch cannot take from a generator: a NumPy
    # generator seeded from ours keeps the whole augmentation reproducible.
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,), generator=g, device=g.device)))
    ws = torch.from_numpy(rng.dirichlet([alpha] * width, size=n)).to(x.device, x.dtype)
    m = torch.from_numpy(rng.beta(alpha, alpha, size=n)).to(x.device, x.dtype)
    max_depth = AUGMIX_MAX_DEPTH if depth < 0 else depth
    mix = torch.zeros_like(x)
    for i in range(width):
        if depth < 0:
            chain_depth = torch.randint(1, AUGMIX_MAX_DEPTH + 1, (n,), generator=g, device=g.device).to(x.device)
        else:
            chain_depth = torch.full((n,), depth, device=x.device)
        aug = x.clone()
        for step in range(max_depth):
            choice = torch.randint(0, len(ops), (n,), generator=g, device=g.device).to(x.device)
            active = chain_depth > step
            for k, op in enumerate(ops):
                idx = torch.nonzero(active & (choice == k)).flatten()
                if idx.numel():
                    aug[idx] = _OPS[op](aug[idx], severity, g).clamp(0, 1)
        mix += ws[:, i, None, None, None] * aug
    mixed = (1 - m)[:, None, None, None] * x + m[:, None, None, None] * mix
    return mixed.clamp_(0, 1)


def jensen_shannon(*logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Jensen-Shannon divergence among the softmax distributions of several logits, batch mean.

    ``JS(p_1, ..., p_k) = (1/k) sum_i KL(p_i || M)`` with ``M = (1/k) sum_i p_i`` (Hendrycks et
    al. 2020, Eq. 1-2); ``M`` is clamped to ``[eps, 1]`` before the log as in the official code.
    """
    if len(logits) < 2:
        fail("logits", "at least two logit tensors", len(logits))
    probs = [F.softmax(z, dim=1) for z in logits]
    log_mixture = torch.clamp(torch.stack(probs).mean(0), eps, 1).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / len(probs)


@OBJECTIVES.register("augmix")
class AugMix(BaseObjective):
    """AugMix training with the Jensen-Shannon consistency loss (Hendrycks et al. 2020).

    Parameters
    ----------
    width : int, default 3
    depth : int, default -1 (random 1-3)
    severity : float, default 3
    alpha : float, default 1
    jsd_weight : float >= 0, default 12
        ``lambda`` of the consistency term. With 0 the model trains on one AugMix view with
        plain cross entropy (the paper's "AugMix without JSD" ablation) and returns no clean
        logits (no training accuracy, no per-example records).
    operations : sequence of str, default :data:`AUGMIX_OPERATIONS`

    Notes
    -----
    ``loss = CE(f(x), y) + lambda * JS(f(x), f(augmix(x)), f(augmix(x)))`` with the three views
    in one forward pass (batch statistics are shared, as in the official CIFAR code).
    """

    name = "augmix"

    def __init__(self, *, width: int = AUGMIX_WIDTH, depth: int = -1, severity: float = AUGMIX_SEVERITY,
                 alpha: float = AUGMIX_ALPHA, jsd_weight: float = AUGMIX_JSD_WEIGHT,
                 operations: Sequence[str] = AUGMIX_OPERATIONS) -> None:
        self.width = check_int("width", width, low=1)
        self.depth = check_int("depth", depth, low=-1)
        if self.depth == 0:
            fail("depth", "-1 (random in 1-3) or a positive integer", depth)
        self.severity = check_number("severity", severity, low=0.1, high=_MAX_LEVEL, low_inclusive=False)
        self.alpha = check_number("alpha", alpha, low=0.0, low_inclusive=False)
        self.jsd_weight = check_number("jsd_weight", jsd_weight, low=0.0)
        self.operations = _check_operations(operations)
        self._generator: torch.Generator | None = None

    def setup(self, *, model: torch.nn.Module, train: Any, config: Any, device: torch.device,
              generator: torch.Generator) -> None:
        if not train.is_image:
            fail("train", "image data for AugMix", train)
        self._generator = generator

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        return _augmix_impl(x, _require_generator(self._generator), self.width, self.depth, self.severity,
                            self.alpha, self.operations)

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        x, y = batch.inputs, batch.labels
        if self.jsd_weight == 0:
            logits_aug = model(self._view(x))
            return ObjectiveOutput(loss=F.cross_entropy(logits_aug, y))
        views = torch.cat([x, self._view(x), self._view(x)])
        logits_clean, logits_1, logits_2 = model(views).chunk(3)
        ce = F.cross_entropy(logits_clean, y)
        jsd = jensen_shannon(logits_clean, logits_1, logits_2)
        return ObjectiveOutput(loss=ce + self.jsd_weight * jsd, logits=logits_clean,
                               metrics={"jsd": jsd.detach(), "ce": ce.detach()})


# --------------------------------------------------------------------------- Gaussian noise
def gaussian_augment(x: Any, sigma: float, *, generator: torch.Generator, clip: bool = False) -> torch.Tensor:
    """``x + sigma * z`` with ``z ~ N(0, I)`` (optionally clipped to [0, 1]).

    This is the training-time noise of randomized smoothing (Cohen et al., ICML 2019, Sec. 3.2:
    train the base classifier on ``x + N(0, sigma^2 I)``, *without* clipping), so
    ``clip=False`` is the default. Noise is drawn from ``generator`` (on its device) and moved
    to ``x``'s device; for a CUDA input with a CPU generator a CUDA generator is seeded from it,
    so no image-sized transfer is needed.
    """
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        fail("x", "a float tensor", x, error=InvalidTypeError)
    sigma = check_number("sigma", sigma, low=0.0)
    check_generator("generator", generator)
    return _gaussian_impl(x, sigma, generator, clip)


def _gaussian_impl(x: torch.Tensor, sigma: float, g: torch.Generator, clip: bool) -> torch.Tensor:
    if x.device.type == g.device.type:
        z = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    else:
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=g, device=g.device))
        local = torch.Generator(device=x.device).manual_seed(seed)
        z = torch.randn(x.shape, generator=local, device=x.device, dtype=x.dtype)
    out = x + sigma * z
    return out.clamp_(0, 1) if clip else out


@OBJECTIVES.register("gaussian-augment")
class GaussianAugmentation(BaseObjective):
    """Cross entropy on Gaussian-noise-augmented inputs.

    Parameters
    ----------
    sigma : float >= 0, default 0.25
        Noise std in input units ([0, 1] pixels). For randomized smoothing train at the sigma
        you will certify with (Cohen et al. 2019 use 0.12, 0.25, 0.5, 1.0).
    clip : bool, default False
        Clip the noisy input to [0, 1]. Smoothing's guarantee assumes unclipped noise.
    probability : float in [0, 1], default 1.0
        Fraction of each batch that is noised (the rest stays clean).

    Notes
    -----
    ``loss = CE(f(x + sigma z), y)``. Returns no clean logits (the model never sees the clean
    batch when ``probability = 1``), so the Trainer reports no training accuracy.
    """

    name = "gaussian-augment"

    def __init__(self, *, sigma: float = 0.25, clip: bool = False, probability: float = 1.0) -> None:
        self.sigma = check_number("sigma", sigma, low=0.0)
        self.clip = bool(clip)
        self.probability = check_probability("probability", probability)
        self._generator: torch.Generator | None = None

    def setup(self, *, model: torch.nn.Module, train: Any, config: Any, device: torch.device,
              generator: torch.Generator) -> None:
        self._generator = generator

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        g = _require_generator(self._generator)
        x = batch.inputs
        noisy = _gaussian_impl(x, self.sigma, g, self.clip)
        if self.probability < 1:
            keep = torch.rand((x.shape[0],), generator=g, device=g.device).to(x.device) >= self.probability
            noisy = torch.where(keep.view(-1, *([1] * (x.ndim - 1))), x, noisy)
        return ObjectiveOutput(loss=F.cross_entropy(model(noisy), batch.labels))


# --------------------------------------------------------------------------- corruptions
@OBJECTIVES.register("corruption-augment")
class CorruptionAugmentation(BaseObjective):
    """Cross entropy on images corrupted with randomly chosen common corruptions.

    Parameters
    ----------
    corruptions : sequence of str, optional
        Pool to draw from (names of :data:`robustlab.corruptions.IMAGE_CORRUPTIONS`); default all.
    exclude : sequence of str, default ()
        Removed from the pool, e.g. the test corruptions so evaluation stays on unseen shifts.
    severities : sequence of int, default (1, 2, 3, 4, 5)
    probability : float in [0, 1], default 0.5
        Chance that an example is corrupted (otherwise it stays clean).
    preset : {"cifar", "imagenet", "mnist"}, optional
        Parameter table; default ``preset_for`` the training images.

    Notes
    -----
    Each example independently: with ``probability``, a (corruption, severity) pair drawn
    uniformly from the pool; examples sharing a pair are corrupted in one batched call.
    ``loss = CE(f(x'), y)``; no clean logits are returned.
    """

    name = "corruption-augment"

    def __init__(self, *, corruptions: Sequence[str] | None = None, exclude: Sequence[str] = (),
                 severities: Sequence[int] = CORRUPTION_SEVERITIES, probability: float = 0.5,
                 preset: str | None = None) -> None:
        from robustlab.corruptions.image import IMAGE_CORRUPTIONS

        pool = IMAGE_CORRUPTIONS if corruptions is None else tuple(corruptions)
        pool = tuple(check_choice("corruptions", c, IMAGE_CORRUPTIONS) for c in pool)
        self.exclude = tuple(check_choice("exclude", c, IMAGE_CORRUPTIONS) for c in exclude)
        self.corruptions = tuple(c for c in pool if c not in self.exclude)
        if not self.corruptions:
            fail("exclude", "to leave at least one corruption in the pool", list(exclude))
        self.severities = tuple(check_int("severities", s, low=1, high=5) for s in severities)
        if not self.severities:
            fail("severities", "at least one severity in 1-5", list(severities))
        self.probability = check_probability("probability", probability)
        self.preset = preset
        self._generator: torch.Generator | None = None
        self._preset: str | None = None

    def setup(self, *, model: torch.nn.Module, train: Any, config: Any, device: torch.device,
              generator: torch.Generator) -> None:
        from robustlab.corruptions.image import preset_for

        if not train.is_image:
            fail("train", "image data for corruption augmentation", train)
        c, h, w = train.input_shape
        self._preset = preset_for(min(h, w), c) if self.preset is None else self.preset
        self._generator = generator

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        from robustlab.corruptions.image import corrupt

        g = _require_generator(self._generator if self._preset is not None else None)
        x = batch.inputs
        n = x.shape[0]
        hit = torch.rand((n,), generator=g, device=g.device) < self.probability
        pair = torch.randint(0, len(self.corruptions) * len(self.severities), (n,), generator=g, device=g.device)
        out = x.clone()
        for p in torch.unique(pair[hit]).tolist():
            idx = torch.nonzero(hit & (pair == p)).flatten().to(x.device)
            name = self.corruptions[p // len(self.severities)]
            severity = self.severities[p % len(self.severities)]
            out[idx] = corrupt(x[idx], name, severity, generator=g, preset=self._preset).to(x.dtype)
        return ObjectiveOutput(loss=F.cross_entropy(model(out), batch.labels))
