"""One call from a config (and its seed) to a rendered multi-view scene."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .cameras import intrinsics_from_fov
from .config import ProceduralConfig
from .layout import Layout, random_layout, random_room
from .paths import camera_path
from .raycast import render_views


@dataclass
class ProceduralScene:
    images: Tensor  # [V, H, W, 3] float32 in [0, 1]
    depth: Tensor  # [V, H, W] float32 camera-space z (not distance along the ray)
    intrinsics: Tensor  # [V, 4] fx, fy, cx, cy in pixels, pixel centres at +0.5
    c2w: Tensor  # [V, 4, 4] camera-to-world, OpenCV axes (x right, y down, z forward), world y up
    config: ProceduralConfig  # includes the seed: the same config gives bit-identical tensors
    layout: Layout  # the room, objects, materials and lights that were rendered

    @property
    def num_views(self) -> int:
        return len(self.c2w)


def generate_scene(config: ProceduralConfig | None = None, **changes) -> ProceduralScene:
    """Build and render a random scene; `changes` override config fields, e.g. generate_scene(seed=3)."""
    config = (config or ProceduralConfig()).replace(**changes)
    torch.set_flush_denormal(True)
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        return _generate(config)
    finally:
        torch.set_num_threads(threads)


def _generate(config: ProceduralConfig) -> ProceduralScene:
    rng = np.random.default_rng(config.seed)
    lo, hi = random_room(rng)
    fov = config.fov_x_deg if config.fov_x_deg is not None else rng.uniform(60.0, 70.0)
    num_objects = config.num_objects if config.num_objects is not None else int(rng.integers(4, 11))
    c2w = camera_path(rng, config.path, lo, hi, config.num_frames, config.clearance)  # [V, 4, 4]
    focus = (lo + hi) / 2 if config.path == "orbit" else None  # an orbit circles a centrepiece
    layout = random_layout(rng, lo, hi, c2w[:, :3, 3].double().numpy(), num_objects, config.clearance, focus)
    intrinsics = intrinsics_from_fov(config.width, config.height, fov).expand(config.num_frames, 4).clone()
    images, depth = render_views(layout, c2w, intrinsics, config.width, config.height,
                                 chunk_rays=config.chunk_rays, shadows=config.shadows)
    return ProceduralScene(images=images, depth=depth, intrinsics=intrinsics, c2w=c2w, config=config, layout=layout)
