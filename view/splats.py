"""Gaussians -> the arrays viser's splat renderer takes: centres, 3D covariances, RGB, opacity.

Two things the browser cannot do the way our renderer does, handled here:
- Colour is one RGB per Gaussian (viser has no spherical harmonics). With cameras known, each
  Gaussian gets the mean of the colours its SH gives toward the input cameras: close for the views the
  reconstruction was made from in the common case of little view dependence, and much closer than the
  degree-0 term alone, which is the colour averaged over all directions (used without cameras).
- viser stores covariances as float16, whose normal range (6e-5 to 65504) holds Gaussians with standard
  deviations from about 0.008 to 256 units. Scenes are in arbitrary units (per-pixel Gaussians of a
  capture in metres are millimetres wide), so the splats are handed over scaled by a power of two that
  puts the median Gaussian near 1 unit, under a scene node scaled by its inverse: the browser undoes the
  scale in float32 and the world keeps its units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.gaussians import Gaussians
from model.render.sh import sh_basis, sh_to_color
from model.rotations import quat_to_matrix

CHUNK = 1 << 18  # Gaussians per step of the colour bake, bounding its temporary memory


@dataclass
class SplatArrays:
    centers: np.ndarray  # [N, 3] float32, multiplied by `scale`
    covariances: np.ndarray  # [N, 3, 3] float32, multiplied by scale^2
    rgbs: np.ndarray  # [N, 3] float32 in [0, 1]
    opacities: np.ndarray  # [N, 1] float32 in [0, 1]
    scale: float  # a power of two; the node holding the splats is scaled by 1 / scale


def covariances(gaussians: Gaussians) -> Tensor:
    """World covariances R diag(s^2) R^T: [N, 3, 3]."""
    rot = quat_to_matrix(gaussians.quats)  # [N, 3, 3]
    return (rot * gaussians.scales[:, None, :].square()) @ rot.transpose(1, 2)


def float16_scale(gaussians: Gaussians) -> float:
    """Power of two that brings the median standard deviation of the Gaussians near 1."""
    median = float(gaussians.scales.median())
    return float(2.0 ** -round(np.log2(median))) if median > 0 else 1.0


def baked_colors(gaussians: Gaussians, camera_centres: Tensor | None) -> Tensor:
    """One RGB per Gaussian [N, 3] in [0, 1]: the mean over camera_centres [C, 3] of the SH colour
    toward each, or the degree-0 colour without cameras.

    Colour is linear in the SH basis, so the mean colour is the SH evaluated with the basis averaged
    over the cameras (clamped once, at the end): one basis evaluation per camera, one product in all.
    """
    if camera_centres is None or len(camera_centres) == 0:
        return sh_to_color(0, gaussians.means, gaussians.sh).clamp(0, 1)
    degree = gaussians.sh_degree
    out = torch.empty(gaussians.count, 3)
    for start in range(0, gaussians.count, CHUNK):
        means = gaussians.means[start:start + CHUNK]  # [n, 3]
        basis = sum(sh_basis(F.normalize(means - centre, dim=-1), degree) for centre in camera_centres)  # [n, K]
        coeffs = gaussians.sh[start:start + CHUNK, :basis.shape[-1]]  # [n, K, 3]
        out[start:start + CHUNK] = torch.einsum("nk,nkc->nc", basis / len(camera_centres), coeffs) + 0.5
    return out.clamp(0, 1)


def splat_arrays(gaussians: Gaussians, camera_centres: Tensor | None = None) -> SplatArrays:
    g = gaussians.detach().to("cpu", torch.float32)
    scale = float16_scale(g)
    return SplatArrays(
        centers=(g.means * scale).numpy(),
        covariances=(covariances(g).double() * scale**2).float().numpy(),
        rgbs=baked_colors(g, camera_centres).numpy(),
        opacities=g.opacities[:, None].numpy(),
        scale=scale,
    )
