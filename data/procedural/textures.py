"""Procedural surface textures: checkers, stripes, value noise and colour gradients.

A texture is a function of 2D surface coordinates fixed to the object (see shapes.surface_uv), never
of the view, so the same surface point has the same albedo in every image.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

CHECKER, STRIPES, NOISE, GRADIENT = 0, 1, 2, 3
GRAIN_CELL = 0.04  # metres: fine noise that gives every surface some texture


@dataclass
class Materials:
    kind: Tensor  # [M] int64 pattern (CHECKER, STRIPES, NOISE, GRADIENT)
    colour_a: Tensor  # [M, 3] in [0, 1]
    colour_b: Tensor  # [M, 3] in [0, 1]
    scale: Tensor  # [M] pattern cell size in metres
    angle: Tensor  # [M] rotation of the pattern in its plane, radians
    grain: Tensor  # [M] amplitude of the fine brightness noise
    seed: Tensor  # [M] int64 noise lattice offset (below 2**20)

    def __len__(self) -> int:
        return len(self.kind)

    @staticmethod
    def stack(items: list[dict]) -> Materials:
        """Materials from per-material dicts with the field names as keys."""
        def col(name, dtype):
            return torch.tensor(np.array([m[name] for m in items]), dtype=dtype)
        return Materials(col("kind", torch.int64), col("colour_a", torch.float32), col("colour_b", torch.float32),
                         col("scale", torch.float32), col("angle", torch.float32), col("grain", torch.float32),
                         col("seed", torch.int64))


def random_material(rng: np.random.Generator, role: str) -> dict:
    """One material for a surface of the given role: 'wall', 'floor', 'ceiling' or 'object'."""
    if role == "floor":
        kind = int(rng.choice([STRIPES, CHECKER, NOISE]))
        hue, sat, val = rng.uniform(0.03, 0.12), rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.7)
    elif role == "ceiling":
        kind = int(rng.choice([NOISE, GRADIENT]))
        hue, sat, val = rng.uniform(0, 1), rng.uniform(0.0, 0.15), rng.uniform(0.8, 0.95)
    elif role == "wall":
        kind = int(rng.integers(0, 4))
        hue, sat, val = rng.uniform(0, 1), rng.uniform(0.1, 0.45), rng.uniform(0.6, 0.95)
    elif role == "object":
        kind = int(rng.integers(0, 4))
        hue, sat, val = rng.uniform(0, 1), rng.uniform(0.4, 0.9), rng.uniform(0.5, 1.0)
    else:
        raise ValueError(f"unknown surface role {role!r}")
    colour_a = colorsys.hsv_to_rgb(hue, sat, val)
    if rng.random() < 0.4:  # a contrasting second colour
        colour_b = colorsys.hsv_to_rgb((hue + rng.uniform(0.25, 0.75)) % 1.0, rng.uniform(0.3, 0.9),
                                       rng.uniform(0.3, 1.0))
    else:  # a darker shade of the first
        colour_b = colorsys.hsv_to_rgb((hue + rng.uniform(-0.05, 0.05)) % 1.0, sat, val * rng.uniform(0.3, 0.7))
    scale_range = {CHECKER: (0.12, 0.6), STRIPES: (0.04, 0.3), NOISE: (0.08, 0.5), GRADIENT: (0.3, 1.2)}[kind]
    return {
        "kind": kind,
        "colour_a": colour_a,
        "colour_b": colour_b,
        "scale": rng.uniform(*scale_range),
        "angle": rng.choice([0.0, 0.0, rng.uniform(0, math.pi)]),
        "grain": rng.uniform(0.04, 0.15),
        "seed": int(rng.integers(0, 1 << 20)),
    }


def _hash01(ix: Tensor, iy: Tensor, seed: Tensor) -> Tensor:
    """Integer lattice hash to [0, 1]; int32 arithmetic wraps around, which is what mixes the bits."""
    h = ix * 374761393 + iy * 668265263 + seed * 1442695041
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).float() * (1.0 / 65535.0)


def value_noise(u: Tensor, v: Tensor, seed: Tensor) -> Tensor:
    """Smoothly interpolated lattice noise in [0, 1] with unit cell size; u, v, seed [N]."""
    fu, fv = torch.floor(u), torch.floor(v)
    iu, iv = fu.int(), fv.int()
    su, sv = u - fu, v - fv
    su, sv = su * su * (3 - 2 * su), sv * sv * (3 - 2 * sv)
    n00, n10 = _hash01(iu, iv, seed), _hash01(iu + 1, iv, seed)
    n01, n11 = _hash01(iu, iv + 1, seed), _hash01(iu + 1, iv + 1, seed)
    return torch.lerp(torch.lerp(n00, n10, su), torch.lerp(n01, n11, su), sv)


def albedo(materials: Materials, index: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Surface colour [N, 3] in [0, 1] of materials index [N] at surface coordinates u, v [N] (metres)."""
    angle, scale, seed = materials.angle[index], materials.scale[index], materials.seed[index].int()
    c, s = torch.cos(angle), torch.sin(angle)
    pu, pv = (c * u + s * v) / scale, (c * v - s * u) / scale  # pattern coordinates, one cell per unit

    kind = materials.kind[index]
    pattern = torch.empty_like(u)
    for k, fn in ((CHECKER, _checker), (STRIPES, _stripes), (NOISE, _noise), (GRADIENT, _gradient)):
        mask = kind == k
        if mask.any():
            pattern[mask] = fn(pu[mask], pv[mask], seed[mask])

    colour = torch.lerp(materials.colour_a[index], materials.colour_b[index], pattern[:, None])
    grain = value_noise(u / GRAIN_CELL, v / GRAIN_CELL, seed + 7) * 2 - 1
    colour = colour * (1 + materials.grain[index] * grain)[:, None]
    return colour.clamp(0, 1)


def _checker(u: Tensor, v: Tensor, seed: Tensor) -> Tensor:
    return torch.remainder(torch.floor(u) + torch.floor(v), 2)


def _stripes(u: Tensor, v: Tensor, seed: Tensor) -> Tensor:
    # Slightly wavy boards/stripes: the stripe index is perturbed by low-frequency noise along v.
    wobble = 0.3 * value_noise(v * 0.25, u * 0.1, seed)
    return torch.remainder(torch.floor(u + wobble), 2)


def _noise(u: Tensor, v: Tensor, seed: Tensor) -> Tensor:
    return (value_noise(u, v, seed) * 2 + value_noise(2.1 * u, 2.1 * v, seed + 1)) / 3


def _gradient(u: Tensor, v: Tensor, seed: Tensor) -> Tensor:
    # Long smooth colour bands; the phase comes from the seed so surfaces differ.
    phase = (seed % 628).float() / 100
    return 0.5 + 0.5 * torch.sin(2 * math.pi * u / 4 + phase)
