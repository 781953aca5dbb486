"""Which (ray, object) pairs need an exact intersection test.

Most rays miss most objects. Camera rays are culled per view with the screen rectangle of each
object's bounding sphere; rays that share one direction (shadow rays towards a directional light) are
culled by projecting along that direction, where each bounding sphere becomes a disc.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sphere_screen_rects(centres: Tensor, radius: Tensor, c2w: Tensor, intrinsics: Tensor, width: int,
                        height: int) -> Tensor:
    """Pixel rectangles [V, P, 4] (row0, row1, col0, col1; half-open, empty when row0 >= row1 or
    col0 >= col1) holding every pixel whose centre ray passes through a sphere (centres [P, 3],
    radius [P]) in views c2w [V, 4, 4], intrinsics [V, 4].

    Exact per axis: the extreme rays are those in the planes through the camera's y (for columns) or
    x (for rows) axis that touch the sphere; one pixel of margin absorbs rounding.
    """
    rot, eye = c2w[:, None, :3, :3], c2w[:, None, :3, 3]  # [V, 1, 3, 3], [V, 1, 3]
    cam = ((centres[None] - eye)[..., None, :] @ rot)[..., 0, :]  # [V, P, 3] R^T (c - eye)
    fx, fy, cx, cy = (v[:, None] for v in intrinsics.unbind(-1))  # [V, 1]
    col0, col1 = _pixel_range(cam[..., 0], cam[..., 2], radius, fx, cx, width)
    row0, row1 = _pixel_range(cam[..., 1], cam[..., 2], radius, fy, cy, height)
    return torch.stack([row0, row1, col0, col1], -1)


def _pixel_range(a: Tensor, z: Tensor, radius: Tensor, focal: Tensor, centre: Tensor, size: int):
    """Half-open pixel index range along one image axis for spheres at (a, z) in that axis' plane."""
    dist = (a * a + z * z).sqrt()
    inside = dist <= radius  # the camera is inside the sphere's cylinder: every pixel may see it
    angle = torch.atan2(a, z)
    half = torch.asin((radius / dist.clamp_min(1e-9)).clamp(max=1.0))
    behind = (angle + half <= -math.pi / 2) | (angle - half >= math.pi / 2)
    # Ray through pixel k has slope (k + 0.5 - centre) / focal. Just short of +-pi/2 the slope is far
    # outside any image, so clamping there keeps tan finite and the right sign.
    limit = math.pi / 2 - 1e-3
    first = torch.floor(focal * torch.tan((angle - half).clamp(-limit, limit)) + centre - 0.5) - 1
    last = torch.ceil(focal * torch.tan((angle + half).clamp(-limit, limit)) + centre - 0.5) + 2
    first = torch.where(inside, 0, first.clamp(0, size)).long()
    last = torch.where(inside, size, last.clamp(0, size)).long()
    return first, torch.where(behind & ~inside, first, last)


def rect_pairs(rects: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """(ray [M], object [M]) pairs for rectangles [V, P, 4]; ray = view * H * W + row * W + col."""
    rays, objects = [], []
    for v, p in (rects[..., 0] < rects[..., 1]).logical_and(rects[..., 2] < rects[..., 3]).nonzero().tolist():
        r0, r1, c0, c1 = rects[v, p].tolist()
        pixels = (torch.arange(r0, r1)[:, None] * width + torch.arange(c0, c1)).reshape(-1)
        rays.append(pixels + v * height * width)
        objects.append(torch.full_like(pixels, p))
    if not rays:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    return torch.cat(rays), torch.cat(objects)


def parallel_ray_pairs(origins: Tensor, direction: Tensor, centres: Tensor, radius: Tensor) -> tuple[Tensor, Tensor]:
    """(ray [M], object [M]) pairs for rays origins [N, 3] sharing one unit direction [3] that pass
    through a bounding sphere (centres [P, 3], radius [P]) ahead of their origin."""
    # An orthonormal basis (e1, e2) of the plane perpendicular to the direction.
    helper = torch.tensor([1.0, 0.0, 0.0]) if direction[0].abs() < 0.9 else torch.tensor([0.0, 1.0, 0.0])
    e1 = torch.linalg.cross(direction, helper)
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(direction, e1)
    basis = torch.stack([e1, e2, direction], -1)  # [3, 3]
    p = origins @ basis  # [N, 3]
    c = centres @ basis  # [P, 3]
    da = p[:, 0:1] - c[:, 0]  # [N, P]
    db = p[:, 1:2] - c[:, 1]
    near = (da * da + db * db <= radius * radius) & (c[:, 2] - p[:, 2:3] > -radius)
    return near.nonzero(as_tuple=True)
