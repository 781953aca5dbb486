"""`open_scene(path)`: one entry point that recognises the scene layout and calls its reader.

Recognised, in this order (first match wins):
  opencv_cameras.json              official Long-LRM processed scene (already undistorted)
  [nerfstudio/]transforms.json     with an images_4/ or images_8/ folder: DL3DV-10K raw or benchmark
  transforms.json                  any nerfstudio / Blender-style folder
  [sparse/N/]cameras.{bin,txt}     COLMAP sparse model(s) (the largest unless `colmap_model` says which)
`path` may also be one of those JSON files.

Photos or a video without poses (see data/capture) are recognised too: with `capture_dir`, their
poses are computed with COLMAP into that folder, which is then opened as a COLMAP scene.
"""

from __future__ import annotations

from pathlib import Path

from .capture import CaptureConfig, capture_kind, capture_scene
from .colmap import colmap_models, read_colmap
from .dl3dv.scene import dl3dv_root, read_dl3dv
from .errors import SceneError
from .nerfstudio import read_nerfstudio
from .opencv_cameras import FILE_NAME as OPENCV_CAMERAS
from .opencv_cameras import read_opencv_cameras
from .scene import Scene

LAYOUTS = ("opencv_cameras", "dl3dv", "nerfstudio", "colmap")


def detect_layout(path: str | Path) -> str | None:
    """Which reader handles `path` (one of LAYOUTS), or None; reads no image."""
    path = Path(path)
    if path.is_file():
        if path.name == OPENCV_CAMERAS:
            return "opencv_cameras"
        if path.suffix == ".json":
            return "dl3dv" if dl3dv_root(path.parent) == path.parent else "nerfstudio"
        return None
    if not path.is_dir():
        return None
    if (path / OPENCV_CAMERAS).is_file():
        return "opencv_cameras"
    if dl3dv_root(path) is not None:
        return "dl3dv"
    if (path / "transforms.json").is_file():
        return "nerfstudio"
    if colmap_models(path):
        return "colmap"
    return None


def needs_capture(path: str | Path) -> str | None:
    """"photos" or "video" when `path` is a capture without poses (and no posed scene), else None."""
    return capture_kind(Path(path)) if Path(path).exists() and detect_layout(path) is None else None


def open_scene(path: str | Path, image_dir: str | None = None, distortion: str = "undistort",
               colmap_model: int | None = None, capture_dir: str | Path | None = None,
               capture: CaptureConfig | None = None) -> Scene:
    """Open any supported scene. image_dir overrides the image folder (e.g. "images_8" for DL3DV);
    distortion: "undistort" (default) resamples distorted frames to a pinhole, "error" refuses them;
    colmap_model: which model of a COLMAP scene with several (default: the largest).
    Photos or a video without poses are captured into `capture_dir` first (settings: `capture`)."""
    path = Path(path)
    if not path.exists():
        raise SceneError(f"scene path {path} does not exist")
    layout = detect_layout(path)
    kind = needs_capture(path)
    if kind is not None:
        if capture_dir is None:
            raise SceneError(f"{path} is {'a folder of photos' if kind == 'photos' else 'a video'} without camera "
                             f"poses; `python infer.py --views {path} --out DIR` computes them (COLMAP) into DIR, "
                             "which can then be opened as a scene")
        done = capture_scene(path, Path(capture_dir), capture)
        scene = read_colmap(capture_dir, distortion=distortion)
        scene.extras["capture_seconds"] = done.seconds
        return scene
    if layout == "opencv_cameras":
        return read_opencv_cameras(path)
    if layout == "dl3dv":
        return read_dl3dv(path.parent if path.is_file() else path, image_dir=image_dir, distortion=distortion)
    if layout == "nerfstudio":
        return read_nerfstudio(path, image_dir=image_dir, distortion=distortion)
    if layout == "colmap":
        return read_colmap(path, image_dir=image_dir or "images", distortion=distortion, model=colmap_model)
    raise SceneError(f"{path} is not a scene: found no {OPENCV_CAMERAS}, transforms.json, nerfstudio/transforms.json "
                     "or COLMAP sparse model (cameras and images .bin/.txt) in it, nor photos (.jpg, .png) or a "
                     "video to compute poses from")


def find_scenes(root: str | Path, max_depth: int = 2) -> list[Path]:
    """Scene folders at or below `root` (DL3DV-10K nests them as <batch>/<hash>), sorted."""
    root = Path(root)
    if detect_layout(root) is not None:
        return [root]
    found, level = [], [root]
    for _ in range(max_depth):
        level = sorted(p for d in level if d.is_dir() for p in d.iterdir() if p.is_dir())
        found += [p for p in level if detect_layout(p) is not None]
        level = [p for p in level if detect_layout(p) is None]
    return sorted(found)
