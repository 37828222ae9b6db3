"""The MNIST-C corruptions (Mu & Gilmer 2019), batched in torch.

MNIST-C applies each corruption at one fixed strength. The parameters here are the default
severity arguments of the functions in the authors' ``corruptions.py``
(github.com/google-research/mnist-c), which is how the published data set was generated:

================  ==================================================================================
shot_noise        Poisson with rate ``3 x`` (their severity 5), ``x' = Poisson(3x) / 3``
impulse_noise     salt-and-pepper, 17% of pixels, half salt (severity 4)
glass_blur        Gaussian sigma 0.7, max displacement 1 px, 2 iterations (severity 1)
motion_blur       one-sided Gaussian line kernel, radius 10, sigma 3, angle U(-45, 45) deg (sev. 1)
shear             affine shear 0.4 rad, random sign, about the centre (severity 2)
scale             zoom out by 1/0.7 about the centre (severity 3)
rotate            0.4 rad (about 23 deg), random sign, about the centre (severity 2)
brightness        +0.5 on the HSV value; on grey images exactly ``clip(x + 0.5)`` (severity 5)
translate         3 px along each axis, random signs (severity 3)
stripe            invert the left and right quarter of the columns (7 of 28 on each side)
fog               plasma fractal (map 256, wibble decay 1.4), strength 3.0 (severity 5)
spatter           mud spatter: liquid N(0.65, 0.3), sigma 1, threshold 0.65, mask sigma 1.5, 63/255
dotted_line       a random line across the image, dotted every 2 columns, intensity log(1-d/2.3)+1
zigzag            a random zigzag of 2-px legs across columns 2-25, same line profile
canny_edges       Canny edge map (sigma 1, thresholds 0.1 / 0.2 on the Sobel magnitude)
================  ==================================================================================

Other image sizes. The parameters are defined on 28 x 28 images. With ``r = min(H, W) / 28``:
pixel distances (translation, glass-blur displacement, motion-blur radius and sigma, blur
sigmas, Canny sigma) are multiplied by ``r`` (glass-blur displacement at least 1 px); angles and
zoom factors are size-free; the overlays (fog, spatter, dotted line, zigzag) are drawn on the
28 x 28 grid exactly as the reference and resized to ``H x W`` (area averaging when shrinking,
bilinear when enlarging). At 28 px nothing is rescaled.

Differences from the reference code, all deliberate: randomness comes from a torch generator
(so no bit-identical outputs); motion blur is written from ImageMagick's MotionBlurImage
definition (integer tap offsets, edge replication) instead of calling ImageMagick; Canny follows
scikit-image's algorithm (mask-normalised Gaussian, Sobel, bilinear non-maximum suppression,
8-connected hysteresis) and agrees with ``skimage.feature.canny`` on most pixels (tested), not
all; the reference casts outputs to float in [0, 255], here they stay in [0, 1].

References
----------
N. Mu and J. Gilmer. MNIST-C: A Robustness Benchmark for Computer Vision. ICML 2019 Workshop on
Uncertainty and Robustness in Deep Learning (arXiv:1906.02337).
J. Canny. A Computational Approach to Edge Detection. IEEE TPAMI 8(6), 1986.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from robustlab._checks import check_choice, check_generator, check_images, fail
from robustlab._constants import MNIST_C_SIZE
from robustlab.errors import ShapeError

__all__ = ["MNIST_C_CORRUPTIONS", "corrupt_mnist_c"]

MNIST_C_CORRUPTIONS = ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale",
                       "rotate", "brightness", "translate", "stripe", "fog", "spatter", "dotted_line",
                       "zigzag", "canny_edges")

_MIN_SIZE = 8
#: Images per chunk for the 256 x 256 plasma fractal (bounded memory).
_PLASMA_CHUNK = 32


def corrupt_mnist_c(x: torch.Tensor, name: str, *, generator: torch.Generator) -> torch.Tensor:
    """Apply the MNIST-C corruption ``name`` (its one published strength) to a batch.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), float in [0, 1]
        Grey (C = 1) as in MNIST; RGB is accepted (every channel treated alike). H, W >= 8.
    name : str
        One of :data:`MNIST_C_CORRUPTIONS`.
    generator : torch.Generator
        All randomness (per-image noise, angles, lines); the same state gives the same output.

    Returns
    -------
    Tensor of shape (N, C, H, W), in [0, 1], on ``x``'s device with ``x``'s dtype.

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(2, 1, 28, 28)
    >>> corrupt_mnist_c(x, "brightness", generator=torch.Generator().manual_seed(0)).max().item()
    0.5
    """
    x = check_images("x", x)
    check_choice("name", name, MNIST_C_CORRUPTIONS)
    check_generator("generator", generator)
    if x.shape[-1] < _MIN_SIZE or x.shape[-2] < _MIN_SIZE:
        raise ShapeError(f"The 'x' parameter must hold images of at least {_MIN_SIZE} x {_MIN_SIZE} pixels. "
                         f"Got {tuple(x.shape[-2:])} instead.", expected=_MIN_SIZE, got=tuple(x.shape))
    if x.shape[0] == 0:
        return x.clone()
    out = _CORRUPTIONS[name](x, generator)
    return out.clamp_(0.0, 1.0).to(x.dtype)


# --------------------------------------------------------------------------- random draws
def _rand(shape: tuple[int, ...], g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) drawn on the generator's device (same numbers on CPU and GPU), moved to ``like``."""
    return torch.rand(shape, generator=g, device=g.device, dtype=torch.float64).to(like.device)


def _randn(shape: tuple[int, ...], g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=g, device=g.device, dtype=torch.float64).to(like.device)


def _randint(low: int, high: int, shape: tuple[int, ...], g: torch.Generator,
             like: torch.Tensor) -> torch.Tensor:
    """Integers in ``[low, high)`` like ``numpy.random.randint``."""
    return torch.randint(low, high, shape, generator=g, device=g.device).to(like.device)


def _sign(n: int, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return _randint(0, 2, (n,), g, like).to(torch.float64) * 2 - 1


def _ratio(x: torch.Tensor) -> float:
    return min(x.shape[-2], x.shape[-1]) / MNIST_C_SIZE


# --------------------------------------------------------------------------- filters
def _gauss_kernel(sigma: float, device: torch.device, truncate: float = 4.0) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)  # scipy.ndimage.gaussian_filter's support
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _sep_conv(x: torch.Tensor, k: torch.Tensor, *, mode: str) -> torch.Tensor:
    """Separable 2-D filter of ``(N, C, H, W)`` with the 1-D kernel ``k``; ``mode`` as in F.pad."""
    n, c, h, w = x.shape
    r = (k.numel() - 1) // 2
    y = x.reshape(n * c, 1, h, w)
    if mode == "constant":
        y = F.pad(y, (r, r, r, r))
    else:
        # 'replicate' (scipy 'nearest'); repeated so a kernel wider than the image still works
        y = F.pad(y, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.to(y.dtype).view(1, 1, 1, -1))
    y = F.conv2d(y, k.to(y.dtype).view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``skimage.filters.gaussian`` (mode 'nearest', truncate 4)."""
    if sigma <= 0:
        return x
    return _sep_conv(x, _gauss_kernel(sigma, x.device), mode="replicate")


def _resize(overlay: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Resize a ``(N, 1, 28, 28)`` overlay to ``(N, 1, h, w)``."""
    if overlay.shape[-2:] == (h, w):
        return overlay
    mode = "area" if h <= overlay.shape[-2] and w <= overlay.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(overlay, size=(h, w), mode=mode, **kwargs)


# --------------------------------------------------------------------------- geometry
def _warp(x: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Bilinear warp with zero fill: output pixel ``p`` reads input ``m (p - c) + c + t``.

    ``m`` is ``(N, 2, 2)`` and ``t`` ``(N, 2)`` in (column, row) pixel units; ``c`` is the image
    centre ``((W-1)/2, (H-1)/2)``, as ``skimage.transform.warp`` with the centre-fixing affine
    of the reference code (order 1, constant 0 outside).
    """
    n, _, h, w = x.shape
    d = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], dtype=torch.float64, device=x.device)
    theta = torch.empty(n, 2, 3, dtype=torch.float64, device=x.device)
    theta[:, :, :2] = d[None, :, None] * m / d[None, None, :]
    theta[:, :, 2] = d[None] * t
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _eye(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, dtype=torch.float64, device=like.device).expand(n, 2, 2).clone()


# --------------------------------------------------------------------------- corruptions
def _shot_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    lam = 3.0
    rate = (x.to(torch.float64) * lam).to(g.device)
    return (torch.poisson(rate, generator=g) / lam).to(x.device)


def _impulse_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    amount = 0.17
    flip = _rand(tuple(x.shape), g, x) < amount
    salt = _rand(tuple(x.shape), g, x) < 0.5
    out = torch.where(flip & salt, torch.ones_like(x), x)
    return torch.where(flip & ~salt, torch.zeros_like(x), out)


def _glass_blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    sigma, delta, iterations = 0.7 * _ratio(x), max(1, round(1 * _ratio(x))), 2
    n, _c, h, w = x.shape
    # The reference quantises the blurred image to uint8 (truncation) before shuffling.
    img = torch.floor(_gaussian_blur(x.to(torch.float64), sigma) * 255) / 255
    rows = list(range(h - delta, delta, -1))
    cols = list(range(w - delta, delta, -1))
    steps = iterations * len(rows) * len(cols)
    coin = _rand((steps, n), g, x) < 0.5
    shift = _randint(-delta, delta, (steps, n, 2), g, x)
    idx = torch.arange(n, device=x.device)
    flat = img.permute(0, 2, 3, 1).contiguous()  # (N, H, W, C): one pixel per index
    k = 0
    for _ in range(iterations):
        for hh in rows:
            for ww in cols:
                hp, wp = hh + shift[k, :, 1], ww + shift[k, :, 0]
                a, b = flat[idx, hh, ww], flat[idx, hp, wp]
                sel = coin[k][:, None]
                flat[idx, hh, ww] = torch.where(sel, b, a)
                flat[idx, hp, wp] = torch.where(sel, a, b)
                k += 1
    return _gaussian_blur(flat.permute(0, 3, 1, 2), sigma)


def _motion_blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _c, h, w = x.shape
    radius, sigma = 10 * _ratio(x), 3 * _ratio(x)
    width = int(2 * math.ceil(radius) + 1)  # ImageMagick GetOptimalKernelWidth1D for radius > 0
    taps = torch.arange(width, device=x.device, dtype=torch.float64)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    angle = (_rand((n,), g, x) * 90 - 45) * math.pi / 180
    # Integer offsets along the angle, rounded as in MotionBlurImage; edges replicate.
    ox = torch.round(taps[None] * torch.cos(angle)[:, None]).long()  # (N, width)
    oy = torch.round(taps[None] * torch.sin(angle)[:, None]).long()
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    out = torch.zeros_like(x, dtype=torch.float64)
    src = x.to(torch.float64)
    bidx = torch.arange(n, device=x.device)[:, None, None]
    for i in range(width):
        yy = (ys[None, :, None] + oy[:, i, None, None]).clamp(0, h - 1).expand(n, h, w)
        xx = (xs[None, None, :] + ox[:, i, None, None]).clamp(0, w - 1).expand(n, h, w)
        out += kernel[i] * src.permute(0, 2, 3, 1)[bidx, yy, xx].permute(0, 3, 1, 2)
    return out


def _shear(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    s = 0.4 * _sign(n, g, x)
    m = _eye(n, x)
    m[:, 0, 1] = -torch.sin(s)  # skimage AffineTransform(shear=s): [[1, -sin s], [0, cos s]]
    m[:, 1, 1] = torch.cos(s)
    return _warp(x, m, torch.zeros(n, 2, dtype=torch.float64, device=x.device))


def _rotate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    r = 0.4 * _sign(n, g, x)
    m = torch.stack([torch.stack([torch.cos(r), -torch.sin(r)], 1),
                     torch.stack([torch.sin(r), torch.cos(r)], 1)], 1)
    return _warp(x, m, torch.zeros(n, 2, dtype=torch.float64, device=x.device))


def _scale(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    return _warp(x, _eye(n, x) / 0.7, torch.zeros(n, 2, dtype=torch.float64, device=x.device))


def _translate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    t = torch.stack([_sign(n, g, x), _sign(n, g, x)], 1) * 3 * _ratio(x)
    return _warp(x, _eye(n, x), t)


def _brightness(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    # gray -> RGB -> HSV, V += 0.5, back to gray: V of a grey pixel is its value and S = 0.
    return x + 0.5


def _stripe(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    w = x.shape[-1]
    k = round(w * 7 / MNIST_C_SIZE)
    out = x.clone()
    out[..., :k] = 1 - x[..., :k]
    out[..., w - k:] = 1 - x[..., w - k:]
    return out


def _plasma(n: int, g: torch.Generator, like: torch.Tensor, *, mapsize: int = 256,
            wibbledecay: float = 1.4) -> torch.Tensor:
    """Diamond-square height maps in [0, 1], shape ``(n, mapsize, mapsize)`` (reference algorithm)."""
    # float32 is enough: the map is normalised to [0, 1] and only shapes the fog.
    maps = torch.zeros(n, mapsize, mapsize, dtype=torch.float32, device=like.device)
    step, wibble = mapsize, 100.0

    def wibbled(a: torch.Tensor) -> torch.Tensor:
        u = torch.rand(tuple(a.shape), generator=g, device=g.device).to(like.device)
        return a / 4 + wibble * (u * 2 * wibble - wibble)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        sq = corners + corners.roll(-1, dims=1)
        sq = sq + sq.roll(-1, dims=2)
        maps[:, half::step, half::step] = wibbled(sq)
        dr = maps[:, half::step, half::step]
        ul = maps[:, 0::step, 0::step]
        lt = dr + dr.roll(1, dims=1) + ul + ul.roll(-1, dims=2)
        maps[:, 0::step, half::step] = wibbled(lt)
        tt = dr + dr.roll(1, dims=2) + ul + ul.roll(-1, dims=1)
        maps[:, half::step, 0::step] = wibbled(tt)
        step //= 2
        wibble /= wibbledecay
    maps = maps - maps.amin(dim=(1, 2), keepdim=True)
    return (maps / maps.amax(dim=(1, 2), keepdim=True)).to(torch.float64)


def _fog(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    strength = 3.0
    n, _, h, w = x.shape
    parts = []
    for start in range(0, n, _PLASMA_CHUNK):
        m = min(_PLASMA_CHUNK, n - start)
        parts.append(_plasma(m, g, x)[:, None, :MNIST_C_SIZE, :MNIST_C_SIZE].clone())
    fog = _resize(torch.cat(parts), h, w)
    xd = x.to(torch.float64)
    max_val = xd.amax(dim=(1, 2, 3), keepdim=True)
    return (xd + strength * fog) * max_val / (max_val + strength)


def _spatter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    s = MNIST_C_SIZE
    liquid = _randn((n, 1, s, s), g, x) * 0.3 + 0.65
    liquid = _gaussian_blur(liquid, 1.0)
    liquid = torch.where(liquid < 0.65, torch.zeros_like(liquid), liquid)
    m = _gaussian_blur((liquid > 0.65).to(torch.float64), 1.5)
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    m = _resize(m, h, w)
    return x.to(torch.float64) * (1 - m) + (63 / 255) * m


def _line(c0: torch.Tensor, r0: torch.Tensor, c1: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
    """The reference ``line_from_points`` on the 28 x 28 grid, per image: ``(N, 28, 28)``.

    Intensity ``log(1 - d / 2.3) + 1`` (clipped to [0, 1]) of the *vertical* distance ``d`` to the
    line through ``(c0, r0)`` and ``(c1, r1)``, limited to columns ``floor(c0) <= c < ceil(c1)``;
    zero when ``c1 == c0``.
    """
    s = MNIST_C_SIZE
    grid = torch.arange(s, dtype=torch.float64, device=c0.device)
    cc, rr = grid[None, None, :], grid[None, :, None]
    same = c1 == c0
    slope = (r1 - r0) / torch.where(same, torch.ones_like(c1), c1 - c0)
    f = slope[:, None, None] * (cc - c0[:, None, None]) + r0[:, None, None]
    dist = (rr - f).abs().clamp(0, 2.3 - 1e-10)
    val = (torch.log(1 - dist / 2.3) + 1).clamp(0, 1)
    left, right = torch.floor(c0), torch.ceil(c1)
    inside = (cc >= left[:, None, None]) & (cc < right[:, None, None])
    return torch.where(inside & ~same[:, None, None], val, torch.zeros_like(val))


def _overlay(x: torch.Tensor, lines: torch.Tensor) -> torch.Tensor:
    _n, _, h, w = x.shape
    return x.to(torch.float64) + _resize(lines[:, None], h, w)


def _dotted_line(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    r = _randint(0, 27, (n, 2), g, x).to(torch.float64)
    zeros = torch.zeros(n, dtype=torch.float64, device=x.device)
    lines = _line(zeros, r[:, 0], zeros + 27, r[:, 1])
    cols = torch.arange(MNIST_C_SIZE, device=x.device)
    # Columns are blanked in alternating pairs, starting with columns 0-1 (as the reference).
    lines = lines * ((cols // 2) % 2 == 1).to(lines.dtype)
    return _overlay(x, lines)


def _zigzag(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    a = b = 2.0
    c0, c1 = 2.0, 25.0
    r0 = _randint(0, 27, (n,), g, x).to(torch.float64)
    r1 = r0 + _randint(-5, 5, (n,), g, x).to(torch.float64)
    theta = torch.atan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / torch.cos(theta)
    counts = torch.div(d - a, 2 * a, rounding_mode="floor").long() + 1
    # |r1 - r0| <= 5 keeps d in [23, 23.6], so every image has the same number of legs.
    k = int(counts[0])
    if bool((counts != k).any()):  # pragma: no cover - impossible with the reference constants
        raise RuntimeError("zigzag: leg count differs between images")
    pts_c = [torch.zeros_like(d)] + [torch.full_like(d, float((2 * j + 1) * a)) for j in range(k)]
    pts_r = [torch.zeros_like(d)] + [torch.full_like(d, float((-1) ** j * b)) for j in range(k)]
    max_c = 2 * a * torch.div(d, 2 * a, rounding_mode="floor")
    last_r = (-1) ** (k - 1) * b
    extra = d != max_c
    pts_c.append(d)
    pts_r.append(last_r / (2 * (d - max_c)).masked_fill(~extra, 1.0))
    cs = torch.stack(pts_c, 1)  # (N, P)
    rs = torch.stack(pts_r, 1)
    if not bool(extra.all()):  # drop the extra point where the reference does (never here)
        rs[:, -1] = torch.where(extra, rs[:, -1], rs[:, -2])
        cs[:, -1] = torch.where(extra, cs[:, -1], cs[:, -2])
    cos, sin = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
    rc = cos * cs - sin * rs + c0
    rr = sin * cs + cos * rs + r0[:, None]
    lines = torch.zeros(n, MNIST_C_SIZE, MNIST_C_SIZE, dtype=torch.float64, device=x.device)
    for j in range(1, cs.shape[1]):
        lines = lines + _line(rc[:, j - 1], rr[:, j - 1], rc[:, j], rr[:, j])
    # Adding legs one by one with a clip at 1 equals one clip of the sum (all terms are >= 0).
    return _overlay(x, lines.clamp(max=1.0))


def _canny_edges(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return canny(x, sigma=1.0 * _ratio(x), low_threshold=0.1, high_threshold=0.2)


def canny(x: torch.Tensor, *, sigma: float, low_threshold: float, high_threshold: float) -> torch.Tensor:
    """Canny edge map per channel, float 0/1, following ``skimage.feature.canny``.

    Steps: Gaussian smoothing normalised by the smoothed image mask (zero outside), Sobel
    gradients (``scipy.ndimage.sobel``, reflect borders), non-maximum suppression with bilinear
    interpolation between the two neighbours across the edge, a one-pixel border excluded, then
    double thresholding on the magnitude and 8-connected hysteresis.
    """
    n, c, h, w = x.shape
    img = x.to(torch.float64).reshape(n * c, 1, h, w)
    k = _gauss_kernel(sigma, x.device) if sigma > 0 else torch.ones(1, dtype=torch.float64, device=x.device)
    smoothed = _sep_conv(img, k, mode="constant") / (_sep_conv(torch.ones_like(img), k, mode="constant") + 1e-12)
    pad = F.pad(smoothed, (1, 1, 1, 1), mode="reflect") if min(h, w) > 1 else smoothed
    deriv = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, device=x.device)
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64, device=x.device)
    isobel = F.conv2d(pad, (deriv[:, None] * smooth[None, :]).view(1, 1, 3, 3))  # along rows
    jsobel = F.conv2d(pad, (smooth[:, None] * deriv[None, :]).view(1, 1, 3, 3))  # along columns
    mag = torch.hypot(isobel, jsobel)
    local_max = _nms(isobel[:, 0], jsobel[:, 0], mag[:, 0])
    border = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    border[1:-1, 1:-1] = True
    local_max = local_max & border & (mag[:, 0] > 0)
    low = local_max & (mag[:, 0] >= low_threshold)
    high = local_max & (mag[:, 0] >= high_threshold)
    edges = _hysteresis(low, high)
    return edges.to(x.dtype).reshape(n, c, h, w)


def _shift(t: torch.Tensor, di: int, dj: int) -> torch.Tensor:
    """``out[i, j] = t[i + di, j + dj]`` with 0 outside."""
    h, w = t.shape[-2:]
    p = F.pad(t, (1, 1, 1, 1))
    return p[..., 1 + di:1 + di + h, 1 + dj:1 + dj + w]


def _nms(isobel: torch.Tensor, jsobel: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    ai, aj = isobel.abs(), jsobel.abs()
    m = mag
    out = torch.zeros_like(mag, dtype=torch.bool)

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return num / torch.where(den == 0, torch.ones_like(den), den)

    def interp(w: torch.Tensor, near: tuple[int, int], diag: tuple[int, int]) -> torch.Tensor:
        return _shift(m, *diag) * w + _shift(m, *near) * (1 - w)

    # The four sectors in skimage's order; a later sector overrides an earlier one on ties.
    sectors = [
        (((isobel >= 0) & (jsobel >= 0) | (isobel <= 0) & (jsobel <= 0)) & (ai >= aj), ratio(aj, ai),
         ((1, 0), (1, 1)), ((-1, 0), (-1, -1))),
        (((isobel >= 0) & (jsobel >= 0) | (isobel <= 0) & (jsobel <= 0)) & (ai <= aj), ratio(ai, aj),
         ((0, 1), (1, 1)), ((0, -1), (-1, -1))),
        (((isobel <= 0) & (jsobel >= 0) | (isobel >= 0) & (jsobel <= 0)) & (ai <= aj), ratio(ai, aj),
         ((0, 1), (-1, 1)), ((0, -1), (1, -1))),
        (((isobel <= 0) & (jsobel >= 0) | (isobel >= 0) & (jsobel <= 0)) & (ai >= aj), ratio(aj, ai),
         ((-1, 0), (-1, 1)), ((1, 0), (1, -1))),
    ]
    for pts, w, plus, minus in sectors:
        keep = (interp(w, *plus) <= m) & (interp(w, *minus) <= m)
        out = torch.where(pts, keep, out)
    return out


def _hysteresis(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Pixels of ``low`` 8-connected (through ``low``) to a pixel of ``high``."""
    edges = high & low
    while True:
        grown = F.max_pool2d(edges[:, None].to(torch.float32), 3, stride=1, padding=1)[:, 0] > 0
        grown = grown & low
        if bool((grown == edges).all()):
            return edges
        edges = grown


_CORRUPTIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "shear": _shear,
    "scale": _scale,
    "rotate": _rotate,
    "brightness": _brightness,
    "translate": _translate,
    "stripe": _stripe,
    "fog": _fog,
    "spatter": _spatter,
    "dotted_line": _dotted_line,
    "zigzag": _zigzag,
    "canny_edges": _canny_edges,
}

if set(_CORRUPTIONS) != set(MNIST_C_CORRUPTIONS):  # pragma: no cover - import-time consistency
    fail("MNIST_C_CORRUPTIONS", "the implemented corruptions", sorted(_CORRUPTIONS))
