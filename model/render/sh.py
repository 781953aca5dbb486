"""Real spherical harmonics up to degree 3 in the graphdeco / gsplat ordering, in plain PyTorch.

A Gaussian's view-dependent colour is `max(sum_j basis_j(dir) * coeffs_j + 0.5, 0)` with `dir` the
unit vector from the camera centre to the Gaussian; the +0.5 offset lets zero coefficients render
mid-grey and matches how graphdeco PLY files are meant to be displayed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SH_C0 = 0.28209479177387814  # the degree-0 basis value, 1 / (2 sqrt(pi))
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """Basis values at unit directions: dirs [..., 3] -> [..., (degree + 1)^2]."""
    if not 0 <= degree <= 3:
        raise ValueError(f"sh_degree must be 0, 1, 2 or 3, got {degree}")
    x, y, z = dirs.unbind(-1)  # each [...]
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def sh_to_color(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colour from SH coefficients.

    dirs [..., 3] (any length, normalised here), coeffs [..., K, 3] with K >= (degree + 1)^2
    (extra bands are ignored) -> colours [..., 3], clamped at 0.
    """
    basis = sh_basis(F.normalize(dirs, dim=-1), degree)  # [..., k]
    k = basis.shape[-1]
    return ((basis[..., None] * coeffs[..., :k, :]).sum(-2) + 0.5).clamp_min(0.0)
