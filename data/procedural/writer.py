"""Write a scene as a DL3DV / nerfstudio folder: transforms.json plus 8-bit PNG frames.

transforms.json stores camera-to-world matrices in OpenGL/Blender axes (x right, y up, z back), as
nerfstudio does; the scene's OpenCV matrices are converted by negating the camera y and z axes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .generate import ProceduralScene


def check_output_dir(out_dir: str | os.PathLike, image_dir: str = "images_4", overwrite: bool = False) -> Path:
    """Raise ValueError unless a scene may be written to out_dir (absent, empty, or overwrite allowed)."""
    out = Path(out_dir)
    if not image_dir or Path(image_dir).is_absolute() or ".." in Path(image_dir).parts:
        raise ValueError(f"image_dir must be a relative folder name inside the scene, got {image_dir!r}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} is not empty; choose another folder or pass overwrite=True (--overwrite)")
    return out


def write_dl3dv_scene(scene: ProceduralScene, out_dir: str | os.PathLike, image_dir: str = "images_4",
                      overwrite: bool = False) -> Path:
    """Write `<out_dir>/transforms.json` and `<out_dir>/<image_dir>/frame_00001.png`, ...; returns out_dir.

    Refuses a non-empty existing folder unless overwrite is set; even then nothing is deleted, only
    files of the same names are replaced.
    """
    out = check_output_dir(out_dir, image_dir, overwrite)
    if len(set(map(tuple, scene.intrinsics.tolist()))) != 1:
        raise ValueError("transforms.json holds one set of intrinsics; the scene's views differ")
    (out / image_dir).mkdir(parents=True, exist_ok=True)

    height, width = scene.images.shape[1:3]
    fx, fy, cx, cy = scene.intrinsics[0].tolist()
    c2w_gl = scene.c2w.double().numpy().copy()  # [V, 4, 4]
    c2w_gl[:, :3, 1:3] *= -1
    pixels = np.rint(scene.images.clamp(0, 1).numpy() * 255).astype(np.uint8)  # [V, H, W, 3]
    frames = []
    for i in range(scene.num_views):
        name = f"{image_dir}/frame_{i + 1:05d}.png"
        Image.fromarray(pixels[i]).save(out / name)
        frames.append({"file_path": name, "transform_matrix": c2w_gl[i].tolist()})
    meta = {
        "w": int(width), "h": int(height), "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy,
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "camera_model": "OPENCV",
        "frames": frames,
    }
    (out / "transforms.json").write_text(json.dumps(meta, indent=2))
    return out
