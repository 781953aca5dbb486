"""Gaussians <-> PLY in the graphdeco 3DGS layout, which standard 3DGS viewers open.

Per vertex, float32, in this order:
  x y z            means
  nx ny nz         zeros (viewers expect them)
  f_dc_0..2        SH degree-0 coefficient per colour channel (rendered RGB = 0.5 + 0.28209479 * f_dc)
  f_rest_0..M-1    the other SH coefficients, channel-major: sh[:, 1:, :] transposed to [N, 3, K-1]
  opacity          opacity logit (viewers apply sigmoid)
  scale_0..2       log-scales (viewers apply exp)
  rot_0..3         quaternion wxyz (viewers normalise)
Saving raw parameters as float32 makes load(save(g)) bit-exact for float32 Gaussians.

Files are written at SH degree 3 by default (45 f_rest fields), the missing higher bands as zeros,
which render nothing: graphdeco's loader asserts the f_rest count of the degree it was built with
(3), and several viewers read only that layout. `sh_degree=None` keeps the Gaussians' own degree.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from model.gaussians import Gaussians, sh_degree_for


def ply_field_names(sh_degree: int) -> list[str]:
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz"]
        + [f"f_dc_{i}" for i in range(3)]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity"]
        + [f"scale_{i}" for i in range(3)]
        + [f"rot_{i}" for i in range(4)]
    )


def save_ply(gaussians: Gaussians, path: str | os.PathLike, sh_degree: int | None = 3) -> Path:
    """Write one scene's Gaussians (means [N, 3]) to `path`, atomically, at SH degree `sh_degree`
    (zero-padded; None: the Gaussians' own degree)."""
    if gaussians.means.dim() != 2:
        raise ValueError("save_ply writes one scene: means must be [N, 3]; use gaussians.scene(b) for a batch")
    g = gaussians.detach().to("cpu", torch.float32)
    degree = g.sh_degree if sh_degree is None else sh_degree
    if not g.sh_degree <= degree <= 3:
        raise ValueError(f"cannot write SH degree {degree} for Gaussians of degree {g.sh_degree}: the degree "
                         "can only be padded up to 3 (pass None to keep it)")
    n = g.count
    sh = torch.cat([g.sh, torch.zeros(n, (degree + 1) ** 2 - g.sh.shape[1], 3)], dim=1)  # [N, K, 3] zero-padded
    f_dc = sh[:, 0, :]  # [N, 3]
    f_rest = sh[:, 1:, :].transpose(1, 2).reshape(n, -1)  # [N, 3*(K-1)] channel-major
    columns = torch.cat(
        [g.means, torch.zeros(n, 3), f_dc, f_rest, g.opacity_logits[:, None], g.log_scales, g.quats], dim=1
    ).numpy()
    names = ply_field_names(degree)
    vertex = np.empty(n, dtype=[(name, "f4") for name in names])
    for i, name in enumerate(names):
        vertex[name] = columns[:, i]
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp))
    os.replace(tmp, path)
    return path


def load_ply(path: str | os.PathLike) -> Gaussians:
    """Read a graphdeco-layout PLY into raw-parameter Gaussians (float32, CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PLY file at {path}")
    try:
        data = PlyData.read(str(path))
        vertex = data["vertex"]
    except Exception as exc:
        raise ValueError(f"{path} is not a readable PLY file with a 'vertex' element ({exc})") from None
    names = [p.name for p in vertex.properties]
    n_rest = sum(name.startswith("f_rest_") for name in names)
    k = n_rest // 3 + 1
    if n_rest % 3 or k not in (1, 4, 9, 16):
        raise ValueError(f"{path}: {n_rest} f_rest fields do not match an SH degree 0-3 (expected 0, 9, 24 or 45)")
    expected = ply_field_names(sh_degree_for(k))
    missing = [name for name in expected if name not in names]
    if missing:
        raise ValueError(f"{path} is not a 3DGS PLY in the graphdeco layout: missing fields {missing}")
    columns = np.stack([np.asarray(vertex[name], dtype=np.float32) for name in expected], axis=1)
    if not np.isfinite(columns).all():
        bad = sorted({expected[j] for j in np.nonzero(~np.isfinite(columns))[1]})
        raise ValueError(f"{path} contains NaN or infinite values in fields {bad}")
    t = torch.from_numpy(columns)
    n = t.shape[0]
    f_dc = t[:, 6:9]
    f_rest = t[:, 9 : 9 + n_rest].reshape(n, 3, k - 1).transpose(1, 2)  # [N, K-1, 3]
    rest = t[:, 9 + n_rest :]
    return Gaussians(
        means=t[:, 0:3].contiguous(),
        log_scales=rest[:, 1:4].contiguous(),
        quats=rest[:, 4:8].contiguous(),
        opacity_logits=rest[:, 0].contiguous(),
        sh=torch.cat([f_dc[:, None, :], f_rest], dim=1).contiguous(),
    )

