"""Scenes and samples: readers of every supported layout, view choice, the one sample builder.

    from data import open_scene, capture_sample
    scene = open_scene("path/to/scene")            # DL3DV, nerfstudio, opencv_cameras.json, COLMAP
    selection, sample = capture_sample(scene, config, holdout=True)

Names are imported on first use, so `import data.config` stays light. `open_scene` is also the name of
its module: importing that module must not bind the module where the function is exported.
"""

import sys
from importlib import import_module
from types import ModuleType

_EXPORTS = {
    "open_scene": "data.open_scene", "find_scenes": "data.open_scene", "Scene": "data.scene",
    "Sample": "data.batch", "SampleBuilder": "data.pipeline", "capture_sample": "data.pipeline",
    "DataConfig": "data.config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'data' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)


class _Package(ModuleType):
    def __setattr__(self, name: str, value) -> None:
        if name not in _EXPORTS or not isinstance(value, ModuleType):  # the import system binding data.open_scene
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
