"""Gaussian parameters as separate nn.Parameters in one Adam with named groups (graphdeco layout).

Each group holds exactly one parameter whose first dimension is the Gaussian index, so densification
can grow or shrink every group in step (see surgery.py). Group names double as attribute names.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.cameras import Cameras
from model.gaussians import Gaussians

from .config import RefineConfig
from .schedule import ExponentialLR

GROUPS = ("xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation")


class GaussianParams(nn.Module):
    def __init__(self, gaussians: Gaussians) -> None:
        super().__init__()
        if gaussians.means.dim() != 2:
            raise ValueError("refinement acts on one scene: means must be [N, 3]")
        g = gaussians.detach().to(torch.float32)
        self.xyz = nn.Parameter(g.means.clone())  # [N, 3]
        self.f_dc = nn.Parameter(g.sh[:, :1].clone())  # [N, 1, 3]
        self.f_rest = nn.Parameter(g.sh[:, 1:].clone())  # [N, K-1, 3]
        self.opacity = nn.Parameter(g.opacity_logits.clone())  # [N]
        self.scaling = nn.Parameter(g.log_scales.clone())  # [N, 3]
        self.rotation = nn.Parameter(g.quats.clone())  # [N, 4] wxyz

    @property
    def count(self) -> int:
        return self.xyz.shape[0]

    def gaussians(self) -> Gaussians:
        """The current parameters as Gaussians (differentiable; .detach() for a snapshot)."""
        return Gaussians(
            means=self.xyz,
            log_scales=self.scaling,
            quats=self.rotation,
            opacity_logits=self.opacity,
            sh=torch.cat([self.f_dc, self.f_rest], dim=1),
        )

    def tensors(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in GROUPS}


def scene_extent(cameras: Cameras) -> float:
    """graphdeco's cameras_extent: 1.1 x the largest distance of a camera centre from their mean.

    Camera centres are a robust scale of the scene (the initial points may contain far outliers).
    """
    centers = cameras.centers.reshape(-1, 3).double()  # [V, 3]
    return 1.1 * float((centers - centers.mean(0)).norm(dim=-1).max())


def scene_scale(cameras: Cameras, means: Tensor) -> float:
    """The scene's size for learning rates and density thresholds: the camera extent.

    Cameras that all sit at one point (a single view) have no extent; then 1.1 x the median distance
    of the Gaussians from that point stands in, which scales the same way with the scene.
    """
    extent = scene_extent(cameras)
    if extent > 0:
        return extent
    center = cameras.centers.reshape(-1, 3).mean(0)
    return 1.1 * float((means.detach() - center).norm(dim=-1).median())


def build_optimizer(params: GaussianParams, config: RefineConfig, lr_scale: float) -> torch.optim.Adam:
    lrs = {
        "xyz": config.position_lr_init * lr_scale,
        "f_dc": config.feature_lr,
        "f_rest": config.feature_lr / 20.0,
        "opacity": config.opacity_lr,
        "scaling": config.scaling_lr,
        "rotation": config.rotation_lr,
    }
    groups = [{"params": [getattr(params, name)], "lr": lrs[name], "name": name} for name in GROUPS]
    # eps 1e-15 instead of 1e-8: position gradients are tiny in scenes measured in small units, and a
    # large eps would make the step depend on the scene's scale (it breaks Adam's invariance).
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15)


def position_schedule(config: RefineConfig, lr_scale: float) -> ExponentialLR:
    return ExponentialLR(
        lr_init=config.position_lr_init * lr_scale,
        lr_final=config.position_lr_final * lr_scale,
        max_steps=config.position_max_steps,
        lr_delay_steps=config.position_lr_delay_steps,
        lr_delay_mult=config.position_lr_delay_mult,
    )


def group(optimizer: torch.optim.Optimizer, name: str) -> dict:
    for g in optimizer.param_groups:
        if g.get("name") == name:
            return g
    raise KeyError(f"optimizer has no parameter group named {name!r}")
