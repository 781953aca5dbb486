"""Reader for DL3DV-10K scene folders.

Two layouts, both nerfstudio files whose intrinsics are at the original 3840x2160 capture size:
  raw (DL3DV-10K):        <hash>/transforms.json + <hash>/images_4/frame_00001.png ...
  benchmark (DL3DV-140):  <hash>/nerfstudio/transforms.json + <hash>/nerfstudio/images_4/...
`file_path` entries name the full-resolution folder ("images/frame_00001.png"); the frames are read
from the chosen downscaled folder by file name. The frames carry nonzero lens distortion, removed on
load by default (see data/distortion.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SceneError
from ..nerfstudio import read_nerfstudio
from ..scene import Scene

IMAGE_DIRS = ("images_4", "images_8")  # 960x540 and 480x270; searched in this order when not given

# The world change nerfstudio's COLMAP conversion applies (swap x and y, negate z), undone by
# `colmap_world=True` when the file does not record it as `applied_transform`.
NERFSTUDIO_WORLD_CHANGE = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]])


def dl3dv_root(path: str | Path) -> Path | None:
    """The folder holding transforms.json for either layout, or None when `path` is not a DL3DV scene."""
    path = Path(path)
    for root in (path / "nerfstudio", path):
        if (root / "transforms.json").is_file() and any((root / d).is_dir() for d in IMAGE_DIRS):
            return root
    return None


def read_dl3dv(path: str | Path, image_dir: str | None = None, distortion: str = "undistort",
               colmap_world: bool = False) -> Scene:
    """Open `<hash>` (raw or benchmark layout). image_dir: "images_4", "images_8" or None (first present)."""
    path = Path(path)
    root = dl3dv_root(path)
    if root is None:
        if not any((p / "transforms.json").is_file() for p in (path, path / "nerfstudio")):
            raise SceneError(f"{path} is not a DL3DV scene: no transforms.json in it or in its nerfstudio/ folder")
        raise SceneError(f"{path} has a transforms.json but none of the image folders {list(IMAGE_DIRS)}; "
                         "download images_4 (960x540) or images_8 for this scene")
    if image_dir is None:
        image_dir = next(d for d in IMAGE_DIRS if (root / d).is_dir())
    elif not (root / image_dir).is_dir():
        raise SceneError(f"{root} has no {image_dir} folder; download it or pick one of "
                         f"{[d for d in IMAGE_DIRS if (root / d).is_dir()]}")
    scene_id = root.parent.name if root.name == "nerfstudio" else root.name
    return read_nerfstudio(root, image_dir=image_dir, distortion=distortion, undo_applied_transform=colmap_world,
                           fallback_applied_transform=NERFSTUDIO_WORLD_CHANGE, scene_id=scene_id)
