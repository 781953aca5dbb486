"""Periodic evaluation on held-out scenes: PSNR, SSIM, LPIPS and PNG grids of targets over renders."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from data.batch import collate
from model import metrics
from model.lpips import LPIPS
from train.config import TrainConfig


def image_grid(targets: Tensor, renders: Tensor) -> np.ndarray:
    """targets, renders [T, H, W, 3] -> uint8 [2H, T*W, 3]: targets on top, renders below."""
    rows = [torch.cat(list(x.clamp(0, 1)), dim=1) for x in (targets, renders)]  # [H, T*W, 3] each
    return (torch.cat(rows, dim=0).float().cpu().numpy() * 255 + 0.5).astype(np.uint8)


@torch.no_grad()
def evaluate(model: nn.Module, dataset, config: TrainConfig, device: torch.device, out_dir: Path | None,
             lpips_net: LPIPS | None, autocast=contextlib.nullcontext) -> tuple[dict[str, float], list[np.ndarray]]:
    """Mean metrics over `dataset` (one scene at a time) and one grid image per scene.

    Stage-3 models are evaluated as they are trained and deployed: only the top (1 - prune_ratio)
    of the Gaussians by opacity are rendered (deterministically, without the random extra).
    """
    was_training = model.training
    model.eval()
    values: dict[str, list[float]] = {"psnr": [], "ssim": []}
    if lpips_net is not None:
        values["lpips"] = []
    grids = []
    for i in range(len(dataset)):
        batch = collate([dataset[i]]).to(device)
        with autocast():
            gaussians = model(batch.input_images, batch.input_cameras).gaussians  # [1, V*H*W]
        if config.prune.enabled:
            gaussians = gaussians.scene(0).prune(keep_ratio=1.0 - config.prune.prune_ratio)
            gaussians = type(gaussians).stack([gaussians])
        r = config.render
        renders = gaussians.render(batch.target_cameras, r.near, r.far, r.backend)[0]  # [T, H, W, 3]
        targets = batch.target_images[0].float()  # [T, H, W, 3]
        values["psnr"].append(metrics.psnr(renders, targets).mean().item())
        if min(targets.shape[1:3]) >= metrics.SSIM_WINDOW:
            values["ssim"].append(metrics.ssim(renders, targets).mean().item())
        if lpips_net is not None:
            values["lpips"].append(metrics.lpips(renders, targets, net=lpips_net).mean().item())
        grid = image_grid(targets, renders)
        grids.append(grid)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(grid).save(out_dir / f"scene_{i:03d}.png")
    model.train(was_training)
    return {name: float(np.mean(v)) for name, v in values.items() if v}, grids
