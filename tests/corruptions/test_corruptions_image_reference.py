"""Image corruptions against references: per-image NumPy/Pillow/OpenCV versions written here from
the published formulas (make_cifar_c.py, CIFAR preset), a differential test against
imagecorruptions 1.1.2 (ImageNet preset, 224 px), and the random corruptions' building blocks
against the reference algorithms with the same random numbers.

Tolerances (images in [0, 1] unless said otherwise):
- float64 references of float64 inputs: 1e-9 (brightness, contrast, saturate, gaussian blur);
  defocus 1e-6 and zoom 1e-6 (OpenCV / SciPy work in float32 there);
- Pillow on uint8: JPEG exact; pixelate within 1/255 (Pillow rounds each pass to uint8);
- imagecorruptions (0-255 scale, its unrounded float outputs): 1e-3 for float32 inputs;
  pixelate within 1 grey level (it upsamples with NEAREST, the published scripts with BOX).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from robustlab.corruptions import _ops, _spatter, corrupt
from robustlab.corruptions._image_params import PRESETS

cv2 = pytest.importorskip("cv2")
ndi = pytest.importorskip("scipy.ndimage")
skcolor = pytest.importorskip("skimage.color")

CIFAR = PRESETS["cifar"].table


def photo_like(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 smooth colour images with some texture."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
        big = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC)).astype(np.float64)
        big += rng.normal(0, 6, big.shape)
        out.append(np.clip(big, 0, 255).astype(np.uint8))
    return np.stack(out)


def to_torch(imgs: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).to(dtype) / 255


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).double().numpy()


def ours(imgs: np.ndarray, name: str, severity: int, preset: str = "cifar",
         dtype: torch.dtype = torch.float64) -> np.ndarray:
    y = corrupt(to_torch(imgs, dtype), name, severity, generator=torch.Generator(), preset=preset)
    return to_numpy(y)


# --- per-image references from the published formulas (make_cifar_c.py) ----------------------

def ref_brightness(img: np.ndarray, c: float) -> np.ndarray:
    hsv = skcolor.rgb2hsv(img)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(skcolor.hsv2rgb(hsv), 0, 1)


def ref_contrast(img: np.ndarray, c: float) -> np.ndarray:
    means = img.mean(axis=(0, 1), keepdims=True)
    return np.clip((img - means) * c + means, 0, 1)


def ref_saturate(img: np.ndarray, c: tuple[float, float]) -> np.ndarray:
    hsv = skcolor.rgb2hsv(img)
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return np.clip(skcolor.hsv2rgb(hsv), 0, 1)


def ref_gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(ndi.gaussian_filter(img, (sigma, sigma, 0), mode="nearest", truncate=4.0), 0, 1)


def ref_defocus(img: np.ndarray, c: tuple[float, float]) -> np.ndarray:
    radius, alias = c
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    kernel = cv2.GaussianBlur(disk, ksize=(3, 3) if radius <= 8 else (5, 5), sigmaX=alias)
    planes = [cv2.filter2D(img[..., d], -1, kernel) for d in range(3)]
    return np.clip(np.stack(planes, axis=-1), 0, 1)


def ref_clipped_zoom(img: np.ndarray, z: float) -> np.ndarray:
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    zoomed = ndi.zoom(img[top : top + ch, top : top + ch], (z, z, 1), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim : trim + h, trim : trim + h]


def ref_zoom_blur(img: np.ndarray, c: tuple[float, float, float]) -> np.ndarray:
    img = img.astype(np.float32)
    factors = np.arange(*c)
    out = np.zeros_like(img)
    for z in factors:
        out += ref_clipped_zoom(img, z)
    return np.clip((img + out) / (len(factors) + 1), 0, 1)


def ref_pixelate_u8(img: np.ndarray, c: float) -> np.ndarray:
    h, w = img.shape[:2]
    pil = Image.fromarray(img).resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
    return np.asarray(pil) / 255


def ref_jpeg_u8(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf)) / 255


@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("name,ref,atol", [
    ("brightness", ref_brightness, 1e-9),
    ("contrast", ref_contrast, 1e-9),
    ("saturate", ref_saturate, 1e-9),
    ("gaussian_blur", ref_gaussian_blur, 1e-9),
    ("defocus_blur", ref_defocus, 1e-6),
    ("zoom_blur", ref_zoom_blur, 1e-6),
])
def test_matches_published_formula(name: str, ref, atol: float, severity: int) -> None:
    imgs = photo_like(3, 32, seed=severity)
    got = ours(imgs, name, severity)
    want = np.stack([ref(im / 255.0, CIFAR[name][severity - 1]) for im in imgs])
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)


def test_brightness_and_saturate_on_black_and_grey_pixels() -> None:
    # edge cases of the HSV round trip: V = 0 (black) and S = 0 (grey -> hue 0, reddish)
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[:4] = 128
    img[:, :2] = (200, 10, 30)
    for name, ref in [("brightness", ref_brightness), ("saturate", ref_saturate)]:
        for severity in (1, 4, 5):
            got = ours(img[None], name, severity)[0]
            np.testing.assert_allclose(got, ref(img / 255.0, CIFAR[name][severity - 1]), atol=1e-9)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [32, 45])
def test_pixelate_matches_pillow(severity: int, size: int) -> None:
    imgs = photo_like(3, size, seed=severity)
    got = ours(imgs, "pixelate", severity)
    want = np.stack([ref_pixelate_u8(im, CIFAR["pixelate"][severity - 1]) for im in imgs])
    assert np.abs(got - want).max() <= 1 / 255 + 1e-9


@pytest.mark.parametrize("severity", [1, 5])
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_matches_pillow_exactly(severity: int, channels: int) -> None:
    imgs = photo_like(3, 32, seed=severity)
    if channels == 1:
        grey = imgs.mean(axis=-1).round().astype(np.uint8)
        got = ours(grey[..., None].repeat(3, -1)[..., :1], "jpeg_compression", severity)[..., 0]
        buf_want = []
        for im in grey:
            buf = io.BytesIO()
            Image.fromarray(im, mode="L").save(buf, "JPEG", quality=CIFAR["jpeg_compression"][severity - 1])
            buf_want.append(np.asarray(Image.open(buf)) / 255)
        want = np.stack(buf_want)
    else:
        got = ours(imgs, "jpeg_compression", severity)
        want = np.stack([ref_jpeg_u8(im, CIFAR["jpeg_compression"][severity - 1]) for im in imgs])
    np.testing.assert_allclose(got, want, atol=1e-12)


# --- differential test against imagecorruptions (ImageNet preset, 224 px) --------------------

@pytest.fixture(scope="module")
def icc():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import imagecorruptions.corruptions as module
    from skimage.filters import gaussian

    # imagecorruptions 1.1.2 calls gaussian(..., multichannel=True), removed in scikit-image
    # 0.19; this shim only translates the keyword for the test.
    def gaussian_compat(image, sigma, multichannel=None, **kw):
        return gaussian(image, sigma=sigma, channel_axis=-1 if multichannel else None, **kw)

    original = module.gaussian
    module.gaussian = gaussian_compat
    yield module
    module.gaussian = original


@pytest.fixture(scope="module")
def imagenet_images() -> np.ndarray:
    return photo_like(2, 224, seed=3)


@pytest.mark.parametrize("severity", [2, 5])
@pytest.mark.parametrize("name", ["brightness", "contrast", "saturate", "gaussian_blur", "defocus_blur",
                                  "zoom_blur", "jpeg_compression", "pixelate"])
def test_matches_imagecorruptions(icc, imagenet_images: np.ndarray, name: str, severity: int) -> None:
    got = ours(imagenet_images, name, severity, preset="imagenet", dtype=torch.float32) * 255
    want = np.stack([np.clip(np.asarray(getattr(icc, name)(Image.fromarray(im), severity), dtype=np.float64),
                             0, 255) for im in imagenet_images])
    diff = np.abs(got - want)
    if name == "pixelate":
        assert diff.max() <= 1 + 1e-3 and diff.mean() < 0.5
    elif name == "jpeg_compression":
        assert diff.max() <= 1e-3
    else:
        assert diff.max() <= 1e-3, diff.max()


@pytest.mark.parametrize("size", [40, 100])  # batched-gather path and per-image-slice path
def test_motion_blur_kernel_matches_imagecorruptions(icc, size: int) -> None:
    img = photo_like(1, size, seed=5)[0].astype(np.float64)
    for radius, sigma, angle in [(10, 3, 30.0), (15, 8, -44.0), (6, 2, 0.0), (9, 2.5, -12.5)]:
        want = icc._motion_blur(img, radius=radius, sigma=sigma, angle=angle)
        x = torch.from_numpy(img).permute(2, 0, 1)[None]
        got = _ops.motion_blur(x, radius, sigma, torch.tensor([angle], dtype=torch.float64))
        np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), want, atol=1e-6)


def test_motion_blur_drops_taps_beyond_the_image(icc) -> None:
    img = photo_like(1, 8, seed=1)[0].astype(np.float64)
    want = icc._motion_blur(img, radius=10, sigma=6, angle=20.0)
    got = _ops.motion_blur(torch.from_numpy(img).permute(2, 0, 1)[None], 10, 6,
                           torch.tensor([20.0], dtype=torch.float64))
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), want, atol=1e-6)


# --- random corruptions: the reference algorithm, fed the same random numbers -----------------

@pytest.mark.parametrize("size,delta", [(12, 1), (13, 2), (16, 3)])
def test_glass_shuffle_equals_the_sequential_reference(size: int, delta: int) -> None:
    n = 3
    src = _ops.glass_sources(n, size, size, delta, torch.Generator().manual_seed(4), torch.device("cpu"))
    # the same draws: glass_sources draws (dx, dy) for every pixel as (N, 2, H, W)
    off = torch.randint(-delta, delta, (n, 2, size, size), generator=torch.Generator().manual_seed(4))
    for i in range(n):
        x = np.arange(size * size * 3).reshape(size, size, 3)  # unique values, RGB like the reference
        for h in range(size - delta, delta, -1):
            for w in range(size - delta, delta, -1):
                dx, dy = int(off[i, 0, h, w]), int(off[i, 1, h, w])
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]  # the reference's line
        want = x[..., 0].reshape(-1) // 3
        assert np.array_equal(src[i].numpy(), want)


def _smooth_u8(seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    layer = ndi.gaussian_filter(rng.normal(0.65, 0.3, (size, size)), 1.5)
    layer[layer < 0.66] = 0
    return (np.clip(layer, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("seed,size", [(0, 48), (1, 48), (2, 48), (3, 48), (4, 160)])
def test_spatter_opencv_steps_match_opencv(seed: int, size: int) -> None:
    liquid = _smooth_u8(seed, size)
    t = torch.from_numpy(liquid).double()[None, None]
    edges = _spatter.canny(t, 50, 150)[0, 0].numpy()
    want_edges = cv2.Canny(liquid, 50, 150) > 0
    assert (edges != want_edges).mean() < 0.002  # OpenCV's SIMD paths may differ on exact ties
    dist = _spatter.distance_to_edges(torch.from_numpy(want_edges)[None, None])[0, 0].numpy()
    want_dist = cv2.distanceTransform((255 - want_edges * 255).astype(np.uint8), cv2.DIST_L2, 5)
    _, want_dist = cv2.threshold(want_dist, 20, 20, cv2.THRESH_TRUNC)
    np.testing.assert_allclose(dist, want_dist, atol=2e-3)
    u8 = (np.random.default_rng(seed).random((30, 30)) ** 2 * 200).astype(np.uint8)
    eq = _spatter.equalize_hist(torch.from_numpy(u8).double()[None, None])[0, 0].numpy()
    assert np.array_equal(eq, cv2.equalizeHist(u8))


def test_noise_statistics() -> None:
    x = torch.full((2, 3, 64, 64), 0.5)
    g = torch.Generator().manual_seed(0)
    c = CIFAR["gaussian_noise"][4]
    y = corrupt(x, "gaussian_noise", 5, generator=g)
    assert abs(float((y - x).std()) - c) < 0.03 * c
    y = corrupt(x, "shot_noise", 5, generator=g)  # Poisson(50 * 0.5) / 50
    lam = CIFAR["shot_noise"][4]
    assert abs(float(y.mean()) - 0.5) < 0.01 and abs(float(y.var()) - 0.5 / lam) < 0.1 * 0.5 / lam
    y = corrupt(x, "impulse_noise", 5, generator=g)
    amount = CIFAR["impulse_noise"][4]
    assert abs(float(((y == 0) | (y == 1)).float().mean()) - amount) < 0.15 * amount
    assert abs(float((y == 1).float().mean()) - amount / 2) < 0.2 * amount / 2
    y = corrupt(x, "speckle_noise", 5, generator=g)
    assert abs(float((y - x).std()) - 0.5 * CIFAR["speckle_noise"][4]) < 0.03 * 0.5 * CIFAR["speckle_noise"][4]


@pytest.mark.parametrize("sigma,mode", [(0.8, "nearest"), (1.0, "reflect"), (0.5, "mirror"), (3.0, "nearest")])
def test_gaussian_blur_matches_scipy_in_every_border_mode(sigma: float, mode: str) -> None:
    img = photo_like(1, 128, seed=2)[0] / 255.0
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    got = _ops.gaussian_blur(x, sigma, mode=mode)[0].permute(1, 2, 0).numpy()
    want = ndi.gaussian_filter(img, (sigma, sigma, 0), mode=mode, truncate=4.0)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_chunked_plane_ops_equal_per_image_results() -> None:
    # a float64 batch above CHUNK_BYTES: blurs (banded and dense) and the FFT correlation run
    # over chunks of planes and must give what each image gives on its own
    x = torch.rand(6, 3, 96, 100, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert x.numel() * x.element_size() > _ops.CHUNK_BYTES
    k = torch.rand(9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ops = (lambda t: _ops.gaussian_blur(t, 1.2, mode="mirror"), lambda t: _ops.gaussian_blur(t, 3.0),
           lambda t: _ops.correlate2d(t, k, "mirror"))
    for op in ops:
        each = torch.cat([op(x[i : i + 1]) for i in range(x.shape[0])])
        torch.testing.assert_close(op(x), each, rtol=0, atol=1e-12)


def test_correlate2d_fft_path_equals_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.rand(2, 3, 40, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    k = torch.rand(9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    via_fft = _ops.correlate2d(x, k, "mirror")
    monkeypatch.setattr(_ops, "FFT_MIN_TAPS", 1000)
    direct = _ops.correlate2d(x, k, "mirror")
    want = np.stack([[cv2.filter2D(p, -1, k.numpy(), borderType=cv2.BORDER_REFLECT_101) for p in img]
                     for img in x.numpy()])
    np.testing.assert_allclose(direct.numpy(), want, atol=1e-12)
    np.testing.assert_allclose(via_fft.numpy(), want, atol=1e-10)
