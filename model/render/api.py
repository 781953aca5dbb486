"""`rasterize`: the one entry point of the renderer, mirroring `gsplat.rasterization` (v1.5.3).

Backends:
  "gsplat"  gsplat's CUDA kernels (CUDA tensors, gsplat installed)
  "cpu"     the project's multithreaded C++ kernels in csrc/ (CPU float32 tensors)
  "torch"   the plain-PyTorch reference (any device and float dtype; slow, the test oracle)
  "auto"    gsplat for CUDA tensors when it imports, cpu for CPU tensors, otherwise torch
The choice is logged once per distinct decision (logger "model.render", INFO).

All backends share gsplat's classic kernel rules: pixel centres at (j + 0.5, i + 0.5); EWA projection
with x/z, y/z clamped to 1.3x the half field of view; eps2d added to the 2D covariance; Gaussians
outside [near, far] culled; opacity-aware box radii ceil(min(3.33, sqrt(2 ln(255 o))) * sigma_axis)
per axis (the box just holding every pixel where alpha can reach 1/255); alpha = min(0.999,
o exp(-sigma)), skipped below 1/255; a pixel stops before the Gaussian that would take its
transmittance to 1e-4; 16x16 tiles, front to back by depth; background added as T_final * bg.

Differences from gsplat: the cpu and torch backends differentiate Ks as well as viewmats (gsplat,
hence backend "gsplat", only viewmats); meta carries the per-camera projection results but not
gsplat's tile-intersection tensors.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from model.fast_path import log_choice

from . import cpu, gsplat_backend, reference
from .checks import check_inputs
from .tiles import TILE, tile_grid


BACKENDS = ("auto", "torch", "cpu", "gsplat")


def rasterize(
    means: Tensor,  # [..., N, 3]
    quats: Tensor,  # [..., N, 4] wxyz, normalised inside
    scales: Tensor,  # [..., N, 3] activated (exp'd)
    opacities: Tensor,  # [..., N] activated (sigmoid'd)
    colors: Tensor,  # [..., N, D] features or [..., N, K, 3] SH when sh_degree is set; per camera [..., C, N, ...]
    viewmats: Tensor,  # [..., C, 4, 4] world-to-camera, OpenCV axes
    Ks: Tensor,  # [..., C, 3, 3] pixel intrinsics
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,  # [..., C, D]
    render_mode: str = "RGB",
    backend: str = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Render Gaussians into every camera.

    Returns render_colors [..., C, H, W, X] (X = D for "RGB", 1 for "D"/"ED", D + 1 with the depth
    last for "RGB+D"/"RGB+ED"; "D" is sum_i w_i z_i, "ED" that divided by the alpha),
    render_alphas [..., C, H, W, 1] and meta with "radii" [..., C, N, 2] int32 (0 = culled),
    "means2d" [..., C, N, 2] (pixels; its .grad after backward is the screen-space gradient used
    for densification), "depths" [..., C, N] (camera z), "conics" [..., C, N, 3], "opacities"
    [..., C, N], "width", "height", "tile_size", "tile_width", "tile_height", "n_batches",
    "n_cameras", "backend", and for cpu/torch "n_isects" (tile intersections) and "n_blends"
    (pixel-Gaussian pairs composited). Entries of culled Gaussians are zero.
    """
    batch_dims, N, C, D, per_camera = check_inputs(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, render_mode
    )
    chosen = _choose_backend(backend, means)
    if chosen == "gsplat":
        return gsplat_backend.rasterize(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
            backgrounds=backgrounds, render_mode=render_mode,
        )  # fmt: skip
    stages = cpu if chosen == "cpu" else reference
    if chosen == "cpu":
        for t in (means, quats, scales, opacities, colors, viewmats, Ks, backgrounds):
            if t is not None:
                cpu.check_supported(t)

    B = math.prod(batch_dims)
    viewmats = viewmats.reshape(B, C, 4, 4)
    Ks = Ks.reshape(B, C, 3, 3)
    means = means.reshape(B, N, 3)
    radii, means2d, depths, conics = stages.project(
        means, quats.reshape(B, N, 4), scales.reshape(B, N, 3), opacities.reshape(B, N), viewmats, Ks,
        width, height, eps2d, near_plane, far_plane,
    )  # fmt: skip
    # The tensor handed out in meta must be the one the compositor consumes, or it gets no grad.
    means2d = means2d.reshape(*batch_dims, C, N, 2)
    if means2d.requires_grad:
        means2d.retain_grad()

    if sh_degree is None:
        feats = colors.reshape(B, C if per_camera else 1, N, D).expand(B, C, N, D)  # [B, C, N, D]
    else:
        campos = camera_centres(viewmats)  # [B, C, 3]
        K = colors.shape[-2]
        if per_camera:  # each camera's own coefficients, evaluated from that camera only
            coeffs = colors.reshape(B, C, N, K, 3)
            feats = torch.cat([stages.sh_colors(sh_degree, means, campos[:, c : c + 1], coeffs[:, c])
                               for c in range(C)], 1)  # fmt: skip
        else:
            feats = stages.sh_colors(sh_degree, means, campos, colors.reshape(B, N, K, 3))
    bgs = None if backgrounds is None else backgrounds.reshape(B * C, D)  # [B*C, D]
    if render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([feats, depths[..., None]], -1)  # depth rides along as the last channel
        if bgs is not None:
            bgs = torch.cat([bgs, bgs.new_zeros(B * C, 1)], -1)
    elif render_mode in ("D", "ED"):
        feats, bgs = depths[..., None], None

    X = feats.shape[-1]
    opac = opacities.reshape(B, 1, N).expand(B, C, N)  # [B, C, N]
    render_colors, render_alphas, stats = stages.composite(
        means2d.reshape(B * C, N, 2), conics.reshape(B * C, N, 3), feats.reshape(B * C, N, X),
        opac.reshape(B * C, N), bgs, radii.reshape(B * C, N, 2), depths.reshape(B * C, N), width, height,
    )  # fmt: skip
    if render_mode in ("ED", "RGB+ED"):
        expected = render_colors[..., -1:] / render_alphas.clamp(min=1e-10)
        render_colors = torch.cat([render_colors[..., :-1], expected], -1)

    tw, th = tile_grid(width, height)
    meta = {
        "radii": radii.reshape(*batch_dims, C, N, 2),
        "means2d": means2d,
        "depths": depths.reshape(*batch_dims, C, N),
        "conics": conics.reshape(*batch_dims, C, N, 3),
        "opacities": opac.reshape(*batch_dims, C, N),
        "width": width,
        "height": height,
        "tile_size": TILE,
        "tile_width": tw,
        "tile_height": th,
        "n_batches": B,
        "n_cameras": C,
        "backend": chosen,
        **stats,
    }
    return (
        render_colors.reshape(*batch_dims, C, height, width, X),
        render_alphas.reshape(*batch_dims, C, height, width, 1),
        meta,
    )


def camera_centres(viewmats: Tensor) -> Tensor:
    """World positions of the cameras, [..., 4, 4] world-to-camera -> [..., 3]: solves R c + t = 0
    by the adjugate (a general 4x4 inverse costs milliseconds per call on CPU)."""
    r0, r1, r2 = viewmats[..., 0, :3], viewmats[..., 1, :3], viewmats[..., 2, :3]  # rows of R
    t = viewmats[..., :3, 3]
    c0, c1, c2 = torch.linalg.cross(r1, r2), torch.linalg.cross(r2, r0), torch.linalg.cross(r0, r1)
    det = (r0 * c0).sum(-1, keepdim=True)
    return -(c0 * t[..., 0:1] + c1 * t[..., 1:2] + c2 * t[..., 2:3]) / det


def _choose_backend(requested: str, means: Tensor) -> str:
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    device = means.device.type
    if requested == "gsplat":
        if device != "cuda":
            raise ValueError(
                f"backend='gsplat' needs CUDA tensors, got {device} tensors; use backend='cpu' (or 'auto') on CPU"
            )
        if not gsplat_backend.available():
            raise RuntimeError(
                "backend='gsplat' was requested but gsplat does not import; install it with "
                "`pip install gsplat` (needs a CUDA build of torch) or use backend='torch'"
            )
    if requested == "cpu" and device != "cpu":
        raise ValueError(
            f"backend='cpu' needs CPU tensors, got {device} tensors; use backend='auto' or move them with .cpu()"
        )

    chosen, why = requested, "requested"
    if requested == "auto":
        if device == "cuda" and gsplat_backend.available():
            chosen, why = "gsplat", "CUDA tensors and gsplat imports"
        elif device == "cpu":
            chosen, why = "cpu", "CPU tensors"
        else:
            chosen, why = "torch", f"{device} tensors and no fast kernel for them (install gsplat for CUDA)"
    level = logging.WARNING if chosen == "torch" and requested == "auto" else logging.INFO
    log_choice("model.render", f"rasterizer backend: {chosen} ({why}, backend={requested!r})", level)
    return chosen
