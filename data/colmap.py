"""Reader for COLMAP sparse models (cameras/images .bin or .txt) through pycolmap, an optional dependency.

COLMAP stores world-to-camera poses in OpenCV axes and pixel centres at +0.5, like the project.
Camera models: SIMPLE_PINHOLE and PINHOLE are used directly; SIMPLE_RADIAL, RADIAL and OPENCV are
the radial-tangential model (undistorted on load, or refused with distortion="error"); any other
model (fisheye, FULL_OPENCV, ...) is refused. Frames are ordered by image name (video order).

COLMAP's mapper may split a capture into several models (sparse/0, sparse/1, ...), and sparse/0 is not
always the largest: the reader takes the one with the most registered images and says so, unless a
model number is given.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from model.cameras import invert_rigid

from .errors import SceneError
from .files import natural_key
from .scene import Scene, as_c2w, check_poses

MODEL_ROOTS = ("", "sparse", "colmap/sparse")  # where models are looked for under a scene folder

log = logging.getLogger("data")


def _is_model(d: Path) -> bool:
    return any((d / f"cameras.{ext}").is_file() and (d / f"images.{ext}").is_file() for ext in ("bin", "txt"))


def colmap_models(path: str | Path) -> dict[int, Path]:
    """The model folders under `path` by number: {0: path} when `path` (or its sparse/) is itself a model,
    else its (or its sparse/'s) numbered subfolders holding one, as COLMAP writes them; {} if none."""
    path = Path(path)
    for sub in MODEL_ROOTS:
        root = path / sub if sub else path
        if _is_model(root):
            return {0: root}
        if root.is_dir():
            numbered = {int(d.name): d for d in root.iterdir() if d.name.isdigit() and _is_model(d)}
            if numbered:
                return dict(sorted(numbered.items()))
    return {}


def _read_model(model_dir: Path):
    try:
        import pycolmap
    except ImportError:
        raise SceneError("reading COLMAP models needs the package pycolmap: pip install pycolmap") from None
    try:
        return pycolmap.Reconstruction(str(model_dir))
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError subclasses on malformed files
        raise SceneError(f"COLMAP model {model_dir} cannot be read ({e}); re-export it") from None


def _choose_model(models: dict[int, Path], number: int | None):
    """(folder, reconstruction) of model `number`, or of the one with the most registered images."""
    if number is not None:
        if number not in models:
            raise SceneError(f"there is no COLMAP model {number} in {next(iter(models.values())).parent}; "
                             f"the models are {sorted(models)}")
        return models[number], _read_model(models[number])
    if len(models) == 1:
        model_dir = next(iter(models.values()))
        return model_dir, _read_model(model_dir)
    read = {n: _read_model(d) for n, d in models.items()}
    sizes = {n: rec.num_reg_images() for n, rec in read.items()}
    best = max(sizes, key=lambda n: (sizes[n], -n))
    listed = ", ".join(f"{n}: {k} images" for n, k in sizes.items())
    log.info("COLMAP: %d models in %s (%s); reading model %d, the largest (choose another with --colmap-model)",
             len(models), models[best].parent, listed, best)
    return models[best], read[best]


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


def read_colmap(path: str | Path, image_dir: str = "images", distortion: str = "undistort",
                model: int | None = None) -> Scene:
    """Open a scene folder with sparse model(s) (or a model folder itself) and its `image_dir` folder.

    model: the number of the model to read (sparse/<model>); None: the one with the most registered images."""
    path = Path(path)
    models = colmap_models(path)
    if not models:
        places = [d or "." for d in MODEL_ROOTS]
        raise SceneError(f"{path} has no COLMAP model (cameras and images .bin/.txt in one of {places} or in "
                         "their numbered subfolders)")
    model_dir, rec = _choose_model(models, model)
    root = next((p for p in (path, *path.parents[:3]) if (p / image_dir).is_dir()), None)
    if root is None:
        raise SceneError(f"no {image_dir}/ folder found next to the COLMAP model {model_dir}; pass image_dir=")
    where = str(model_dir)
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
