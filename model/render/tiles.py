"""Tile binning in plain PyTorch (used by the reference renderer; the C++ kernel has its own twin).

A Gaussian covers the 16x16 tiles overlapped by its box `mean2d +- radii` (gsplat's rule). The
result is a CSR layout over all tiles of all images, each tile's run sorted front to back by
(depth, Gaussian index).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TILE = 16


def tile_grid(width: int, height: int) -> tuple[int, int]:
    """Number of tiles across and down."""
    return math.ceil(width / TILE), math.ceil(height / TILE)


@torch.no_grad()
def bin_tiles(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """means2d [I, N, 2], radii [I, N, 2] int, depths [I, N] ->
    offsets [I * TH * TW + 1] (int64, tile t owns ids[offsets[t]:offsets[t+1]]),
    ids [n_isects] (int64, Gaussian index within its image)."""
    I, N = depths.shape
    tw, th = tile_grid(width, height)
    device = means2d.device
    means2d = means2d.reshape(I * N, 2).float()
    radii = radii.reshape(I * N, 2).float()

    centre = means2d / TILE  # [I*N, 2] in tile units
    half = radii / TILE  # [I*N, 2]
    hi = torch.tensor([tw, th], device=device, dtype=torch.float32)
    lo_tile = torch.minimum(torch.floor(centre - half).clamp_min(0), hi).long()  # [I*N, 2] inclusive
    hi_tile = torch.minimum(torch.ceil(centre + half).clamp_min(0), hi).long()  # [I*N, 2] exclusive
    span = hi_tile - lo_tile  # [I*N, 2]
    visible = (radii > 0).all(-1)  # [I*N]
    counts = torch.where(visible, span[:, 0] * span[:, 1], torch.zeros_like(span[:, 0]))  # [I*N]

    # One row per (Gaussian, covered tile), Gaussians in index order.
    gauss = torch.repeat_interleave(torch.arange(I * N, device=device), counts)  # [n_isects]
    first = torch.cumsum(counts, 0) - counts  # [I*N] start of each Gaussian's rows
    local = torch.arange(gauss.numel(), device=device) - first[gauss]  # [n_isects]
    width_g = span[gauss, 0]
    tile_x = lo_tile[gauss, 0] + local % width_g
    tile_y = lo_tile[gauss, 1] + local // width_g
    tile = (gauss // N) * (tw * th) + tile_y * tw + tile_x  # [n_isects] global tile index

    # Stable sorts: by depth, then by tile; ties keep index order.
    by_depth = torch.sort(depths.reshape(-1)[gauss], stable=True).indices
    by_tile = torch.sort(tile[by_depth], stable=True).indices
    order = by_depth[by_tile]
    ids = (gauss % N)[order]
    offsets = torch.zeros(I * tw * th + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cumsum(torch.bincount(tile, minlength=I * tw * th), 0)
    return offsets, ids
