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
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights as used by OpenCV's COLOR_RGB2GRAY (snow) and the slightly different
# ones of imagecorruptions' rgb2gray (frost, spatter on grey images).
CV_GRAY_WEIGHTS = (0.299, 0.587, 0.114)
IC_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)

# Gaussian blurs with at most this many taps on images at least this large use banded blocks
# of BANDED_BLOCK outputs (see _correlate_last) instead of dense (n, n) matrix products.
BANDED_MAX_TAPS = 15
BANDED_MIN_SIZE = 64
BANDED_BLOCK = 16
# Batches of planes larger than this go through per-plane operators in chunks (map_planes).
CHUNK_BYTES = 1 << 20
# Kernel side from which correlate2d uses the FFT instead of a direct convolution.
FFT_MIN_TAPS = 8
# Images with fewer pixels get motion blur as batched gathers, larger ones as per-image slices.
MOTION_SLICE_MIN_PIXELS = 96 * 96


# --- randomness (every draw from the caller's generator, on the generator's device) -----------

# float32 draws for every image dtype: float32 and float64 images get the same noise
_DRAW_DTYPE = torch.float32


def randn(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    out = torch.randn(shape, generator=generator, device=generator.device, dtype=_DRAW_DTYPE)
    return out.to(device=like.device, dtype=like.dtype)


def rand(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    out = torch.rand(shape, generator=generator, device=generator.device, dtype=_DRAW_DTYPE)
    return out.to(device=like.device, dtype=like.dtype)


def randint(low: int, high: int, shape: tuple[int, ...], generator: torch.Generator,
            device: torch.device, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    out = torch.randint(low, high, shape, generator=generator, device=generator.device, dtype=dtype)
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
    if len(taps) <= BANDED_MAX_TAPS and min(h, w) >= BANDED_MIN_SIZE:
        # short kernel on a large image: banded blocks instead of (n, n) products
        def blur(planes: torch.Tensor) -> torch.Tensor:
            rows = _correlate_last(planes.transpose(-1, -2), taps, mode)  # blurred along H
            return _correlate_last(rows.transpose(-1, -2), taps, mode)
    else:
        # dense (n, n) matrices: on CPU BLAS beats shifted-slice sums even for short kernels,
        # and they handle every border mode for kernels wider than the image
        mh, mw = filter_matrix(h, taps, mode), filter_matrix(w, taps, mode)

        def blur(planes: torch.Tensor) -> torch.Tensor:
            return separable(planes, mh, mw)
    return map_planes(blur, x)


def map_planes(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn`` (a per-plane linear map) applied to a few (H, W) planes at a time.

    Large batches go through in chunks of about ``CHUNK_BYTES``: the temporaries of every
    step stay in cache and are reused by the allocator instead of being fresh, page-faulting
    image-sized buffers, which costs more than the arithmetic of a blur.
    """
    h, w = x.shape[-2:]
    planes = x.reshape(-1, h, w)
    per = max(1, CHUNK_BYTES // (h * w * x.element_size()))
    if planes.shape[0] <= per:
        return fn(planes).reshape(x.shape)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    flat = out.view(-1, h, w)
    for i in range(0, planes.shape[0], per):
        flat[i : i + per] = fn(planes[i : i + per])
    return out


@lru_cache(maxsize=256)
def _band_tables(n: int, taps: tuple[float, ...], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Source columns (border-extended) and the (B + 2r, B) block matrix of ``_correlate_last``."""
    r, block = len(taps) // 2, BANDED_BLOCK
    n_blocks = -(-n // block)
    cols = border_index(np.arange(-r, n_blocks * block + r), n, mode)
    mat = np.zeros((block + 2 * r, block))
    for j in range(block):
        mat[j : j + 2 * r + 1, j] = taps
    return cols, mat


def _correlate_last(x: torch.Tensor, taps: tuple[float, ...], mode: str) -> torch.Tensor:
    """1-D correlation with centred ``taps`` along the last dim under a border mode.

    The border-extended rows are cut into blocks of ``BANDED_BLOCK`` outputs with their
    ``2r`` neighbours (overlapping windows) and multiplied by one small banded matrix: BLAS speed
    at ``(B + 2r) / n`` of the dense product's work. Any strides in; (..., n) out.
    """
    n = x.shape[-1]
    cols, mat = _band_tables(n, taps, mode)
    xp = x.index_select(-1, torch.as_tensor(cols, device=x.device))
    win = xp.unfold(-1, mat.shape[0], BANDED_BLOCK)  # (..., n_blocks, B + 2r)
    out = torch.mm(win.reshape(-1, mat.shape[0]), _as(mat, x))
    return out.view(*x.shape[:-1], -1)[..., :n]


def cv_gaussian_taps(ksize: int, sigma: float) -> tuple[float, ...]:
    """``cv2.getGaussianKernel(ksize, sigma)`` for ``sigma > 0``."""
    t = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    g = np.exp(-(t ** 2) / (2 * sigma ** 2))
    return tuple((g / g.sum()).tolist())


def box_blur3(x: torch.Tensor) -> torch.Tensor:
    """``cv2.blur(x, (3, 3))`` (normalised box, BORDER_REFLECT_101) over the last two dims.

    As OpenCV's float box filter: 3-sums along rows, then along columns, times 1/9.
    """
    xp = pad(x, 1, 1, "mirror")
    rows = xp[..., :, :-2] + xp[..., :, 1:-1]
    rows += xp[..., :, 2:]
    out = rows[..., :-2, :] + rows[..., 1:-1, :]
    out += rows[..., 2:, :]
    return out.mul_(1 / 9)


def correlate2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """2-D correlation of every (N, C) plane with one odd-sized kernel (``cv2.filter2D``).

    Direct for small kernels; for kernels of ``FFT_MIN_TAPS`` or more taps per side via the FFT
    of the border-padded plane (the valid part of a circular convolution is the linear one),
    as OpenCV itself switches to a DFT for large kernels.
    """
    kh, kw = kernel.shape
    n, c, h, w = x.shape
    kernel = kernel.to(dtype=x.dtype, device=x.device)
    if kh * kw < FFT_MIN_TAPS ** 2:
        xp = pad(x.reshape(n * c, 1, h, w), kh // 2, kw // 2, mode)
        # sum of shifted planes: faster than a one-channel conv2d on CPU, skips zero taps
        out = torch.zeros(n * c, 1, h, w, dtype=x.dtype, device=x.device)
        for i, j in torch.nonzero(kernel).tolist():
            out += kernel[i, j] * xp[..., i : i + h, j : j + w]
        return out.reshape(n, c, h, w)
    # zero-padding to a 2-3-5-smooth length keeps the FFT fast and the valid part unchanged
    ph, pw = fft_length(h + kh - 1), fft_length(w + kw - 1)
    kernel_spec = torch.fft.rfft2(torch.flip(kernel, (0, 1)), s=(ph, pw))

    def filt(planes: torch.Tensor) -> torch.Tensor:
        xp = pad(planes, kh // 2, kw // 2, mode)
        full = torch.fft.irfft2(torch.fft.rfft2(xp, s=(ph, pw)).mul_(kernel_spec), s=(ph, pw))
        return full[..., kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w]

    return map_planes(filt, x)


@lru_cache(maxsize=256)
def fft_length(n: int) -> int:
    """Smallest integer >= n whose only prime factors are 2, 3 and 5."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def map_images(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn`` over chunks of about ``CHUNK_BYTES`` of images (N, ...) in order, concatenated."""
    per = max(1, CHUNK_BYTES // max(1, x[0].numel() * x.element_size()))
    if x.shape[0] <= per:
        return fn(x)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], per):
        out[i : i + per] = fn(x[i : i + per])
    return out


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

def _zoom_geometry(n: int, factor: float) -> tuple[int, int, int, int]:
    ch = int(np.ceil(n / factor))
    top = (n - ch) // 2
    out_len = round(ch * factor)
    return top, ch, out_len, (out_len - n) // 2


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Centre crop of ``ceil(n / factor)`` px zoomed back to full size, (N, C, H, W).

    ``scipy.ndimage.zoom(order=1)`` samples the crop at ``o * (ch - 1) / (out - 1)``, which is
    bilinear interpolation with ``align_corners=True``; the result is trimmed centrally.
    """
    h, w = x.shape[-2:]
    t0, ch0, o0, tr0 = _zoom_geometry(h, float(factor))
    t1, ch1, o1, tr1 = _zoom_geometry(w, float(factor))
    crop = x[..., t0 : t0 + ch0, t1 : t1 + ch1]
    big = F.interpolate(crop, size=(o0, o1), mode="bilinear", align_corners=True)
    return big[..., tr0 : tr0 + h, tr1 : tr1 + w]


# --- motion blur (ImageMagick MotionBlurImage, as re-implemented by imagecorruptions) ---------

def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor) -> torch.Tensor:
    """One-sided Gaussian line blur with a per-image angle, edge-replicated borders.

    ``out[h, w] = sum_i k_i x[h + ceil(i sin a - 0.5), w + ceil(i cos a - 0.5)]`` for
    ``i < width = 2 ceil(radius) + 1``, ``k_i ∝ exp(-i^2 / (2 sigma^2))`` normalised over the
    full width; taps from the first one that leaves the image onwards are dropped (as in
    imagecorruptions' ``_motion_blur``).
    """
    n, _, h, w = x.shape
    width = 2 * math.ceil(radius) + 1
    i = torch.arange(width, dtype=torch.float64, device=x.device)
    k = torch.exp(-(i ** 2) / (2 * sigma ** 2))
    k = (k / k.sum()).to(x.dtype)
    a = torch.deg2rad(angle_deg.to(device=x.device, dtype=torch.float64))
    oy = torch.ceil(i[None, :] * torch.sin(a)[:, None] - 0.5).long()  # (N, width)
    ox = torch.ceil(i[None, :] * torch.cos(a)[:, None] - 0.5).long()
    inside = (oy.abs() < h) & (ox.abs() < w)
    keep = torch.cumprod(inside.long(), dim=1).bool()  # stop at the first tap outside
    if h * w < MOTION_SLICE_MIN_PIXELS:
        return _motion_gather(x, k, oy, ox, keep)
    # edge-replicated padding once, then every tap is a shifted slice of the padded image
    r = width
    xp = pad(x, r, r, "nearest")
    out = torch.empty_like(x)
    oy_l, ox_l, k_l = oy.tolist(), ox.tolist(), k.tolist()
    n_taps = keep.sum(dim=1).tolist()
    for img in range(n):
        def tap(t: int) -> torch.Tensor:
            return xp[img, :, r + oy_l[img][t] : r + oy_l[img][t] + h, r + ox_l[img][t] : r + ox_l[img][t] + w]

        # accumulate in place, one image at a time (it stays in cache; stacking the shifted
        # copies first moved width x the image through memory)
        acc = torch.mul(tap(0), k_l[0], out=out[img])
        for t in range(1, int(n_taps[img])):
            acc.add_(tap(t), alpha=k_l[t])
    return out


def _motion_gather(x: torch.Tensor, k: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor,
                   keep: torch.Tensor) -> torch.Tensor:
    """Motion blur of small images: one batched gather per tap (per-image offsets)."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    hh = torch.arange(h, device=x.device)
    ww = torch.arange(w, device=x.device)
    wts = k[None, :] * keep.to(x.dtype)  # (N, width)
    out = torch.zeros_like(x)
    for t in range(k.shape[0]):
        if not bool(keep[:, t].any()):
            break
        rows = (hh[None, :] + oy[:, t : t + 1]).clamp(0, h - 1)  # (N, H)
        cols = (ww[None, :] + ox[:, t : t + 1]).clamp(0, w - 1)  # (N, W)
        idx = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, -1)
        out += wts[:, t].view(n, 1, 1, 1) * flat.gather(2, idx).reshape(n, c, h, w)
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
    hh = torch.arange(h, device=device)[:, None]
    ww = torch.arange(w, device=device)[None, :]
    visited = (hh >= delta + 1) & (hh <= h - delta) & (ww >= delta + 1) & (ww <= w - delta)  # (H, W)
    # int32 draws: the same values as int64 ones from the same generator, half the memory
    off = randint(-delta, delta, (n, 2, h, w), generator, device, torch.int32)  # (dx, dy) per pixel
    # a visited pixel's partner q = p + dy W + dx stays inside the image (|d| <= delta)
    step = off[:, 1].mul(w).add_(off[:, 0])
    step.masked_fill_(~visited, 0)
    # q was visited before p  <=>  q is visited and comes later in raster order (visits go backwards)
    cand = (step > 0).reshape(-1).nonzero().squeeze(1)
    # the batch as one flat array of global pixel indices: flat[p] = current source of p
    flat = torch.arange(n * h * w, device=device)
    flat += step.reshape(-1)
    vis_flat = visited.reshape(-1)
    follow = torch.zeros(n * h * w, dtype=torch.bool, device=device)
    active = cand[vis_flat[flat[cand] % (h * w)]]
    follow[active] = True
    # pointer jumping on the still-following pixels only (about 44% of them, then 19%, 4%, ...);
    # each round reads before it writes, so the rounds are synchronous
    while active.numel():
        via = flat[active]
        flat[active] = flat[via]
        keep = follow[via]
        follow[active] = keep
        active = active[keep]
    return flat.view(n, h * w).sub_(torch.arange(n, device=device)[:, None] * (h * w))


def zoom_sum(x: torch.Tensor, factors: tuple[float, ...]) -> torch.Tensor:
    """``sum_z clipped_zoom(x, z)`` (channels-last inside: torch's bilinear resize is about
    twice as fast in that layout on CPU, with the same values)."""
    x = x.contiguous(memory_format=torch.channels_last)
    out = torch.zeros_like(x)
    for z in factors:
        out += clipped_zoom(x, z)
    return out.contiguous()
