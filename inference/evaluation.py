"""Held-out view metrics (PSNR, SSIM, LPIPS-VGG) on 8-bit images, as saved to disk, one view at a time.

Scoring streams: each view is quantised, scored and dropped before the next, so memory stays that
of one view (SSIM's moment maps and LPIPS' VGG activations at full resolution: about 1.5 GB at
960x544) whatever the number of held-out views.
"""

from __future__ import annotations

import logging
import torch
from torch import Tensor
from tqdm import tqdm

from model.metrics import lpips, psnr, ssim

from .outputs import quantize

log = logging.getLogger("inference")

METRICS = ("psnr", "ssim", "lpips")


class ViewScores:
    """Per-view metrics accumulated view by view; LPIPS is None for every view when its weights are missing."""

    def __init__(self, with_lpips: bool = True) -> None:
        self.with_lpips = with_lpips
        self.per_view: dict[str, list[float | None]] = {name: [] for name in METRICS}

    @torch.no_grad()
    def add(self, pred: Tensor, target: Tensor) -> dict[str, float | None]:
        """Score one view: pred, target [H, W, 3] in [0, 1]; returns its scores."""
        pred, target = quantize(pred.float()), quantize(target.float())
        scores = {"psnr": float(psnr(pred, target)), "ssim": float(ssim(pred, target)), "lpips": None}
        if self.with_lpips:
            try:
                scores["lpips"] = float(lpips(pred, target))
            except FileNotFoundError as err:
                log.warning("LPIPS skipped: %s", err)
                self.with_lpips = False
        for name in METRICS:
            self.per_view[name].append(scores[name])
        return scores

    def mean(self) -> dict[str, float | None]:
        return mean_metrics(self.per_view)


def image_metrics(pred: Tensor, target: Tensor, with_lpips: bool = True,
                  desc: str = "scoring held-out views") -> dict[str, list[float | None]]:
    """pred, target [T, H, W, 3] -> {"psnr": [T], "ssim": [T], "lpips": [T] (None when unavailable)},
    view by view with a progress bar."""
    scores = ViewScores(with_lpips)
    for p, t in tqdm(zip(pred, target), total=len(pred), desc=desc, unit="view", leave=False):
        scores.add(p, t)
    return scores.per_view


def mean_metrics(per_view: dict[str, list[float | None]]) -> dict[str, float | None]:
    means = {}
    for name, values in per_view.items():
        present = [v for v in values if v is not None]
        means[name] = float(torch.tensor(present, dtype=torch.float64).mean()) if present else None
    return means
