"""Render images and depth of a layout by analytic ray casting, vectorised over rays and objects.

Independent of any Gaussian rasterizer on purpose: a model trained on these images learns real
geometry rather than the quirks of its own renderer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cameras import pixel_rays
from .culling import parallel_ray_pairs, rect_pairs, sphere_screen_rects
from .layout import ROOM_FACES, Layout
from .shading import shade
from .shapes import BOX, intersect_kind, intersect_room, object_normals, room_normals, surface_uv
from .textures import albedo

_T_MIN = 1e-4  # ignore hits closer than this along a ray (self-intersection of shadow rays)
_SHADOW_OFFSET = 1e-3  # shadow rays start this far off the surface, along its normal


def render_views(layout: Layout, c2w: Tensor, intrinsics: Tensor, width: int, height: int,
                 chunk_rays: int = 1 << 18, shadows: bool = True) -> tuple[Tensor, Tensor]:
    """Colour and camera-space depth of every pixel of every view.

    c2w [V, 4, 4] (OpenCV axes), intrinsics [V, 4] (fx, fy, cx, cy in pixels, pixel centres at +0.5).
    Returns (images [V, H, W, 3] float32 in [0, 1], depth [V, H, W] float32, camera-space z).
    Views are traced a few at a time (about `chunk_rays` rays, at least one view) to bound memory.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or intrinsics.shape != (len(c2w), 4):
        raise ValueError(f"expected c2w [V, 4, 4] and intrinsics [V, 4], got {tuple(c2w.shape)} and "
                         f"{tuple(intrinsics.shape)}")
    c2w, intrinsics = c2w.float(), intrinsics.float()
    num_views, pixels = len(c2w), width * height
    images = torch.empty(num_views, pixels, 3)
    depth = torch.empty(num_views, pixels)
    group = max(1, chunk_rays // pixels)
    for first in range(0, num_views, group):
        views = slice(first, min(first + group, num_views))
        origins, dirs = pixel_rays(c2w[views], intrinsics[views], width, height)  # [v, 3], [v, H, W, 3]
        rects = sphere_screen_rects(layout.centres, _cull_radius(layout), c2w[views], intrinsics[views],
                                    width, height)  # [v, P, 4]
        pairs = rect_pairs(rects, width, height)
        colour, t = trace(layout, origins.repeat_interleave(pixels, 0), dirs.reshape(-1, 3), pairs, shadows)
        images[views] = colour.reshape(-1, pixels, 3)
        depth[views] = t.reshape(-1, pixels)
    return images.reshape(num_views, height, width, 3), depth.reshape(num_views, height, width)


def trace(layout: Layout, origins: Tensor, dirs: Tensor, pairs: tuple[Tensor, Tensor],
          shadows: bool = True) -> tuple[Tensor, Tensor]:
    """Shaded colour [N, 3] and ray parameter t [N] of the first hit of rays origins [N, 3] + t dirs [N, 3].

    Rays must start inside the room (so every ray hits something); pairs (ray [M], object [M]) lists
    the only ray-object combinations that can hit.
    """
    t, face = intersect_room(origins, dirs, layout.room_min, layout.room_max)  # [N], [N]
    material = face
    points = origins + t[:, None] * dirs  # [N, 3]
    local_points = points - layout.room_min
    normals = room_normals(face)  # [N, 3] world
    local_normals = normals.clone()  # the room's local frame is the world frame shifted
    kinds = torch.full_like(face, BOX)  # the room is textured like the inside of a box
    sizes = torch.ones_like(points)

    t_obj, which = _object_hits(layout, origins, dirs, *pairs)  # [N], [N]
    hit = t_obj < t
    if hit.any():
        idx = which[hit]
        rot = layout.rotations[idx]  # [n, 3, 3] world-to-local
        p = origins[hit] + t_obj[hit, None] * dirs[hit]
        p_local = torch.einsum("nij,nj->ni", rot, p - layout.centres[idx])
        n_local = object_normals(p_local, layout.kinds[idx], layout.sizes[idx])  # [n, 3]
        t = torch.where(hit, t_obj, t)
        material = torch.where(hit, len(ROOM_FACES) + which, material)  # objects follow the room faces
        points[hit] = p
        local_points[hit] = p_local
        local_normals[hit] = n_local
        kinds[hit] = layout.kinds[idx]
        sizes[hit] = layout.sizes[idx]
        normals[hit] = torch.einsum("nji,nj->ni", rot, n_local)  # R^T n: back to world

    key_visible = torch.ones_like(t, dtype=torch.bool)
    if shadows and layout.num_objects:
        key = layout.lights.directions[0]
        lit = ((normals @ key) > 0).nonzero()[:, 0]  # points facing away from the key light are dark anyway
        shadow_origins = points[lit] + _SHADOW_OFFSET * normals[lit]  # [n, 3]
        shadow_pairs = parallel_ray_pairs(shadow_origins, key, layout.centres, _cull_radius(layout))
        blocked = _object_hits(layout, shadow_origins, key.expand_as(shadow_origins), *shadow_pairs)[0]
        key_visible[lit] = ~blocked.isfinite()

    u, v = surface_uv(local_points, local_normals, kinds, sizes)
    colour = shade(albedo(layout.materials, material, u, v), normals, layout.lights, key_visible)
    return colour, t


def _cull_radius(layout: Layout) -> Tensor:
    return layout.bounding_radius * 1.001 + 1e-3  # [P], with a margin for rounding


def _object_hits(layout: Layout, origins: Tensor, dirs: Tensor, ray: Tensor, obj: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest object hit of rays origins [N, 3] + t dirs [N, 3], testing only the pairs (ray [M],
    object [M]): (t [N], object index [N]), inf and -1 where no object is hit."""
    num_rays, num_objects = len(dirs), layout.num_objects
    if num_objects == 0:
        return torch.full((num_rays,), float("inf")), torch.full((num_rays,), -1, dtype=torch.int64)
    t = torch.full((num_rays * num_objects,), float("inf"))
    for kind in layout.kinds.unique().tolist():
        of_kind = layout.kinds[obj] == kind
        r, o = ray[of_kind], obj[of_kind]  # [m]
        rot = layout.rotations[o]  # [m, 3, 3] world-to-local
        o_local = torch.einsum("mij,mj->mi", rot, origins[r] - layout.centres[o])
        d_local = torch.einsum("mij,mj->mi", rot, dirs[r])
        t[r * num_objects + o] = intersect_kind(kind, o_local, d_local, layout.sizes[o], _T_MIN)
    t, which = t.reshape(num_rays, num_objects).min(-1)
    return t, torch.where(t.isfinite(), which, -1)
