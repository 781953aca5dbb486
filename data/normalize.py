"""Pose normalisation (as in the official code) and its inverse for predicted Gaussians.

The reference frame is the mean input camera: origin at the mean input position, z along the mean
forward axis, y along the mean down axis made orthogonal to z (Gram-Schmidt), x = y cross z. All
poses are expressed in that frame, then translations are scaled by
1 / (scene_scale * max |coordinate|), the largest absolute x, y or z of an input camera centre.

The whole map is one similarity M = diag(k, k, k, 1) @ ref^-1 (world -> normalised), returned so
predictions can be mapped back: points by M^-1, Gaussians by `denormalize_gaussians` (means moved,
log-scales shifted by log(1/k), quaternions and SH colour rotated). Being rigid-invariant, the
normalised poses do not depend on the world frame a dataset happens to use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from model.cameras import invert_rigid
from model.gaussians import Gaussians
from model.rotations import matrix_to_quat, quat_multiply

from .errors import SceneError
from .sh_rotation import rotate_sh

_DEGENERATE = 0.05  # below this length the mean forward (or down) axis has no reliable direction


def normalization_transform(input_c2w: Tensor, scene_scale: float = 1.0) -> Tensor:
    """World -> normalised similarity [4, 4] (float64) from the input cameras' c2w [V, 4, 4].

    When the mean forward axis nearly vanishes (e.g. cameras orbiting inwards all the way round),
    the first input camera's orientation is used instead; the origin is still the mean position.
    """
    c2w = input_c2w.double()
    position = c2w[:, :3, 3].mean(0)  # [3]
    forward = c2w[:, :3, 2].mean(0)
    down = c2w[:, :3, 1].mean(0)
    down = down - (down @ F.normalize(forward, dim=0)) * F.normalize(forward, dim=0)
    if forward.norm() < _DEGENERATE or down.norm() < _DEGENERATE:
        forward, down = c2w[0, :3, 2], c2w[0, :3, 1]
    forward = F.normalize(forward, dim=0)
    down = F.normalize(down, dim=0)
    right = torch.linalg.cross(down, forward)
    ref = torch.eye(4, dtype=torch.float64)
    ref[:3, 0], ref[:3, 1], ref[:3, 2], ref[:3, 3] = right, down, forward, position
    to_ref = invert_rigid(ref)
    extent = (to_ref[:3, :3] @ c2w[:, :3, 3].T + to_ref[:3, 3:]).abs().max()
    if not extent > 1e-9:
        raise SceneError("all input cameras sit at the same position, so the scene scale is undefined; "
                         "choose input views from a moving camera")
    k = 1.0 / (scene_scale * float(extent))
    return torch.diag(torch.tensor([k, k, k, 1.0], dtype=torch.float64)) @ to_ref


def similarity_scale(m: Tensor) -> Tensor:
    """The uniform scale factor k of similarities m [..., 4, 4]."""
    return m[..., :3, 0].norm(dim=-1)


def transform_c2w(m: Tensor, c2w: Tensor) -> Tensor:
    """Camera poses c2w [..., V, 4, 4] after the similarity m [..., 4, 4]: still rigid, centres scaled."""
    out = m[..., None, :, :].to(c2w.dtype) @ c2w
    out[..., :3, :3] /= similarity_scale(m).to(c2w.dtype)[..., None, None, None]
    return out


def normalize_poses(input_c2w: Tensor, target_c2w: Tensor, scene_scale: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """(normalised input c2w [V, 4, 4], normalised target c2w [T, 4, 4], world -> normalised M [4, 4])."""
    m = normalization_transform(input_c2w, scene_scale)
    inputs = transform_c2w(m, input_c2w.double()).to(input_c2w.dtype)
    targets = transform_c2w(m, target_c2w.double()).to(target_c2w.dtype)
    return inputs, targets, m.to(input_c2w.dtype)


def denormalize_points(points: Tensor, m: Tensor) -> Tensor:
    """Normalised points [..., P, 3] back to the original world, m [..., 4, 4] world -> normalised."""
    inv = torch.linalg.inv(m.double())
    out = points.double() @ inv[..., :3, :3].transpose(-1, -2) + inv[..., None, :3, 3]
    return out.to(points.dtype)


def transform_gaussians(g: Gaussians, m: Tensor, chunk: int = 1 << 16) -> Gaussians:
    """Gaussians [..., N] moved by the similarity m [..., 4, 4] (leading dims match the Gaussians').

    Computed in float64, `chunk` Gaussians at a time: the float64 copies of a whole scene's SH would
    be the largest allocation of a reconstruction after its forward pass.
    """
    m = m.double()
    k = similarity_scale(m)  # [...]
    rot = m[..., :3, :3] / k[..., None, None]  # [..., 3, 3]
    turn = matrix_to_quat(rot)[..., None, :]  # [..., 1, 4]
    means, quats, sh = torch.empty_like(g.means), torch.empty_like(g.quats), torch.empty_like(g.sh)
    for start in range(0, g.count, chunk):
        part = slice(start, start + chunk)
        means[..., part, :] = g.means[..., part, :].double() @ m[..., :3, :3].transpose(-1, -2) + m[..., None, :3, 3]
        quats[..., part, :] = quat_multiply(turn, g.quats[..., part, :].double())  # after the Gaussian's own
        sh[..., part, :, :] = rotate_sh(g.sh[..., part, :, :].double(), rot)
    return Gaussians(means=means, log_scales=g.log_scales + k.log().to(g.log_scales.dtype)[..., None, None],
                     quats=quats, opacity_logits=g.opacity_logits, sh=sh)


def denormalize_gaussians(g: Gaussians, m: Tensor) -> Gaussians:
    """Gaussians predicted in the normalised frame -> the original world frame (m: world -> normalised)."""
    return transform_gaussians(g, torch.linalg.inv(m.double()))
