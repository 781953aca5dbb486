"""OpenCV radial-tangential lens distortion (k1, k2, p1, p2) and undistortion by resampling.

The model acts on normalised camera coordinates (x, y) = ((u - cx) / fx, (v - cy) / fy), so the
coefficients do not depend on the image resolution. COLMAP's SIMPLE_RADIAL, RADIAL and OPENCV models
and nerfstudio's k1 k2 p1 p2 are all this model with some coefficients zero.

Undistorting keeps the image size and the principal point and scales the focal length by one
factor chosen so that every output pixel samples inside the source image (no empty corners), like
OpenCV's `getOptimalNewCameraMatrix(alpha=0)` but without moving the principal point.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _distort_xy(x: Tensor, y: Tensor, k1, k2, p1, p2) -> tuple[Tensor, Tensor]:
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    return x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y


def distort(xy: Tensor, coeffs: Tensor) -> Tensor:
    """Distort normalised points xy [..., 2] with coeffs [..., 4] (k1, k2, p1, p2)."""
    x, y = xy.unbind(-1)
    k = (c[..., None] if c.dim() < x.dim() else c for c in coeffs.unbind(-1))
    return torch.stack(_distort_xy(x, y, *k), -1)


def undistort_points(xy_d: Tensor, coeffs: Tensor, iterations: int = 30) -> Tensor:
    """Invert `distort` by fixed-point iteration: x <- (x_d - tangential(x)) / radial(x).

    Converges for the mild distortion of phone and action cameras (|k1| r^2 well below 1).
    """
    k1, k2, p1, p2 = (c[..., None] if c.dim() < xy_d.dim() - 1 else c for c in coeffs.unbind(-1))
    xd, yd = xy_d.unbind(-1)
    x, y = xd, yd
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2
        x, y = ((xd - 2 * p1 * x * y - p2 * (r2 + 2 * x * x)) / radial,
                (yd - p1 * (r2 + 2 * y * y) - 2 * p2 * x * y) / radial)
    return torch.stack([x, y], -1)


def _source_pixels(intrinsics: Tensor, coeffs: Tensor, new_intrinsics: Tensor, uv: Tensor) -> Tensor:
    """Where output pixels uv [P, 2] (of the undistorted camera) sample the distorted image."""
    fx, fy, cx, cy = intrinsics.unbind(-1)
    nfx, nfy, ncx, ncy = new_intrinsics.unbind(-1)
    n = torch.stack([(uv[..., 0] - ncx) / nfx, (uv[..., 1] - ncy) / nfy], -1)  # [P, 2]
    d = distort(n, coeffs.expand(n.shape[0], 4))
    return torch.stack([d[..., 0] * fx + cx, d[..., 1] * fy + cy], -1)


def undistorted_intrinsics(intrinsics: Tensor, coeffs: Tensor, width: int, height: int) -> Tensor:
    """Intrinsics [4] of the undistorted image: same size and principal point, focal scaled by s.

    s is the smallest factor (found by bisection, in float64) for which every border pixel centre of
    the output samples at least half a pixel inside the source image.
    """
    intrinsics, coeffs = intrinsics.double(), coeffs.double()
    us = torch.arange(width, dtype=torch.float64) + 0.5
    vs = torch.arange(height, dtype=torch.float64) + 0.5
    border = torch.cat([
        torch.stack([us, torch.full_like(us, 0.5)], -1), torch.stack([us, torch.full_like(us, height - 0.5)], -1),
        torch.stack([torch.full_like(vs, 0.5), vs], -1), torch.stack([torch.full_like(vs, width - 0.5), vs], -1),
    ])  # [P, 2]

    def fits(s: float) -> bool:
        new = intrinsics * torch.tensor([s, s, 1.0, 1.0], dtype=torch.float64)
        src = _source_pixels(intrinsics, coeffs, new, border)
        inside_x = (src[:, 0] >= 0.5) & (src[:, 0] <= width - 0.5)
        inside_y = (src[:, 1] >= 0.5) & (src[:, 1] <= height - 0.5)
        return bool((inside_x & inside_y).all())

    lo, hi = 0.25, 4.0
    if not fits(hi):
        raise ValueError(f"lens distortion {coeffs.tolist()} is too strong to undistort into a pinhole image")
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return intrinsics * torch.tensor([hi, hi, 1.0, 1.0], dtype=torch.float64)


def undistortion_grid(intrinsics: Tensor, coeffs: Tensor, new_intrinsics: Tensor, width: int, height: int,
                      source_width: int | None = None, source_height: int | None = None) -> Tensor:
    """`grid_sample` grid [H, W, 2] (align_corners=False) resampling a distorted image to a pinhole.

    The output is width x height pixels of the pinhole `new_intrinsics`; the source is the distorted
    image of `intrinsics` and size source_width x source_height (default: the output size). float32
    suffices: normalised coordinates are O(1), so rounding stays far below 1e-3 pixels.
    """
    source_width, source_height = source_width or width, source_height or height
    fx, fy, cx, cy = intrinsics.tolist()
    nfx, nfy, ncx, ncy = new_intrinsics.tolist()
    x = ((torch.arange(width) + 0.5 - ncx) / nfx)[None, :]  # [1, W]: rays of the output pixel columns
    y = ((torch.arange(height) + 0.5 - ncy) / nfy)[:, None]  # [H, 1]
    xd, yd = _distort_xy(x, y, *coeffs.tolist())  # [H, W] each
    # align_corners=False: -1 and +1 are the outer edges of the border pixels, pixel centres at +0.5.
    return torch.stack([(xd * fx + cx) * (2 / source_width) - 1, (yd * fy + cy) * (2 / source_height) - 1], -1)


def grid_window(grid: Tensor, width: int, height: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """The source window a grid [H, W, 2] (for a width x height source) reads, and the grid rebased on it.

    Returns (grid for the window, (top, left, bottom, right)); a one-pixel margin keeps every bilinear
    neighbour inside, so sampling the window gives the same values as sampling the whole image.
    """
    x = (grid[..., 0] + 1) * (width / 2)  # source pixel coordinates
    y = (grid[..., 1] + 1) * (height / 2)
    left, right = max(0, int(x.min()) - 1), min(width, int(x.max()) + 2)
    top, bottom = max(0, int(y.min()) - 1), min(height, int(y.max()) + 2)
    rebased = torch.stack([(x - left) * (2 / (right - left)) - 1, (y - top) * (2 / (bottom - top)) - 1], -1)
    return rebased, (top, left, bottom, right)


def remap(images: Tensor, grid: Tensor) -> Tensor:
    """Resample float images [V, h, w, 3] through grid [H, W, 2] or [V, H, W, 2] (bilinear) -> [V, H, W, 3]."""
    x = images.permute(0, 3, 1, 2)  # [V, 3, h, w]
    grid = grid.expand(images.shape[0], *grid.shape[-3:])
    out = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)  # [V, H, W, 3]
