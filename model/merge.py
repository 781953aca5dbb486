"""2x2 token merge: quarter the sequence and widen the tokens, halfway through the network.

Each view's tokens are laid back on their (h, w) grid and a stride-2 grouped convolution combines
every 2x2 neighbourhood, one group per input channel (each input channel feeds merged_dim / dim
output channels). The global tokens have no grid and are widened by a linear map.
"""

from __future__ import annotations

from torch import Tensor, nn


class TokenMerge(nn.Module):
    def __init__(self, dim: int, merged_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, merged_dim, kernel_size=2, stride=2, groups=dim, bias=True)
        self.global_proj = nn.Linear(dim, merged_dim, bias=True)

    def forward(self, x: Tensor, num_global: int, views: int, h: int, w: int) -> Tensor:
        # x [B, G + V*h*w, D] -> [B, G + V*(h/2)*(w/2), D_merged]
        b, _, d = x.shape
        dtype = x.dtype  # of the residual stream, restored on the way out
        x = x.to(self.conv.weight.dtype)
        glob, image = x[:, :num_global], x[:, num_global:]
        grid = image.reshape(b * views, h, w, d).permute(0, 3, 1, 2)  # [B*V, D, h, w]
        merged = self.conv(grid).flatten(2).transpose(1, 2)  # [B*V, h*w/4, D_merged]
        out = x.new_empty(b, num_global + merged.shape[0] // b * merged.shape[1], merged.shape[2], dtype=dtype)
        out[:, :num_global] = self.global_proj(glob)  # widened back to the residual stream's dtype as it is written
        out[:, num_global:] = merged.reshape(b, -1, merged.shape[2])
        return out
