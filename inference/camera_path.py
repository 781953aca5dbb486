"""A smooth camera path through the input cameras, for fly-through videos.

Positions follow a Catmull-Rom spline through the camera centres (it passes through every
camera, unlike a B-spline, so the video visits the captured viewpoints); orientations are
slerped between neighbouring cameras.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.rotations import matrix_to_quat, quat_to_matrix, slerp


def catmull_rom(points: Tensor, t: Tensor) -> Tensor:
    """Evaluate a uniform Catmull-Rom spline through points [P, 3] at parameters t [M] in [0, P-1]."""
    n = points.shape[0]
    padded = torch.cat([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])  # [P+2, 3]
    seg = t.floor().clamp(max=n - 2).long()  # [M]
    u = (t - seg)[:, None]  # [M, 1]
    p0, p1, p2, p3 = (padded[seg + k] for k in range(4))
    return 0.5 * (
        2 * p1 + (p2 - p0) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2 + (3 * p1 - p0 - 3 * p2 + p3) * u**3
    )


def smooth_path(c2w: Tensor, num_frames: int) -> Tensor:
    """Camera-to-world matrices [num_frames, 4, 4] along a smooth path through c2w [P, 4, 4] in order."""
    if c2w.shape[0] < 2:
        raise ValueError("a camera path needs at least two cameras")
    c2w = c2w.double()
    t = torch.linspace(0, c2w.shape[0] - 1, num_frames, dtype=torch.float64)
    centres = catmull_rom(c2w[:, :3, 3], t)  # [M, 3]
    quats = matrix_to_quat(c2w[:, :3, :3])  # [P, 4]
    seg = t.floor().clamp(max=c2w.shape[0] - 2).long()
    rots = quat_to_matrix(slerp(quats[seg], quats[seg + 1], t - seg))  # [M, 3, 3]
    out = torch.eye(4, dtype=torch.float64).repeat(num_frames, 1, 1)
    out[:, :3, :3] = rots
    out[:, :3, 3] = centres
    return out
