"""Image metrics for evaluation: PSNR, SSIM and LPIPS-VGG, per image, on images clamped to [0, 1].

All take channels-last images [..., H, W, 3] and return one value per image [...].
SSIM is the standard definition of Wang et al. (2004): Gaussian window 11x11 with sigma 1.5,
K1 0.01, K2 0.03, data range 1, population (not sample) covariances, computed per channel on the
pixels whose window lies inside the image, averaged over pixels and channels; this equals
skimage's `structural_similarity(..., gaussian_weights=True, use_sample_covariance=False,
data_range=1, channel_axis=-1)`.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from model.lpips import LPIPS, load_lpips

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """pred, target [..., H, W, 3] -> PSNR in dB [...] (data range 1)."""
    mse = (pred.clamp(0, 1) - target.clamp(0, 1)).square().mean(dim=(-3, -2, -1))
    return -10 * torch.log10(mse)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """pred, target [..., H, W, 3] -> mean SSIM [...]. Needs H, W >= 11."""
    *lead, height, width, channels = pred.shape
    x = pred.clamp(0, 1).reshape(-1, height, width, channels).permute(0, 3, 1, 2)  # [N, C, H, W]
    y = target.clamp(0, 1).reshape(-1, height, width, channels).permute(0, 3, 1, 2)
    # The five local moments in one batch; valid filtering keeps only windows inside the image.
    moments = _gaussian_filter(torch.cat([x, y, x * x, y * y, x * y]))  # [5*N, C, h, w]
    mx, my, mxx, myy, mxy = moments.chunk(5)
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(-1, channels, *s.shape[-2:]).mean(dim=(1, 2, 3)).reshape(lead)


def _gaussian_filter(x: Tensor) -> Tensor:
    """Separable normalised Gaussian (SSIM_WINDOW taps, SSIM_SIGMA), no padding: [..., H, W] -> [..., H-10, W-10].

    Weighted sums of shifted slices rather than a convolution: with one input channel oneDNN's
    convolution runs 2x (forward) to 4x (backward) slower than these few passes over memory, and
    the refinement loss evaluates SSIM every step.
    """
    r = torch.arange(SSIM_WINDOW, dtype=torch.float64) - SSIM_WINDOW // 2
    g = torch.exp(-0.5 * (r / SSIM_SIGMA) ** 2)
    taps = (g / g.sum()).tolist()
    width, height = x.shape[-1] - SSIM_WINDOW + 1, x.shape[-2] - SSIM_WINDOW + 1
    rows = sum(x[..., i : i + width] * w for i, w in enumerate(taps))  # [..., H, W-10]
    return sum(rows[..., i : i + height, :] * w for i, w in enumerate(taps))


@torch.no_grad()
def lpips(pred: Tensor, target: Tensor, net: LPIPS | None = None, chunk: int = 8) -> Tensor:
    """pred, target [..., H, W, 3] -> LPIPS-VGG [...], `chunk` images per network pass.

    net: an LPIPS network (e.g. the one the perceptual loss holds); None loads the installed
    weights once per device.
    """
    net = net if net is not None else _default_lpips(str(pred.device))
    *lead, height, width, _ = pred.shape
    x = pred.clamp(0, 1).float().reshape(-1, height, width, 3)  # [N, H, W, 3]
    y = target.clamp(0, 1).float().reshape(-1, height, width, 3)
    values = [net(a, b) for a, b in zip(x.split(chunk), y.split(chunk))]
    return torch.cat(values).reshape(lead)


@functools.lru_cache(maxsize=None)
def _default_lpips(device: str) -> LPIPS:
    return load_lpips(device=device)
