"""Per-scene refinement of 3D Gaussians: graphdeco 3DGS optimisation with adaptive density control,
optionally SpotlessSplats-robust, as a short polish of predictions or a classic from-scratch baseline."""

from .config import PRESETS, RefineConfig
from .init import from_depth, from_points, random_init, random_points
from .trainer import RefineHistory, evaluate, refine

__all__ = [
    "PRESETS", "RefineConfig", "RefineHistory", "evaluate", "from_depth", "from_points", "random_init", "random_points",
    "refine",
]
