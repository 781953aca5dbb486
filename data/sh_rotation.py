"""Rotating spherical-harmonic colour coefficients with the scene (renderer's basis, model/render/sh.py).

If the world is rotated by R, a Gaussian's colour seen along d must equal its old colour seen along
R^T d. Each SH degree spans a rotation-invariant space, so per degree l the new coefficients are
D_l c_l with D_l = pinv(Y_l(P)) Y_l(R^T P) for any set of directions P that determines degree-l
functions; a fixed Fibonacci sphere of 64 directions does for l <= 3. Exact up to float rounding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from model.render.sh import sh_basis

_NUM_DIRECTIONS = 64


def _fibonacci_sphere(n: int) -> Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = (1 - z * z).sqrt()
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack([r * phi.cos(), r * phi.sin(), z], -1)  # [n, 3]


def sh_rotation_matrix(rotation: Tensor, degree: int) -> Tensor:
    """Block-diagonal matrices [..., K, K] (K = (degree + 1)^2) acting on coefficients, for R [..., 3, 3]."""
    dirs = _fibonacci_sphere(_NUM_DIRECTIONS)  # [P, 3]
    rot = rotation.double()
    rotated = dirs @ rot  # rows are R^T p: [..., P, 3]
    k = (degree + 1) ** 2
    out = torch.zeros(*rot.shape[:-2], k, k, dtype=torch.float64)
    out[..., 0, 0] = 1.0  # degree 0 is rotation invariant
    basis, basis_rot = sh_basis(dirs, degree), sh_basis(rotated, degree)  # [P, K], [..., P, K]
    for band in range(1, degree + 1):
        s = slice(band * band, (band + 1) ** 2)
        out[..., s, s] = torch.linalg.pinv(basis[:, s]) @ basis_rot[..., s]
    return out


def rotate_sh(sh: Tensor, rotation: Tensor) -> Tensor:
    """Coefficients sh [..., N, K, 3] of a scene rotated by R [..., 3, 3] (leading dims broadcast)."""
    degree = round(sh.shape[-2] ** 0.5) - 1
    if degree == 0:
        return sh
    d = sh_rotation_matrix(rotation, degree).to(sh.dtype)  # [..., K, K]
    return torch.einsum("...kj,...njc->...nkc", d, sh)
