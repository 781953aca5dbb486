"""Images + cameras -> one token sequence for all views.

Every pixel gets 9 channels: its colour mapped to [-1, 1] and the Plücker coordinates of its ray,
(moment o x d, direction d). Rays are the only positional information the network receives, which
is why any number of views in any order works. Each 8x8 patch of these channels becomes one token
by a linear map; the views' tokens are concatenated view after view, and learned global tokens
are put in front of the whole sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.norms import pre_norm


def pixel_features(images: Tensor, origins: Tensor, dirs: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """[rgb * 2 - 1, cross(o, d), d] per pixel: images, origins, dirs [..., H, W, 3] -> [..., H, W, 9],
    computed in the inputs' dtype and stored in `dtype` (default: the same).

    Each part is copied into its channels of one buffer, rounded once on the way; the cross product
    is spelled out per component (torch.cross over a last dim of 3 took 3x longer).
    """
    out = images.new_empty(*images.shape[:-1], 9, dtype=dtype or images.dtype)
    out[..., :3] = images * 2 - 1
    o, d = origins.unbind(-1), dirs.unbind(-1)
    for i in range(3):  # cross(o, d)_i = o_j d_k - o_k d_j with (i, j, k) a cyclic order of (0, 1, 2)
        j, k = (i + 1) % 3, (i + 2) % 3
        out[..., 3 + i] = o[j] * d[k] - o[k] * d[j]
    out[..., 6:] = dirs
    return out


def patchify(features: Tensor, patch: int) -> Tensor:
    """[B, V, H, W, C] -> [B, V*(H/p)*(W/p), p*p*C]; tokens view-major then row-major, and inside a
    token pixel rows, then pixel columns, then channels (the official flattening order, which the
    checkpoint's tokenizer weights assume)."""
    b, v, h, w, c = features.shape
    x = features.view(b, v, h // patch, patch, w // patch, patch, c)
    return x.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, v * (h // patch) * (w // patch), patch * patch * c)


class Tokenizer(nn.Module):
    def __init__(self, dim: int, patch_size: int, num_global_tokens: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(9 * patch_size**2, dim, bias=False)
        nn.init.normal_(self.proj.weight, std=0.02)
        self.global_tokens = nn.Parameter(torch.zeros(1, num_global_tokens, dim))
        nn.init.trunc_normal_(self.global_tokens, std=0.02)
        self.norm = nn.LayerNorm(dim, bias=False)

    def forward(self, images: Tensor, origins: Tensor, dirs: Tensor) -> Tensor:
        # images [B, V, H, W, 3] in [0, 1]; origins, dirs [B, V, H, W, 3] world rays -> [B, G + V*h*w, D]
        features = pixel_features(images, origins, dirs, self.proj.weight.dtype)  # [B, V, H, W, 9]
        tokens = self.proj(patchify(features, self.patch_size))  # in the weight's dtype
        glob = self.global_tokens.expand(tokens.shape[0], -1, -1)  # float32: the residual stream's dtype
        return pre_norm(self.norm, torch.cat([glob, tokens], dim=1), glob.dtype)  # cat widens tokens to float32
