"""The OpenCV steps of ``spatter`` (water mode) in batched torch (private).

The reference (``spatter`` in make_cifar_c.py / make_imagenet_c.py) shapes water drops with
``Canny -> distanceTransform -> threshold -> blur -> equalizeHist -> filter2D -> blur``. Each step
is re-written here from OpenCV's documented algorithm for a batch of uint8-valued float maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustlab.corruptions._ops import box_blur3, correlate2d, pad

# OpenCV's canny.cpp: tan(22.5 deg); non-maximum suppression sector boundaries.
_TAN22 = 0.4142135623730950488016887242097
# distanceTransform(DIST_L2, DIST_MASK_5) chamfer weights (OpenCV docs: a=1, b=1.4, c=2.1969),
# each with its (dy, dx) mask offsets.
_CHAMFER5 = (
    (1.0, ((0, 1), (1, 0), (0, -1), (-1, 0))),
    (1.4, ((1, 1), (1, -1), (-1, 1), (-1, -1))),
    (2.1969, ((1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2), (2, -1), (-1, -2), (-2, -1))),
)
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
    dx, dy = _sobel(img)
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
        grown = _dilate3(edges).logical_and_(cand)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def _sobel(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3x3 Sobel derivatives (x, y) with replicated borders, as smoothing [1 2 1] times a
    central difference (exact: the inputs are integers)."""
    p = pad(img, 1, 1, "nearest")
    smooth_y = p[..., :-2, :] + p[..., 2:, :]
    smooth_y.add_(p[..., 1:-1, :], alpha=2)
    smooth_x = p[..., :, :-2] + p[..., :, 2:]
    smooth_x.add_(p[..., :, 1:-1], alpha=2)
    return smooth_y[..., 2:] - smooth_y[..., :-2], smooth_x[..., 2:, :] - smooth_x[..., :-2, :]


def _dilate3(mask: torch.Tensor) -> torch.Tensor:
    """3x3 binary dilation of a bool (N, 1, H, W) map (outside the image counts as False)."""
    p = F.pad(mask, (1, 1, 1, 1))
    rows = p[..., :, :-2] | p[..., :, 1:-1] | p[..., :, 2:]
    return rows[..., :-2, :] | rows[..., 1:-1, :] | rows[..., 2:, :]


def distance_to_edges(edges: torch.Tensor) -> torch.Tensor:
    """Chamfer-5x5 distance to the nearest edge pixel, truncated at 20 (float32).

    ``cv2.distanceTransform(255 - canny, DIST_L2, 5)`` followed by ``threshold(.., 20, 20,
    THRESH_TRUNC)``. Relaxation sweeps ``d = min(d, d[neighbour] + cost)`` over the 16 mask
    offsets, starting from 0 on edges and 20 elsewhere (the truncation, so no sweep spends time
    on distances above it). Every chamfer step costs at least 1, so 20 sweeps give every distance
    below 20 exactly. Offsets are grouped by cost (``min(a + c, b + c) == min(a, b) + c`` holds
    in floating point too) and the sweeps ping-pong between two padded buffers.
    """
    h, w = edges.shape[-2:]
    cur = torch.full((*edges.shape[:-2], h + 4, w + 4), _DIST_TRUNC, dtype=torch.float32,
                     device=edges.device)
    nxt = cur.clone()
    cur[..., 2:-2, 2:-2].masked_fill_(edges, 0.0)
    best = torch.empty(*edges.shape[:-2], h, w, dtype=torch.float32, device=edges.device)

    def at(p: torch.Tensor, oy: int, ox: int) -> torch.Tensor:
        return p[..., 2 + oy : 2 + oy + h, 2 + ox : 2 + ox + w]

    for _ in range(int(_DIST_TRUNC)):
        out = at(nxt, 0, 0)
        out.copy_(at(cur, 0, 0))
        for cost, offsets in _CHAMFER5:
            torch.minimum(at(cur, *offsets[0]), at(cur, *offsets[1]), out=best)
            for oy, ox in offsets[2:]:
                torch.minimum(best, at(cur, oy, ox), out=best)
            torch.minimum(out, best.add_(cost), out=out)
        if torch.equal(nxt, cur):
            break
        cur, nxt = nxt, cur
    return at(cur, 0, 0).clone()


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
