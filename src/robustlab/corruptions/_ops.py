"""Batched image operations behind the image corruptions (private; inputs are trusted).

Everything works on ``(N, C, H, W)`` float tensors on any device. Fixed linear operators
(Gaussian blurs with a border mode, PIL's box resampling, zoom interpolation) are built once in
NumPy float64 as small dense or index/weight tables, cached, and applied as matrix products or
gathers; that handles every border mode exactly, including kernels wider than the image.

Border modes use SciPy's names: ``"nearest"`` (edge), ``"reflect"`` (d c b a | a b c d, NumPy's
``symmetric``), ``"mirror"`` (d c b | a b c d, OpenCV's ``BORDER_REFLECT_101``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights as used by OpenCV's COLOR_RGB2GRAY (snow) and the slightly different
# ones of imagecorruptions' rgb2gray (frost, spatter on grey images).
CV_GRAY_WEIGHTS = (0.299, 0.587, 0.114)
IC_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)

# Kernel side from which correlate2d uses the FFT instead of a direct convolution.
FFT_MIN_TAPS = 11


# --- randomness (every draw from the caller's generator, on the generator's device) -----------

def _draw_dtype(like: torch.Tensor) -> torch.dtype:
    # float32 draws for every image dtype: float32 and float64 images get the same noise
    return torch.float32


def randn(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    out = torch.randn(shape, generator=generator, device=generator.device, dtype=_draw_dtype(like))
    return out.to(device=like.device, dtype=like.dtype)


def rand(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    out = torch.rand(shape, generator=generator, device=generator.device, dtype=_draw_dtype(like))
    return out.to(device=like.device, dtype=like.dtype)


def randint(low: int, high: int, shape: tuple[int, ...], generator: torch.Generator,
            device: torch.device) -> torch.Tensor:
    out = torch.randint(low, high, shape, generator=generator, device=generator.device)
    return out.to(device)


def uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator,
            like: torch.Tensor) -> torch.Tensor:
    return low + (high - low) * rand(shape, generator, like)


# --- border handling -------------------------------------------------------------------------

def border_index(idx: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map (possibly out-of-range) integer indices into ``[0, n)`` with a border mode."""
    if mode == "nearest" or n == 1:
        return np.clip(idx, 0, n - 1)
    if mode == "mirror":
        period = 2 * n - 2
        m = np.mod(idx, period)
        return np.where(m >= n, period - m, m)
    if mode == "reflect":
        period = 2 * n
        m = np.mod(idx, period)
        return np.where(m >= n, period - 1 - m, m)
    raise ValueError(mode)


def border_index_t(idx: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Torch version of :func:`border_index`."""
    if mode == "nearest" or n == 1:
        return idx.clamp(0, n - 1)
    if mode == "mirror":
        period = 2 * n - 2
        m = torch.remainder(idx, period)
        return torch.where(m >= n, period - m, m)
    if mode == "reflect":
        period = 2 * n
        m = torch.remainder(idx, period)
        return torch.where(m >= n, period - 1 - m, m)
    raise ValueError(mode)


def pad(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    """Pad the last two dims by ``ph``/``pw`` on each side; any pad width, any border mode."""
    h, w = x.shape[-2:]
    rows = torch.as_tensor(border_index(np.arange(-ph, h + ph), h, mode), device=x.device)
    cols = torch.as_tensor(border_index(np.arange(-pw, w + pw), w, mode), device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


# --- linear filters as matrices ---------------------------------------------------------------

@lru_cache(maxsize=256)
def filter_matrix(n: int, taps: tuple[float, ...], mode: str) -> np.ndarray:
    """(n, n) matrix of the 1-D correlation with centred ``taps`` under a border mode."""
    r = len(taps) // 2
    out = np.zeros((n, n))
    rows = np.repeat(np.arange(n), len(taps))
    src = (np.arange(n)[:, None] + np.arange(-r, r + 1)[None, :]).ravel()
    np.add.at(out, (rows, border_index(src, n, mode)), np.tile(np.asarray(taps), n))
    return out


def gaussian_taps(sigma: float, truncate: float) -> tuple[float, ...]:
    """SciPy ``gaussian_filter1d`` taps: radius ``int(truncate * sigma + 0.5)``, normalised."""
    if sigma <= 0:
        return (1.0,)
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 * (t / sigma) ** 2)
    return tuple((phi / phi.sum()).tolist())


def _as(m: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(m, dtype=like.dtype if like.is_floating_point() else torch.float32,
                           device=like.device)


def separable(x: torch.Tensor, mh: np.ndarray, mw: np.ndarray) -> torch.Tensor:
    """``mh @ x @ mw.T`` over the last two dims (any leading dims)."""
    return torch.matmul(torch.matmul(_as(mh, x), x), _as(mw, x).transpose(0, 1))


def gaussian_blur(x: torch.Tensor, sigma: float, *, truncate: float = 4.0,
                  mode: str = "nearest") -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` over the last two dims (skimage ``gaussian`` defaults)."""
    if sigma <= 0:
        return x
    taps = gaussian_taps(float(sigma), truncate)
    h, w = x.shape[-2:]
    return separable(x, filter_matrix(h, taps, mode), filter_matrix(w, taps, mode))


def cv_gaussian_taps(ksize: int, sigma: float) -> tuple[float, ...]:
    """``cv2.getGaussianKernel(ksize, sigma)`` for ``sigma > 0``."""
    t = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    g = np.exp(-(t ** 2) / (2 * sigma ** 2))
    return tuple((g / g.sum()).tolist())


def box_blur3(x: torch.Tensor) -> torch.Tensor:
    """``cv2.blur(x, (3, 3))`` (normalised box, BORDER_REFLECT_101) over the last two dims."""
    taps = (1 / 3, 1 / 3, 1 / 3)
    h, w = x.shape[-2:]
    return separable(x, filter_matrix(h, taps, "mirror"), filter_matrix(w, taps, "mirror"))


def correlate2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """2-D correlation of every (N, C) plane with one odd-sized kernel (``cv2.filter2D``).

    Direct for small kernels; for kernels of ``FFT_MIN_TAPS`` or more taps per side via the FFT
    of the border-padded plane (the valid part of a circular convolution is the linear one),
    as OpenCV itself switches to a DFT for large kernels.
    """
    kh, kw = kernel.shape
    n, c, h, w = x.shape
    kernel = kernel.to(dtype=x.dtype, device=x.device)
    xp = pad(x.reshape(n * c, 1, h, w), kh // 2, kw // 2, mode)
    if min(kh, kw) < FFT_MIN_TAPS:
        # sum of shifted planes: faster than a one-channel conv2d on CPU, skips zero taps
        out = torch.zeros(n * c, 1, h, w, dtype=x.dtype, device=x.device)
        for i, j in torch.nonzero(kernel).tolist():
            out += kernel[i, j] * xp[..., i : i + h, j : j + w]
        return out.reshape(n, c, h, w)
    ph, pw = xp.shape[-2:]
    spec = torch.fft.rfft2(xp) * torch.fft.rfft2(torch.flip(kernel, (0, 1)), s=(ph, pw))
    full = torch.fft.irfft2(spec, s=(ph, pw))
    return full[..., kh - 1 :, kw - 1 :].reshape(n, c, h, w)


# --- PIL box resampling -----------------------------------------------------------------------

@lru_cache(maxsize=256)
def pil_box_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of Pillow's ``Image.resize(..., Image.BOX)`` along one axis.

    Follows ``precompute_coeffs`` in Pillow's ``libImaging/Resample.c`` with the box filter
    (support 0.5, ``box(x) = 1`` for ``-0.5 < x <= 0.5``), in float64 (Pillow rounds the weights
    to fixed point and the result to uint8).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    out = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        t = (np.arange(xmin, xmax) - center + 0.5) / filterscale
        wts = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        if wts.sum() > 0:
            out[xx, xmin:xmax] = wts / wts.sum()
    return out


# --- scipy.ndimage.zoom(order=1) crops (zoom blur, snow) -------------------------------------

@lru_cache(maxsize=1024)
def clipped_zoom_taps(n: int, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index/weight pairs of ``clipped_zoom`` along one axis of length ``n``.

    The reference crops the central ``ceil(n / factor)`` pixels, zooms them with
    ``scipy.ndimage.zoom(order=1)`` (output length ``round(ch * factor)``, input coordinate
    ``o * (ch - 1) / (out - 1)``) and trims the result centrally back to ``n``.
    """
    ch = int(np.ceil(n / factor))
    top = (n - ch) // 2
    out_len = int(round(ch * factor))
    trim = (out_len - n) // 2
    o = np.arange(trim, trim + n, dtype=np.float64)
    coord = o * (ch - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(o)
    i0 = np.floor(coord).astype(np.int64)
    frac = coord - i0
    i1 = np.minimum(i0 + 1, ch - 1)
    return top + i0, top + i1, frac


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Centre crop zoomed back to full size by bilinear interpolation, last two dims."""
    h, w = x.shape[-2:]
    r0, r1, fr = clipped_zoom_taps(h, float(factor))
    c0, c1, fc = clipped_zoom_taps(w, float(factor))
    dev = x.device
    fr_t = torch.as_tensor(fr, dtype=x.dtype, device=dev)[:, None]
    fc_t = torch.as_tensor(fc, dtype=x.dtype, device=dev)
    top = x.index_select(-2, torch.as_tensor(r0, device=dev))
    bot = x.index_select(-2, torch.as_tensor(r1, device=dev))
    rows = top + (bot - top) * fr_t
    left = rows.index_select(-1, torch.as_tensor(c0, device=dev))
    right = rows.index_select(-1, torch.as_tensor(c1, device=dev))
    return left + (right - left) * fc_t


# --- bilinear sampling at arbitrary coordinates -----------------------------------------------

def bilinear_sample(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample ``x`` (N, C, H, W) at per-image coordinates ``ys``/``xs`` (N, H', W') bilinearly.

    Neighbours outside the image come from the border ``mode`` (``map_coordinates(order=1)``).
    """
    n, c, h, w = x.shape
    y0f = torch.floor(ys)
    x0f = torch.floor(xs)
    wy = (ys - y0f).unsqueeze(1)
    wx = (xs - x0f).unsqueeze(1)
    y0 = y0f.long()
    x0 = x0f.long()
    ya, yb = border_index_t(y0, h, mode), border_index_t(y0 + 1, h, mode)
    xa, xb = border_index_t(x0, w, mode), border_index_t(x0 + 1, w, mode)
    # pixels as rows (N*H*W, C): one index_select per neighbour serves every channel
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    base = (torch.arange(n, device=x.device) * (h * w)).view(n, 1, 1)
    wy = wy.squeeze(1).unsqueeze(-1)
    wx = wx.squeeze(1).unsqueeze(-1)

    def take(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        return rows.index_select(0, (base + yi * w + xi).reshape(-1)).reshape(*ys.shape, c)

    top = torch.lerp(take(ya, xa), take(ya, xb), wx)
    bot = torch.lerp(take(yb, xa), take(yb, xb), wx)
    return torch.lerp(top, bot, wy).permute(0, 3, 1, 2)


# --- motion blur (ImageMagick MotionBlurImage, as re-implemented by imagecorruptions) ---------

def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor) -> torch.Tensor:
    """One-sided Gaussian line blur with a per-image angle, edge-replicated borders.

    ``out[h, w] = sum_i k_i x[h + ceil(i sin a - 0.5), w + ceil(i cos a - 0.5)]`` for
    ``i < width = 2 ceil(radius) + 1``, ``k_i ∝ exp(-i^2 / (2 sigma^2))`` normalised over the
    full width; taps from the first one that leaves the image onwards are dropped (as in
    imagecorruptions' ``_motion_blur``).
    """
    n, c, h, w = x.shape
    width = 2 * int(math.ceil(radius)) + 1
    i = torch.arange(width, dtype=torch.float64, device=x.device)
    k = torch.exp(-(i ** 2) / (2 * sigma ** 2))
    k = (k / k.sum()).to(x.dtype)
    a = torch.deg2rad(angle_deg.to(device=x.device, dtype=torch.float64))
    oy = torch.ceil(i[None, :] * torch.sin(a)[:, None] - 0.5).long()  # (N, width)
    ox = torch.ceil(i[None, :] * torch.cos(a)[:, None] - 0.5).long()
    inside = (oy.abs() < h) & (ox.abs() < w)
    keep = torch.cumprod(inside.long(), dim=1).to(x.dtype)  # stop at the first tap outside
    flat = x.reshape(n, c, h * w)
    hh = torch.arange(h, device=x.device)
    ww = torch.arange(w, device=x.device)
    out = torch.zeros_like(x)
    for t in range(width):
        rows = (hh[None, :] + oy[:, t : t + 1]).clamp(0, h - 1)  # (N, H)
        cols = (ww[None, :] + ox[:, t : t + 1]).clamp(0, w - 1)  # (N, W)
        idx = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, -1)
        out += (k[t] * keep[:, t]).view(n, 1, 1, 1) * flat.gather(2, idx).reshape(n, c, h, w)
    return out


# --- plasma fractal (diamond-square) ---------------------------------------------------------

def plasma_fractal(n: int, mapsize: int, wibbledecay: float, generator: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    """``plasma_fractal`` of the ImageNet-C scripts for ``n`` maps at once, in [0, 1], float64.

    Diamond-square on a periodic ``mapsize`` grid (a power of two); each new point is the mean of
    its four parents plus ``wibble * U(-wibble, wibble)``, ``wibble`` starting at 100 and divided
    by ``wibbledecay`` per level; finally min-max normalised per map.
    """
    maps = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=device)
    step = mapsize
    wibble = 100.0

    def noisy_mean(total: torch.Tensor) -> torch.Tensor:
        u = torch.rand(total.shape, generator=generator, device=generator.device, dtype=torch.float64)
        return total / 4 + wibble * (wibble * (2 * u.to(device) - 1))

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        sq = corners + torch.roll(corners, -1, dims=1)
        sq = sq + torch.roll(sq, -1, dims=2)
        maps[:, half::step, half::step] = noisy_mean(sq)
        dr = maps[:, half::step, half::step]
        ul = maps[:, 0::step, 0::step]
        lt = dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2)
        maps[:, 0::step, half::step] = noisy_mean(lt)
        tt = dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1)
        maps[:, half::step, 0::step] = noisy_mean(tt)
        step //= 2
        wibble /= wibbledecay
    flat = maps.reshape(n, -1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    flat = flat / flat.max(dim=1, keepdim=True).values.clamp_min(1e-300)
    return flat.reshape(n, mapsize, mapsize)


# --- colour ----------------------------------------------------------------------------------

def to_gray(x: torch.Tensor, weights: tuple[float, float, float]) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) weighted sum; (N, 1, H, W) is returned unchanged."""
    if x.shape[1] == 1:
        return x
    wt = torch.tensor(weights, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * wt).sum(dim=1, keepdim=True)


# --- glass blur's local pixel "swaps" ---------------------------------------------------------

def glass_sources(n: int, h: int, w: int, delta: int, generator: torch.Generator,
                  device: torch.device) -> torch.Tensor:
    """Source pixel index (N, H*W) of one pass of the ImageNet-C glass-blur pixel shuffle.

    The reference visits ``(h, w)`` for ``h`` from ``H - delta`` down to ``delta + 1`` and, inside,
    ``w`` likewise, draws ``dx, dy ~ randint(-delta, delta)`` and runs
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on an (H, W, 3) uint8 array. Because the right-hand
    side holds *views*, this copies ``x[h', w']`` into ``x[h, w]`` and leaves ``x[h', w']`` as it
    was (no true swap), so each visited pixel takes the value its partner had at that moment:
    ``src[p] = src[q]`` if ``q`` was visited before ``p``, else ``q``. The sequential chain is
    resolved exactly by pointer jumping (``O(log chain)`` vector steps instead of a Python loop).
    """
    hh = torch.arange(h, device=device)[:, None].expand(h, w)
    ww = torch.arange(w, device=device)[None, :].expand(h, w)
    visited = (hh >= delta + 1) & (hh <= h - delta) & (ww >= delta + 1) & (ww <= w - delta)
    off = randint(-delta, delta, (n, 2, h, w), generator, device)  # (dx, dy) per pixel
    qh = (hh + off[:, 1]).clamp(0, h - 1)
    qw = (ww + off[:, 0]).clamp(0, w - 1)
    p = (hh * w + ww).reshape(1, -1).expand(n, -1)
    q = (qh * w + qw).reshape(n, -1)
    vis = visited.reshape(1, -1).expand(n, -1)
    target = torch.where(vis, q, p)
    # q was visited before p  <=>  q is visited and comes later in raster order (visits go backwards)
    follow = vis & vis.gather(1, target) & (target > p)
    while bool(follow.any()):
        nxt_target = target.gather(1, target)
        nxt_follow = follow.gather(1, target)
        target = torch.where(follow, nxt_target, target)
        follow = follow & nxt_follow
    return target


@lru_cache(maxsize=64)
def zoom_stack(n: int, factors: tuple[float, ...]) -> np.ndarray:
    """(Z, n, n) matrices of :func:`clipped_zoom` along one axis, one per factor."""
    out = np.zeros((len(factors), n, n))
    rows = np.arange(n)
    for k, z in enumerate(factors):
        i0, i1, frac = clipped_zoom_taps(n, z)
        np.add.at(out[k], (rows, i0), 1 - frac)
        np.add.at(out[k], (rows, i1), frac)
    return out


def zoom_sum(x: torch.Tensor, factors: tuple[float, ...]) -> torch.Tensor:
    """``sum_z clipped_zoom(x, z)`` as two matrix products: ``[A_1..A_Z] x``, then the row
    blocks side by side times ``[B_1^T; ..; B_Z^T]`` (dense BLAS beats gathers on CPU here)."""
    h, w = x.shape[-2:]
    z = len(factors)
    a = _as(zoom_stack(h, factors), x).reshape(z * h, h)
    b = _as(zoom_stack(w, factors), x)  # (Z, W, W)
    rows = torch.matmul(a, x)  # (..., Z*H, W)
    lead = x.shape[:-2]
    rows = rows.reshape(*lead, z, h, w).movedim(-3, -2).reshape(*lead, h, z * w)
    return torch.matmul(rows, b.transpose(1, 2).reshape(z * w, w))
