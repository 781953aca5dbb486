"""Pinhole cameras for the generator: intrinsics from a field of view, orientations, pixel rays.

OpenCV axes (x right, y down, z forward); the world is y-up (floor at y = 0). Pixel (i, j) has its
centre at (x, y) = (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

WORLD_UP = np.array([0.0, 1.0, 0.0])


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> Tensor:
    """Square pixels, principal point at the image centre: [4] (fx, fy, cx, cy)."""
    fx = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return torch.tensor([fx, fx, width / 2, height / 2], dtype=torch.float32)


def c2w_from_forward(positions: np.ndarray, forward: np.ndarray, roll: np.ndarray | None = None) -> Tensor:
    """Camera-to-world [N, 4, 4] (float32) for cameras at positions [N, 3] looking along forward [N, 3].

    The camera's x axis stays horizontal (then rolled by `roll` [N] radians about the view axis), so
    the horizon is level, as in hand-held video. Computed in float64, rounded once at the end.
    """
    z = forward / np.linalg.norm(forward, axis=-1, keepdims=True)  # [N, 3]
    x = np.cross(z, WORLD_UP)  # right = forward x up for a y-up world and y-down camera
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)  # down
    if roll is not None:
        c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
        x, y = c * x + s * y, -s * x + c * y
    c2w = np.zeros((len(positions), 4, 4))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = x, y, z
    c2w[:, :3, 3] = positions
    c2w[:, 3, 3] = 1.0
    return torch.from_numpy(c2w).float()


def pixel_rays(c2w: Tensor, intrinsics: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """World-space rays through every pixel centre of each view.

    c2w [V, 4, 4], intrinsics [V, 4]. Directions are NOT unit length: their camera-space z is 1, so a
    hit at ray parameter t has camera-space depth z = t.
    Returns (origins [V, 3], directions [V, H, W, 3]).
    """
    fx, fy, cx, cy = (v[:, None, None] for v in intrinsics.unbind(-1))  # [V, 1, 1]
    xs = torch.arange(width, dtype=torch.float32) + 0.5  # [W]
    ys = torch.arange(height, dtype=torch.float32) + 0.5  # [H]
    x = (xs[None, None, :] - cx) / fx  # [V, 1, W]
    y = (ys[None, :, None] - cy) / fy  # [V, H, 1]
    rot = c2w[:, None, None, :3, :3]  # [V, 1, 1, 3, 3]
    d_world = x[..., None] * rot[..., 0] + y[..., None] * rot[..., 1] + rot[..., 2]  # [V, H, W, 3]
    return c2w[:, :3, 3], d_world
