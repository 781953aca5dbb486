"""Procedural multi-view scenes: random textured rooms with objects, rendered by analytic ray casting
along smooth video-like camera paths, with exact depth and cameras; writable as DL3DV folders."""

from .config import PATH_KINDS, PRESETS, ProceduralConfig
from .generate import ProceduralScene, generate_scene
from .layout import Layout
from .raycast import render_views
from .writer import write_dl3dv_scene

__all__ = [
    "PATH_KINDS",
    "PRESETS",
    "Layout",
    "ProceduralConfig",
    "ProceduralScene",
    "generate_scene",
    "render_views",
    "write_dl3dv_scene",
]
