"""One forward pass of training: Gaussians from the inputs, renders at the targets, the loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from data.batch import Batch
from model.gaussians import Gaussians
from model.losses import Losses
from train.config import TrainConfig
from train.prune import prune_for_training


@dataclass
class StepOutput:
    loss: Tensor  # scalar, the weighted total
    details: dict[str, Tensor]  # unweighted terms and PSNR, detached
    renders: Tensor  # [B, T, H, W, 3]
    gaussians: Gaussians  # [B, K] the rendered (possibly pruned) Gaussians


def forward_loss(model: nn.Module, losses: Losses, batch: Batch, config: TrainConfig) -> StepOutput:
    out = model(batch.input_images, batch.input_cameras)
    gaussians = out.gaussians  # [B, V*H*W]
    depth_z = prior = None
    if losses.depth_prior is not None:
        depth_z = out.depth  # [B, V, H, W] camera-space z of the per-pixel Gaussians
        prior = losses.depth_prior(batch.input_images)  # [B, V, H, W], frozen network, no gradient
    if config.prune.enabled:
        gaussians = prune_for_training(gaussians, config.prune.prune_ratio, config.prune.random_ratio)
    r = config.render
    renders = gaussians.render(batch.target_cameras, r.near, r.far, r.backend, r.checkpoint_views)
    with torch.autocast(device_type=renders.device.type, enabled=False):
        total, details = losses(renders, batch.target_images.float(), gaussians.opacities.float(),
                                None if depth_z is None else depth_z.float(), prior)
    return StepOutput(total, details, renders, gaussians)
