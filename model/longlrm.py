"""Long-LRM: posed images in, one 3D Gaussian per input pixel out, in a single forward pass.

    images [B, V, H, W, 3], cameras [B, V]
      -> per-pixel [rgb, Plücker ray] -> patch tokens (8x8 in the paper) of every view in one
         sequence, with global tokens in front
      -> blocks: bidirectional Mamba2 (linear in sequence length) with a few transformer blocks
         (global attention), and a 2x2 token merge halfway that quarters the sequence and widens tokens
      -> linear head: each token -> its pixels' Gaussians (16x16 in the paper), placed along the rays.

Output Gaussians are ordered view-major, then pixel rows, then pixel columns: Gaussian
`v*H*W + i*W + j` belongs to pixel (i, j) of view v.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from model.cameras import Cameras
from model.config import ModelConfig
from model.gaussian_head import GaussianHead
from model.gaussians import Gaussians
from model.mamba2 import Mamba2Block
from model.merge import TokenMerge
from model.tokenizer import Tokenizer
from model.transformer import TransformerBlock


@dataclass
class LongLRMOutput:
    gaussians: Gaussians  # fields [B, V*H*W, ...], view-major then row-major pixels
    distance: Tensor  # [B, V, H, W] distance of each pixel's Gaussian along its unit ray
    depth: Tensor  # [B, V, H, W] camera-space z of each pixel's Gaussian (what the depth loss compares)


class LongLRM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tokenizer = Tokenizer(config.dim, config.patch_size, config.num_global_tokens)
        self.merge = TokenMerge(config.dim, config.merged_dim) if config.merge_before is not None else None
        self.blocks = nn.ModuleList()
        for kind, width in zip(config.blocks, config.widths):
            if kind == "m":
                self.blocks.append(Mamba2Block(width, config.mamba, config.mamba_backend))
            else:
                self.blocks.append(TransformerBlock(width, config.attn_head_dim, config.mlp_ratio,
                                                    config.attention_backend))
        self.head = GaussianHead(config.widths[-1], config.output_patch_size, config.gaussians)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: torch.device | str = "cpu") -> LongLRM:
        """The trained network in `path` (a .safetensors file, a run directory or the official .pt; None:
        the shipped demo checkpoint), in eval mode. model.pretrained.load_model also returns what it was
        trained with (resolution, views, preprocessing), which a faithful forward pass needs."""
        from model.pretrained import DEMO_CHECKPOINT, load_model  # it imports this module

        return load_model(DEMO_CHECKPOINT if path is None else path, device).model

    def set_precision(self, dtype: torch.dtype) -> "LongLRM":
        """Run the network in `dtype` from now on: torch.float32, or torch.bfloat16 where the hardware
        multiplies bfloat16 natively (CPUs: model.cpu_features.native_bf16_matmul; recent GPUs).

        Converts in place, once, the weights of every linear layer and of the token merge: the
        matmuls, which bfloat16 speeds up, then run in it with float32 accumulation, and the
        activations between them stay bfloat16. What would show its rounding stays float32: the
        residual stream between blocks, norm statistics, the scan's step sizes, decays and carried
        state, rays and the output Gaussians. No autocast needed. Returns self. Going back to float32
        keeps the rounded weights: reload the checkpoint for the exact network.
        """
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"precision must be torch.float32 or torch.bfloat16, got {dtype}")
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.to(dtype)
        return self

    def check_inputs(self, images: Tensor, cameras: Cameras) -> None:
        if images.dim() != 5 or images.shape[-1] != 3:
            raise ValueError(f"images must be [B, V, H, W, 3], got {tuple(images.shape)}")
        b, v, h, w, _ = images.shape
        multiple = self.config.output_patch_size
        if h % multiple or w % multiple:
            raise ValueError(f"image height and width must be multiples of {multiple} (patch "
                             f"{self.config.patch_size}{', doubled by the token merge' if self.merge else ''}), "
                             f"got {h}x{w} (H x W); resize or crop first")
        if tuple(cameras.shape) != (b, v):
            raise ValueError(f"cameras must have shape [B, V] = {[b, v]} to match the images, "
                             f"got {list(cameras.shape)}")
        if (cameras.width, cameras.height) != (w, h):
            raise ValueError(f"cameras are for {cameras.width}x{cameras.height} images but images are {w}x{h} (W x H)")
        if not (torch.isfinite(cameras.c2w).all() and torch.isfinite(cameras.intrinsics).all()):
            raise ValueError("cameras contain NaN or infinite values")

    def forward(self, images: Tensor, cameras: Cameras) -> LongLRMOutput:
        """images [B, V, H, W, 3] in [0, 1]; cameras with shape [B, V], OpenCV axes, pixel intrinsics."""
        self.check_inputs(images, cameras)
        b, v, height, width, _ = images.shape
        cameras = cameras.to(torch.float32)
        with torch.autocast(images.device.type, enabled=False):  # rays stay float32 under autocast
            origins, dirs = cameras.rays()  # [B, V, H, W, 3] each, unit directions through pixel centres

        x = self.tokenizer(images.float(), origins, dirs)  # [B, G + V*h*w, D]
        g = self.config.num_global_tokens
        h, w = height // self.config.patch_size, width // self.config.patch_size
        use_checkpoint = self.config.checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if i == self.config.merge_before:
                x = self.merge(x, g, v, h, w)  # [B, G + V*h*w/4, D_merged]
                h, w = h // 2, w // 2
            # Checkpointing keeps one [B, L, D] tensor per block and recomputes the block's
            # internals during backward, which is what lets long multi-view sequences train.
            x = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)

        gaussians, distance = self.head(x[:, g:], origins, dirs)
        forward_axis = cameras.c2w[..., None, None, :3, 2]  # [B, V, 1, 1, 3] camera z axis in world
        depth = distance * (dirs * forward_axis).sum(-1)  # unit ray length along the optical axis
        return LongLRMOutput(gaussians, distance, depth)
