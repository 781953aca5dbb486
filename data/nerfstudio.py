"""Reader for nerfstudio `transforms.json` folders (also Blender/instant-ngp style files).

Conventions of the format, converted once here:
- `transform_matrix` is camera-to-world with OpenGL/Blender camera axes (y up, z backwards); OpenCV
  axes are obtained by negating the camera's y and z columns.
- Intrinsics (`fl_x fl_y cx cy`, top level or per frame) refer to an image of `w x h` pixels, which
  may be the original capture rather than the (downscaled) images read; they are rescaled to the
  decoded size. Pixel centres are at +0.5 (nerfstudio copies COLMAP's convention).
- `k1 k2 p1 p2` are OpenCV radial-tangential coefficients; `k3`/`k4` and fisheye models are refused.
- Frames are sorted by file path (as nerfstudio's own data parser does), which is video order.
- World frame: `ns-process-data` rotates COLMAP's world (rows x, y swapped, z negated) and, in recent
  versions, records it as `applied_transform`. The world frame is kept as written by default: pose
  normalisation makes the network's inputs independent of any rigid world change, so it only
  decides the frame of exported Gaussians. `undo_applied_transform=True` maps back to COLMAP's world.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from model.cameras import opengl_to_opencv

from .errors import SceneError
from .files import load_json, natural_key, require
from .images import image_size
from .scene import Scene, as_c2w

_FISHEYE_MODELS = ("OPENCV_FISHEYE", "FISHEYE", "EQUIRECTANGULAR", "FOV")


def read_nerfstudio(path: str | Path, image_dir: str | None = None, distortion: str = "undistort",
                    undo_applied_transform: bool = False, fallback_applied_transform: np.ndarray | None = None,
                    scene_id: str | None = None) -> Scene:
    """Open a folder with `transforms.json` (or the file itself).

    image_dir: read each frame's file name from this folder (relative to the JSON's folder) instead of
    the folder written in `file_path`, e.g. "images_4" for a downscaled copy.
    fallback_applied_transform: [3, 4] or [4, 4] world change to undo when the file records none.
    """
    path = Path(path)
    json_path = path / "transforms.json" if path.is_dir() else path
    meta = load_json(json_path)
    where = str(json_path)
    frames = require(meta, "frames", where)
    if not isinstance(frames, list) or not frames:
        raise SceneError(f"{where} lists no frames; a scene needs at least one posed image")
    root = json_path.parent
    # file_index[i]: the position in the file of frame i, which stored input lists count in
    file_index = sorted(range(len(frames)), key=lambda i: natural_key(str(require(frames[i], "file_path", where))))
    frames = [frames[i] for i in file_index]

    names, sources = [], []
    for f in frames:
        rel = Path(str(f["file_path"]))
        rel = Path(image_dir) / rel.name if image_dir is not None else rel
        file = root / rel
        if not file.suffix and not file.exists() and file.with_suffix(".png").exists():
            file, rel = file.with_suffix(".png"), rel.with_suffix(".png")  # Blender files omit ".png"
        names.append(rel.as_posix())
        sources.append(file)

    intrinsics, sizes, coeffs = [], [], []
    for f, name, source in zip(frames, names, sources, strict=True):
        def get(key, default=None, frame=f):  # a frame's own value overrides the file-wide one
            return frame.get(key, meta.get(key, default))

        model = str(get("camera_model", "OPENCV")).upper()
        if model in _FISHEYE_MODELS:
            raise SceneError(f"{where}: camera model {model} is not a pinhole camera; undistort the images to a "
                             "pinhole (PINHOLE/OPENCV) model first")
        w, h = get("w"), get("h")
        fx, fy = get("fl_x"), get("fl_y")
        if fx is None:
            angle = get("camera_angle_x")
            if angle is None:
                raise SceneError(f"{where}: frame {name} has no focal length (fl_x or camera_angle_x)")
            if w is None:
                size = image_size(source, name)
                w, h = size.width, size.height
            fx = 0.5 * w / math.tan(0.5 * float(angle))
        fy = fx if fy is None else fy
        cx = get("cx", None if w is None else w / 2)
        cy = get("cy", None if h is None else h / 2)
        if cx is None or cy is None:
            raise SceneError(f"{where}: frame {name} has no principal point (cx, cy) and no image size (w, h)")
        for extra in ("k3", "k4"):
            if float(get(extra, 0.0)) != 0.0:
                raise SceneError(f"{where}: frame {name} has {extra} = {get(extra)}; only k1, k2, p1, p2 are "
                                 "supported, undistort the images first")
        intrinsics.append([fx, fy, cx, cy])
        sizes.append([math.nan, math.nan] if w is None or h is None else [w, h])
        coeffs.append([get("k1", 0.0), get("k2", 0.0), get("p1", 0.0), get("p2", 0.0)])

    c2w = opengl_to_opencv(as_c2w([require(f, "transform_matrix", where) for f in frames], where))  # [N, 4, 4]
    if undo_applied_transform:
        applied = meta.get("applied_transform", fallback_applied_transform)
        if applied is not None:
            c2w = torch.linalg.inv(as_c2w(np.asarray(applied, dtype=np.float64)[None], where)[0]) @ c2w
    try:
        intrinsics = np.asarray(intrinsics, dtype=np.float64)
        sizes = np.asarray(sizes, dtype=np.float64)
        coeffs = np.asarray(coeffs, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneError(f"{where}: intrinsics or distortion values are not numbers; fix the camera file") from None
    return Scene.from_frames(scene_id or root.name, names, sources, c2w, intrinsics, sizes, coeffs,
                             on_distortion=distortion, camera_file=where, extras={"file_index": file_index})
