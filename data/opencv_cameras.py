"""Reader for the official Long-LRM processed format: `<scene>/opencv_cameras.json`.

    {"scene_name": str,
     "frames": [{"file_path": "images_undistort/frame0.jpg",   # relative to the JSON's folder
                 "w2c": 4x4 world-to-camera (OpenCV axes), "h", "w", "fx", "fy", "cx", "cy"}, ...],
     "fold_8_kmeans_32_input": [frame indices], ...}                  # optional, the authors' eval inputs

Images are already undistorted. Intrinsics refer to `w x h` and are rescaled to the decoded size.
Frames keep the file's order: the stored eval input indices refer to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.cameras import invert_rigid

from .errors import SceneError
from .files import load_json, require
from .scene import Scene, as_c2w, check_poses
from .view_sampling import stored_lists

FILE_NAME = "opencv_cameras.json"


def read_opencv_cameras(path: str | Path) -> Scene:
    """Open a folder with opencv_cameras.json (or the file itself)."""
    path = Path(path)
    json_path = path / FILE_NAME if path.is_dir() else path
    meta = load_json(json_path)
    where = str(json_path)
    frames = require(meta, "frames", where)
    if not isinstance(frames, list) or not frames:
        raise SceneError(f"{where} lists no frames; a scene needs at least one posed image")
    names = [str(require(f, "file_path", where)) for f in frames]
    sources = [json_path.parent / n for n in names]
    w2c = as_c2w([require(f, "w2c", where) for f in frames], where)  # [N, 4, 4]
    check_poses(w2c, names, where)  # a rigid w2c has a rigid inverse; check before inverting
    try:
        intrinsics = np.array([[require(f, k, where) for k in ("fx", "fy", "cx", "cy")] for f in frames],
                              dtype=np.float64)
        sizes = np.array([[require(f, "w", where), require(f, "h", where)] for f in frames], dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneError(f"{where}: intrinsics or image sizes are not numbers; fix the camera file") from None
    try:
        eval_inputs = stored_lists(meta)
    except (TypeError, ValueError):
        raise SceneError(f"{where}: a fold_<n>_kmeans_<K>_input list is not a list of frame indices") from None
    return Scene.from_frames(str(meta.get("scene_name", json_path.parent.name)), names, sources, invert_rigid(w2c),
                             intrinsics, sizes, camera_file=where, extras={"eval_inputs": eval_inputs})
