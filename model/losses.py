"""Training losses: MSE + perceptual (LPIPS-VGG) + opacity + depth regularisation.

    total = mse * MSE + perceptual * LPIPS + opacity * mean(opacity) + depth * DepthLoss

A weight of 0 disables a term, and then its network (LPIPS-VGG, Depth Anything) is not loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from model.depth_prior import DEFAULT_DEPTH_MODEL, DepthPrior, load_depth_prior
from model.lpips import LPIPS, load_lpips
from model.metrics import psnr


@dataclass
class LossConfig:
    mse: float = 1.0
    perceptual: float = 0.5  # LPIPS-VGG, as in the paper
    opacity: float = 0.1
    depth: float = 0.01
    perceptual_chunk: int = 8  # images per LPIPS pass (each pass recomputed in backward to bound memory)
    lpips_weights: str = "auto"  # see model.lpips.load_lpips (source)
    lpips_linear: str | None = None  # see model.lpips.load_lpips (linear)
    depth_model: str = DEFAULT_DEPTH_MODEL  # hub id (from the local cache) or local folder
    depth_short_side: int | None = None  # None: Depth Anything sees the image size rounded to 14


def perceptual_loss(net: LPIPS, pred: Tensor, target: Tensor, chunk: int = 8) -> Tensor:
    """Mean LPIPS over images. pred, target [..., H, W, 3] in [0, 1] -> scalar."""
    pred = pred.reshape(-1, *pred.shape[-3:])  # [N, H, W, 3]
    target = target.reshape(-1, *target.shape[-3:])
    total = 0
    for x, y in zip(pred.split(chunk), target.split(chunk)):
        # Checkpointing keeps only one chunk's VGG activations alive at a time during backward.
        d = checkpoint(net, x, y, use_reentrant=False) if torch.is_grad_enabled() else net(x, y)
        total = total + d.sum()
    return total / pred.shape[0]


def opacity_loss(opacities: Tensor) -> Tensor:
    """Mean activated opacity over the kept Gaussians. opacities [B, N] in [0, 1] -> scalar."""
    return opacities.mean()


def normalize_disparity(disp: Tensor) -> Tensor:
    """Per view (d - median) / (mean |d - median| + 1e-6): removes scale and shift. [..., H, W]."""
    flat = disp.flatten(-2)  # [..., H*W]
    centred = flat - flat.median(dim=-1, keepdim=True).values
    return (centred / (centred.abs().mean(dim=-1, keepdim=True) + 1e-6)).reshape(disp.shape)


def depth_loss(depth_z: Tensor, prior_disp: Tensor) -> Tensor:
    """Scale- and shift-invariant disparity loss against a monocular prior.

    depth_z    [B, V, h, w]  predicted camera-space z of the per-pixel Gaussians
    prior_disp [B, V, H, W]  relative (affine-invariant) disparity, e.g. from Depth Anything;
                             resized to (h, w) if needed
    """
    if prior_disp.shape[-2:] != depth_z.shape[-2:]:
        b, v, h, w = prior_disp.shape
        prior_disp = F.interpolate(prior_disp.reshape(b * v, 1, h, w), size=depth_z.shape[-2:], mode="bilinear",
                                   align_corners=False, antialias=True).reshape(depth_z.shape)
    pred = normalize_disparity(1.0 / depth_z.clamp(min=1e-2))  # [B, V, h, w]
    prior = normalize_disparity(prior_disp.detach().to(pred.dtype))
    return F.smooth_l1_loss(pred, prior, beta=1.0)


class Losses(nn.Module):
    """The combined training loss. Holds the frozen LPIPS and Depth Anything networks it needs.

    `lpips_net` can be shared with the LPIPS metric (model.metrics.lpips(..., net=losses.lpips_net));
    `depth_prior` turns input images into the `prior_disp` this loss takes.
    """

    def __init__(self, config: LossConfig | None = None, device: str | torch.device | None = None):
        super().__init__()
        self.config = config = config if config is not None else LossConfig()
        self.lpips_net: LPIPS | None = (
            load_lpips(config.lpips_weights, config.lpips_linear, device=device) if config.perceptual > 0 else None)
        self.depth_prior: DepthPrior | None = (
            load_depth_prior(config.depth_model, short_side=config.depth_short_side, device=device)
            if config.depth > 0 else None)

    def forward(self, rendered: Tensor, target: Tensor, opacities: Tensor, depth_z: Tensor | None = None,
                prior_disp: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and its unweighted terms (detached, for logging).

        rendered, target [B, T, H, W, 3] in [0, 1]
        opacities        [B, N] activated opacities of the kept Gaussians
        depth_z          [B, V, h, w] camera-space z of the input-view Gaussians (if depth > 0)
        prior_disp       [B, V, H', W'] relative disparity of the input views (if depth > 0)
        details keys: "mse", "opacity", "psnr" always; "perceptual", "depth" when enabled.
        """
        cfg = self.config
        terms = {"mse": F.mse_loss(rendered, target), "opacity": opacity_loss(opacities)}
        if cfg.perceptual > 0:
            terms["perceptual"] = perceptual_loss(self.lpips_net, rendered, target, cfg.perceptual_chunk)
        if cfg.depth > 0:
            if depth_z is None or prior_disp is None:
                raise ValueError("depth loss weight > 0 needs depth_z and prior_disp "
                                 "(prior_disp = losses.depth_prior(input_images))")
            terms["depth"] = depth_loss(depth_z, prior_disp)
        weights = {"mse": cfg.mse, "opacity": cfg.opacity, "perceptual": cfg.perceptual, "depth": cfg.depth}
        total = sum(weights[name] * value for name, value in terms.items())
        details = {name: value.detach().float() for name, value in terms.items()}
        details["psnr"] = psnr(rendered.detach(), target).mean().float()
        return total, details
