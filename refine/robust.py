"""SpotlessSplats robust optimisation: outlier masks from a running error histogram, and
utilization-based pruning (UBP) in place of opacity resets.

Transient distractors (people, cars, blobs present in one view only) leave large residuals that no
consistent 3D scene can explain. A pixel whose error is above the running `percentile` of all recent
errors is an outlier and is dropped from the L1 term, unless most of its 3x3 neighbourhood is inlier
(outliers come in spatially coherent regions; isolated high-error pixels are usually fine detail).
The histogram spans several views because each step sees one whole image, whose own outlier fraction
is biased (a view with a big distractor would otherwise set its own threshold too high).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .densify import ndc_grad, visible_radius


class ErrorHistogram:
    """Discounted histogram of per-pixel errors in [0, 1], bins of `bin_width`."""

    def __init__(self, percentile: float = 0.7, bin_width: float = 1e-3, decay: float = 0.95) -> None:
        self.percentile = percentile
        self.decay = decay
        self.bins = round(1.0 / bin_width)
        self.counts = torch.zeros(self.bins, dtype=torch.float64)  # [B]
        self.threshold = 1.0  # before any update every pixel is an inlier

    def update(self, error: Tensor) -> None:
        """Add per-pixel errors [..., H, W] (channel-mean absolute error) and recompute the threshold."""
        hist = torch.histc(error.detach().float().flatten(), bins=self.bins, min=0.0, max=1.0)  # [B]
        self.counts = self.decay * self.counts + hist.double().cpu()
        cumulative = torch.cumsum(self.counts, 0)
        first = int(torch.searchsorted(cumulative, self.percentile * cumulative[-1]))
        self.threshold = first / self.bins  # lower edge of the bin where the percentile falls


def inlier_mask(error: Tensor, threshold: float) -> Tensor:
    """Inliers [..., H, W] (float 0/1): error below threshold, or most of the 3x3 neighbourhood is."""
    lead = error.shape[:-2]
    below = (error < threshold).float().reshape(-1, 1, *error.shape[-2:])  # [B, 1, H, W]
    neighbours = F.avg_pool2d(below, 3, stride=1, padding=1, count_include_pad=False)
    return ((below > 0) | (neighbours > 0.5)).float().reshape(*lead, *error.shape[-2:])


def warmup_alpha(step: int, beta: float) -> float:
    """Staircase warm-up from 1 towards 0: alpha = exp(beta * floor((1 + step) / 1.5))."""
    return math.exp(beta * math.floor((1 + step) / 1.5))


def sampled_mask(mask: Tensor, alpha: float, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli(alpha + (1 - alpha) mask): early on every pixel is kept with probability ~1, so gradients
    still reach regions the young model cannot yet explain; later only inliers remain."""
    p = (alpha + (1 - alpha) * mask).clamp(0, 1)
    return torch.bernoulli(p, generator=generator)


class Utilization:
    """Accumulates squared NDC 2D-mean gradients per Gaussian over a window of steps.

    SpotlessSplats' utilization is the squared derivative of the rendered colours with respect to each
    projected mean, averaged over the window's images. Our renderers return the derivative of the loss,
    not per pixel, so the squared loss gradient stands in: a Gaussian that changes no pixel of any view in
    the window (hidden, transparent, outside all frusta, or a floater seen by few views) scores ~0.
    """

    def __init__(self, count: int, device: torch.device | str = "cpu") -> None:
        self.sq_grad = torch.zeros(count, device=device)  # [N]
        self.steps = 0

    def add(self, means2d_grad: Tensor, radii: Tensor, width: int, height: int) -> None:
        """means2d_grad [C, N, 2] in pixels, radii as the renderer returns them."""
        visible = visible_radius(radii) > 0  # [C, N]
        sq = ndc_grad(means2d_grad, width, height).square().sum(-1)  # [C, N]
        self.sq_grad += (sq * visible).sum(0)
        self.steps += 1

    def unused(self, threshold: float) -> Tensor:
        """Gaussians [N] (bool) whose mean squared gradient over the window is below threshold."""
        return self.sq_grad / max(self.steps, 1) < threshold
