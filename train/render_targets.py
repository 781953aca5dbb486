"""Render predicted Gaussians into the target cameras for the loss: fp32, white background, and
one activation checkpoint per (scene, target view).

The rasterizer's intermediate buffers grow with image size x Gaussians per view; storing them for
all targets at 960x544 does not fit in memory. With per-view checkpointing only one view's buffers
exist at a time and the rest are recomputed during backward. Rendering always runs in fp32 with
autocast off: depth sorting and alpha compositing are not accurate enough in bf16.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from model.cameras import Cameras
from model.gaussians import Gaussians
from model.render import rasterize


def _render_one(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, sh: Tensor, viewmat: Tensor,
                K: Tensor, width: int, height: int, near: float, far: float, backend: str) -> Tensor:
    """One scene [N, ...] into one camera (viewmat [1, 4, 4], K [1, 3, 3]) -> image [H, W, 3]."""
    sh_degree = round(sh.shape[-2] ** 0.5) - 1
    background = torch.ones(1, 3, dtype=means.dtype, device=means.device)
    colors, _, _ = rasterize(means, quats, scales, opacities, sh, viewmat, K, width, height, near_plane=near,
                             far_plane=far, sh_degree=sh_degree, backgrounds=background, backend=backend)
    return colors[0]


def render_targets(gaussians: Gaussians, cameras: Cameras, near: float = 0.01, far: float = 1e6,
                   checkpoint_views: bool = True, backend: str = "auto") -> Tensor:
    """Gaussians [B, N] seen from cameras [B, T] -> images [B, T, H, W, 3] in fp32."""
    device_type = gaussians.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        means = gaussians.means.float()  # [B, N, 3]
        quats = gaussians.rotations.float()  # [B, N, 4]
        scales = gaussians.scales.float()  # [B, N, 3]
        opacities = gaussians.opacities.float()  # [B, N]
        sh = gaussians.sh.float()  # [B, N, K, 3]
        viewmats = cameras.viewmats.float()  # [B, T, 4, 4]
        Ks = cameras.Ks.float()  # [B, T, 3, 3]
        batch, views = cameras.shape
        rows = []
        for b in range(batch):
            images = []
            for t in range(views):
                args = (means[b], quats[b], scales[b], opacities[b], sh[b], viewmats[b, t:t + 1], Ks[b, t:t + 1],
                        cameras.width, cameras.height, near, far, backend)
                if checkpoint_views and torch.is_grad_enabled():
                    images.append(checkpoint(_render_one, *args, use_reentrant=False))
                else:
                    images.append(_render_one(*args))
            rows.append(torch.stack(images))  # [T, H, W, 3]
        return torch.stack(rows)  # [B, T, H, W, 3]
