"""Lambert shading with an ambient term and one or two directional lights.

Shading depends only on the surface point and its normal, never on the viewer, so every image of a
scene agrees on the colour of a surface point (what a feed-forward reconstruction model can learn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Lights:
    directions: Tensor  # [L, 3] unit vectors pointing towards each light; light 0 is the key light
    intensities: Tensor  # [L]
    ambient: float


def random_lights(rng: np.random.Generator) -> Lights:
    """A key light from above plus, half of the time, a weaker fill light from any side."""
    def direction(elevation_deg: tuple[float, float]) -> np.ndarray:
        elev = np.radians(rng.uniform(*elevation_deg))
        azim = rng.uniform(0, 2 * np.pi)
        return np.array([np.cos(elev) * np.sin(azim), np.sin(elev), np.cos(elev) * np.cos(azim)])

    ambient = rng.uniform(0.35, 0.5)
    dirs, gains = [direction((35, 75))], [rng.uniform(0.4, 0.6)]
    if rng.random() < 0.5:
        dirs.append(direction((-40, 40)))
        gains.append(rng.uniform(0.1, 0.25))
    return Lights(torch.tensor(np.array(dirs), dtype=torch.float32),
                  torch.tensor(gains, dtype=torch.float32), float(ambient))


def shade(albedo: Tensor, normals: Tensor, lights: Lights, key_visible: Tensor) -> Tensor:
    """Shaded colour [N, 3] in [0, 1] from albedo [N, 3], world normals [N, 3] and whether the key light
    reaches each point, key_visible [N] bool."""
    cosines = (normals @ lights.directions.T).clamp_min(0)  # [N, L]
    cosines[:, 0] = cosines[:, 0] * key_visible
    light = lights.ambient + cosines @ lights.intensities  # [N]
    return (albedo * light[:, None]).clamp(0, 1)
