"""The OpenCV steps of ``spatter`` (water mode) in batched torch (private).

The reference (``spatter`` in make_cifar_c.py / make_imagenet_c.py) shapes water drops with
``Canny -> distanceTransform -> threshold -> blur -> equalizeHist -> filter2D -> blur``. Each step
is re-written here from OpenCV's documented algorithm for a batch of uint8-valued float maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustlab.corruptions._ops import box_blur3, correlate2d

# OpenCV's canny.cpp: tan(22.5 deg); non-maximum suppression sector boundaries.
_TAN22 = 0.4142135623730950488016887242097
# distanceTransform(DIST_L2, DIST_MASK_5) chamfer weights (OpenCV docs: a=1, b=1.4, c=2.1969).
_CHAMFER5 = ((0, 1, 1.0), (1, 0, 1.0), (0, -1, 1.0), (-1, 0, 1.0),
             (1, 1, 1.4), (1, -1, 1.4), (-1, 1, 1.4), (-1, -1, 1.4),
             (1, 2, 2.1969), (2, 1, 2.1969), (-1, 2, 2.1969), (-2, 1, 2.1969),
             (1, -2, 2.1969), (2, -1, 2.1969), (-1, -2, 2.1969), (-2, -1, 2.1969))
# spatter's emboss kernel (make_*_c.py) and distance truncation.
_EMBOSS = ((-2.0, -1.0, 0.0), (-1.0, 1.0, 1.0), (0.0, 1.0, 2.0))
_DIST_TRUNC = 20.0


def canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``cv2.Canny(img, low, high)`` (aperture 3, L1 gradient) on (N, 1, H, W) uint8 values.

    Sobel derivatives with replicated borders, |dx| + |dy| magnitude, non-maximum suppression in
    four sectors as in OpenCV's ``canny.cpp`` (strict ``>`` on one side, ``>=`` on the other),
    then hysteresis: pixels above ``high`` seed edges that grow through 8-connected pixels above
    ``low``. Returns a bool edge map.
    """
    sob = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=img.dtype,
                       device=img.device)
    dx = correlate2d(img, sob, "nearest")
    dy = correlate2d(img, sob.t(), "nearest")
    mag = dx.abs() + dy.abs()
    mp = F.pad(mag, (1, 1, 1, 1))  # zero magnitude outside the image, as OpenCV's buffer
    h, w = img.shape[-2:]

    def at(oy: int, ox: int) -> torch.Tensor:
        return mp[..., 1 + oy : 1 + oy + h, 1 + ox : 1 + ox + w]

    ax, ay = dx.abs(), dy.abs()
    horiz = ay < ax * _TAN22
    vert = ay > ax * (_TAN22 + 2.0)
    same_sign = (dx >= 0) == (dy >= 0)
    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    keep_d = torch.where(same_sign, (mag > at(-1, -1)) & (mag > at(1, 1)),
                         (mag > at(-1, 1)) & (mag > at(1, -1)))
    keep = torch.where(horiz, keep_h, torch.where(vert, keep_v, keep_d))
    cand = keep & (mag > int(low))
    edges = cand & (mag > int(high))
    while True:
        grown = cand & (F.max_pool2d(edges.to(img.dtype), 3, 1, 1) > 0)
        if bool((grown == edges).all()):
            return edges
        edges = grown


def distance_to_edges(edges: torch.Tensor) -> torch.Tensor:
    """Chamfer-5x5 distance to the nearest edge pixel, truncated at 20 (float).

    ``cv2.distanceTransform(255 - canny, DIST_L2, 5)`` followed by ``threshold(.., 20, 20,
    THRESH_TRUNC)``. Every chamfer step costs at least 1, so 20 relaxation sweeps give every
    distance up to 20 exactly; larger ones are truncated to 20 anyway.
    """
    big = 1e6
    d = torch.where(edges, 0.0, big).to(torch.float32)
    h, w = d.shape[-2:]
    for _ in range(int(_DIST_TRUNC)):
        dp = F.pad(d, (2, 2, 2, 2), value=big)
        new = d
        for oy, ox, cost in _CHAMFER5:
            new = torch.minimum(new, dp[..., 2 + oy : 2 + oy + h, 2 + ox : 2 + ox + w] + cost)
        if bool((new == d).all()):
            break
        d = new
    return d.clamp(max=_DIST_TRUNC)


def equalize_hist(img: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` per (N, 1, H, W) map of integer values in [0, 255]."""
    n = img.shape[0]
    v = img.reshape(n, -1).long()
    hist = torch.zeros(n, 256, dtype=torch.long, device=img.device).scatter_add_(
        1, v, torch.ones_like(v))
    total = v.shape[1]
    first = (hist > 0).long().argmax(dim=1, keepdim=True)
    first_count = hist.gather(1, first)
    # single precision as OpenCV: float scale = 255.f / (total - hist[first]); round(sum * scale)
    # (divided in float64 and rounded once to float32, i.e. the correctly rounded float quotient)
    scale = (255.0 / (total - first_count).clamp_min(1).double()).float()
    cums = torch.cumsum(hist, dim=1) - first_count  # OpenCV starts the sum after the first bin
    lut = torch.round(cums.float() * scale).clamp(0, 255).double()
    bins = torch.arange(256, device=img.device)[None, :]
    lut = torch.where(bins <= first, 0.0, lut)
    lut = torch.where(first_count == total, first.double(), lut)  # a constant map stays as it is
    return lut.gather(1, v).to(img.dtype).reshape(img.shape)


def water_mask(liquid8: torch.Tensor) -> torch.Tensor:
    """Un-normalised water-drop map ``liquid * dist`` from the uint8-valued liquid layer."""
    edges = canny(liquid8, 50, 150)
    dist = distance_to_edges(edges).to(liquid8.dtype)
    dist = torch.floor(box_blur3(dist))  # .astype(np.uint8)
    dist = equalize_hist(dist)
    emboss = torch.tensor(_EMBOSS, dtype=liquid8.dtype, device=liquid8.device)
    dist = torch.round(correlate2d(dist, emboss, "mirror")).clamp(0, 255)  # CV_8U saturation
    dist = box_blur3(dist)
    return liquid8 * dist
