"""Held-out view metrics (PSNR, SSIM, LPIPS-VGG) on 8-bit images, as saved to disk."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from model.metrics import lpips, psnr, ssim

from .outputs import quantize

log = logging.getLogger("inference")


def image_metrics(pred: Tensor, target: Tensor, with_lpips: bool = True) -> dict[str, list[float | None]]:
    """pred, target [T, H, W, 3] -> {"psnr": [T], "ssim": [T], "lpips": [T] (None when unavailable)}."""
    pred, target = quantize(pred.float()), quantize(target.float())
    out = {"psnr": psnr(pred, target).tolist(), "ssim": ssim(pred, target).tolist()}
    out["lpips"] = [None] * len(pred)
    if with_lpips:
        try:
            out["lpips"] = lpips(pred, target).tolist()
        except FileNotFoundError as err:
            log.warning("LPIPS skipped: %s", err)
    return out


def mean_metrics(per_view: dict[str, list[float | None]]) -> dict[str, float | None]:
    means = {}
    for name, values in per_view.items():
        present = [v for v in values if v is not None]
        means[name] = float(torch.tensor(present).mean()) if present else None
    return means
