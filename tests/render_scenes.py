"""Random scenes for the renderer tests, built to hit the kernel's edge cases."""

from __future__ import annotations

import math

import torch


def look_cameras(n: int, width: int, height: int, batch=(), seed: int = 0, dtype=torch.float32):
    """n cameras near the origin looking roughly down +z: viewmats [*batch, n, 4, 4], Ks [*batch, n, 3, 3]."""
    g = torch.Generator().manual_seed(seed)
    count = math.prod(batch) * n
    angles = (torch.rand(count, 3, generator=g) - 0.5) * 0.3  # small yaw / pitch / roll
    views = []
    for (a, b, c), t in zip(angles.tolist(), (torch.rand(count, 3, generator=g) - 0.5) * 0.6):
        rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
        rz = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
        v = torch.eye(4)
        v[:3, :3] = rx @ ry @ rz
        v[:3, 3] = t
        views.append(v)
    viewmats = torch.stack(views).reshape(*batch, n, 4, 4)
    f = 0.9 * width
    K = torch.tensor([[f, 0.0, width / 2 + 0.3], [0.0, f * 1.05, height / 2 - 0.2], [0.0, 0.0, 1.0]])
    Ks = K.expand(*batch, n, 3, 3).clone()
    return viewmats.to(dtype), Ks.to(dtype)


def tricky_scene(
    n: int = 300,
    n_cameras: int = 2,
    width: int = 64,
    height: int = 48,
    batch=(),
    sh_degree: int | None = None,
    feat_dim: int = 3,
    seed: int = 0,
    dtype=torch.float32,
) -> dict:
    """Keyword arguments for `rasterize`: a cloud in front of the cameras mixed with Gaussians behind
    them, off-screen and straddling the border, tiny and huge ones, opacities from below 1/255 to
    almost 1, and random (unnormalised) quaternions."""
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, n)

    def u(*size):
        return torch.rand(*size, generator=g)

    means = (u(*shape, 3) - 0.5) * torch.tensor([7.0, 5.0, 0.0]) + torch.tensor([0.0, 0.0, 1.0])
    means[..., 2] = u(*shape) * 9.0 - 1.0  # z in [-1, 8]: some behind the cameras
    means[..., :2] *= (means[..., 2:3].abs() + 0.5) / 4.0  # widen with depth, so many land on or across the border
    log_scales = u(*shape, 3) * 5.0 - 6.0  # 2.5e-3 .. 0.37
    huge = u(*shape) < 0.03
    log_scales[huge] = math.log(1.5)
    opacities = u(*shape)
    pick = u(*shape)
    opacities[pick < 0.1] = 0.003  # below 1/255: culled
    opacities[(pick >= 0.1) & (pick < 0.2)] = 0.9995  # alpha clamps at 0.999
    quats = torch.randn(*shape, 4, generator=g) * 2.0
    if sh_degree is None:
        colors = u(*shape, feat_dim)
    else:
        colors = torch.randn(*shape, 16, 3, generator=g) * 0.4
    viewmats, Ks = look_cameras(n_cameras, width, height, batch, seed)
    return {
        "means": means.to(dtype),
        "quats": quats.to(dtype),
        "scales": log_scales.exp().to(dtype),
        "opacities": opacities.to(dtype),
        "colors": colors.to(dtype),
        "viewmats": viewmats.to(dtype),
        "Ks": Ks.to(dtype),
        "width": width,
        "height": height,
        "sh_degree": sh_degree,
    }


def dense_scene(n: int = 1500, width: int = 48, height: int = 32, seed: int = 1) -> dict:
    """Many fairly opaque Gaussians in front of one camera, so most pixels hit the stop rule."""
    scene = tricky_scene(n, 1, width, height, seed=seed)
    g = torch.Generator().manual_seed(seed)
    scene["means"][:, 2] = torch.rand(n, generator=g) * 4.0 + 1.0
    scene["means"][:, :2] = (torch.rand(n, 2, generator=g) - 0.5) * torch.tensor([2.0, 1.4])
    scene["scales"] = torch.full((n, 3), 0.08) * torch.rand(n, 3, generator=g).add(0.5)
    scene["opacities"] = torch.rand(n, generator=g) * 0.4 + 0.6
    return scene
