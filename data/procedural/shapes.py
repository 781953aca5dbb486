"""Ray-primitive intersections and surface normals, vectorised over rays and primitives.

Objects are intersected in their local frame (centred, axis-aligned), so a box of any orientation is
an axis-aligned slab test and a cylinder is always vertical along local y. Ray directions need not be
unit length: every function returns the ray parameter t of the hit (hit = o + t d), inf on a miss.
Rays are tested only against objects whose bounding sphere they pass through (see raycast), so the
per-object functions work on flat lists of (ray, object) pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor

BOX, SPHERE, CYLINDER = 0, 1, 2
KIND_NAMES = {BOX: "box", SPHERE: "sphere", CYLINDER: "cylinder"}

_TINY = 1e-12


def _safe(x: Tensor) -> Tensor:
    """x with zeros nudged away from 0 (keeping the sign), so divisions give huge, finite values."""
    return torch.where(x.abs() < _TINY, torch.full_like(x, _TINY), x)


def intersect_room(origins: Tensor, dirs: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Exit point of rays starting inside the axis-aligned room [lo, hi] (both [3]).

    origins and dirs [..., 3] (broadcastable). Returns (t [...], face [...]) with face = 2 * axis + 1
    on the high side of that axis and 2 * axis on the low side (so 2 is the floor, 3 the ceiling).
    """
    d = _safe(dirs)
    positive = d > 0
    t_axis = (torch.where(positive, hi, lo) - origins) / d  # [..., 3]
    t, axis = t_axis.min(-1)
    high = torch.gather(positive, -1, axis[..., None])[..., 0]
    return t, 2 * axis + high.long()


def room_normals(face: Tensor) -> Tensor:
    """Inward unit normals [..., 3] of room faces [...]."""
    axis = face // 2
    sign = 1.0 - 2.0 * (face % 2).float()  # low side faces +axis, high side faces -axis
    return torch.nn.functional.one_hot(axis, 3).float() * sign[..., None]


def intersect_boxes(o: Tensor, d: Tensor, half: Tensor, t_min: float) -> Tensor:
    """Slab test against centred boxes with half extents half [..., 3]; o, d [..., 3] -> t [...]."""
    inv = 1.0 / _safe(d)
    t0 = (-half - o) * inv
    t1 = (half - o) * inv
    near = torch.minimum(t0, t1).amax(-1)
    far = torch.maximum(t0, t1).amin(-1)
    return torch.where((near <= far) & (near > t_min), near, float("inf"))


def intersect_spheres(o: Tensor, d: Tensor, radius: Tensor, t_min: float) -> Tensor:
    """Centred spheres of radius [...]; o, d [..., 3] -> t [...] (the near root only: rays start outside)."""
    a = (d * d).sum(-1)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - radius * radius
    disc = b * b - a * c
    t = (-b - disc.clamp_min(0).sqrt()) / a
    return torch.where((disc >= 0) & (t > t_min), t, float("inf"))


def intersect_cylinders(o: Tensor, d: Tensor, radius: Tensor, half_height: Tensor, t_min: float) -> Tensor:
    """Centred capped cylinders along local y; o, d [..., 3], radius and half_height [...] -> t [...]."""
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = d.unbind(-1)
    a = (dx * dx + dz * dz).clamp_min(_TINY)
    b = ox * dx + oz * dz
    c = ox * ox + oz * oz - radius * radius
    disc = b * b - a * c
    t_side = (-b - disc.clamp_min(0).sqrt()) / a
    side_ok = (disc >= 0) & (t_side > t_min) & ((oy + t_side * dy).abs() <= half_height)
    best = torch.where(side_ok, t_side, float("inf"))
    dy_safe = _safe(dy)
    for cap in (half_height, -half_height):
        t_cap = (cap - oy) / dy_safe
        px, pz = ox + t_cap * dx, oz + t_cap * dz
        cap_ok = (t_cap > t_min) & (px * px + pz * pz <= radius * radius)
        best = torch.where(cap_ok, torch.minimum(best, t_cap), best)
    return best


def bounding_radius(kinds: Tensor, sizes: Tensor) -> Tensor:
    """Radius [P] of the smallest centred sphere around each object (kinds [P], sizes [P, 3])."""
    box = sizes.norm(dim=-1)
    cylinder = (sizes[:, 0] ** 2 + sizes[:, 1] ** 2).sqrt()
    return torch.where(kinds == BOX, box, torch.where(kinds == SPHERE, sizes[:, 0], cylinder))


def intersect_kind(kind: int, o: Tensor, d: Tensor, sizes: Tensor, t_min: float) -> Tensor:
    """Hit of each ray with its own object of one kind, rays already in that object's local frame.

    o [M, 3], d [M, 3], sizes [M, 3] -> t [M] (inf on a miss).
    """
    if kind == BOX:
        return intersect_boxes(o, d, sizes, t_min)
    if kind == SPHERE:
        return intersect_spheres(o, d, sizes[:, 0], t_min)
    if kind == CYLINDER:
        return intersect_cylinders(o, d, sizes[:, 0], sizes[:, 1], t_min)
    raise ValueError(f"unknown object kind {kind}; expected one of {KIND_NAMES}")


def object_normals(p: Tensor, kinds: Tensor, sizes: Tensor) -> Tensor:
    """Outward unit normals [N, 3] at local surface points p [N, 3] of objects kinds [N], sizes [N, 3].

    The face is the one the point is closest to, which is the face that was hit.
    """
    box_axis = (sizes - p.abs()).argmin(-1)
    box_n = torch.nn.functional.one_hot(box_axis, 3).float() * torch.sign(p)
    sphere_n = p / sizes[:, :1]
    rho = (p[:, 0] ** 2 + p[:, 2] ** 2).sqrt()
    on_cap = (p[:, 1].abs() - sizes[:, 1]).abs() < (rho - sizes[:, 0]).abs()
    side_n = torch.stack([p[:, 0], torch.zeros_like(rho), p[:, 2]], -1) / rho.clamp_min(_TINY)[:, None]
    cap_n = torch.stack([torch.zeros_like(rho), torch.sign(p[:, 1]), torch.zeros_like(rho)], -1)
    cyl_n = torch.where(on_cap[:, None], cap_n, side_n)
    k = kinds[:, None]
    n = torch.where(k == BOX, box_n, torch.where(k == SPHERE, sphere_n, cyl_n))
    return n / n.norm(dim=-1, keepdim=True).clamp_min(_TINY)


def surface_uv(p: Tensor, n: Tensor, kinds: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor]:
    """2D texture coordinates in metres (u [N], v [N]) of local surface points p [N, 3] with local normals
    n [N, 3] on objects kinds [N], sizes [N, 3]. Flat faces drop the axis their normal points along;
    cylinder sides unroll around the axis; spheres use longitude and latitude. The room uses BOX."""
    axis = n.abs().argmax(-1, keepdim=True)  # [N, 1]
    u = torch.gather(p, -1, (axis + 1) % 3)[:, 0]
    v = torch.gather(p, -1, (axis + 2) % 3)[:, 0]
    radius = sizes[:, 0]
    around = radius * torch.atan2(p[:, 0], p[:, 2])  # arc length around local y
    latitude = radius * torch.asin((p[:, 1] / radius).clamp(-1, 1))
    side = (kinds == CYLINDER) & (n[:, 1].abs() < 0.5)
    u = torch.where(side | (kinds == SPHERE), around, u)
    v = torch.where(side, p[:, 1], torch.where(kinds == SPHERE, latitude, v))
    return u, v
