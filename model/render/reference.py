"""The plain-PyTorch rasterizer: the test oracle of the C++ kernel, differentiable by autograd.

Same three stages and kernel constants as the native backend (see csrc/splat.h), written for
clarity rather than speed: projection is vectorised over all Gaussians and cameras, compositing
loops over 16x16 tiles and evaluates every (pixel, Gaussian-in-tile) pair densely. Works in any
float dtype and on any device, so it also serves float64 gradient checks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.rotations import quat_to_matrix

from .sh import sh_to_color
from .tiles import TILE, bin_tiles, tile_grid

ALPHA_MIN = 1.0 / 255.0  # blends below this alpha are skipped
ALPHA_MAX = 0.999  # alpha clamp, keeps 1 - alpha invertible for the backward pass
T_MIN = 1e-4  # a pixel stops before its transmittance would reach this
EXTEND_MAX = 3.33  # cap of the bounding box half-size, in standard deviations


def project(
    means: Tensor,  # [B, N, 3]
    quats: Tensor,  # [B, N, 4]
    scales: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N]
    viewmats: Tensor,  # [B, C, 4, 4]
    Ks: Tensor,  # [B, C, 3, 3]
    width: int,
    height: int,
    eps2d: float,
    near_plane: float,
    far_plane: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA projection -> radii [B, C, N, 2] int32, means2d [B, C, N, 2], depths [B, C, N],
    conics [B, C, N, 3] (inverse 2D covariance a, b, c). Culled Gaussians get zeros everywhere."""
    R = viewmats[:, :, None, :3, :3]  # [B, C, 1, 3, 3]
    t = viewmats[:, :, None, :3, 3]  # [B, C, 1, 3]
    p = (R @ means[:, None, :, :, None]).squeeze(-1) + t  # [B, C, N, 3] camera space
    M = quat_to_matrix(quats) * scales[..., None, :]  # [B, N, 3, 3] = Rq diag(s)
    cov = M @ M.transpose(-1, -2)  # [B, N, 3, 3]
    cov_c = R @ cov[:, None] @ R.transpose(-1, -2)  # [B, C, N, 3, 3]

    x, y, z = p.unbind(-1)  # [B, C, N]
    in_depth = (z >= near_plane) & (z <= far_plane)
    # Culled entries are zeroed at the end; safe values keep their (unused) gradients finite.
    z = torch.where(in_depth, z, torch.ones_like(z))
    fx, fy = Ks[:, :, None, 0, 0], Ks[:, :, None, 1, 1]  # [B, C, 1]
    cx, cy = Ks[:, :, None, 0, 2], Ks[:, :, None, 1, 2]
    # Clamp x/z, y/z to 1.3x the half field of view before forming the Jacobian (as gsplat does),
    # so Gaussians far off-screen do not get unbounded footprints.
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = z * torch.clamp(x / z, -(cx / fx + 0.3 * tan_x), (width - cx) / fx + 0.3 * tan_x)
    ty = z * torch.clamp(y / z, -(cy / fy + 0.3 * tan_y), (height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    J = torch.stack(
        [
            torch.stack([fx / z, zero, -fx * tx / (z * z)], -1),
            torch.stack([zero, fy / z, -fy * ty / (z * z)], -1),
        ],
        -2,
    )  # [B, C, N, 2, 3]
    cov2d = J @ cov_c @ J.transpose(-1, -2)  # [B, C, N, 2, 2]
    s00 = cov2d[..., 0, 0] + eps2d
    s01 = cov2d[..., 0, 1]
    s11 = cov2d[..., 1, 1] + eps2d
    det = s00 * s11 - s01 * s01  # [B, C, N]
    opac = opacities[:, None, :].expand_as(det)  # [B, C, N]
    valid = in_depth & (det > 0) & (opac >= ALPHA_MIN)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([s11 / det, -s01 / det, s00 / det], -1)  # [B, C, N, 3]
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)  # [B, C, N, 2]

    with torch.no_grad():
        # Opacity-aware box: beyond sqrt(2 ln(o / alpha_min)) sigmas alpha is below 1/255.
        ratio = torch.where(valid, opac / ALPHA_MIN, torch.ones_like(opac))
        extend = torch.sqrt(2 * torch.log(ratio)).clamp(max=EXTEND_MAX)
        rx = torch.ceil(extend * torch.sqrt(s00.clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(s11.clamp_min(0)))
        mx, my = means2d.unbind(-1)
        on_screen = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        valid = valid & ((rx > 0) | (ry > 0)) & on_screen
        radii = (torch.stack([rx, ry], -1) * valid[..., None]).to(torch.int32)  # [B, C, N, 2]

    keep = valid[..., None]
    means2d = torch.where(keep, means2d, torch.zeros_like(means2d))
    conics = torch.where(keep, conics, torch.zeros_like(conics))
    depths = torch.where(valid, z, torch.zeros_like(z))
    return radii, means2d, depths, conics


def sh_colors(degree: int, means: Tensor, campos: Tensor, coeffs: Tensor) -> Tensor:
    """means [B, N, 3], campos [B, C, 3], coeffs [B, N, K, 3] -> colours [B, C, N, 3]."""
    dirs = means[:, None] - campos[:, :, None]  # [B, C, N, 3]
    return sh_to_color(degree, dirs, coeffs[:, None])


def composite(
    means2d: Tensor,  # [I, N, 2]
    conics: Tensor,  # [I, N, 3]
    colors: Tensor,  # [I, N, D]
    opacities: Tensor,  # [I, N]
    backgrounds: Tensor | None,  # [I, D]
    radii: Tensor,  # [I, N, 2]
    depths: Tensor,  # [I, N]
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, dict]:
    """Front-to-back compositing -> colours [I, H, W, D], alphas [I, H, W, 1], stats."""
    I, _, D = colors.shape
    offsets, ids = bin_tiles(means2d.detach(), radii, depths.detach(), width, height)
    tw, th = tile_grid(width, height)
    out = colors.new_zeros(I, height, width, D)  # [I, H, W, D] sum of w_i c_i
    out_T = colors.new_ones(I, height, width)  # [I, H, W] final transmittance
    blends = 0
    bounds = offsets.tolist()
    for tile in range(I * tw * th):
        start, end = bounds[tile], bounds[tile + 1]
        if start == end:
            continue
        img, t = divmod(tile, tw * th)
        y0, x0 = (t // tw) * TILE, (t % tw) * TILE
        y1, x1 = min(y0 + TILE, height), min(x0 + TILE, width)
        g = ids[start:end]  # [M] front to back
        ys, xs = torch.meshgrid(
            torch.arange(y0, y1, device=colors.device), torch.arange(x0, x1, device=colors.device), indexing="ij"
        )
        px = xs.reshape(-1).to(colors.dtype) + 0.5  # [P] pixel centres
        py = ys.reshape(-1).to(colors.dtype) + 0.5
        dx = means2d[img, g, 0][None] - px[:, None]  # [P, M]
        dy = means2d[img, g, 1][None] - py[:, None]
        a, b, c = conics[img, g].unbind(-1)  # [M]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy  # [P, M]
        alpha = (opacities[img, g] * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
        skip = (sigma < 0) | (alpha < ALPHA_MIN)
        alpha = alpha.masked_fill(skip, 0.0)
        T_after = torch.cumprod(1 - alpha, dim=1)  # [P, M] transmittance after each Gaussian
        # Transmittance only decreases, so "not yet stopped" is a prefix of the list.
        kept = T_after > T_MIN  # [P, M]
        T_before = torch.cat([torch.ones_like(T_after[:, :1]), T_after[:, :-1]], 1)
        weights = alpha * T_before * kept  # [P, M]
        n_kept = kept.sum(1)  # [P]
        last = T_after.gather(1, (n_kept - 1).clamp_min(0)[:, None]).squeeze(1)
        T_final = torch.where(n_kept > 0, last, torch.ones_like(last))  # [P]
        out[img, y0:y1, x0:x1] = (weights @ colors[img, g]).reshape(y1 - y0, x1 - x0, D)
        out_T[img, y0:y1, x0:x1] = T_final.reshape(y1 - y0, x1 - x0)
        blends += int((kept & ~skip).sum())
    if backgrounds is not None:
        out = out + out_T[..., None] * backgrounds[:, None, None, :]
    stats = {"n_isects": int(ids.numel()), "n_blends": blends}
    return out, (1 - out_T)[..., None], stats
