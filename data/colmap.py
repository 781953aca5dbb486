"""Reader for COLMAP sparse models (cameras/images .bin or .txt) through pycolmap, an optional dependency.

COLMAP stores world-to-camera poses in OpenCV axes and pixel centres at +0.5, like the project.
Camera models: SIMPLE_PINHOLE and PINHOLE are used directly; SIMPLE_RADIAL, RADIAL and OPENCV are
the radial-tangential model (undistorted on load, or refused with distortion="error"); any other
model (fisheye, FULL_OPENCV, ...) is refused. Frames are ordered by image name (video order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.cameras import invert_rigid

from .errors import SceneError
from .files import natural_key
from .scene import Scene, as_c2w, check_poses

MODEL_DIRS = ("", "sparse/0", "sparse", "colmap/sparse/0")  # where a model is looked for under a scene folder


def colmap_model_dir(path: str | Path) -> Path | None:
    """The folder holding cameras.bin/.txt under `path`, or None."""
    path = Path(path)
    for sub in MODEL_DIRS:
        d = path / sub if sub else path
        if any((d / f"cameras.{ext}").is_file() and (d / f"images.{ext}").is_file() for ext in ("bin", "txt")):
            return d
    return None


def _intrinsics(model: str, params: list[float], where: str) -> tuple[list[float], list[float]]:
    """(fx, fy, cx, cy), (k1, k2, p1, p2) for the supported models."""
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = params
        return [f, f, cx, cy], [0.0] * 4
    if model == "PINHOLE":
        return list(params), [0.0] * 4
    if model == "SIMPLE_RADIAL":
        f, cx, cy, k = params
        return [f, f, cx, cy], [k, 0.0, 0.0, 0.0]
    if model == "RADIAL":
        f, cx, cy, k1, k2 = params
        return [f, f, cx, cy], [k1, k2, 0.0, 0.0]
    if model == "OPENCV":
        return list(params[:4]), list(params[4:])
    raise SceneError(f"{where}: COLMAP camera model {model} is not supported; run `colmap image_undistorter` "
                     "or use a PINHOLE/SIMPLE_RADIAL/RADIAL/OPENCV model")


def read_colmap(path: str | Path, image_dir: str = "images", distortion: str = "undistort") -> Scene:
    """Open a scene folder with a sparse model (or the model folder itself) and its `image_dir` folder."""
    try:
        import pycolmap
    except ImportError:
        raise SceneError("reading COLMAP models needs the optional package pycolmap: pip install pycolmap") from None
    path = Path(path)
    model_dir = colmap_model_dir(path)
    if model_dir is None:
        places = [d or "." for d in MODEL_DIRS]
        raise SceneError(f"{path} has no COLMAP model (cameras and images .bin/.txt in one of {places})")
    root = next((p for p in (path, *path.parents[:3]) if (p / image_dir).is_dir()), None)
    if root is None:
        raise SceneError(f"no {image_dir}/ folder found next to the COLMAP model {model_dir}; pass image_dir=")
    where = str(model_dir)
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError subclasses on malformed files
        raise SceneError(f"COLMAP model {model_dir} cannot be read ({e}); re-export it") from None
    images = [im for im in rec.images.values() if getattr(im, "has_pose", True)]
    if not images:
        raise SceneError(f"COLMAP model {model_dir} has no registered images")
    images.sort(key=lambda im: natural_key(im.name))

    names, w2c, intrinsics, sizes, coeffs = [], [], [], [], []
    for im in images:
        cam = rec.cameras[im.camera_id]
        pose = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world  # method in pycolmap 4
        k, d = _intrinsics(cam.model.name, [float(p) for p in cam.params], where)
        names.append(f"{image_dir}/{im.name}")
        w2c.append(np.asarray(pose.matrix(), dtype=np.float64))
        intrinsics.append(k)
        sizes.append([cam.width, cam.height])
        coeffs.append(d)
    w2c = as_c2w(w2c, where)  # [N, 4, 4]
    check_poses(w2c, names, where)
    scene_id = root.name
    # COLMAP's cameras describe the stored pixels: it ignores EXIF orientation tags.
    return Scene.from_frames(scene_id, names, [root / n for n in names], invert_rigid(w2c), intrinsics, sizes,
                             coeffs, on_distortion=distortion, camera_file=where, upright=False)
