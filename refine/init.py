"""Starting Gaussians for refinement: a prediction as it is, or graphdeco's point-cloud initialisation."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from model.cameras import Cameras
from model.gaussians import Gaussians, rgb_to_sh0

from .params import scene_extent

# Random starts: graphdeco's and gsplat's 100,000 points at most, fewer for small inputs (a point per
# 16 input pixels: 57k for 32 views at 224x128, 3.6k for 8 at 112x64), as a prediction has one per pixel.
RANDOM_POINTS = 100_000
PIXELS_PER_RANDOM_POINT = 16
RANDOM_DEPTH = (0.1, 30.0)  # default depth range of random points, in camera extents


def from_points(points: Tensor, colors: Tensor, sh_degree: int = 3, opacity: float = 0.1) -> Gaussians:
    """graphdeco's initialisation from a point cloud points [P, 3] with colours [P, 3] in [0, 1].

    Isotropic scales equal the root of the mean squared distance to the 3 nearest neighbours, so the
    blobs roughly tile the cloud's surface whatever its density; identity rotations; opacity 0.1 so
    that early steps can still see through them; SH degree 0 from the colours, higher degrees zero.
    """
    if points.dim() != 2 or points.shape[-1] != 3 or colors.shape != points.shape:
        raise ValueError(f"points and colors must both be [P, 3], got {tuple(points.shape)} and {tuple(colors.shape)}")
    if len(points) < 2:
        raise ValueError("a point cloud needs at least 2 points")
    # scikit-learn's tree, not scipy's cKDTree: the commands flush denormals to zero for speed, and
    # under that mode cKDTree's construction crashes the process on some clouds (scipy 1.17).
    # Imported here: it takes seconds, and most users of refinement start from a prediction.
    from sklearn.neighbors import NearestNeighbors

    pts = points.detach().double().cpu().numpy()
    k = min(4, len(pts))  # the nearest neighbour of a point is itself
    dist, _ = NearestNeighbors(n_neighbors=k).fit(pts).kneighbors(pts)
    mean_sq = np.maximum((dist[:, 1:] ** 2).mean(1), 1e-7)  # graphdeco's distCUDA2 floor
    log_scale = torch.from_numpy(0.5 * np.log(mean_sq)).float()  # log(sqrt(mean squared distance))
    n, k_sh = len(pts), (sh_degree + 1) ** 2
    sh = torch.zeros(n, k_sh, 3)
    sh[:, 0] = rgb_to_sh0(colors.detach().float().cpu())
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    return Gaussians(
        means=points.detach().float().cpu().clone(),
        log_scales=log_scale[:, None].repeat(1, 3),
        quats=quats,
        opacity_logits=torch.full((n,), math.log(opacity / (1 - opacity))),
        sh=sh,
    )


def random_points(cameras: Cameras, count: int, near: float, far: float,
                  generator: torch.Generator | None = None) -> Tensor:
    """Points [count, 3] in the cameras' frusta, log-uniform in depth (camera z) between near and far.

    For scenes without a structure-from-motion cloud: each point picks a random camera, pixel and depth,
    so the points fill exactly the space that some view can see. Log-uniform depth gives every depth
    octave as many points, so their Gaussians (sized by the distance to their neighbours) cover about
    the same area on screen whether near or far.
    """
    cams = cameras.reshape(-1)
    v = torch.randint(len(cams.c2w), (count,), generator=generator)
    uv = torch.rand(count, 2, generator=generator) * torch.tensor([cams.width, cams.height], dtype=torch.float32)
    z = near * (far / near) ** torch.rand(count, generator=generator)
    fx, fy, cx, cy = cams.intrinsics[v].float().unbind(-1)
    p_cam = torch.stack([(uv[:, 0] - cx) / fx * z, (uv[:, 1] - cy) / fy * z, z], -1)  # [count, 3]
    c2w = cams.c2w[v].float()
    return (c2w[:, :3, :3] @ p_cam[..., None])[..., 0] + c2w[:, :3, 3]


def random_init(cameras: Cameras, count: int | None = None, near: float | None = None, far: float | None = None,
                sh_degree: int = 3, generator: torch.Generator | None = None) -> Gaussians:
    """The classic baseline without a point cloud: random points in the frusta with random colours.

    count None: one per PIXELS_PER_RANDOM_POINT input pixels, at most RANDOM_POINTS. Without structure
    from motion the scene's depth is unknown; by default the points span RANDOM_DEPTH times the
    cameras' extent (graphdeco's cameras_extent), which covers rooms walked through, objects orbited
    and views down a street.
    """
    if count is None:
        pixels = cameras.shape.numel() * cameras.width * cameras.height
        count = min(RANDOM_POINTS, max(2, pixels // PIXELS_PER_RANDOM_POINT))
    extent = scene_extent(cameras)
    near = RANDOM_DEPTH[0] * extent if near is None else near
    far = RANDOM_DEPTH[1] * extent if far is None else far
    if not 0 < near < far:
        raise ValueError(f"random points need 0 < near < far, got {near} and {far} (do the cameras move?)")
    points = random_points(cameras, count, near, far, generator)
    colors = torch.rand(count, 3, generator=generator)
    return from_points(points, colors, sh_degree)


def from_depth(images: Tensor, depth: Tensor, cameras: Cameras, stride: int = 1, sh_degree: int = 3,
               opacity: float = 0.9) -> Gaussians:
    """One Gaussian per `stride`-th pixel of depth maps, like a per-pixel prediction.

    images [V, H, W, 3], depth [V, H, W] camera z, cameras [V]. Each Gaussian sits where its pixel's
    ray meets the depth, with an isotropic size of half the pixel spacing at that depth (neighbours
    overlap enough to leave no holes, little enough to stay sharp) and the pixel's colour.
    """
    cams = cameras.reshape(-1)
    origins, dirs = cams.rays()  # [V, H, W, 3] unit directions
    z_per_t = cams.pixel_directions()[..., 2]  # [V, H, W]: camera z per unit of ray length
    points = origins + dirs * (depth / z_per_t)[..., None]  # [V, H, W, 3]
    pick = (slice(None), slice(stride // 2, None, stride), slice(stride // 2, None, stride))
    points, colors, z = points[pick].reshape(-1, 3), images[pick].reshape(-1, 3), depth[pick].reshape(-1)
    focal = cams.intrinsics[:, :2].mean(-1)[:, None, None].expand_as(depth)[pick].reshape(-1)  # [P]
    keep = torch.isfinite(z) & (z > 0)
    points, colors, z, focal = points[keep], colors[keep], z[keep], focal[keep]
    n, k_sh = len(points), (sh_degree + 1) ** 2
    sh = torch.zeros(n, k_sh, 3)
    sh[:, 0] = rgb_to_sh0(colors.float())
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    return Gaussians(
        means=points.float(),
        log_scales=(0.5 * stride * z / focal).log()[:, None].repeat(1, 3).float(),
        quats=quats,
        opacity_logits=torch.full((n,), math.log(opacity / (1 - opacity))),
        sh=sh,
    )
