"""Unit quaternions (wxyz) and rotation matrices, the conversions the project needs in one place."""

from __future__ import annotations

import torch
from torch import Tensor


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] (wxyz, normalised here)."""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    rows = [
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ]
    return torch.stack(rows, -2)


def matrix_to_quat(m: Tensor) -> Tensor:
    """Quaternions [..., 4] (wxyz, w >= 0) from rotation matrices [..., 3, 3].

    Takes the largest of the four candidate denominators per matrix, so no branch divides by a
    value near zero.
    """
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    candidates = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22], -1),
        ],
        -2,
    )  # [..., 4 candidates, 4]: candidate i equals 4 * q_i * q, so slot i holds 4 * q_i^2
    diag = torch.stack([candidates[..., i, i] for i in range(4)], -1)  # [..., 4]
    best = diag.argmax(-1, keepdim=True)  # [..., 1]
    pick = torch.take_along_dim(candidates, best[..., None].expand(*best.shape[:-1], 1, 4), dim=-2)[..., 0, :]
    q = pick / (2 * torch.take_along_dim(diag, best, -1).clamp_min(1e-12).sqrt())
    q = torch.nn.functional.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of quaternions [..., 4] (wxyz): rotation b first, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between unit quaternions a, b [..., 4] at fractions t [...]."""
    dot = (a * b).sum(-1, keepdim=True)
    b = torch.where(dot < 0, -b, b)  # take the short way round
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    t = t[..., None]
    small = theta < 1e-6
    sin_theta = torch.sin(theta).clamp_min(1e-12)
    wa = torch.where(small, 1 - t, torch.sin((1 - t) * theta) / sin_theta)
    wb = torch.where(small, t, torch.sin(t * theta) / sin_theta)
    return torch.nn.functional.normalize(wa * a + wb * b, dim=-1)
