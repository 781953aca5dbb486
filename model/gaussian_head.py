"""Tokens -> one 3D Gaussian per input pixel.

A token covers a P x P pixel patch (P = 16 after the merge) and is decoded by one linear map into
P*P*59 numbers, laid out [pixel row][pixel column][channel]. The 59 channels per pixel, in the
official order: 3 distance logits, 48 SH coefficients ([16 coefficients][rgb]), 3 log-scales,
4 quaternion (w, x, y, z, as gsplat takes it), 1 opacity.

Gaussians are pixel-aligned: the mean sits on the pixel's ray at distance
sigmoid(mean of the 3 distance logits) * max_dist, so it can only move along the ray, in front of
the camera, at most max_dist away. Scales are capped (log-scale <= scale_max) and start small
(scale_bias); opacities start low (opacity_bias) so early training is not one opaque blur.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model import native_kernels
from model.config import GaussianHeadConfig
from model.cpu_allocator import release_freed_memory
from model.gaussians import Gaussians
from model.norms import pre_norm


class GaussianHead(nn.Module):
    def __init__(self, dim: int, patch_size: int, cfg: GaussianHeadConfig):
        super().__init__()
        self.patch_size, self.cfg = patch_size, cfg
        self.norm = nn.LayerNorm(dim, bias=False)
        self.proj = nn.Linear(dim, cfg.channels * patch_size**2, bias=False)
        nn.init.normal_(self.proj.weight, std=0.02)

    def raw(self, tokens: Tensor, views: int, h: int, w: int) -> Tensor:
        """tokens [B, V*h*w, D] -> raw per-pixel channels [B, V, h, P, w, P, 59] in the weights' dtype:
        pixel (i*P + pi, j*P + pj) of a view at [i, pi, j, pj]. A view of the projection's output:
        merging (h, P) into image rows would copy it all (59 numbers a pixel) before use."""
        b, p = tokens.shape[0], self.patch_size
        out = self.proj(pre_norm(self.norm, tokens, self.proj.weight.dtype))  # [B, V*h*w, P*P*59]
        return out.view(b, views, h, w, p, p, -1).permute(0, 1, 2, 4, 3, 5, 6)

    def activate(self, raw: Tensor, origins: Tensor, dirs: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """raw [..., 59], origins and unit dirs [..., 3] -> (Gaussian fields [..., *], distance [...]),
        computed in float32 whatever raw's dtype. The SH coefficients, copied as they are, stay in
        raw's dtype: the caller widens them in its copy into the output (most of the bytes)."""
        cfg = self.cfg
        k = (cfg.sh_degree + 1) ** 2
        xyz, sh, scale, quat, opacity = raw.split([3, 3 * k, 3, 4, 1], dim=-1)
        xyz, scale, quat, opacity = (t.float() for t in (xyz, scale, quat, opacity))
        distance = torch.sigmoid(xyz.mean(-1)) * cfg.max_dist  # [...]
        fields = {
            "means": origins + distance[..., None] * dirs,
            "log_scales": torch.clamp(scale + cfg.scale_bias, max=cfg.scale_max),
            "quats": F.normalize(quat, dim=-1),  # wxyz
            "opacity_logits": opacity[..., 0] + cfg.opacity_bias,
            "sh": sh.unflatten(-1, (k, 3)),  # [..., K, 3]
        }
        return fields, distance

    def forward(self, tokens: Tensor, origins: Tensor, dirs: Tensor) -> tuple[Gaussians, Tensor]:
        """tokens [B, V*h*w, D] image tokens; origins, dirs [B, V, H, W, 3] pixel rays.

        Returns Gaussians with fields [B, V*H*W, ...] (view-major, then pixel rows, then columns)
        and the distances along the rays [B, V, H, W]. Decodes `views_per_chunk` views at a time;
        without autograd each chunk is written straight into preallocated outputs, so peak memory
        is the output plus one chunk's temporaries; the memory the blocks freed is handed back to
        the system first (model/cpu_allocator.py), so the output does not stack on top of it.
        """
        b, v, height, width, _ = origins.shape
        p = self.patch_size
        h, w = height // p, width // p
        step = self.cfg.views_per_chunk
        spans = [(v0, min(v, v0 + step)) for v0 in range(0, v, step)]

        def patches(t: Tensor) -> Tensor:  # [B, v, H, W, ...] -> [B, v, h, P, w, P, ...], a view
            return t.unflatten(2, (h, p)).unflatten(4, (w, p))

        def raw(v0: int, v1: int) -> Tensor:
            return self.raw(tokens[:, v0 * h * w:v1 * h * w], v1 - v0, h, w)  # [B, v, h, P, w, P, 59]

        def decode(v0: int, v1: int, chunk: Tensor) -> tuple[dict[str, Tensor], Tensor]:
            return self.activate(chunk, patches(origins[:, v0:v1].float()), patches(dirs[:, v0:v1].float()))

        if torch.is_grad_enabled():
            parts = [decode(v0, v1, raw(v0, v1)) for v0, v1 in spans]  # fields [B, v, h, P, w, P, ...]
            fields = {name: torch.cat([f[name] for f, _ in parts], dim=1).float().flatten(4, 5).flatten(2, 3)
                      for name in parts[0][0]}
            dist = torch.cat([d for _, d in parts], dim=1).flatten(4, 5).flatten(2, 3)
            return Gaussians(**{name: t.flatten(1, 3) for name, t in fields.items()}), dist

        release_freed_memory()
        k = (self.cfg.sh_degree + 1) ** 2
        shapes = {"means": (3,), "log_scales": (3,), "quats": (4,), "opacity_logits": (), "sh": (k, 3)}
        fields = {name: origins.new_empty(b, v, height, width, *shape, dtype=torch.float32)
                  for name, shape in shapes.items()}
        dist = origins.new_empty(b, v, height, width, dtype=torch.float32)
        for v0, v1 in spans:
            chunk = raw(v0, v1)
            ops = native_kernels.kernels("Gaussian head activation", chunk)
            if ops is None:
                part, d = decode(v0, v1, chunk)
                for name, t in part.items():
                    patches(fields[name][:, v0:v1]).copy_(t)
                patches(dist[:, v0:v1]).copy_(d)
                continue
            for i in range(b):
                rays = (t[i, v0:v1].float() for t in (origins, dirs))  # [v, H, W, 3], any strides
                outputs = (fields[name][i, v0:v1].view((v1 - v0) * height * width, -1) for name in shapes)  # [N, *]
                ops.gaussian_activate(chunk[i], *rays, *outputs, dist[i, v0:v1].view(-1), self.cfg.max_dist,
                                      self.cfg.scale_bias, self.cfg.scale_max, self.cfg.opacity_bias)
        return Gaussians(**{name: t.flatten(1, 3) for name, t in fields.items()}), dist
