"""Monocular depth prior: Depth Anything (transformers) giving relative disparity per image.

Relative Depth Anything models predict affine-invariant disparity (larger = nearer, unknown scale
and shift), which is all the depth loss uses. Images go in at their own aspect ratio: each side is
scaled (by `short_side / min(H, W)`, or kept when `short_side` is None) and rounded to the nearest
multiple of the ViT patch (14), so the aspect ratio changes by at most half a patch per side. The
disparity is resized back to the image size.

Weights are never fetched at run time on machines without internet: pass a local folder written by
`save_pretrained`, or a hub id already in the local Hugging Face cache (set HF_HUB_OFFLINE=1 to skip
the download attempt, which otherwise retries for about 20 s before failing).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
# Depth Anything is trained on ImageNet-normalised inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DepthPrior(nn.Module):
    """A frozen relative-depth model: images [..., H, W, 3] in [0, 1] -> disparity [..., H, W]."""

    def __init__(self, model: nn.Module, short_side: int | None = None, chunk: int = 8):
        super().__init__()
        config = model.config
        if getattr(config, "depth_estimation_type", "relative") != "relative":
            raise ValueError("the depth prior needs a relative (disparity) Depth Anything model, "
                             f"got depth_estimation_type={config.depth_estimation_type!r}")
        self.model = model.eval().requires_grad_(False)
        self.patch = config.patch_size
        self.short_side = short_side
        self.chunk = chunk  # images per forward pass, to bound activation memory
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) the network sees for an image of (height, width): multiples of the patch."""
        scale = 1.0 if self.short_side is None else self.short_side / min(height, width)
        return tuple(max(self.patch, round(s * scale / self.patch) * self.patch) for s in (height, width))

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """images [..., H, W, 3] in [0, 1] -> relative disparity [..., H, W] (float32)."""
        *lead, height, width, _ = images.shape
        size = self.network_size(height, width)
        flat = images.reshape(-1, height, width, 3).permute(0, 3, 1, 2).float()  # [N, 3, H, W]
        out = []
        for x in flat.split(self.chunk):
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
            disp = self.model(pixel_values=(x - self.mean) / self.std).predicted_depth  # [n, h, w]
            out.append(F.interpolate(disp[:, None].float(), size=(height, width), mode="bilinear",
                                     align_corners=False)[:, 0])
        return torch.cat(out).reshape(*lead, height, width)


def load_depth_prior(name_or_path: str | os.PathLike = DEFAULT_DEPTH_MODEL, short_side: int | None = None,
                     device: str | torch.device | None = None, chunk: int = 8) -> DepthPrior:
    """Load a Depth Anything model from a local folder or hub id, trying local files first."""
    from transformers import AutoModelForDepthEstimation

    error = None
    for local_only in (True, False):
        try:
            model = AutoModelForDepthEstimation.from_pretrained(str(name_or_path), local_files_only=local_only)
            break
        except (OSError, ValueError) as e:
            error = e
    else:
        raise OSError(
            f"Depth Anything model {str(name_or_path)!r} is neither a local folder nor in the Hugging Face "
            f"cache, and could not be downloaded. On a machine with internet run "
            f"`hf download {DEFAULT_DEPTH_MODEL}` (fills the cache), or pass a folder written by "
            f"save_pretrained; or set the depth loss weight to 0. ({type(error).__name__}: {error})") from error
    return DepthPrior(model, short_side=short_side, chunk=chunk).to(device)
